"""The bf16 and int8 compute modes on the Triton kernels, as torch.library ops (linear layers).

- ``wfn::int_linear_triton(xq, packed, int_table, bits, in_features) -> int32``: the int8 mode's exact
  integer product on int_kernels.py; ops/int8.py quantises the rows and rescales around it exactly as its
  reference does, so the two agree bit for bit.
- ``wfn::bf16_linear_triton(x, packed, codebook, bits, in_features, bias) -> x.dtype``: activations rounded
  to bf16 once, the codebook kernels of kernels.py on bf16 inputs (weights exact in bf16, tensor-core dot
  on a GPU), float32 accumulation and a float32 output narrowed to x's dtype by torch.

Both are ``custom_op``s with fake kernels (see op.py for why not ``triton_op``); inference only.
"""

from __future__ import annotations

import contextlib

import torch
import triton

from .. import reference as ref
from .int_kernels import int_gemm_kernel, int_gemv_kernel
from .launcher import GEMV_MAX_M, choose_config, codebook_linear_triton_launch, interpreting

INT_SCHEMA = "(Tensor xq, Tensor packed, Tensor int_table, int bits, int in_features) -> Tensor"
BF16_SCHEMA = ("(Tensor x, Tensor packed, Tensor codebook, int bits, int in_features, Tensor? bias=None) "
               "-> Tensor")


def int_linear_triton_launch(xq: torch.Tensor, packed: torch.Tensor, int_table: torch.Tensor, bits: int,
                             in_features: int) -> torch.Tensor:
    """xq int8 (M, K) @ int_table[codes].T -> int32 (M, N); int_table int16 (C,), checked by the caller."""
    if xq.device.type != "cuda" and not interpreting():
        raise RuntimeError(f"int_linear_triton: xq is on {xq.device}; Triton kernels need a CUDA device (or "
                           "TRITON_INTERPRET=1 set before triton is imported, for correctness only)")
    m, n, k = xq.shape[0], packed.shape[0], in_features
    y = torch.zeros(m, n, dtype=torch.int32, device=xq.device)
    if m == 0 or n == 0 or k == 0:
        return y
    packed = packed.contiguous()
    table = int_table.to(device=xq.device, dtype=torch.int32).contiguous()
    cfg = choose_config(m, n, k, bits, xq.device)
    rb = packed.shape[1]
    args = (xq, packed, table, y, m, n, k, rb, table.numel(), xq.stride(0), xq.stride(1), packed.stride(0),
            y.stride(0), y.stride(1))
    meta = dict(BITS=bits, BLOCK_N=cfg.block_n, BLOCK_KB=cfg.block_kb, num_warps=cfg.num_warps)
    with torch.cuda.device(xq.device) if xq.device.type == "cuda" else contextlib.nullcontext():
        if m <= GEMV_MAX_M:
            int_gemv_kernel[(triton.cdiv(n, cfg.block_n),)](*args, BLOCK_M=cfg.block_m, **meta)
        else:
            narrow = bool(int_table.min() >= -128 and int_table.max() <= 127)
            grid = (triton.cdiv(m, cfg.block_m) * triton.cdiv(n, cfg.block_n),)
            int_gemm_kernel[grid](*args, BLOCK_M=cfg.block_m, GROUP_M=cfg.group_m, NARROW=narrow,
                                  num_stages=cfg.num_stages, **meta)
    return y


@torch.library.custom_op("wfn::int_linear_triton", mutates_args=(), schema=INT_SCHEMA)
def int_linear_triton(xq, packed, int_table, bits: int, in_features: int) -> torch.Tensor:
    return int_linear_triton_launch(xq, packed, int_table, bits, in_features)


@int_linear_triton.register_fake
def _int_fake(xq, packed, int_table, bits, in_features):
    return xq.new_empty(xq.shape[0], packed.shape[0], dtype=torch.int32)


@torch.library.custom_op("wfn::bf16_linear_triton", mutates_args=(), schema=BF16_SCHEMA)
def bf16_linear_triton(x, packed, codebook, bits: int, in_features: int, bias=None) -> torch.Tensor:
    ref.check_linear_args(x, packed, codebook, bits, in_features, bias, full=False)
    y = codebook_linear_triton_launch(x.bfloat16(), packed, codebook, bits, in_features, bias,
                                      out_dtype=torch.float32)
    return y.to(x.dtype)


@bf16_linear_triton.register_fake
def _bf16_fake(x, packed, codebook, bits, in_features, bias=None):
    return x.new_empty(x.shape[0], packed.shape[0])
