"""Launch configuration and launcher for the Triton codebook kernels (see kernels.py for the design).

Path choice: M <= 4 runs the GEMV kernel (memory-bound: stream the packed weight once, no tensor cores);
larger M runs the tiled GEMM kernel with ``tl.dot``. Block sizes come from a fixed heuristic rather than
``triton.autotune`` so a first call does not pay minutes of tuning (gemlite's #15 complaint) and the
choice is reproducible; :func:`choose_config` is public so a benchmark can sweep alternatives.
"""

from __future__ import annotations

import contextlib
import functools
import os
from dataclasses import dataclass, replace

import torch
import triton

from .. import reference as ref
from ...format.packing import row_bytes
from .kernels import codebook_gemm_kernel, codebook_gemv_kernel

GEMV_MAX_M = 4


@dataclass(frozen=True)
class LaunchConfig:
    """Tile sizes for one launch. ``block_kb`` counts packed *bytes* per row per K step (so a step covers
    ``block_kb * 8 // bits`` elements of K); ``split_k`` > 1 adds a grid axis over K ranges."""

    path: str  # "gemv" or "gemm"
    block_m: int
    block_n: int
    block_kb: int
    split_k: int = 1
    group_m: int = 8
    num_warps: int = 4
    num_stages: int = 3

    def __post_init__(self):
        if self.path not in ("gemv", "gemm"):
            raise ValueError(f"LaunchConfig.path must be 'gemv' or 'gemm', got {self.path!r}")
        for name in ("block_m", "block_n", "block_kb"):
            v = getattr(self, name)
            if v < 1 or v & (v - 1):
                raise ValueError(f"LaunchConfig.{name} must be a positive power of two, got {v}")
        if self.path == "gemv" and self.block_m > GEMV_MAX_M:
            raise ValueError(f"LaunchConfig.block_m={self.block_m}: the gemv path handles at most "
                             f"{GEMV_MAX_M} rows")
        if self.split_k < 1:
            raise ValueError(f"LaunchConfig.split_k must be >= 1, got {self.split_k}")


def interpreting() -> bool:
    """True when Triton runs kernels in its CPU interpreter (TRITON_INTERPRET=1)."""
    return os.environ.get("TRITON_INTERPRET") == "1"


