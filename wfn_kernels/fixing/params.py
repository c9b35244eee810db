"""Which parameters WFN fixes, and their flattening into one whole-network vector (docs/algorithm.md §2.1).

Every parameter (weight and bias) of every nn.Linear / nn.Conv1d / nn.Conv2d / nn.Conv3d, plus the affine
γ and β of nn.BatchNorm1d / 2d / 3d when BatchNorm is included. The first conv and the last linear
layer get no special treatment. Order: ``model.named_modules()`` order, weight before bias.
"""

from __future__ import annotations

import torch
from torch import nn

FIXED_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
BN_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def tracked_parameters(model: nn.Module, include_batchnorm: bool) -> list[tuple[str, nn.Parameter]]:
    """[(qualified name, parameter)] of the parameters WFN fixes. Raises if there are none."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"WFN needs an nn.Module, got {type(model).__name__}")
    types = FIXED_TYPES + (BN_TYPES if include_batchnorm else ())
    out, seen = [], set()
    for mname, mod in model.named_modules():
        if not isinstance(mod, types):
            continue
        for pname, p in mod.named_parameters(recurse=False):
            if p is None or id(p) in seen:
                continue
            seen.add(id(p))
            out.append((f"{mname}.{pname}" if mname else pname, p))
    if not out:
        raise ValueError(f"model {type(model).__name__} has no nn.Linear / nn.Conv1d/2d/3d layers: WFN has "
                         "no weights to fix")
    return out


def flatten(params: list[tuple[str, torch.Tensor]]) -> torch.Tensor:
    """One float32 CPU vector of every tracked parameter, in order."""
    return torch.cat([p.detach().float().cpu().reshape(-1) for _, p in params])


def unflatten_into(params, flat: torch.Tensor) -> None:
    """Write a flat vector (as produced by flatten) back into the parameters, in place."""
    total = sum(p.numel() for _, p in params)
    if flat.numel() != total:
        raise ValueError(f"flat vector has {flat.numel()} values but the tracked parameters hold {total}")
    offset = 0
    with torch.no_grad():
        for _, p in params:
            k = p.numel()
            p.copy_(flat[offset:offset + k].view_as(p).to(p.dtype))
            offset += k


def split_like(params, flat: torch.Tensor) -> list[torch.Tensor]:
    """Views of a flat vector shaped like each tracked parameter."""
    out, offset = [], 0
    for _, p in params:
        out.append(flat[offset:offset + p.numel()].view_as(p))
        offset += p.numel()
    return out


def fingerprint(params) -> list[list]:
    """[[name, shape...], ...]: identifies the tracked architecture in checkpoints."""
    return [[name, *p.shape] for name, p in params]
