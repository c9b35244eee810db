"""A user's own model class by import path (`package.module:Class`) in wfn-sim, as a real subprocess."""
import csv
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from wfn_sim.extract import BUNDLED_MODELS, build_model, load_model_workload

import wfn_kernels as wk
from wfn_kernels.workflows import models

USER_MODULE = textwrap.dedent("""
    import torch
    from torch import nn

    class TinyNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3, padding=1, bias=False)
            self.fc = nn.Linear(4 * 6 * 6, 3)

        def forward(self, x):
            return self.fc(torch.flatten(torch.relu(self.conv(x)), 1))

    class NeedsArgs(nn.Module):
        def __init__(self, width):
            super().__init__()

    def not_a_module():
        return 42
""")


@pytest.fixture
def user_pkg(tmp_path, monkeypatch):
    pkg = tmp_path / "userpkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "nets.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def packed_tiny(path):
    from userpkg.nets import TinyNet

    torch.manual_seed(0)
    m = TinyNet()
    cb = wk.Codebook.from_values([-0.5, 0.0, 0.25, 1.0])
    with torch.no_grad():
        for layer in (m.conv, m.fc):
            layer.weight.copy_(cb.values[torch.randint(0, 4, layer.weight.shape)])
    dense = {n: mod.weight.detach().clone() for n, mod in (("conv", m.conv), ("fc", m.fc))}
    wk.convert(m, codebook=cb)
    wk.save_packed(m, path, cb)
    return dense


def test_wfn_sim_prices_a_user_class_from_a_packed_file(user_pkg, tmp_path):
    packed_tiny(tmp_path / "tiny.wfn.safetensors")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(user_pkg), os.environ.get("PYTHONPATH", "")])}
    wfn_sim_cli = Path(sys.executable).parent / "wfn-sim"  # the installed console script
    proc = subprocess.run([str(wfn_sim_cli), "--model", str(tmp_path / "tiny.wfn.safetensors"),
                           "--model-class", "userpkg.nets:TinyNet", "--input-shape", "1,1,6,6", "--designs",
                           "dense_ws,codebook", "--out", str(tmp_path / "out"), "--no-plots"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(open(tmp_path / "out" / "layers.csv")))
    assert sorted({r["layer"] for r in rows}) == ["conv", "fc"] and len(rows) == 4


def test_packed_weights_reach_the_workload_exactly(user_pkg, tmp_path):
    dense = packed_tiny(tmp_path / "tiny.wfn.safetensors")
    wl = load_model_workload(tmp_path / "tiny.wfn.safetensors", (1, 1, 6, 6), "userpkg.nets:TinyNet")
    for layer, stats in zip(wl.layers, wl.stats, strict=True):
        expected = dense[layer.name].double().reshape(layer.out_channels, -1).numpy()
        assert (stats.dense() == expected).all()


@pytest.mark.parametrize("spec,message", [
    ("userpkg.nets", "expected 'package.module:ClassName'"),
    ("userpkg.nope:TinyNet", "cannot import module 'userpkg.nope'"),
    ("userpkg.nets:Missing", "has no class or function 'Missing'"),
    ("userpkg.nets:NeedsArgs", "cannot be built without arguments"),
    ("userpkg.nets:not_a_module", "built a int, not a torch.nn.Module"),
    ("resnet-9000", "expected 'package.module:ClassName' or one of ['small-cnn', 'small-resnet']"),
])
def test_bad_model_class_names_what_is_wrong(user_pkg, spec, message):
    with pytest.raises(ValueError, match=__import__("re").escape(message)):
        build_model(spec)


def test_wrong_class_for_the_file_is_refused(user_pkg, tmp_path):
    packed_tiny(tmp_path / "tiny.wfn.safetensors")
    with pytest.raises(ValueError, match="does not fit model class small-cnn"):
        load_model_workload(tmp_path / "tiny.wfn.safetensors", (1, 1, 6, 6), "small-cnn")


def test_bundled_names_match_the_bundled_models():
    assert set(BUNDLED_MODELS) == set(models.MODELS)
    for name, spec in BUNDLED_MODELS.items():
        assert type(build_model(spec)) is models.MODELS[name] and type(build_model(name)) is models.MODELS[name]
