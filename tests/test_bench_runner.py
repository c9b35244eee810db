"""bench/run.py as a real subprocess: validates its arguments first, writes CSV/markdown/PNGs, reports
missing backends as skipped with the reason."""
import csv
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(*args, cwd=ROOT):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(ROOT / "bench" / "run.py"), *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=600)


def test_runner_small_set_writes_every_output(tmp_path):
    out = tmp_path / "res"
    proc = run("--out", str(out), "--shapes", "mlp", "--bits", "4", "--batches", "1,4", "--repeats", "2",
               "--threads", "1", "--no-models", "--no-modes", "--backends", "extension,triton")
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert len(rows) == 6 and {r["name"] for r in rows} == {"mlp.fc1", "mlp.fc2", "mlp.fc3"}
    for r in rows:  # every row has the WFN time and the dense baselines measured beside it
        assert float(r["extension_s"]) > 0 and float(r["fp32_s"]) > 0 and float(r["int8_dynamic_s"]) > 0
        assert float(r["extension_vs_fp32"]) > 0
    md = (out / "results.md").read_text()
    assert "read_bandwidth_gbs" in md and "## Targets" in md
    assert "| M=1 8192^2 4-bit vs fp32 F.linear | >= 6x |  | not measured |" in md  # not in this shape set
    import torch
    if not torch.cuda.is_available():  # the reason Triton did not run is in the report, not a silent pass
        assert "- skipped: triton: no CUDA device" in md and "skipped backend triton" in proc.stdout
        assert not any("triton_s" in k for k in rows[0])
    for png in ("speedup_vs_batch.png", "bandwidth.png", "weight_memory.png"):
        assert (out / png).stat().st_size > 0


def test_runner_rejects_bad_arguments_before_work(tmp_path):
    for args, message in [(["--shapes", "resnet99"], "unknown shape set 'resnet99'"),
                          (["--bits", "3"], "--bits must be from 2, 4, 8"),
                          (["--backends", "tpu"], "unknown backend 'tpu'"),
                          (["--repeats", "0"], "must be >= 1")]:
        proc = run("--out", str(tmp_path / "x"), *args)
        assert proc.returncode != 0 and message in proc.stderr, (args, proc.stderr)
    blocker = tmp_path / "file"
    blocker.write_text("")
    proc = run("--out", str(blocker / "sub"))
    assert proc.returncode != 0 and "is not writable" in proc.stderr


def test_int16_and_fixed_model_benches_reject_bad_arguments():
    """bench/int8_wide.py, fixed_model_modes.py and bn_reestimation.py name the bad argument before any work."""
    def bench(script, *args):
        return subprocess.run([sys.executable, str(ROOT / "bench" / script), *args], capture_output=True,
                              text=True, cwd=ROOT, timeout=300)
    proc = bench("int8_wide.py", "1", "0")
    assert proc.returncode == 2 and "every M must be >= 1, got [1, 0]" in proc.stderr, proc.stderr
    proc = bench("int8_wide.py", "1", "--threads", "0")
    assert proc.returncode == 2 and "--threads must be >= 1, got 0" in proc.stderr, proc.stderr
    proc = bench("int8_wide.py", "one")
    assert proc.returncode == 2 and "invalid int value: 'one'" in proc.stderr, proc.stderr
    proc = bench("fixed_model_modes.py", "--batch", "0")
    assert proc.returncode == 2 and "--batch, --repeats and --threads must be >= 1, got 0, 9, 1" in proc.stderr, proc.stderr
    proc = bench("fixed_model_modes.py", "--threads", "0")
    assert proc.returncode == 2 and "got 256, 9, 0" in proc.stderr, proc.stderr
    proc = bench("fixed_model_modes.py", "/nonexistent/model.safetensors")
    assert proc.returncode == 2 and "model file /nonexistent/model.safetensors does not exist" in proc.stderr
    proc = bench("int16_gemm.py", "0")
    assert proc.returncode == 2 and "every M, --threads and --repeats must be >= 1, got [0], 1, 5" in proc.stderr
    proc = bench("float_gemv_avx2.py", "0")
    assert proc.returncode == 2 and "every M, --threads and --repeats must be >= 1, got [0], 1, 15" in proc.stderr
    proc = bench("bn_reestimation.py", "--batches", "0")
    assert proc.returncode == 2 and "--batches and --batch-size must be >= 1, got [0] and 128" in proc.stderr
    proc = bench("bn_reestimation.py", "/nonexistent/model.safetensors")
    assert proc.returncode == 2 and "model file /nonexistent/model.safetensors does not exist" in proc.stderr


