"""Plain supervised training and evaluation of a classifier (the float baseline WFN starts from)."""

from __future__ import annotations

import torch
from torch import nn
from tqdm import tqdm


def evaluate(model: nn.Module, loader) -> float:
    """Top-1 accuracy in percent of ``model`` over ``loader`` (batches of (images, labels))."""
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for x, y in loader:
            correct += int((model(x).argmax(1) == y).sum())
            total += int(y.numel())
    if total == 0:
        raise ValueError("evaluate: the loader yielded no samples")
    return 100.0 * correct / total


def train_classifier(model: nn.Module, loader, epochs: int, lr: float = 1e-2, seed: int = 0,
                     progress: bool = True) -> list[float]:
    """Train with AdamW + cosine schedule and cross-entropy; returns the mean loss of each epoch."""
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * max(len(loader), 1))
    losses = []
    for _ in tqdm(range(epochs), desc="train baseline", disable=not progress, unit="epoch"):
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
