"""Energy = sum of event counts x energy per event (Accelergy's split), from a swappable YAML table.

A table (configs/<name>.yaml) has ``name``, ``unit`` (pJ, or a relative unit), ``events``: a mapping
of event -> {energy, source}, and ``sram_read_64b``: a list of {kb, energy, source} points priced per
64-bit access and interpolated log-log in SRAM size. Arithmetic events are named
``int<bits>_add|mult|shift``; the widths each design needs come from the architecture.

Reads and writes may be priced apart: the optional events ``dram_read_per_bit`` / ``dram_write_per_bit``
take the place of ``dram_per_bit`` (ifmap and filter traffic are reads, ofmap traffic writes), and
``<tensor>_sram_read_per_bit`` / ``<tensor>_sram_write_per_bit`` (tensor ifmap, filter, ofmap) that of
the interpolated SRAM energy. Without them writes are priced as reads. A table can also be an
Accelergy energy reference table bound to these events (:mod:`wfn_sim.accelergy`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from .accelergy import binding_entries
from .arch import ArchConfig, _resolve, load_yaml

ENERGY_FIELDS = (
    "mult_energy_pj", "add_energy_pj", "shift_energy_pj", "codebook_energy_pj", "rf_energy_pj",
    "array_energy_pj", "ifmap_sram_energy_pj", "filter_sram_energy_pj", "ofmap_sram_energy_pj",
    "ifmap_dram_energy_pj", "filter_dram_energy_pj", "ofmap_dram_energy_pj",
    "compute_energy_pj", "ifmap_energy_pj", "filter_energy_pj", "ofmap_energy_pj", "total_energy_pj",
)
FIXED_EVENTS = ("codebook_read", "rf_per_bit", "array_hop_per_bit")
TENSORS = ("ifmap", "filter", "ofmap")
SRAM_EVENTS = tuple(f"{t}_sram_{rw}_per_bit" for t in TENSORS for rw in ("read", "write"))


@dataclass(frozen=True)
class EnergyTable:
    """Energies per event (``events``: name -> energy in ``unit``) and SRAM points ((kb, energy), ...).

    ``binding``: for a table read from an Accelergy ERT, ((event, (component, action, arguments, bits)), ...).
    """

    name: str
    unit: str
    events: dict
    sources: dict
    sram_points: tuple
    binding: tuple = ()

    def __post_init__(self):
        for event, value in self.events.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"energy table {self.name!r}: event {event!r} needs a number >= 0, got {value!r}")
        if not self.sram_points and not all(e in self.events for e in SRAM_EVENTS):
            raise ValueError(f"energy table {self.name!r}: sram_read_64b needs at least one {{kb, energy}} point "
                             f"(or give all of {list(SRAM_EVENTS)})")
        if "dram_per_bit" not in self.events and not {"dram_read_per_bit", "dram_write_per_bit"} <= set(self.events):
            raise ValueError(f"energy table {self.name!r} needs dram_per_bit, or both dram_read_per_bit and "
                             "dram_write_per_bit")
        for kb, energy in self.sram_points:
            if kb <= 0 or energy <= 0:
                raise ValueError(f"energy table {self.name!r}: sram_read_64b point kb={kb}, energy={energy} "
                                 "must be positive")

    def event(self, name: str, design: str = "") -> float:
        if name not in self.events:
            need = f" needed by design {design!r}" if design else ""
            raise ValueError(f"energy table {self.name!r} has no event {name!r}{need}; it has {sorted(self.events)}")
        return float(self.events[name])

    def dram(self, kind: str) -> float:
        """Energy per bit of a DRAM ``read`` or ``write``."""
        name = f"dram_{kind}_per_bit"
        return float(self.events[name] if name in self.events else self.events["dram_per_bit"])

    def sram(self, tensor: str, kind: str, size_kb: float) -> float:
        """Energy per bit of a ``read`` or ``write`` of the ``tensor`` SRAM of ``size_kb``."""
        name = f"{tensor}_sram_{kind}_per_bit"
        return float(self.events[name]) if name in self.events else self.sram_per_bit(size_kb)

    def sram_per_bit(self, size_kb: float) -> float:
        """Energy per bit accessed of an SRAM of ``size_kb`` (log-log interpolation of 64-bit reads)."""
        if not self.sram_points:
            raise ValueError(f"energy table {self.name!r} has no sram_read_64b points to interpolate")
        pts = sorted(self.sram_points)
        if len(pts) == 1:
            return pts[0][1] / 64
        i = 0
        while i < len(pts) - 2 and size_kb > pts[i + 1][0]:
            i += 1
        (k0, e0), (k1, e1) = pts[i], pts[i + 1]
        slope = (math.log(e1) - math.log(e0)) / (math.log(k1) - math.log(k0))
        return math.exp(math.log(e0) + slope * (math.log(size_kb) - math.log(k0))) / 64


def load_energy_table(name_or_path) -> EnergyTable:
    """Table from a YAML path or the name of a table in configs/ (horowitz45, aladdin_cacti45, ...)."""
    path = _resolve(name_or_path, "energy table")
    with open(path) as f:
        data = load_yaml(f)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: an energy table must be a YAML mapping")
    if "accelergy_ert" in data or "ERT" in data:
        if "bind" not in data:
            raise ValueError(f"{path}: an Accelergy ERT prices this simulator's events through a binding file "
                             "(name, unit, accelergy_ert, bind; see wfn_sim.accelergy)")
        events, sources, points, binding = binding_entries(data, path)
        return EnergyTable(str(data["name"]), str(data["unit"]), events, sources, points, binding)
    if "sram_read_64b" not in data and all(e in (data.get("events") or {}) for e in SRAM_EVENTS):
        data["sram_read_64b"] = []  # every SRAM access has its own read/write energy
    for key in ("name", "unit", "events", "sram_read_64b"):
        if key not in data:
            raise ValueError(f"{path}: energy table is missing {key!r} (expects name, unit, events, sram_read_64b)")
    events, sources = {}, {}
    for event, entry in data["events"].items():
        if not isinstance(entry, dict) or "energy" not in entry or "source" not in entry:
            raise ValueError(f"{path}: event {event!r} must be {{energy: NUMBER, source: TEXT}}, got {entry!r}")
        events[event], sources[event] = entry["energy"], entry["source"]
    points = []
    for entry in data["sram_read_64b"]:
        if not isinstance(entry, dict) or not {"kb", "energy", "source"} <= set(entry):
            raise ValueError(f"{path}: sram_read_64b entries must be {{kb, energy, source}}, got {entry!r}")
        points.append((float(entry["kb"]), float(entry["energy"])))
    return EnergyTable(str(data["name"]), str(data["unit"]), events, sources, tuple(points))


def required_events(arch: ArchConfig, design: str) -> tuple[str, ...]:
    """Table events a design prices under ``arch``."""
    mult_bits = max(arch.act_bits, arch.weight_bits)
    acc = f"int{arch.acc_bits}_add"
    if design in ("dense_ws", "codebook", "sparse_pe"):
        return (f"int{mult_bits}_mult", acc) + FIXED_EVENTS
    if design == "shift_add":
        return (f"int{arch.act_bits}_shift", acc) + FIXED_EVENTS
    if design == "factorised":
        kind = "mult" if arch.factorised_product == "multiply" else "shift"
        # group sums are accumulated in the same acc_bits adders as every other design; only the
        # product takes a group_sum_bits-wide operand
        return (f"int{arch.group_sum_bits}_{kind}", acc) + FIXED_EVENTS
    raise ValueError(f"unknown design {design!r}")


def check_table(table: EnergyTable, arch: ArchConfig, designs) -> None:
    """Raise before any work if ``table`` lacks an event that one of ``designs`` needs."""
    for design in designs:
        for event in required_events(arch, design):
            table.event(event, design)


def layer_energy(counts: dict, arch: ArchConfig, table: EnergyTable, design: str) -> dict:
    """Energy of one layer's counts by component and by tensor (ENERGY_FIELDS, in the table's unit)."""
    product, add = required_events(arch, design)[:2]
    e = {f: 0.0 for f in ENERGY_FIELDS}
    if product.endswith("_mult"):
        e["mult_energy_pj"] = counts["multiplies"] * table.event(product, design)
    else:
        e["shift_energy_pj"] = counts["shifts"] * table.event(product, design)
    e["add_energy_pj"] = counts["adds"] * table.event(add, design)
    e["codebook_energy_pj"] = counts["codebook_reads"] * table.event("codebook_read", design)
    e["rf_energy_pj"] = counts["rf_read_bits"] * table.event("rf_per_bit", design)
    e["array_energy_pj"] = counts["array_hop_bits"] * table.event("array_hop_per_bit", design)
    for tensor, kb in (("ifmap", arch.ifmap_sram_kb), ("filter", arch.filter_sram_kb), ("ofmap", arch.ofmap_sram_kb)):
        e[f"{tensor}_sram_energy_pj"] = (counts[f"{tensor}_sram_read_bits"] * table.sram(tensor, "read", kb)
                                         + counts[f"{tensor}_sram_write_bits"] * table.sram(tensor, "write", kb))
    e["ifmap_dram_energy_pj"] = counts["ifmap_dram_read_bits"] * table.dram("read")
    e["filter_dram_energy_pj"] = counts["filter_dram_read_bits"] * table.dram("read")
    e["ofmap_dram_energy_pj"] = counts["ofmap_dram_write_bits"] * table.dram("write")
    e["compute_energy_pj"] = (e["mult_energy_pj"] + e["add_energy_pj"] + e["shift_energy_pj"]
                              + e["rf_energy_pj"] + e["array_energy_pj"])
    e["ifmap_energy_pj"] = e["ifmap_sram_energy_pj"] + e["ifmap_dram_energy_pj"]
    e["filter_energy_pj"] = e["filter_sram_energy_pj"] + e["filter_dram_energy_pj"] + e["codebook_energy_pj"]
    e["ofmap_energy_pj"] = e["ofmap_sram_energy_pj"] + e["ofmap_dram_energy_pj"]
    e["total_energy_pj"] = e["compute_energy_pj"] + e["ifmap_energy_pj"] + e["filter_energy_pj"] + e["ofmap_energy_pj"]
    return e


def table_path(name_or_path) -> Path:
    return _resolve(name_or_path, "energy table")
