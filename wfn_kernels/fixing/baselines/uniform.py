"""Uniform symmetric per-output-channel quantisation: the most common deployed weight quantiser (e.g. what
int4/int8 weight-only kernels store), measured with the same counting function and fine-tuning budget as
WFN and APoT.

Each output channel c of a Linear / Conv weight gets a scale s_c and integer levels
{-(2^(b-1) - 1), ..., 2^(b-1) - 1}·s_c (symmetric, no zero point; 15 levels at 4 bits). s_c is fitted per
channel by minimising the squared quantisation error over clipping values α = f·max|w_c| (f on a grid),
s_c = α / (2^(b-1) - 1). Biases and BatchNorm stay float. Every channel has its own scale, so the
whole-network unique count grows with the channel count.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from ._ste import attach, finetune_and_freeze

CLIP_GRID = torch.linspace(0.3, 1.0, 71)  # α candidates as fractions of each channel's max |w|


def quantize_per_channel(w: torch.Tensor, scale: torch.Tensor, bits: int) -> torch.Tensor:
    """round(w / s_c) clamped to ±(2^(b-1) - 1), times s_c; ``scale`` has one entry per output channel."""
    qmax = 2 ** (bits - 1) - 1
    s = scale.to(w.dtype).reshape(-1, *([1] * (w.dim() - 1)))
    return torch.clamp(torch.round(w / s), -qmax, qmax) * s


def fit_scales(w: torch.Tensor, bits: int) -> torch.Tensor:
    """Per-output-channel scales minimising the squared error of quantize_per_channel (zero rows: 1)."""
    if not 2 <= bits <= 8:
        raise ValueError(f"uniform quantisation needs 2 <= bits <= 8, got {bits}")
    w = w.detach().reshape(w.shape[0], -1)
    top = w.abs().amax(dim=1)
    qmax = 2 ** (bits - 1) - 1
    best_err = torch.full_like(top, float("inf"))
    best = torch.ones_like(top)
    for f in CLIP_GRID:
        s = torch.where(top > 0, top * float(f) / qmax, torch.ones_like(top))
        err = ((quantize_per_channel(w, s, bits) - w) ** 2).sum(dim=1)
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best = torch.where(better, s, best)
    return best


def uniform_attach(model: nn.Module, bits: int = 4) -> tuple[nn.Module, list[nn.Module]]:
    """(a copy of ``model`` with a uniform per-channel straight-through quantiser on every Linear / Conv
    weight, scales fitted on the float weights, the layers); see _ste.attach."""
    if not 2 <= bits <= 8:
        raise ValueError(f"uniform quantisation needs 2 <= bits <= 8, got {bits}")
    return attach(model, lambda w: partial(quantize_per_channel, scale=fit_scales(w, bits), bits=bits))


def uniform_quantize(model: nn.Module, bits: int = 4, train_loader=None, epochs: int = 0, lr: float = 1e-4,
                     seed: int = 0) -> nn.Module:
    """A copy of ``model`` whose Linear/Conv weights are uniformly quantised per output channel (optionally
    fine-tuned through a straight-through estimator, scales fixed, for ``epochs`` epochs of Adam)."""
    q, layers = uniform_attach(model, bits)
    return finetune_and_freeze(q, layers, train_loader, epochs, lr, seed, "uniform_quantize")
