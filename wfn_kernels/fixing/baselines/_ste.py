"""Straight-through fine-tuning shared by the quantisation baselines (APoT, uniform): the same budget for
each, so their accuracies compare."""

from __future__ import annotations

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
            model.train()
            for x, y in train_loader:
                loss = nn.functional.cross_entropy(model(x), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
    for m in layers:
        parametrize.remove_parametrizations(m, "weight", leave_parametrized=True)
    return model
