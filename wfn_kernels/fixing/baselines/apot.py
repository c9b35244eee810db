"""APoT-style per-layer quantisation baseline (Li, Dong & Wang, "Additive Powers-of-Two Quantization",
ICLR 2020), measured with the same metrics as WFN on the same model.

Levels: APoT's ``build_power_value(B, additive=True)`` for B = bits - 1 magnitude bits and a sign bit:
  5-bit (B = 4): {0, 2^-1, 2^-3, 2^-5} + {0, 2^-2, 2^-4, 2^-6}  -> 16 magnitudes;
  4-bit (B = 3): {0, 2^-1, 2^-2, 2^-4} + {0, 2^-3}  -> 8 magnitudes;   3-bit (B = 2): {0, 2^-1, 2^-2, 2^-3}
normalised by their maximum, signed, and scaled by a per-layer clipping value α. So each layer holds at
most 2·8 - 1 = 15 (4-bit) or 7 (3-bit) values, but every layer has its own α: whole-network unique
values grow with the layer count, which is exactly what WFN's single shared codebook avoids.

Differences from APoT, by choice (documented, not hidden): α is fitted per layer by minimising the
quantisation MSE (APoT learns it), weights are not re-normalised, activations stay float, and the first
and last layers use the same bit width (APoT keeps them at 8 bits). Biases and BatchNorm stay float, as
in APoT. An optional short straight-through fine-tune (α fixed) recovers accuracy.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from ._ste import attach, finetune_and_freeze

ALPHA_GRID = torch.linspace(0.2, 1.0, 81)  # α candidates as fractions of max |w|


def apot_levels(bits: int) -> torch.Tensor:
    """Normalised non-negative APoT magnitudes (sorted, max 1) for a ``bits``-bit signed weight."""
    if bits == 5:
        a, b = [0.0, 2 ** -1, 2 ** -3, 2 ** -5], [0.0, 2 ** -2, 2 ** -4, 2 ** -6]
    elif bits == 4:
        a, b = [0.0, 2 ** -1, 2 ** -2, 2 ** -4], [0.0, 2 ** -3]
    elif bits == 3:
        a, b = [0.0, 2 ** -1, 2 ** -2, 2 ** -3], [0.0]
    else:
        raise ValueError(f"apot_levels: only 3-, 4- and 5-bit APoT levels are defined here, got {bits}")
    vals = torch.unique(torch.tensor([x + y for x in a for y in b], dtype=torch.float64))
    return (vals / vals.max()).float()


def quantize(w: torch.Tensor, alpha: float, levels: torch.Tensor) -> torch.Tensor:
    """sign(w)·α·(nearest level to clamp(|w|/α, 0, 1)); same shape and dtype as w."""
    mag = (w.abs() / alpha).clamp(max=1.0)
    idx = torch.argmin((mag.reshape(-1, 1) - levels.to(w.dtype)).abs(), dim=1).reshape(w.shape)
    return torch.sign(w) * alpha * levels.to(w.dtype)[idx]


def fit_alpha(w: torch.Tensor, levels: torch.Tensor) -> float:
    """The α (from ALPHA_GRID·max|w|) that minimises the squared quantisation error of w."""
    top = float(w.detach().abs().max())
    if top == 0:
        return 1.0
    errs = [float(((quantize(w.detach(), top * float(s), levels) - w.detach()) ** 2).sum()) for s in ALPHA_GRID]
    return top * float(ALPHA_GRID[int(torch.tensor(errs).argmin())])


def apot_attach(model: nn.Module, bits: int = 4) -> tuple[nn.Module, list[nn.Module]]:
    """(a copy of ``model`` with an APoT straight-through quantiser on every Linear / Conv weight, α fitted
    per layer, the layers); see _ste.attach."""
    levels = apot_levels(bits)
    return attach(model, lambda w: partial(quantize, alpha=fit_alpha(w, levels), levels=levels))


def apot_quantize(model: nn.Module, bits: int = 4, train_loader=None, epochs: int = 0, lr: float = 1e-4,
                  seed: int = 0) -> nn.Module:
    """A copy of ``model`` whose Linear/Conv weights are APoT-quantised per layer (optionally fine-tuned
    with a straight-through estimator for ``epochs`` epochs of Adam at ``lr``)."""
    q, layers = apot_attach(model, bits)
    return finetune_and_freeze(q, layers, train_loader, epochs, lr, seed, "apot_quantize")
