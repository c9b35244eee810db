"""The int8 mode's two CPU paths (fused lookup + VNNI GEMV, decode-tile + at::_int_mm GEMM) against torch int8
dynamic, N=4096 K=14336, 4-bit codes, by M: where the crossover (int_linear.cpp int_gemm_min_m) should be.

    python bench/int8_paths.py THREADS   (interleaved medians; nothing else running)
"""

from __future__ import annotations

import sys
import warnings

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
    model = torch.nn.Sequential(lin)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dyn = torch.ao.quantization.quantize_dynamic(torch.nn.Sequential(torch.nn.Linear(LLM_K, LLM_N, bias=False)),
                                                     {torch.nn.Linear}, dtype=torch.qint8)
    wk.convert(model, compute="int8")
    set_min_m = torch.ops.wfn_cpu.set_int_gemm_min_m
    previous = set_min_m(-1)
    try:
        for m in (1, 4, 8, 16, 32, 64, 128):
            x = torch.randn(m, LLM_K)
            fns = [lambda: (set_min_m(1 << 30), model(x)), lambda: (set_min_m(0), model(x)), lambda: dyn(x)]
            with torch.no_grad():
                t = interleaved_medians(fns, repeats=9 if m < 64 else 5)
            print(f"threads {threads} M={m:4d}  gemv {t[0] * 1e3:8.2f} ms  gemm {t[1] * 1e3:8.2f} ms  "
                  f"int8dyn {t[2] * 1e3:8.2f} ms", flush=True)
    finally:
        set_min_m(previous)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1)
