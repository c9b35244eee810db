"""Plain supervised training of a classifier (the float baseline WFN starts from); ``evaluate`` re-exported."""

from __future__ import annotations

import torch
from torch import nn

from .._optional import progress as _progress
from ..fixing.trainer import evaluate

__all__ = ["evaluate", "train_classifier"]


def train_classifier(model: nn.Module, loader, epochs: int, lr: float = 1e-2, seed: int = 0,
                     progress: bool = True) -> list[float]:
    """Train with AdamW + cosine schedule and cross-entropy; returns the mean loss of each epoch."""
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * max(len(loader), 1))
    losses = []
    epochs_range = _progress(range(epochs), desc="train baseline", disable=not progress, unit="epoch")
    for _ in epochs_range:
        model.train()
        total, count = 0.0, 0
        for x, y in loader:
            loss = nn.functional.cross_entropy(model(x), y)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"training loss became {loss.item()}; lower the learning rate")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * y.numel()
            count += y.numel()
        losses.append(total / count)
    return losses
