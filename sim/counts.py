"""Event counts and cycles: pure functions from (layer, weight statistics, architecture) to counts.

Designs:
- ``dense_ws``: SCALE-Sim v3.0.0's weight-stationary systolic array. Per conv group, the GEMM
  (N outputs x K taps) @ (K x M filters) is cut into ceil(K/rows) row folds x ceil(M/cols) column folds;
  each fold takes ``2*rows + cols + N - 2`` cycles (weight load, stream, drain; the length of SCALE-Sim's
  demand matrices) and SCALE-Sim reports the index of the last cycle, hence the final ``- 1``. ifmap SRAM
  reads ``col_folds*N*K``, filter reads ``K*M``, ofmap writes ``row_folds*N*M`` (psums spilled per row fold).
- ``codebook``: same array and cycles; weights stored and moved as b-bit indices plus a codebook
  (per layer or per network), decoded once when loaded into the stationary PE.
- ``shift_add``: codebook storage, multipliers replaced by shifters: t shifts and t-1 adds per weight
  with t power-of-two terms; a fold runs at ceil(max t / shifters_per_pe) cycles per output.
- ``factorised``: UCNN-style PEs (see :func:`factorised_counts`).
- ``sparse_pe``: the same PEs without factorisation, zero taps skipped (UCNN's sparse baseline).
DRAM traffic (our model, not SCALE-Sim's): weights once; ifmap once if it fits half the ifmap SRAM
(double buffering) else once per column fold / pass; outputs once. Bandwidth stalls when
``dram_bandwidth_bytes_per_cycle`` > 0: cycles = max(compute cycles, DRAM bits / bandwidth).
"""

from __future__ import annotations

import math

import numpy as np

from .arch import DESIGNS, ArchConfig
from .workload import Layer, WeightStats, Workload

# Units: *_cycles in clock cycles; *_pct percent; load_imbalance = max/mean PE work (1 = balanced);
# macs = the layer's dense multiply-accumulates (same for every design); multiplies/adds/shifts/
# codebook_reads = events; *_sram_reads/_writes = words (SCALE-Sim's counts for dense_ws; filter words are
# weight_bits wide for the factorised designs); *_bits = bits moved; rf_read_bits = PE-local buffer reads;
# array_hop_bits = bits passed between PEs; weight_storage_bits = the layer's weights as stored in DRAM.
COUNT_FIELDS = (
    "cycles", "compute_cycles", "stall_cycles", "mapping_efficiency_pct", "compute_util_pct",
    "overall_util_pct", "load_imbalance", "macs", "multiplies", "adds", "shifts", "codebook_reads",
    "ifmap_sram_reads", "filter_sram_reads", "ofmap_sram_writes", "ofmap_sram_reads",
    "ifmap_sram_read_bits", "ifmap_sram_write_bits", "filter_sram_read_bits", "filter_sram_write_bits",
    "ofmap_sram_read_bits", "ofmap_sram_write_bits", "ifmap_dram_read_bits", "filter_dram_read_bits",
    "ofmap_dram_write_bits", "rf_read_bits", "array_hop_bits", "weight_storage_bits",
)
RATIO_FIELDS = ("mapping_efficiency_pct", "compute_util_pct", "overall_util_pct", "load_imbalance")


def check_fits(workload: Workload, arch: ArchConfig, designs) -> None:
    """Raise before any work if a design cannot run a layer on ``arch`` (names layer and field)."""
    half_filter_sram_bits = arch.filter_sram_kb * 8192 // 2  # double-buffered
    for design in designs:
        if design not in DESIGNS:
            raise ValueError(f"unknown design {design!r}; expected one of {list(DESIGNS)}")
        for layer in workload.layers:
            fold_bits = min(layer.gemm_k, arch.array_rows) * min(layer.gemm_m, arch.array_cols) * arch.weight_bits
            if design in ("dense_ws", "codebook", "shift_add") and fold_bits > half_filter_sram_bits:
                raise ValueError(f"layer {layer.name!r} does not fit the array: one fold of its weights needs "
                                 f"{fold_bits} bits, more than half the filter SRAM (filter_sram_kb="
                                 f"{arch.filter_sram_kb}, double-buffered)")
        if design == "dense_ws":
            continue
        for layer, stats in zip(workload.layers, workload.stats, strict=True):
            if stats is None:
                raise ValueError(f"design {design!r} needs weight statistics, but layer {layer.name!r} of "
                                 f"workload {workload.name!r} has none (load a model or synthesise weights)")
            if design in ("factorised", "sparse_pe") and layer.gemm_k > arch.pe_buffer_words:
                raise ValueError(f"layer {layer.name!r} does not fit the factorised PE: K={layer.gemm_k} taps "
                                 f"> pe_buffer_words={arch.pe_buffer_words}")


