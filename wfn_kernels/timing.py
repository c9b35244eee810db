"""Wall-clock medians for benchmarks: the one timing helper bench/, the demo and optimize_for_inference share.

Every timed call is followed by ``torch.cuda.synchronize()`` when CUDA is available, so a GPU figure is
the kernel's time, not its launch time.
"""

from __future__ import annotations

import random
import statistics
import time

import torch


def _sync():
    return torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)


def median_seconds(fn, repeats: int = 10, warmup: int = 2, min_time: float = 0.0) -> float:
    """Median wall time of ``fn()`` over ``repeats`` runs after ``warmup`` runs (CUDA synchronised).

    With ``min_time`` > 0 it keeps timing past ``repeats`` until that many seconds have passed."""
    sync = _sync()
    for _ in range(warmup):
        fn()
    sync()
    times = []
    start = time.perf_counter()
    while len(times) < repeats or time.perf_counter() - start < min_time:
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def interleaved_times(fns, repeats: int = 10, warmup: int = 2, shuffle: bool = True) -> list[list[float]]:
    """Every timed run's seconds for each of ``fns``, timed in alternation (one call of each per round) so
    that load on a shared machine hits every candidate alike (CUDA synchronised after each call).

    With ``shuffle`` (the default) each round calls them in a new order (a fixed-seed permutation), so no
    candidate always follows the same one: a memory-bound kernel's time depends on what its predecessor
    left in the caches, TLB and prefetchers, and in a fixed order that bias lands on one candidate every
    round (measured on a Zen 4 EPYC: the GEMV called right after a 29 MB streaming sum ran up to 15 %
    slower). The times are returned in the order of ``fns``."""
    sync = _sync()
    for fn in fns:
        for _ in range(warmup):
            fn()
    sync()
    times = [[] for _ in fns]
    order = list(range(len(fns)))
    rng = random.Random(0)
    for _ in range(repeats):
        if shuffle:
            rng.shuffle(order)
        for i in order:
            t0 = time.perf_counter()
            fns[i]()
            sync()
            times[i].append(time.perf_counter() - t0)
    return times


def interleaved_medians(fns, repeats: int = 10, warmup: int = 2) -> list[float]:
    """Median seconds of each of ``fns`` from :func:`interleaved_times`, in the order given."""
    return [statistics.median(ts) for ts in interleaved_times(fns, repeats, warmup)]
