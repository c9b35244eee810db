"""Triton kernels for y = x @ codebook[codes].T (+ bias), codes packed at 2/4/8 bits.

Packed layout (wfn_kernels/packing.py): uint8 (N, RB), RB = ceil(K * BITS / 8); element k of row n sits
at bits ``(k * BITS) % 8`` upward of byte ``(k * BITS) // 8``. So byte b of a row holds the
``PER_BYTE = 8 // BITS`` elements ``k = b * PER_BYTE + j`` (j = 0..PER_BYTE-1) at shift ``j * BITS``.

Both kernels walk the K dimension in *bytes*: a tile of ``BLOCK_KB`` bytes per row is loaded once (rows
are contiguous: the GEMV's loads compile to 128-bit ones, checked by tests/triton/test_triton_aot.py) and
then split into its PER_BYTE code planes
with shifts. Plane j covers the activations ``x[:, b * PER_BYTE + j]``, a strided but cache-resident read
(x is tiny next to the weight for the M this targets). Summing over planes is a permutation of the K sum,
which is exact whenever fp32 accumulation is (power-of-two codebooks, small-integer activations).

Decode is a gather from the float32 codebook, ``tl.load(cb_ptr + code)``: the table is at most 1 KiB, so
it stays in L1 on a GPU. Codes >= ``num_entries`` read 0 instead of out-of-bounds memory (the Python
front end rejects such codes before launch unless validation was switched off).

``EVEN_KB`` (every split is a whole number of BLOCK_KB tiles) drops the byte mask, so the mask is constant
along a row and the compiler can emit 128-bit loads of the packed bytes.

Split-K: a second grid axis splits the bytes of a row into ``KB_PER_SPLIT``-byte ranges. With more than one
split, partial sums are ``tl.atomic_add``-ed into a zeroed float32 output (bias added once, by split 0);
the launcher only splits when there are too few N tiles to fill the GPU.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def codebook_gemv_kernel(
    x_ptr, packed_ptr, cb_ptr, bias_ptr, y_ptr,
    M, N, K, RB, num_entries, KB_PER_SPLIT,
    stride_xm, stride_xk, stride_pn, stride_ym, stride_yn,
    BITS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_KB: tl.constexpr,
    HAS_BIAS: tl.constexpr, ATOMIC: tl.constexpr, EVEN_KB: tl.constexpr,
):
    """Small-M path (M <= BLOCK_M <= 4): program (n tile, k split) produces y[:, n tile].

    Products are accumulated elementwise in a (BLOCK_M, BLOCK_N, BLOCK_KB) float32 register tile and
    reduced over k once at the end, so the K loop has no cross-lane reduction (memory-bound loop).
    """
    PER_BYTE: tl.constexpr = 8 // BITS
    CODE_MASK: tl.constexpr = (1 << BITS) - 1
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    offs_m = tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    m_mask = offs_m < M
    n_mask = offs_n < N
    kb_start = pid_k * KB_PER_SPLIT
    kb_end = tl.minimum(kb_start + KB_PER_SPLIT, RB)
    # Row bases hoisted out of the K loop, in int64 so N * row_bytes past 2^31 cannot wrap.
    p_rows = packed_ptr + offs_n[:, None].to(tl.int64) * stride_pn
    x_rows = x_ptr + offs_m[:, None].to(tl.int64) * stride_xm
    acc = tl.zeros((BLOCK_M, BLOCK_N, BLOCK_KB), dtype=tl.float32)
    for kb0 in range(kb_start, kb_end, BLOCK_KB):
        offs_b = kb0 + tl.arange(0, BLOCK_KB)
        p_ptrs = p_rows + offs_b[None, :]
        if EVEN_KB:
            byts = tl.load(p_ptrs, mask=n_mask[:, None], other=0).to(tl.int32)
        else:
            byts = tl.load(p_ptrs, mask=n_mask[:, None] & (offs_b < kb_end)[None, :], other=0).to(tl.int32)
        for j in tl.static_range(PER_BYTE):
            code = (byts >> (j * BITS)) & CODE_MASK
            w = tl.load(cb_ptr + code, mask=code < num_entries, other=0.0)
            offs_k = offs_b * PER_BYTE + j
            # Elements past K (padding of the last byte) get x = 0, so they add nothing.
            xk = tl.load(x_rows + offs_k[None, :] * stride_xk,
                         mask=m_mask[:, None] & (offs_k < K)[None, :], other=0.0).to(tl.float32)
            acc += xk[:, None, :] * w[None, :, :]
    out = tl.sum(acc, axis=2)
    _epilogue(out, bias_ptr, y_ptr, offs_m, offs_n, m_mask, n_mask, stride_ym, stride_yn, pid_k,
              HAS_BIAS, ATOMIC)


@triton.jit
def codebook_gemm_kernel(
    x_ptr, packed_ptr, cb_ptr, bias_ptr, y_ptr,
    M, N, K, RB, num_entries, KB_PER_SPLIT,
    stride_xm, stride_xk, stride_pn, stride_ym, stride_yn,
    BITS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_KB: tl.constexpr,
    GROUP_M: tl.constexpr, HAS_BIAS: tl.constexpr, ATOMIC: tl.constexpr, EVEN_KB: tl.constexpr,
    DOT_FP32: tl.constexpr,
):
    """Tiled path: program (m tile, n tile, k split) decodes (BLOCK_KB bytes x BLOCK_N) of W per step and
    runs PER_BYTE ``tl.dot``s of (BLOCK_M, BLOCK_KB) x (BLOCK_KB, BLOCK_N), float32 accumulator.

    ``DOT_FP32``: operands stay float32 and the dot is IEEE fp32 (float32 x: no TF32, so the result matches
    the fp32 spec). Otherwise the decoded weight is rounded to x's dtype (fp16/bf16) for the tensor cores;
    that is exact for codebooks of power-of-two sums spanning <= 8 (bf16) / 11 (fp16) binary places.
    Tiles are visited in GROUP_M-row groups so a column of packed tiles is reused from L2.
    """
    PER_BYTE: tl.constexpr = 8 // BITS
    CODE_MASK: tl.constexpr = (1 << BITS) - 1
    pid = tl.program_id(0)
    pid_k = tl.program_id(1)
    offs_m, offs_n = grouped_tile(pid, M, N, BLOCK_M, BLOCK_N, GROUP_M)
    m_mask = offs_m < M
    n_mask = offs_n < N
    kb_start = pid_k * KB_PER_SPLIT
    kb_end = tl.minimum(kb_start + KB_PER_SPLIT, RB)
    p_cols = packed_ptr + offs_n[None, :].to(tl.int64) * stride_pn
    x_rows = x_ptr + offs_m[:, None].to(tl.int64) * stride_xm
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for kb0 in range(kb_start, kb_end, BLOCK_KB):
        offs_b = kb0 + tl.arange(0, BLOCK_KB)
        # (BLOCK_KB, BLOCK_N) view of the packed rows: contiguous along dim 0.
        p_ptrs = p_cols + offs_b[:, None]
        if EVEN_KB:
            byts = tl.load(p_ptrs, mask=n_mask[None, :], other=0).to(tl.int32)
        else:
            byts = tl.load(p_ptrs, mask=(offs_b < kb_end)[:, None] & n_mask[None, :], other=0).to(tl.int32)
        for j in tl.static_range(PER_BYTE):
            code = (byts >> (j * BITS)) & CODE_MASK
            w = tl.load(cb_ptr + code, mask=code < num_entries, other=0.0)
            offs_k = offs_b * PER_BYTE + j
            xk = tl.load(x_rows + offs_k[None, :] * stride_xk,
                         mask=m_mask[:, None] & (offs_k < K)[None, :], other=0.0)
            if DOT_FP32:
                acc = tl.dot(xk.to(tl.float32), w, acc, input_precision="ieee")
            else:
                acc = tl.dot(xk, w.to(xk.dtype), acc)
    _epilogue(acc, bias_ptr, y_ptr, offs_m, offs_n, m_mask, n_mask, stride_ym, stride_yn, pid_k,
              HAS_BIAS, ATOMIC)


@triton.jit
def grouped_tile(pid, M, N, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, GROUP_M: tl.constexpr):
    """(row offsets, column offsets) of program ``pid``'s output tile, tiles visited in GROUP_M-row groups
    so that a column of weight tiles is reused from L2."""
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    group_size = GROUP_M * num_pid_n
    first_m = (pid // group_size) * GROUP_M
    rows_in_group = tl.minimum(num_pid_m - first_m, GROUP_M)
    pid_m = first_m + (pid % group_size) % rows_in_group
    pid_n = (pid % group_size) // rows_in_group
    return pid_m * BLOCK_M + tl.arange(0, BLOCK_M), pid_n * BLOCK_N + tl.arange(0, BLOCK_N)


@triton.jit
def _epilogue(out, bias_ptr, y_ptr, offs_m, offs_n, m_mask, n_mask, stride_ym, stride_yn, pid_k,
              HAS_BIAS: tl.constexpr, ATOMIC: tl.constexpr):
    """Add the bias (once: split 0 only) in float32, then store in y's dtype or atomically add (fp32 y)."""
    if HAS_BIAS:
        bias = tl.load(bias_ptr + offs_n, mask=n_mask, other=0.0).to(tl.float32)
        out = out + tl.where(pid_k == 0, bias, 0.0)[None, :]
    y_ptrs = y_ptr + offs_m[:, None].to(tl.int64) * stride_ym + offs_n[None, :] * stride_yn
    mask = m_mask[:, None] & n_mask[None, :]
    if ATOMIC:
        tl.atomic_add(y_ptrs, out, mask=mask)
    else:
        tl.store(y_ptrs, out.to(y_ptr.dtype.element_ty), mask=mask)
