"""``wfn fix``, ``wfn sweep`` and ``wfn stats``: registered on the ``wfn`` parser by add_subcommands().

Long flags map one-to-one onto WFNConfig fields (--delta is relative_tolerance, --ratio is
regularizer_ratio, --zero-threshold, --fractions, --epochs-per-iteration, ...). Also runnable alone:
``python -m wfn_kernels.fixing.cli fix --dataset digits --out runs/d``.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import sys
from pathlib import Path

import torch

from ..fixing.config import PAPER_FIX_FRACTIONS, WFNConfig


def add_subcommands(sub) -> None:
    """Register fix, sweep and stats on an argparse subparsers object."""
    p = sub.add_parser("fix", help="WFN-fix a (trained) model on a bundled dataset")
    _add_common(p)
    p.add_argument("--delta", type=float, default=WFNConfig.relative_tolerance, help="δ, relative_tolerance")
    p.add_argument("--ratio", type=float, default=WFNConfig.regularizer_ratio, help="regularizer_ratio")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.set_defaults(func=_cmd_fix)

    p = sub.add_parser("sweep", help="WFN over a grid of δ, ratio and BN fixing, with summary plots")
    _add_common(p)
    p.add_argument("--deltas", type=float, nargs="+", default=[0.01, 0.02, 0.03])
    p.add_argument("--ratios", type=float, nargs="+", default=[WFNConfig.regularizer_ratio])
    p.add_argument("--bn", choices=["on", "off", "both"], default="both", help="BatchNorm fixing settings")
    p.set_defaults(func=_cmd_sweep)

    p = sub.add_parser("stats", help="print the weight-space metrics of a saved model (.safetensors)")
    p.add_argument("model", help="a model.safetensors written by `wfn fix` or any safetensors state dict")
    p.add_argument("--json", action="store_true", help="print the full metrics as JSON")
    p.set_defaults(func=_cmd_stats)


def _add_common(p) -> None:
    p.add_argument("--dataset", choices=["digits", "fashion-mnist"], default="digits")
    p.add_argument("--data-dir", default=None, help="directory of the Fashion-MNIST idx files")
    p.add_argument("--model", default="small-cnn", help="small-cnn or small-resnet")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--baseline", default=None, help="baseline state dict (.safetensors); trained if missing")
    p.add_argument("--baseline-epochs", type=int, default=10)
    p.add_argument("--baseline-lr", type=float, default=1e-2)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--zero-threshold", type=float, default=WFNConfig.zero_threshold, help="γ0")
    p.add_argument("--fractions", type=float, nargs="+", default=list(PAPER_FIX_FRACTIONS), help="fix_fractions")
    p.add_argument("--no-relax", action="store_true", help="δ_t = δ every iteration (no 10δ → δ relaxation)")
    p.add_argument("--no-bn", action="store_true", help="do not fix BatchNorm affine parameters")
    p.add_argument("--keep-fixed", action="store_true",
                   help="earlier fixed weights stay on their centre (keep_fixed=True; default: re-cluster all)")
    p.add_argument("--allow-sign-flip", action="store_true",
                   help="let a centre take weights of the opposite sign, as the original (same_sign=False)")
    p.add_argument("--epochs-per-iteration", type=int, default=WFNConfig.epochs_per_iteration)
    p.add_argument("--max-steps-per-iteration", type=int, default=None)
    p.add_argument("--lr", type=float, default=WFNConfig.lr)
    p.add_argument("--optimizer", choices=["adam", "sgd"], default="adam")
    p.add_argument("--temperature", type=float, default=WFNConfig.temperature)
    p.add_argument("--bn-recalibration-batches", type=int, default=0,
                   help="re-estimate BN statistics over N batches after each fixing (0: off, as the paper)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--no-progress", action="store_true")


def _config(args, delta: float, ratio: float, bn: bool) -> WFNConfig:
    try:
        return WFNConfig(relative_tolerance=delta, regularizer_ratio=ratio, include_batchnorm=bn,
                         zero_threshold=args.zero_threshold, fix_fractions=tuple(args.fractions),
                         relax_tolerance=not args.no_relax, epochs_per_iteration=args.epochs_per_iteration,
                         max_steps_per_iteration=args.max_steps_per_iteration, lr=args.lr,
                         optimizer=args.optimizer, temperature=args.temperature, seed=args.seed,
                         bn_recalibration_batches=args.bn_recalibration_batches,
                         keep_fixed=args.keep_fixed, same_sign=not args.allow_sign_flip)
    except ValueError as exc:
        raise SystemExit(f"wfn {args.command}: {exc}") from exc


def _spec(args, config: WFNConfig, out: str, resume: bool = False):
    from .pipeline import RunSpec

    return RunSpec(dataset=args.dataset, out=out, model=args.model, config=config, data_dir=args.data_dir,
                   baseline=args.baseline or str(Path(args.out) / "baseline.safetensors"),
                   baseline_epochs=args.baseline_epochs, baseline_lr=args.baseline_lr, batch_size=args.batch_size,
                   resume=resume, progress=not args.no_progress)


def _cmd_fix(args) -> int:
    from .pipeline import init_distributed, run

    if args.threads:
        torch.set_num_threads(args.threads)
    init_distributed()
    r = run(_spec(args, _config(args, args.delta, args.ratio, not args.no_bn), args.out, args.resume))
    m = r["metrics"]
    print(f"baseline {r['baseline_accuracy']:.2f} % -> WFN {r['test_accuracy']:.2f} % | unique non-zero "
          f"{m['unique_nonzero']} | entropy {m['entropy_bits']:.3f} bits ({m['entropy_nonzero_bits']:.3f} "
          f"non-zero) | fixing {r['fix_seconds']:.0f} s | outputs in {args.out}")
    return 0


def _cmd_sweep(args) -> int:
    from .pipeline import run
    from .plots import plot_sweep

    if args.threads:
        torch.set_num_threads(args.threads)
    bns = {"on": [True], "off": [False], "both": [True, False]}[args.bn]
    rows = []
    for delta, ratio, bn in itertools.product(args.deltas, args.ratios, bns):
        out = str(Path(args.out) / f"delta{delta}_ratio{ratio}_bn{int(bn)}")
        r = run(_spec(args, _config(args, delta, ratio, bn), out))
        m = r["metrics"]
        rows.append({"delta": delta, "ratio": ratio, "bn": bn, "accuracy": r["test_accuracy"],
                     "baseline_accuracy": r["baseline_accuracy"], "unique_nonzero": m["unique_nonzero"],
                     "entropy_bits": m["entropy_bits"], "entropy_nonzero_bits": m["entropy_nonzero_bits"],
                     "fix_seconds": r["fix_seconds"]})
        print(json.dumps(rows[-1]))
    with open(Path(args.out) / "sweep.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    plot_sweep(rows, args.out)
    return 0


def _cmd_stats(args) -> int:
    from ..fixing.metrics import network_metrics, summary_line, tensor_metrics
    from .pipeline import load_saved_model

    packed = _packed_weights(args.model)
    model, tensors, meta = (None, {}, {}) if packed is not None else load_saved_model(args.model)
    if packed is not None:  # a save_packed file: metrics of the decoded conv/linear weights
        m = tensor_metrics(packed)
        print(f"packed WFN model: {len(packed)} layer(s) decoded from their codes", file=sys.stderr)
    elif model is not None:
        m = network_metrics(model, meta.get("include_batchnorm", "True") == "True")
    else:
        named = [(k, v) for k, v in tensors.items() if v.is_floating_point() and k.endswith((".weight", ".bias"))]
        if not named:
            raise SystemExit(f"wfn stats: {args.model} holds no float .weight/.bias tensors")
        m = tensor_metrics(named)
    if args.json:
        print(json.dumps(m, indent=1))
        return 0
    print(summary_line(m))
    print(f"orders (distinct values): {m['order_values']}")
    for layer in m["layers"]:
        print(f"  {layer['name']:<40} {layer['numel']:>9,} weights {layer['unique']:>6} unique "
              f"{layer['entropy_bits']:.3f} bits")
    return 0


def _packed_weights(path):
    """[(layer.weight, decoded float weight), (layer.bias, bias)...] of a ``save_packed`` file (checksums
    verified), or None when ``path`` is not one."""
    from pathlib import Path

    from safetensors import safe_open

    from ..format.packing import unpack_codes
    from ..format.container import read_packed

    if not Path(path).is_file():
        return None  # load_saved_model reports the missing file
    try:
        with safe_open(str(path), "pt") as f:
            if "wfn_format" not in (f.metadata() or {}):
                return None
    except Exception:  # noqa: BLE001  (not a safetensors file: load_saved_model says what is wrong)
        return None
    header, tensors = read_packed(path)
    out = []
    for e in header["layers"]:
        name, shape = e["name"], e["shape"]
        k = 1
        for d in shape[1:]:
            k *= int(d)
        codes = unpack_codes(tensors[f"{name}.packed"], int(e["bits"]), k)
        out.append((f"{name}.weight", tensors[f"{name}.codebook"][codes].reshape(shape)))
        if e.get("bias") and f"{name}.bias" in tensors:  # tracked like the float model's (metrics.py)
            out.append((f"{name}.bias", tensors[f"{name}.bias"]))
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="wfn", description="Weight Fixing Networks: fix, sweep, stats")
    add_subcommands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
