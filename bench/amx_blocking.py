"""AMX path blocking sweep: `python bench/amx_blocking.py [--m 256] [--mode bf16] [--configs ...]`.

Times the bf16 (or float) compute mode of one N=4096, K=14336 4-bit linear layer at M rows under several
blockings of the AMX path (csrc/cpu/amx_gemm.cpp: weight rows per task, K per decoded tile, activation
columns and weight rows per brgemm call, output-tile bytes), interleaved with torch's bf16 F.linear (and, for the float
mode, fp32 F.linear) in one process; medians, ratio to the peer printed. Needs a CPU with AMX-BF16.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from common import environment, interleaved_times  # noqa: E402
from modes import LLM_K, LLM_N, int8_friendly_pow2  # noqa: E402
from torch import nn  # noqa: E402

import wfn_kernels as wk  # noqa: E402
from wfn_kernels.format.codebook import Codebook  # noqa: E402

DEFAULT_CONFIGS = "256,1024,64,256,1048576;128,1024,32,32,1048576;128,2048,64,128,1048576;256,512,64,256,1048576"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--m", type=int, default=256, help="activation rows M")
    p.add_argument("--mode", choices=("bf16", "float"), default="bf16", help="WFN compute mode")
    p.add_argument("--configs", default=DEFAULT_CONFIGS, help="';'-separated rows,kblock,cols,subrows,chunk_bytes")
    p.add_argument("--repeats", type=int, default=9, help="interleaved timed rounds (medians)")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--out", default="", help="also append the figures, with the environment, to this markdown file")
    p.add_argument("--crossover", default="",
                   help="comma-separated M: time the AMX path against the register-lookup GEMV at each (default blocking)")
    args = p.parse_args(argv)
    try:
        configs = [tuple(int(v) for v in c.split(",")) for c in args.configs.split(";") if c.strip()]
        crossover_ms = [int(v) for v in args.crossover.split(",")] if args.crossover else []
    except ValueError:
        raise SystemExit("bench/amx_blocking.py: --configs and --crossover take comma-separated integers") from None
    if not configs or any(len(c) != 5 or min(c) < 1 for c in configs):
        raise SystemExit("bench/amx_blocking.py: each config is rows,kblock,cols,subrows,chunk_bytes (positive), "
                         f"got {args.configs!r}")
    if args.m < 1 or args.repeats < 1 or args.threads < 1 or any(m < 1 for m in crossover_ms):
        raise SystemExit("bench/amx_blocking.py: --m, --repeats, --threads and --crossover values must be >= 1")
    if not torch.ops.wfn_cpu.amx_capability():
        raise SystemExit(f"bench/amx_blocking.py: the AMX path cannot run here: {torch.ops.wfn_cpu.amx_status()}")
    torch.set_num_threads(args.threads)
    cb = int8_friendly_pow2(4)
    codes = torch.randint(0, cb.numel(), (LLM_N, LLM_K), generator=torch.Generator().manual_seed(1))
    w = cb[codes]
    lin = nn.Sequential(nn.Linear(LLM_K, LLM_N, bias=False))
    with torch.no_grad():
        lin[0].weight.copy_(w)
    wk.convert(lin, codebook=Codebook.from_values(cb.tolist(), max_entries=None), compute=args.mode)
    layer = lin[0]
    x = torch.randn(args.m, LLM_K, generator=torch.Generator().manual_seed(2))
    xb, wb = x.bfloat16(), w.bfloat16()
    lines = crossover(layer, args.mode, crossover_ms, args.repeats) if args.crossover else None
    if lines is None:
        lines = blocking_sweep(layer, args, configs, x, xb, w, wb)
    print("\n".join(lines))
    if args.out:
        write_markdown(Path(args.out), lines, argv if argv is not None else sys.argv[1:])


def write_markdown(path: Path, lines: list[str], argv: list[str]) -> None:
    """Append one run (command, environment, figures) to a markdown results file."""
    env = environment()
    head = [f"## `python bench/amx_blocking.py {' '.join(argv)}`", "",
            *(f"- {k}: {v}" for k, v in env.items()), "", "```", *lines, "```", ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write("\n".join(head) + "\n")


def blocking_sweep(layer, args, configs, x, xb, w, wb) -> list[str]:
    """Each blocking against torch's peer, interleaved; the blocking goes back to the default afterwards."""
    default = (256, 1024, 64, 256, 1 << 20)

    def run_config(c):
        def fn():
            torch.ops.wfn_cpu.set_amx_blocking(*c)
            layer(x)
        return fn

    fns = [run_config(c) for c in configs] + [lambda: F.linear(xb, wb)]
    names = [",".join(map(str, c)) for c in configs] + ["torch bf16 F.linear"]
    if args.mode == "float":
        fns.append(lambda: F.linear(x, w))
        names.append("torch fp32 F.linear")
    try:
        with torch.no_grad():
            times = interleaved_times(fns, args.repeats)
    finally:
        torch.ops.wfn_cpu.set_amx_blocking(*default)
    med = [statistics.median(t) for t in times]
    peer = med[len(configs)] if args.mode == "bf16" else med[-1]
    out = [f"M={args.m} N={LLM_N} K={LLM_K} mode={args.mode} threads={args.threads} (peer: {names[-1]})"]
    for name, t in zip(names, med):
        out.append(f"  {name:>24}: {t * 1e3:8.2f} ms   peer / this = {peer / t:5.2f}x")
    return out


def crossover(layer, mode: str, ms: list[int], repeats: int) -> list[str]:
    """AMX path vs the GEMV at each M (both forced), interleaved; prints the ratio GEMV / AMX."""
    splits = 1 if mode == "bf16" else 3

    def forced(on: bool, x):
        def fn():
            torch.ops.wfn_cpu.set_amx(1 if on else 0)
            prev = torch.ops.wfn_cpu.set_amx_min_m(splits, 0 if on else 1 << 30)
            prev_gemm = torch.ops.wfn_cpu.set_bf16_gemm_min_m(1 << 30) if mode == "bf16" else None
            try:
                layer(x)
            finally:
                torch.ops.wfn_cpu.set_amx_min_m(splits, prev)
                torch.ops.wfn_cpu.set_amx(-1)
                if prev_gemm is not None:
                    torch.ops.wfn_cpu.set_bf16_gemm_min_m(prev_gemm)
        return fn

    out = [f"crossover, {mode} mode, N={LLM_N} K={LLM_K}, threads={torch.get_num_threads()}: GEMV / AMX (> 1: AMX faster)"]
    for m in ms:
        x = torch.randn(m, LLM_K, generator=torch.Generator().manual_seed(m))
        with torch.no_grad():
            t_amx, t_gemv = (statistics.median(t) for t in interleaved_times([forced(True, x), forced(False, x)], repeats))
        out.append(f"  M={m:4d}: AMX {t_amx * 1e3:8.2f} ms  GEMV {t_gemv * 1e3:8.2f} ms  ratio {t_gemv / t_amx:5.2f}x")
    return out


if __name__ == "__main__":
    main()
