"""Event counts and cycles: pure functions from (layer, weight statistics, architecture) to counts.

Designs:
- ``dense_ws``: the dense systolic array of SCALE-Sim v3.0.0 in the configured ``dataflow`` (the name is
  from its first, weight-stationary, form; :mod:`wfn_sim.systolic` has the ws / os / is closed forms).
- ``codebook``: same array and cycles; weights stored and moved as b-bit indices plus a codebook
  (per layer or per network), decoded once as each weight enters the array (WS: once per weight,
  OS / IS: once per filter SRAM read, as the weights stream).
- ``shift_add``: codebook storage, multipliers replaced by shifters: t shifts and t-1 adds per weight
  with t power-of-two terms; a fold runs at ceil(max t / shifters_per_pe) cycles per streamed element,
  the max over the weights the fold uses (WS: its stationary block; OS: all taps of its filters; IS: its
  taps of all filters).
- ``factorised``: UCNN-style PEs (see :func:`factorised_counts`); ``ws_systolic`` only.
- ``sparse_pe``: the same PEs without factorisation, zero taps skipped (UCNN's sparse baseline);
  ``ws_systolic`` only.
DRAM traffic, ``dram_model``:
- ``reuse`` (default, our model): each tensor is read once when it fits half its SRAM (double
  buffering), else once per pass over it (the ifmap counted as the words its windows touch) (WS ifmap per column fold; OS ifmap per column fold and each
  filter block per output fold; IS filters per column fold; factorised ifmap per pass); outputs written
  once. ``cycles_incl_prefetch`` = ``cycles`` (no separate prefetch phase is modelled).
- ``scalesim``: SCALE-Sim's buffers, reproduced exactly by :mod:`wfn_sim.scalesim` (dense systolic
  designs only).
Bandwidth stalls when ``dram_bandwidth_bytes_per_cycle`` > 0: cycles = max(compute cycles, DRAM bits /
bandwidth), under either model.
"""

from __future__ import annotations

import math

import numpy as np

from . import scalesim
from .arch import DESIGNS, SYSTOLIC_DESIGNS, UCNN_DESIGNS, ArchConfig
from .systolic import dense_counts, fold_order_intervals, ifmap_footprint_words, mapping, weight_folds
from .workload import Layer, WeightStats, Workload

# Units: *_cycles in clock cycles; *_pct percent; load_imbalance = max/mean PE work (1 = balanced);
# macs = the layer's dense multiply-accumulates (same for every design); multiplies/adds/shifts/
# codebook_reads = events; *_sram_reads/_writes = words (SCALE-Sim's counts for dense_ws; filter words are
# weight_bits wide for the factorised designs); *_dram_reads/_writes = elements moved to or from DRAM
# (activations, weights, outputs or partial sums; their encoding is in the *_bits fields);
# cycles_incl_prefetch = cycles plus SCALE-Sim's prefetch before and drain after compute (dram_model
# scalesim; = cycles under reuse); *_bits = bits moved; rf_read_bits = PE-local buffer reads;
# array_hop_bits = bits passed between PEs; weight_storage_bits = the layer's weights as stored in DRAM.
COUNT_FIELDS = (
    "cycles", "compute_cycles", "stall_cycles", "mapping_efficiency_pct", "compute_util_pct",
    "overall_util_pct", "load_imbalance", "macs", "multiplies", "adds", "shifts", "codebook_reads",
    "ifmap_sram_reads", "filter_sram_reads", "ofmap_sram_writes", "ofmap_sram_reads",
    "ifmap_sram_read_bits", "ifmap_sram_write_bits", "filter_sram_read_bits", "filter_sram_write_bits",
    "ofmap_sram_read_bits", "ofmap_sram_write_bits", "ifmap_dram_read_bits", "filter_dram_read_bits",
    "ofmap_dram_write_bits", "rf_read_bits", "array_hop_bits", "weight_storage_bits",
    "ifmap_dram_reads", "filter_dram_reads", "ofmap_dram_writes", "cycles_incl_prefetch",
)
RATIO_FIELDS = ("mapping_efficiency_pct", "compute_util_pct", "overall_util_pct", "load_imbalance")


