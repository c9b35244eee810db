"""Guards of a fixing run: a relaxed schedule past δ_t = 1, divergence, accuracy drops, presets, seeding."""
import warnings

import pytest
import torch
from torch import nn

from wfn_kernels.fixing import WFNConfig, fix_weights
from wfn_kernels.fixing.guards import AccuracyDropError, AccuracyDropWarning, DivergenceError
from wfn_kernels.fixing import checkpoint


def setup(seed=0, n=256):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 3))
    x = torch.randn(n, 8)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()
    data = list(zip(x.split(32), y.split(32)))
    return model, data


def quick(**kw):
    return WFNConfig(**{"fix_fractions": (0.5, 0.8, 1.0), "epochs_per_iteration": 1, "relax_tolerance": False,
                        "relative_tolerance": 0.05, "include_batchnorm": False, **kw})


@pytest.mark.parametrize("kw,message", [
    ({"relative_tolerance": 0.15}, r"δ_0 = δ·N = 0.15 x 10 = 1.5, which reaches 1"),
    ({"relative_tolerance": 0.1}, r"reaches 1.*relative_tolerance < 0.1 or relax_tolerance=False"),
    ({"relative_tolerance": 0.4, "fix_fractions": (0.5, 0.9, 1.0)}, r"0.4 x 3 = 1.2, which reaches 1"),
    ({"max_accuracy_drop": -0.5}, "max_accuracy_drop must be None or a number of accuracy points >= 0"),
    ({"max_accuracy_drop": float("nan")}, "max_accuracy_drop must be None"),
    ({"stop_on_accuracy_drop": "yes"}, "stop_on_accuracy_drop must be True or False"),
    ({"divergence_loss_factor": 1.0}, "divergence_loss_factor must be a number > 1"),
])
def test_bad_guard_settings_are_rejected(kw, message):
    with pytest.raises(ValueError, match=message):
        WFNConfig(**kw)


def test_relaxed_schedule_below_one_and_unrelaxed_large_delta_are_accepted():
    assert WFNConfig(relative_tolerance=0.09).tolerance_at(0) == pytest.approx(0.9)
    assert WFNConfig(relative_tolerance=0.15, relax_tolerance=False).tolerance_at(0) == 0.15


def test_presets():
    assert WFNConfig.paper() == WFNConfig()
    small = WFNConfig.small_model(seed=3)
    assert (small.relative_tolerance, small.relax_tolerance, small.include_batchnorm, small.lr, small.seed) == \
        (0.15, False, False, 3e-4, 3)
    assert WFNConfig.preset("small-model") == WFNConfig.small_model()
    with pytest.raises(ValueError, match=r"unknown preset 'tiny'; choose one of \['paper', 'small-model'\]"):
        WFNConfig.preset("tiny")


def test_divergence_stops_with_the_last_good_checkpoint_kept(tmp_path):
    model, data = setup()
    cfg = quick(lr=1e3, regularizer_ratio=0.0, grad_clip_norm=None, optimizer="sgd", momentum=0.0)
    with pytest.raises(DivergenceError, match=r"WFN iteration 1.*(NaN/Inf|more than 100x|the loss is)"):
        fix_weights(model, data, data, cfg, run_dir=tmp_path, progress=False)
    index, _ = checkpoint.load(tmp_path)  # iteration 0 (no training) was good and is what is on disk
    assert index["iteration"] == 0
    assert isinstance(DivergenceError("x"), FloatingPointError)


def test_accuracy_guard_warns_and_records_the_drop():
    model, data = setup()
    cfg = quick(max_accuracy_drop=0.0)  # any drop at all triggers it
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, history = fix_weights(model, data, data, cfg, progress=False)
    assert all("accuracy_drop" in h and "reference_val_accuracy" in h for h in history)
    flagged = [h for h in history if h["accuracy_drop"] > 0]
    assert flagged, "the fixed model lost no accuracy at all: the guard was not exercised"
    assert all("warning" in h and "points below the starting" in h["warning"] for h in flagged)
    assert [w for w in caught if issubclass(w.category, AccuracyDropWarning)]
    assert not [h for h in history if h["accuracy_drop"] <= 0 and "warning" in h]


def test_accuracy_guard_can_stop_the_run(tmp_path):
    model, data = setup()
    cfg = quick(max_accuracy_drop=0.0, stop_on_accuracy_drop=True, relative_tolerance=0.5)
    with pytest.raises(AccuracyDropError, match=r"stopping \(stop_on_accuracy_drop\)"):
        fix_weights(model, data, data, cfg, run_dir=tmp_path, progress=False)


def test_seed_makes_the_pipeline_baseline_reproducible(tmp_path):
    from wfn_kernels.workflows.pipeline import RunSpec, run

    outs = []
    for name in ("a", "b"):
        spec = RunSpec(dataset="digits", out=str(tmp_path / name), config=quick(seed=7, max_steps_per_iteration=1),
                       baseline_epochs=1, progress=False)
        outs.append(run(spec)["baseline_accuracy"])
        torch.manual_seed(12345 if name == "a" else 999)  # the global RNG state before a run must not matter
    assert outs[0] == outs[1]


def test_cli_preset_and_guard_flags(tmp_path, capsys):
    import json

    from wfn_kernels.workflows.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["fix", "--preset", "tiny", "--out", str(tmp_path / "a")])
    assert exc.value.code == 2 and "invalid choice: 'tiny'" in capsys.readouterr().err
    assert main(["fix", "--max-accuracy-drop", "-1", "--out", str(tmp_path / "b")]) == 2
    assert "max_accuracy_drop must be None or a number of accuracy points >= 0" in capsys.readouterr().err
    assert main(["fix", "--delta", "0.15", "--out", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err
    assert "which reaches 1" in err and len(err.strip().splitlines()) == 1
    out = tmp_path / "d"
    rc = main(["fix", "--preset", "small-model", "--lr", "1e-3", "--fractions", "0.5", "1.0", "--baseline-epochs",
               "1", "--max-steps-per-iteration", "1", "--max-accuracy-drop", "100", "--out", str(out), "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    cfg = json.loads((out / "summary.json").read_text())["config"]
    assert (cfg["relative_tolerance"], cfg["relax_tolerance"], cfg["include_batchnorm"], cfg["lr"]) == \
        (0.15, False, False, 1e-3)  # the preset's values, with the flag given on top
    assert cfg["max_accuracy_drop"] == 100.0
