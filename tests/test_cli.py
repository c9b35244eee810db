"""The console scripts, run as real subprocesses."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def run(*args, **kw):
    return subprocess.run([sys.executable, "-m", "wfn_kernels.workflows.cli", *args], capture_output=True, text=True,
                          env=ENV, timeout=600, **kw)


def test_demo_end_to_end(tmp_path):
    out = tmp_path / "demo"
    proc = run("demo", "--out", str(out), "--epochs", "3", "--bench-repeats", "3", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    report = json.loads((out / "report.json").read_text())
    # packed inference gives the fixed float model's predictions; reloading from disk changes nothing
    assert report["accuracy_packed"] == report["accuracy_fixed"] == report["accuracy_reloaded"]
    assert report["prediction_agreement"]["same_prediction_fraction"] == 1.0
    modes = report["compute_modes"]  # every compute mode's accuracy, within its quantisation's error
    assert list(modes) == ["float", "bf16", "int8"] and modes["float"]["accuracy"] == report["accuracy_packed"]
    assert modes["bf16"]["max_rel_logit_err"] < 0.03 and modes["int8"]["max_rel_logit_err"] < 0.10
    assert all(abs(v["accuracy"] - report["accuracy_packed"]) < 3.0 for v in modes.values())
    assert report["accuracy_float"] > 50.0  # 3 epochs on digits is well above chance (10 %)
    # WFN really ran: every conv/linear weight is on a small power-of-two codebook
    assert 2 <= report["unique_weights"] <= 64 < report["unique_weights_float"]
    assert report["entropy_bits"] < report["entropy_bits_float"]
    assert len(report["fix_history"]) == 10 and report["fix_history"][-1]["fixed_fraction"] == 1.0
    assert report["packed_bytes"] * 3 < report["fp32_bytes"]
    assert [b["batch"] for b in report["bench"]] == [1, 32] and all(b["packed_ms"] > 0 for b in report["bench"])
    designs = report["sim"]["designs"]
    assert designs["dense_ws"]["energy_vs_dense"] == 1.0 and designs["codebook"]["energy_vs_dense"] < 1.0
    for f in ["model.wfn.safetensors", "report.md", "progress.png", "accuracy.png", "latency.png",
              "sim/vs_dense.png"]:
        assert (out / f).is_file(), f
    md = (out / "report.md").read_text()
    assert "| bf16 | " in md and "| int8 | " in md and "accuracy by compute mode" in md
    assert len(report["plots"]) == 7
    for f in report["plots"]:
        assert (out / f).is_file(), f
        assert f"]({f})" in md or f == "sim/energy_per_layer.png", f
    assert "accuracy: packed WFN modules" in proc.stdout and "simulated energy saving vs dense" in proc.stdout


def test_demo_bad_arguments(tmp_path):
    proc = run("demo", "--epochs", "0")
    assert proc.returncode == 2 and "argument --epochs: expected a positive integer (>= 1), got 0" in proc.stderr
    proc = run("demo", "--dataset", "imagenet", "--epochs", "1", "--out", str(tmp_path / "x"))
    assert proc.returncode != 0 and "unknown dataset 'imagenet'" in proc.stderr
    proc = run("demo", "--delta", "1.5", "--out", str(tmp_path / "x"))
    assert proc.returncode != 0 and "must lie in (0, 1)" in proc.stderr
    blocker = tmp_path / "file"
    blocker.write_text("")
    proc = run("demo", "--out", str(blocker / "sub"))
    assert proc.returncode != 0 and "is not writable" in proc.stderr
    proc = run("demo", "--dataset", "fashion-mnist", "--data-dir", str(tmp_path / "none"), "--out", str(tmp_path / "y"))
    assert proc.returncode != 0 and "does not exist" in proc.stderr
    assert not (tmp_path / "y" / "report.json").exists()


@pytest.mark.slow
def test_pure_python_build_has_no_extension(tmp_path):
    """WFN_BUILD_EXT=0 builds a wheel without wfn_kernels._C (and the package still imports)."""
    root = Path(__file__).resolve().parents[1]
    env = {**ENV, "WFN_BUILD_EXT": "0"}
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", "-q",
                           "-w", str(tmp_path), str(root)], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr
    wheel, = tmp_path.glob("wfn_kernels-*.whl")
    import zipfile

    names = zipfile.ZipFile(wheel).namelist()
    assert "wfn_kernels/ops/dispatch.py" in names and "wfn_sim/__init__.py" in names
    assert not [n for n in names if n.endswith(".so")]


def test_disabled_extension_falls_back_visibly():
    code = ("import wfn_kernels as w, json; print(json.dumps(w.available_backends()['extension']));"
            "import torch; from wfn_kernels.ops import resolve_backend; print(resolve_backend('auto', torch.device('cpu')).value)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**ENV, "WFN_DISABLE_EXT": "1"}, timeout=120)
    assert proc.returncode == 0, proc.stderr
    info, auto = proc.stdout.strip().splitlines()
    assert json.loads(info) == {"available": False, "reason": "disabled by WFN_DISABLE_EXT=1", "devices": []}
    assert auto == "reference"
