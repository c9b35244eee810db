"""The bf16 compute mode: activations rounded to bf16 once, weights exact, fp32 accumulation.

A sum of powers of two with at most 8 significant bits (and an exponent in bf16's range) is exactly a
bf16 number, so a WFN layer's weights lose nothing in bf16; :func:`bf16_inexact_values` lists the values
of a codebook that are not (the mode refuses those layers). Only the activations are rounded (round to
nearest even, relative error <= 2**-9), so ``|y - y_float| <= 2**-9 * sum_k |x[m, k]| |W[n, k]|`` plus
fp32 accumulation, and, on the paths that run oneDNN's bf16 GEMM / convolution (large M and convs on CPUs
without AMX, most convs with it), one more bf16 rounding of the output (relative 2**-9): :func:`error_bound`.
The AMX tile path (large M on CPUs with AMX) keeps the fp32 output.

Ops (namespace ``wfn``, pure-PyTorch reference as default kernel, C++ CPU kernels in
csrc/cpu/bf16_linear.cpp; the linear layer also on Triton, ops/triton/mode_ops.py, float32 output there):

- ``bf16_linear(x, packed, codebook, bits, in_features, bias) -> x.dtype``
- ``bf16_conv2d(x, packed, codebook, bits, weight_shape, bias, stride, padding, dilation, groups)``
- ``bf16_conv2d_hwc(...)``: the same with each output channel's codes in (kh, kw, C) order (:func:`hwc_codes`),
  which WFNConv2d uses for channels_last inputs on CPUs with bf16 arithmetic: the decoded weight is then
  channels_last as it is, and oneDNN's channels_last conv reads it without a copy.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import backends
from . import reference as ref
from .reference import memory_format_of

_lib = torch.library.Library("wfn", "FRAGMENT")  # noqa: TOR901 (kept alive for the process lifetime)
_lib.define("bf16_linear(Tensor x, Tensor packed, Tensor codebook, int bits, int in_features, "
            "Tensor? bias=None) -> Tensor")
_CONV_ARGS = ("(Tensor x, Tensor packed, Tensor codebook, int bits, int[] weight_shape, Tensor? bias, int[] stride, "
              "int[] padding, int[] dilation, int groups) -> Tensor")
_lib.define("bf16_conv2d" + _CONV_ARGS)
_lib.define("bf16_conv2d_hwc" + _CONV_ARGS)


def bf16_inexact_values(codebook: torch.Tensor) -> list[float]:
    """The codebook values that bf16 cannot hold exactly (empty when the bf16 mode keeps weights exact)."""
    c = codebook.detach().float().cpu()
    return c[c.bfloat16().float() != c].tolist()


def bf16_linear_reference(x, packed, codebook, bits: int, in_features: int, bias=None):
    w = ref.decode_weight(packed, codebook, bits, in_features)
    y = x.bfloat16().float() @ w.t()
    if bias is not None:
        y = y + bias.float()
    return y.to(x.dtype)


def hwc_codes(codes: torch.Tensor, weight_shape) -> torch.Tensor:
    """Canonical (O, C * kh * kw) codes -> each row in (kh, kw, C) order (the channels_last weight's order)."""
    o, c, kh, kw = weight_shape
    return codes.reshape(o, c, kh, kw).permute(0, 2, 3, 1).reshape(o, -1)


def codes_from_hwc(codes: torch.Tensor, weight_shape) -> torch.Tensor:
    """Inverse of :func:`hwc_codes`."""
    o, c, kh, kw = weight_shape
    return codes.reshape(o, kh, kw, c).permute(0, 3, 1, 2).reshape(o, -1)


def bf16_conv2d_hwc_reference(x, packed, codebook, bits, weight_shape, bias, stride, padding, dilation, groups):
    o, c, kh, kw = weight_shape
    w = ref.decode_weight(packed, codebook, bits, c * kh * kw).reshape(o, kh, kw, c).permute(0, 3, 1, 2)
    return _conv_reference(x, w, bias, stride, padding, dilation, groups)


def bf16_conv2d_reference(x, packed, codebook, bits, weight_shape, bias, stride, padding, dilation, groups):
    k = weight_shape[1] * weight_shape[2] * weight_shape[3]
    w = ref.decode_weight(packed, codebook, bits, k).reshape(weight_shape)
    return _conv_reference(x, w, bias, stride, padding, dilation, groups)


def _conv_reference(x, w, bias, stride, padding, dilation, groups):
    y = F.conv2d(x.bfloat16().float(), w, None if bias is None else bias.float(), stride, padding, dilation, groups)
    return y.to(x.dtype).contiguous(memory_format=memory_format_of(x))


_lib.impl("bf16_linear", bf16_linear_reference, "CompositeExplicitAutograd")
_lib.impl("bf16_conv2d", bf16_conv2d_reference, "CompositeExplicitAutograd")
_lib.impl("bf16_conv2d_hwc", bf16_conv2d_hwc_reference, "CompositeExplicitAutograd")


@torch.library.register_fake("wfn::bf16_linear")
def _bf16_linear_fake(x, packed, codebook, bits, in_features, bias=None):
    return x.new_empty(x.shape[0], packed.shape[0])


@torch.library.register_fake("wfn::bf16_conv2d")
@torch.library.register_fake("wfn::bf16_conv2d_hwc")
def _bf16_conv2d_fake(x, packed, codebook, bits, weight_shape, bias, stride, padding, dilation, groups):
    out_hw = [(x.shape[2 + i] + 2 * padding[i] - dilation[i] * (weight_shape[2 + i] - 1) - 1) // stride[i] + 1
              for i in range(2)]
    return torch.empty(x.shape[0], weight_shape[0], *out_hw, dtype=x.dtype, device=x.device,
                       memory_format=memory_format_of(x))


def _check_exact(codebook) -> None:
    bad = bf16_inexact_values(codebook)
    if bad:
        raise ValueError(f"codebook values {bad[:5]} are not exactly representable in bfloat16 (the bf16 mode keeps "
                         "weights exact)")


def bf16_linear(x, packed, codebook, bits: int, bias=None, *, in_features: int | None = None, backend="auto"):
    """bf16-mode linear layer ``(..., K) -> (..., N)`` in x's dtype (see the module docstring)."""
    k = x.shape[-1] if in_features is None else in_features
    x2 = x.reshape(-1, x.shape[-1]) if isinstance(x, torch.Tensor) and x.dim() != 2 else x
    ref.check_linear_args(x2, packed, codebook, bits, k, bias, full=True)
    _check_exact(codebook)
    b = backends.resolve_backend(backend, x.device)
    if b is backends.Backend.REFERENCE:
        y = bf16_linear_reference(x2, packed, codebook, bits, k, bias)
    elif b is backends.Backend.TRITON:
        from . import triton as _wt  # noqa: F401 (registers wfn::bf16_linear_triton)

        y = torch.ops.wfn.bf16_linear_triton(x2, packed, codebook, bits, k, bias)
    else:
        y = torch.ops.wfn.bf16_linear(x2.contiguous(), packed.contiguous(), codebook.contiguous(), bits, k, bias)
    return y.reshape(*x.shape[:-1], y.shape[-1])


def bf16_conv2d(x, packed, codebook, bits: int, weight_shape, bias=None, stride=(1, 1), padding=(0, 0),
                dilation=(1, 1), groups: int = 1, *, backend="auto"):
    """bf16-mode conv2d."""
    ref.check_conv2d_args(x, packed, codebook, bits, list(weight_shape), bias, groups, full=True)
    _check_exact(codebook)
    args = (list(weight_shape), bias, _pair(stride), _pair(padding), _pair(dilation), int(groups))
    b = backends.resolve_backend(backend, x.device)
    if b is backends.Backend.REFERENCE:
        return bf16_conv2d_reference(x, packed, codebook, bits, *args)
    if b is backends.Backend.TRITON:
        raise backends.BackendUnavailableError("backend 'triton' has no conv2d kernel; use 'extension' or 'reference'")
    return torch.ops.wfn.bf16_conv2d(x.contiguous(memory_format=memory_format_of(x)), packed.contiguous(),
                                     codebook.contiguous(), bits, *args)


def error_bound(x: torch.Tensor, dense_weight: torch.Tensor, output_rounding: bool = True) -> torch.Tensor:
    """Worst-case |bf16 mode - exact| per output of a linear layer (M, N)."""
    xf = x.reshape(-1, x.shape[-1]).double()
    mag = xf.abs() @ dense_weight.double().abs().t()
    exact = (xf @ dense_weight.double().t()).abs()
    k = x.shape[-1]
    bound = mag * (2.0 ** -9 + k * 2.0 ** -23)  # activation rounding + fp32 accumulation (K * eps)
    if output_rounding:
        bound = bound + (exact + bound) * 2.0 ** -8
    return bound


def _pair(v) -> list[int]:
    return [int(v), int(v)] if isinstance(v, int) else [int(i) for i in v]
