import json

import pytest
import torch

from wfn_kernels.workflows import data, models
from wfn_kernels.workflows.fix_cli import main


def test_missing_and_malformed_dataset_dirs(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        data.fashion_mnist(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
        data.fashion_mnist(tmp_path)
    for stem in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):
        (tmp_path / stem).write_bytes(b"garbage!")
    with pytest.raises(ValueError, match="not an unsigned-byte idx file"):
        data.fashion_mnist(tmp_path)


def test_validation_split_is_disjoint_and_deterministic():
    train, _ = data.digits()
    a, v = data.validation_split(train, 0.2, seed=3)
    a2, v2 = data.validation_split(train, 0.2, seed=3)
    assert len(a.labels) + len(v.labels) == len(train.labels) and len(v.labels) == round(0.2 * len(train.labels))
    assert torch.equal(v.images, v2.images)
    with pytest.raises(ValueError, match="validation fraction"):
        data.validation_split(train, 1.0)


def test_small_resnet_shapes():
    m = models.build("small-resnet", width=4)
    assert m(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    assert m(torch.zeros(2, 1, 8, 8)).shape == (2, 10)


def test_cli_fix_then_stats(tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["fix", "--dataset", "digits", "--out", str(out), "--baseline-epochs", "2", "--fractions", "0.5", "1.0",
               "--epochs-per-iteration", "1", "--max-steps-per-iteration", "3", "--delta", "0.05", "--no-progress",
               "--lr", "1e-3", "--allow-sign-flip", "--keep-fixed"])
    assert rc == 0
    for name in ("history.json", "history.csv", "metrics.json", "summary.json", "model.safetensors",
                 "progress.png", "accuracy.png", "orders.png", "top_values.png", "checkpoints/checkpoint.json"):
        assert (out / name).is_file(), name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["relative_tolerance"] == 0.05 and summary["unique"] >= 1
    assert summary["config"]["same_sign"] is False and summary["config"]["keep_fixed"] is True
    capsys.readouterr()
    assert main(["stats", str(out / "model.safetensors"), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["unique"] == summary["unique"]


def test_stats_of_a_packed_model_decodes_its_codes(tmp_path, capsys):
    import wfn_kernels as wk
    from wfn_testutil import round_to_power_of_two_sums
    from wfn_kernels.fixing.metrics import network_metrics

    torch.manual_seed(0)
    m = models.build("small-cnn").eval()
    round_to_power_of_two_sums(m, max_terms=2)
    expected = network_metrics(m, include_batchnorm=False)
    wk.convert(m)
    wk.save_packed(m, tmp_path / "m.wfn.safetensors")
    capsys.readouterr()
    assert main(["stats", str(tmp_path / "m.wfn.safetensors"), "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    expected["order_values"] = {str(k): v for k, v in expected["order_values"].items()}  # JSON keys
    for key in ("numel", "unique", "unique_nonzero", "entropy_bits", "order_values"):
        assert got[key] == expected[key], key
    assert [layer["name"] for layer in got["layers"]] == [layer["name"] for layer in expected["layers"]]


def test_cli_rejects_bad_config(tmp_path, capsys):
    assert main(["fix", "--dataset", "digits", "--out", str(tmp_path), "--delta", "1.5"]) == 2
    assert "open interval (0, 1), got 1.5" in capsys.readouterr().err
    assert main(["fix", "--dataset", "digits", "--out", str(tmp_path), "--fractions", "0.6", "0.3", "1.0"]) == 2
    assert "strictly increasing" in capsys.readouterr().err


def test_cli_missing_dataset_dir(tmp_path, capsys):
    assert main(["fix", "--dataset", "fashion-mnist", "--data-dir", str(tmp_path / "x"), "--out", str(tmp_path)]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_cli_sweep_writes_csv_and_plots(tmp_path):
    out = tmp_path / "sweep"
    rc = main(["sweep", "--dataset", "digits", "--out", str(out), "--baseline-epochs", "2", "--fractions", "0.5", "1.0",
               "--epochs-per-iteration", "1", "--max-steps-per-iteration", "2", "--deltas", "0.02", "0.1",
               "--bn", "off", "--no-progress"])
    assert rc == 0
    rows = (out / "sweep.csv").read_text().splitlines()
    assert len(rows) == 3 and rows[0].startswith("delta,ratio,bn,accuracy")
    for metric in ("accuracy", "unique_nonzero", "entropy_nonzero_bits"):
        assert (out / f"sweep_{metric}.png").is_file()
