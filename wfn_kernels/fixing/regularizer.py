"""The "cosying up to clusters" regulariser (docs/algorithm.md §3.2).

For the unfixed weights w_i and the current codebook {c_j}:

    D_ij  = |w_i - c_j| / |w_i|   if |w_i| > γ0, else |w_i - c_j|;  D_i0 = 0 for c = 0 when |w_i| <= γ0
    p_ij  = softmin_j((D_ij + ε) / T)
    L_reg = mean_i Σ_j p_ij D_ij                               (a soft-min expected distance)
    L     = L_CE + α L_reg,  α = stopgrad(ratio · L_CE / L_reg)  (L_reg is always ratio × the batch CE)

Decisions: the |w| in the denominator is not detached (as in the original); when L_reg is 0 (every free
weight exactly on a centre) or there is nothing to regularise, α = 0 instead of the original's 0/0. The
gradient of α·L_reg is ratio·CE·∇log L_reg, so it grows as the free weights approach their centres
(faithful; the gradient clipping bounds it). The gradient of L_reg at a weight exactly on a centre is
zero up to the softmin weight of the other centres (exp(-D/T), < 1e-8 for centres >= 1 relative
distance apart at T = 0.05). Memory is one (n_free, k) matrix per
call, computed in chunks of CHUNK weights so a large network does not materialise it whole.
"""

from __future__ import annotations

import torch

EPSILON = 1e-14  # the original's ε inside the softmin
CHUNK = 1 << 20


def relative_distances(w: torch.Tensor, centres: torch.Tensor, zero_threshold: float) -> torch.Tensor:
    """D (n, k) for 1-D weights w (n,) and centres (k,), same dtype; differentiable in w."""
    diff = (w[:, None] - centres[None, :]).abs()
    big = w.abs() > zero_threshold
    d = torch.where(big[:, None], diff / w.abs().clamp_min(zero_threshold)[:, None], diff)
    zero_col = (centres == 0)[None, :] & ~big[:, None]
    return torch.where(zero_col, torch.zeros_like(d), d)


def expected_distance(w: torch.Tensor, centres: torch.Tensor, zero_threshold: float,
                      temperature: float = 0.05) -> torch.Tensor:
    """L_reg: mean over w (n,) of the softmin-weighted relative distance to ``centres`` (k,). Scalar."""
    if w.dim() != 1 or centres.dim() != 1:
        raise ValueError(f"expected_distance: w and centres must be 1-D, got {tuple(w.shape)}, "
                         f"{tuple(centres.shape)}")
    if centres.numel() == 0:
        raise ValueError("expected_distance: the codebook of centres is empty")
    if w.numel() == 0:
        return w.new_zeros(())
    centres = centres.to(device=w.device, dtype=w.dtype)
    total = w.new_zeros(())
    for start in range(0, w.numel(), CHUNK):
        d = relative_distances(w[start:start + CHUNK], centres, zero_threshold)
        p = torch.softmax(-(d + EPSILON) / temperature, dim=1)
        total = total + (p * d).sum()
    return total / w.numel()


def regularised_loss(ce: torch.Tensor, free_weights: torch.Tensor, centres: torch.Tensor | None,
                     ratio: float, zero_threshold: float, temperature: float) -> tuple[torch.Tensor, float]:
    """CE + α·L_reg with α = stopgrad(ratio · CE / L_reg). Returns (loss, L_reg value)."""
    if ratio == 0 or centres is None or free_weights.numel() == 0:
        return ce, 0.0
    reg = expected_distance(free_weights, centres, zero_threshold, temperature)
    value = float(reg.detach())
    if not value > 0:
        return ce, value
    alpha = (ratio * ce.detach() / reg.detach())
    return ce + alpha * reg, value