def check_fits(workload: Workload, arch: ArchConfig, designs) -> None:
    """Raise before any work if a design cannot run a layer on ``arch`` (names layer and field)."""
    half_filter_sram_bits = arch.filter_sram_kb * 8192 // 2  # double-buffered
    for design in designs:
        if design not in DESIGNS:
            raise ValueError(f"unknown design {design!r}; expected one of {list(DESIGNS)}")
        check_design(arch, design)
        for layer in workload.layers:
            fold_bits = min(layer.gemm_k, arch.array_rows) * min(layer.gemm_m, arch.array_cols) * arch.weight_bits
            if (design in SYSTOLIC_DESIGNS and arch.dataflow == "ws_systolic"
                    and fold_bits > half_filter_sram_bits):
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


def check_design(arch: ArchConfig, design: str) -> None:
    """Raise if ``design`` has no model under ``arch``'s dataflow or DRAM model."""
    if design in UCNN_DESIGNS and arch.dataflow != "ws_systolic":
        raise ValueError(f"design {design!r} models UCNN's PE, which keeps the indirection tables of its filters "
                         f"stationary and walks whole dot products in place: it has no {arch.dataflow} form "
                         "(use dataflow ws_systolic, or the designs dense_ws, codebook, shift_add)")
    if design in UCNN_DESIGNS and arch.dram_model == "scalesim":
        raise ValueError(f"design {design!r}: dram_model 'scalesim' reproduces SCALE-Sim's systolic-array buffers, "
                         "which the factorised PEs do not have; use dram_model 'reuse' (or the designs dense_ws, "
                         "codebook, shift_add)")


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
    if design in DESIGNS:
        check_design(arch, design)
    idx_bits, book_bits = arch.weight_bits, 0
    if design == "dense_ws":
        c = dense_counts(layer, arch, None)
        c["multiplies"] = c["macs"]
        storage = layer.weight_count * arch.weight_bits
    elif design in ("codebook", "shift_add"):
        if stats is None:
            raise ValueError(f"design {design!r}: layer {layer.name!r} has no weight statistics")
        interval = _fold_intervals(layer, stats, arch) if design == "shift_add" else None
        c = dense_counts(layer, arch, interval)
        idx_bits, book_bits = _codebook_bits(stats, arch, network_codebook_size, first_layer)
        storage = layer.weight_count * idx_bits + book_bits
        c["codebook_reads"] = c["filter_sram_reads"]  # decoded as each weight enters the array
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
    _memory_traffic(c, layer, arch, storage, idx_bits, book_bits, design)
    return {f: c.get(f, 0) for f in COUNT_FIELDS}


def _codebook_bits(stats: WeightStats, arch: ArchConfig, network_size, first_layer) -> tuple[int, int]:
    """(index bits per weight, codebook bits charged to this layer)."""
    if arch.codebook_scope == "network" and network_size is not None:
        bits = max(1, math.ceil(math.log2(network_size)))
        return bits, (network_size * arch.codebook_entry_bits if first_layer else 0)
    return stats.index_bits, stats.codebook_size * arch.codebook_entry_bits