def count_workload(workload: Workload, arch: ArchConfig, design: str) -> list[dict]:
    """Counts of every layer (list of dicts with COUNT_FIELDS) for one design."""
    check_fits(workload, arch, [design])
    network = _network_codebook(workload) if arch.codebook_scope == "network" and design != "dense_ws" else None
    rows = []
    for i, (layer, stats) in enumerate(zip(workload.layers, workload.stats, strict=True)):
        rows.append(count_layer(layer, stats, arch, design, network, first_layer=(i == 0)))
    return rows


def _network_codebook(workload: Workload) -> int:
    return int(np.unique(np.concatenate([s.values for s in workload.stats])).size)


def count_layer(layer: Layer, stats: WeightStats | None, arch: ArchConfig, design: str,
                network_codebook_size: int | None = None, first_layer: bool = True) -> dict:
    """Counts of one layer for one design. Units: cycles, events, words (``*_reads``/``*_writes``), bits."""
    if design == "dense_ws":
        c = _systolic(layer, arch, None)
        c["multiplies"] = c["macs"]
        storage = layer.weight_count * arch.weight_bits
    elif design in ("codebook", "shift_add"):
        if stats is None:
            raise ValueError(f"design {design!r}: layer {layer.name!r} has no weight statistics")
        interval = _fold_intervals(layer, stats, arch) if design == "shift_add" else None
        c = _systolic(layer, arch, interval)
        idx_bits, book_bits = _codebook_bits(stats, arch, network_codebook_size, first_layer)
        storage = layer.weight_count * idx_bits + book_bits
        c["codebook_reads"] = layer.weight_count
        if design == "codebook":
            c["multiplies"] = c["macs"]
        else:
            terms, nnz = int(stats.terms_per_filter.sum()), int(stats.nnz_per_filter.sum())
            c["shifts"] = layer.gemm_n * terms
            c["adds"] += layer.gemm_n * (terms - nnz)
    elif design in ("factorised", "sparse_pe"):
        if stats is None:
            raise ValueError(f"design {design!r}: layer {layer.name!r} has no weight statistics")
        c = factorised_counts(layer, stats, arch, network_codebook_size, first_layer, design == "factorised")
        storage = c["weight_storage_bits"]
    else:
        raise ValueError(f"unknown design {design!r}; expected one of {list(DESIGNS)}")
    c["weight_storage_bits"] = storage
    _memory_traffic(c, layer, arch, storage)
    return {f: c.get(f, 0) for f in COUNT_FIELDS}


def _codebook_bits(stats: WeightStats, arch: ArchConfig, network_size, first_layer) -> tuple[int, int]:
    """(index bits per weight, codebook bits charged to this layer)."""
    if arch.codebook_scope == "network" and network_size is not None:
        bits = max(1, math.ceil(math.log2(network_size)))
        return bits, (network_size * arch.codebook_entry_bits if first_layer else 0)
    return stats.index_bits, stats.codebook_size * arch.codebook_entry_bits


def _systolic(layer: Layer, arch: ArchConfig, intervals) -> dict:
    """Weight-stationary systolic counts (SCALE-Sim compatible when ``intervals`` is None).

    ``intervals``: int array (groups, col_folds, row_folds) of cycles per streamed output per fold.
    """
    r, cols = arch.array_rows, arch.array_cols
    n, k, m, g = layer.gemm_n, layer.gemm_k, layer.gemm_m, layer.groups
    row_folds, col_folds = math.ceil(k / r), math.ceil(m / cols)
    folds = row_folds * col_folds
    streamed = g * folds if intervals is None else int(intervals.sum())  # cycles per output, all folds
    compute = g * (folds * (2 * r + cols - 2) - 1) + n * streamed
    macs = layer.macs
    fold_cycles = 2 * r + 2 * cols + n - 3  # SCALE-Sim's per-fold cycle count for compute utilisation
    ofmap_writes = g * (row_folds if arch.spill_psums_per_row_fold else 1) * n * m
    ofmap_reads = g * (row_folds - 1) * n * m if arch.spill_psums_per_row_fold else 0
    return {
        "compute_cycles": compute,
        "mapping_efficiency_pct": 100.0 * k * m / (folds * r * cols),
        "compute_util_pct": 100.0 * k * m * n / (folds * r * cols * fold_cycles),
        "overall_util_pct": (macs * 100) / (compute * r * cols),
        "load_imbalance": 1.0,
        "macs": macs, "adds": macs,
        "ifmap_sram_reads": g * col_folds * n * k, "filter_sram_reads": g * k * m,
        "ofmap_sram_writes": ofmap_writes, "ofmap_sram_reads": ofmap_reads,
        "ifmap_sram_read_bits": g * col_folds * n * k * arch.act_bits,
        "ofmap_sram_write_bits": ofmap_writes * arch.acc_bits, "ofmap_sram_read_bits": ofmap_reads * arch.acc_bits,
        "array_hop_bits": macs * (arch.act_bits + arch.acc_bits),
        "_col_folds": col_folds,
    }


