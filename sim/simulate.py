"""Run designs over a workload: counts per layer, priced by an energy table, plus totals."""

from __future__ import annotations

from dataclasses import dataclass

from .arch import ArchConfig, parse_designs
from .counts import COUNT_FIELDS, RATIO_FIELDS, check_fits, count_workload
from .energy import ENERGY_FIELDS, EnergyTable, check_table, layer_energy, load_energy_table
from .workload import Workload

ROW_FIELDS = ("design", "layer") + COUNT_FIELDS + ENERGY_FIELDS


@dataclass(frozen=True)
class SimResult:
    """Per-layer rows (dicts with ROW_FIELDS) and per-design totals; names the workload, arch and table."""

    workload: str
    arch: ArchConfig
    table_name: str
    table_unit: str
    designs: tuple
    rows: tuple
    totals: dict
    table: EnergyTable | None = None  # the table that priced the run (for Accelergy action counts)

    def total(self, design: str, field: str):
        return self.totals[design][field]


def simulate(workload: Workload, arch: ArchConfig, designs=("dense_ws",),
             table: EnergyTable | None = None) -> SimResult:
    """Count and price every layer for each design. Validates designs, table and fit before any work."""
    designs = parse_designs(designs)
    table = table if table is not None else load_energy_table(arch.energy_table)
    check_fits(workload, arch, designs)
    check_table(table, arch, designs)
    rows, totals = [], {}
    for design in designs:
        design_rows = []
        for layer, counts in zip(workload.layers, count_workload(workload, arch, design), strict=True):
            row = {"design": design, "layer": layer.name, **counts, **layer_energy(counts, arch, table, design)}
            design_rows.append(row)
        totals[design] = _total(design_rows, design)
        rows += design_rows
    return SimResult(workload.name, arch, table.name, table.unit, designs, tuple(rows), totals, table)


def _total(rows: list[dict], design: str) -> dict:
    """Sums of counts and energies; utilisations weighted by cycles, imbalance by compute cycles."""
    total = {"design": design, "layer": "TOTAL"}
    for f in COUNT_FIELDS + ENERGY_FIELDS:
        if f not in RATIO_FIELDS:
            total[f] = sum(r[f] for r in rows)
    cycles = sum(r["compute_cycles"] for r in rows) or 1
    for f in RATIO_FIELDS:
        total[f] = sum(r[f] * r["compute_cycles"] for r in rows) / cycles
    return total
