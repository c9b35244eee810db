"""The public functional front end: validate once (same message for every backend), then dispatch."""

from __future__ import annotations

import torch

from . import reference as ref
from .backends import Backend, BackendUnavailableError, resolve_backend


def codebook_linear(x, packed, codebook, bits: int, bias=None, *, in_features: int | None = None,
                    backend="auto", validate: bool = True) -> torch.Tensor:
    """y = x @ codebook[codes].T (+ bias).

    x: (..., K) float32/bfloat16/float16 (any strides); packed: uint8 (N, ceil(K*bits/8));
    codebook: float32 (C,), C <= 2**bits, strictly increasing; bias: (N,) or None. Returns (..., N) in
    x.dtype, accumulated in float32. ``validate=False`` skips the O(C) codebook and O(NK) code-range
    checks (modules validate once at construction); shape/dtype/device checks always run.

    ``in_features``: K of the weight. At 2 and 4 bits the packed row width does not determine K, so
    without ``in_features`` x's K must fill the packed rows exactly (K = row_bytes * 8 / bits: a
    multiple of 4 at 2 bits, of 2 at 4 bits); any other K raises unless ``in_features=K`` is passed.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a tensor, got {type(x).__name__}")
    k = x.shape[-1] if in_features is None else in_features
    lead = x.shape[:-1]
    x2 = x.reshape(-1, x.shape[-1]) if x.dim() != 2 else x
    ref.check_linear_args(x2, packed, codebook, bits, k, bias, full=validate, k_given=in_features is not None)
    b = resolve_backend(backend, x.device)
    if b is Backend.REFERENCE:
        y = ref.codebook_linear(x2, packed, codebook, bits, k, bias)
    elif b is Backend.EXTENSION:
        y = torch.ops.wfn.codebook_linear(x2.contiguous(), packed.contiguous(), codebook.contiguous(),
                                          bits, k, bias)
    else:
        y = torch.ops.wfn.codebook_linear_triton(x2.contiguous(), packed.contiguous(),
                                                 codebook.contiguous(), bits, k, bias)
    return y.reshape(*lead, y.shape[-1])


def codebook_conv2d(x, packed, codebook, bits: int, weight_shape, bias=None, stride=(1, 1), padding=(0, 0),
                    dilation=(1, 1), groups: int = 1, *, backend="auto", validate: bool = True) -> torch.Tensor:
    """conv2d(x, codebook[codes].reshape(weight_shape), bias, stride, padding, dilation, groups).

    x: (B, C, H, W) float32/bfloat16/float16; weight_shape: (O, C/groups, kh, kw); returns (B, O, H', W')
    in x.dtype, channels_last when x is. The Triton backend has no conv kernel: ``backend='triton'`` raises.
    """
    ref.check_conv2d_args(x, packed, codebook, bits, list(weight_shape), bias, groups, full=validate)
    b = resolve_backend(backend, x.device)
    args = (list(weight_shape), bias, _pair(stride), _pair(padding), _pair(dilation), groups)
    if b is Backend.REFERENCE:
        return ref.codebook_conv2d(x, packed, codebook, bits, *args)
    if b is Backend.TRITON:
        raise BackendUnavailableError("backend 'triton' has no conv2d kernel; use 'extension' or 'reference'")
    # a channels_last input stays channels_last (the output follows it, as torch's convolutions do)
    xc = x.contiguous(memory_format=ref.memory_format_of(x))
    return torch.ops.wfn.codebook_conv2d(xc, packed.contiguous(), codebook.contiguous(), bits, *args)


def _pair(v) -> list[int]:
    return [int(v), int(v)] if isinstance(v, int) else [int(i) for i in v]
