"""The int8 mode's two CPU paths (fused lookup + dot-product GEMV, decode-tile + GEMM: at::_int_mm, or the
exact fp32 GEMM on CPUs without VNNI) against torch int8 dynamic, N=4096 K=14336, 4-bit codes, by M: where
the crossover (int_linear.cpp int_gemm_min_m) should be.

    python bench/int8_paths.py THREADS   (interleaved medians; nothing else running)
"""

from __future__ import annotations

import sys
import warnings

import torch
from modes import LLM_K, LLM_N
from path_probe import probe


def int8_dynamic() -> torch.nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(torch.nn.Sequential(torch.nn.Linear(LLM_K, LLM_N, bias=False)),
                                                      {torch.nn.Linear}, dtype=torch.qint8)


if __name__ == "__main__":
    probe("int8", torch.ops.wfn_cpu.set_int_gemm_min_m, "int8dyn", int8_dynamic,
          int(sys.argv[1]) if len(sys.argv) > 1 else 1)
