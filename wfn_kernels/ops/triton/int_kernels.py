"""Triton kernels of the int8 compute mode's exact integer product ``y = xq @ int_table[codes].T`` (int32).

Same packed layout and byte-wise K walk as kernels.py (see its docstring): a tile of ``BLOCK_KB`` bytes per
row is loaded once and split into its ``8 // BITS`` code planes. Codes index an int32 copy of the layer's
integer table (at most 256 entries); codes past ``num_entries`` read 0. Activations are int8 (quantised per
row by the caller, ops/int8.py), padding past K reads 0.

- ``int_gemv_kernel`` (M <= 4): int32 products accumulated elementwise in a (BLOCK_M, BLOCK_N, BLOCK_KB)
  register tile, reduced once at the end; any int16 table.
- ``int_gemm_kernel``: ``tl.dot`` of int8 x int8 into int32 (integer tensor cores). A table that fits int8
  (``NARROW``) is one dot per plane; an int16 table is split as ``w = 256·hi + lo`` with hi, lo in int8
  (hi = (w + 128) >> 8), two dots, combined exactly in int32.

Every partial sum stays inside int32 because the front end checks ``K · 127 · max(255, max|w|) < 2**31``.
"""

from __future__ import annotations

import triton
import triton.language as tl

from .kernels import grouped_tile


@triton.jit
def int_gemv_kernel(
    xq_ptr, packed_ptr, table_ptr, y_ptr,
    M, N, K, RB, num_entries,
    stride_xm, stride_xk, stride_pn, stride_ym, stride_yn,
    BITS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_KB: tl.constexpr,
):
    PER_BYTE: tl.constexpr = 8 // BITS
    CODE_MASK: tl.constexpr = (1 << BITS) - 1
    pid_n = tl.program_id(0)
    offs_m = tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    m_mask = offs_m < M
    n_mask = offs_n < N
    p_rows = packed_ptr + offs_n[:, None].to(tl.int64) * stride_pn
    x_rows = xq_ptr + offs_m[:, None].to(tl.int64) * stride_xm
    acc = tl.zeros((BLOCK_M, BLOCK_N, BLOCK_KB), dtype=tl.int32)
    for kb0 in range(0, RB, BLOCK_KB):
        offs_b = kb0 + tl.arange(0, BLOCK_KB)
        byts = tl.load(p_rows + offs_b[None, :], mask=n_mask[:, None] & (offs_b < RB)[None, :], other=0).to(tl.int32)
        for j in tl.static_range(PER_BYTE):
            code = (byts >> (j * BITS)) & CODE_MASK
            w = tl.load(table_ptr + code, mask=code < num_entries, other=0)
            offs_k = offs_b * PER_BYTE + j
            xk = tl.load(x_rows + offs_k[None, :] * stride_xk, mask=m_mask[:, None] & (offs_k < K)[None, :],
                         other=0).to(tl.int32)
            acc += xk[:, None, :] * w[None, :, :]
    out = tl.sum(acc, axis=2)
    y_ptrs = y_ptr + offs_m[:, None].to(tl.int64) * stride_ym + offs_n[None, :] * stride_yn
    tl.store(y_ptrs, out, mask=m_mask[:, None] & n_mask[None, :])


@triton.jit
def int_gemm_kernel(
    xq_ptr, packed_ptr, table_ptr, y_ptr,
    M, N, K, RB, num_entries,
    stride_xm, stride_xk, stride_pn, stride_ym, stride_yn,
    BITS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_KB: tl.constexpr,
    GROUP_M: tl.constexpr, NARROW: tl.constexpr,
):
    PER_BYTE: tl.constexpr = 8 // BITS
    CODE_MASK: tl.constexpr = (1 << BITS) - 1
    pid = tl.program_id(0)
    offs_m, offs_n = grouped_tile(pid, M, N, BLOCK_M, BLOCK_N, GROUP_M)
    m_mask = offs_m < M
    n_mask = offs_n < N
    p_cols = packed_ptr + offs_n[None, :].to(tl.int64) * stride_pn
    x_rows = xq_ptr + offs_m[:, None].to(tl.int64) * stride_xm
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int32)
    acc_hi = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int32)
    for kb0 in range(0, RB, BLOCK_KB):
        offs_b = kb0 + tl.arange(0, BLOCK_KB)
        byts = tl.load(p_cols + offs_b[:, None], mask=(offs_b < RB)[:, None] & n_mask[None, :], other=0).to(tl.int32)
        for j in tl.static_range(PER_BYTE):
            code = (byts >> (j * BITS)) & CODE_MASK
            w = tl.load(table_ptr + code, mask=code < num_entries, other=0)
            offs_k = offs_b * PER_BYTE + j
            xk = tl.load(x_rows + offs_k[None, :] * stride_xk, mask=m_mask[:, None] & (offs_k < K)[None, :], other=0)
            if NARROW:
                acc = tl.dot(xk, w.to(tl.int8), acc, out_dtype=tl.int32)
            else:
                hi = (w + 128) >> 8
                lo = w - hi * 256
                acc = tl.dot(xk, lo.to(tl.int8), acc, out_dtype=tl.int32)
                acc_hi = tl.dot(xk, hi.to(tl.int8), acc_hi, out_dtype=tl.int32)
    out = acc + acc_hi * 256
    y_ptrs = y_ptr + offs_m[:, None].to(tl.int64) * stride_ym + offs_n[None, :] * stride_yn
    tl.store(y_ptrs, out, mask=m_mask[:, None] & n_mask[None, :])