def test_runner_compute_mode_rows(tmp_path):
    """The compute-mode section end to end on small shapes: every peer and mode timed in one round robin,
    errors and memory recorded, the targets table written (its full-shape targets then 'not measured')."""
    import torch

    from wfn_kernels import ops
    if ops._C is None or torch.cuda.is_available():
        import pytest
        pytest.skip("the compute-mode rows need the C++ extension on a CPU-only run")
    out = tmp_path / "modes"
    proc = run("--out", str(out), "--only-modes", "--mode-shape", "64,256", "--mode-batches", "1,32",
               "--model-batches", "1", "--model-resolution", "32", "--mode-threads", "1", "--no-int8-static", "--no-bf16-compile",
               "--repeats", "2", "--threads", "1")
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(open(out / "results.csv")))
    lin = [r for r in rows if r["kind"] == "modes-linear"]
    assert [int(r["M"]) for r in lin] == [1, 32]
    for r in lin:
        for name in ("fp32", "bf16", "int8_dynamic", "int8_weight_only", "wfn_float", "wfn_bf16", "wfn_int8", "stream"):
            assert float(r[f"{name}_s"]) > 0, name
        assert float(r["wfn_float_err"]) == 0 and 0 < float(r["wfn_int8_err"]) < 0.1
    (model,) = [r for r in rows if r["kind"] == "modes-model"]
    for name in ("fp32_eager", "fp32_channels_last", "fp32_frozen", "bf16_eager", "bf16_channels_last", "wfn_float",
                 "wfn_float_cl", "wfn_float_cl_fused", "wfn_float_cl_fused_cap", "wfn_bf16", "wfn_int8", "wfn_bf16_cl",
                 "wfn_int8_cl",
                 "wfn_int8_cl_fused"):
        assert float(model[f"{name}_s"]) > 0, name
    # the float mode is exact in either layout (the oneDNN convs sum in their own order: fp32 rounding only)
    assert float(model["wfn_float_err"]) < 1e-5 and float(model["wfn_float_cl_err"]) < 1e-5
    # BatchNorm folded into the float convs: float rounding only (the test net's BatchNorm is the identity)
    assert float(model["wfn_float_cl_fused_err"]) < 1e-5 and "float channels_last + folded BatchNorm/ReLU vs" in \
        (out / "results.md").read_text()
    # the capped float model: the same arithmetic, and everything counted within a quarter of fp32
    assert float(model["wfn_float_cl_fused_cap_err"]) < 1e-5 and float(model["wfn_float_cl_fused_cap_memory_ratio"]) <= 0.25
    assert float(model["wfn_int8_memory_ratio"]) < 0.25 and float(model["wfn_bf16_err"]) < 0.03
    # the channels_last int8 model computes the same logits as the NCHW one
    assert float(model["wfn_int8_cl_err"]) == float(model["wfn_int8_err"])
    assert float(model["wfn_int8_cl_memory_ratio"]) < 0.25 and float(model["wfn_bf16_cl_err"]) < 0.03
    assert float(model["wfn_int8_cl_fused_err"]) < 0.1 and float(model["wfn_int8_cl_fused_err"]) > 0 and float(model["wfn_int8_cl_fused_memory_ratio"]) < 0.25
    md = (out / "results.md").read_text()
    assert "## Compute-mode targets (1 thread)" in md and "| M=1 int8 mode vs torch int8 dynamic | >= 2.0x |  | not measured |" in md
    notes = next(line for line in md.splitlines() if line.startswith("- compute_mode_notes: "))
    assert "int8 static peer skipped (--no-int8-static)" in notes
    assert "bf16 torch.compile peer skipped (--no-bf16-compile)" in notes