@functools.lru_cache(maxsize=None)
def _sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def choose_config(m: int, n: int, k: int, bits: int, device: torch.device) -> LaunchConfig:
    """Heuristic tiles for an (M, N, K) problem at ``bits`` bits on ``device``.

    GEMV: 16 output rows per program and 256 bytes per row per step (4 KiB per step at 4 warps: two
    128-bit loads per thread), fewer bytes when more activation rows share the register tile.
    GEMM: BLOCK_M grows with M; BLOCK_KB bytes hold 64 codes at 4/8 bits (>= 16 for the MMA K at 2 bits).
    Split-K only when the N (x M) tiles cannot give every SM one program.
    """
    rb = max(row_bytes(k, bits), 1)
    if m <= GEMV_MAX_M:
        block_m = triton.next_power_of_2(max(m, 1))
        block_kb = min(256 // block_m, max(16, triton.next_power_of_2(rb)))
        cfg = LaunchConfig("gemv", block_m, 16, block_kb, num_warps=4, num_stages=3)
        tiles = triton.cdiv(n, cfg.block_n)
    else:
        block_m = 16 if m <= 16 else 32 if m <= 32 else 64 if m <= 64 else 128
        block_n = 64 if m <= 64 else 128
        block_kb = {2: 16, 4: 32, 8: 64}[bits]
        big = block_m * block_n >= 128 * 128
        cfg = LaunchConfig("gemm", block_m, block_n, block_kb, num_warps=8 if big else 4,
                           num_stages=3 if big else 4)
        tiles = triton.cdiv(m, block_m) * triton.cdiv(n, block_n)
    # Split-K costs two extra launches (zeroing a float32 output, narrowing it after the atomics): ~10 us,
    # more than a whole 8192^2 4-bit GEMV on an H100. So split only when the tiles cannot cover every SM
    # once, and then aim for two programs per SM.
    sms = _sm_count(device.index or 0) if device.type == "cuda" else 1
    if tiles >= sms:
        return cfg
    split = min(triton.cdiv(2 * sms, tiles), triton.cdiv(rb, cfg.block_kb))
    return replace(cfg, split_k=max(split, 1))


def codebook_linear_triton_launch(x: torch.Tensor, packed: torch.Tensor, codebook: torch.Tensor, bits: int,
                                  in_features: int, bias: torch.Tensor | None = None,
                                  config: LaunchConfig | None = None,
                                  out_dtype: torch.dtype | None = None) -> torch.Tensor:
    """y = x @ codebook[codes].T (+ bias) on the Triton kernels.

    x: (M, K) float32/bfloat16/float16, any strides; packed: uint8 (N, ceil(K*bits/8)), row-major bytes;
    codebook: float32 (C,), C <= 2**bits; bias: (N,) float or None. Returns (M, N) in x.dtype, float32
    accumulation. Shape/dtype/device checks run here (the front end's value checks do not: codes past
    the codebook read 0). ``config`` overrides :func:`choose_config` (tests and benchmarks); ``out_dtype``
    (default x.dtype) is the output's dtype (the bf16 mode runs bf16 x into a float32 output).
    """
    want = out_dtype or x.dtype
    ref.check_linear_args(x, packed, codebook, bits, in_features, bias, full=False)
    if x.device.type != "cuda" and not interpreting():
        raise RuntimeError(f"codebook_linear_triton: x is on {x.device}; Triton kernels need a CUDA device "
                           "(or TRITON_INTERPRET=1 set before triton is imported, for correctness only)")
    m, n, k = x.shape[0], packed.shape[0], in_features
    if m == 0 or n == 0 or k == 0:
        y = torch.zeros(m, n, dtype=torch.float32, device=x.device)
        return (y + bias.float() if bias is not None else y).to(want)
    cfg = config or choose_config(m, n, k, bits, x.device)
    if cfg.path == "gemv" and cfg.block_m < m:
        raise ValueError(f"config.block_m={cfg.block_m} < M={m}: the gemv path covers all rows in one tile")
    if packed.stride(1) != 1:
        packed = packed.contiguous()
    codebook = codebook.contiguous()
    rb = packed.shape[1]
    kb_per_split = triton.cdiv(triton.cdiv(rb, cfg.split_k), cfg.block_kb) * cfg.block_kb
    split_k = triton.cdiv(rb, kb_per_split)
    atomic = split_k > 1
    # The interpreter narrows float32 to bfloat16 by truncation, not round-to-nearest-even; there a
    # float32 buffer is narrowed by torch instead, so results match the reference.
    y_dtype = torch.float32 if atomic or (interpreting() and want == torch.bfloat16) else want
    y = (torch.zeros if atomic else torch.empty)(m, n, dtype=y_dtype, device=x.device)
    bias_arg = bias if bias is not None else codebook  # never read when HAS_BIAS is False
    args = (x, packed, codebook, bias_arg, y, m, n, k, rb, codebook.numel(), kb_per_split,
            x.stride(0), x.stride(1), packed.stride(0), y.stride(0), y.stride(1))
    common = dict(BITS=bits, BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, BLOCK_KB=cfg.block_kb,
                  HAS_BIAS=bias is not None, ATOMIC=atomic, EVEN_KB=rb % cfg.block_kb == 0, num_warps=cfg.num_warps, num_stages=cfg.num_stages)
    with torch.cuda.device(x.device) if x.device.type == "cuda" else contextlib.nullcontext():
        if cfg.path == "gemv":
            codebook_gemv_kernel[(triton.cdiv(n, cfg.block_n), split_k)](*args, **common)
        else:
            # The interpreter has no bfloat16 arithmetic, so there the bf16 dot runs on fp32 operands.
            dot_fp32 = x.dtype == torch.float32 or (interpreting() and x.dtype == torch.bfloat16)
            grid = (triton.cdiv(m, cfg.block_m) * triton.cdiv(n, cfg.block_n), split_k)
            codebook_gemm_kernel[grid](*args, GROUP_M=cfg.group_m, DOT_FP32=dot_fp32, **common)
    return y.to(want)
