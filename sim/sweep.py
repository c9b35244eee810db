"""Energy and latency versus the number of unique weights U (UCNN's question).

For each U the same layers get synthetic Laplace weights rounded to U values (see synth.py); every
design runs on them. The factorised gain is reported against ``sparse_pe``, the same PEs without
factorisation (UCNN's sparsity-aware baseline), and every design against ``dense_ws``.
"""

from __future__ import annotations

import csv
from pathlib import Path

from .arch import ArchConfig, parse_designs
from .energy import EnergyTable, load_energy_table
from .simulate import simulate
from .synth import with_synthetic_weights
from .workload import Workload

SWEEP_FIELDS = ("unique_values", "design", "total_energy_pj", "cycles", "energy_vs_dense", "cycles_vs_dense",
                "multiplies", "adds", "shifts", "weight_storage_bits", "load_imbalance",
                "factorised_energy_gain_vs_sparse_pe", "factorised_speedup_vs_sparse_pe")
SWEEP_DESIGNS = ("dense_ws", "codebook", "shift_add", "factorised", "sparse_pe")


def unique_weight_sweep(workload: Workload, arch: ArchConfig, unique_values=(3, 17, 64, 256),
                        designs=SWEEP_DESIGNS, table: EnergyTable | None = None, seed: int = 0,
                        zero_fraction: float = 0.0) -> list[dict]:
    """One row (SWEEP_FIELDS) per (U, design). Needs dense_ws, factorised and sparse_pe among designs."""
    designs = parse_designs(designs)
    missing = [d for d in ("dense_ws", "factorised", "sparse_pe") if d not in designs]
    if missing:
        raise ValueError(f"unique_weight_sweep: designs must include {missing} to report gains")
    table = table if table is not None else load_energy_table(arch.energy_table)
    rows = []
    for u in unique_values:
        result = simulate(with_synthetic_weights(workload, u, seed, zero_fraction), arch, designs, table)
        t = result.totals
        dense, fact, sparse = t["dense_ws"], t["factorised"], t["sparse_pe"]
        for design in designs:
            rows.append({
                "unique_values": u, "design": design, "total_energy_pj": t[design]["total_energy_pj"],
                "cycles": t[design]["cycles"],
                "energy_vs_dense": t[design]["total_energy_pj"] / dense["total_energy_pj"],
                "cycles_vs_dense": t[design]["cycles"] / dense["cycles"],
                **{f: t[design][f] for f in ("multiplies", "adds", "shifts", "weight_storage_bits", "load_imbalance")},
                "factorised_energy_gain_vs_sparse_pe": sparse["total_energy_pj"] / fact["total_energy_pj"],
                "factorised_speedup_vs_sparse_pe": sparse["cycles"] / fact["cycles"],
            })
    return rows


def write_sweep(rows: list[dict], out_dir, title: str = "", plots: bool = True) -> list[Path]:
    """sweep.csv and, with ``plots``, sweep.png (energy and cycles vs U, relative to dense_ws)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "sweep.csv"
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=SWEEP_FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    if not plots:
        return [path]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for design in dict.fromkeys(r["design"] for r in rows):
        pts = [r for r in rows if r["design"] == design]
        us = [r["unique_values"] for r in pts]
        axes[0].plot(us, [r["energy_vs_dense"] for r in pts], marker="o", label=design)
        axes[1].plot(us, [r["cycles_vs_dense"] for r in pts], marker="o", label=design)
    for ax, label in ((axes[0], "energy / dense_ws"), (axes[1], "cycles / dense_ws")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("unique weight values U")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    png = out_dir / "sweep.png"
    fig.savefig(png, dpi=120)
    plt.close(fig)
    return [path, png]
