"""The large-M int8 and bf16 paths on AVX-512 CPUs without AMX: the panel kernels (panel_gemm_avx512.cpp)
against the fused GEMV, the decode-tile + oneDNN path they replace, and torch's own int8 dynamic and bf16
F.linear, N=4096 K=14336, 4-bit codes, by M; interleaved medians, one thread count per run.

    python bench/panel_gemm.py --threads 1 [--ms 8 16 64 256] [--blocking 240:256 48:1792] [--out FILE.md]

With --blocking each NC:KDW pair (weight rows per packed block, dwords of K per block) adds a panel column.
Nothing else should run on the machine meanwhile.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import warnings

import torch
from common import environment, interleaved_medians
from modes import LLM_K, LLM_N, int8_friendly_pow2, wfn_linear

import wfn_kernels as wk


def parse_blocking(text: str) -> tuple[int, int]:
    try:
        nc, kdw = (int(v) for v in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"blocking must be NC:KDW (two integers), got {text!r}") from None
    if nc <= 0 or nc % 48 or kdw <= 0 or kdw % 16:
        raise argparse.ArgumentTypeError(f"blocking {text!r}: NC must be a positive multiple of 48 and KDW a "
                                         "positive multiple of 16")
    return nc, kdw


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--ms", type=int, nargs="+", default=[8, 16, 32, 64, 128, 256])
    ap.add_argument("--blocking", type=parse_blocking, nargs="*", default=[])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--out", default=None, help="append the table (markdown) to this file")
    args = ap.parse_args(argv)
    if args.threads < 1 or any(m < 1 for m in args.ms) or args.repeats < 1:
        ap.error("--threads, --ms and --repeats must be positive")
    if wk.ops._C is None or not hasattr(torch.ops.wfn_cpu, "set_panel_gemm"):
        sys.exit("the C++ extension with the panel kernels is not built")
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    w = int8_friendly_pow2()[torch.randint(0, 16, (LLM_N, LLM_K))]
    models = {mode: wfn_linear(w, mode) for mode in ("int8", "bf16")}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = torch.nn.Linear(LLM_K, LLM_N, bias=False)
        with torch.no_grad():
            ref.weight.copy_(w)
        dyn = torch.ao.quantization.quantize_dynamic(torch.nn.Sequential(ref), {torch.nn.Linear}, dtype=torch.qint8)
    wb = w.bfloat16()
    ops = torch.ops.wfn_cpu
    prev = (ops.set_int_gemm_min_m(-1), ops.set_bf16_gemm_min_m(-1), ops.set_panel_gemm(True))
    default_blocking = ops.set_panel_blocking(0, 0)
    blockings = [(default_blocking // 100000, default_blocking % 100000)] + list(args.blocking)

    def run(mode, path, x, blocking=None, direct=True):
        big = 1 << 30
        if mode == "int8":
            ops.set_int_gemm_min_m(big if path == "gemv" else 0)
        else:
            ops.set_bf16_gemm_min_m(big if path == "gemv" else 0)
        ops.set_panel_gemm(path == "panel")
        if blocking is not None:
            ops.set_panel_blocking(*blocking)
        ops.set_panel_direct_pack(direct)
        return models[mode](x)

    cols = ["int8 gemv", "int8 oneDNN tiles"] + [f"int8 panel {nc}:{kdw}" for nc, kdw in blockings] + \
           ["int8 panel, row-decode pack", "torch int8 dynamic", "bf16 gemv", "bf16 oneDNN tiles"] + \
           [f"bf16 panel {nc}:{kdw}" for nc, kdw in blockings] + ["bf16 panel, row-decode pack", "torch bf16 F.linear"]
    lines = [f"| M | {' | '.join(cols)} | int8 panel vs int8 dynamic | bf16 panel vs bf16 |",
             "|---" * (len(cols) + 3) + "|"]
    print(lines[0], flush=True)
    try:
        for m in args.ms:
            x = torch.randn(m, LLM_K)
            xb = x.bfloat16()
            fns = [lambda: run("int8", "gemv", x), lambda: run("int8", "tiles", x)]
            fns += [lambda b=b: run("int8", "panel", x, b) for b in blockings]
            fns += [lambda: run("int8", "panel", x, blockings[0], direct=False)]
            fns += [lambda: dyn(x), lambda: run("bf16", "gemv", x), lambda: run("bf16", "tiles", x)]
            fns += [lambda b=b: run("bf16", "panel", x, b) for b in blockings]
            fns += [lambda: run("bf16", "panel", x, blockings[0], direct=False)]
            fns += [lambda: torch.nn.functional.linear(xb, wb)]
            with torch.no_grad():
                t = interleaved_medians(fns, repeats=args.repeats, warmup=2)
            nb = len(blockings)
            i8_panel, i8_dyn = t[2], t[3 + nb]
            b_panel, b_ref = t[6 + nb], t[-1]
            row = f"| {m} | " + " | ".join(f"{v * 1e3:.2f}" for v in t) + \
                  f" | {i8_dyn / i8_panel:.2f}x | {b_ref / b_panel:.2f}x |"
            print(row, flush=True)
            lines.append(row)
    finally:
        ops.set_int_gemm_min_m(prev[0])
        ops.set_bf16_gemm_min_m(prev[1])
        ops.set_panel_gemm(prev[2])
        ops.set_panel_blocking(*blockings[0])
        ops.set_panel_direct_pack(True)
    if args.out:
        env = environment()
        head = [f"\n## {datetime.date.today()} `python bench/panel_gemm.py {' '.join(argv or sys.argv[1:])}`", "",
                f"cpu {env.get('cpu')}, flags {env.get('cpu_flags')}, torch {env.get('torch')}, commit "
                f"{env.get('commit')}, threads {args.threads}; ms, medians of {args.repeats} interleaved runs", ""]
        with open(args.out, "a") as f:
            f.write("\n".join(head + lines) + "\n")


if __name__ == "__main__":
    main()
