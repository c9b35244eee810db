"""The float mode's two CPU paths for linear layers (fused lookup + FMA GEMV, decode-tile + fp32 sgemm)
against fp32 ``F.linear``, N=4096 K=14336, 4-bit codes, by M: where the crossover (linear.cpp
gemm_min_m) should be at this CPU's dispatch level.

    python bench/float_paths.py THREADS   (interleaved medians; nothing else running)
"""

from __future__ import annotations

import sys

import torch
from modes import LLM_K, LLM_N
from path_probe import probe

if __name__ == "__main__":
    probe("float", torch.ops.wfn_cpu.set_gemm_min_m, "fp32 F.linear",
          lambda: torch.nn.Linear(LLM_K, LLM_N, bias=False), int(sys.argv[1]) if len(sys.argv) > 1 else 1,
          batches=(1, 2, 4, 8, 16, 32, 64))
