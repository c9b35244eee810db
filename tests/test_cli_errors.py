"""Every CLI, every bad-input class, as real processes: exit code 2, ONE line on stderr naming the flag or
file and what was expected, never a traceback. One case per CLI starts a fresh interpreter (the console
script path, ~3 s each); the others are child processes forked from one interpreter that imported the CLIs
(cli_forkrun.py: same exit code and stderr, ~50 ms each)."""
import json
import os
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
WFN = [sys.executable, "-m", "wfn_kernels.workflows.cli"]
SIM = [sys.executable, "-c", "import sys; from wfn_sim.cli import main; sys.exit(main())"]
FORKRUN = str(Path(__file__).with_name("cli_forkrun.py"))
FRESH = {"stats-truncated", "fix-batch-size-0", "sim-zero-fraction-1.5"}  # a fresh interpreter per CLI


def _packed(path):
    from torch import nn

    import wfn_kernels as wk
    from wfn_kernels.workflows.models import build

    torch.manual_seed(0)
    m = build("small-cnn").eval()
    cb = wk.Codebook.from_values([-0.5, 0.0, 0.25, 1.0])
    with torch.no_grad():
        for mod in m.modules():
            if type(mod) in (nn.Linear, nn.Conv2d):
                mod.weight.copy_(cb.values[torch.randint(0, 4, mod.weight.shape)])
    wk.convert(m, codebook=cb)
    wk.save_packed(m, path, cb)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    _packed(d / "good.wfn.safetensors")
    data = (d / "good.wfn.safetensors").read_bytes()
    (d / "truncated.safetensors").write_bytes(data[: len(data) // 2])
    n = int.from_bytes(data[:8], "little")
    key = data.index(b'"wfn_format"', 8, 8 + n)  # a flipped byte in a header key
    flipped = bytearray(data)
    flipped[key + 3] ^= 0x01
    (d / "flipped.safetensors").write_bytes(bytes(flipped))
    (d / "packed.st").write_bytes(data)  # a valid packed file under an odd name
    (d / "a_file").write_text("x")
    (d / "adir").mkdir()
    run = d / "run" / "checkpoints"
    run.mkdir(parents=True)
    (run / "checkpoint.json").write_text('{"format": 2, "iter')  # truncated checkpoint index
    return d


def cases(d):
    """(id, argv, text the one line must contain)."""
    out = str(d / "o")
    fix = WFN + ["fix", "--no-progress"]
    return [
        ("stats-truncated", WFN + ["stats", str(d / "truncated.safetensors")], "truncated.safetensors"),
        ("stats-flipped-key", WFN + ["stats", str(d / "flipped.safetensors")], "checksum mismatch in the metadata"),
        ("stats-directory", WFN + ["stats", str(d / "adir")], "is a directory, expected a .safetensors file"),
        ("stats-missing", WFN + ["stats", str(d / "nope.safetensors")], "nope.safetensors does not exist"),
        ("fix-out-is-a-file", fix + ["--out", str(d / "a_file")], "--out " + str(d / "a_file") + " is a file"),
        ("fix-out-unwritable", fix + ["--out", str(d / "a_file" / "sub")], "--out"),
        ("fix-out-proc", fix + ["--out", "/proc/wfn-cannot-create"], "--out /proc/wfn-cannot-create cannot be created"),
        ("fix-batch-size-0", fix + ["--out", out, "--batch-size", "0"],
         "argument --batch-size: expected a positive integer (>= 1), got 0"),
        ("fix-threads-0", fix + ["--out", out, "--threads", "0"], "argument --threads: expected a positive integer"),
        ("fix-unknown-model", fix + ["--out", out, "--model", "resnet-9000"], "--model: unknown model 'resnet-9000'"),
        ("fix-user-model-missing", fix + ["--out", out, "--model", "nosuchpkg.mod:Net"],
         "--model: model class 'nosuchpkg.mod:Net': cannot import module 'nosuchpkg.mod'"),
        ("fix-resume-nothing", fix + ["--out", str(d / "fresh"), "--resume"], "--resume: nothing to resume in"),
        ("fix-resume-truncated", fix + ["--out", str(d / "run"), "--resume"],
         "checkpoint.json: JSON: no whole-file checksum"),
        ("fix-interrupted-no-resume", fix + ["--out", str(d / "run")], "holds an interrupted run"),
        ("fix-baseline-dir", fix + ["--out", out, "--baseline", str(d / "adir")],
         "--baseline " + str(d / "adir") + " is a directory"),
        ("fix-data-dir-file", fix + ["--out", out, "--dataset", "fashion-mnist", "--data-dir", str(d / "a_file")],
         "--data-dir " + str(d / "a_file") + " is a file"),
        ("fix-bad-delta", fix + ["--out", out, "--delta", "1.5"], "relative_tolerance (δ) must lie in the open"),
        ("fix-bad-choice", fix + ["--out", out, "--optimizer", "lion"], "argument --optimizer: invalid choice"),
        ("fix-missing-out", fix, "the following arguments are required: --out"),
        ("sweep-unknown-model", WFN + ["sweep", "--out", out, "--model", "x"], "--model: unknown model 'x'"),
        ("sweep-lr-0", WFN + ["sweep", "--out", out, "--lr", "0"], "argument --lr: expected a finite number > 0"),
        ("demo-out-is-a-file", WFN + ["demo", "--out", str(d / "a_file")], "is a file, expected a directory"),
        ("demo-bench-repeats-0", WFN + ["demo", "--bench-repeats", "0"], "argument --bench-repeats"),
        ("wfn-unknown-command", WFN + ["frobnicate"], "invalid choice: 'frobnicate'"),
        ("sim-model-truncated", SIM + ["--model", str(d / "truncated.safetensors"), "--model-class", "small-cnn",
                                       "--input-shape", "1,1,8,8", "--out", out], "truncated.safetensors"),
        ("sim-model-flipped", SIM + ["--model", str(d / "flipped.safetensors"), "--model-class", "small-cnn",
                                     "--input-shape", "1,1,8,8", "--out", out], "checksum mismatch"),
        ("sim-model-directory", SIM + ["--model", str(d / "adir"), "--out", out], "is a directory, not a file"),
        ("sim-zero-fraction-1.5", SIM + ["--resnet", "18", "--unique-weights", "8", "--zero-fraction", "1.5",
                                         "--out", out], "argument --zero-fraction: expected a fraction in [0, 1)"),
        ("sim-zero-fraction-neg", SIM + ["--resnet", "18", "--unique-weights", "8", "--zero-fraction", "-0.5",
                                         "--out", out], "expected a fraction in [0, 1), got -0.5"),
        ("sim-out-is-a-file", SIM + ["--resnet", "18", "--out", str(d / "a_file")], "--out " + str(d / "a_file")),
        ("sim-topology-directory", SIM + ["--topology", str(d / "adir"), "--out", out], str(d / "adir")),
        ("sim-bad-input-shape", SIM + ["--resnet", "18", "--input-shape", "1,x", "--out", out],
         "argument --input-shape: expected comma-separated integers"),
        ("sim-no-source", SIM + ["--out", out], "one of the arguments --topology --model --resnet is required"),
    ]


@pytest.fixture(scope="module")
def results(files, tmp_path_factory):
    todo = cases(files)
    forked = [[name, "wfn" if argv[:len(WFN)] == WFN else "wfn-sim", argv[len(WFN if argv[:len(WFN)] == WFN
                                                                            else SIM):]]
              for name, argv, _ in todo if name not in FRESH]
    d = tmp_path_factory.mktemp("forkrun")
    (d / "cases.json").write_text(json.dumps(forked))

    def fresh(case):
        name, argv, _ = case
        return name, subprocess.run(argv, capture_output=True, text=True, env=ENV, timeout=300)

    with ThreadPoolExecutor(2) as pool:
        procs = dict(pool.map(fresh, [c for c in todo if c[0] in FRESH]))
    driver = subprocess.run([sys.executable, FORKRUN, str(d / "cases.json"), str(d / "results.json")],
                            capture_output=True, text=True, env=ENV, timeout=600)
    assert driver.returncode == 0, driver.stderr
    for name, r in json.loads((d / "results.json").read_text()).items():
        procs[name] = subprocess.CompletedProcess(name, r["returncode"], r["stdout"], r["stderr"])
    return procs


CASE_IDS = [c[0] for c in cases(Path("/x"))]


@pytest.mark.parametrize("name", CASE_IDS)
def test_user_error_is_one_line_exit_2(files, results, name):
    _, _, expected = next(c for c in cases(files) if c[0] == name)
    proc = results[name]
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, (name, proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr
    assert len(lines) == 1, lines
    assert lines[0].startswith(("wfn ", "wfn-sim: ", "wfn: ")) and ": error: " in lines[0], lines[0]
    assert expected in lines[0], (expected, lines[0])


def test_valid_packed_file_under_any_name_is_read_by_content(files, tmp_path):
    proc = subprocess.run(SIM + ["--model", str(files / "packed.st"), "--model-class", "small-cnn", "--input-shape",
                                 "1,1,8,8", "--designs", "dense_ws", "--no-plots", "--out", str(tmp_path)],
                          capture_output=True, text=True, env=ENV, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "layers.csv").is_file()


USER_MODULE = textwrap.dedent("""
    import torch
    from torch import nn

    class TinyNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3, padding=1, bias=False)
            self.bn = nn.BatchNorm2d(4)
            self.fc = nn.Linear(4 * 4 * 4, 10)

        def forward(self, x):
            x = torch.nn.functional.max_pool2d(torch.relu(self.bn(self.conv(x))), 2)
            return self.fc(torch.flatten(x, 1))
""")


def test_fix_user_model_class_then_stats_and_sim(tmp_path):
    """`wfn fix --model pkg.mod:Class` on a real module file on PYTHONPATH; the saved model names the spec, so
    `wfn stats` and `wfn-sim` rebuild it; a second `wfn fix` into the same --out needs --overwrite."""
    pkg = tmp_path / "cli13_userpkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "nets.py").write_text(USER_MODULE)
    env = {**ENV, "PYTHONPATH": str(tmp_path) + os.pathsep + ENV.get("PYTHONPATH", "")}
    out = tmp_path / "run"
    fix = WFN + ["fix", "--model", "cli13_userpkg.nets:TinyNet", "--out", str(out), "--baseline-epochs", "1",
                 "--fractions", "0.5", "1.0", "--epochs-per-iteration", "1", "--max-steps-per-iteration", "2",
                 "--no-progress"]
    proc = subprocess.run(fix, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr
    from wfn_kernels.workflows.pipeline import load_saved_model, verify_run

    sys.path.insert(0, str(tmp_path))
    try:
        model, _, meta = load_saved_model(out / "model.safetensors")
    finally:
        sys.path.remove(str(tmp_path))
        for name in [m for m in sys.modules if m.startswith("cli13_userpkg")]:
            del sys.modules[name]
    assert meta["wfn_model"] == "cli13_userpkg.nets:TinyNet" and type(model).__name__ == "TinyNet"
    assert set(verify_run(out)["files"]) >= {"model.safetensors", "summary.json", "history.json"}
    stats = subprocess.run(WFN + ["stats", str(out / "model.safetensors")], capture_output=True, text=True, env=env,
                           timeout=300)
    assert stats.returncode == 0, stats.stderr
    assert "conv.weight" in stats.stdout and "fc.weight" in stats.stdout
    sim = subprocess.run(SIM + ["--model", str(out / "model.safetensors"), "--input-shape", "1,1,8,8", "--designs",
                                "dense_ws", "--no-plots", "--out", str(tmp_path / "sim")],
                         capture_output=True, text=True, env=env, timeout=300)
    assert sim.returncode == 0, sim.stderr
    assert "2 layers" in sim.stdout
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    again = subprocess.run(fix, capture_output=True, text=True, env=env, timeout=300)
    assert again.returncode == 2 and "already holds a finished run (run.json); pass --overwrite" in again.stderr
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before  # nothing touched
    again = subprocess.run(fix + ["--overwrite", "--seed", "1"], capture_output=True, text=True, env=env, timeout=600)
    assert again.returncode == 0, again.stderr
    assert (out / "model.safetensors").read_bytes() != before["model.safetensors"]
    verify_run(out)


def test_every_option_shows_its_default():
    """--help of wfn (each subcommand) and wfn-sim: every option with a default says it."""
    import argparse

    from wfn_sim.cli import build_parser as sim_parser
    from wfn_kernels.workflows.cli import build_parser as wfn_parser

    wfn = wfn_parser()
    subs = next(a for a in wfn._actions if isinstance(a, argparse._SubParsersAction)).choices
    parsers = {f"wfn {k}": v for k, v in subs.items()}
    parsers["wfn-sim"] = sim_parser()
    assert set(parsers) == {"wfn demo", "wfn fix", "wfn sweep", "wfn stats", "wfn-sim"}
    checked = 0
    for prog, parser in parsers.items():
        fmt = parser._get_formatter()
        one_of = {id(a) for g in parser._mutually_exclusive_groups if g.required for a in g._group_actions}
        for action in parser._actions:
            if not action.option_strings or isinstance(action, (argparse._HelpAction, argparse._StoreTrueAction)) \
                    or action.required or id(action) in one_of:  # required: no default to show
                continue
            text = fmt._expand_help(action) if action.help else ""
            assert "default" in text.lower(), (prog, action.option_strings, text)
            if action.default is not None and not isinstance(action.default, (list, tuple)):
                assert str(action.default) in text or repr(action.default) in text, (prog, action.dest, text)
            checked += 1
    assert checked > 60
    for argv in (WFN + ["fix", "--help"], SIM + ["--help"]):
        proc = subprocess.run(argv, capture_output=True, text=True, env=ENV, timeout=120)
        assert proc.returncode == 0 and "(default: " in proc.stdout
