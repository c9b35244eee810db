"""A BatchNorm-invariant weight rescale before fixing (an extension, off by default).

A Conv2d that feeds a BatchNorm2d directly can be scaled by any s > 0 without changing the network: BN
divides s away. The conv's weight (and bias) and BN's running mean scale by s, its running variance by s²,
and BN's γ by sqrt((s²v + ε) / (s²(v + ε))) so that ε, which does not scale (the model stays described by
its state_dict alone), changes nothing in eval mode; in train mode the same factor applies to the batch
statistics' normaliser, a per-channel change of γ that training absorbs. WFN's zero threshold γ0 is absolute, so this
rescale decides how many weights lie below it (bench/results/wfn_zeros.md): nets trained with a high
learning rate have weights ~10x larger than ImageNet ResNets' and WFN prunes almost nothing on them.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

DEFAULT_TOLERANCE = 1e-3  # max |Δ logits| / max |logits| the rescale may cause on the check batch


def conv_bn_pairs(model: nn.Module) -> list[tuple[str, nn.Conv2d, nn.BatchNorm2d]]:
    """(name, conv, bn) for every Conv2d whose next module in definition order is a BatchNorm2d of its width.
    Definition order is a heuristic for "feeds directly"; rescale_bn_convs checks it on real inputs."""
    mods = list(model.named_modules())
    return [(name, m, nxt) for (name, m), (_, nxt) in zip(mods, mods[1:])
            if isinstance(m, nn.Conv2d) and isinstance(nxt, nn.BatchNorm2d) and nxt.num_features == m.out_channels]


@torch.no_grad()
def rescale_bn_convs(model: nn.Module, rms: float, check_inputs: torch.Tensor | None = None,
                     tolerance: float = DEFAULT_TOLERANCE) -> list[tuple[str, float]]:
    """Scale, in place, every BN-followed conv of ``model`` to weight RMS ``rms``; returns [(conv, scale)].

    With ``check_inputs`` the eval-mode logits before and after are compared: a change above ``tolerance``
    (relative to the largest logit) means some pair is not wired conv -> BN, and the model is restored and a
    ValueError names the worst change.
    """
    if not (isinstance(rms, (int, float)) and rms > 0):
        raise ValueError(f"rescale_bn_convs: rms must be > 0, got {rms!r}")
    pairs = conv_bn_pairs(model)
    if not pairs:
        raise ValueError(f"rescale_bn_convs: {type(model).__name__} has no Conv2d directly followed by a "
                         "BatchNorm2d of its width; there is nothing BN-invariant to rescale")
    saved, was_training = copy.deepcopy(model.state_dict()), model.training
    model.eval()
    ref = model(check_inputs) if check_inputs is not None else None
    scales = []
    for name, conv, bn in pairs:
        s = rms / float(conv.weight.pow(2).mean().sqrt().clamp_min(1e-30))
        conv.weight.mul_(s)
        if conv.bias is not None:
            conv.bias.mul_(s)
        var = bn.running_var.clone()
        bn.running_mean.mul_(s)
        bn.running_var.mul_(s * s)
        if bn.weight is not None:  # ε does not scale: γ absorbs the difference, exactly in eval mode
            bn.weight.mul_(((s * s * var + bn.eps) / (s * s * (var + bn.eps))).sqrt())
        scales.append((name, s))
    if ref is not None:
        change = float((model(check_inputs) - ref).abs().max() / ref.abs().max().clamp_min(1e-30))
        if not change <= tolerance:
            model.load_state_dict(saved)
            model.train(was_training)
            raise ValueError(f"rescale_bn_convs: the rescale changed {type(model).__name__}'s logits by "
                             f"{change:.2e} (relative; allowed {tolerance:g}): a Conv2d listed before a BatchNorm2d "
                             "does not feed it directly in forward(); not rescaled")
    model.train(was_training)
    return scales
