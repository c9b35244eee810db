"""Simulator benchmark: speed on ResNet-50, speed against SCALE-Sim, and the U sweep.

    .venv/bin/python bench/bench_sim.py [--repeats 3] [--scalesim-python /tmp/scalesim-venv/bin/python]

1. ResNet-50 (25.5 M weights, synthetic Laplace weights rounded to U = 17 values, given as dense
   float32 arrays): per-filter statistics built from the weights, then all four designs simulated;
   median wall time over fresh weights each repeat (target: <= 30 s).
2. dense_ws on the 16 SCALE-Sim golden layers against SCALE-Sim v3.0.0 on the same layers: SCALE-Sim
   times are those recorded in tests/data/scalesim/golden_ws32.csv when the goldens were made on this
   machine, or re-measured with --scalesim-python (target: >= 20x faster). Correctness is checked first.
3. The U sweep (3, 17, 64, 256) on ResNet-50 and ResNet-18, with and without 50 % extra zeros, and
   ResNet-18 with WFN's clustering step (wfn_kernels.fixing) applied to synthetic weights.
Writes bench/results/sim_bench.csv, sim_bench.md and sim_sweep_* folders (CSV + PNG).
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from wfn_sim.arch import DEFAULT_DESIGNS, ArchConfig
from wfn_sim.counts import count_layer
from wfn_sim.simulate import simulate
from wfn_sim.sweep import SWEEP_DESIGNS, unique_weight_sweep, write_sweep
from wfn_sim.synth import resnet_workload, with_synthetic_weights
from wfn_sim.workload import WeightStats, Workload, load_topology_csv

ROOT = Path(__file__).resolve().parents[1]
GOLDEN_DIR = ROOT / "tests" / "data" / "scalesim"
RESULTS = ROOT / "bench" / "results"


def environment() -> dict:
    return {"python": platform.python_version(), "numpy": np.__version__, "machine": platform.machine(),
            "cpus": os.cpu_count(), "platform": platform.platform()}


def bench_resnet50(repeats: int) -> dict:
    """Median seconds of: dense float32 weights -> per-filter statistics -> four designs.

    The weights are synthetic (Laplace rounded to 17 values, fresh seed each repeat) and handed over as
    dense float32 arrays, as a model's weights would be; building WeightStats from them is timed.
    """
    shapes = resnet_workload(50)
    stats_s, sim_s = [], []
    for seed in range(repeats):
        synthetic = with_synthetic_weights(shapes, 17, seed=seed)
        dense = [s.dense().astype(np.float32) for s in synthetic.stats]
        start = time.perf_counter()
        stats = tuple(WeightStats.from_weight(w, ly.groups) for w, ly in zip(dense, shapes.layers, strict=True))
        built = time.perf_counter()
        result = simulate(Workload("resnet50_U17", shapes.layers, stats), ArchConfig(), DEFAULT_DESIGNS)
        done = time.perf_counter()
        stats_s.append(built - start)
        sim_s.append(done - built)
    weights = sum(ly.weight_count for ly in shapes.layers)
    total = [a + b for a, b in zip(stats_s, sim_s, strict=True)]
    return {"layers": len(shapes.layers), "weights": weights, "stats_s": statistics.median(stats_s),
            "sim_s": statistics.median(sim_s), "total_s": statistics.median(total), "result": result}


def bench_vs_scalesim(repeats: int, scalesim_python: str | None) -> dict:
    golden = list(csv.DictReader(open(GOLDEN_DIR / "golden_ws32.csv")))
    workload = load_topology_csv(GOLDEN_DIR / "golden_layers.csv")
    arch = ArchConfig()
    for layer, gold in zip(workload.layers, golden, strict=True):  # correctness before timing
        assert count_layer(layer, None, arch, "dense_ws")["compute_cycles"] == int(gold["total_cycles"]), layer.name
    times = []
    for _ in range(max(repeats, 20)):
        start = time.perf_counter()
        for layer in workload.layers:
            count_layer(layer, None, arch, "dense_ws")
        times.append(time.perf_counter() - start)
    ours = statistics.median(times)
    if scalesim_python:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "golden.csv"
            subprocess.run([scalesim_python, str(GOLDEN_DIR / "run_scalesim.py"), str(GOLDEN_DIR / "scalesim_ws32.cfg"),
                            str(GOLDEN_DIR / "golden_layers.csv"), str(out)], check=True, cwd=tmp,
                           stdout=subprocess.DEVNULL)
            golden = list(csv.DictReader(open(out)))
        source = "re-measured now"
    else:
        source = "recorded in golden_ws32.csv"
    scalesim = sum(float(g["scalesim_seconds"]) for g in golden)
    return {"layers": len(golden), "ours_s": ours, "scalesim_s": scalesim, "speedup": scalesim / ours,
            "scalesim_source": source}


def run_sweeps(out_root: Path) -> list[dict]:
    summary = []
    for depth in (50, 18):
        for zero_fraction in (0.0, 0.5):
            arch = ArchConfig(activation_group_filters=2)
            rows = unique_weight_sweep(resnet_workload(depth), arch, (3, 17, 64, 256), zero_fraction=zero_fraction)
            tag = f"sim_sweep_resnet{depth}_zeros{int(zero_fraction * 100)}"
            write_sweep(rows, out_root / tag, f"ResNet-{depth}, +{zero_fraction:.0%} zeros, G=2, horowitz45")
            for r in rows:
                if r["design"] in ("factorised", "shift_add", "codebook"):
                    summary.append({"network": f"resnet{depth}", "extra_zeros": zero_fraction, **r})
    return summary


def run_wfn_clustered(depth: int, tolerances=(0.01, 0.05, 0.1), seed: int = 0) -> list[dict]:
    """WFN's clustering step (wfn_kernels.fixing.clustering.cluster, all weights fixed at once, network-wide
    centres) applied to synthetic He-scaled Laplace weights of a ResNet; no training, so this is the value
    structure WFN produces, not a trained WFN model. One summary row per tolerance (delta)."""
    import torch

    from wfn_kernels.fixing.clustering import cluster

    shapes = resnet_workload(depth)
    gen = torch.Generator().manual_seed(seed)
    flat = [torch.empty(ly.weight_count).exponential_(generator=gen) * (2.0 / ly.gemm_k) ** 0.5 / 2 ** 0.5
            * (torch.randint(0, 2, (ly.weight_count,), generator=gen) * 2 - 1) for ly in shapes.layers]
    weights = torch.cat(flat)
    rows = []
    for tol in tolerances:
        start = time.perf_counter()
        fixed = cluster(weights, 1.0, tol).values.double().numpy()
        seconds = time.perf_counter() - start
        stats, offset = [], 0
        for ly in shapes.layers:
            layer_weights = fixed[offset:offset + ly.weight_count].reshape(ly.out_channels, -1)
            stats.append(WeightStats.from_weight(layer_weights, ly.groups))
            offset += ly.weight_count
        wl = Workload(f"resnet{depth}_wfn_delta{tol}", shapes.layers, tuple(stats))
        res = simulate(wl, ArchConfig(activation_group_filters=2), SWEEP_DESIGNS)
        t = res.totals
        dense_pj = t["dense_ws"]["total_energy_pj"]
        rows.append({"tolerance": tol, "network_unique": int(np.unique(fixed).size), "cluster_s": seconds,
                     "mean_filter_unique": float(np.mean(np.concatenate([s.unique_per_filter for s in stats]))),
                     "max_terms": int(max(s.terms_per_value.max() for s in stats)),
                     **{f"{d}_energy_vs_dense": t[d]["total_energy_pj"] / dense_pj for d in SWEEP_DESIGNS},
                     "factorised_gain_vs_sparse_pe":
                         t["sparse_pe"]["total_energy_pj"] / t["factorised"]["total_energy_pj"]})
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--scalesim-python", help="python of a venv with scalesim==3.0.0 to re-time SCALE-Sim")
    p.add_argument("--no-sweep", action="store_true")
    args = p.parse_args()
    env = environment()
    print("environment:", env)
    r50 = bench_resnet50(args.repeats)
    print(f"ResNet-50 ({r50['layers']} layers, {r50['weights']:,} weights), 4 designs: median {r50['total_s']:.2f} s "
          f"= weight statistics {r50['stats_s']:.2f} s + simulation {r50['sim_s']:.2f} s (target <= 30 s)")
    vs = bench_vs_scalesim(args.repeats, args.scalesim_python)
    print(f"dense_ws on {vs['layers']} golden layers: ours median {vs['ours_s'] * 1e3:.3f} ms, SCALE-Sim "
          f"{vs['scalesim_s']:.1f} s ({vs['scalesim_source']}): {vs['speedup']:,.0f}x faster (target >= 20x)")
    RESULTS.mkdir(parents=True, exist_ok=True)
    rows = [{"metric": "resnet50_4designs_total_s", "value": r50["total_s"], "target": "<= 30"},
            {"metric": "resnet50_weight_statistics_s", "value": r50["stats_s"], "target": ""},
            {"metric": "resnet50_4designs_simulation_s", "value": r50["sim_s"], "target": ""},
            {"metric": "golden_layers_dense_ws_ours_s", "value": vs["ours_s"], "target": ""},
            {"metric": "golden_layers_scalesim_s", "value": vs["scalesim_s"], "target": vs["scalesim_source"]},
            {"metric": "speedup_vs_scalesim", "value": vs["speedup"], "target": ">= 20"}]
    sweep = [] if args.no_sweep else run_sweeps(RESULTS)
    wfn = [] if args.no_sweep else run_wfn_clustered(18)
    for w in wfn:
        print(f"ResNet-18 WFN-clustered delta={w['tolerance']}: network U={w['network_unique']}, mean per-filter "
              f"U={w['mean_filter_unique']:.1f}, max terms {w['max_terms']}: factorised "
              f"{w['factorised_energy_vs_dense']:.3f}x dense_ws, shift_add {w['shift_add_energy_vs_dense']:.3f}x, "
              f"factorised gain vs sparse_pe {w['factorised_gain_vs_sparse_pe']:.2f}x "
              f"(clustering {w['cluster_s']:.1f} s)")
    write_outputs(env, rows, sweep, r50["result"], wfn)
    for s in sweep:
        if s["design"] == "factorised":
            print(f"{s['network']} +{s['extra_zeros']:.0%} zeros U={s['unique_values']:>3}: factorised "
                  f"{s['energy_vs_dense']:.3f}x dense_ws energy, {s['factorised_energy_gain_vs_sparse_pe']:.2f}x "
                  f"less than sparse_pe, {s['factorised_speedup_vs_sparse_pe']:.2f}x faster")


def write_outputs(env: dict, rows: list[dict], sweep: list[dict], r50_result, wfn: list[dict]) -> None:
    with open(RESULTS / "sim_bench.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["metric", "value", "target"])
        writer.writeheader()
        writer.writerows(rows)
    lines = ["# wfn-sim benchmark", "", "Environment: " + ", ".join(f"{k} {v}" for k, v in env.items()), "",
             "| metric | value | target |", "|---|---|---|"]
    lines += [f"| {r['metric']} | {r['value']:.4g} | {r['target']} |" for r in rows]
    lines += ["", "ResNet-50, U = 17, ws32, horowitz45 (pJ):", "", "| design | cycles | energy (uJ) |", "|---|---|---|"]
    lines += [f"| {d} | {t['cycles']:,} | {t['total_energy_pj'] / 1e6:.1f} |" for d, t in r50_result.totals.items()]
    if sweep:
        lines += ["", "U sweep (G = 2; gain = sparse_pe energy / factorised energy):", "",
                  "| network | extra zeros | U | design | energy vs dense_ws | cycles vs dense_ws "
                  "| factorised gain vs sparse_pe |",
                  "|---|---|---|---|---|---|---|"]
        lines += [f"| {s['network']} | {s['extra_zeros']:.0%} | {s['unique_values']} | {s['design']} | "
                  f"{s['energy_vs_dense']:.3f} | {s['cycles_vs_dense']:.3f} | "
                  f"{s['factorised_energy_gain_vs_sparse_pe']:.2f} |" for s in sweep]
    if wfn:
        lines += ["", "ResNet-18 with WFN's clustering step on synthetic weights (network-wide centres, G = 2):", "",
                  "| delta | network U | mean per-filter U | max terms | codebook | shift_add | factorised | "
                  "factorised gain vs sparse_pe |", "|---|---|---|---|---|---|---|---|"]
        lines += [f"| {w['tolerance']} | {w['network_unique']} | {w['mean_filter_unique']:.1f} | {w['max_terms']} | "
                  f"{w['codebook_energy_vs_dense']:.3f} | {w['shift_add_energy_vs_dense']:.3f} | "
                  f"{w['factorised_energy_vs_dense']:.3f} | {w['factorised_gain_vs_sparse_pe']:.2f} |" for w in wfn]
    (RESULTS / "sim_bench.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {RESULTS / 'sim_bench.csv'}, {RESULTS / 'sim_bench.md'}")


if __name__ == "__main__":
    sys.exit(main())
