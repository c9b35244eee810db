"""Multiplier-free integer linear layer for order-0 power-of-two codebooks.

When every codebook value is 0 or +-2**e (an order-0 WFN codebook), ``x @ W.T`` on integer activations
needs no multiplier: each product is the activation shifted left. This module defines the format, the
op ``wfn::shift_add_linear`` and helpers.

Format (:class:`ShiftAddWeight`): 4-bit codes packed like ``packing.pack_codes(codes, 4)``, i.e. uint8
``(N, ceil(K/2))``, element 2j in the low nibble of byte j. For a code ``c``::

    c & 7 == 0       -> weight 0                    (codes 0 and 8)
    c & 7 == s >= 1  -> weight (-1 if c & 8 else +1) * 2**(e_min + s - 1)

so a layer's exponents must span at most 7 consecutive values (e_max - e_min <= 6).

Op: ``y = shift_add_linear(x, w)`` with x int8 (M, K) returns int32 (M, N) with
``y * 2**w.e_min == x @ W.T`` exactly (K * 128 * 64 < 2**31 keeps every partial sum inside int32; K
above that is rejected). ``w.scale == 2**e_min``. The C++ CPU kernel (csrc/cpu/shift_add.cpp) uses
shifts, adds and table shuffles only; the pure-PyTorch default kernel below is the integer reference.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..format.codebook import Codebook
from ..format.packing import PackedWeight, pack_codes, unpack_codes
from . import backends  # loads wfn_kernels._C, which registers the CPU kernel, when built

MAX_SHIFT = 6  # codes carry 3 magnitude bits: shifts 0..6, plus the zero code
MAX_IN_FEATURES = (1 << 31) // (128 << MAX_SHIFT) - 1  # |x| <= 128, |w| <= 2**6: int32 never overflows

_lib = torch.library.Library("wfn", "FRAGMENT")  # noqa: TOR901 (kept alive for the process lifetime)
_lib.define("shift_add_linear(Tensor x, Tensor packed, int in_features) -> Tensor")


@dataclass(frozen=True)
class ShiftAddWeight:
    """Shift-add weight: ``packed`` uint8 (N, ceil(K/2)) codes (format in the module docstring),
    ``e_min`` the exponent of code magnitude 1, ``in_features`` K."""

    packed: torch.Tensor
    e_min: int
    in_features: int

    @property
    def out_features(self) -> int:
        return int(self.packed.shape[0])

    @property
    def scale(self) -> float:
        """2**e_min: ``shift_add_linear(x, w) * scale == x @ W.T``."""
        return 2.0 ** self.e_min

    def dense(self) -> torch.Tensor:
        """The float64 weight (N, K) these codes encode (exact)."""
        return decode_shift_add_codes(unpack_codes(self.packed, 4, self.in_features)).double() * self.scale


def encode_shift_add(codebook: Codebook | torch.Tensor, codes: torch.Tensor | PackedWeight) -> ShiftAddWeight:
    """Re-encode codebook indices into the shift-add format.

    ``codebook``: a :class:`Codebook` or float tensor of values (C,); ``codes``: int tensor (N, K) of
    indices into it, or a :class:`PackedWeight` (its local codebook must then be ``codebook``'s values).
    Raises ValueError when a value is not 0 or +-2**e (the codebook is not order-0) or the exponents span
    more than 7 values.
    """
    values = codebook.values if isinstance(codebook, Codebook) else torch.as_tensor(codebook)
    values = values.detach().to(torch.float64).cpu().reshape(-1)
    if isinstance(codes, PackedWeight):
        if codes.codebook.numel() != values.numel() or not torch.equal(codes.codebook.double().cpu(), values):
            raise ValueError("encode_shift_add: the PackedWeight's local codebook differs from `codebook`")
        codes = unpack_codes(codes.packed, codes.bits, codes.in_features).reshape(codes.shape[0], -1)
    if not isinstance(codes, torch.Tensor) or codes.dim() != 2 or codes.dtype.is_floating_point:
        raise ValueError(f"encode_shift_add: codes must be a 2-D integer tensor (N, K), got {_describe(codes)}")
    table, e_min = _code_table(values)
    if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= values.numel()):
        raise ValueError(f"encode_shift_add: codes must lie in [0, {values.numel()}), got range "
                         f"[{int(codes.min())}, {int(codes.max())}]")
    sa_codes = table[codes.to(torch.int64).cpu()]
    return ShiftAddWeight(pack_codes(sa_codes, 4), e_min, int(codes.shape[1]))


def _code_table(values: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Shift-add code of each codebook value, and e_min."""
    nonzero = values[values != 0]
    if nonzero.numel() == 0:
        return torch.zeros(values.numel(), dtype=torch.int64), 0
    mant, exp = torch.frexp(nonzero.abs())  # |v| = mant * 2**exp, mant in [0.5, 1)
    bad = mant != 0.5
    if bool(bad.any()):
        raise ValueError("encode_shift_add: the codebook is not order-0 (every value must be 0 or +-2**e); "
                         f"offending values {nonzero[bad].tolist()[:5]}")
    exps = exp - 1
    e_min, e_max = int(exps.min()), int(exps.max())
    if e_max - e_min > MAX_SHIFT:
        raise ValueError(f"encode_shift_add: exponents span 2**{e_min}..2**{e_max}; the 4-bit shift-add "
                         f"format holds at most {MAX_SHIFT + 1} consecutive exponents")
    table = torch.zeros(values.numel(), dtype=torch.int64)
    nz_codes = (exps - e_min + 1) | torch.where(nonzero < 0, 8, 0)
    table[values != 0] = nz_codes.to(torch.int64)
    return table, e_min


def decode_shift_add_codes(codes: torch.Tensor) -> torch.Tensor:
    """Integer weight (in units of 2**e_min) of each shift-add code: int64, same shape."""
    c = codes.to(torch.int64)
    s = c & 7
    mag = torch.where(s > 0, torch.ones_like(c) << (s - 1).clamp(min=0), torch.zeros_like(c))
    return torch.where((c & 8) != 0, -mag, mag)


def check_shift_add_args(x, packed, in_features: int) -> None:
    """Validate shift_add_linear arguments (same messages for every backend)."""
    if not isinstance(x, torch.Tensor) or x.dtype != torch.int8 or x.dim() != 2:
        raise ValueError(f"x must be a 2-D int8 tensor (M, K), got {_describe(x)}")
    if x.shape[1] != in_features:
        raise ValueError(f"x has K={x.shape[1]} columns but the weight has in_features={in_features}")
    expected = (in_features + 1) // 2
    if (not isinstance(packed, torch.Tensor) or packed.dtype != torch.uint8 or packed.dim() != 2
            or packed.shape[1] != expected):
        raise ValueError(f"packed shift-add codes must be a 2-D uint8 tensor (N, {expected}), "
                         f"got {_describe(packed)}")
    if packed.device != x.device:
        raise ValueError(f"packed is on {packed.device} but x is on {x.device}; move them to one device")
    if in_features > MAX_IN_FEATURES:
        raise ValueError(f"in_features={in_features} could overflow the int32 accumulator "
                         f"(at most {MAX_IN_FEATURES})")


def shift_add_linear_reference(x: torch.Tensor, packed: torch.Tensor, in_features: int) -> torch.Tensor:
    """Integer reference: int32 (M, N) = x @ W_int.T, computed in int64 and checked to fit."""
    w = decode_shift_add_codes(unpack_codes(packed, 4, in_features))
    y = x.to(torch.int64) @ w.t()
    return y.to(torch.int32)


_lib.impl("shift_add_linear", shift_add_linear_reference, "CompositeExplicitAutograd")


@torch.library.register_fake("wfn::shift_add_linear")
def _shift_add_linear_fake(x, packed, in_features):
    torch._check(x.dim() == 2, lambda: f"x must be 2-D, got {x.dim()}-D")
    return x.new_empty(x.shape[0], packed.shape[0], dtype=torch.int32)


def shift_add_linear(x: torch.Tensor, weight: ShiftAddWeight, *, backend="auto") -> torch.Tensor:
    """int32 (..., N) accumulator y with ``y * weight.scale == x @ W.T`` exactly; x int8 (..., K).

    ``backend``: ``auto``/``extension`` run ``torch.ops.wfn.shift_add_linear`` (the C++ kernel on CPU
    when built, else the registered default), ``reference`` the pure-PyTorch integer reference.
    """
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"x must be a 2-D int8 tensor (M, K), got {_describe(x)}")
    lead = x.shape[:-1]
    x2 = x.reshape(-1, x.shape[-1]) if x.dim() != 2 else x
    check_shift_add_args(x2, weight.packed, weight.in_features)
    b = backends.resolve_backend(backend, x.device)
    if b is backends.Backend.REFERENCE:
        y = shift_add_linear_reference(x2, weight.packed, weight.in_features)
    elif b is backends.Backend.EXTENSION:
        y = torch.ops.wfn.shift_add_linear(x2.contiguous(), weight.packed.contiguous(), weight.in_features)
    else:
        raise backends.BackendUnavailableError("backend 'triton' has no shift_add_linear kernel; use 'extension' "
                                          "or 'reference'")
    return y.reshape(*lead, y.shape[-1])


def quantize_activations_int8(x: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Symmetric per-tensor int8 quantisation: (x_int8, scale) with x ~= x_int8 * scale.

    Pairs with :func:`shift_add_linear`: ``x @ W.T ~= shift_add_linear(x_int8, w) * (scale * w.scale)``.
    """
    amax = float(x.detach().abs().max()) if x.numel() else 0.0
    scale = amax / 127.0 if amax > 0 else 1.0
    return torch.clamp(torch.round(x / scale), -127, 127).to(torch.int8), scale


def _describe(t) -> str:
    return f"{t.dtype} of shape {tuple(t.shape)}" if isinstance(t, torch.Tensor) else type(t).__name__