def _fold_intervals(layer: Layer, stats: WeightStats, arch: ArchConfig) -> np.ndarray:
    """Cycles per output of each fold of a shift-add array: ceil(max terms in fold / shifters), >= 1."""
    r, cols = arch.array_rows, arch.array_cols
    k, m, g = layer.gemm_k, layer.gemm_m, layer.groups
    row_folds, col_folds = math.ceil(k / r), math.ceil(m / cols)
    terms = np.zeros((g, col_folds * cols, row_folds * r), dtype=np.int8)
    terms[:, :m, :k] = stats.terms.reshape(g, m, k)
    fold_max = terms.reshape(g, col_folds, cols, row_folds, r).max(axis=(2, 4))
    return np.maximum(1, -(-fold_max.astype(np.int64) // arch.shifters_per_pe))


def _memory_traffic(c: dict, layer: Layer, arch: ArchConfig, storage_bits: int) -> None:
    """Fill the DRAM and SRAM-fill bit counts, filter SRAM read bits and the bandwidth stalls."""
    ifmap_bits = layer.ifmap_words * arch.act_bits
    fits = ifmap_bits <= arch.ifmap_sram_kb * 8192 // 2  # half the SRAM: double-buffered
    col_folds = c.pop("_col_folds")
    reloads = 1 if fits else col_folds
    c["ifmap_dram_read_bits"] = ifmap_bits * reloads
    c["ifmap_sram_write_bits"] = c["ifmap_dram_read_bits"]
    c["filter_dram_read_bits"] = storage_bits
    c["filter_sram_write_bits"] = storage_bits
    c.setdefault("filter_sram_read_bits", storage_bits)
    c["ofmap_dram_write_bits"] = layer.out_channels * layer.gemm_n * arch.act_bits
    stalls = 0
    if arch.dram_bandwidth_bytes_per_cycle > 0:
        dram_bits = c["ifmap_dram_read_bits"] + c["filter_dram_read_bits"] + c["ofmap_dram_write_bits"]
        transfer = math.ceil(dram_bits / (8 * arch.dram_bandwidth_bytes_per_cycle))
        stalls = max(0, transfer - c["compute_cycles"])
    c["stall_cycles"] = stalls
    c["cycles"] = c["compute_cycles"] + stalls


def factorised_counts(layer: Layer, stats: WeightStats, arch: ArchConfig, network_codebook_size=None,
                      first_layer: bool = True, factorise: bool = True) -> dict:
    """UCNN-style factorised PEs (Hegde et al., ISCA 2018).

    Each PE holds the indirection tables of one block of G filters and computes, per output pixel,
    sub-group sums over taps sharing a weight tuple, then per filter U products and their sum:
    adds (K_any - S) + sum_g max(S_g - 1, 0), products sum_g U_g (multiplies, or t shifts and t - 1 adds
    per value). A PE needs max(ceil(adds / adders), ceil(products / multipliers)) cycles per output.
    Blocks are dealt to the rows x cols PEs in passes; PEs in a pass run in lockstep, so a pass costs
    outputs x the slowest block's work, plus rows + cols cycles to load tables and fill
    (``load_imbalance`` = cycle-weighted max/mean work). With fewer blocks than PEs, outputs are split
    over copies of each block. Tables: iiT ceil(log2 K) bits per non-zero tap, wiT G x index bits per
    sub-group, plus the codebook. Activations come from the ifmap SRAM once per pass and are broadcast.
    ``factorise=False`` is the ``sparse_pe`` baseline on the same PEs (UCNN's Eyeriss-style sparse
    baseline): every non-zero tap is multiplied, adds nnz - 1, weights stored as values + tap offsets.
    """
    if factorise:
        reuse = stats.group_reuse(arch.activation_group_filters)
        idx_bits, book_bits = _codebook_bits(stats, arch, network_codebook_size, first_layer)
        filters_per_block = arch.activation_group_filters
    else:  # sparse_pe: each non-zero tap is its own group; weights stored as values, no codebook
        nnz = stats.nnz_per_filter.astype(np.int64)
        reuse = {"taps_any": nnz, "subgroups": nnz, "subgroups_per_filter_minus1": np.maximum(nnz - 1, 0),
                 "unique": nnz, "unique_terms": stats.terms_per_filter}
        idx_bits, book_bits, filters_per_block = arch.weight_bits, 0, 1
    n, k, g_conv = layer.gemm_n, layer.gemm_k, layer.groups
    adds = reuse["taps_any"] - reuse["subgroups"] + reuse["subgroups_per_filter_minus1"]
    if arch.factorised_product == "shift_add":
        products, per_product = reuse["unique_terms"], arch.shifters_per_pe
        adds = adds + reuse["unique_terms"] - reuse["unique"]
    else:
        products, per_product = reuse["unique"], arch.multipliers_per_pe
    work = np.maximum(1, np.maximum(-(-adds // arch.adders_per_pe), -(-products // per_product)))
    cycles, busy, imbalance, passes = _deal_blocks(work, n, arch)
    ptr_bits = max(1, math.ceil(math.log2(k)))
    table_bits = reuse["taps_any"] * ptr_bits + reuse["subgroups"] * filters_per_block * idx_bits
    blocks_per_group = work.size // g_conv
    ifmap_reads = g_conv * n * k * max(1, math.ceil(blocks_per_group / arch.num_pes))
    product_total = n * int(products.sum())
    out_words = layer.out_channels * n
    return {
        "compute_cycles": cycles,
        "mapping_efficiency_pct": 100.0 * busy,
        "compute_util_pct": 100.0 * n * int(adds.sum()) / (cycles * arch.num_pes * arch.adders_per_pe),
        "overall_util_pct": 100.0 * layer.macs / (cycles * arch.num_pes),
        "load_imbalance": imbalance,
        "macs": layer.macs, "adds": n * int(adds.sum()),
        "multiplies": product_total if arch.factorised_product == "multiply" else 0,
        "shifts": product_total if arch.factorised_product == "shift_add" else 0,
        "codebook_reads": n * int(reuse["unique"].sum()) if factorise else 0,
        "ifmap_sram_reads": ifmap_reads, "ifmap_sram_read_bits": ifmap_reads * arch.act_bits,
        "filter_sram_reads": int(table_bits.sum() + book_bits) // max(1, arch.weight_bits),
        "ofmap_sram_writes": out_words, "ofmap_sram_write_bits": out_words * arch.acc_bits,
        "rf_read_bits": n * int((reuse["taps_any"] * arch.act_bits + table_bits).sum()),
        "array_hop_bits": ifmap_reads * arch.act_bits * min(work.size, arch.num_pes) // max(1, passes),
        "weight_storage_bits": int(table_bits.sum()) + book_bits,
        "_col_folds": passes,
    }


def _deal_blocks(work: np.ndarray, n: int, arch: ArchConfig) -> tuple[int, float, float, int]:
    """(cycles, mean fraction of PEs busy, load imbalance, passes) for per-output ``work`` of each block."""
    p = arch.num_pes
    fill = arch.array_rows + arch.array_cols
    if work.size < p:
        split = p // work.size
        outputs = math.ceil(n / split)
        cycles = outputs * int(work.max()) + fill
        return cycles, work.size * split / p, float(work.max() / work.mean()), 1
    passes = math.ceil(work.size / p)
    padded = np.zeros(passes * p, dtype=np.int64)
    padded[:work.size] = work
    per_pass = padded.reshape(passes, p)
    slowest = per_pass.max(axis=1)
    counts = np.minimum(p, work.size - np.arange(passes) * p)
    mean = per_pass.sum(axis=1) / counts
    cycles = n * int(slowest.sum()) + passes * fill
    return cycles, float(work.size / (passes * p)), float(slowest.sum() / mean.sum()), passes