def _fold_intervals(layer: Layer, stats: WeightStats, arch: ArchConfig) -> np.ndarray:
    """Cycles per streamed element of each fold of a shift-add array (groups, col_folds, row_folds):
    ceil(max terms among the weights the fold uses / shifters), at least 1."""
    per_block_m, per_block_k, m_blocks, k_blocks = weight_folds(layer, arch)
    k, m, g = layer.gemm_k, layer.gemm_m, layer.groups
    terms = np.zeros((g, m_blocks * per_block_m, k_blocks * per_block_k), dtype=np.int8)
    terms[:, :m, :k] = stats.terms.reshape(g, m, k)
    block_max = terms.reshape(g, m_blocks, per_block_m, k_blocks, per_block_k).max(axis=(2, 4))
    block = np.maximum(1, -(-block_max.astype(np.int64) // arch.shifters_per_pe))
    return fold_order_intervals(layer, arch, block)


def _reuse_reloads(layer: Layer, arch: ArchConfig, c: dict, design: str) -> tuple[int, int]:
    """(ifmap, filter) DRAM reads per element under the reuse model."""
    half_ifmap = arch.ifmap_sram_kb * 8192 // 2  # double-buffered
    half_filter = arch.filter_sram_kb * 8192 // 2
    ifmap_fits = ifmap_footprint_words(layer) * arch.act_bits <= half_ifmap
    if design in ("factorised", "sparse_pe"):
        return (1 if ifmap_fits else c["_passes"]), 1
    mp = mapping(layer, arch)
    if arch.dataflow == "ws_systolic":
        return (1 if ifmap_fits else mp.col_folds), 1
    if arch.dataflow == "os_systolic":  # a filter block (K x cols) is reused by every output fold
        block_bits = layer.gemm_k * min(layer.gemm_m, arch.array_cols) * arch.weight_bits
        return (1 if ifmap_fits else mp.col_folds), (1 if block_bits <= half_filter else mp.row_folds)
    # is_systolic: each ifmap window element is stationary in exactly one fold; all filters stream per column fold
    weights_fit = layer.weight_count * arch.weight_bits <= half_filter
    return 1, (1 if weights_fit else mp.col_folds)


def _memory_traffic(c: dict, layer: Layer, arch: ArchConfig, storage_bits: int, idx_bits: int, book_bits: int,
                    design: str) -> None:
    """Fill the DRAM words and bits, SRAM-fill bits, filter SRAM read bits, prefetch cycles and stalls."""
    out_words = layer.out_channels * layer.gemm_n
    buffer_stalls = 0
    if arch.dram_model == "scalesim":
        d = scalesim.dram_counts(layer, arch)
        c["ifmap_dram_reads"], c["filter_dram_reads"] = d["ifmap_dram_reads"], d["filter_dram_reads"]
        c["ofmap_dram_writes"] = d["ofmap_dram_writes"]
        c["ifmap_dram_read_bits"] = d["ifmap_dram_reads"] * arch.act_bits
        c["filter_dram_read_bits"] = d["filter_dram_reads"] * idx_bits + book_bits
        # SCALE-Sim drains every word the array wrote to the ofmap SRAM, partial sums included
        c["ofmap_dram_write_bits"] = d["ofmap_dram_writes"] * arch.acc_bits
        # its buffers are emulated at one streamed element per cycle; a shift-add stretch adds its cycles
        stretch = c["compute_cycles"] - dense_counts(layer, arch)["compute_cycles"]
        buffer_stalls = d["stall_cycles"]  # SCALE-Sim's write-buffer stalls (0 unless a drain cannot keep up)
        prefetch_cycles = d["cycles_incl_prefetch"] + stretch
    else:
        ifmap_reloads, filter_reloads = _reuse_reloads(layer, arch, c, design)
        c["ifmap_dram_reads"] = ifmap_footprint_words(layer) * ifmap_reloads
        c["filter_dram_reads"] = layer.weight_count * filter_reloads
        c["ofmap_dram_writes"] = out_words
        c["ifmap_dram_read_bits"] = c["ifmap_dram_reads"] * arch.act_bits
        c["filter_dram_read_bits"] = storage_bits * filter_reloads
        c["ofmap_dram_write_bits"] = out_words * arch.act_bits
        prefetch_cycles = None
    c.pop("_passes", None)
    c["ifmap_sram_write_bits"] = c["ifmap_dram_read_bits"]
    c["filter_sram_write_bits"] = c["filter_dram_read_bits"]
    # systolic designs read each stored weight once per filter SRAM pass (WS once, OS per output fold, IS per
    # column fold); the factorised PEs read their tables once
    c.setdefault("filter_sram_read_bits", storage_bits * c["filter_sram_reads"] // layer.weight_count)
    busy = c["compute_cycles"] + buffer_stalls
    stalls = buffer_stalls
    if arch.dram_bandwidth_bytes_per_cycle > 0:
        dram_bits = c["ifmap_dram_read_bits"] + c["filter_dram_read_bits"] + c["ofmap_dram_write_bits"]
        transfer = math.ceil(dram_bits / (8 * arch.dram_bandwidth_bytes_per_cycle))
        stalls += max(0, transfer - busy)
    c["stall_cycles"] = stalls
    c["cycles"] = c["compute_cycles"] + stalls
    extra = stalls - buffer_stalls
    c["cycles_incl_prefetch"] = (prefetch_cycles if prefetch_cycles is not None else c["cycles"] - extra) + extra


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
        "_passes": passes,
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
