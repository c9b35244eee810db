import csv
import json
from pathlib import Path

import pytest
from wfn_sim.cli import main
from wfn_sim.simulate import ROW_FIELDS

GOLDEN_TOPOLOGY = str(Path(__file__).parents[1] / "data" / "scalesim" / "golden_layers.csv")


def test_topology_run_writes_fixed_columns_and_totals(tmp_path, capsys):
    rc = main(["--topology", GOLDEN_TOPOLOGY, "--designs", "dense_ws", "--out", str(tmp_path), "--no-plots"])
    assert rc == 0
    rows = list(csv.DictReader(open(tmp_path / "layers.csv")))
    assert list(rows[0])[4:] == list(ROW_FIELDS) and len(rows) == 18
    assert rows[0]["energy_table"] == "horowitz45" and rows[0]["energy_unit"] == "pJ"
    doc = json.loads((tmp_path / "report.json").read_text())
    assert doc["totals"]["dense_ws"]["cycles"] == sum(int(r["cycles"]) for r in rows)
    assert "energy table horowitz45" in capsys.readouterr().out


def test_synthetic_weights_all_designs_with_plots_and_overrides(tmp_path):
    rc = main(["--topology", GOLDEN_TOPOLOGY, "--unique-weights", "17", "--out", str(tmp_path),
               "--energy-table", "aladdin_cacti45", "--activation-group-filters", "2",
               "--spill-psums-per-row-fold", "false"])
    assert rc == 0
    for name in ("layers.csv", "totals.csv", "report.json", "energy_per_layer.png", "vs_dense.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    totals = {r["design"]: r for r in csv.DictReader(open(tmp_path / "totals.csv"))}
    assert set(totals) == {"dense_ws", "codebook", "shift_add", "factorised"}
    assert totals["dense_ws"]["energy_table"] == "aladdin_cacti45"
    assert float(totals["dense_ws"]["energy_vs_dense"]) == 1.0
    doc = json.loads((tmp_path / "report.json").read_text())
    assert doc["arch_config"]["activation_group_filters"] == 2
    assert doc["arch_config"]["spill_psums_per_row_fold"] is False


def _small_cnn_on_codebook():
    import torch

    from wfn_testutil import round_to_power_of_two_sums
    from wfn_kernels.workflows.models import build

    torch.manual_seed(0)
    m = build("small-cnn").eval()
    round_to_power_of_two_sums(m, max_terms=1)
    return m


def test_model_file_run_packed_and_state_dict(tmp_path, capsys):
    import torch

    from wfn_kernels import convert, save_packed

    m = _small_cnn_on_codebook()
    torch.save(m.state_dict(), tmp_path / "m.pt")
    convert(m)
    save_packed(m, tmp_path / "m.wfn.safetensors")
    for name in ("m.pt", "m.wfn.safetensors"):
        out = tmp_path / f"out-{name}"
        rc = main(["--model", str(tmp_path / name), "--model-class", "small-cnn", "--input-shape", "1,1,8,8",
                   "--designs", "dense_ws,factorised", "--out", str(out), "--no-plots"])
        assert rc == 0, capsys.readouterr().err
        rows = list(csv.DictReader(open(out / "layers.csv")))
        assert len(rows) == 10  # 5 conv/linear layers x 2 designs
    a, b = (list(csv.DictReader(open(tmp_path / f"out-{n}" / "totals.csv"))) for n in ("m.pt", "m.wfn.safetensors"))
    assert [r["total_energy_pj"] for r in a] == [r["total_energy_pj"] for r in b]  # same weights, same costs


def test_model_file_refuses_pickled_module_and_missing_class(tmp_path, capsys):
    import torch

    from wfn_kernels import convert, save_packed

    m = _small_cnn_on_codebook()
    torch.save(m, tmp_path / "whole.pt")
    rc = main(["--model", str(tmp_path / "whole.pt"), "--input-shape", "1,1,8,8", "--out", str(tmp_path / "o")])
    assert rc == 2 and "pickled nn.Module is not loaded" in capsys.readouterr().err
    convert(m)
    save_packed(m, tmp_path / "p.safetensors")
    rc = main(["--model", str(tmp_path / "p.safetensors"), "--input-shape", "1,1,8,8", "--out", str(tmp_path / "o")])
    assert rc == 2 and "pass --model-class" in capsys.readouterr().err
    rc = main(["--model", str(tmp_path / "nope.pt"), "--out", str(tmp_path / "o")])
    assert rc == 2 and "does not exist" in capsys.readouterr().err


def test_sweep_run(tmp_path, capsys):
    rc = main(["--topology", GOLDEN_TOPOLOGY, "--sweep-unique", "3,256", "--out", str(tmp_path)])
    assert rc == 0
    rows = list(csv.DictReader(open(tmp_path / "sweep.csv")))
    assert {r["design"] for r in rows} == {"dense_ws", "codebook", "shift_add", "factorised", "sparse_pe"}
    assert (tmp_path / "sweep.png").exists() and "better than sparse_pe" in capsys.readouterr().out


@pytest.mark.parametrize("args,message", [
    (["--designs", "dense_ws,tpu"], "unknown design(s) ['tpu']"),
    (["--array-rows", "0"], "ArchConfig.array_rows must be a positive integer"),
    (["--dataflow", "os"], "ArchConfig.dataflow must be one of"),
    (["--designs", "factorised"], "needs weight statistics"),
    (["--energy-table", "missing_table"], "energy table 'missing_table'"),
    (["--unique-weights", "17", "--pe-buffer-words", "16", "--designs", "factorised"],
     "does not fit the factorised PE"),
])
def test_bad_input_fails_before_work_with_a_named_field(tmp_path, capsys, args, message):
    out = tmp_path / "out"
    rc = main(["--topology", GOLDEN_TOPOLOGY, "--out", str(out)] + args)
    assert rc == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_topology_with_wrong_columns_fails(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("layer,h,w\nc,1,2\n")
    assert main(["--topology", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "is neither" in capsys.readouterr().err


def test_other_dataflows_default_to_the_systolic_designs_and_write_action_counts(tmp_path):
    small = GOLDEN_TOPOLOGY.replace("golden_layers.csv", "golden_small_layers.csv")
    rc = main(["--topology", small, "--unique-weights", "17", "--dataflow", "os_systolic",
               "--dram-model", "scalesim", "--out", str(tmp_path), "--no-plots"])
    assert rc == 0
    totals = {r["design"]: r for r in csv.DictReader(open(tmp_path / "totals.csv"))}
    assert set(totals) == {"dense_ws", "codebook", "shift_add"}
    assert int(totals["dense_ws"]["cycles_incl_prefetch"]) > int(totals["dense_ws"]["cycles"])
    assert (tmp_path / "action_counts_codebook.yaml").stat().st_size > 0


def test_ucnn_design_on_input_stationary_is_a_one_line_error(tmp_path, capsys):
    rc = main(["--topology", GOLDEN_TOPOLOGY, "--unique-weights", "17", "--dataflow", "is_systolic",
               "--designs", "factorised", "--out", str(tmp_path)])
    assert rc == 2
    assert "design 'factorised' models UCNN's PE" in capsys.readouterr().err
