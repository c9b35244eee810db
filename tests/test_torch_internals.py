"""Private torch APIs live in one module, behind a version check, with a public-API path that still works."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from wfn_kernels.nn import torch_internals as ti

ROOT = Path(__file__).resolve().parents[1]
PRIVATE = re.compile(r"torch\._C\b|torch\.ops\.mkldnn|torch\._C\._nn|_convolution_pointwise|\.redispatch\(")


def test_private_torch_apis_appear_only_in_torch_internals():
    offenders = []
    for path in sorted((ROOT / "wfn_kernels").rglob("*.py")):
        if path.name == "torch_internals.py":
            continue
        code = re.sub(r'""".*?"""', "", path.read_text(), flags=re.S)  # docstrings may name them
        offenders += [f"{path.relative_to(ROOT)}: {m.group(0)}" for m in PRIVATE.finditer(code)]
    assert not offenders, offenders


def test_tested_version_enables_the_fast_paths():
    version = ".".join(torch.__version__.split("+")[0].split(".")[:2])
    if version in ti.TESTED_TORCH and os.environ.get("WFN_TORCH_INTERNALS", "") != "0":
        assert ti.REASON == "" and ti.DIRECT_CALL_OK
    else:
        assert ti.REASON and not ti.DIRECT_CALL_OK


CODE = """
import json, torch, wfn_kernels as wk
from torch import nn
from wfn_kernels.nn import torch_internals as ti
torch.manual_seed(0)
cb = wk.Codebook.from_values([-0.5, -0.25, 0.0, 0.25, 0.5])
m = nn.Sequential(nn.Conv2d(8, 32, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(32 * 8 * 8, 10)).eval()
with torch.no_grad():
    for layer in (m[0], m[3]):
        layer.weight.copy_(cb.values[torch.randint(0, 5, layer.weight.shape)])
x = torch.randn(2, 8, 8, 8)
with torch.no_grad():
    expected = m(x)
    wk.convert(m)
    plain = m(x)
    report = wk.optimize_for_inference(m, x, measure=False)
    opt = m(x)
print(json.dumps({"reason": ti.REASON, "direct": ti.DIRECT_CALL_OK, "report": report,
                  "plain": float((plain - expected).abs().max()), "opt": float((opt - expected).abs().max())}))
"""


def run(env_value):
    env = {**os.environ, "WFN_TORCH_INTERNALS": env_value, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_disabled_internals_take_the_public_paths_and_say_why():
    off = run("0")
    assert off["reason"] == "disabled by WFN_TORCH_INTERNALS=0" and off["direct"] is False
    assert off["report"] == [["0", "disabled by WFN_TORCH_INTERNALS=0"]]
    assert off["plain"] < 1e-4 and off["opt"] < 1e-4
    from wfn_kernels.ops import extension_loaded, extension_reason

    if not extension_loaded():  # the fast paths (direct kernel call, oneDNN layout) are the extension's
        pytest.skip(f"public paths checked; the fast paths need the C++ extension: {extension_reason()}")
    on = run("")
    if on["reason"] == "":  # a tested torch: the fast paths run and give the same outputs
        assert on["direct"] is True and on["report"][0][1] == "optimized"
        assert on["plain"] < 1e-4 and on["opt"] < 1e-4
