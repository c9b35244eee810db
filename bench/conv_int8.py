"""The int8 mode's convolution, layer by layer over ResNet-18's conv shapes, against the bf16 and fp32 convs a
user would run instead (F.conv2d eager: bf16 and fp32 NCHW, bf16 channels_last), interleaved medians.

    python bench/conv_int8.py [--batch 8] [--threads 1] [--repeats 15] [--layers layer1.conv ...] [--out FILE]

Weights: 4-bit codes of 16 power-of-two values (modes.int8_friendly_pow2), so every mode sees the same
weight. Per layer: time of each contender, int8 vs bf16 (> 1: the int8 mode is faster) in NCHW, and int8 vs
bf16 with both in channels_last (input and output NHWC; torch's recommended layout for CPU convnets). "int8 cols" is
the same int8 op with the fused VNNI kernel switched off (torch.ops.wfn_cpu.set_panel_gemm(False)): per-pixel
quantised im2col columns + at::_int_mm, the path CPUs without VNNI (or with AMX) take.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from common import interleaved_medians
from modes import int8_friendly_pow2
from shapes import RESNET18_CONVS
from torch import nn

import wfn_kernels as wk


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--threads", type=int, default=1)
    names = [c[0] for c in RESNET18_CONVS]
    ap.add_argument("--layers", nargs="+", default=names, choices=names)
    ap.add_argument("--out", help="also write the table (markdown) here")
    args = ap.parse_args()
    if args.batch < 1 or args.threads < 1 or args.repeats < 1:
        ap.error("--batch, --threads and --repeats must be >= 1")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    lines = [f"batch {args.batch}, {args.threads} thread(s), medians of {args.repeats} interleaved runs (ms); "
             f"int8 path: {torch.ops.wfn_cpu.panel_capability()}", "",
             "| layer | WFN int8 | int8 cols | bf16 conv | fp32 conv | WFN int8 channels_last | bf16 channels_last | "
             "int8 vs bf16 | int8 cols vs bf16 | channels_last: int8 vs bf16 |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    print(lines[0])
    total = [0.0] * 6

    def cols(model, x):
        prev = torch.ops.wfn_cpu.set_panel_gemm(False)
        try:
            return model(x)
        finally:
            torch.ops.wfn_cpu.set_panel_gemm(prev)

    for name, ci, h, w, co, k, s, p, count in RESNET18_CONVS:
        if name not in args.layers:
            continue
        conv = nn.Conv2d(ci, co, k, s, p, bias=False)
        with torch.no_grad():
            conv.weight.copy_(int8_friendly_pow2()[torch.randint(0, 16, conv.weight.shape)])
        wfn = nn.Sequential(conv)
        wk.convert(wfn, compute="int8")
        x = torch.randn(args.batch, ci, h, w)
        xb, wt = x.bfloat16(), conv.weight.detach()
        wb = wt.bfloat16()
        x_cl, xb_cl = x.to(memory_format=torch.channels_last), xb.to(memory_format=torch.channels_last)
        wb_cl = wb.to(memory_format=torch.channels_last)
        with torch.no_grad():
            t = interleaved_medians([lambda: wfn(x), lambda: cols(wfn, x), lambda: F.conv2d(xb, wb, None, s, p),
                                     lambda: F.conv2d(x, wt, None, s, p), lambda: wfn(x_cl),
                                     lambda: F.conv2d(xb_cl, wb_cl, None, s, p)], repeats=args.repeats, warmup=2)
        for i in range(6):
            total[i] += t[i] * count
        lines.append(f"| {name} | " + " | ".join(f"{v * 1e3:.2f}" for v in t) +
                     f" | {t[2] / t[0]:.2f}x | {t[2] / t[1]:.2f}x | {t[5] / t[4]:.2f}x |")
        print(lines[-1])
    lines.append("| all convs (x count) | " + " | ".join(f"{v * 1e3:.2f}" for v in total) +
                 f" | {total[2] / total[0]:.2f}x | {total[2] / total[1]:.2f}x | {total[5] / total[4]:.2f}x |")
    print(lines[-1])
    if args.out:
        with open(args.out, "a") as f:
            f.write("\n".join(lines) + "\n\n")


if __name__ == "__main__":
    main()
