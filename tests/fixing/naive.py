"""A direct O(n·k) transcription of the greedy clustering, the spec the fast version is tested against."""

import numpy as np

from wfn_kernels.fixing.candidates import candidate_centres


def naive_cluster(w, fraction, tol, g0=2.0 ** -7, max_order=20, cap=0.9999, keep=None, same_sign=False):
    """same_sign=False, keep=None is the original; keep: weights already fixed (taken first, unchanged)."""
    w = np.asarray(w, dtype=np.float64)
    n = len(w)
    quota = int(n * fraction)
    assigned = np.zeros(n, dtype=bool) if keep is None else np.array(keep, dtype=bool)
    out = w.copy()
    order, a, steps = 0, tol, []
    while assigned.sum() < quota:
        free = np.flatnonzero(~assigned)
        wf = w[free]
        cands = candidate_centres(np.abs(wf).max(), tol, order, g0, cap)
        nearest = np.argmin(np.abs(wf[:, None] - cands[None, :]), axis=1)
        c = cands[np.argmax(np.bincount(nearest, minlength=len(cands)))]
        with np.errstate(divide="ignore", invalid="ignore"):
            d = np.abs(wf - c) / np.abs(wf)
        if c == 0:
            small = np.abs(wf) < g0
            d = np.where(small, 0.0, 1.0)
            key = np.where(small, 0.0, 1.0 + np.abs(wf))
        else:
            if same_sign:
                d = np.where(np.sign(wf) == -np.sign(c), np.inf, d)
            key = d
        idx = np.lexsort((free, wf, key))  # ties: value order, then index
        ds = d[idx]
        mean_ok = np.cumsum(ds) <= a * np.maximum(np.cumsum(ds > 0), 1)
        k = len(ds) if mean_ok.all() else int(np.argmin(mean_ok))
        k = min(k, quota - assigned.sum())
        if k == 0:
            order += 1
            if order > max_order:
                a *= 2
            continue
        chosen = free[idx[:k]]
        assigned[chosen] = True
        out[chosen] = c
        steps.append((c, order, k))
        a = tol
    return out, assigned, steps
