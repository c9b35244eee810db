"""Wall-clock medians for benchmarks (bench/ and the demo share them)."""

from __future__ import annotations

import statistics
import time

import torch


def median_seconds(fn, repeats: int = 10, warmup: int = 2, min_time: float = 0.0) -> float:
    """Median wall time of ``fn()`` over ``repeats`` runs after ``warmup`` runs (CUDA synchronised).

    With ``min_time`` > 0 it keeps timing past ``repeats`` until that many seconds have passed."""
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
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


def interleaved_medians(fns, repeats: int = 10, warmup: int = 2) -> list[float]:
    """Median wall time of each of ``fns``, timed in alternation (fn0, fn1, ..., fn0, fn1, ...) so that
    load on a shared machine hits every candidate alike; returns seconds in the order given."""
    for fn in fns:
        for _ in range(warmup):
            fn()
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, ts in zip(fns, times):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
    return [statistics.median(ts) for ts in times]
