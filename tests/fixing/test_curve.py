"""The trade-off curve runner and report (workflows/curve.py, curve_report.py), on digits as real subprocesses
and in-process for the resume and the report's logic."""

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from wfn_kernels.fixing.metrics import count_values
from wfn_kernels.format.container import CorruptFileError, read_sealed_json
from wfn_kernels.workflows import curve, curve_report
from wfn_kernels.workflows.pipeline import load_saved_model

ROOT = Path(__file__).resolve().parents[2]


def _cli(*args):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "wfn_kernels.workflows.curve", *args], capture_output=True,
                          text=True, cwd=ROOT, env=env, timeout=600)


@pytest.fixture(scope="module")
def digits_runs(tmp_path_factory):
    runs = tmp_path_factory.mktemp("curve")
    args = ["run", "--runs", str(runs), "--dataset", "digits", "--models", "small-cnn", "--seeds", "0",
            "--deltas", "0.01", "--methods", "wfn", "apot4", "uniform4", "--epochs", "1",
            "--baseline-epochs", "1", "--threads", "1", "--no-progress"]
    first = _cli(*args)
    assert first.returncode == 0, first.stderr[-2000:]
    return runs, args, first


def test_run_writes_one_counted_point_per_method_and_skips_them_after(digits_runs):
    runs, args, first = digits_runs
    names = sorted(p.stem for p in (runs / "points").glob("*.json"))
    assert names == ["small-cnn_s0_apot4", "small-cnn_s0_uniform4", "small-cnn_s0_wfn_d0.01"]
    wfn = read_sealed_json(runs / "points" / "small-cnn_s0_wfn_d0.01.json", kind=curve.POINT_KIND)
    fixed, _, _ = load_saved_model(runs / "small-cnn_s0_d0.01" / "model.safetensors")
    for pset in ("weights", "conv-linear", "all"):  # the point's counts are count_values of the saved model
        c = count_values(fixed, pset)
        assert wfn[f"unique_nonzero:{pset}"] == c["unique_nonzero"]
        assert wfn[f"entropy_bits:{pset}"] == pytest.approx(c["entropy_bits"])
    assert wfn["relax"] is True and wfn["epochs"] == 27 and wfn["dataset"] == "digits"
    apot = read_sealed_json(runs / "points" / "small-cnn_s0_apot4.json", kind=curve.POINT_KIND)
    assert apot["baseline_accuracy"] == wfn["baseline_accuracy"]  # one float baseline per seed
    assert apot["epochs"] == 1 and not list(runs.glob("*.ckpt.safetensors"))
    again = _cli(*args)
    assert again.returncode == 0 and "[curve]" not in again.stdout  # nothing left to do


def test_report_writes_csv_png_markdown(digits_runs, tmp_path):
    runs, _, _ = digits_runs
    out = tmp_path / "report"
    r = _cli("report", "--runs", str(runs), "--out", str(out))
    assert r.returncode == 0, r.stderr[-2000:]
    with open(out / "curve_points.csv") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["method"] for r in rows) == ["apot4", "uniform4", "wfn"]
    assert (out / "curve.png").stat().st_size > 10_000
    md = (out / "curve.md").read_text()
    assert "# Accuracy vs unique weights on digits" in md and "WFN δ=0.01" in md and "## Targets" in md
    # the WFN point's fixing history, read from its run directory
    assert "## Fixing histories" in md
    (row,) = [line for line in md.splitlines() if line.startswith("| small-cnn_s0_wfn_d0.01 | ")]
    cells = row.strip("| ").split(" | ")
    assert int(cells[1]) >= 1 and len(cells[2].split(" / ")) == 3  # iterations; first / lowest / last


def test_history_table_reports_the_largest_fall_between_iterations():
    hist = [{"val_accuracy": v, "unique": u} for v, u in (("90.0", "900"), ("60.5", "90"), ("85.0", "20"),
                                                             ("80.0", "12"))]
    (row,) = curve_report.history_table({"m_s0_wfn_d0.1": hist})[2:]
    assert row == "| m_s0_wfn_d0.1 | 4 | 90.00 / 60.50 / 80.00 | 29.50 | 12 |"
    assert curve_report.history_table({})[0].startswith("No fixing histories found")


def test_damaged_point_is_an_error_not_a_skip(digits_runs, tmp_path):
    runs, args, _ = digits_runs
    copy = tmp_path / "runs"
    (copy / "points").mkdir(parents=True)
    src = (runs / "points" / "small-cnn_s0_apot4.json").read_text()
    (copy / "points" / "small-cnn_s0_apot4.json").write_text(src.replace('"apot4"', '"apot5"'))
    with pytest.raises(CorruptFileError):
        curve_report.load_points([copy])
    r = _cli("run", "--runs", str(copy), "--dataset", "digits", "--models", "small-cnn", "--seeds", "0",
             "--methods", "apot4", "--epochs", "0", "--baseline-epochs", "1", "--no-progress")
    assert r.returncode != 0 and "CorruptFileError" in r.stderr


