"""The core install needs torch, numpy and safetensors only: without the extras the package imports, and a
feature that needs one ends with one line naming the `pip install 'wfn-kernels[...]'` that adds it.

Each case runs in a fresh interpreter where the extras' modules are made unimportable (sys.modules[m] = None),
as in an install without them."""
import subprocess
import sys

import pytest

EXTRAS = ("matplotlib", "tqdm", "yaml", "sklearn", "torchao", "triton")
PRELUDE = "import sys\nfor m in {mods!r}:\n    sys.modules[m] = None\n"


def run(code: str, mods=EXTRAS):
    proc = subprocess.run([sys.executable, "-c", PRELUDE.format(mods=mods) + code], capture_output=True,
                          text=True, timeout=300)
    return proc


def test_core_imports_and_runs_without_any_extra(tmp_path):
    proc = run(f"""
import torch, wfn_kernels as wk, wfn_sim
from torch import nn
cb = wk.Codebook.from_values([-1.0, 0.0, 0.5])
m = nn.Sequential(nn.Linear(8, 4))
with torch.no_grad():
    m[0].weight.copy_(cb.values[torch.randint(0, 3, (4, 8))])
report = wk.convert(m)
wk.save_packed(m, {str(tmp_path / 'm.wfn.safetensors')!r}, report.codebook)
wk.load_packed({str(tmp_path / 'm.wfn.safetensors')!r}, nn.Sequential(nn.Linear(8, 4)))
print("ok", [e for e in {EXTRAS!r} if sys.modules.get(e) is not None])
""")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "ok []"


@pytest.mark.parametrize("argv,extra", [
    (["wfn_kernels.workflows.cli", "demo", "--no-progress"], "wfn-kernels[data]"),
    (["wfn_sim.cli", "--resnet", "18"], "wfn-kernels[cli]"),
])
def test_cli_without_its_extra_says_which_to_install(tmp_path, argv, extra):
    module, *args = argv
    code = (f"import runpy; sys.argv = ['x', *{args!r}, '--out', {str(tmp_path / 'out')!r}]\n"
            f"from {module} import main\nsys.exit(main(sys.argv[1:]))")
    proc = run(code)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and extra in lines[0] and "Traceback" not in proc.stderr


def test_torchao_integration_without_torchao_names_the_extra():
    proc = run("import wfn_kernels.integrations.torchao")
    assert proc.returncode != 0
    assert "MissingExtraError" in proc.stderr and "pip install 'wfn-kernels[torchao]'" in proc.stderr
