"""The AVX-512 GEMVs' software prefetch settings against each other, M=1, N=4096, K=14336, 4-bit, 1 thread:
each setting (NEAR:TILES:HINT, see wfn_cpu::set_gemv_prefetch) runs its own copy of the layer, so no
setting reads codes another left in the L3, interleaved (in a new order every round) with torch int8
dynamic, bf16 F.linear and one core's streaming rate (the faster of torch.sum and wfn_cpu.stream_read over
an fp32 buffer the size of the codes); medians.

    python bench/gemv_prefetch.py [--modes int8 float bf16] [--settings 4:2:1 8:1:2] [--repeats 41] [--out F.md]

The first setting is the baseline of the ratios. Nothing else should run on the machine meanwhile.
"""

from __future__ import annotations

import argparse
import datetime
import sys

import torch
from cases import int8_dynamic
from common import environment, interleaved_medians, stream_reads
from modes import LLM_K, LLM_N, int8_friendly_pow2, wfn_linear

import wfn_kernels  # noqa: F401  (loads the extension's ops)


def parse_setting(text: str) -> tuple[int, int, int]:
    try:
        near, tiles, hint = (int(v) for v in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"a setting is NEAR:TILES:HINT (three integers), got {text!r}") from None
    return near, tiles, hint


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--modes", nargs="+", default=["int8", "float", "bf16"], choices=["int8", "float", "bf16"])
    ap.add_argument("--settings", type=parse_setting, nargs="+", default=[(8, 1, 2), (4, 2, 1), (4, 1, 1), (8, 1, 1)])
    ap.add_argument("--repeats", type=int, default=41)
    ap.add_argument("--out", help="append the table to this Markdown file")
    args = ap.parse_args(argv)
    if torch.ops.wfn_cpu.capability() != "avx512":
        raise SystemExit("bench/gemv_prefetch.py: the prefetch settings apply to the AVX-512 GEMVs; this CPU runs "
                         f"the {torch.ops.wfn_cpu.capability()} level")
    for s in args.settings:  # refuse a bad setting before any timing
        torch.ops.wfn_cpu.set_gemv_prefetch(*torch.ops.wfn_cpu.set_gemv_prefetch(*s))
    torch.manual_seed(0)
    torch.set_num_threads(1)
    w = int8_friendly_pow2()[torch.randint(0, 16, (LLM_N, LLM_K))]
    x = torch.randn(1, LLM_K)
    dyn = int8_dynamic(torch.nn.Linear(LLM_K, LLM_N, bias=False))
    xb, wb = x.bfloat16(), w.bfloat16()
    buf = torch.ones(LLM_N * LLM_K // 8)  # fp32, the byte size of the 4-bit codes
    names, fns = [], []
    for mode in args.modes:
        for s in args.settings:
            layer = wfn_linear(w, mode)

            def run(layer=layer, s=s):
                torch.ops.wfn_cpu.set_gemv_prefetch(*s)
                layer(x)

            names.append((mode, s))
            fns.append(run)
    names += ["int8 dynamic", "bf16 F.linear", "stream", "stream_read"]
    fns += [lambda: dyn(x), lambda: torch.nn.functional.linear(xb, wb), *stream_reads(buf)]
    previous = torch.ops.wfn_cpu.set_gemv_prefetch(8, 1, 2)
    try:
        with torch.no_grad():
            t = dict(zip(names, interleaved_medians(fns, repeats=args.repeats, warmup=5)))
    finally:
        torch.ops.wfn_cpu.set_gemv_prefetch(*previous)
    t["stream"] = min(t["stream"], t.pop("stream_read"))
    env = environment()
    gb = LLM_N * LLM_K / 2 / 1e9
    cmd = " ".join(sys.argv[1:] if argv is None else argv)
    lines = [f"## {datetime.date.today()} `python bench/gemv_prefetch.py {cmd}`",
             "",
             f"cpu {env['cpu']}, flags {env['cpu_flags']}, torch {env['torch']}, commit {env['commit']}, 1 thread; "
             f"ms, medians of {args.repeats} interleaved runs. Stream {t['stream'] * 1e3:.3f} ms "
             f"({gb / t['stream']:.1f} GB/s), int8 dynamic {t['int8 dynamic'] * 1e3:.3f} ms, "
             f"bf16 F.linear {t['bf16 F.linear'] * 1e3:.3f} ms.",
             "",
             "| mode | near:tiles:hint | ms | vs first setting | share of stream | vs int8 dynamic |",
             "|---|---|---|---|---|---|"]
    for mode in args.modes:
        base = t[(mode, args.settings[0])]
        for s in args.settings:
            v = t[(mode, s)]
            lines.append(f"| {mode} | {s[0]}:{s[1]}:{s[2]} | {v * 1e3:.3f} | {base / v:.3f}x | "
                         f"{t['stream'] / v:.3f} | {t['int8 dynamic'] / v:.2f}x |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(args.out, "a") as f:
            f.write("\n" + text)


if __name__ == "__main__":
    main()
