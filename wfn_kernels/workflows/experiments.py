"""The Fashion-MNIST results (bench/results/wfn_fashion_mnist.md): WFN vs the float baseline and APoT, over seeds.

    python -m wfn_kernels.workflows.experiments seed --seed 0 --runs /work/runs/final --delta 0.02 ...
    python -m wfn_kernels.workflows.experiments report --runs /work/runs/final --curve /work/runs/sweep-* \
        --out bench/results

``seed`` trains (or reuses) the baseline of that seed, WFN-fixes it and APoT-quantises it (4 and 3 bit,
one straight-through fine-tuning epoch), writing one JSON row; ``report`` aggregates rows into
wfn_fashion_mnist.{md,csv} (mean ± std) and copies the PNG plots of the first seed.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import statistics
import sys
from pathlib import Path

import torch

from ..fixing.baselines.apot import apot_quantize
from ..fixing.config import WFNConfig
from ..fixing.metrics import network_metrics
from . import data, models, train
from .pipeline import RunSpec, run

COUNTS = ("unique_nonzero", "entropy_bits", "entropy_nonzero_bits")


def run_seed(args) -> dict:
    cfg = WFNConfig(relative_tolerance=args.delta, relax_tolerance=not args.no_relax,
                    include_batchnorm=not args.no_bn, epochs_per_iteration=args.epochs_per_iteration,
                    lr=args.lr, regularizer_ratio=args.ratio, seed=args.seed,
                    bn_recalibration_batches=args.bn_recalibration_batches,
                    keep_fixed=args.keep_fixed, same_sign=not args.allow_sign_flip)
    runs = Path(args.runs)
    spec = RunSpec(dataset="fashion-mnist", out=str(runs / f"seed{args.seed}"), model=args.model, config=cfg,
                   data_dir=args.data_dir, baseline=str(runs / f"baseline_{args.model}_s{args.seed}.safetensors"),
                   baseline_epochs=args.baseline_epochs, progress=False)
    r = _reuse(args.reuse_run, cfg) if args.reuse_run else run(spec)
    row = {"seed": args.seed, "delta": args.delta, "relax": not args.no_relax, "bn": not args.no_bn,
           "lr": args.lr, "epochs_per_iteration": args.epochs_per_iteration,
           "bn_recalibration_batches": args.bn_recalibration_batches,
           "keep_fixed": args.keep_fixed, "same_sign": not args.allow_sign_flip,
           "baseline_accuracy": r["baseline_accuracy"], "wfn_accuracy": r["test_accuracy"],
           "fix_seconds": r["fix_seconds"], "fix_cpu_seconds": r["fix_cpu_seconds"], **{f"wfn_{k}": r["metrics"][k] for k in COUNTS},
           "wfn_unique_nonzero_conv_linear": network_metrics(r["model"], False)["unique_nonzero"]}
    row.update(_apot_rows(spec, args.seed))
    (runs / f"row_seed{args.seed}.json").write_text(json.dumps(row, indent=1))
    print(json.dumps(row))
    return row


def _reuse(run_dir: str, cfg: WFNConfig) -> dict:
    """The result dict of a finished `wfn fix` run directory made with the same WFNConfig."""
    from .pipeline import load_saved_model

    s = json.loads((Path(run_dir) / "summary.json").read_text())
    if s["config"] != cfg.to_dict():
        raise SystemExit(f"--reuse-run {run_dir} was made with a different WFNConfig: {s['config']}")
    model, _, _ = load_saved_model(Path(run_dir) / "model.safetensors")
    return {"model": model, "metrics": network_metrics(model, cfg.include_batchnorm),
            **{k: s[k] for k in ("baseline_accuracy", "test_accuracy", "fix_seconds")},
            "fix_cpu_seconds": s.get("fix_cpu_seconds", float("nan"))}


def _apot_rows(spec: RunSpec, seed: int) -> dict:
    train_split, test_split = data.load("fashion-mnist", spec.data_dir)
    train_split, _ = data.validation_split(train_split, 0.1, seed=0)
    base = models.build(spec.model)
    from safetensors.torch import load_file

    base.load_state_dict(load_file(spec.baseline))
    out = {}
    for bits in (4, 3):
        q = apot_quantize(base, bits, train_split.loader(128, shuffle=True, seed=seed), epochs=1, seed=seed)
        m_all, m_w = network_metrics(q, True), network_metrics(q, False)
        out.update({f"apot{bits}_accuracy": train.evaluate(q, test_split.loader(512)),
                    f"apot{bits}_unique_nonzero": m_all["unique_nonzero"],
                    f"apot{bits}_unique_nonzero_conv_linear": m_w["unique_nonzero"],
                    f"apot{bits}_entropy_nonzero_bits": m_all["entropy_nonzero_bits"]})
    return out


def report(args) -> None:
    runs, out = Path(args.runs), Path(args.out)
    rows = [json.loads(p.read_text()) for p in sorted(runs.glob("row_seed*.json"))]
    if not rows:
        raise SystemExit(f"no row_seed*.json in {runs}; run the `seed` command first")
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "wfn_fashion_mnist.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    curve = [_curve_row(Path(p)) for p in args.curve if (Path(p) / "summary.json").is_file()]
    (out / "wfn_fashion_mnist.md").write_text(_markdown(rows, curve))
    for png in ("progress", "accuracy", "orders", "top_values"):
        src = runs / f"seed{rows[0]['seed']}" / f"{png}.png"
        if src.is_file():
            shutil.copy(src, out / f"wfn_fashion_mnist_{png}.png")


def _curve_row(run_dir: Path) -> dict:
    s = json.loads((run_dir / "summary.json").read_text())
    c = s["config"]
    return {"run": run_dir.name, "delta": c["relative_tolerance"], "relax": c["relax_tolerance"],
            "bn": c["include_batchnorm"], "lr": c["lr"], "epochs": c["epochs_per_iteration"],
            "baseline": s["baseline_accuracy"], "wfn": s["test_accuracy"], "unique_nonzero": s["unique_nonzero"],
            "entropy": s["entropy_bits"], "entropy_nonzero": s["entropy_nonzero_bits"], "seconds": s["fix_seconds"]}


def _ms(rows, key, fmt="{:.2f}") -> str:
    vals = [r[key] for r in rows if r[key] == r[key]]  # skip NaN (a measurement missing from a run)
    if not vals:
        return "n/a"
    sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
    note = f" (n={len(vals)})" if len(vals) < len(rows) else ""
    return f"{fmt.format(statistics.mean(vals))} ± {fmt.format(sd)}{note}"


def _ratio(rows, num, den) -> float:
    return statistics.mean(r[num] / r[den] for r in rows)


def _markdown(rows, curve) -> str:
    r0 = rows[0]
    drop = [r["baseline_accuracy"] - r["wfn_accuracy"] for r in rows]
    lines = [
        "# WFN on Fashion-MNIST (project CNN `small-cnn`, CPU)", "",
        f"δ = {r0['delta']} (relaxed 10δ → δ: {r0['relax']}), BatchNorm fixed: {r0['bn']}; "
        f"{len(rows)} seed(s) {[r['seed'] for r in rows]}; test set = the 10k Fashion-MNIST test images.", "",
        "| metric | float baseline | WFN | APoT 4-bit | APoT 3-bit |", "|---|---|---|---|---|",
        f"| top-1 (%) | {_ms(rows, 'baseline_accuracy')} | {_ms(rows, 'wfn_accuracy')} | "
        f"{_ms(rows, 'apot4_accuracy')} | {_ms(rows, 'apot3_accuracy')} |",
        f"| unique non-zero weights (conv/linear + BN) | — | {_ms(rows, 'wfn_unique_nonzero', '{:.1f}')} | "
        f"{_ms(rows, 'apot4_unique_nonzero', '{:.1f}')} | {_ms(rows, 'apot3_unique_nonzero', '{:.1f}')} |",
        f"| unique non-zero weights (conv/linear only) | — | "
        f"{_ms(rows, 'wfn_unique_nonzero_conv_linear', '{:.1f}')} | "
        f"{_ms(rows, 'apot4_unique_nonzero_conv_linear', '{:.1f}')} | "
        f"{_ms(rows, 'apot3_unique_nonzero_conv_linear', '{:.1f}')} |",
        f"| entropy, non-zero (bits) | — | {_ms(rows, 'wfn_entropy_nonzero_bits', '{:.3f}')} | "
        f"{_ms(rows, 'apot4_entropy_nonzero_bits', '{:.3f}')} | {_ms(rows, 'apot3_entropy_nonzero_bits', '{:.3f}')} |",
        f"| entropy, all (bits) | — | {_ms(rows, 'wfn_entropy_bits', '{:.3f}')} | | |",
        f"| fixing run, wall (s) | — | {_ms(rows, 'fix_seconds', '{:.0f}')} | | |",
        f"| fixing run, CPU time of the process (s) | — | {_ms(rows, 'fix_cpu_seconds', '{:.0f}')} | | |", "",
        f"Accuracy drop vs baseline: {statistics.mean(drop):.2f} ± "
        f"{statistics.stdev(drop) if len(drop) > 1 else 0:.2f} points; APoT-4 / WFN unique non-zero: "
        f"{_ratio(rows, 'apot4_unique_nonzero', 'wfn_unique_nonzero'):.1f}x "
        f"(conv/linear only: {_ratio(rows, 'apot4_unique_nonzero_conv_linear', 'wfn_unique_nonzero_conv_linear'):.1f}"
        "x).",
        ""]
    if curve:
        lines += ["## The curve around it (seed 0, one run each)", "",
                  "| run | δ | relax | BN | lr | epochs/iter | baseline | WFN | unique non-zero | H all | H non-zero "
                  "| s |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for c in sorted(curve, key=lambda c: (c["relax"], c["delta"])):
            lines.append(f"| {c['run']} | {c['delta']} | {c['relax']} | {c['bn']} | {c['lr']} | {c['epochs']} | "
                         f"{c['baseline']:.2f} | {c['wfn']:.2f} | {c['unique_nonzero']} | {c['entropy']:.3f} | "
                         f"{c['entropy_nonzero']:.3f} | {c['seconds']:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="wfn-experiments", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("seed")
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--runs", required=True)
    p.add_argument("--model", default="small-cnn")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--delta", type=float, required=True)
    p.add_argument("--no-relax", action="store_true")
    p.add_argument("--no-bn", action="store_true")
    p.add_argument("--keep-fixed", action="store_true", help="keep_fixed=True")
    p.add_argument("--allow-sign-flip", action="store_true", help="same_sign=False (the original)")
    p.add_argument("--epochs-per-iteration", type=int, default=1)
    p.add_argument("--baseline-epochs", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--ratio", type=float, default=WFNConfig.regularizer_ratio)
    p.add_argument("--bn-recalibration-batches", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--reuse-run", default=None, help="take the WFN result from this finished `wfn fix` --out")
    p = sub.add_parser("report")
    p.add_argument("--runs", required=True)
    p.add_argument("--curve", nargs="*", default=[])
    p.add_argument("--out", default="bench/results")
    args = ap.parse_args(argv)
    if args.command == "seed":
        torch.set_num_threads(args.threads)
        run_seed(args)
    else:
        report(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
