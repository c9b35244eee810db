"""The float mode's two CPU paths for linear layers (fused lookup + FMA GEMV, decode-tile + fp32 sgemm)
against fp32 ``F.linear``, N=4096 K=14336, 4-bit codes, by M: where the crossover (linear.cpp
gemm_min_m) should be at this CPU's dispatch level.

    python bench/float_paths.py THREADS   (interleaved medians; nothing else running)
"""

from __future__ import annotations

import sys

import torch
from common import interleaved_medians
from modes import LLM_K, LLM_N, int8_friendly_pow2

import wfn_kernels as wk


def main(threads: int) -> None:
    torch.manual_seed(0)
    torch.set_num_threads(threads)
    lin = torch.nn.Linear(LLM_K, LLM_N, bias=False)
    with torch.no_grad():
        lin.weight.copy_(int8_friendly_pow2()[torch.randint(0, 16, (LLM_N, LLM_K))])
    dense = torch.nn.Linear(LLM_K, LLM_N, bias=False)
    model = torch.nn.Sequential(lin)
    wk.convert(model)
    set_min_m = torch.ops.wfn_cpu.set_gemm_min_m
    previous = set_min_m(-1)
    print(f"dispatch level {torch.ops.wfn_cpu.capability()}")
    try:
        for m in (1, 2, 4, 8, 16, 64):
            x = torch.randn(m, LLM_K)
            fns = [lambda: (set_min_m(1 << 30), model(x)), lambda: (set_min_m(0), model(x)), lambda: dense(x)]
            with torch.no_grad():
                t = interleaved_medians(fns, repeats=5)
            print(f"threads {threads} M={m:4d}  gemv {t[0] * 1e3:8.2f} ms  gemm {t[1] * 1e3:8.2f} ms  "
                  f"fp32 F.linear {t[2] * 1e3:8.2f} ms", flush=True)
    finally:
        set_min_m(previous)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1)
