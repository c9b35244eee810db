"""Batches from any loader, on the model's device: what fix_weights, evaluate and the guards read.

WFN trains in the model's own dtype on the model's own device (CPU or CUDA); it never enables autocast,
so mixed precision is off unless the caller wraps the call in an autocast context.
"""

from __future__ import annotations

import torch
from torch import nn


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (CPU for a model without parameters)."""
    return next((p.device for p in model.parameters()), torch.device("cpu"))


def iter_batches(loader, device):
    """(inputs, labels) of every batch of ``loader`` on ``device``. A batch is a tuple or list whose first two
    items are the inputs and the labels (further items, e.g. sample indices, are ignored)."""
    for b in loader:
        if not isinstance(b, (tuple, list)) or len(b) < 2:
            raise TypeError(f"a batch must be (inputs, labels, ...) as a tuple or list, got {type(b).__name__}"
                            + (f" of length {len(b)}" if isinstance(b, (tuple, list)) else "")
                            + "; wrap the loader so it yields (inputs, labels)")
        yield b[0].to(device, non_blocking=True), b[1].to(device, non_blocking=True)
