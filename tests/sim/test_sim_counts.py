import math

import numpy as np
import pytest
from wfn_sim.arch import ArchConfig
from wfn_sim.counts import check_fits, count_layer, count_workload
from wfn_sim.functional import check_layer
from wfn_sim.synth import synthetic_stats, with_synthetic_weights
from wfn_sim.workload import Layer, WeightStats, Workload

ARCH = ArchConfig()
CONV = Layer("conv", "conv", 10, 10, 12, 8, 3, 3, 1, 1, 1, 1)  # N=100, K=108, M=8


def stats_for(layer, u, seed=0, zero_fraction=0.3):
    return synthetic_stats(layer, u, np.random.default_rng(seed), zero_fraction)


@pytest.mark.parametrize("u", [3, 17, 256])
@pytest.mark.parametrize("g", [1, 2, 3])
def test_factorised_counts_equal_functional_evaluation(u, g):
    layer = Layer("grouped", "conv", 9, 7, 8, 10, 3, 3, 2, 2, 1, 1, groups=2)
    stats = stats_for(layer, u, seed=u + g)
    check = check_layer(layer, stats, g, seed=1)
    assert check["exact"] and check["max_abs_error"] == 0.0  # integers: bit-exact with the dense result
    c = count_layer(layer, stats, ArchConfig(activation_group_filters=g), "factorised")
    assert c["adds"] == layer.gemm_n * check["adds_per_output"]
    assert c["multiplies"] == layer.gemm_n * check["products_per_output"]


def test_factorised_with_float_power_of_two_weights_equals_dense():
    layer = Layer("lin", "linear", 3, 1, 40, 6)
    rng = np.random.default_rng(2)
    w = rng.choice([-0.5, -0.125, 0.0, 0.25, 0.75], size=(6, 40))
    result = check_layer(layer, WeightStats.from_weight(w), 2)
    assert result["max_abs_error"] < 1e-9


def test_factorised_without_reuse_uses_nnz_minus_one_adds_and_u_products():
    stats = stats_for(CONV, 17)
    c = count_layer(CONV, stats, ARCH, "factorised")
    nnz, u = stats.nnz_per_filter, stats.unique_per_filter
    assert c["adds"] == CONV.gemm_n * int(np.maximum(nnz - 1, 0).sum())
    assert c["multiplies"] == CONV.gemm_n * int(u.sum())
    sparse = count_layer(CONV, stats, ARCH, "sparse_pe")
    assert sparse["multiplies"] == CONV.gemm_n * int(nnz.sum()) and sparse["adds"] == c["adds"]


def test_factorised_cycles_and_imbalance_by_hand():
    # 8 filters on 1024 PEs: 128 copies of each filter split the 100 outputs -> 1 output per PE
    stats = stats_for(CONV, 17)
    c = count_layer(CONV, stats, ARCH, "factorised")
    work = np.maximum(stats.nnz_per_filter - 1, stats.unique_per_filter)  # 1 adder, 1 multiplier
    assert c["compute_cycles"] == math.ceil(100 / 128) * work.max() + 32 + 32
    assert c["load_imbalance"] == pytest.approx(work.max() / work.mean())


def test_shift_add_counts_and_cycles_by_hand():
    layer = Layer("small", "conv", 6, 6, 3, 5, 3, 3)  # K=27 <= 32 rows, M=5: a single fold
    stats = stats_for(layer, 256, zero_fraction=0.0)
    terms = stats.terms
    c = count_layer(layer, stats, ArchConfig(shifters_per_pe=1), "shift_add")
    n = layer.gemm_n
    assert c["shifts"] == n * int(terms.sum())
    assert c["adds"] == layer.macs + n * int((terms.astype(int) - (terms > 0)).sum())
    assert c["multiplies"] == 0
    assert c["compute_cycles"] == 2 * 32 + 32 - 2 + n * int(terms.max()) - 1
    dense = count_layer(layer, stats, ARCH, "dense_ws")
    wide = count_layer(layer, stats, ArchConfig(shifters_per_pe=8), "shift_add")
    assert wide["compute_cycles"] == dense["compute_cycles"]


