"""The unassigned weights of one clustering pass: sorted once, queried in O(log n) per range.

The greedy clustering (clustering.py) repeatedly asks "how many unassigned weights lie in this value
range, and what is the sum of their relative distances to centre c". Relative distance to c is
d(w) = |1 - c/w|, so over any index range of the sorted weights on which 1 - c/w keeps its sign,
Σd = ±(count - c·Σ 1/w). A prefix sum of 1/w (accumulated from the outside in on each side of zero,
so the huge 1/w of near-zero weights never swamps the far ranges) plus a sorted list of taken index
intervals answers every query without touching the n weights again: memory O(n), no n × k matrix.
"""

from __future__ import annotations

import numpy as np


class SortedPool:
    """Sorted float64 weights ``w`` (n,) with taken index intervals [starts[i], ends[i]) (disjoint,
    sorted, non-adjacent)."""

    def __init__(self, sorted_weights: np.ndarray, same_sign: bool = False):
        w = np.ascontiguousarray(sorted_weights, dtype=np.float64)
        self.w = w
        self.same_sign = same_sign  # non-zero centres reach only weights of their own sign
        self.n = len(w)
        self.z_lo = int(np.searchsorted(w, 0.0, "left"))
        self.z_hi = int(np.searchsorted(w, 0.0, "right"))
        self._neg = np.zeros(self.z_lo + 1)
        np.cumsum(1.0 / w[: self.z_lo], out=self._neg[1:])
        self._pos = np.zeros(self.n - self.z_hi + 1)
        if self.n > self.z_hi:
            self._pos[:-1] = np.cumsum((1.0 / w[self.z_hi:])[::-1])[::-1]
        self.starts = np.zeros(0, dtype=np.int64)
        self.ends = np.zeros(0, dtype=np.int64)
        self._cum = np.zeros(1, dtype=np.int64)

    # ----- positions
    def pos(self, value, side: str = "left"):
        return np.searchsorted(self.w, value, side)

    @property
    def taken(self) -> int:
        return int(self._cum[-1])

    @property
    def remaining(self) -> int:
        return self.n - self.taken

    def extreme_unassigned(self) -> tuple[int, int]:
        """(first, last) unassigned index; requires remaining > 0."""
        first = int(self.ends[0]) if len(self.starts) and self.starts[0] == 0 else 0
        last = int(self.starts[-1]) - 1 if len(self.ends) and self.ends[-1] == self.n else self.n - 1
        return first, last

    # ----- counts and sums over unassigned weights in index ranges [i, j)
    def taken_before(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.int64)
        k = np.searchsorted(self.ends, x, "right")
        out = self._cum[k].copy()
        inside = k < len(self.starts)
        kk = np.minimum(k, max(len(self.starts) - 1, 0))
        if len(self.starts):
            part = np.where(inside, np.maximum(x - self.starts[kk], 0), 0)
            out += part
        return out

    def count(self, i, j) -> np.ndarray:
        i, j = np.asarray(i, dtype=np.int64), np.asarray(j, dtype=np.int64)
        return (j - i) - (self.taken_before(j) - self.taken_before(i))

    def _inv_sum(self, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        """Σ 1/w over ALL weights (taken or not) of ranges [i, j); exact zeros contribute 0."""
        a, b = np.minimum(i, self.z_lo), np.minimum(j, self.z_lo)
        neg = self._neg[b] - self._neg[a]
        a, b = np.maximum(i, self.z_hi) - self.z_hi, np.maximum(j, self.z_hi) - self.z_hi
        return neg + (self._pos[a] - self._pos[b])

    def inv_sum(self, i: int, j: int) -> float:
        """Σ 1/w over the unassigned weights of [i, j)."""
        total = float(self._inv_sum(np.array([i]), np.array([j]))[0])
        if len(self.starts) and j > i:
            s, e = np.clip(self.starts, i, j), np.clip(self.ends, i, j)
            sel = e > s
            if sel.any():
                total -= float(self._inv_sum(s[sel], e[sel]).sum())
        return total

    # ----- interval algebra
    def unassigned_pieces(self, ranges) -> list[tuple[int, int]]:
        """The parts of index ranges [(i, j), ...] not yet taken, in increasing order."""
        out = []
        for a, b in ranges:
            if b <= a:
                continue
            k0 = int(np.searchsorted(self.ends, a, "right"))
            k1 = int(np.searchsorted(self.starts, b, "left"))
            if k1 <= k0:
                out.append((int(a), int(b)))
                continue
            lo = np.concatenate(([a], self.ends[k0:k1]))
            hi = np.concatenate((self.starts[k0:k1], [b]))
            lo, hi = np.maximum(lo, a), np.minimum(hi, b)
            out.extend((int(x), int(y)) for x, y in zip(lo, hi) if y > x)
        return out

    def take(self, pieces) -> None:
        """Mark index intervals as taken (they must be unassigned pieces)."""
        if not pieces:
            return
        s = np.concatenate((self.starts, np.array([p[0] for p in pieces], dtype=np.int64)))
        e = np.concatenate((self.ends, np.array([p[1] for p in pieces], dtype=np.int64)))
        order = np.argsort(s, kind="stable")
        s, e = s[order], e[order]
        run_end = np.maximum.accumulate(e)
        new = np.ones(len(s), dtype=bool)
        new[1:] = s[1:] > run_end[:-1]
        group = np.cumsum(new) - 1
        starts = s[new]
        ends = np.zeros(len(starts), dtype=np.int64)
        np.maximum.at(ends, group, e)
        self.starts, self.ends = starts, ends
        self._cum = np.concatenate(([0], np.cumsum(ends - starts)))


def difference(a_ranges, b_ranges) -> list[tuple[int, int]]:
    """Index ranges of a minus index ranges of b (both lists of (i, j) sorted and disjoint)."""
    out = []
    for i, j in a_ranges:
        cur = i
        for s, e in b_ranges:
            if e <= cur or s >= j:
                continue
            if s > cur:
                out.append((cur, s))
            cur = max(cur, e)
        if cur < j:
            out.append((cur, j))
    return out


def runs(positions: np.ndarray) -> list[tuple[int, int]]:
    """Sorted unique int positions -> list of maximal [start, end) runs."""
    if len(positions) == 0:
        return []
    p = np.sort(positions)
    brk = np.flatnonzero(np.diff(p) != 1)
    starts = np.concatenate(([p[0]], p[brk + 1]))
    ends = np.concatenate((p[brk], [p[-1]])) + 1
    return list(zip(starts.tolist(), ends.tolist()))
