"""Accelerator architecture: a frozen, validated config loaded from YAML.

Field names follow SCALE-Sim where one exists (array rows/cols, ifmap/filter/ofmap SRAM in KB) and
carry units otherwise. Every field maps one-to-one onto a ``--kebab-case`` flag of ``wfn-sim``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

DESIGNS = ("dense_ws", "codebook", "shift_add", "factorised", "sparse_pe")
DEFAULT_DESIGNS = ("dense_ws", "codebook", "shift_add", "factorised")
DATAFLOWS = ("ws_systolic", "os_systolic", "is_systolic")
DRAM_MODELS = ("reuse", "scalesim")
SYSTOLIC_DESIGNS = ("dense_ws", "codebook", "shift_add")  # run on the systolic array of any dataflow
UCNN_DESIGNS = ("factorised", "sparse_pe")  # their own PEs: filter tables stationary (ws_systolic only)
CODEBOOK_SCOPES = ("layer", "network")
FACTORISED_PRODUCTS = ("multiply", "shift_add")
CONFIG_DIR = Path(__file__).parent / "configs"


class MissingDependencyError(ImportError):
    """An optional package the simulator needs for this call is not installed (the message says which)."""


def load_yaml(stream):
    """yaml.safe_load, imported on first use: pyyaml is the [cli] extra; `import wfn_sim` works without it."""
    try:
        import yaml
    except ImportError:
        raise MissingDependencyError("reading the simulator's YAML configs needs pyyaml: pip install 'wfn-kernels[cli]' "
                          "(or pip install pyyaml)") from None
    return yaml.safe_load(stream)


@dataclass(frozen=True)
class ArchConfig:
    """One accelerator. Sizes in KB (1024 bytes), widths in bits, bandwidth in bytes per cycle.

    ``dataflow``: ``ws_systolic``, ``os_systolic`` or ``is_systolic`` (SCALE-Sim's ws / os / is).
    ``dram_model``: ``reuse`` (default; each tensor is fetched once if it fits half its SRAM, else once
    per pass over it) or ``scalesim`` (SCALE-Sim v3.0.0's buffer behaviour, reproduced exactly; dense
    systolic designs only). See docs/simulator.md for why both exist.
    ``dram_bandwidth_bytes_per_cycle`` = 0 means unlimited (no stalls, SCALE-Sim's CALC mode).
    ``spill_psums_per_row_fold``: partial sums go to the ofmap SRAM once per row fold, as SCALE-Sim
    counts them (and are read back for the next fold); off, each output is written once.
    Factorised (UCNN-style) PEs: ``adders_per_pe`` adders and ``multipliers_per_pe`` multipliers (or
    shifters when ``factorised_product`` is shift_add); ``activation_group_filters`` G filters share one
    indirection table; ``group_sum_bits`` is the width of the group-sum operand of each product (the
    adds themselves use ``acc_bits`` adders, as in the other designs);
    ``pe_buffer_words`` bounds the taps K of one filter window a factorised PE can hold.
    """

    name: str = "ws32"
    array_rows: int = 32
    array_cols: int = 32
    dataflow: str = "ws_systolic"
    dram_model: str = "reuse"
    ifmap_sram_kb: int = 64
    filter_sram_kb: int = 64
    ofmap_sram_kb: int = 64
    dram_bandwidth_bytes_per_cycle: float = 0.0
    act_bits: int = 8
    weight_bits: int = 8
    acc_bits: int = 24
    group_sum_bits: int = 16
    codebook_entry_bits: int = 16
    codebook_scope: str = "layer"
    shifters_per_pe: int = 4
    adders_per_pe: int = 1
    multipliers_per_pe: int = 1
    activation_group_filters: int = 1
    pe_buffer_words: int = 4608
    factorised_product: str = "multiply"
    spill_psums_per_row_fold: bool = True
    clock_hz: float = 1.0e9
    energy_table: str = "horowitz45"

    def __post_init__(self):
        for f in ("array_rows", "array_cols", "ifmap_sram_kb", "filter_sram_kb", "ofmap_sram_kb", "act_bits",
                  "weight_bits", "acc_bits", "group_sum_bits", "codebook_entry_bits", "shifters_per_pe",
                  "adders_per_pe", "multipliers_per_pe", "activation_group_filters", "pe_buffer_words"):
            value = getattr(self, f)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"ArchConfig.{f} must be a positive integer, got {value!r}")
        for f in ("dram_bandwidth_bytes_per_cycle", "clock_hz"):
            value = getattr(self, f)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"ArchConfig.{f} must be a number >= 0, got {value!r}")
        if self.clock_hz == 0:
            raise ValueError("ArchConfig.clock_hz must be > 0")
        _check_choice("dataflow", self.dataflow, DATAFLOWS)
        _check_choice("dram_model", self.dram_model, DRAM_MODELS)
        if self.dram_model == "scalesim" and not self.spill_psums_per_row_fold:
            raise ValueError("ArchConfig.dram_model 'scalesim' counts SCALE-Sim's ofmap traffic, which spills "
                             "partial sums once per row fold: it needs spill_psums_per_row_fold=true")
        _check_choice("codebook_scope", self.codebook_scope, CODEBOOK_SCOPES)
        _check_choice("factorised_product", self.factorised_product, FACTORISED_PRODUCTS)
        if not isinstance(self.spill_psums_per_row_fold, bool):
            raise ValueError(f"ArchConfig.spill_psums_per_row_fold must be true/false, got "
                             f"{self.spill_psums_per_row_fold!r}")
        if not isinstance(self.energy_table, str) or not self.energy_table:
            raise ValueError(f"ArchConfig.energy_table must be a table name or YAML path, got {self.energy_table!r}")

    @property
    def num_pes(self) -> int:
        return self.array_rows * self.array_cols

    def replace(self, **changes) -> ArchConfig:
        """A copy with ``changes`` applied (validated again); unknown names raise."""
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise ValueError(f"ArchConfig has no field(s) {unknown}; fields are {field_names()}")
        return dataclasses.replace(self, **changes)


def _check_choice(field: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"ArchConfig.{field} must be one of {list(choices)}, got {value!r}")


def field_names() -> list[str]:
    return [f.name for f in dataclasses.fields(ArchConfig)]


def load_arch(path) -> ArchConfig:
    """ArchConfig from a YAML mapping of field -> value, or the name of a file in configs/ (e.g. ws32)."""
    path = _resolve(path, "arch config")
    with open(path) as f:
        data = load_yaml(f)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a YAML mapping of ArchConfig fields, got {type(data).__name__}")
    unknown = sorted(set(data) - set(field_names()))
    if unknown:
        raise ValueError(f"{path}: unknown ArchConfig field(s) {unknown}; fields are {field_names()}")
    return ArchConfig(**data)


def _resolve(path, kind: str) -> Path:
    p = Path(path)
    if p.exists():
        return p
    named = CONFIG_DIR / f"{path}.yaml"
    if named.exists():
        return named
    raise FileNotFoundError(f"{kind} {str(path)!r}: no such file, and no {named.name} in {CONFIG_DIR}")


def parse_designs(text) -> tuple[str, ...]:
    """'dense_ws,codebook' or a sequence -> validated tuple of design names."""
    names = [d.strip() for d in (text.split(",") if isinstance(text, str) else text) if d.strip()]
    if not names:
        raise ValueError(f"designs: expected a comma-separated subset of {list(DESIGNS)}, got {text!r}")
    bad = [d for d in names if d not in DESIGNS]
    if bad:
        raise ValueError(f"designs: unknown design(s) {bad}; expected a subset of {list(DESIGNS)}")
    return tuple(names)
