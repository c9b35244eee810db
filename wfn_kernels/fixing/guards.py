"""Guards of a fixing run: divergence and accuracy drops stop it or warn, never pass silently.

Both are checked after an iteration and **before** its checkpoint is written, so when a run stops the
last checkpoint on disk is the last good iteration (``wfn fix --resume`` continues from it after the
cause is fixed, e.g. a lower learning rate).
"""

from __future__ import annotations

import math
import warnings

import torch
from torch import nn

from .loaders import iter_batches, model_device


class FixingStopped(RuntimeError):
    """A guard stopped the run; the message says which, at which iteration, and what is kept."""


class DivergenceError(FixingStopped, FloatingPointError):
    """Training diverged: a non-finite loss, parameter or buffer, or an exploding loss."""


class AccuracyDropError(FixingStopped):
    """Validation accuracy fell more than ``max_accuracy_drop`` points (with ``stop_on_accuracy_drop``)."""


class AccuracyDropWarning(UserWarning):
    """Validation accuracy fell more than ``max_accuracy_drop`` points below the starting accuracy."""


def _kept(t: int) -> str:
    return f"the last good checkpoint (iteration {t - 1}) is kept" if t > 0 else "no checkpoint was written"


def check_finite_state(model: nn.Module, t: int) -> None:
    """Raise DivergenceError naming the first parameter or floating buffer with a NaN/Inf."""
    named = [("parameter", n, p) for n, p in model.named_parameters()]
    named += [("buffer", n, b) for n, b in model.named_buffers() if b.is_floating_point()]
    for kind, name, tensor in named:
        if not bool(torch.isfinite(tensor).all()):
            raise DivergenceError(f"WFN iteration {t}: {kind} {name} became NaN/Inf; training diverged (lower "
                                  f"the learning rate); stopping, {_kept(t)}")


@torch.no_grad()
def reference_loss(model: nn.Module, loader) -> float | None:
    """The loss scale an exploding loss is measured against: max(cross-entropy of the model before fixing
    on the first training batch, ln(classes), the loss of chance-level logits)."""
    for x, y in iter_batches(loader, model_device(model)):
        was_training = model.training
        model.eval()
        logits = model(x)
        model.train(was_training)
        ce = float(nn.functional.cross_entropy(logits, y))
        return max(ce, math.log(max(int(logits.shape[-1]), 2)))
    return None


def check_loss(entry: dict, reference: float | None, factor: float) -> None:
    """Raise DivergenceError when this iteration's mean loss is non-finite or exceeds ``factor`` x
    ``reference`` (:func:`reference_loss`)."""
    loss = entry.get("train_loss")
    if loss is None:
        return
    t = entry["iteration"]
    if not math.isfinite(loss):
        raise DivergenceError(f"WFN iteration {t}: the mean training loss is {loss}; stopping, {_kept(t)}")
    if reference is not None and loss > factor * reference:
        raise DivergenceError(f"WFN iteration {t}: the mean training loss {loss:.4g} is more than {factor:g}x "
                              f"the loss scale before fixing ({reference:.4g}); training diverged (lower the "
                              f"learning rate); stopping, {_kept(t)}")


def accuracy_guard(entry: dict, reference: float | None, max_drop: float | None, stop: bool) -> None:
    """Record the drop from ``reference`` in ``entry``; warn (and raise with ``stop``) beyond ``max_drop``."""
    if reference is None or entry.get("val_accuracy") is None:
        return
    drop = reference - entry["val_accuracy"]
    entry["reference_val_accuracy"] = reference
    entry["accuracy_drop"] = drop
    if max_drop is None or drop <= max_drop:
        return
    t = entry["iteration"]
    message = (f"WFN iteration {t} (fixed fraction {entry['fraction']}): validation accuracy "
               f"{entry['val_accuracy']:.2f} % is {drop:.2f} points below the starting {reference:.2f} % "
               f"(max_accuracy_drop {max_drop:g})")
    entry["warning"] = message
    if stop:
        raise AccuracyDropError(f"{message}; stopping (stop_on_accuracy_drop), {_kept(t)}")
    warnings.warn(message, AccuracyDropWarning, stacklevel=3)
