"""The report of the trade-off curve (workflows/curve.py): every point, mean ± std per (model, method, δ)
over the seeds there are, the dominance check, the targets, and the plot.

Writes into ``out``: curve_points.csv (one row per point), curve.csv (one row per group, mean and std),
curve.md (settings, coverage, tables, and the fixing histories found beside the points) and curve.png
(accuracy vs unique non-zero values and vs entropy, one row of panels per model). Counts are on the parameter set ``all`` (every Linear / Conv parameter plus
BatchNorm γ/β) unless a column names another.
"""

from __future__ import annotations

import csv
import io
import statistics
from pathlib import Path

from ..fixing.metrics import PARAMETER_SETS
from ..format.container import atomic_write, read_sealed_json
POINT_KIND = "wfn-curve-point"  # the sealed JSON kind of one point (written by curve.py)
DELTAS = (0.0075, 0.01, 0.015, 0.03, 0.05, 0.1, 0.15)  # the WFN points of the full grid
BASELINES = ("apot3", "apot4", "apot5", "uniform4")  # the quantisation baselines (curve.METHODS)
PLOT_SET = "all"
STATS = ("accuracy", "drop", "baseline_accuracy", "seconds",
         *(f"{k}:{s}" for s in PARAMETER_SETS for k in ("unique_nonzero", "entropy_bits")), "zero_fraction:all")
MARKERS = {"apot3": ("v", "tab:orange"), "apot4": ("s", "tab:red"), "apot5": ("D", "tab:purple"),
           "uniform4": ("^", "tab:green")}


def point_name(model: str, seed: int, method: str, delta: float | None = None) -> str:
    """A point's file stem (points/<name>.json)."""
    return f"{model}_s{seed}_{method}" + (f"_d{delta:g}" if method == "wfn" else "")


def run_dir_name(model: str, seed: int, delta: float) -> str:
    """The directory a WFN point's fixing run writes (model, history, plots) under the runs directory."""
    return f"{model}_s{seed}_d{delta:g}"


def load_points(dirs) -> list[dict]:
    """Every point of ``dirs``/points, each verified; a point seen twice (same name) counts once."""
    rows = {}
    for d in dirs:
        for p in sorted(Path(d, "points").glob("*.json")):
            row = read_sealed_json(p, kind=POINT_KIND)
            row["drop"] = row["baseline_accuracy"] - row["accuracy"]
            rows.setdefault(p.stem, row)
    if not rows:
        raise SystemExit(f"no points in {[str(Path(d, 'points')) for d in dirs]}; run `curve run` first")
    return list(rows.values())


def group(rows: list[dict]) -> list[dict]:
    """Mean and sample std (0 for one seed) of STATS per (model, method, δ), with the seeds."""
    keyed = {}
    for r in rows:
        keyed.setdefault((r["model"], r["method"], r["delta"]), []).append(r)
    out = []
    for (model, method, delta), rs in sorted(keyed.items(), key=lambda kv: (kv[0][0], kv[0][1] != "wfn",
                                                                            kv[0][1], kv[0][2] or 0)):
        g = {"model": model, "method": method, "delta": delta, "relax": rs[0]["relax"], "epochs": rs[0]["epochs"],
             "seeds": sorted(r["seed"] for r in rs), "n": len(rs), "_rows": rs}
        for k in STATS:
            vals = [float(r[k]) for r in rs]
            g[k] = statistics.fmean(vals)
            g[k + "_std"] = statistics.stdev(vals) if len(vals) > 1 else 0.0
        out.append(g)
    return out


def paired(a: dict, b: dict) -> tuple[dict, dict] | None:
    """Groups ``a`` and ``b`` restricted to the seeds both have (None when they share none), so that two
    methods are compared on the same float baselines."""
    common = set(a["seeds"]) & set(b["seeds"])
    if not common:
        return None
    if common == set(a["seeds"]) == set(b["seeds"]):
        return a, b
    return tuple(group([r for r in g["_rows"] if r["seed"] in common])[0] for g in (a, b))


