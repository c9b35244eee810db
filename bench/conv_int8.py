"""The int8 mode's convolution, layer by layer over ResNet-18's conv shapes, against the bf16 and fp32 convs a
user would run instead (F.conv2d eager, bf16 and fp32, NCHW), 1 thread, interleaved medians.

    python bench/conv_int8.py [--batch 8] [--repeats 15] [--layers layer1.conv layer2.conv ...]

Weights: 4-bit codes of 16 power-of-two values (modes.int8_friendly_pow2), so every mode sees the same
weight. Per layer: time of each contender and int8 vs bf16 (> 1: the int8 mode is faster).
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
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"batch {args.batch}, {args.threads} thread(s), medians of {args.repeats} (ms)")
    print(f"{'layer':22s} {'int8':>8s} {'bf16':>8s} {'fp32':>8s}  int8 vs bf16")
    total = [0.0, 0.0, 0.0]
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
        with torch.no_grad():
            t = interleaved_medians([lambda: wfn(x), lambda: F.conv2d(xb, wb, None, s, p),
                                     lambda: F.conv2d(x, wt, None, s, p)], repeats=args.repeats, warmup=2)
        for i in range(3):
            total[i] += t[i] * count
        print(f"{name:22s} {t[0] * 1e3:8.2f} {t[1] * 1e3:8.2f} {t[2] * 1e3:8.2f}  {t[1] / t[0]:.2f}x")
    print(f"{'all convs (x count)':22s} {total[0] * 1e3:8.2f} {total[1] * 1e3:8.2f} {total[2] * 1e3:8.2f}  "
          f"{total[1] / total[0]:.2f}x")


if __name__ == "__main__":
    main()
