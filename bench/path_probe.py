"""Shared by int8_paths.py and float_paths.py: one compute mode's linear layer timed on its GEMV path and
on its GEMM path (forced through the mode's threshold op) beside a peer, N=4096 K=14336, 4-bit codes, by M."""

from __future__ import annotations

from typing import Callable

import torch
from common import interleaved_medians
from modes import LLM_K, LLM_N, int8_friendly_pow2, wfn_linear


def probe(compute: str, set_min_m: Callable[[int], int], peer_name: str, make_peer: Callable[[], torch.nn.Module],
          threads: int, batches=(1, 4, 8, 16, 32, 64, 128)) -> None:
    torch.manual_seed(0)
    torch.set_num_threads(threads)
    model = wfn_linear(int8_friendly_pow2()[torch.randint(0, 16, (LLM_N, LLM_K))], compute)
    peer = make_peer()
    previous = set_min_m(-1)
    print(f"dispatch level {torch.ops.wfn_cpu.capability()}, compute {compute}")
    try:
        for m in batches:
            x = torch.randn(m, LLM_K)
            fns = [lambda: (set_min_m(1 << 30), model(x)), lambda: (set_min_m(0), model(x)), lambda: peer(x)]
            with torch.no_grad():
                t = interleaved_medians(fns, repeats=9 if m < 64 else 5)
            print(f"threads {threads} M={m:4d}  gemv {t[0] * 1e3:8.2f} ms  gemm {t[1] * 1e3:8.2f} ms  "
                  f"{peer_name} {t[2] * 1e3:8.2f} ms", flush=True)
    finally:
        set_min_m(previous)
