"""Greedy minimal clustering of a whole network's weights onto additive power-of-two centres.

One call of :func:`cluster` is one fixing step of WFN (docs/algorithm.md §2.6):

    quota = int(n · fraction); order = 0; a = δ_t
    while fewer than quota weights are taken:
        C  = {0} ∪ ±APoT_order(grid(γ0, (1+δ_t)/(1-δ_t), max |unassigned w|))
        c* = the candidate that is the nearest (absolute |w - c|) for the most unassigned weights
             (ties -> the lowest index, i.e. the most negative value, as torch.argmax did)
        sort unassigned weights by relative distance d = |w - c*| / |w| and take the longest prefix
             whose mean of NON-ZERO distances is <= a (at most quota - taken of them)
        nothing taken -> order += 1, and once order > max_order_before_doubling, a doubles
        something taken -> a = δ_t again (the order stays)

Decisions where the original is buggy or ambiguous (each tested in tests/fixing/test_clustering.py):
- Signs (``same_sign``, default True): a non-zero centre never takes a weight of the opposite sign. Such
  a weight has d > 1 (it is closer to 0 than to the centre) and enters a prefix only as an outlier the
  running mean tolerates; the original allows it (``same_sign=False``). It matters: on Fashion-MNIST
  (seed 0, δ = 0.15, the 0.999 step) the original moved two fixed weights from -1.0 to +0.75 and accuracy
  fell from 89.7 % to 67.3 %, with 23 free weights left to repair it; on digits at δ = 0.2 it collapsed
  4 of 4 runs (12-80 %). With same_sign both hold (89.9 %; 96-98 %), and the other runs are unchanged
  (bench/results/wfn_fashion_mnist.md, bench/results/wfn_sweep_digits). Termination is unchanged: the
  chosen centre is the nearest candidate of at least one free weight, which therefore has its sign and
  d <= 1, so threshold doubling still reaches it.
- The whole network is re-clustered every call, as in the original (whether previously fixed weights
  may move is left open there; docs/algorithm.md §9): a fixed weight sits exactly on its centre (distance
  0, excluded from the mean) and is re-taken for free when that centre comes up, but a more popular centre processed
  first may take it as an outlier, and the quota cap may leave it unfixed. The trainer reports how many
  moved. ``keep`` (WFNConfig.keep_fixed) instead takes the earlier fixed weights first, unchanged, and
  places only the free ones. Measured on Fashion-MNIST (3 seeds each): it cost accuracy on small-cnn (drop
  1.60 vs 1.44 points at 1 epoch per iteration, 2.63 vs 1.54 at 2) and helped on small-resnet (0.53 vs
  1.63, where a same-sign move of 19 fixed weights cost one run 8 points mid-way); off by default.
- The original's extra acceptance clause on the last *unsorted* distance (docs/algorithm.md §2.6 "Code quirk") is
  dropped: acceptance is only the running mean.
- Ties in relative distance are broken by position in value order (the original's unstable argsort is
  arbitrary). For the centre 0 every |w| >= γ0 has d = 1; those ties are broken by |w| (smallest first),
  so a forced quota on 0 prunes the smallest weights.
- |w| < γ0 is at distance 0 from the centre 0 only; to other centres it has its plain relative
  distance; an exact 0 is at infinite distance from a non-zero centre (0/0 never arises).
- The grid keeps the points < max |w| (the original stores v_k while v_k < B; docs/algorithm.md §2.4 counts).

Speed: the weights are sorted once; every later query is a binary search plus prefix sums over the
sorted array (pool.py), so a pass costs O(n log n) for the sort plus O(steps · log n) after it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from .candidates import candidate_centres
from .pool import SortedPool, difference, runs

EXPLICIT_GAP = 4096  # resolve the last ≤ this many weights of a prefix by sorting them explicitly


@dataclass(frozen=True)
class ClusterStep:
    """One accepted centre: its value, the order in force, the mean threshold used, weights taken."""

    centre: float
    order: int
    threshold: float
    taken: int


@dataclass
class ClusteringResult:
    """values: float32 (n,) the weights with fixed ones replaced by their centre; fixed: bool (n,);
    centres: float32 sorted unique centres used this pass; steps: accepted centres in greedy order;
    max_order: highest order reached; failures: steps that took nothing (order escalations); kept: weights
    held at their earlier value through ``keep``."""

    values: torch.Tensor
    fixed: torch.Tensor
    centres: torch.Tensor
    steps: list = field(default_factory=list)
    max_order: int = 0
    failures: int = 0
    kept: int = 0  # weights held on their earlier centre (``keep``)


def cluster(weights: torch.Tensor, fraction: float, tolerance: float, zero_threshold: float = 2.0 ** -7,
            max_order_before_doubling: int = 20, ratio_cap: float = 0.9999, *,
            keep: torch.Tensor | None = None, same_sign: bool = True) -> ClusteringResult:
    """Fix exactly ``int(n · fraction)`` of the 1-D float ``weights`` to greedily chosen APoT centres.

    ``tolerance`` is δ_t (0 < δ_t); it sets both the grid ratio and the mean acceptance threshold.
    ``keep``: optional bool mask (n,) of weights fixed earlier; they stay at their values and count towards
    the quota (None: re-cluster everything, as the original). ``same_sign``: non-zero centres take only
    weights of their own sign (False: the original, which can flip a sign). See the module docstring.
    """
    w = _validated(weights, fraction, tolerance)
    n = w.numel()
    quota = int(n * fraction)  # the original's int(n_params * p)
    sorted_w, perm = stable_sort(w.numpy())
    pool = SortedPool(sorted_w.astype(np.float64), same_sign=same_sign)
    order, a, failures = 0, float(tolerance), 0
    steps, taken_pieces = [], []
    kept = _take_kept(pool, sorted_w, perm, keep, n, quota, taken_pieces)
    while pool.taken < quota:
        c = _most_popular_centre(pool, tolerance, order, zero_threshold, ratio_cap)
        centre = _Centre(pool, c, zero_threshold)
        pieces, k = _select(pool, centre, lambda cnt, nz, s, a=a: s <= a * np.maximum(nz, 1))
        rest = quota - pool.taken
        if k > rest:
            pieces, k = _select(pool, centre, lambda cnt, nz, s, r=rest: cnt <= r)
        if k == 0:
            failures += 1
            order += 1
            if order > max_order_before_doubling:
                a *= 2.0
            continue
        pool.take(pieces)
        taken_pieces.append((c, pieces))
        steps.append(ClusterStep(float(c), order, a, k))
        a = float(tolerance)
    r = _assemble(w, sorted_w, perm, taken_pieces, steps, order, failures)
    r.kept = kept
    return r


def _take_kept(pool, sorted_w, perm, keep, n, quota, taken_pieces) -> int:
    """Take the ``keep`` weights first, one piece list per distinct value; returns how many."""
    if keep is None:
        return 0
    if not isinstance(keep, torch.Tensor) or keep.dtype != torch.bool or tuple(keep.shape) != (n,):
        raise ValueError(f"cluster: keep must be a bool tensor of shape ({n},) like the weights, got "
                         f"{type(keep).__name__} {getattr(keep, 'dtype', '')} {tuple(getattr(keep, 'shape', ()))}")
    pos = np.flatnonzero(keep.cpu().numpy()[perm])
    if len(pos) > quota:
        raise ValueError(f"cluster: {len(pos)} weights are to be kept fixed but this step fixes only {quota} "
                         f"(fraction too small for the earlier fixings: the schedule must increase)")
    if len(pos) == 0:
        return 0
    vals = sorted_w[pos]
    cut = np.flatnonzero(vals[1:] != vals[:-1]) + 1
    for group in np.split(pos, cut):
        pieces = runs(group)
        pool.take(pieces)
        taken_pieces.append((float(sorted_w[group[0]]), pieces))
    return len(pos)


def _validated(weights, fraction, tolerance) -> torch.Tensor:
    if not isinstance(weights, torch.Tensor) or weights.dim() != 1:
        raise ValueError(f"cluster: weights must be a 1-D tensor, got {type(weights).__name__} "
                         f"{tuple(getattr(weights, 'shape', ()))}")
    w = weights.detach().float().cpu().contiguous()
    bad = ~torch.isfinite(w)
    if bad.any():
        raise ValueError(f"cluster: weights contain {int(bad.sum())} non-finite values (NaN/Inf), e.g. at "
                         f"index {int(bad.nonzero()[0])}")
    if not 0 <= fraction <= 1:
        raise ValueError(f"cluster: fraction must lie in [0, 1], got {fraction}")
    if not tolerance > 0:
        raise ValueError(f"cluster: tolerance δ_t must be > 0, got {tolerance}")
    return w


def _most_popular_centre(pool: SortedPool, tolerance, order, zero_threshold, ratio_cap) -> float:
    first, last = pool.extreme_unassigned()
    bound = max(abs(pool.w[first]), abs(pool.w[last]))
    cands = candidate_centres(bound, tolerance, order, zero_threshold, ratio_cap)
    mids = (cands[1:] + cands[:-1]) / 2
    # weights exactly at a midpoint go to the lower candidate: argmin's first index
    edges = np.concatenate(([0], pool.pos(mids, "right"), [pool.n]))
    unassigned = edges - pool.taken_before(edges)
    return float(cands[int(np.argmax(np.diff(unassigned)))])


class _Centre:
    """Relative distances of the pool's weights to one centre c, as ranges and closed-form sums."""

    def __init__(self, pool: SortedPool, c: float, zero_threshold: float):
        self.pool, self.c, self.g0 = pool, c, zero_threshold
        if c == 0:
            self.sub = (int(pool.pos(-zero_threshold, "right")), int(pool.pos(zero_threshold, "left")))
        else:
            self.hits = (int(pool.pos(c, "left")), int(pool.pos(c, "right")))
            # inner region (between 0 and c): d = c/w - 1; elsewhere d = 1 - c/w
            self.inner = (pool.z_hi, self.hits[1]) if c > 0 else (self.hits[0], pool.z_lo)

    def finite_total(self) -> int:
        """How many unassigned weights this centre can reach at all (finite distance, allowed sign)."""
        p = self.pool
        if self.c == 0:
            return p.remaining
        if p.same_sign:
            return int(p.count(p.z_hi, p.n)) if self.c > 0 else int(p.count(0, p.z_lo))
        return p.remaining - int(p.count(p.z_lo, p.z_hi))

    def ranges(self, r: float) -> list[tuple[int, int]]:
        """Sorted disjoint index ranges of the weights whose ordering key is <= r."""
        p, c = self.pool, self.c
        if r < 0:
            return []
        if c == 0:
            t = r - 1.0
            if t < self.g0:
                return [self.sub]
            return [(int(p.pos(-t, "left")), int(p.pos(t, "right")))]
        out = []
        if c > 0:
            hi = c / (1.0 - r) if r < 1 else np.inf
            if r > 1 and not p.same_sign:
                out.append((0, min(int(p.pos(-c / (r - 1.0), "right")), p.z_lo)))
            out.append((int(p.pos(c / (1.0 + r), "left")), int(p.pos(hi, "right"))))
        else:
            lo = c / (1.0 - r) if r < 1 else -np.inf
            out.append((int(p.pos(lo, "left")), int(p.pos(c / (1.0 + r), "right"))))
            if r > 1 and not p.same_sign:
                out.append((max(int(p.pos(-c / (r - 1.0), "left")), p.z_hi), p.n))
        return [(i, j) for i, j in out if j > i]

    def stats(self, r: float) -> tuple[int, int, float]:
        """(count, count with d > 0, Σ d) over the unassigned weights with key <= r."""
        rng = self.ranges(r)
        if not rng:
            return 0, 0, 0.0
        p = self.pool
        cnt = int(sum(int(p.count(i, j)) for i, j in rng))
        if self.c == 0:
            nz = cnt - int(p.count(*self.sub))
            return cnt, nz, float(nz)
        nz = cnt - int(p.count(*self.hits))
        total = 0.0
        for i, j in rng:
            for a, b, sign in self._split(i, j):
                k = int(p.count(a, b))
                if k:
                    total += sign * (self.c * p.inv_sum(a, b) - k)
        return cnt, nz, total

    def _split(self, i, j):
        a, b = self.inner
        lo, hi = max(i, a), min(j, b)
        if hi <= lo:
            return [(i, j, -1.0)]
        parts = [(lo, hi, 1.0)]
        if lo > i:
            parts.append((i, lo, -1.0))
        if j > hi:
            parts.append((hi, j, -1.0))
        return parts

    def explicit(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(ordering key, relative distance d) of the weights at sorted ``positions``."""
        w = self.pool.w[positions]
        if self.c == 0:
            small = np.abs(w) < self.g0
            return np.where(small, 0.0, 1.0 + np.abs(w)), (~small).astype(np.float64)
        with np.errstate(divide="ignore"):
            d = np.abs(w - self.c) / np.abs(w)
        return d, d


def _select(pool: SortedPool, centre: _Centre, ok) -> tuple[list, int]:
    """The longest prefix (by key, then position) of unassigned weights whose stats satisfy ``ok``.

    ``ok(count, nonzero_count, sum_d)`` must be monotone: true for every shorter prefix of a true one.
    Returns (unassigned index pieces, count). Brackets a threshold by doubling and bisection on the key,
    then resolves the last few weights (or a tie block) exactly.
    """
    lo, st_lo = -1.0, (0, 0, 0.0)
    finite = centre.finite_total()
    hi = 1e-3
    while True:
        st_hi = centre.stats(hi)
        if not ok(*st_hi):
            break
        if st_hi[0] >= finite or hi > 1e300:
            return pool.unassigned_pieces(centre.ranges(hi)), st_hi[0]
        lo, st_lo, hi = hi, st_hi, hi * 2.0
    while st_hi[0] - st_lo[0] > EXPLICIT_GAP and hi - lo > 1e-15 * max(1.0, abs(hi)):
        mid = lo + (hi - lo) / 2.0
        st = centre.stats(mid)
        if ok(*st):
            lo, st_lo = mid, st
        else:
            hi, st_hi = mid, st
    base = pool.unassigned_pieces(centre.ranges(lo))
    gap = pool.unassigned_pieces(difference(centre.ranges(hi), centre.ranges(lo)))
    extra = _resolve_gap(centre, gap, st_lo, st_hi, ok)
    return base + extra, st_lo[0] + sum(e - s for s, e in extra)


def _resolve_gap(centre: _Centre, gap, st_lo, st_hi, ok) -> list:
    n_gap = sum(e - s for s, e in gap)
    if n_gap == 0:
        return []
    cnt0, nz0, s0 = st_lo
    if n_gap <= EXPLICIT_GAP:
        pos = np.concatenate([np.arange(s, e) for s, e in gap])
        key, d = centre.explicit(pos)
        order = np.lexsort((pos, key))
        pos, d = pos[order], d[order]
        good = ok(cnt0 + np.arange(1, len(pos) + 1), nz0 + np.cumsum(d > 0), s0 + np.cumsum(d))
        j = len(pos) if good.all() else int(np.argmin(good))
        return runs(pos[:j])
    # a tie block (many equal weights): every member has the same distance
    nz_gap = st_hi[1] - st_lo[1]
    d = (st_hi[2] - s0) / nz_gap if nz_gap else 0.0
    flag = 1 if nz_gap else 0
    lo, hi = 0, n_gap  # largest j in [0, n_gap] with ok(...)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if ok(cnt0 + mid, nz0 + flag * mid, s0 + d * mid):
            lo = mid
        else:
            hi = mid - 1
    return _first(gap, lo)


def _first(pieces, k: int) -> list:
    out = []
    for s, e in pieces:
        if k <= 0:
            break
        take = min(k, e - s)
        out.append((s, s + take))
        k -= take
    return out


def stable_sort(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sorted float32 values, int64 permutation) of float32 ``w``, ties in index order.

    Sorts one uint64 key per weight (order-preserving float bits << 32 | index): every key is unique, so
    numpy's fast unstable (SIMD) sort gives the stable order, several times faster than a stable sort.
    -0.0 is normalised to +0.0 first. Needs n < 2^32.
    """
    if len(w) >= 1 << 32:
        raise ValueError(f"cluster: {len(w)} weights exceed the 2^32 limit of the sort key")
    bits = (np.asarray(w, dtype=np.float32) + np.float32(0.0)).view(np.uint32)
    flip = (bits >> np.uint32(31)) * np.uint32(0xFFFFFFFF) | np.uint32(0x80000000)  # IEEE order -> uint order
    keys = (bits ^ flip).astype(np.uint64)
    keys <<= np.uint64(32)
    keys |= np.arange(len(w), dtype=np.uint64)
    keys.sort()
    mono = (keys >> np.uint64(32)).astype(np.uint32)
    unflip = ((mono >> np.uint32(31)) ^ np.uint32(1)) * np.uint32(0xFFFFFFFF) | np.uint32(0x80000000)
    sorted_w = (mono ^ unflip).view(np.float32)
    keys &= np.uint64(0xFFFFFFFF)
    return sorted_w, keys.view(np.int64)


def _assemble(w, sorted_w, perm, taken_pieces, steps, order, failures) -> ClusteringResult:
    new_sorted = sorted_w.copy()
    fixed_sorted = np.zeros(len(sorted_w), dtype=bool)
    for c, pieces in taken_pieces:
        for s, e in pieces:
            new_sorted[s:e] = np.float32(c)
            fixed_sorted[s:e] = True
    values = np.empty_like(new_sorted)
    values[perm] = new_sorted
    fixed = np.empty_like(fixed_sorted)
    fixed[perm] = fixed_sorted
    centres = torch.unique(torch.tensor([c for c, _ in taken_pieces], dtype=torch.float32))
    return ClusteringResult(torch.from_numpy(values), torch.from_numpy(fixed), centres, steps, order, failures)
