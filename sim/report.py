"""Reports: per-layer and total CSV/JSON with fixed columns, and PNG plots.

Files written to an output directory:
- ``layers.csv``: one row per (design, layer), columns ``simulate.ROW_FIELDS``;
- ``totals.csv``: one row per design, same columns plus ``energy_vs_dense`` and ``cycles_vs_dense``;
- ``report.json``: workload, architecture fields, energy table name and unit, totals and layers;
- ``energy_per_layer.png``: stacked energy by component per layer, designs side by side;
- ``vs_dense.png``: total energy and latency of each design relative to dense_ws;
- ``action_counts_<design>.yaml``: each design's totals as Accelergy v0.3 action counts
  (:mod:`wfn_sim.accelergy`), so Accelergy can price the same run.
Energy columns are named ``*_energy_pj`` and hold picojoules, or the table's relative unit when the
table says so (``energy_unit`` in every file).
"""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

from .simulate import ROW_FIELDS, SimResult

STACK_COMPONENTS = ("mult_energy_pj", "add_energy_pj", "shift_energy_pj", "codebook_energy_pj", "rf_energy_pj",
                    "array_energy_pj", "ifmap_sram_energy_pj", "filter_sram_energy_pj", "ofmap_sram_energy_pj",
                    "ifmap_dram_energy_pj", "filter_dram_energy_pj", "ofmap_dram_energy_pj")
META_FIELDS = ("workload", "arch", "energy_table", "energy_unit")
TOTAL_FIELDS = META_FIELDS + ROW_FIELDS + ("energy_vs_dense", "cycles_vs_dense")


def relative_to_dense(result: SimResult) -> dict:
    """{design: (total energy / dense_ws energy, cycles / dense_ws cycles)}; empty without dense_ws."""
    if "dense_ws" not in result.totals:
        return {}
    base = result.totals["dense_ws"]
    return {d: (t["total_energy_pj"] / base["total_energy_pj"], t["cycles"] / base["cycles"])
            for d, t in result.totals.items()}


def _meta(result: SimResult) -> dict:
    return {"workload": result.workload, "arch": result.arch.name, "energy_table": result.table_name,
            "energy_unit": result.table_unit}


def write_csv(result: SimResult, out_dir) -> tuple[Path, Path]:
    """Write layers.csv and totals.csv; returns their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    meta, rel = _meta(result), relative_to_dense(result)
    layers_path, totals_path = out_dir / "layers.csv", out_dir / "totals.csv"
    with open(layers_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=META_FIELDS + ROW_FIELDS)
        writer.writeheader()
        for row in result.rows:
            writer.writerow({**meta, **row})
    with open(totals_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=TOTAL_FIELDS)
        writer.writeheader()
        for design, total in result.totals.items():
            e, c = rel.get(design, ("", ""))
            writer.writerow({**meta, **total, "energy_vs_dense": e, "cycles_vs_dense": c})
    return layers_path, totals_path


def write_json(result: SimResult, out_dir) -> Path:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "report.json"
    doc = {**_meta(result), "arch_config": dataclasses.asdict(result.arch), "designs": list(result.designs),
           "vs_dense": {d: {"energy": e, "cycles": c} for d, (e, c) in relative_to_dense(result).items()},
           "totals": result.totals, "layers": list(result.rows)}
    path.write_text(json.dumps(doc, indent=1, default=_json_default))
    return path


def _json_default(value):
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"report: cannot serialise {type(value).__name__} to JSON")


def plot(result: SimResult, out_dir) -> list[Path]:
    """Write energy_per_layer.png and vs_dense.png (matplotlib, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [_plot_layers(result, out_dir / "energy_per_layer.png", plt)]
    if "dense_ws" in result.totals:
        paths.append(_plot_vs_dense(result, out_dir / "vs_dense.png", plt))
    return paths


def _plot_layers(result: SimResult, path: Path, plt) -> Path:
    designs = list(result.designs)
    layers = [r["layer"] for r in result.rows if r["design"] == designs[0]]
    width = 0.8 / len(designs)
    fig, ax = plt.subplots(figsize=(min(36.0, max(8.0, 0.12 * len(layers) * len(designs))), 6))
    colors = plt.get_cmap("tab20").colors
    for d_i, design in enumerate(designs):
        rows = [r for r in result.rows if r["design"] == design]
        bottom = [0.0] * len(rows)
        xs = [i + (d_i - (len(designs) - 1) / 2) * width for i in range(len(rows))]
        for c_i, comp in enumerate(STACK_COMPONENTS):
            vals = [r[comp] / 1e6 for r in rows]
            ax.bar(xs, vals, width, bottom=bottom, color=colors[c_i % len(colors)],
                   label=comp.replace("_energy_pj", "") if d_i == 0 else None, edgecolor="none")
            bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
        for x, b in zip(xs, bottom, strict=True):
            ax.text(x, b, design[0], ha="center", va="bottom", fontsize=5)
    ax.set_xticks(range(len(layers)))
    ax.set_xticklabels(layers, rotation=90, fontsize=6)
    ax.set_ylabel(f"energy (1e6 {result.table_unit})")
    ax.set_title(f"{result.workload} on {result.arch.name}: energy per layer, designs "
                 f"{', '.join(designs)} (left to right); table {result.table_name}", fontsize=9)
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _plot_vs_dense(result: SimResult, path: Path, plt) -> Path:
    rel = relative_to_dense(result)
    designs = list(rel)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, idx, label in ((axes[0], 0, "total energy"), (axes[1], 1, "latency (cycles)")):
        vals = [rel[d][idx] for d in designs]
        ax.bar(designs, vals, color="tab:blue")
        ax.axhline(1.0, color="k", lw=0.8)
        for i, v in enumerate(vals):
            ax.text(i, v, f"{v:.2f}x", ha="center", va="bottom", fontsize=8)
        ax.set_ylabel(f"{label} / dense_ws")
        ax.tick_params(axis="x", labelsize=8)
    fig.suptitle(f"{result.workload} on {result.arch.name}, energy table {result.table_name}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_all(result: SimResult, out_dir, plots: bool = True) -> list[Path]:
    """CSV + JSON + Accelergy action counts (+ PNG plots); returns every path written."""
    paths = list(write_csv(result, out_dir)) + [write_json(result, out_dir)]
    if result.table is not None:
        from .accelergy import write_action_counts
        from .energy import required_events

        paths += write_action_counts(result, out_dir, result.table, required_events)
    return paths + (plot(result, out_dir) if plots else [])
