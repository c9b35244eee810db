import json
from types import SimpleNamespace

from wfn_kernels.workflows.experiments import report


def _row(seed, base, wfn):
    return {"seed": seed, "delta": 0.1, "relax": False, "bn": False, "lr": 1e-3, "epochs_per_iteration": 1,
            "bn_recalibration_batches": 0, "baseline_accuracy": base, "wfn_accuracy": wfn, "fix_seconds": 300.0,
            "fix_cpu_seconds": 250.0, "wfn_unique_nonzero": 10, "wfn_entropy_bits": 2.0,
            "wfn_entropy_nonzero_bits": 2.0,
            "wfn_unique_nonzero_conv_linear": 8, "apot4_accuracy": 91.0, "apot4_unique_nonzero": 300,
            "apot4_unique_nonzero_conv_linear": 140, "apot4_entropy_nonzero_bits": 3.5, "apot3_accuracy": 90.0,
            "apot3_unique_nonzero": 250, "apot3_unique_nonzero_conv_linear": 100, "apot3_entropy_nonzero_bits": 2.6}


def test_report_aggregates_mean_and_std(tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    for seed, (b, w) in enumerate([(91.0, 90.5), (92.0, 91.7)]):
        (runs / f"row_seed{seed}.json").write_text(json.dumps(_row(seed, b, w)))
    report(SimpleNamespace(runs=str(runs), out=str(tmp_path / "out"), curve=[]))
    md = (tmp_path / "out" / "wfn_fashion_mnist.md").read_text()
    assert "| top-1 (%) | 91.50 ± 0.71 | 91.10 ± 0.85 |" in md
    assert "Accuracy drop vs baseline: 0.40 ± 0.14 points" in md and "30.0x" in md and "17.5x" in md
    assert len((tmp_path / "out" / "wfn_fashion_mnist.csv").read_text().splitlines()) == 3
