"""Proposed cluster centres: the relative-distance geometric grid and its additive power-of-two form.

docs/algorithm.md §2.3–2.4. All arithmetic is float64 numpy on small arrays
(a few hundred grid points), so building candidates costs microseconds.
"""

from __future__ import annotations

import math

import numpy as np


def grid(bound: float, tolerance: float, zero_threshold: float, ratio_cap: float = 0.9999) -> np.ndarray:
    """Positive grid v_0 = γ0, v_{k+1} = v_k (1+a)/(1-a) with a = min(tolerance, ratio_cap), all v_k < bound.

    The original stores v_k while v_k < B (so a bound <= γ0 gives an empty grid and the candidates are
    just {0}); this reading reproduces the candidate counts of docs/algorithm.md §2.4 exactly. Between consecutive
    points the switch-over is at v_k / (1 - a), so every |w| in [γ0, v_last] is within relative distance a
    of a grid point. Returns float64 (K,), increasing.
    """
    a = min(float(tolerance), float(ratio_cap))
    ratio = (1.0 + a) / (1.0 - a)
    if not bound > zero_threshold:
        return np.zeros(0)
    steps = math.ceil(math.log(bound / zero_threshold) / math.log(ratio)) + 1
    pts = zero_threshold * ratio ** np.arange(steps + 1, dtype=np.float64)
    return pts[pts < bound]


def nearest_power_of_two(x: np.ndarray, order: int, zero_threshold: float, first: bool) -> np.ndarray:
    """sign(x)·2^max(log2 γ0 - order - 1, round(log2 |x|)), rounding half-to-even in the log2 domain.

    ``first``: the leading term, where |x| < γ0 becomes 0. Later (residual) terms never vanish: a
    residual below the floor is rounded up to ±2^(log2 γ0 - order - 1), as in the original (docs/algorithm.md §2.4).
    """
    mag = np.abs(x)
    floor = math.log2(zero_threshold) - order - 1
    with np.errstate(divide="ignore"):
        exp = np.maximum(floor, np.round(np.log2(mag)))
    out = np.sign(x) * np.exp2(exp)
    if first:
        out[mag < zero_threshold] = 0.0
    return out


def additive_powers_of_two(values: np.ndarray, tolerance: float, order: int,
                           zero_threshold: float) -> np.ndarray:
    """Approximate each value by at most ``order + 1`` signed powers of two (docs/algorithm.md §2.4).

    Start from the nearest power of two; ``order`` times, add the nearest power of two of the residual
    where the relative error is still >= tolerance and the value is not 0. Returns float64, same shape.
    """
    values = np.asarray(values, dtype=np.float64)
    cur = nearest_power_of_two(values, order, zero_threshold, first=True)
    for _ in range(order):
        resid = values - cur
        more = (np.abs(resid) >= np.abs(tolerance * values)) & (cur != 0)
        if not more.any():
            break
        cur[more] += nearest_power_of_two(resid[more], order, zero_threshold, first=False)
    return cur


def candidate_centres(bound: float, tolerance: float, order: int, zero_threshold: float,
                      ratio_cap: float = 0.9999) -> np.ndarray:
    """Sorted unique signed candidates {0} ∪ ±APoT(grid) for weights with max |w| = ``bound``.

    float64 (C,), strictly increasing, symmetric about 0, always containing 0.
    """
    pos = additive_powers_of_two(grid(bound, tolerance, zero_threshold, ratio_cap), tolerance, order,
                                 zero_threshold)
    pos = np.unique(pos[pos > 0])
    return np.concatenate((-pos[::-1], [0.0], pos))
