"""The int8 compute mode: the accelerator's shift-add arithmetic on the CPU's integer dot-product units.

A WFN layer's codebook values are sums of powers of two, so each is an exact integer multiple of the
layer's smallest power-of-two step ``step = 2**e``: ``int_table = values / step`` (int8 where every
entry fits [-128, 127], int16 otherwise; :func:`integer_weights`). Activations are quantised
dynamically per row of the GEMM view (per token for a linear layer, per output pixel for a conv,
:func:`quantize_rows`)::

    scale[m] = max_k |x[m, k]| / 127            (1 for an all-zero row)
    inv[m]   = 1 / scale[m]                      (float32, as torch's own quantisers: a multiply, not a divide)
    xq[m, k] = clamp(round_half_even(x[m, k] * inv[m]), -127, 127)        int8
    y_int    = xq @ int_table[codes].T                                      exact, int32
    y        = float32(y_int) * (scale[m] * step) + bias                    one rescale per output

A row holding NaN or Inf gives NaN outputs. ``K * 127 * max(255, max|int_table|) < 2**31`` keeps every
partial sum inside int32 (checked). Error against the float layer: each activation moves by at most
``scale[m] / 2``, so ``|y - y_float| <= scale[m] / 2 * sum_k |W[n, k]|`` (plus fp32 rounding of the
rescale), see :func:`error_bound`.

Ops (namespace ``wfn``; the pure-PyTorch reference below is each op's default kernel, the C++ CPU kernels
in csrc/cpu/int_linear.cpp and, for the linear layer, the Triton kernels of ops/triton/int_kernels.py are
bit-identical to it):

- ``int_linear(xq, packed, int_table, bits, in_features) -> int32``: the exact integer product. For an
  order-0 codebook it equals ``wfn::shift_add_linear`` (the multiplier-free spec) times
  ``2**(e_shift_add - e)`` (tests/test_compute_modes.py checks it).
- ``int8_linear(x, packed, int_table, bits, in_features, step, bias) -> x.dtype``
- ``int8_conv2d(x, packed, int_table, bits, weight_shape, bias, stride, padding, dilation, groups, step)``
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import torch
import torch.nn.functional as F

from ..format.packing import row_bytes, unpack_codes
from .reference import memory_format_of
from . import backends  # loads wfn_kernels._C, which registers the CPU kernels, when built

INT16_MIN, INT16_MAX = -32768, 32639  # the GEMM path splits int16 weights as 256 * hi + lo, hi in int8
ACC_LIMIT = 1 << 31

_lib = torch.library.Library("wfn", "FRAGMENT")  # noqa: TOR901 (kept alive for the process lifetime)
_lib.define("int_linear(Tensor xq, Tensor packed, Tensor int_table, int bits, int in_features) -> Tensor")
_lib.define("int8_linear(Tensor x, Tensor packed, Tensor int_table, int bits, int in_features, float step, "
            "Tensor? bias=None) -> Tensor")
_lib.define("int8_conv2d(Tensor x, Tensor packed, Tensor int_table, int bits, int[] weight_shape, Tensor? bias, "
            "int[] stride, int[] padding, int[] dilation, int groups, float step) -> Tensor")
_lib.define("int8_conv2d_post(Tensor x, Tensor packed, Tensor int_table, int bits, int[] weight_shape, Tensor? bias, "
            "int[] stride, int[] padding, int[] dilation, int groups, float step, Tensor post_scale, "
            "Tensor post_shift, bool relu) -> Tensor")


@dataclass(frozen=True)
class IntegerWeights:
    """``table`` int16 (C,): codebook / step; ``exponent``: step = 2**exponent; ``narrow``: fits int8."""

    table: torch.Tensor
    exponent: int

    @property
    def step(self) -> float:
        return 2.0 ** self.exponent

    @property
    def narrow(self) -> bool:
        return bool(self.table.numel() == 0 or (self.table.min() >= -128 and self.table.max() <= 127))

    @property
    def max_abs(self) -> int:
        return int(self.table.abs().max()) if self.table.numel() else 0


def _lowest_exponent(v: float) -> int:
    """e such that v = odd * 2**e (v != 0, finite)."""
    f = Fraction(v)
    num, den = abs(f.numerator), f.denominator
    return (num & -num).bit_length() - 1 - (den.bit_length() - 1)


def integer_weights(values: torch.Tensor, in_features: int | None = None) -> IntegerWeights:
    """The exact integer table of a codebook (see the module docstring). Raises ValueError saying why when
    the values need more than 16 bits as integers, the step is below fp32's normal range, or ``in_features``
    could overflow the int32 accumulator."""
    vals = [float(v) for v in values.detach().double().cpu().reshape(-1)]
    bad = [v for v in vals if v != v or v in (float("inf"), float("-inf"))]
    if bad:
        raise ValueError(f"the codebook holds non-finite values {bad[:3]}")
    nonzero = [v for v in vals if v != 0.0]
    if not nonzero:
        return IntegerWeights(torch.zeros(len(vals), dtype=torch.int16), 0)
    e = min(_lowest_exponent(v) for v in nonzero)
    if e < -126:
        raise ValueError(f"the smallest power-of-two step 2**{e} is below float32's normal range (2**-126)")
    ints = [int(Fraction(v) / Fraction(2) ** e) for v in vals]
    lo, hi = min(ints), max(ints)
    if lo < INT16_MIN or hi > INT16_MAX:
        span = max(abs(lo), abs(hi)).bit_length()
        raise ValueError(f"the codebook values are integers up to {max(abs(lo), abs(hi))} (a {span + 1}-bit "
                         f"range) in units of its smallest step 2**{e}; the int8 mode holds integer weights in "
                         f"[{INT16_MIN}, {INT16_MAX}] (int8 where they fit, int16 otherwise)")
    w = IntegerWeights(torch.tensor(ints, dtype=torch.int16), e)
    if in_features is not None:
        check_accumulator(in_features, w.max_abs)
    return w


def check_accumulator(in_features: int, max_abs: int) -> None:
    bound = in_features * 127 * max(255, max_abs)
    if bound >= ACC_LIMIT:
        raise ValueError(f"in_features={in_features} with integer weights up to {max_abs} could overflow the int32 "
                         f"accumulator (K * 127 * max(255, max|w|) = {bound} >= 2**31)")


def quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-row symmetric int8 quantisation of a 2-D float tensor: (xq int8, scale float32 (M,), bad bool (M,))
    with x[m] ~= xq[m] * scale[m]; ``bad`` marks rows holding NaN/Inf (their xq is 0, scale 1)."""
    xf = x.float()
    bad = ~torch.isfinite(xf).all(dim=1) if xf.shape[1] else torch.zeros(xf.shape[0], dtype=torch.bool)
    amax = xf.abs().amax(dim=1) if xf.shape[1] else torch.zeros(xf.shape[0])
    amax = torch.where(bad, torch.zeros_like(amax), amax)
    scale = torch.where(amax > 0, amax / 127, torch.ones_like(amax))
    inv = 1.0 / scale  # float32, then one multiply per element (the kernels do the same operations)
    xq = torch.clamp(torch.round(xf * inv[:, None]), -127, 127)
    xq = torch.where(bad[:, None], torch.zeros_like(xq), xq).to(torch.int8)
    return xq, scale, bad