def test_codebook_weight_bits_per_layer_and_network_scope():
    wl = with_synthetic_weights(Workload("two", (CONV, CONV), (None, None)), 17, seed=3)
    per_layer = count_workload(wl, ARCH, "codebook")
    s0 = wl.stats[0]
    assert per_layer[0]["filter_dram_read_bits"] == CONV.weight_count * s0.index_bits + s0.codebook_size * 16
    assert per_layer[0]["codebook_reads"] == CONV.weight_count
    network = count_workload(wl, ArchConfig(codebook_scope="network"), "codebook")
    size = np.unique(np.concatenate([s.values for s in wl.stats])).size
    bits = math.ceil(math.log2(size))
    assert network[0]["filter_dram_read_bits"] == CONV.weight_count * bits + size * 16
    assert network[1]["filter_dram_read_bits"] == CONV.weight_count * bits
    dense = count_layer(CONV, None, ARCH, "dense_ws")
    assert dense["filter_dram_read_bits"] == CONV.weight_count * 8


def test_dram_bandwidth_makes_a_layer_memory_bound():
    c = count_layer(CONV, None, ArchConfig(dram_bandwidth_bytes_per_cycle=0.5), "dense_ws")
    dram_bits = c["ifmap_dram_read_bits"] + c["filter_dram_read_bits"] + c["ofmap_dram_write_bits"]
    assert c["stall_cycles"] == math.ceil(dram_bits / 4) - c["compute_cycles"] > 0
    assert c["cycles"] == c["compute_cycles"] + c["stall_cycles"]
    assert count_layer(CONV, None, ARCH, "dense_ws")["stall_cycles"] == 0


def test_ifmap_reloaded_per_column_fold_when_it_does_not_fit_sram():
    big = Layer("big", "conv", 64, 64, 32, 96, 3, 3, 1, 1, 1, 1)  # 128 KB of activations, 3 column folds
    c = count_layer(big, None, ARCH, "dense_ws")
    assert c["ifmap_dram_read_bits"] == 3 * big.ifmap_words * 8
    c = count_layer(big, None, ArchConfig(ifmap_sram_kb=512), "dense_ws")
    assert c["ifmap_dram_read_bits"] == big.ifmap_words * 8


def test_designs_needing_weights_reject_shape_only_layers():
    wl = Workload("shapes", (CONV,), (None,))
    with pytest.raises(ValueError, match="design 'factorised' needs weight statistics.*layer 'conv'"):
        check_fits(wl, ARCH, ["dense_ws", "factorised"])


def test_layer_that_does_not_fit_the_factorised_pe_is_rejected_before_work():
    wl = with_synthetic_weights(Workload("w", (CONV,), (None,)), 3)
    with pytest.raises(ValueError, match="layer 'conv' does not fit the factorised PE: K=108 taps > pe_buffer_words"):
        check_fits(wl, ArchConfig(pe_buffer_words=64), ["factorised"])


def test_unknown_design_is_rejected():
    with pytest.raises(ValueError, match="unknown design 'tpu'"):
        count_layer(CONV, None, ARCH, "tpu")


def test_factorised_gain_over_sparse_baseline_shrinks_as_u_grows():
    from wfn_sim.sweep import unique_weight_sweep

    layers = (Layer("a", "conv", 14, 14, 64, 64, 3, 3, 1, 1, 1, 1),
              Layer("b", "conv", 7, 7, 128, 128, 3, 3, 1, 1, 1, 1))
    rows = unique_weight_sweep(Workload("mini", layers, (None, None)), ArchConfig(activation_group_filters=2),
                               (3, 17, 64, 256), zero_fraction=0.3)
    gains = [r["factorised_energy_gain_vs_sparse_pe"] for r in rows if r["design"] == "factorised"]
    assert all(a > b for a, b in zip(gains, gains[1:], strict=False)), gains
    assert gains[0] > 1.2


def test_layer_whose_weight_fold_exceeds_the_filter_sram_is_rejected():
    wl = Workload("shapes", (CONV,), (None,))
    arch = ArchConfig(array_rows=128, array_cols=128, filter_sram_kb=1)
    with pytest.raises(ValueError, match="layer 'conv' does not fit the array: .*filter_sram_kb=1,"):
        check_fits(wl, arch, ["dense_ws"])
    check_fits(wl, ArchConfig(array_rows=128, array_cols=128, filter_sram_kb=2), ["dense_ws"])
