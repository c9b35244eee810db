"""``wfn fix``, ``wfn sweep`` and ``wfn stats``: registered on the ``wfn`` parser by add_subcommands().

Long flags map one-to-one onto WFNConfig fields (--delta is relative_tolerance, --ratio is
regularizer_ratio, --zero-threshold, --fractions, --epochs-per-iteration, ...). Also runnable alone:
``python -m wfn_kernels.workflows.fix_cli fix --dataset digits --out runs/d``.
"""

from __future__ import annotations

import argparse
import csv
import io
import itertools
import json
import os
import sys
from pathlib import Path

import torch

from ..format.container import atomic_write

from ..fixing.config import PAPER_FIX_FRACTIONS, WFNConfig
from ._cli import DefaultsFormatter, Parser, nonnegative_int, positive_float, positive_int, run_command

PRESETS = ("paper", "small-model")


def add_subcommands(sub) -> None:
    """Register fix, sweep and stats on an argparse subparsers object."""
    kw = {"formatter_class": DefaultsFormatter}
    p = sub.add_parser("fix", help="WFN-fix a (trained) model on a bundled dataset", **kw)
    _add_common(p)
    p.add_argument("--delta", type=float, default=None,
                   help=f"δ, relative_tolerance (default: from --preset; paper: {WFNConfig.relative_tolerance})")
    p.add_argument("--ratio", type=float, default=None,
                   help=f"regularizer_ratio (default: from --preset; paper: {WFNConfig.regularizer_ratio})")
    p.add_argument("--bn", dest="fix_bn", action=argparse.BooleanOptionalAction, default=None,
                   help="fix BatchNorm affine parameters too; --no-bn: leave them float (default: from --preset; "
                        "paper: fixed)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.set_defaults(func=_cmd_fix)

    p = sub.add_parser("sweep", help="WFN over a grid of δ, ratio and BN fixing, with summary plots", **kw)
    _add_common(p)
    p.add_argument("--deltas", type=float, nargs="+", default=[0.01, 0.02, 0.03], help="δ values of the grid")
    p.add_argument("--ratios", type=float, nargs="+", default=[WFNConfig.regularizer_ratio],
                   help="regularizer_ratio values of the grid")
    p.add_argument("--bn", choices=["on", "off", "both"], default="both", help="BatchNorm fixing settings")
    p.set_defaults(func=_cmd_sweep)

    p = sub.add_parser("stats", help="print the weight-space metrics of a saved model (.safetensors)", **kw)
    p.add_argument("model", help="a model.safetensors written by `wfn fix`, a packed WFN model or any "
                   "safetensors state dict")
    p.add_argument("--json", action="store_true", help="print the full metrics as JSON")
    p.set_defaults(func=_cmd_stats)


def _add_common(p) -> None:
    p.add_argument("--preset", choices=PRESETS, default="paper",
                   help="WFNConfig preset the other WFN flags override: paper (the authors' configuration) or "
                        "small-model (measured on this project's small CNNs: δ 0.15 fixed, BN float, lr 3e-4, "
                        "1 epoch per iteration, BN statistics re-estimated)")
    p.add_argument("--max-accuracy-drop", type=float, default=None,
                   help="warn when validation accuracy falls more than this many points below the start "
                        "(default: off)")
    p.add_argument("--stop-on-accuracy-drop", action="store_true",
                   help="stop the run (last good checkpoint kept) instead of warning on --max-accuracy-drop")
    p.add_argument("--dataset", choices=["digits", "fashion-mnist"], default="digits", help="dataset")
    p.add_argument("--data-dir", default=None,
                   help="directory of the Fashion-MNIST idx files (default: /usr/share/datasets/fashion-mnist)")
    p.add_argument("--model", default="small-cnn",
                   help="small-cnn, small-resnet, or your own class as package.module:ClassName (built with "
                        "no arguments, imported from PYTHONPATH)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a finished or interrupted run (and its default baseline) in --out")
    p.add_argument("--baseline", default=None,
                   help="baseline state dict (.safetensors), trained and written there if missing "
                        "(default: OUT/baseline.safetensors)")
    p.add_argument("--baseline-epochs", type=positive_int, default=10, help="epochs of baseline training")
    p.add_argument("--baseline-lr", type=positive_float, default=1e-2, help="learning rate of baseline training")
    p.add_argument("--batch-size", type=positive_int, default=128, help="training batch size")
    p.add_argument("--zero-threshold", type=float, default=WFNConfig.zero_threshold, help="γ0")
    p.add_argument("--fractions", type=float, nargs="+", default=list(PAPER_FIX_FRACTIONS), help="fix_fractions")
    p.add_argument("--relax", action=argparse.BooleanOptionalAction, default=None,
                   help="relax δ_t from Nδ to δ; --no-relax: δ_t = δ every iteration (default: from --preset; "
                        "paper: relaxed)")
    p.add_argument("--keep-fixed", action="store_true",
                   help="earlier fixed weights stay on their centre (keep_fixed=True; default: re-cluster all)")
    p.add_argument("--allow-sign-flip", action="store_true",
                   help="let a centre take weights of the opposite sign, as the original (same_sign=False)")
    p.add_argument("--epochs-per-iteration", type=nonnegative_int, default=None,
                   help=f"training epochs per fixing iteration (default: from --preset; paper: "
                        f"{WFNConfig.epochs_per_iteration})")
    p.add_argument("--max-steps-per-iteration", type=positive_int, default=None,
                   help="stop each iteration's training after N steps (default: no limit)")
    p.add_argument("--lr", type=positive_float, default=None,
                   help=f"learning rate of WFN training (default: from --preset; paper: {WFNConfig.lr})")
    p.add_argument("--optimizer", choices=["adam", "sgd"], default="adam", help="optimizer")
    p.add_argument("--temperature", type=float, default=WFNConfig.temperature, help="regularizer temperature")
    p.add_argument("--bn-recalibration-batches", type=nonnegative_int, default=None,
                   help="re-estimate BN statistics over N batches after each fixing, 0: off (default: from "
                        "--preset; paper: 0)")
    p.add_argument("--rescale-bn-convs", type=positive_float, default=None, metavar="RMS",
                   help="before fixing, scale every conv that feeds a BatchNorm to this weight RMS (the network's "
                        "function is unchanged); more weights then fall below γ0 and are pruned (default: off, as in the paper)")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def _config(args, delta: float | None, ratio: float | None, bn: bool | None) -> WFNConfig:
    """The --preset's WFNConfig with every flag the user gave on top (None: not given)."""
    given = {"relative_tolerance": delta, "regularizer_ratio": ratio, "include_batchnorm": bn,
             "relax_tolerance": args.relax, "epochs_per_iteration": args.epochs_per_iteration, "lr": args.lr,
             "bn_recalibration_batches": args.bn_recalibration_batches}
    overrides = {k: v for k, v in given.items() if v is not None}
    overrides.update(zero_threshold=args.zero_threshold, fix_fractions=tuple(args.fractions),
                     max_steps_per_iteration=args.max_steps_per_iteration, optimizer=args.optimizer,
                     temperature=args.temperature, seed=args.seed, keep_fixed=args.keep_fixed,
                     same_sign=not args.allow_sign_flip, max_accuracy_drop=args.max_accuracy_drop,
                     stop_on_accuracy_drop=args.stop_on_accuracy_drop, rescale_bn_convs=args.rescale_bn_convs)
    try:
        return WFNConfig.preset(args.preset, **overrides)
    except ValueError as exc:
        raise ValueError(f"{exc} (check --preset/--delta/--relax/--fractions/--max-accuracy-drop and the "
                         "other WFN flags)") from None


def _spec(args, config: WFNConfig, out: str, resume: bool = False):
    from .pipeline import RunSpec

    return RunSpec(dataset=args.dataset, out=out, model=args.model, config=config, data_dir=args.data_dir,
                   baseline=args.baseline or str(Path(args.out) / "baseline.safetensors"),
                   baseline_epochs=args.baseline_epochs, baseline_lr=args.baseline_lr, batch_size=args.batch_size,
                   resume=resume, progress=not args.no_progress, overwrite=args.overwrite)


def _check_inputs(args) -> None:
    """Everything a run needs that can be checked before any work, each error naming its flag."""
    from . import data, models
    from .pipeline import check_out

    try:
        models.build(args.model)
    except ValueError as exc:
        raise ValueError(f"--model: {exc}") from None
    if args.baseline is not None:
        base = Path(args.baseline)
        if base.is_dir():
            raise IsADirectoryError(f"--baseline {base} is a directory, expected a .safetensors file")
        if not base.exists() and not base.parent.is_dir():
            raise FileNotFoundError(f"--baseline {base}: directory {base.parent} does not exist")
    if args.data_dir is not None and Path(args.data_dir).exists() and not Path(args.data_dir).is_dir():
        raise NotADirectoryError(f"--data-dir {args.data_dir} is a file, expected the directory of the idx files")
    if args.dataset == "fashion-mnist":
        data.load(args.dataset, args.data_dir)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {out} is a file, expected a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PermissionError(f"--out {out} cannot be created: {exc.strerror or exc}") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise PermissionError(f"--out {out} is not writable")
    for spec in _all_specs(args):
        try:
            check_out(spec)
        except (ValueError, OSError) as exc:
            flag = "--resume" if getattr(args, "resume", False) else "--out"
            raise type(exc)(f"{flag}: {exc}") from None


def _grid(args):
    if args.command == "fix":
        return [(args.delta, args.ratio, args.fix_bn, args.out)]
    bns = {"on": [True], "off": [False], "both": [True, False]}[args.bn]
    return [(d, r, bn, str(Path(args.out) / f"delta{d}_ratio{r}_bn{int(bn)}"))
            for d, r, bn in itertools.product(args.deltas, args.ratios, bns)]


def _all_specs(args):
    return [_spec(args, _config(args, d, r, bn), out, getattr(args, "resume", False)) for d, r, bn, out in _grid(args)]


def _cmd_fix(args) -> int:
    from .pipeline import init_distributed, run

    _check_inputs(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    init_distributed()
    r = run(_spec(args, _config(args, args.delta, args.ratio, args.fix_bn), args.out, args.resume))
    m = r["metrics"]
    print(f"baseline {r['baseline_accuracy']:.2f} % -> WFN {r['test_accuracy']:.2f} % | unique non-zero "
          f"{m['unique_nonzero']} | entropy {m['entropy_bits']:.3f} bits ({m['entropy_nonzero_bits']:.3f} "
          f"non-zero) | fixing {r['fix_seconds']:.0f} s | outputs in {args.out}")
    return 0


def _cmd_sweep(args) -> int:
    from .pipeline import run
    from .plots import plot_sweep

    _check_inputs(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.overwrite:  # the shared baseline is the sweep's, in --out
        Path(args.out, "baseline.safetensors").unlink(missing_ok=True)
    rows = []
    for delta, ratio, bn, out in _grid(args):
        r = run(_spec(args, _config(args, delta, ratio, bn), out))
        m = r["metrics"]
        rows.append({"delta": delta, "ratio": ratio, "bn": bn, "accuracy": r["test_accuracy"],
                     "baseline_accuracy": r["baseline_accuracy"], "unique_nonzero": m["unique_nonzero"],
                     "entropy_bits": m["entropy_bits"], "entropy_nonzero_bits": m["entropy_nonzero_bits"],
                     "fix_seconds": r["fix_seconds"]})
        print(json.dumps(rows[-1]))
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
    atomic_write(Path(args.out) / "sweep.csv", lambda tmp: Path(tmp).write_text(buf.getvalue()))
    plot_sweep(rows, args.out)
    return 0


def _cmd_stats(args) -> int:
    from ..fixing.metrics import network_metrics, summary_line, tensor_metrics
    from ..format.container import FORMAT as PACKED, sealed_kind
    from .pipeline import MODEL_KIND, load_saved_model

    path = Path(args.model)
    if path.is_dir():
        raise IsADirectoryError(f"model file {path} is a directory, expected a .safetensors file")
    if not path.is_file():
        raise FileNotFoundError(f"model file {path} does not exist")
    kind = sealed_kind(path)
    if kind == PACKED:  # a save_packed file: metrics of the decoded conv/linear weights
        packed = _packed_weights(path)
        m = tensor_metrics(packed)
        print(f"packed WFN model: {len(packed)} layer(s) decoded from their codes", file=sys.stderr)
    elif kind not in (None, MODEL_KIND, "damaged"):
        raise ValueError(f"{path} is a {kind} file, not a model; run wfn stats on a run's model.safetensors")
    else:
        model, tensors, meta = load_saved_model(path)  # verifies every byte of a wfn file
        if model is not None:
            m = network_metrics(model, meta.get("include_batchnorm", "True") == "True")
        else:
            named = [(k, v) for k, v in tensors.items() if v.is_floating_point() and k.endswith((".weight", ".bias"))]
            if not named:
                raise ValueError(f"{path} holds no float .weight/.bias tensors")
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
    """[(layer.weight, decoded float weight), (layer.bias, bias)...] of a ``save_packed`` file, every byte
    verified."""
    from ..format.container import decoded_weights, read_packed

    header, tensors = read_packed(path)
    dense = decoded_weights(header, tensors)
    out = []
    for e in header["layers"]:
        name = e["name"]
        out.append((f"{name}.weight", dense[name]))
        if e.get("bias") and f"{name}.bias" in tensors:  # tracked like the float model's (metrics.py)
            out.append((f"{name}.bias", tensors[f"{name}.bias"]))
    return out


def main(argv=None) -> int:
    parser = Parser(prog="wfn", description="Weight Fixing Networks: fix, sweep, stats",
                    formatter_class=DefaultsFormatter)
    add_subcommands(parser.add_subparsers(dest="command", required=True, parser_class=Parser))
    args = parser.parse_args(argv)
    return run_command(f"wfn {args.command}", args.func, args)


if __name__ == "__main__":
    sys.exit(main())