def dominance(groups: list[dict], pset: str = PLOT_SET) -> list[dict]:
    """For each baseline group, the WFN groups of its model with >= its accuracy and <= its unique count and
    entropy (means over the seeds both have, parameter set ``pset``)."""
    res = []
    for b in (g for g in groups if g["method"] != "wfn"):
        wins, seeds, pairs = [], set(), []
        for g in (g for g in groups if g["model"] == b["model"] and g["method"] == "wfn"):
            p = paired(g, b)
            if p is None:
                continue
            gp, bp = p
            seeds |= set(gp["seeds"])
            pairs.append((g["delta"], gp["accuracy"], bp["accuracy"]))
            if (gp["accuracy"] >= bp["accuracy"] and gp[f"unique_nonzero:{pset}"] <= bp[f"unique_nonzero:{pset}"]
                    and gp[f"entropy_bits:{pset}"] <= bp[f"entropy_bits:{pset}"]):
                wins.append(g["delta"])
        res.append({"model": b["model"], "method": b["method"], "dominated_by": wins, "seeds": sorted(seeds),
                    "accuracy_pairs": pairs})
    return res


def _pm(g: dict, k: str, fmt: str = "{:.2f}") -> str:
    return (fmt + " ± " + fmt).format(g[k], g[k + "_std"])


def _label(g: dict) -> str:
    return f"WFN δ={g['delta']:g}" + ("" if g["relax"] else " (no relax)") if g["method"] == "wfn" else g["method"]


