"""The console scripts, run as real subprocesses."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def run(*args, **kw):
    return subprocess.run([sys.executable, "-m", "wfn_kernels.cli", *args], capture_output=True, text=True,
                          env=ENV, timeout=600, **kw)


def test_demo_end_to_end(tmp_path):
    out = tmp_path / "demo"
    proc = run("demo", "--out", str(out), "--epochs", "3", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["accuracy_packed"] == report["accuracy_rounded_float"]
    assert report["accuracy_float"] > 50.0  # 3 epochs on digits is well above chance (10 %)
    assert report["packed_bytes"] * 3 < report["fp32_bytes"]
    assert (out / "model.wfn.safetensors").is_file()
    assert "packed WFN modules" in proc.stdout


def test_demo_bad_arguments():
    proc = run("demo", "--epochs", "0")
    assert proc.returncode != 0 and "--epochs must be >= 1" in proc.stderr
    proc = run("demo", "--dataset", "imagenet", "--epochs", "1", "--out", "/tmp/wfn-never")
    assert proc.returncode != 0 and "unknown dataset 'imagenet'" in proc.stderr


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
    assert "wfn_kernels/ops.py" in names and "wfn_sim/__init__.py" in names
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
