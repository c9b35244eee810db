"""Simulator benchmark: WFN-fixed models, speed on ResNet-50, SCALE-Sim side by side, synthetic sweeps.

    .venv/bin/python bench/bench_sim.py [--model LABEL=PATH:N,C,H,W[:CLASS] ...]
        [--scalesim-python /tmp/scalesim-venv/bin/python] [--repeats 3] [--no-sweep]

1. WFN-fixed models (real weights; e.g. ``wfn demo``'s model.wfn.safetensors): every design on the
   weight-stationary array, the dense / codebook / shift-add designs on the output- and input-stationary
   arrays; energy vs dense_ws, the dataflow share (sparse_pe vs dense_ws: zero skipping on UCNN's PEs) and
   the weight-repetition share (factorised vs sparse_pe). -> sim_real_models.csv
2. ResNet-50 (synthetic Laplace weights rounded to U = 17 values, handed over as dense float32 arrays):
   per-filter statistics built from the weights, then every design that applies on each of the three
   dataflows (ws: 5 designs, os and is: 3); median wall time (target <= 10 s).
3. SCALE-Sim side by side (with --scalesim-python): the 18 layers of tests/data/scalesim/golden_layers.csv
   on the 32x32 configs of each dataflow, run by SCALE-Sim v3.0.0 (run_scalesim.py, one process per
   dataflow) and by wfn-sim on the same layers in the same run: ``layer_report`` (dram_model scalesim:
   every SCALE-Sim report column, checked equal to the fresh SCALE-Sim output) and the closed-form
   counts alone. Wall time of each. -> sim_vs_scalesim.csv
4. Synthetic-weight sweeps (labelled so): U = 3, 17, 64, 256 on ResNet-50/18, +-50 % zeros, and ResNet-18
   with WFN's clustering step applied to synthetic weights.
Writes bench/results/sim_bench.{csv,md}, sim_real_models.csv, sim_vs_scalesim.csv and sim_sweep_* folders.
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
from wfn_sim.arch import ArchConfig
from wfn_sim.counts import count_layer
from wfn_sim.scalesim import GOLDEN_COLUMNS, arch_from_config, layer_report
from wfn_sim.simulate import simulate
from wfn_sim.sweep import SWEEP_DESIGNS, unique_weight_sweep, write_sweep
from wfn_sim.synth import resnet_workload, with_synthetic_weights
from wfn_sim.workload import WeightStats, Workload, load_topology_csv

ROOT = Path(__file__).resolve().parents[1]
GOLDEN_DIR = ROOT / "tests" / "data" / "scalesim"
RESULTS = ROOT / "bench" / "results"
DATAFLOW_DESIGNS = {"ws_systolic": ("dense_ws", "codebook", "shift_add", "factorised", "sparse_pe"),
                    "os_systolic": ("dense_ws", "codebook", "shift_add"),
                    "is_systolic": ("dense_ws", "codebook", "shift_add")}


def environment() -> dict:
    return {"python": platform.python_version(), "numpy": np.__version__, "machine": platform.machine(),
            "cpus": os.cpu_count(), "platform": platform.platform()}


def run_real_models(specs: list[str]) -> list[dict]:
    """One row per (model, dataflow, design): energy and cycles vs dense_ws, plus the two shares."""
    from wfn_sim.extract import load_model_workload

    rows = []
    for spec in specs:
        label, rest = spec.split("=", 1)
        parts = rest.split(":")
        path, shape = parts[0], tuple(int(v) for v in parts[1].split(","))
        workload = load_model_workload(path, shape, parts[2] if len(parts) > 2 else None)
        u = sorted({int(np.unique(s.values).size) for s in workload.stats})
        for dataflow, designs in DATAFLOW_DESIGNS.items():
            res = simulate(workload, ArchConfig(dataflow=dataflow, activation_group_filters=2), designs)
            t = res.totals
            dense = t["dense_ws"]
            for design in designs:
                row = {"model": label, "file": path, "layers": len(workload.layers), "unique_per_layer": u,
                       "dataflow": dataflow, "design": design,
                       "energy_vs_dense": t[design]["total_energy_pj"] / dense["total_energy_pj"],
                       "cycles_vs_dense": t[design]["cycles"] / dense["cycles"],
                       "total_energy_pj": t[design]["total_energy_pj"], "cycles": t[design]["cycles"]}
                if design == "factorised":
                    row["gain_vs_sparse_pe"] = t["sparse_pe"]["total_energy_pj"] / t[design]["total_energy_pj"]
                rows.append(row)
    return rows


def bench_resnet50(repeats: int) -> dict:
    """Median seconds of: dense float32 weights -> per-filter statistics -> every design on each dataflow."""
    shapes = resnet_workload(50)
    stats_s, sim_s, results = [], [], {}
    for seed in range(repeats):
        synthetic = with_synthetic_weights(shapes, 17, seed=seed)
        dense = [s.dense().astype(np.float32) for s in synthetic.stats]
        start = time.perf_counter()
        stats = tuple(WeightStats.from_weight(w, ly.groups) for w, ly in zip(dense, shapes.layers, strict=True))
        built = time.perf_counter()
        wl = Workload("resnet50_U17_synthetic", shapes.layers, stats)
        for dataflow, designs in DATAFLOW_DESIGNS.items():
            results[dataflow] = simulate(wl, ArchConfig(dataflow=dataflow), designs)
        done = time.perf_counter()
        stats_s.append(built - start)
        sim_s.append(done - built)
    total = [a + b for a, b in zip(stats_s, sim_s, strict=True)]
    start = time.perf_counter()
    scalesim_dense = simulate(shapes, ArchConfig(dram_model="scalesim"), ("dense_ws",))
    scalesim_s = time.perf_counter() - start
    return {"layers": len(shapes.layers), "weights": sum(ly.weight_count for ly in shapes.layers),
            "stats_s": statistics.median(stats_s), "sim_s": statistics.median(sim_s),
            "total_s": statistics.median(total), "results": results, "scalesim_dense_ws_s": scalesim_s,
            "scalesim_dense": scalesim_dense}


def _time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_vs_scalesim(scalesim_python: str, repeats: int) -> list[dict]:
    """SCALE-Sim and wfn-sim on the same 18 layers per dataflow, in this run; outputs checked equal."""
    workload = load_topology_csv(GOLDEN_DIR / "golden_layers.csv")
    rows = []
    for df in ("ws", "os", "is"):
        cfg = GOLDEN_DIR / f"scalesim_{df}32.cfg"
        arch = arch_from_config(cfg)
        with tempfile.TemporaryDirectory() as tmp:
            out, times = Path(tmp) / "out.csv", Path(tmp) / "times.csv"
            start = time.perf_counter()
            subprocess.run([scalesim_python, str(GOLDEN_DIR / "run_scalesim.py"), str(cfg),
                            str(GOLDEN_DIR / "golden_layers.csv"), str(out), str(times)], check=True, cwd=tmp,
                           stdout=subprocess.DEVNULL)
            process_s = time.perf_counter() - start
            fresh = list(csv.DictReader(open(out)))
            per_layer = {r["layer"]: float(r["scalesim_seconds"]) for r in csv.DictReader(open(times))}
        for layer, gold in zip(workload.layers, fresh, strict=True):
            ours = layer_report(layer, arch)
            for col in GOLDEN_COLUMNS:  # correctness before timing
                assert abs(ours[col] - float(gold[col])) <= 1e-9 * max(1.0, abs(float(gold[col]))), (layer.name, col)
            rows.append({"dataflow": arch.dataflow, "layer": layer.name, "scalesim_s": per_layer[layer.name],
                         "wfnsim_scalesim_model_s": _time(lambda ly=layer: layer_report(ly, arch), repeats),
                         "wfnsim_closed_form_s": _time(lambda ly=layer: count_layer(ly, None, arch.replace(
                             dram_model="reuse"), "dense_ws"), max(repeats, 20)),
                         "scalesim_process_s": process_s})
    return rows


def run_sweeps(out_root: Path) -> list[dict]:
    summary = []
    for depth in (50, 18):
        for zero_fraction in (0.0, 0.5):
            arch = ArchConfig(activation_group_filters=2)
            rows = unique_weight_sweep(resnet_workload(depth), arch, (3, 17, 64, 256), zero_fraction=zero_fraction)
            tag = f"sim_sweep_resnet{depth}_zeros{int(zero_fraction * 100)}"
            write_sweep(rows, out_root / tag, f"ResNet-{depth}, synthetic weights, +{zero_fraction:.0%} zeros, G=2, "
                                              "horowitz45")
            for r in rows:
                if r["design"] in ("factorised", "shift_add", "codebook", "sparse_pe"):
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
        fixed = cluster(weights, 1.0, tol).values.double().numpy()
        stats, offset = [], 0
        for ly in shapes.layers:
            stats.append(WeightStats.from_weight(fixed[offset:offset + ly.weight_count].reshape(ly.out_channels, -1),
                                                 ly.groups))
            offset += ly.weight_count
        res = simulate(Workload(f"resnet{depth}_wfn_delta{tol}", shapes.layers, tuple(stats)),
                       ArchConfig(activation_group_filters=2), SWEEP_DESIGNS)
        t = res.totals
        dense_pj = t["dense_ws"]["total_energy_pj"]
        rows.append({"tolerance": tol, "network_unique": int(np.unique(fixed).size),
                     **{f"{d}_energy_vs_dense": t[d]["total_energy_pj"] / dense_pj for d in SWEEP_DESIGNS},
                     "factorised_gain_vs_sparse_pe":
                         t["sparse_pe"]["total_energy_pj"] / t["factorised"]["total_energy_pj"]})
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", action="append", default=[], help="LABEL=PATH:N,C,H,W[:CLASS] of a WFN-fixed model")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--scalesim-python", help="python of a venv with scalesim==3.0.0: run it side by side")
    p.add_argument("--no-sweep", action="store_true")
    args = p.parse_args()
    env = environment()
    print("environment:", env)
    real = run_real_models(args.model)
    r50 = bench_resnet50(args.repeats)
    print(f"ResNet-50 ({r50['layers']} layers, {r50['weights']:,} weights), 11 design x dataflow runs: median "
          f"{r50['total_s']:.2f} s = statistics {r50['stats_s']:.2f} s + simulation {r50['sim_s']:.2f} s "
          f"(target <= 10 s); dense_ws with dram_model scalesim {r50['scalesim_dense_ws_s']:.1f} s")
    side = bench_vs_scalesim(args.scalesim_python, args.repeats) if args.scalesim_python else []
    sweep = [] if args.no_sweep else run_sweeps(RESULTS)
    wfn = [] if args.no_sweep else run_wfn_clustered(18)
    write_outputs(env, args, real, r50, side, sweep, wfn)


def _csv(path: Path, rows: list[dict]) -> None:
    fields = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def _real_lines(real: list[dict]) -> list[str]:
    lines = ["## WFN-fixed models (real weights)", "",
             "ws32-class arrays (32x32, 64 KB SRAMs, G = 2), horowitz45. dataflow share = sparse_pe / dense_ws "
             "energy (zero skipping on UCNN's PEs, no weight repetition); repetition share = factorised gain over "
             "sparse_pe.", "",
             "| model | dataflow | design | energy vs dense_ws | cycles vs dense_ws | factorised gain vs sparse_pe |",
             "|---|---|---|---|---|---|"]
    for r in real:
        gain = f"{r['gain_vs_sparse_pe']:.2f}" if "gain_vs_sparse_pe" in r else ""
        lines.append(f"| {r['model']} | {r['dataflow']} | {r['design']} | {r['energy_vs_dense']:.3f} | "
                     f"{r['cycles_vs_dense']:.3f} | {gain} |")
    return lines + [""]


def _side_lines(side: list[dict]) -> list[str]:
    lines = ["## SCALE-Sim v3.0.0 and wfn-sim side by side (same 18 layers, same run)", "",
             "wfn-sim `layer_report` reproduces every SCALE-Sim report column (checked against this run's SCALE-Sim "
             "output before timing); `closed form` is the dense_ws count alone (dram_model reuse).", "",
             "| dataflow | SCALE-Sim (s, sum of layers) | SCALE-Sim process (s) | wfn-sim, SCALE-Sim model (s) | "
             "speed-up | wfn-sim closed form (s) | speed-up |", "|---|---|---|---|---|---|---|"]
    for df in ("ws_systolic", "os_systolic", "is_systolic"):
        rows = [r for r in side if r["dataflow"] == df]
        if not rows:
            continue
        ss = sum(r["scalesim_s"] for r in rows)
        ours = sum(r["wfnsim_scalesim_model_s"] for r in rows)
        closed = sum(r["wfnsim_closed_form_s"] for r in rows)
        lines.append(f"| {df} | {ss:.1f} | {rows[0]['scalesim_process_s']:.1f} | {ours:.3f} | {ss / ours:,.0f}x | "
                     f"{closed * 1e3:.3f} ms | {ss / closed:,.0f}x |")
    return lines + [""]


def write_outputs(env, args, real, r50, side, sweep, wfn) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    rows = [{"metric": "resnet50_all_designs_3_dataflows_total_s", "value": r50["total_s"], "target": "<= 10"},
            {"metric": "resnet50_weight_statistics_s", "value": r50["stats_s"], "target": ""},
            {"metric": "resnet50_all_designs_3_dataflows_simulation_s", "value": r50["sim_s"], "target": ""},
            {"metric": "resnet50_dense_ws_dram_model_scalesim_s", "value": r50["scalesim_dense_ws_s"], "target": ""}]
    for df in ("ws_systolic", "os_systolic", "is_systolic"):
        sel = [r for r in side if r["dataflow"] == df]
        if sel:
            ss, ours = sum(r["scalesim_s"] for r in sel), sum(r["wfnsim_scalesim_model_s"] for r in sel)
            rows += [{"metric": f"golden18_{df}_scalesim_s", "value": ss, "target": "measured in this run"},
                     {"metric": f"golden18_{df}_wfnsim_scalesim_model_s", "value": ours, "target": ""},
                     {"metric": f"golden18_{df}_speedup", "value": ss / ours, "target": ""}]
    _csv(RESULTS / "sim_bench.csv", rows)
    if real:
        _csv(RESULTS / "sim_real_models.csv", real)
    if side:
        _csv(RESULTS / "sim_vs_scalesim.csv", side)
    cmd = "python bench/bench_sim.py " + " ".join(f"--model {m}" for m in args.model)
    cmd += f" --repeats {args.repeats}" + (" --scalesim-python PYTHON" if args.scalesim_python else "")
    lines = ["# wfn-sim benchmark", "", f"Command: `{cmd}`", "",
             "Environment: " + ", ".join(f"{k} {v}" for k, v in env.items()), ""]
    lines += _real_lines(real) if real else []
    lines += ["## Speed", "", "| metric | value | target |", "|---|---|---|"]
    lines += [f"| {r['metric']} | {r['value']:.4g} | {r['target']} |" for r in rows] + [""]
    lines += _side_lines(side) if side else ["SCALE-Sim side by side: not run (no --scalesim-python).", ""]
    lines += ["## ResNet-50, synthetic weights (Laplace rounded to U = 17 values), horowitz45 (pJ)", "",
              "| dataflow | design | cycles | energy (uJ) | energy vs dense_ws |", "|---|---|---|---|---|"]
    for df, res in r50["results"].items():
        base = res.totals["dense_ws"]["total_energy_pj"]
        lines += [f"| {df} | {d} | {t['cycles']:,} | {t['total_energy_pj'] / 1e6:.1f} | "
                  f"{t['total_energy_pj'] / base:.3f} |" for d, t in res.totals.items()]
    sd = r50["scalesim_dense"].totals["dense_ws"]
    lines += ["", f"dense_ws (ws_systolic) under dram_model scalesim: {sd['cycles']:,} cycles, "
              f"{sd['cycles_incl_prefetch']:,} incl. prefetch, DRAM reads ifmap {sd['ifmap_dram_reads']:,} / filter "
              f"{sd['filter_dram_reads']:,} words, ofmap writes {sd['ofmap_dram_writes']:,} words; energy "
              f"{sd['total_energy_pj'] / 1e6:.1f} uJ.", ""]
    if sweep:
        lines += ["## U sweep, synthetic weights (G = 2; gain = sparse_pe energy / factorised energy)", "",
                  "| network | extra zeros | U | design | energy vs dense_ws | cycles vs dense_ws "
                  "| factorised gain vs sparse_pe |", "|---|---|---|---|---|---|---|"]
        lines += [f"| {s['network']} | {s['extra_zeros']:.0%} | {s['unique_values']} | {s['design']} | "
                  f"{s['energy_vs_dense']:.3f} | {s['cycles_vs_dense']:.3f} | "
                  f"{s['factorised_energy_gain_vs_sparse_pe']:.2f} |" for s in sweep] + [""]
    if wfn:
        lines += ["## ResNet-18 with WFN's clustering step on synthetic weights (no training; G = 2)", "",
                  "| delta | network U | codebook | shift_add | sparse_pe | factorised | factorised gain vs sparse_pe |",
                  "|---|---|---|---|---|---|---|"]
        lines += [f"| {w['tolerance']} | {w['network_unique']} | {w['codebook_energy_vs_dense']:.3f} | "
                  f"{w['shift_add_energy_vs_dense']:.3f} | {w['sparse_pe_energy_vs_dense']:.3f} | "
                  f"{w['factorised_energy_vs_dense']:.3f} | {w['factorised_gain_vs_sparse_pe']:.2f} |" for w in wfn]
    (RESULTS / "sim_bench.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {RESULTS / 'sim_bench.csv'}, {RESULTS / 'sim_bench.md'}")


if __name__ == "__main__":
    sys.exit(main())
