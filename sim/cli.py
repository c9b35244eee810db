"""``wfn-sim``: simulate a model or topology on an accelerator and write reports.

    wfn-sim --topology FILE|--model PATH [--model-class NAME]|--resnet DEPTH --arch FILE --designs dense_ws,codebook,... --out DIR

Every ArchConfig field also has a flag (``--array-rows 16``, ``--energy-table aladdin_cacti45``...)
that overrides the YAML. ``--unique-weights U`` gives a shape-only workload synthetic weights with U
values; ``--sweep-unique 3,17,64,256`` runs the U sweep instead of a single simulation.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time

from .arch import DEFAULT_DESIGNS, SYSTOLIC_DESIGNS, ArchConfig, MissingDependencyError, load_arch, parse_designs
from .energy import load_energy_table
from .report import relative_to_dense, write_all
from .simulate import simulate
from .sweep import SWEEP_DESIGNS, unique_weight_sweep, write_sweep
from .synth import resnet_workload, with_synthetic_weights
from .workload import load_topology_csv


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got {text!r}")
    return values


def _bool(text: str) -> bool:
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a fraction in [0, 1), got {text!r}") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a fraction in [0, 1), got {text}")
    return value


class _Parser(argparse.ArgumentParser):
    """One-line errors (exit code 2, no usage block): ``wfn-sim: error: message (see wfn-sim --help)``."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} (see {self.prog} --help)\n")


class _DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``(default: X)`` on every option whose help does not already state its default."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text.lower() or action.default in (None, argparse.SUPPRESS) or action.required or \
                isinstance(action, (argparse._StoreTrueAction, argparse._HelpAction)):
            return text
        return text + " (default: %(default)s)"


def _check_out(out: str) -> None:
    """--out must be a directory this process can create or write, checked before any work."""
    import os
    from pathlib import Path

    path = Path(out)
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"--out {path} is a file, expected a directory")
    probe = path
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise NotADirectoryError(f"--out {path}: {probe} is a file, not a directory")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise PermissionError(f"--out {path} is not writable ({probe} is read-only)")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="wfn-sim", description=__doc__.split("\n\n")[0], formatter_class=_DefaultsFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--topology", help="topology CSV (ours or SCALE-Sim's)")
    src.add_argument("--model", help="saved model: packed WFN .safetensors, `wfn fix` .safetensors or a "
                     "state-dict .pt (never a pickled module); needs --input-shape")
    src.add_argument("--resnet", type=int, choices=(18, 34, 50, 101, 152), help="built-in ResNet layer list")
    p.add_argument("--arch", default="ws32", help="architecture YAML, or a name in wfn_sim/configs (default ws32)")
    p.add_argument("--designs", default=",".join(DEFAULT_DESIGNS), help="comma-separated designs")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--model-class", default=None,
                   help="architecture of --model when the file does not name it: package.module:Class (your own, "
                        "built with no arguments) or small-cnn / small-resnet (default: what the file names)")
    p.add_argument("--input-shape", type=_int_list, default=(1, 3, 224, 224), help="model input, e.g. 1,3,32,32")
    p.add_argument("--unique-weights", type=int,
                   help="synthesise weights with this many values (2..256) (default: the workload's own weights)")
    p.add_argument("--zero-fraction", type=_fraction, default=0.0,
                   help="extra fraction of zero weights (synthetic), in [0, 1)")
    p.add_argument("--seed", type=int, default=0, help="seed of synthetic weights")
    p.add_argument("--sweep-unique", type=_int_list,
                   help="run the U sweep over these U values (default: no sweep, one simulation)")
    p.add_argument("--no-plots", action="store_true", help="skip PNG plots")
    arch = p.add_argument_group("architecture overrides (one flag per ArchConfig field)")
    for field in dataclasses.fields(ArchConfig):
        kind = {bool: _bool, int: int, float: float}.get(type(field.default), str)
        arch.add_argument("--" + field.name.replace("_", "-"), dest="arch_" + field.name, type=kind, default=None,
                          metavar=type(field.default).__name__.upper(), help=f"default {field.default!r}")
    return p


def _workload(args):
    if args.topology:
        wl = load_topology_csv(args.topology)
    elif args.resnet:
        wl = resnet_workload(args.resnet)
    else:
        from .extract import load_model_workload

        wl = load_model_workload(args.model, args.input_shape, args.model_class)
    if args.unique_weights is not None:
        wl = with_synthetic_weights(wl, args.unique_weights, args.seed, args.zero_fraction)
    return wl


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        _check_out(args.out)
        arch = load_arch(args.arch)
        overrides = {f.name: getattr(args, "arch_" + f.name) for f in dataclasses.fields(ArchConfig)
                     if getattr(args, "arch_" + f.name) is not None}
        arch = arch.replace(**overrides)
        table = load_energy_table(arch.energy_table)
        if args.sweep_unique:
            return _run_sweep(args, arch, table)
        designs = parse_designs(args.designs)
        if args.designs == ",".join(DEFAULT_DESIGNS) and arch.dataflow != "ws_systolic":
            designs = SYSTOLIC_DESIGNS  # the default set less the UCNN designs, which are ws_systolic only
        workload = _workload(args)
        start = time.perf_counter()
        result = simulate(workload, arch, designs, table)
        seconds = time.perf_counter() - start
        paths = write_all(result, args.out, plots=not args.no_plots)
    except (ValueError, OSError, MissingDependencyError) as exc:  # user errors: one line, exit 2
        print(f"wfn-sim: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    print(f"{workload.name}: {len(workload.layers)} layers, {len(designs)} designs in {seconds:.2f} s; "
          f"energy table {table.name} ({table.unit})")
    rel = relative_to_dense(result)
    for design, total in result.totals.items():
        extra = f"  energy {rel[design][0]:.3f}x, cycles {rel[design][1]:.3f}x of dense_ws" if rel else ""
        print(f"  {design:<11} cycles {total['cycles']:>12,}  energy {total['total_energy_pj']:.4g}{extra}")
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


def _run_sweep(args, arch, table) -> int:
    designs = parse_designs(args.designs) if args.designs != ",".join(DEFAULT_DESIGNS) else SWEEP_DESIGNS
    if args.model:
        raise ValueError("--sweep-unique needs a shape-only workload (--topology or --resnet), not --model")
    args.unique_weights = None
    workload = _workload(args)
    rows = unique_weight_sweep(workload, arch, args.sweep_unique, designs, table, args.seed, args.zero_fraction)
    paths = write_sweep(rows, args.out, f"{workload.name} on {arch.name}, table {table.name}", not args.no_plots)
    for r in rows:
        if r["design"] == "factorised":
            print(f"U={r['unique_values']:>4}: factorised energy {r['energy_vs_dense']:.3f}x of dense_ws, "
                  f"{r['factorised_energy_gain_vs_sparse_pe']:.2f}x better than sparse_pe")
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0
