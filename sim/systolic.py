"""Dense systolic arrays in the three dataflows SCALE-Sim models, as closed forms.

A layer is the GEMM (N outputs x K taps) @ (K x M filters) per conv group (:class:`~wfn_sim.workload.Layer`).
Each dataflow maps two GEMM dimensions onto the array's rows x cols and streams the third (SCALE-Sim's
``Sr``, ``Sc`` and ``T``), cut into ``ceil(Sr/rows) x ceil(Sc/cols)`` folds; column folds are the outer loop:

============  ===========  ===========  ==========  ===================================
dataflow      rows hold    cols hold    streamed    cycles per fold (demand-matrix rows)
============  ===========  ===========  ==========  ===================================
ws_systolic   K (taps)     M (filters)  N outputs   2*rows + cols + N - 2
os_systolic   N (outputs)  M (filters)  K taps      rows + cols + K - 2
is_systolic   K (taps)     N (outputs)  M filters   2*rows + cols + M - 2
============  ===========  ===========  ==========  ===================================

SCALE-Sim v3.0.0 (``scalesim/compute/systolic_compute_{ws,os,is}.py``) builds per-fold demand matrices of
those lengths and reports the index of the last cycle (one less than the total). SRAM reads/writes are
its counts: WS ifmap ``col_folds*N*K``, filter ``K*M``, ofmap ``row_folds*N*M`` (partial sums once per
row fold); OS ifmap ``col_folds*N*K``, filter ``row_folds*K*M``, ofmap ``N*M`` plus ``rows + cols`` per
fold (SCALE-Sim adds the padded fold's height + width to its write count); IS ifmap ``K*N``, filter
``col_folds*K*M``, ofmap ``row_folds*N*M``. Mapping efficiency and compute utilisation are SCALE-Sim's
per-fold averages, in closed form.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .arch import ArchConfig
from .workload import Layer


@dataclass(frozen=True)
class Mapping:
    """How one conv group maps onto the array: Sr on rows, Sc on cols, T streamed (SCALE-Sim's names)."""

    dataflow: str
    sr: int
    sc: int
    t: int
    rows: int
    cols: int

    @property
    def row_folds(self) -> int:
        return math.ceil(self.sr / self.rows)

    @property
    def col_folds(self) -> int:
        return math.ceil(self.sc / self.cols)

    @property
    def folds(self) -> int:
        return self.row_folds * self.col_folds

    @property
    def fold_fill(self) -> int:
        """Cycles of a fold that do not scale with T (fill and drain)."""
        r, c = self.rows, self.cols
        return r + c - 2 if self.dataflow == "os_systolic" else 2 * r + c - 2

    @property
    def fold_cycles(self) -> int:
        """Demand-matrix rows of one fold."""
        return self.fold_fill + self.t


def mapping(layer: Layer, arch: ArchConfig) -> Mapping:
    n, k, m = layer.gemm_n, layer.gemm_k, layer.gemm_m
    sr, sc, t = {"ws_systolic": (k, m, n), "os_systolic": (n, m, k), "is_systolic": (k, n, m)}[arch.dataflow]
    return Mapping(arch.dataflow, sr, sc, t, arch.array_rows, arch.array_cols)


def dense_counts(layer: Layer, arch: ArchConfig, intervals=None) -> dict:
    """Cycles, utilisation and SRAM words of the dense array (SCALE-Sim compatible when ``intervals`` is None).

    ``intervals``: int array (groups, col_folds, row_folds) of cycles per streamed element of each fold
    (the shift-add design's stretch); None means one cycle each.
    """
    mp = mapping(layer, arch)
    r, c = mp.rows, mp.cols
    n, k, m, g = layer.gemm_n, layer.gemm_k, layer.gemm_m, layer.groups
    folds = mp.folds
    streamed = g * folds if intervals is None else int(intervals.sum())  # cycles per streamed element, all folds
    compute = g * (folds * mp.fold_fill - 1) + mp.t * streamed
    macs = layer.macs
    spill = arch.spill_psums_per_row_fold
    if arch.dataflow == "ws_systolic":
        ifmap, filt = mp.col_folds * n * k, k * m
        ofmap_w = (mp.row_folds if spill else 1) * n * m
        ofmap_r = (mp.row_folds - 1) * n * m if spill else 0
    elif arch.dataflow == "os_systolic":
        ifmap, filt = mp.col_folds * n * k, mp.row_folds * k * m
        ofmap_w = n * m + (folds * (r + c) if spill else 0)
        ofmap_r = 0
    else:  # is_systolic
        ifmap, filt = k * n, mp.col_folds * k * m
        ofmap_w = (mp.row_folds if spill else 1) * n * m
        ofmap_r = (mp.row_folds - 1) * n * m if spill else 0
    used = mp.sr * mp.sc  # sum over folds of used PEs
    # SCALE-Sim's per-fold cycle count for compute utilisation: rows + cols - 1 of the fold's (unskewed)
    # stationary-operand demand matrix in WS/IS, of its ofmap demand matrix in OS
    util_cycles = mp.fold_cycles if arch.dataflow == "os_systolic" else mp.fold_cycles + c - 1
    return {
        "compute_cycles": compute,
        "mapping_efficiency_pct": 100.0 * used / (folds * r * c),
        "compute_util_pct": 100.0 * used * mp.t / (folds * r * c * util_cycles),
        "overall_util_pct": (macs * 100) / (compute * r * c),
        "load_imbalance": 1.0,
        "macs": macs, "adds": macs,
        "ifmap_sram_reads": g * ifmap, "filter_sram_reads": g * filt,
        "ofmap_sram_writes": g * ofmap_w, "ofmap_sram_reads": g * ofmap_r,
        "ifmap_sram_read_bits": g * ifmap * arch.act_bits,
        "ofmap_sram_write_bits": g * ofmap_w * arch.acc_bits, "ofmap_sram_read_bits": g * ofmap_r * arch.acc_bits,
        "array_hop_bits": macs * (arch.act_bits + arch.acc_bits),
    }


def weight_folds(layer: Layer, arch: ArchConfig) -> tuple[int, int, int, int]:
    """(filters per weight block, taps per weight block, filter blocks, tap blocks) of each dataflow's folds.

    The weights one fold uses: WS and OS a block of ``cols`` filters x (WS: ``rows`` taps, OS: all K taps);
    IS all M filters x ``rows`` taps. Used by the shift-add design, whose fold runs at the pace of the
    weight with the most power-of-two terms among those it uses.
    """
    r, c = arch.array_rows, arch.array_cols
    k, m = layer.gemm_k, layer.gemm_m
    if arch.dataflow == "ws_systolic":
        return c, r, math.ceil(m / c), math.ceil(k / r)
    if arch.dataflow == "os_systolic":
        return c, k, math.ceil(m / c), 1
    return m, r, 1, math.ceil(k / r)


def fold_order_intervals(layer: Layer, arch: ArchConfig, block_intervals):
    """Expand per-weight-block intervals (groups, filter blocks, tap blocks) to (groups, col_folds, row_folds).

    OS folds (output blocks x filter blocks) reuse the same filter block for every output block; IS folds
    (tap blocks x output blocks) the same tap block for every output block.
    """
    import numpy as np

    mp = mapping(layer, arch)
    if arch.dataflow == "ws_systolic":
        return block_intervals
    if arch.dataflow == "os_systolic":  # block (g, col_folds, 1) -> (g, col_folds, row_folds over N)
        return np.repeat(block_intervals, mp.row_folds, axis=2)
    return np.repeat(block_intervals, mp.col_folds, axis=1)  # IS: (g, 1, row_folds) -> (g, col_folds over N, ...)


def ifmap_footprint_words(layer: Layer) -> int:
    """Input words the layer's windows touch (a stride-2 1x1 conv touches a quarter of its input)."""
    import numpy as np

    def covered(size, out, kernel, stride, padding, dilation):
        pos = (np.arange(out)[:, None] * stride - padding + np.arange(kernel)[None, :] * dilation).ravel()
        hit = np.zeros(size, dtype=bool)
        hit[pos[(pos >= 0) & (pos < size)]] = True
        return int(hit.sum())

    if layer.ceil_mode:  # SCALE-Sim's topology: no padding, windows may overhang the input
        pad_h = pad_w = 0
    else:
        pad_h, pad_w = layer.padding_h, layer.padding_w
    rows = covered(layer.in_h, layer.out_h, layer.kernel_h, layer.stride_h, pad_h, layer.dilation_h)
    cols = covered(layer.in_w, layer.out_w, layer.kernel_w, layer.stride_w, pad_w, layer.dilation_w)
    return rows * cols * layer.in_channels
