"""The benchmark timing helper (wfn_kernels/timing.py): shuffled interleaving, results in the given order."""

from __future__ import annotations

from wfn_kernels.timing import interleaved_medians, interleaved_times


def _recorders(n):
    calls = []
    return calls, [lambda i=i: calls.append(i) for i in range(n)]


def test_shuffled_rounds_vary_the_order_and_keep_each_candidates_times():
    calls, fns = _recorders(4)
    times = interleaved_times(fns, repeats=12, warmup=1)
    assert [len(t) for t in times] == [12] * 4
    timed = calls[4:]  # after one warm-up call each, in order
    assert calls[:4] == [0, 1, 2, 3]
    rounds = [tuple(timed[4 * r:4 * r + 4]) for r in range(12)]
    assert all(sorted(r) == [0, 1, 2, 3] for r in rounds)  # every candidate once per round
    predecessors = {r[r.index(2) - 1] for r in rounds if r.index(2) > 0}
    assert len(set(rounds)) > 1 and len(predecessors) > 1  # no fixed order, no fixed predecessor


def test_unshuffled_rounds_keep_the_given_order():
    calls, fns = _recorders(3)
    interleaved_times(fns, repeats=5, warmup=0, shuffle=False)
    assert calls == [0, 1, 2] * 5


def test_medians_follow_the_order_of_fns():
    import time

    slow, fast = (lambda: time.sleep(0.004)), (lambda: None)
    t = interleaved_medians([slow, fast], repeats=5, warmup=0)
    assert t[0] > 0.003 > t[1]
