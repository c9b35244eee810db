"""The ``wfn`` console script: ``wfn demo`` here; ``fix``, ``sweep`` and ``stats`` from fix_cli.py."""

from __future__ import annotations

import sys

from ._cli import DefaultsFormatter, Parser, positive_float, positive_int, run_command


DEFAULT_EPOCHS = {"digits": 30, "fashion-mnist": 5}


def _add_demo(sub) -> None:
    p = sub.add_parser("demo", help="the main job: baseline -> WFN fixing -> packed model -> bench -> energy -> report",
                       formatter_class=DefaultsFormatter)
    p.add_argument("--out", default="demo_out", help="output directory (report.md, report.json, PNGs, model)")
    p.add_argument("--dataset", default="digits", help="digits (bundled) or fashion-mnist")
    p.add_argument("--data-dir", default=None,
                   help="directory of the Fashion-MNIST idx files (default: /usr/share/datasets/fashion-mnist)")
    p.add_argument("--epochs", type=positive_int, default=None,
                   help="baseline training epochs (default: 30 on digits, 5 on fashion-mnist)")
    p.add_argument("--delta", type=positive_float, default=0.15, help="WFN relative tolerance δ")
    p.add_argument("--fix-epochs", type=positive_int, default=1, help="training epochs per WFN fixing iteration")
    p.add_argument("--bench-repeats", type=positive_int, default=20, help="timed runs per latency median")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=_run_demo)


def _run_demo(args) -> int:
    from .demo import check_args, run_demo, summary_table

    if args.epochs is None:
        args.epochs = DEFAULT_EPOCHS.get(args.dataset, 30)
    from pathlib import Path

    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise NotADirectoryError(f"--out {args.out} is a file, expected a directory")
    if args.data_dir is not None and Path(args.data_dir).exists() and not Path(args.data_dir).is_dir():
        raise NotADirectoryError(f"--data-dir {args.data_dir} is a file, expected the directory of the idx files")
    check_args(args.out, args.dataset, args.epochs, args.delta, args.data_dir)
    r = run_demo(args.out, args.dataset, args.epochs, args.seed, args.data_dir, progress=not args.no_progress,
                 delta=args.delta, fix_epochs=args.fix_epochs, bench_repeats=args.bench_repeats)
    print(summary_table(r))
    print(f"report: {args.out}/report.md")
    ok = r["accuracy_packed"] == r["accuracy_fixed"] == r["accuracy_reloaded"]
    if not ok:
        print("wfn demo: the packed model's accuracy differs from the fixed float model's", file=sys.stderr)
    return 0 if ok else 1


def build_parser() -> Parser:
    parser = Parser(prog="wfn", description="Weight Fixing Networks toolkit", formatter_class=DefaultsFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_demo(sub)
    try:
        from .fix_cli import add_subcommands
    except ModuleNotFoundError as exc:  # only a missing fix_cli.py is tolerated, not its import errors
        if exc.name != "wfn_kernels.workflows.fix_cli":
            raise
    else:
        add_subcommands(sub)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return run_command(f"wfn {args.command}", args.func, args)


if __name__ == "__main__":
    sys.exit(main())
