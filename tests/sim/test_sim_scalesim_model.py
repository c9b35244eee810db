"""The SCALE-Sim memory model against naive element-by-element transcriptions of its rules, and the
dataflow / design / DRAM-model combinations."""

import math

import numpy as np
import pytest
from wfn_sim.arch import ArchConfig
from wfn_sim.counts import count_layer
from wfn_sim.scalesim import _ReadBuffer, _write_buffer, dram_counts, layer_report
from wfn_sim.synth import with_synthetic_weights
from wfn_sim.workload import Layer, Workload


def naive_read_buffer(cycles, addrs, size_words):
    """SCALE-Sim's estimate-bandwidth read buffer, one request at a time: sets of size/100 new addresses,
    an epoch of 50 sets, hits only within the current epoch."""
    items = size_words // 100
    epoch, current, reads, epoch_ends = set(), set(), 0, []
    for cycle, addr in zip(cycles, addrs):
        if addr in epoch or addr in current:
            continue
        current.add(addr)
        if len(current) == items:
            epoch |= current
            current = set()
            if len(epoch) == 50 * items:
                reads += len(epoch)
                epoch_ends.append(cycle)
                epoch = set()
    return reads + len(epoch) + len(current), epoch_ends


@pytest.mark.parametrize("seed", range(4))
def test_read_buffer_equals_naive_transcription(seed):
    rng = np.random.default_rng(seed)
    size = int(rng.integers(1, 5)) * 1024
    space = int(rng.integers(200, 6000))
    addrs = rng.integers(0, space, size=int(rng.integers(1000, 60000)))
    cycles = np.sort(rng.integers(0, addrs.size // 3, size=addrs.size))
    buf = _ReadBuffer(size, space)
    for chunk in np.array_split(np.arange(addrs.size), 7):  # fed in pieces, as folds arrive
        buf.feed(cycles[chunk], addrs[chunk])
    reads, ends = naive_read_buffer(cycles, addrs, size)
    start, stop, got = buf.report()
    assert got == reads
    assert buf.epochs_done == len(ends)
    first = math.ceil(50 * (size // 100) / 10)
    if ends:
        assert (start, stop) == (int(cycles[0]) - first, ends[-1] + 1)
    else:
        assert stop == -1 and start == -math.ceil(math.ceil(reads / (size // 100)) * (size // 100) / 10)


def naive_write_buffer(words_per_row, size, line):
    """SCALE-Sim's write buffer, one word at a time (lines of `line` words, drains of half the buffer)."""
    drain_size = size - math.ceil(size * 0.5)
    drain_lines = math.ceil(drain_size / line)
    free, fill, lines, drained, drain_end, stall = size, 0, [], 0, 0, 0
    writes, cycles_out = 0, []

    def drain(cycle):
        nonlocal fill, drained, writes, free
        if fill:
            lines.append(fill)
            fill = 0
        block = lines[drained:drained + drain_lines]
        data = len(block) * line - (line - block[-1])
        writes += data
        free += data
        drained += len(block)
        cycles_out.extend(range(cycle, cycle + len(block)))
        return cycle + len(block) - 1

    out_cycle = 0
    for row, words in enumerate(words_per_row):
        current = row + stall
        for _ in range(words):
            free -= 1
            fill += 1
            if fill == line:
                lines.append(line)
                fill = 0
            if current < drain_end:
                if free <= 0:
                    current = drain_end
            elif free < size - drain_size:
                drain_end = drain(current)
        stall += current - (row + stall)
        out_cycle = current
    cycle = out_cycle
    while drained < len(lines) or fill:
        cycle = drain(cycle) + 1
    return writes, min(cycles_out), max(cycles_out), stall


@pytest.mark.parametrize("seed", range(5))
def test_write_buffer_equals_naive_transcription(seed):
    rng = np.random.default_rng(seed)
    line = int(rng.integers(3, 40))
    size = int(rng.integers(2, 6)) * 1024
    burst = rng.integers(0, 3 * line if seed % 2 else line, size=int(rng.integers(300, 3000)))
    burst[-1] = max(burst[-1], 1)
    writes, start, stop, stall = naive_write_buffer(burst, size, line)
    got = _write_buffer(burst, size, line)
    assert (got["writes"], got["start"], got["stop"], got["stall_cycles"]) == (writes, start, stop, stall)
    if seed % 2:
        assert stall > 0  # bursts faster than a line per cycle stall the array


def conv(name="c", c=16, m=24, h=10, k=3, stride=1, padding=1, groups=1):
    return Layer(name, "conv", h, h, c, m, k, k, stride, stride, padding, padding, groups=groups)


@pytest.mark.parametrize("design", ["factorised", "sparse_pe"])
@pytest.mark.parametrize("dataflow", ["os_systolic", "is_systolic"])
def test_ucnn_designs_raise_outside_weight_stationary(design, dataflow):
    wl = with_synthetic_weights(Workload("w", (conv(),), (None,)), 17)
    with pytest.raises(ValueError, match=f"design '{design}' models UCNN's PE.*no {dataflow} form"):
        count_layer(wl.layers[0], wl.stats[0], ArchConfig(dataflow=dataflow), design)


def test_ucnn_designs_raise_under_scalesim_dram_model():
    wl = with_synthetic_weights(Workload("w", (conv(),), (None,)), 17)
    with pytest.raises(ValueError, match="dram_model 'scalesim' reproduces SCALE-Sim's systolic-array buffers"):
        count_layer(wl.layers[0], wl.stats[0], ArchConfig(dram_model="scalesim"), "factorised")
    with pytest.raises(ValueError, match="needs spill_psums_per_row_fold=true"):
        ArchConfig(dram_model="scalesim", spill_psums_per_row_fold=False)


@pytest.mark.parametrize("dataflow", ["ws_systolic", "os_systolic", "is_systolic"])
def test_shift_add_fold_intervals_by_brute_force(dataflow):
    """Each fold runs at ceil(max terms of the weights it uses / shifters) per streamed element."""
    layer = conv(c=9, m=70, h=7)  # K = 81, M = 70: partial folds on both axes
    wl = with_synthetic_weights(Workload("w", (layer,), (None,)), 64, seed=3)  # multi-term values
    arch = ArchConfig(dataflow=dataflow, shifters_per_pe=1)
    terms = wl.stats[0].terms.reshape(layer.gemm_m, layer.gemm_k)
    r, c = arch.array_rows, arch.array_cols
    n, k, m = layer.gemm_n, layer.gemm_k, layer.gemm_m
    sr, sc, t = {"ws_systolic": (k, m, n), "os_systolic": (n, m, k), "is_systolic": (k, n, m)}[dataflow]
    fill = r + c - 2 if dataflow == "os_systolic" else 2 * r + c - 2
    expected = -1
    for fc in range(math.ceil(sc / c)):
        for fr in range(math.ceil(sr / r)):
            if dataflow == "ws_systolic":
                block = terms[fc * c:(fc + 1) * c, fr * r:(fr + 1) * r]
            elif dataflow == "os_systolic":
                block = terms[fc * c:(fc + 1) * c, :]
            else:
                block = terms[:, fr * r:(fr + 1) * r]
            expected += fill + t * max(1, int(block.max()))
    got = count_layer(layer, wl.stats[0], arch, "shift_add")
    dense = count_layer(layer, None, arch, "dense_ws")
    assert got["compute_cycles"] == expected
    assert got["compute_cycles"] > dense["compute_cycles"]
    assert got["shifts"] == n * int(terms.sum())


@pytest.mark.parametrize("dataflow", ["ws_systolic", "os_systolic", "is_systolic"])
def test_codebook_on_each_dataflow_keeps_the_dense_cycles_and_decodes_per_filter_read(dataflow):
    wl = with_synthetic_weights(Workload("w", (conv(c=40, m=50),), (None,)), 5)
    arch = ArchConfig(dataflow=dataflow)
    dense = count_layer(wl.layers[0], None, arch, "dense_ws")
    book = count_layer(wl.layers[0], wl.stats[0], arch, "codebook")
    assert book["cycles"] == dense["cycles"]
    assert book["codebook_reads"] == dense["filter_sram_reads"]
    assert book["filter_dram_read_bits"] < dense["filter_dram_read_bits"]
    scalesim_arch = arch.replace(dram_model="scalesim")
    s_dense = count_layer(wl.layers[0], None, scalesim_arch, "dense_ws")
    s_book = count_layer(wl.layers[0], wl.stats[0], scalesim_arch, "codebook")
    assert s_book["filter_dram_reads"] == s_dense["filter_dram_reads"]  # same words, narrower
    assert s_book["filter_dram_read_bits"] == s_dense["filter_dram_reads"] * wl.stats[0].index_bits \
        + wl.stats[0].codebook_size * arch.codebook_entry_bits


def test_reuse_model_reloads_per_dataflow():
    big = conv(c=64, m=256, h=56)  # ifmap 56*56*64 words > half of 64 KB; weights 147 KB > half the filter SRAM
    n_folds = {df: count_layer(big, None, ArchConfig(dataflow=df), "dense_ws") for df in
               ("ws_systolic", "os_systolic", "is_systolic")}
    col_folds = math.ceil(256 / 32)
    assert n_folds["ws_systolic"]["ifmap_dram_reads"] == big.ifmap_words * col_folds  # padded: all touched
    assert n_folds["ws_systolic"]["filter_dram_reads"] == big.weight_count
    assert n_folds["os_systolic"]["ifmap_dram_reads"] == big.ifmap_words * col_folds
    assert n_folds["os_systolic"]["filter_dram_reads"] == big.weight_count  # a K x 32 block fits
    assert n_folds["is_systolic"]["ifmap_dram_reads"] == big.ifmap_words
    assert n_folds["is_systolic"]["filter_dram_reads"] == big.weight_count * math.ceil(big.gemm_n / 32)
    for c in n_folds.values():
        assert c["ofmap_dram_writes"] == big.out_channels * big.gemm_n
        assert c["cycles_incl_prefetch"] == c["cycles"]


def test_grouped_layer_runs_as_one_scalesim_layer_per_group():
    grouped = conv(c=16, m=32, groups=4)
    one = conv(c=4, m=8)
    arch = ArchConfig(dram_model="scalesim")
    g, o = dram_counts(grouped, arch), layer_report(one, arch)
    assert g["ifmap_dram_reads"] == 4 * o["ifmap_dram_reads"]
    assert g["cycles_incl_prefetch"] == 4 * o["total_cycles_incl_prefetch"]
    assert count_layer(grouped, None, arch, "dense_ws")["cycles"] == 4 * o["total_cycles"]
    with pytest.raises(ValueError, match="SCALE-Sim has no grouped convolution"):
        layer_report(grouped, arch)


def test_reuse_model_counts_the_ifmap_words_the_windows_touch():
    """r18_l4_down (1x1, stride 2 on 13x13x256) touches 7x7x256 words: fetched once, as SCALE-Sim finds."""
    from wfn_sim.systolic import ifmap_footprint_words

    down = Layer("down", "conv", 13, 13, 256, 512, 1, 1, 2, 2, ceil_mode=True)
    assert ifmap_footprint_words(down) == 7 * 7 * 256
    reuse = count_layer(down, None, ArchConfig(), "dense_ws")
    scalesim = count_layer(down, None, ArchConfig(dram_model="scalesim"), "dense_ws")
    assert reuse["ifmap_dram_reads"] == scalesim["ifmap_dram_reads"] == 12544
    padded = Layer("c", "conv", 9, 9, 4, 8, 3, 3, 2, 2, 1, 1)  # windows cover every input pixel
    assert ifmap_footprint_words(padded) == padded.ifmap_words
