"""Weight-space metrics of a (fixed) network, as the paper reports them (docs/algorithm.md §4).

- unique values over the whole network, with and without 0 (the README's "Unique Param Count" is the
  non-zero one), and Shannon entropy H = -Σ p_v log2 p_v in bits over all tracked weights and over the
  non-zero ones (the README's "Entropy"), per layer too;
- the order histogram: how many distinct non-zero values need 1, 2, 3... signed power-of-two terms
  (order = terms - 1, minimal terms from the non-adjacent form), and how many weights use each order;
- bits per weight: a fixed-width index of ceil(log2 k) bits for k unique values, and H (the average
  length an ideal entropy code approaches); packed size = n·ceil(log2 k)/8 bytes + a float32 codebook.

Decision: the tracked set is the one WFN fixes (params.py), so the metric includes 1×1 shortcut convs,
unlike the authors' notebook, whose key filter skipped `downsample` layers (docs/algorithm.md §4.2 "Quirk").
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..format.codebook import power_of_two_terms
from .params import flatten, tracked_parameters

TOP_VALUES = 15


def entropy_bits(counts: torch.Tensor) -> float:
    """Shannon entropy in bits of a histogram of counts (int or float tensor)."""
    counts = counts[counts > 0].double()
    if counts.numel() == 0:
        return 0.0
    p = counts / counts.sum()
    return float(-(p * torch.log2(p)).sum())


def value_stats(values: torch.Tensor) -> dict:
    """Unique counts and entropies (bits) of a tensor's values, with and without 0."""
    v = values.detach().float().cpu().reshape(-1)
    if v.numel() == 0:
        raise ValueError("value_stats: the tensor is empty")
    if not torch.isfinite(v).all():
        raise ValueError("value_stats: the tensor contains NaN/Inf")
    uniq, counts = torch.unique(v, return_counts=True)
    nz = uniq != 0
    return {"numel": int(v.numel()), "unique": int(uniq.numel()), "unique_nonzero": int(nz.sum()),
            "entropy_bits": entropy_bits(counts), "entropy_nonzero_bits": entropy_bits(counts[nz]),
            "zero_fraction": float((v == 0).double().mean())}


def order_histogram(values: torch.Tensor) -> tuple[dict, dict]:
    """({order: distinct non-zero values}, {order: weights}) of a tensor of values."""
    uniq, counts = torch.unique(values.detach().float().cpu().reshape(-1), return_counts=True)
    by_value, by_weight = {}, {}
    for v, c in zip(uniq.tolist(), counts.tolist()):
        if v == 0:
            continue
        order = len(power_of_two_terms(v)) - 1
        by_value[order] = by_value.get(order, 0) + 1
        by_weight[order] = by_weight.get(order, 0) + c
    return dict(sorted(by_value.items())), dict(sorted(by_weight.items()))


def top_values(values: torch.Tensor, k: int = TOP_VALUES) -> list[tuple[float, int]]:
    """The k most frequent values with their counts, most frequent first."""
    uniq, counts = torch.unique(values.detach().float().cpu().reshape(-1), return_counts=True)
    order = torch.argsort(counts, descending=True, stable=True)[:k]
    return [(float(uniq[i]), int(counts[i])) for i in order]


def bits_metrics(stats: dict) -> dict:
    """Fixed-width index bits, entropy-code bits per weight and packed sizes in bytes."""
    k, n = stats["unique"], stats["numel"]
    index_bits = max(1, math.ceil(math.log2(k))) if k > 1 else 1
    return {"index_bits": index_bits, "entropy_code_bits": stats["entropy_bits"],
            "packed_bytes": math.ceil(n * index_bits / 8) + 4 * k,
            "entropy_coded_bytes": math.ceil(n * stats["entropy_bits"] / 8) + 4 * k,
            "float32_bytes": 4 * n}


def tensor_metrics(named: list[tuple[str, torch.Tensor]]) -> dict:
    """Whole-network and per-layer metrics of named tensors [(name, tensor)]."""
    flat = flatten(named)
    whole = value_stats(flat)
    by_value, by_weight = order_histogram(flat)
    layers = []
    for name, p in named:
        s = value_stats(p)
        layers.append({"name": name, "numel": s["numel"], "unique": s["unique"],
                       "unique_nonzero": s["unique_nonzero"], "entropy_bits": s["entropy_bits"]})
    return {**whole, **bits_metrics(whole), "order_values": by_value, "order_weights": by_weight,
            "top_values": top_values(flat), "layers": layers}


def network_metrics(model: nn.Module, include_batchnorm: bool = True) -> dict:
    """Metrics over the parameters WFN tracks in ``model`` (see params.tracked_parameters)."""
    return tensor_metrics(tracked_parameters(model, include_batchnorm))


def summary_line(m: dict) -> str:
    return (f"{m['numel']:,} weights | unique {m['unique']} ({m['unique_nonzero']} non-zero) | entropy "
            f"{m['entropy_bits']:.3f} bits ({m['entropy_nonzero_bits']:.3f} non-zero) | index "
            f"{m['index_bits']} bits | packed {m['packed_bytes']:,} B vs float {m['float32_bytes']:,} B")


# The named parameter sets every method is counted on (WFN and the baselines alike), so that a table's
# unique counts and entropies compare like with like.
PARAMETER_SETS = {
    "weights": "the weights of every Linear / Conv layer (no biases, no BatchNorm)",
    "conv-linear": "every parameter of every Linear / Conv layer (weights and biases)",
    "all": "every parameter of every Linear / Conv layer plus BatchNorm affine γ and β",
}


def parameter_set(model: nn.Module, name: str) -> list[tuple[str, torch.Tensor]]:
    """[(qualified name, tensor)] of ``model``'s parameters in the named set (see PARAMETER_SETS)."""
    if name not in PARAMETER_SETS:
        raise ValueError(f"unknown parameter set {name!r}; choose one of {sorted(PARAMETER_SETS)}")
    named = tracked_parameters(model, include_batchnorm=name == "all")
    if name == "weights":
        named = [(n, p) for n, p in named if n.rsplit(".", 1)[-1] == "weight"]
    return named


def count_values(model: nn.Module, name: str = "all") -> dict:
    """Unique values (with and without 0) and entropies of ``model`` over the named parameter set: the one
    counting function for WFN and every baseline. Adds ``parameter_set`` (the name) to value_stats' keys."""
    return {"parameter_set": name, **value_stats(flatten(parameter_set(model, name)))}