def test_interrupted_fine_tune_resumes_to_the_same_model(tmp_path, monkeypatch):
    torch.set_num_threads(1)
    w = curve.Where(tmp_path / "a", dataset="digits", baseline_epochs=1, progress=False)
    straight = curve.quant_point(w, "small-cnn", 0, "apot4", epochs=2)
    w2 = curve.Where(tmp_path / "b", dataset="digits", baseline_epochs=1, progress=False)
    real, calls = curve.train_epoch, []

    def dies_on_second(*a):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a)

    monkeypatch.setattr(curve, "train_epoch", dies_on_second)
    with pytest.raises(KeyboardInterrupt):
        curve.quant_point(w2, "small-cnn", 0, "apot4", epochs=2)
    assert (tmp_path / "b" / "small-cnn_s0_apot4.ckpt.safetensors").exists()
    monkeypatch.setattr(curve, "train_epoch", real)
    resumed = curve.quant_point(w2, "small-cnn", 0, "apot4", epochs=2)
    for k in ("accuracy", "unique_nonzero:all", "entropy_bits:all"):
        assert resumed[k] == straight[k], k
    with pytest.raises(ValueError, match="other settings"):  # a checkpoint of another budget is refused
        curve.quant_point(w2, "small-cnn", 0, "apot4", epochs=3)


def _g(method, acc, uniq, ent, delta=None, model="m"):
    g = {"model": model, "method": method, "delta": delta, "relax": True, "accuracy": acc, "drop": 90 - acc,
         "unique_nonzero:all": uniq, "entropy_bits:all": ent, "unique_nonzero:weights": uniq / 2,
         "entropy_bits:weights": ent - 0.5, "seeds": [0], "n": 1}
    return {**g, **{k + "_std": 0.0 for k in list(g) if k not in ("model", "method", "delta", "relax", "seeds")}}


def test_dominance_needs_accuracy_unique_and_entropy_all_at_once():
    gs = [_g("wfn", 89.0, 10, 2.5, 0.01), _g("wfn", 89.9, 40, 4.0, 0.005), _g("apot4", 89.5, 300, 5.0),
          _g("apot3", 89.95, 30, 3.0)]
    d = {x["method"]: x["dominated_by"] for x in curve_report.dominance(gs)}
    assert d == {"apot4": [0.005], "apot3": []}  # δ=0.01 is less accurate; δ=0.005 more values than apot3


def test_targets_report_met_and_missed_from_the_numbers():
    gs = [_g("wfn", 89.8, 10, 2.9, 0.01, "small-resnet"), _g("apot4", 89.9, 60, 4.0, model="small-resnet"),
          _g("wfn", 89.0, 20, 3.0, 0.01, "small-cnn"), _g("uniform4", 88.5, 900, 9.0, model="small-cnn")]
    rows = "\n".join(curve_report.targets(gs))
    assert "drop <= 0.3 points | 0.20 ± 0.00 over seeds [0] | yes" in rows
    assert "APoT-4 / WFN = 6.0x" in rows and "APoT-4 / WFN = 1.38x" in rows and "| no |" in rows
    assert "dominates apot4 on small-resnet | no WFN point dominates it" in rows  # apot4 is more accurate
    assert "dominates uniform4 on small-cnn | dominated by δ = 0.01 " in rows  # every model is checked


def test_bad_input_names_the_flag(tmp_path):
    r = _cli("run", "--runs", str(tmp_path), "--deltas", "1.5")
    assert r.returncode != 0 and "--deltas must lie in (0, 1), got [1.5]" in r.stderr
    r = _cli("run", "--runs", str(tmp_path), "--baseline-epochs", "0")
    assert r.returncode != 0 and "--epochs must be >= 0 and --baseline-epochs >= 1, got None, 0" in r.stderr
    r = _cli("run", "--runs", str(tmp_path), "--methods", "apot7")
    assert r.returncode == 2 and "invalid choice: 'apot7'" in r.stderr
    with pytest.raises(ValueError, match="unknown baseline method 'apot7'"):
        curve.quant_point(curve.Where(tmp_path), "small-cnn", 0, "apot7", epochs=0)


def _row(method, seed, acc, uniq, ent, delta=None):
    r = {"model": "m", "method": method, "delta": delta, "relax": True, "epochs": 27, "seed": seed,
         "accuracy": acc, "baseline_accuracy": 90.0, "drop": 90.0 - acc, "seconds": 1.0, "zero_fraction:all": 0.0}
    for s in ("weights", "conv-linear", "all"):
        r.update({f"unique_nonzero:{s}": uniq, f"entropy_bits:{s}": ent})
    return r


def test_methods_are_compared_on_the_seeds_both_have():
    # WFN has a lucky third seed; on the two seeds APoT has, APoT is more accurate
    rows = [_row("wfn", 0, 89.0, 10, 3.0, 0.01), _row("wfn", 1, 89.0, 10, 3.0, 0.01), _row("wfn", 2, 95.0, 10, 3.0, 0.01),
            _row("apot4", 0, 89.5, 300, 5.0), _row("apot4", 1, 89.5, 300, 5.0)]
    groups = curve_report.group(rows)
    wfn = next(g for g in groups if g["method"] == "wfn")
    assert wfn["accuracy"] == pytest.approx(91.0)  # all seeds: above APoT's 89.5
    (d,) = curve_report.dominance(groups)
    assert d["dominated_by"] == [] and d["seeds"] == [0, 1]
    assert curve_report.paired(wfn, groups[1])[0]["accuracy"] == pytest.approx(89.0)
