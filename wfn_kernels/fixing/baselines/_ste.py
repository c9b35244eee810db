"""Straight-through fine-tuning shared by the quantisation baselines (APoT, uniform): the same budget for
each, so their accuracies compare.

The pieces are separate so a caller can checkpoint between epochs (workflows/curve.py does):
:func:`attach` registers a quantiser on every Linear / Conv weight of a copy of the model,
:func:`train_epoch` runs one epoch through those parametrisations, :func:`freeze` bakes the quantised
weights in. :func:`finetune_and_freeze` is the three in one call.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils import parametrize

from ..params import FIXED_TYPES


class STEQuant(nn.Module):
    """A weight parametrisation: forward the quantised weight, backward the identity."""

    def __init__(self, quantize):
        super().__init__()
        self.quantize = quantize

    def forward(self, w):
        return w + (self.quantize(w) - w).detach()


def quantized_layers(model: nn.Module) -> list[nn.Module]:
    layers = [m for m in model.modules() if isinstance(m, FIXED_TYPES)]
    if not layers:
        raise ValueError(f"model {type(model).__name__} has no Linear/Conv layers to quantise")
    return layers


def attach(model: nn.Module, make_quantizer) -> tuple[nn.Module, list[nn.Module]]:
    """(a copy of ``model`` with ``STEQuant(make_quantizer(weight))`` on every Linear / Conv weight, the
    layers). ``make_quantizer(w)`` fits the layer's quantiser (scales, α) on its float weight."""
    q = copy.deepcopy(model)
    layers = quantized_layers(q)
    for m in layers:
        parametrize.register_parametrization(m, "weight", STEQuant(make_quantizer(m.weight.detach())))
    return q, layers


def train_epoch(model: nn.Module, loader, opt: torch.optim.Optimizer) -> float:
    """One epoch of cross-entropy training on the model's device; returns the mean batch loss."""
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    model.train()
    total, n = 0.0, 0
    for x, y in loader:
        loss = nn.functional.cross_entropy(model(x.to(device)), y.to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total, n = total + float(loss.detach()), n + 1
    return total / max(n, 1)


def freeze(layers) -> None:
    """Remove the parametrisations, leaving each layer's quantised weight as a plain parameter."""
    for m in layers:
        parametrize.remove_parametrizations(m, "weight", leave_parametrized=True)


def finetune_and_freeze(model: nn.Module, layers, train_loader, epochs: int, lr: float, seed: int,
                        what: str) -> nn.Module:
    """``epochs`` epochs of Adam at ``lr`` through the parametrisations of ``layers``, then bake the
    quantised weights in (the parametrisations are removed)."""
    if epochs < 0:
        raise ValueError(f"{what}: epochs must be >= 0, got {epochs}")
    if epochs:
        if train_loader is None:
            raise ValueError(f"{what}: fine-tuning epochs > 0 need a train_loader")
        torch.manual_seed(seed)
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        for _ in range(epochs):
            train_epoch(model, train_loader, opt)
    freeze(layers)
    return model
