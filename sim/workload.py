"""Workloads: layer shapes plus, when weights are known, their per-filter statistics.

A layer is viewed as ``groups`` independent GEMMs of sizes M (filters per group), N = out_h * out_w
(output pixels, SCALE-Sim's T) and K = kernel_h * kernel_w * in_channels / groups (taps per filter).
Weights are held as integer codes into the layer's sorted unique values, which is all the designs
need: zeros, distinct values per filter, power-of-two terms per value and value tuples across filters.

Topologies load from CSV (``name,kind,in_h,in_w,in_channels,out_channels,kernel_h,kernel_w,stride,
padding,groups``) or from SCALE-Sim's topology CSV; models load through :mod:`wfn_sim.extract`.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

TOPOLOGY_COLUMNS = ("name", "kind", "in_h", "in_w", "in_channels", "out_channels", "kernel_h",
                    "kernel_w", "stride", "padding", "groups")
SCALESIM_COLUMNS = ("Layer name", "IFMAP Height", "IFMAP Width", "Filter Height", "Filter Width",
                    "Channels", "Num Filter", "Strides")
LAYER_KINDS = ("conv", "linear")
_DENSE_PRESENCE_LIMIT = 4096  # above this many distinct values, count per-filter uniques by sorting


@dataclass(frozen=True)
class Layer:
    """One conv or linear layer (batch 1). A linear layer has in_h = rows of its input, in_w = 1.

    ``ceil_mode`` selects SCALE-Sim's output size ``ceil((H - F + S) / S)`` instead of PyTorch's
    ``floor((H + 2P - D(F-1) - 1) / S) + 1``.
    """

    name: str
    kind: str
    in_h: int
    in_w: int
    in_channels: int
    out_channels: int
    kernel_h: int = 1
    kernel_w: int = 1
    stride_h: int = 1
    stride_w: int = 1
    padding_h: int = 0
    padding_w: int = 0
    dilation_h: int = 1
    dilation_w: int = 1
    groups: int = 1
    ceil_mode: bool = False

    def __post_init__(self):
        if self.kind not in LAYER_KINDS:
            raise ValueError(f"layer {self.name!r}: kind must be one of {LAYER_KINDS}, got {self.kind!r}")
        for field in ("in_h", "in_w", "in_channels", "out_channels", "kernel_h", "kernel_w", "stride_h",
                      "stride_w", "dilation_h", "dilation_w", "groups"):
            value = getattr(self, field)
            if not isinstance(value, (int, np.integer)) or value <= 0:
                raise ValueError(f"layer {self.name!r}: {field} must be a positive int, got {value!r}")
        for field in ("padding_h", "padding_w"):
            if not isinstance(getattr(self, field), (int, np.integer)) or getattr(self, field) < 0:
                raise ValueError(f"layer {self.name!r}: {field} must be an int >= 0, got {getattr(self, field)!r}")
        if self.in_channels % self.groups or self.out_channels % self.groups:
            raise ValueError(f"layer {self.name!r}: groups={self.groups} must divide in_channels="
                             f"{self.in_channels} and out_channels={self.out_channels}")
        if self.out_h <= 0 or self.out_w <= 0:
            raise ValueError(f"layer {self.name!r}: kernel {self.kernel_h}x{self.kernel_w} does not fit the "
                             f"padded input {self.in_h}x{self.in_w} (output {self.out_h}x{self.out_w})")

    @property
    def out_h(self) -> int:
        return _out_size(self.in_h, self.kernel_h, self.stride_h, self.padding_h, self.dilation_h, self.ceil_mode)

    @property
    def out_w(self) -> int:
        return _out_size(self.in_w, self.kernel_w, self.stride_w, self.padding_w, self.dilation_w, self.ceil_mode)

    @property
    def gemm_n(self) -> int:
        """Output pixels per filter (SCALE-Sim's T)."""
        return self.out_h * self.out_w

    @property
    def gemm_k(self) -> int:
        """Taps per filter (window size)."""
        return self.kernel_h * self.kernel_w * (self.in_channels // self.groups)

    @property
    def gemm_m(self) -> int:
        """Filters per group."""
        return self.out_channels // self.groups

    @property
    def macs(self) -> int:
        return self.groups * self.gemm_m * self.gemm_n * self.gemm_k

    @property
    def ifmap_words(self) -> int:
        return self.in_h * self.in_w * self.in_channels

    @property
    def weight_count(self) -> int:
        return self.out_channels * self.gemm_k


def _out_size(size, kernel, stride, padding, dilation, ceil_mode) -> int:
    if ceil_mode:
        return math.ceil((size - kernel + stride) / stride)
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def naf_term_counts(values: np.ndarray) -> np.ndarray:
    """Minimal signed power-of-two term count of each float64 value (0 -> 0), as int64.

    The non-adjacent form of an integer n has ``popcount(n ^ 3n)`` non-zero digits; the mantissa of a
    float64 is a 53-bit integer, so 3n stays below 2**55. Matches
    ``len(wfn_kernels.codebook.power_of_two_terms(v))``.
    """
    values = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(values)):
        raise ValueError("naf_term_counts: values must be finite")
    mantissa, _ = np.frexp(np.abs(values))
    n = (mantissa * float(1 << 53)).astype(np.int64)
    return np.bitwise_count(n ^ (3 * n)).astype(np.int64)


class WeightStats:
    """Weights of one layer as codes into its sorted unique values.

    ``codes``: int array (out_channels, K) indexing ``values`` (float64, sorted, distinct); filter f
    belongs to group ``f // (out_channels / groups)``. Derived statistics are computed once, on demand.
    """

    def __init__(self, codes: np.ndarray, values: np.ndarray, groups: int = 1):
        codes = np.asarray(codes)
        values = np.asarray(values, dtype=np.float64)
        if codes.ndim != 2 or not np.issubdtype(codes.dtype, np.integer):
            raise ValueError(f"WeightStats: codes must be a 2-D int array (out, K), got {codes.dtype} {codes.shape}")
        if values.ndim != 1 or values.size == 0 or np.any(np.diff(values) <= 0):
            raise ValueError("WeightStats: values must be a non-empty, strictly increasing 1-D array")
        if codes.size and (codes.min() < 0 or codes.max() >= values.size):
            raise ValueError(f"WeightStats: codes must lie in [0, {values.size}), got "
                             f"[{codes.min()}, {codes.max()}]")
        if codes.shape[0] % groups:
            raise ValueError(f"WeightStats: groups={groups} must divide out_channels={codes.shape[0]}")
        self.codes = codes.astype(np.int32 if values.size > 32767 else np.int16, copy=False)
        self.values = values
        self.groups = groups
        hits = np.flatnonzero(values == 0.0)
        self.zero_code = int(hits[0]) if hits.size else -1
        self._reuse: dict[int, dict[str, np.ndarray]] = {}

    @classmethod
    def from_weight(cls, weight: np.ndarray, groups: int = 1) -> WeightStats:
        """From a dense weight, any shape whose first axis is the output channel (float or int)."""
        weight = np.asarray(weight, dtype=np.float64)
        flat = weight.reshape(weight.shape[0], -1)
        values, inverse = np.unique(flat, return_inverse=True)
        return cls(inverse.reshape(flat.shape), values, groups)

    def dense(self) -> np.ndarray:
        """The float64 weight matrix (out_channels, K)."""
        return self.values[self.codes]

    @property
    def codebook_size(self) -> int:
        return int(self.values.size)

    @property
    def index_bits(self) -> int:
        """Bits of one code: ceil(log2(codebook size)), at least 1."""
        return max(1, math.ceil(math.log2(self.codebook_size)))

    @cached_property
    def terms_per_value(self) -> np.ndarray:
        return naf_term_counts(self.values)

    @cached_property
    def nonzero(self) -> np.ndarray:
        """Bool (out, K): the tap's weight is non-zero."""
        return self.codes != self.zero_code

    @cached_property
    def nnz_per_filter(self) -> np.ndarray:
        return self.nonzero.sum(axis=1)

    @cached_property
    def terms(self) -> np.ndarray:
        """Int8 (out, K): power-of-two terms of each weight (0 for a zero weight)."""
        return self.terms_per_value.astype(np.int8)[self.codes]

    @cached_property
    def terms_per_filter(self) -> np.ndarray:
        """Sum of power-of-two terms over each filter's weights."""
        return self.terms.sum(axis=1, dtype=np.int64)

    @cached_property
    def _presence(self) -> tuple[np.ndarray, np.ndarray]:
        """(filter index, code) of each distinct non-zero value of each filter."""
        out, nv = self.codes.shape[0], self.codebook_size
        if nv <= _DENSE_PRESENCE_LIMIT:
            present = np.zeros((out, nv), dtype=bool)
            present[np.arange(out)[:, None], self.codes] = True
            if self.zero_code >= 0:
                present[:, self.zero_code] = False
            rows, codes = np.nonzero(present)
            return rows, codes
        keys = np.unique(np.arange(out, dtype=np.int64)[:, None] * nv + self.codes)
        rows, codes = keys // nv, keys % nv
        keep = codes != self.zero_code
        return rows[keep], codes[keep]

    @cached_property
    def unique_per_filter(self) -> np.ndarray:
        """Distinct non-zero values per filter (UCNN's U)."""
        rows, _ = self._presence
        return np.bincount(rows, minlength=self.codes.shape[0])

    @cached_property
    def unique_terms_per_filter(self) -> np.ndarray:
        """Sum over each filter's distinct non-zero values of their power-of-two terms."""
        rows, codes = self._presence
        return np.bincount(rows, weights=self.terms_per_value[codes], minlength=self.codes.shape[0]).astype(np.int64)

    def group_reuse(self, filters_per_group: int) -> dict[str, np.ndarray]:
        """UCNN activation-group reuse statistics over consecutive blocks of G filters.

        Returns int64 arrays, one entry per block (blocks never straddle conv groups; a short last block
        is padded with all-zero filters): ``taps_any`` taps where any filter is non-zero, ``subgroups``
        distinct non-zero weight tuples S, ``subgroups_per_filter_minus1`` sum over filters of
        max(S_g - 1, 0) where S_g counts sub-groups with a non-zero weight for filter g, ``unique`` sum
        over the block's filters of U, ``unique_terms`` sum over those filters of their values' terms.
        """
        g = int(filters_per_group)
        if g not in self._reuse:
            self._reuse[g] = self._compute_group_reuse(g)
        return self._reuse[g]

    def _blocks(self, g: int) -> np.ndarray:
        """Codes as (blocks, G, K), padding each conv group's filters to a multiple of G with zeros."""
        out, k = self.codes.shape
        per_group = out // self.groups
        pad = (-per_group) % g
        codes = self.codes.reshape(self.groups, per_group, k)
        if pad:
            if self.zero_code < 0:
                raise ValueError(f"activation-group reuse G={g} needs {per_group} filters per group to be a "
                                 "multiple of G when the layer has no zero weight to pad with")
            filler = np.full((self.groups, pad, k), self.zero_code, dtype=codes.dtype)
            codes = np.concatenate([codes, filler], axis=1)
        return codes.reshape(-1, g, k)

    def _compute_group_reuse(self, g: int) -> dict[str, np.ndarray]:
        blocks = self._blocks(g)
        nb, _, k = blocks.shape
        nv = self.codebook_size
        if g > 1 and nv ** g >= 2 ** 62 // max(nb, 1):
            raise ValueError(f"activation-group reuse G={g} with {nv} distinct values overflows int64 tuple codes")
        tuple_code = np.zeros((nb, k), dtype=np.int64)
        for j in range(g):
            tuple_code = tuple_code * nv + blocks[:, j, :]
        zero_tuple = sum(self.zero_code * nv ** (g - 1 - j) for j in range(g)) if self.zero_code >= 0 else -1
        nonzero_tap = tuple_code != zero_tuple
        keys = np.unique((np.arange(nb, dtype=np.int64)[:, None] * nv ** g + tuple_code)[nonzero_tap])
        block_of, code_of = keys // nv ** g, keys % nv ** g
        subgroups = np.bincount(block_of, minlength=nb)
        per_filter = np.zeros(nb, dtype=np.int64)
        for j in range(g):
            member = (code_of // nv ** (g - 1 - j)) % nv != self.zero_code
            s_g = np.bincount(block_of[member], minlength=nb)
            per_filter += np.maximum(s_g - 1, 0)
        per_block = self._per_block(g)
        return {"taps_any": nonzero_tap.sum(axis=1), "subgroups": subgroups,
                "subgroups_per_filter_minus1": per_filter,
                "unique": per_block(self.unique_per_filter), "unique_terms": per_block(self.unique_terms_per_filter)}

    def _per_block(self, g: int):
        per_group = self.codes.shape[0] // self.groups
        pad = (-per_group) % g

        def reduce(per_filter: np.ndarray) -> np.ndarray:
            x = per_filter.reshape(self.groups, per_group)
            if pad:
                x = np.concatenate([x, np.zeros((self.groups, pad), dtype=x.dtype)], axis=1)
            return x.reshape(-1, g).sum(axis=1)
        return reduce


@dataclass(frozen=True)
class Workload:
    """A network: its layers and, per layer, WeightStats or None (shape-only topology)."""

    name: str
    layers: tuple
    stats: tuple

    def __post_init__(self):
        if len(self.layers) == 0:
            raise ValueError(f"workload {self.name!r}: no layers")
        if len(self.stats) != len(self.layers):
            raise ValueError(f"workload {self.name!r}: {len(self.stats)} stats for {len(self.layers)} layers")
        for layer, stats in zip(self.layers, self.stats, strict=True):
            if stats is not None and stats.codes.shape != (layer.out_channels, layer.gemm_k):
                raise ValueError(f"layer {layer.name!r}: weights have shape {stats.codes.shape}, expected "
                                 f"(out_channels, K) = ({layer.out_channels}, {layer.gemm_k})")

    @property
    def has_weights(self) -> bool:
        return all(s is not None for s in self.stats)


def _int_field(path, row_number, row, column) -> int:
    try:
        return int(row[column])
    except (TypeError, ValueError):
        raise ValueError(f"{path}: row {row_number}, column {column!r}: expected an integer, "
                         f"got {row[column]!r}") from None


def load_topology_csv(path) -> Workload:
    """Shape-only workload from our CSV (header exactly TOPOLOGY_COLUMNS) or SCALE-Sim's topology CSV.

    Our format uses PyTorch output sizes (square stride/padding); SCALE-Sim's has no padding and uses
    its ceil output size, so a padded layer is written with enlarged in_h/in_w (ceil_mode=True here).
    """
    path = Path(path)
    if not path.exists() and (Path(__file__).parent / "configs" / f"{path}.csv").exists():
        path = Path(__file__).parent / "configs" / f"{path}.csv"  # a shipped topology by name: resnet50
    with open(path, newline="") as f:
        rows = [[c.strip() for c in r] for r in csv.reader(f) if any(c.strip() for c in r)]
    if not rows:
        raise ValueError(f"{path}: empty topology file")
    rows = [r[:-1] if r and r[-1] == "" else r for r in rows]  # SCALE-Sim rows end with a comma
    header = tuple(rows[0])
    if header == SCALESIM_COLUMNS:
        layers = [_scalesim_layer(path, i, _cells(path, i, r, header)) for i, r in enumerate(rows[1:], 2)]
    elif header == TOPOLOGY_COLUMNS:
        layers = [_topology_layer(path, i, _cells(path, i, r, header)) for i, r in enumerate(rows[1:], 2)]
    else:
        raise ValueError(f"{path}: header {header} is neither {list(TOPOLOGY_COLUMNS)} nor SCALE-Sim's "
                         f"{list(SCALESIM_COLUMNS)}")
    return Workload(path.stem, tuple(layers), (None,) * len(layers))


def _cells(path, row_number, row, header) -> dict:
    if len(row) != len(header):
        raise ValueError(f"{path}: row {row_number} has {len(row)} values, expected {len(header)} "
                         f"({', '.join(header)})")
    return dict(zip(header, row, strict=True))


def _topology_layer(path, i, row) -> Layer:
    ints = {c: _int_field(path, i, row, c) for c in TOPOLOGY_COLUMNS[2:]}
    return Layer(row["name"], row["kind"], ints["in_h"], ints["in_w"], ints["in_channels"], ints["out_channels"],
                 ints["kernel_h"], ints["kernel_w"], ints["stride"], ints["stride"], ints["padding"],
                 ints["padding"], groups=ints["groups"])


def _scalesim_layer(path, i, row) -> Layer:
    ints = {c: _int_field(path, i, row, c) for c in SCALESIM_COLUMNS[1:]}
    return Layer(row["Layer name"], "conv", ints["IFMAP Height"], ints["IFMAP Width"], ints["Channels"],
                 ints["Num Filter"], ints["Filter Height"], ints["Filter Width"], ints["Strides"],
                 ints["Strides"], ceil_mode=True)


def write_topology_csv(workload: Workload, path) -> None:
    """Write the shapes of ``workload`` in our topology CSV format (square stride/padding only)."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(TOPOLOGY_COLUMNS)
        for ly in workload.layers:
            if ly.stride_h != ly.stride_w or ly.padding_h != ly.padding_w or ly.ceil_mode:
                raise ValueError(f"layer {ly.name!r}: only square stride/padding can be written to a topology CSV")
            writer.writerow([ly.name, ly.kind, ly.in_h, ly.in_w, ly.in_channels, ly.out_channels, ly.kernel_h,
                             ly.kernel_w, ly.stride_h, ly.padding_h, ly.groups])