def _table(groups: list[dict]) -> list[str]:
    lines = ["| model | method | seeds | top-1 (%) | drop (points) | unique non-zero: all / conv-linear / "
             "weights | entropy (bits): all / weights | zeros (%) | training epochs | wall s per run |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for g in groups:
        uniq = " / ".join(_pm(g, f"unique_nonzero:{s}", "{:.1f}") for s in ("all", "conv-linear", "weights"))
        ent = " / ".join(_pm(g, f"entropy_bits:{s}", "{:.3f}") for s in ("all", "weights"))
        lines.append(f"| {g['model']} | {_label(g)} | {g['seeds']} | {_pm(g, 'accuracy')} | {_pm(g, 'drop')} | "
                     f"{uniq} | {ent} | {100 * g['zero_fraction:all']:.1f} | {g['epochs']} | {g['seconds']:.0f} |")
    return lines


def _find(groups, model, method, delta=None):
    return next((g for g in groups if g["model"] == model and g["method"] == method
                 and (delta is None or g["delta"] == delta)), None)


def targets(groups: list[dict], model: str = "small-resnet") -> list[str]:
    """The issue's targets on ``model`` (parameter set ``all``), each with what was measured; dominance of the
    baselines is reported for every model that has points, ``model`` first."""
    w, a = _find(groups, model, "wfn", 0.01), _find(groups, model, "apot4")
    rows = ["| target | measured | met |", "|---|---|---|"]

    def add(name, text, ok):
        rows.append(f"| {name} | {text} | {'n/a' if ok is None else ('yes' if ok else 'no')} |")

    if w is None:
        add(f"paper defaults (δ = 0.01) on {model}: drop <= 0.3", "no point yet", None)
    else:
        add(f"paper defaults (δ = 0.01) on {model}: drop <= 0.3 points",
            f"{_pm(w, 'drop')} over seeds {w['seeds']}", w["drop"] <= 0.3)
        add("entropy at δ = 0.01 <= 3.0 bits at <= 0.3 points drop",
            f"{_pm(w, 'entropy_bits:all', '{:.3f}')} bits, drop {w['drop']:.2f}",
            w["entropy_bits:all"] <= 3.0 and w["drop"] <= 0.3)
    pair = paired(w, a) if w is not None and a is not None else None
    if pair is not None:
        w, a = pair  # on the seeds both have
        ru = a["unique_nonzero:all"] / max(w["unique_nonzero:all"], 1)
        re_ = a["entropy_bits:all"] / max(w["entropy_bits:all"], 1e-9)
        ru_w = a["unique_nonzero:weights"] / max(w["unique_nonzero:weights"], 1)
        re_w = a["entropy_bits:weights"] / max(w["entropy_bits:weights"], 1e-9)
        add("unique non-zero <= 1/5 of APoT 4-bit's (same set)", f"APoT-4 / WFN = {ru:.1f}x "
            f"({a['unique_nonzero:all']:.1f} / {w['unique_nonzero:all']:.1f}; seeds {a['seeds']}); on "
            f"`weights` only {ru_w:.1f}x", ru >= 5)
        add("entropy <= 1/1.5 of APoT 4-bit's (same set)", f"APoT-4 / WFN = {re_:.2f}x "
            f"({a['entropy_bits:all']:.3f} / {w['entropy_bits:all']:.3f} bits); on `weights` only {re_w:.2f}x",
            re_ >= 1.5)
    for d in sorted(dominance(groups), key=lambda d: (d["model"] != model, d["model"])):  # every model's
        won = ", ".join(f"{x:g}" for x in d["dominated_by"])
        add(f"the WFN curve dominates {d['method']} on {d['model']}",
            (f"dominated by δ = {won}" if won else "no WFN point dominates it")
            + f" (seeds {d['seeds']}; top-1 WFN vs {d['method']}: "
            + ", ".join(f"δ={x:g} {wa:.2f} vs {ba:.2f} %" for x, wa, ba in d["accuracy_pairs"]) + ")",
            bool(d["dominated_by"]))
    small = [g for g in groups if g["method"] == "wfn" and g["drop"] <= 0.5]
    best = min(small, key=lambda g: g["unique_nonzero:all"], default=None)
    add("moonshot: <= 16 unique values within 0.5 points (any model)",
        "best: none within 0.5 points" if best is None else
        f"best: {best['model']} δ={best['delta']:g}, {best['unique_nonzero:all']:.1f} values, drop {best['drop']:.2f}",
        None if best is None else best["unique_nonzero:all"] <= 16)
    return rows


def coverage(rows: list[dict], grid_models=("small-resnet", "small-cnn"), seeds=(0, 1, 2)) -> list[str]:
    """What of the full grid (DELTAS x seeds x models for WFN, every baseline x seeds x models) is present."""
    have = {(r["model"], r["method"], r["delta"], r["seed"]) for r in rows}
    lines = []
    for model in grid_models:
        want = [(model, "wfn", d) for d in DELTAS] + [(model, m, None) for m in BASELINES]
        done = sum((k + (s,)) in have for k in want for s in seeds)
        missing = [f"{m}{'' if d is None else f' δ={d:g}'}" for (_, m, d) in want
                   if not any((model, m, d, s) in have for s in seeds)]
        lines.append(f"- `{model}`: {done} of {len(want) * len(seeds)} points of the full grid"
                     + (f"; not started: {', '.join(missing)}" if missing else ""))
    return lines


def plot(groups: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    ms = sorted({g["model"] for g in groups})
    fig, axes = plt.subplots(len(ms), 2, figsize=(10, 3.8 * len(ms)), squeeze=False)
    for row, model in zip(axes, ms):
        gs = [g for g in groups if g["model"] == model]
        wfn = [g for g in gs if g["method"] == "wfn"]
        for ax, key, xlabel in ((row[0], f"unique_nonzero:{PLOT_SET}", "unique non-zero values (log)"),
                                (row[1], f"entropy_bits:{PLOT_SET}", "entropy (bits)")):
            ax.errorbar([g[key] for g in wfn], [g["accuracy"] for g in wfn], xerr=[g[key + "_std"] for g in wfn],
                        yerr=[g["accuracy_std"] for g in wfn], fmt="o-", color="tab:blue", capsize=2, label="WFN")
            for g in wfn:
                ax.annotate(f"δ={g['delta']:g}", (g[key], g["accuracy"]), fontsize=7, xytext=(3, 3),
                            textcoords="offset points")
            for g in gs:
                if g["method"] != "wfn":
                    marker, color = MARKERS.get(g["method"], ("x", "black"))
                    ax.errorbar(g[key], g["accuracy"], xerr=g[key + "_std"], yerr=g["accuracy_std"], fmt=marker,
                                color=color, capsize=2, label=g["method"])
            base = statistics.fmean(g["baseline_accuracy"] for g in gs)
            ax.axhline(base, color="gray", ls=":", label="float baseline")
            if key.startswith("unique"):
                ax.set_xscale("log")
                plain = ticker.FuncFormatter(lambda v, _: f"{v:g}")
                ax.xaxis.set_major_formatter(plain)
                ax.xaxis.set_minor_formatter(ticker.LogFormatter(labelOnlyBase=False, minor_thresholds=(1.5, 0.6)))
            ax.set_xlabel(xlabel + f", set '{PLOT_SET}'"), ax.set_ylabel("top-1 (%)")
            ax.set_title(model, fontsize=9)
        row[0].legend(fontsize=7)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    plt.close(fig)


def load_histories(dirs, rows: list[dict]) -> dict[str, list[dict]]:
    """The fixing history (history.csv rows) of each WFN point that has one: ``dir/histories/<point>.csv``
    (committed copies) or the point's run directory ``dir/<model>_s<seed>_d<δ>/history.csv``."""
    out = {}
    for r in rows:
        if r["method"] != "wfn":
            continue
        name = point_name(r["model"], r["seed"], "wfn", r["delta"])
        for d in dirs:
            for path in (Path(d, "histories", f"{name}.csv"),
                         Path(d, run_dir_name(r["model"], r["seed"], r["delta"]), "history.csv")):
                if name not in out and path.is_file():
                    with open(path, newline="") as f:
                        hist = [h for h in csv.DictReader(f) if h.get("val_accuracy")]
                    if hist:
                        out[name] = hist
    return out


def history_table(histories: dict[str, list[dict]]) -> list[str]:
    """One row per WFN run with a history: validation accuracy after the first, the worst and the last fixing
    iteration, and the largest fall from one iteration to the next (a swing the final number hides)."""
    if not histories:
        return ["No fixing histories found (`histories/<point>.csv` or the points' run directories)."]
    lines = ["| point | iterations | validation accuracy (%): first / lowest / last | largest fall between "
             "iterations (points) | unique values at the end |", "|---|---|---|---|---|"]
    for name, hist in sorted(histories.items()):
        acc = [float(h["val_accuracy"]) for h in hist]
        fall = max([a - b for a, b in zip(acc, acc[1:])] + [0.0])
        lines.append(f"| {name} | {len(hist)} | {acc[0]:.2f} / {min(acc):.2f} / {acc[-1]:.2f} | {fall:.2f} | "
                     f"{hist[-1].get('unique', '?')} |")
    return lines


def _csv(path: Path, rows: list[dict]) -> None:
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=list(dict.fromkeys(k for r in rows for k in r)))
    w.writeheader()
    w.writerows(rows)
    atomic_write(path, lambda tmp: Path(tmp).write_text(buf.getvalue()))


def report(dirs, out: Path) -> int:
    rows = load_points(dirs)
    groups = group(rows)
    out.mkdir(parents=True, exist_ok=True)
    _csv(out / "curve_points.csv", sorted(rows, key=lambda r: (r["model"], r["method"], r["delta"] or 0, r["seed"])))
    _csv(out / "curve.csv", [{**{k: v for k, v in g.items() if not k.startswith("_")},
                              "seeds": " ".join(map(str, g["seeds"]))} for g in groups])
    plot(groups, out / "curve.png")
    sets = ", ".join(sorted({r.get("dataset", "fashion-mnist") for r in rows}))
    md = [f"# Accuracy vs unique weights on {sets}: WFN over δ and the baselines", "",
          f"{len(rows)} points, {len(groups)} groups (mean ± std over the seeds listed; std 0 for one seed). "
          "Top-1 on the whole test split. WFN: `WFNConfig.paper(relative_tolerance=δ, seed=s)` (the "
          "authors' configuration: relaxed δ schedule, BatchNorm fixed, lr 2e-5, 3 epochs per iteration); "
          "at δ >= 0.1 without relaxation. Baselines: the same float baseline per seed, quantised and "
          "fine-tuned for the epochs listed (straight-through, Adam).", "",
          "Parameter sets: " + "; ".join(f"`{k}`: {v}" for k, v in PARAMETER_SETS.items()) + ".", "",
          "Coverage (the full grid is 7 δ x 3 seeds per model for WFN and 4 baselines x 3 seeds; `curve run` "
          "resumes it, skipping the points already there):", "", *coverage(rows), "",
          "Reproduce: `python -m wfn_kernels.workflows.curve run --runs RUNS --models small-resnet --seeds 0 "
          "--methods wfn apot4 --deltas 0.01` (any subset of the grid; the default is all of it), then `python -m "
          "wfn_kernels.workflows.curve report --runs RUNS --out bench/results/curve`. Each point is a sealed JSON "
          "file in `points/`; a WFN point's run directory also holds its model, history and plots. To continue the "
          "grid from the committed points, copy this directory's `points/` and `baseline_*.safetensors` into "
          "RUNS first (`curve run` then skips what is there and reuses the same float baselines).", "",
          "![curve](curve.png)", "", *_table(groups), "", "## Targets", "", *targets(groups), "",
          "## Fixing histories", "",
          "Validation accuracy (the tenth of the training split held out) at the end of each fixing iteration, "
          "for the WFN points whose history is here (`histories/`, or their run directories):", "",
          *history_table(load_histories([*dirs, out], rows)), ""]
    atomic_write(out / "curve.md", lambda tmp: Path(tmp).write_text("\n".join(md)))
    print("\n".join(md))
    return 0
