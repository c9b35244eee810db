"""Pure-PyTorch reference ops: the specification every backend is tested against.

``codebook_linear``:  y = x @ codebook[codes].T (+ bias)
    x: (M, K) float32 | bfloat16 | float16; packed: uint8 (N, ceil(K*bits/8)) (see packing.py);
    codebook: float32 (C,), C <= 2**bits, strictly increasing; bias: (N,) float or None.
    Accumulation in float32; the result (M, N) has x's dtype.
``codebook_conv2d``: F.conv2d(x, codebook[codes].reshape(weight_shape), bias, ...) with x (B, C, H, W).

The argument checks live here too (``check_linear_args`` / ``check_conv2d_args``) and are run by the
public front end before any backend, so every backend rejects bad input with the same message.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..format.packing import SUPPORTED_BITS, row_bytes, unpack_codes

ACTIVATION_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def check_codebook(codebook: torch.Tensor, bits: int, *, full: bool = True) -> None:
    """Codebook must be float32 1-D with 1..2**bits entries; ``full`` also checks finite and increasing."""
    if bits not in SUPPORTED_BITS:
        raise ValueError(f"bits must be one of {SUPPORTED_BITS}, got {bits!r}")
    if not isinstance(codebook, torch.Tensor) or codebook.dtype != torch.float32 or codebook.dim() != 1:
        desc = (f"{codebook.dtype} of shape {tuple(codebook.shape)}" if isinstance(codebook, torch.Tensor)
                else type(codebook).__name__)
        raise ValueError(f"codebook must be a 1-D float32 tensor, got {desc}")
    if not 1 <= codebook.numel() <= 1 << bits:
        raise ValueError(f"codebook has {codebook.numel()} entries; {bits}-bit codes index 1 to {1 << bits}")
    if full:
        if not bool(torch.isfinite(codebook).all()):
            raise ValueError(f"codebook contains NaN or Inf: {codebook.tolist()}")
        if codebook.numel() > 1 and not bool((codebook[1:] > codebook[:-1]).all()):
            raise ValueError("codebook must be strictly increasing (sorted, no duplicates), got "
                             f"{codebook.tolist()}")


def check_codes_in_range(packed: torch.Tensor, bits: int, in_features: int, num_entries: int) -> None:
    """Every code must index an existing entry (only possible to violate when C < 2**bits)."""
    if num_entries >= 1 << bits or packed.numel() == 0:
        return
    top = int(unpack_codes(packed, bits, in_features).max())
    if top >= num_entries:
        raise ValueError(f"codes out of range: found code {top} but the codebook has {num_entries} entries")


def check_linear_args(x, packed, codebook, bits, in_features, bias, *, full: bool = True,
                      k_given: bool = True) -> None:
    """Validate codebook_linear arguments; raise ValueError/TypeError naming the offending argument.

    The K rule: at 2 and 4 bits a packed row of B bytes holds up to B*8/bits codes, so its width does not
    determine K (K=31 and K=32 both take 16 bytes at 4 bits). When the caller did not state K
    (``k_given=False``: no ``in_features=``), K is taken from x and must fill the rows exactly
    (K = row_bytes*8/bits); any other K needs ``in_features=K``. At 8 bits the width is K itself."""
    _check_activation(x, 2, "(M, K)")
    if x.shape[1] != in_features:
        raise ValueError(f"x has K={x.shape[1]} columns but the weight has in_features={in_features}")
    _check_weight_args(x.device, packed, codebook, bits, in_features, bias, full)
    per_byte = 8 // bits
    if not k_given and per_byte > 1 and in_features % per_byte:
        raise ValueError(f"x has K={in_features} columns, which does not fill the packed rows "
                         f"({packed.shape[1]} bytes hold {packed.shape[1] * per_byte} {bits}-bit codes): the row "
                         f"width cannot tell K={in_features} from K={packed.shape[1] * per_byte}; pass "
                         f"in_features={in_features} if the weight really has {in_features} columns")


def check_conv2d_args(x, packed, codebook, bits, weight_shape, bias, groups, *, full: bool = True) -> None:
    """Validate codebook_conv2d arguments (x (B, C, H, W); weight_shape (O, C/groups, kh, kw))."""
    _check_activation(x, 4, "(B, C, H, W)")
    if len(weight_shape) != 4 or min(weight_shape) < 1:
        raise ValueError(f"weight_shape must be 4 positive sizes (out, in/groups, kh, kw), got {tuple(weight_shape)}")
    if groups < 1 or weight_shape[0] % groups:
        raise ValueError(f"groups={groups} must be >= 1 and divide out_channels={weight_shape[0]}")
    if x.shape[1] != weight_shape[1] * groups:
        raise ValueError(f"x has {x.shape[1]} channels, expected in_channels={weight_shape[1] * groups}")
    k = weight_shape[1] * weight_shape[2] * weight_shape[3]
    _check_weight_args(x.device, packed, codebook, bits, k, bias, full)
    if packed.shape[0] != weight_shape[0]:
        raise ValueError(f"packed has {packed.shape[0]} rows, expected out_channels={weight_shape[0]}")


def _check_activation(x, ndim: int, layout: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a tensor, got {type(x).__name__}")
    if x.dtype not in ACTIVATION_DTYPES:
        raise TypeError(f"x must be float32, bfloat16 or float16, got {x.dtype}")
    if x.dim() != ndim:
        raise ValueError(f"x must be {ndim}-D {layout}, got shape {tuple(x.shape)}")


def _check_weight_args(device, packed, codebook, bits, in_features, bias, full: bool) -> None:
    for name, t in (("packed", packed), ("codebook", codebook), ("bias", bias)):
        if isinstance(t, torch.Tensor) and t.device != device:
            raise ValueError(f"{name} is on {t.device} but x is on {device}; move them to one device")
    check_codebook(codebook, bits, full=full)
    _check_packed(packed, bits, in_features)
    if bias is not None:
        if not bias.dtype.is_floating_point or bias.dim() != 1 or bias.shape[0] != packed.shape[0]:
            raise ValueError(f"bias must be a 1-D float tensor of length N={packed.shape[0]}, got "
                             f"{bias.dtype} of shape {tuple(bias.shape)}")
    if full:
        check_codes_in_range(packed, bits, in_features, codebook.numel())


def _check_packed(packed, bits: int, in_features: int) -> None:
    if not isinstance(packed, torch.Tensor) or packed.dtype != torch.uint8 or packed.dim() != 2:
        desc = (f"{packed.dtype} of shape {tuple(packed.shape)}" if isinstance(packed, torch.Tensor)
                else type(packed).__name__)
        raise ValueError(f"packed codes must be a 2-D uint8 tensor (N, row_bytes), got {desc}")
    expected = row_bytes(in_features, bits)
    if packed.shape[1] != expected:
        raise ValueError(f"packed codes have {packed.shape[1]} bytes per row, expected {expected} for "
                         f"K={in_features} at {bits} bits (codes width mismatch?)")


def decode_weight(packed: torch.Tensor, codebook: torch.Tensor, bits: int, in_features: int) -> torch.Tensor:
    """codebook[codes]: float32 (N, K)."""
    return codebook[unpack_codes(packed, bits, in_features)]


def codebook_linear(x, packed, codebook, bits: int, in_features: int, bias=None) -> torch.Tensor:
    """Reference y = x @ codebook[codes].T + bias in float32, returned in x.dtype. Shape (M, N)."""
    w = decode_weight(packed, codebook, bits, in_features)
    y = x.float() @ w.t()
    if bias is not None:
        y = y + bias.float()
    return y.to(x.dtype)


def codebook_conv2d(x, packed, codebook, bits: int, weight_shape, bias=None, stride=(1, 1),
                    padding=(0, 0), dilation=(1, 1), groups: int = 1) -> torch.Tensor:
    """Reference conv2d with the decoded weight, float32 accumulation, result in x.dtype."""
    k = weight_shape[1] * weight_shape[2] * weight_shape[3]
    w = decode_weight(packed, codebook, bits, k).reshape(list(weight_shape))
    b = bias.float() if bias is not None else None
    return F.conv2d(x.float(), w, b, list(stride), list(padding), list(dilation), groups).to(x.dtype)


def memory_format_of(x: torch.Tensor) -> torch.memory_format:
    """A WFN conv's output memory format for input x: channels_last when x is (and is not also plain
    contiguous), else contiguous, as torch's own convolutions follow their input."""
    if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format