def int_linear_reference(xq, packed, int_table, bits: int, in_features: int) -> torch.Tensor:
    """Exact integer product xq @ int_table[codes].T (int64 arithmetic), returned as int32."""
    w = int_table.to(torch.int64)[unpack_codes(packed, bits, in_features)]
    y = xq.to(torch.int64) @ w.t()
    if y.numel() and int(y.abs().max()) >= ACC_LIMIT:
        raise ValueError("int_linear: the product overflows int32")
    return y.to(torch.int32)


def int8_linear_reference(x, packed, int_table, bits: int, in_features: int, step: float, bias=None,
                          product=None):
    """The int8 mode around an integer product (``product(xq, packed, int_table, bits, K) -> int32``; default
    the reference, the Triton backend passes its kernel so that both rescale identically)."""
    xq, scale, bad = quantize_rows(x)
    y = (product or int_linear_reference)(xq, packed, int_table, bits, in_features).float() * (scale * step)[:, None]
    if bias is not None:
        y = y + bias.float()
    y = torch.where(bad[:, None], torch.full_like(y, float("nan")), y)
    return y.to(x.dtype)


def int8_conv2d_reference(x, packed, int_table, bits, weight_shape, bias, stride, padding, dilation, groups, step):
    if groups != 1:
        raise ValueError(f"the int8 conv supports groups=1 only, got groups={groups}")
    b, _, h, w = x.shape
    kh, kw = weight_shape[2], weight_shape[3]
    oh = (h + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    ow = (w + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    k = weight_shape[1] * kh * kw
    cols = F.unfold(x.float(), (kh, kw), dilation, padding, stride)  # (B, K, L), (c, kh, kw)-major
    xm = cols.transpose(1, 2).reshape(-1, k)
    y = int8_linear_reference(xm, packed, int_table, bits, k, step, bias)
    y = y.view(b, oh * ow, -1).transpose(1, 2).reshape(b, -1, oh, ow).to(x.dtype)
    return y.contiguous(memory_format=memory_format_of(x))


_lib.impl("int_linear", int_linear_reference, "CompositeExplicitAutograd")
_lib.impl("int8_linear", int8_linear_reference, "CompositeExplicitAutograd")
def apply_post(y: torch.Tensor, post_scale, post_shift, relu: bool) -> torch.Tensor:
    """The conv epilogue of a folded eval BatchNorm (+ ReLU): y * scale[c] + shift[c] (two roundings: multiply,
    then add), then max(y, 0) with relu (NaN stays NaN)."""
    if post_scale is not None:
        shape = (1, -1) + (1,) * (y.dim() - 2)
        y = y.float() * post_scale.float().view(shape)
        y = y + post_shift.float().view(shape)
    return y.clamp_min(0) if relu else y


def int8_conv2d_post_reference(x, packed, int_table, bits, weight_shape, bias, stride, padding, dilation, groups, step,
                               post_scale, post_shift, relu):
    y = int8_conv2d_reference(x.float(), packed, int_table, bits, weight_shape, bias, stride, padding, dilation,
                              groups, step)
    return apply_post(y, post_scale, post_shift, relu).to(x.dtype).contiguous(memory_format=memory_format_of(x))


_lib.impl("int8_conv2d", int8_conv2d_reference, "CompositeExplicitAutograd")
_lib.impl("int8_conv2d_post", int8_conv2d_post_reference, "CompositeExplicitAutograd")


@torch.library.register_fake("wfn::int_linear")
def _int_linear_fake(xq, packed, int_table, bits, in_features):
    return xq.new_empty(xq.shape[0], packed.shape[0], dtype=torch.int32)


@torch.library.register_fake("wfn::int8_linear")
def _int8_linear_fake(x, packed, int_table, bits, in_features, step, bias=None):
    return x.new_empty(x.shape[0], packed.shape[0])


@torch.library.register_fake("wfn::int8_conv2d")
def _int8_conv2d_fake(x, packed, int_table, bits, weight_shape, bias, stride, padding, dilation, groups, step):
    out_hw = [(x.shape[2 + i] + 2 * padding[i] - dilation[i] * (weight_shape[2 + i] - 1) - 1) // stride[i] + 1
              for i in range(2)]
    return torch.empty(x.shape[0], weight_shape[0], *out_hw, dtype=x.dtype, device=x.device,
                       memory_format=memory_format_of(x))


@torch.library.register_fake("wfn::int8_conv2d_post")
def _int8_conv2d_post_fake(x, packed, int_table, bits, weight_shape, bias, stride, padding, dilation, groups, step,
                           post_scale, post_shift, relu):
    return _int8_conv2d_fake(x, packed, int_table, bits, weight_shape, bias, stride, padding, dilation, groups, step)


def _check(packed, int_table, bits: int, in_features: int) -> None:
    if not isinstance(packed, torch.Tensor) or packed.dtype != torch.uint8 or packed.dim() != 2:
        raise ValueError(f"packed codes must be a 2-D uint8 tensor (N, row_bytes), got {_describe(packed)}")
    if packed.shape[1] != row_bytes(in_features, bits):
        raise ValueError(f"packed codes have {packed.shape[1]} bytes per row, expected "
                         f"{row_bytes(in_features, bits)} for K={in_features} at {bits} bits")
    if not isinstance(int_table, torch.Tensor) or int_table.dtype != torch.int16 or int_table.dim() != 1:
        raise ValueError(f"int_table must be a 1-D int16 tensor, got {_describe(int_table)}")
    if not 1 <= int_table.numel() <= 1 << bits:
        raise ValueError(f"int_table has {int_table.numel()} entries; {bits}-bit codes index 1 to {1 << bits}")
    check_accumulator(in_features, int(int_table.abs().max()))


def int_linear(xq, packed, int_table, bits: int, in_features: int, *, backend="auto") -> torch.Tensor:
    """The exact integer product ``xq @ int_table[codes].T`` (int32), xq int8 (M, K)."""
    if not isinstance(xq, torch.Tensor) or xq.dtype != torch.int8 or xq.dim() != 2:
        raise ValueError(f"xq must be a 2-D int8 tensor (M, K), got {_describe(xq)}")
    if xq.shape[1] != in_features:
        raise ValueError(f"xq has K={xq.shape[1]} columns but the weight has in_features={in_features}")
    _check(packed, int_table, bits, in_features)
    b = backends.resolve_backend(backend, xq.device)
    if b is backends.Backend.REFERENCE:
        return int_linear_reference(xq, packed, int_table, bits, in_features)
    if b is backends.Backend.TRITON:
        return _triton_product()(xq, packed, int_table, bits, in_features)
    return torch.ops.wfn.int_linear(xq.contiguous(), packed.contiguous(), int_table, bits, in_features)


def int8_linear(x, packed, int_table, bits: int, step: float, bias=None, *, in_features: int | None = None,
                backend="auto") -> torch.Tensor:
    """int8-mode linear layer ``(..., K) -> (..., N)`` in x's dtype (see the module docstring)."""
    if not isinstance(x, torch.Tensor) or not x.dtype.is_floating_point:
        raise ValueError(f"x must be a float tensor, got {_describe(x)}")
    k = x.shape[-1] if in_features is None else in_features
    if x.shape[-1] != k:
        raise ValueError(f"x has {x.shape[-1]} features but the layer has in_features={k}")
    _check(packed, int_table, bits, k)
    x2 = x.reshape(-1, k)
    b = backends.resolve_backend(backend, x.device)
    if b is backends.Backend.REFERENCE:
        y = int8_linear_reference(x2, packed, int_table, bits, k, step, bias)
    elif b is backends.Backend.TRITON:
        y = int8_linear_reference(x2, packed, int_table, bits, k, step, bias, product=_triton_product())
    else:
        y = torch.ops.wfn.int8_linear(x2.contiguous(), packed.contiguous(), int_table, bits, k, float(step), bias)
    return y.reshape(*x.shape[:-1], y.shape[-1])


def int8_conv2d(x, packed, int_table, bits: int, weight_shape, step: float, bias=None, stride=(1, 1),
                padding=(0, 0), dilation=(1, 1), groups: int = 1, *, backend="auto", post_scale=None,
                post_shift=None, relu: bool = False) -> torch.Tensor:
    """int8-mode conv2d (per-output-pixel activation quantisation, groups=1). ``post_scale`` / ``post_shift``
    (out_channels,) and ``relu``: the epilogue of a folded eval BatchNorm and ReLU (:func:`apply_post`)."""
    if not isinstance(x, torch.Tensor) or not x.dtype.is_floating_point or x.dim() != 4:
        raise ValueError(f"x must be a 4-D float tensor (B, C, H, W), got {_describe(x)}")
    k = weight_shape[1] * weight_shape[2] * weight_shape[3]
    _check(packed, int_table, bits, k)
    args = (list(weight_shape), bias, _pair(stride), _pair(padding), _pair(dilation), int(groups), float(step))
    post = None
    if post_scale is not None or post_shift is not None or relu:
        n = weight_shape[0]
        if post_scale is None:
            post_scale, post_shift = torch.ones(n, device=x.device), torch.zeros(n, device=x.device)
        for name, t in (("post_scale", post_scale), ("post_shift", post_shift)):
            if not isinstance(t, torch.Tensor) or t.dim() != 1 or t.numel() != n or not t.dtype.is_floating_point:
                raise ValueError(f"{name} must be a 1-D float tensor of out_channels={n} values, got {_describe(t)}")
        post = (post_scale.float(), post_shift.float(), bool(relu))
    if backends.resolve_backend(backend, x.device) is backends.Backend.REFERENCE:
        if post is not None:
            return int8_conv2d_post_reference(x, packed, int_table, bits, *args, *post)
        return int8_conv2d_reference(x, packed, int_table, bits, *args)
    _no_triton(backend, x.device)
    xc = x.contiguous(memory_format=memory_format_of(x))
    if post is not None:
        return torch.ops.wfn.int8_conv2d_post(xc, packed.contiguous(), int_table, bits, *args, *post)
    return torch.ops.wfn.int8_conv2d(xc, packed.contiguous(), int_table, bits, *args)


def error_bound(x: torch.Tensor, dense_weight: torch.Tensor) -> torch.Tensor:
    """Worst-case |int8 mode - exact| per output of a linear layer (M, N): the activation rounding
    (scale / 2 per element) times sum_k |W[n, k]|; the float32 x * (1 / scale) before rounding (relative
    error < 2**-22 per element, so |x| @ |W|.T * 2**-22 more); the fp32 rescale's relative 2**-23."""
    xf = x.reshape(-1, x.shape[-1]).float()
    _, scale, _ = quantize_rows(xf)
    wd = dense_weight.double()
    exact = (xf.double() @ wd.t()).abs()
    return ((scale.double()[:, None] / 2) * wd.abs().sum(1)[None, :] + (xf.double().abs() @ wd.abs().t()) * 2.0 ** -22
            + exact * 2.0 ** -22)


def _no_triton(backend, device) -> None:
    if backends.Backend.parse(backend) is backends.Backend.TRITON:
        raise backends.BackendUnavailableError("backend 'triton' has no int8-mode conv2d kernel; use 'extension' "
                                               "or 'reference'")


def _triton_product():
    from . import triton as _wt  # noqa: F401 (registers wfn::int_linear_triton)

    return torch.ops.wfn.int_linear_triton


def _pair(v) -> list[int]:
    return [int(v), int(v)] if isinstance(v, int) else [int(i) for i in v]


def _describe(t) -> str:
    return f"{t.dtype} of shape {tuple(t.shape)}" if isinstance(t, torch.Tensor) else type(t).__name__
