"""The ``wfn`` console script: ``wfn demo`` here; ``fix``, ``sweep`` and ``stats`` from fixing/cli.py."""

from __future__ import annotations

import argparse
import sys


def _add_demo(sub) -> None:
    p = sub.add_parser("demo", help="train, fix, convert and report on the embedded default data")
    p.add_argument("--out", default="demo_out", help="output directory (report.md, report.json, model)")
    p.add_argument("--dataset", default="digits", help="digits (default, bundled) or fashion-mnist")
    p.add_argument("--data-dir", default=None, help="directory of the Fashion-MNIST idx files")
    p.add_argument("--epochs", type=int, default=30, help="baseline training epochs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=_run_demo)


def _run_demo(args) -> int:
    from .demo import run_demo

    if args.epochs < 1:
        raise SystemExit(f"wfn demo: --epochs must be >= 1, got {args.epochs}")
    r = run_demo(args.out, args.dataset, args.epochs, args.seed, args.data_dir, progress=not args.no_progress)
    print(open(f"{args.out}/report.md").read())
    return 0 if abs(r["accuracy_packed"] - r["accuracy_rounded_float"]) < 1e-9 else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wfn", description="Weight Fixing Networks toolkit")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_demo(sub)
    try:
        from .fixing.cli import add_subcommands
    except ModuleNotFoundError as exc:  # only a missing fixing/cli.py is tolerated, not its import errors
        if exc.name not in ("wfn_kernels.fixing", "wfn_kernels.fixing.cli"):
            raise
    else:
        add_subcommands(sub)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
