import math

import numpy as np
import pytest
from wfn_sim.synth import resnet_layers, synthetic_stats, unique_value_set, with_synthetic_weights
from wfn_sim.workload import Layer, WeightStats, Workload, load_topology_csv, naf_term_counts, write_topology_csv


def test_naf_term_counts_match_codebook_power_of_two_terms():
    from wfn_kernels.format.codebook import power_of_two_terms

    rng = np.random.default_rng(0)
    values = np.concatenate([rng.integers(-300, 300, 200), rng.normal(size=50), [0.0, 0.75, -0.375, 2.0 ** -9, 7.0]])
    expected = [len(power_of_two_terms(float(v))) for v in values]
    assert naf_term_counts(values).tolist() == expected


def test_weight_stats_per_filter_statistics():
    w = np.array([[1, 1, 0, 3, 3, 3], [0, 0, 0, 0, 0, 0], [-2, 5, 5, -2, 0, 7]], dtype=float)
    s = WeightStats.from_weight(w)
    assert s.nnz_per_filter.tolist() == [5, 0, 5]
    assert s.unique_per_filter.tolist() == [2, 0, 3]
    assert s.terms_per_filter.tolist() == [1 + 1 + 2 * 3, 0, 1 + 2 + 2 + 1 + 2]  # 3 = 4-1, 5 = 4+1, 7 = 8-1
    assert s.unique_terms_per_filter.tolist() == [1 + 2, 0, 1 + 2 + 2]
    assert s.codebook_size == 6 and s.index_bits == 3


def test_group_reuse_matches_brute_force():
    rng = np.random.default_rng(1)
    w = rng.integers(-1, 2, size=(5, 40)).astype(float)  # 5 filters, G=2: last block padded
    s = WeightStats.from_weight(w)
    r = s.group_reuse(2)
    for b in range(3):
        block = w[2 * b:2 * b + 2]
        tuples = {tuple(col) for col in block.T if np.any(col != 0)}
        assert r["subgroups"][b] == len(tuples)
        assert r["taps_any"][b] == int(np.any(block != 0, axis=0).sum())
        per_filter = sum(max(sum(t[g] != 0 for t in tuples) - 1, 0) for g in range(block.shape[0]))
        assert r["subgroups_per_filter_minus1"][b] == per_filter


def test_resnet_layer_lists_match_torchvision_parameter_counts():
    # torchvision: resnet18 11,689,512 and resnet50 25,557,032 parameters = conv/fc weights + fc bias
    # + 2 BatchNorm parameters per conv output channel
    for depth, params in ((18, 11_689_512), (50, 25_557_032)):
        layers = resnet_layers(depth)
        bn = sum(2 * ly.out_channels for ly in layers if ly.kind == "conv")
        assert sum(ly.weight_count for ly in layers) + 1000 + bn == params
    assert resnet_layers(50)[-2].out_h == 7


def test_topology_csv_round_trip(tmp_path):
    wl = Workload("r18", resnet_layers(18), (None,) * len(resnet_layers(18)))
    write_topology_csv(wl, tmp_path / "r18.csv")
    back = load_topology_csv(tmp_path / "r18.csv")
    assert back.layers == wl.layers


def test_topology_csv_with_wrong_columns_is_rejected(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("name,kind,height\nc1,conv,8\n")
    with pytest.raises(ValueError, match="header .* is neither"):
        load_topology_csv(path)


def test_topology_csv_with_non_integer_field_names_row_and_column(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("name,kind,in_h,in_w,in_channels,out_channels,kernel_h,kernel_w,stride,padding,groups\n"
                    "c1,conv,8,8,3,eight,3,3,1,1,1\n")
    with pytest.raises(ValueError, match="row 2, column 'out_channels'"):
        load_topology_csv(path)


@pytest.mark.parametrize("field,value,match", [
    ("in_channels", 0, "in_channels must be a positive int"),
    ("stride_h", -1, "stride_h must be a positive int"),
    ("padding_w", -2, "padding_w must be an int >= 0"),
    ("kind", "pool", "kind must be one of"),
    ("groups", 2, "groups=2 must divide"),
])
def test_bad_layer_fields_are_named(field, value, match):
    kwargs = dict(name="c", kind="conv", in_h=8, in_w=8, in_channels=3, out_channels=4, kernel_h=3, kernel_w=3)
    kwargs[field] = value
    with pytest.raises(ValueError, match=match):
        Layer(**kwargs)


def test_kernel_larger_than_input_is_rejected():
    with pytest.raises(ValueError, match="does not fit the padded input"):
        Layer("big", "conv", 4, 4, 3, 4, 7, 7)


def test_synthetic_weights_have_requested_values():
    assert unique_value_set(3).tolist() == [-1, 0, 1]
    assert len(unique_value_set(17)) == 17 and len(unique_value_set(64)) == 64
    layer = Layer("c", "conv", 8, 8, 64, 64, 3, 3)
    s = synthetic_stats(layer, 64, np.random.default_rng(0))
    assert 50 <= s.codebook_size <= 64 and set(s.values) <= set(unique_value_set(64))
    wl = with_synthetic_weights(Workload("x", (layer,), (None,)), 17, zero_fraction=0.5)
    assert 0.45 < 1 - wl.stats[0].nnz_per_filter.sum() / layer.weight_count < 0.55
    with pytest.raises(ValueError, match="unique_values must be in"):
        unique_value_set(300)
    assert math.isclose(np.abs(s.values).max(), 127, abs_tol=30)


@pytest.mark.parametrize("depth", [18, 50])
def test_shipped_resnet_topologies_equal_the_built_layer_lists(depth):
    assert load_topology_csv(f"resnet{depth}").layers == resnet_layers(depth)


def test_topology_row_with_missing_values_names_row_and_columns(tmp_path):
    path = tmp_path / "short.csv"
    path.write_text("Layer name,IFMAP Height,IFMAP Width,Filter Height,Filter Width,Channels,Num Filter,Strides,\n"
                    "c1,8,8,3,3,3,\n")
    with pytest.raises(ValueError, match="row 2 has 6 values, expected 8"):
        load_topology_csv(path)
