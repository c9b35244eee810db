"""Benchmark: one WFN clustering pass over 25M synthetic Laplace(0, 0.02) weights (ResNet-50 size).

Prints the median wall time of the first (30 %, δ_t = 10δ) and last (100 %, δ_t = δ) fixing passes, with
correctness checked first (exact quota, fixed weights on the centres). Target: <= 10 s on 2 cores.
Usage: python bench/bench_clustering.py [--n 25000000] [--repeats 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
import tracemalloc

import numpy as np
import torch

from wfn_kernels.fixing.clustering import cluster


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=25_000_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--delta", type=float, default=0.01)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"threads {args.threads}, n = {args.n:,}")
    w = torch.from_numpy(np.random.default_rng(0).laplace(0, 0.02, args.n).astype(np.float32))
    for frac, tol in [(0.3, 10 * args.delta), (1.0, args.delta)]:
        r = cluster(w, frac, tol)
        assert int(r.fixed.sum()) == int(args.n * frac), "quota not met exactly"
        assert torch.isin(r.values[r.fixed], r.centres).all(), "a fixed weight is off the centres"
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            cluster(w, frac, tol)
            times.append(time.perf_counter() - t0)
        print(f"fraction {frac:<4} δ_t {tol:<6} median {statistics.median(times):6.2f} s "
              f"(min {min(times):.2f}) centres {len(r.centres)} accepted steps {len(r.steps)} "
              f"failures {r.failures} max order {r.max_order}")
    tracemalloc.start()
    small = w[: args.n // 10]
    cluster(small, 1.0, args.delta)
    peak = tracemalloc.get_traced_memory()[1]
    print(f"numpy peak traced memory at n/10: {peak / 2**20:.0f} MiB ({peak / small.numel():.0f} B/weight)")


if __name__ == "__main__":
    main()
