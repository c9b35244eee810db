"""A run killed with SIGKILL and resumed equals an uninterrupted run; 2-process torchrun keeps ranks equal."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

JOB = Path(__file__).with_name("resume_job.py")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[2])}


def _run(*args, timeout=120):
    return subprocess.run([sys.executable, str(JOB), *map(str, args)], env=ENV, timeout=timeout,
                          capture_output=True, text=True)


def _same(a, b):
    sa, sb = load_file(str(a)), load_file(str(b))
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_sigkill_then_resume_matches_uninterrupted_run(tmp_path):
    full = _run(tmp_path / "full", tmp_path / "full.st")
    assert full.returncode == 0, full.stderr
    run_dir = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, str(JOB), str(run_dir), str(tmp_path / "never.st"), "--slow", "1.0"],
                            env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    index = run_dir / "checkpoint.json"
    deadline = time.time() + 90
    while time.time() < deadline and proc.poll() is None:
        if index.is_file() and json.loads(index.read_text())["iteration"] >= 2:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the job ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = json.loads(index.read_text())["iteration"]
    assert 2 <= killed_at < 5 and not (tmp_path / "never.st").exists()
    resumed = _run(run_dir, tmp_path / "resumed.st", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert _same(tmp_path / "full.st", tmp_path / "resumed.st")
    hist = json.loads(index.read_text())["history"]
    assert [h["iteration"] for h in hist] == list(range(6))


@pytest.mark.skipif(shutil.which("torchrun", path=str(Path(sys.executable).parent)) is None,
                    reason="torchrun is not installed next to this Python")
def test_torchrun_two_processes_hold_identical_weights(tmp_path):
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    with socket.socket() as sock:  # a free port: torchrun's static rendezvous does not accept port 0
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [torchrun, "--nproc_per_node", "2", "--master_port", str(port), str(JOB), str(tmp_path / "run"),
           str(tmp_path / "ddp.st")]
    res = subprocess.run(cmd, env=ENV, timeout=120, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    r0, r1 = tmp_path / "ddp.st.rank0", tmp_path / "ddp.st.rank1"
    assert _same(r0, r1)
    state = load_file(str(r0))
    assert json.loads((tmp_path / "run" / "checkpoint.json").read_text())["iteration"] == 5
    w = state["classifier.3.weight"]
    assert len(torch.unique(w)) < 40  # fixed onto the shared codebook
