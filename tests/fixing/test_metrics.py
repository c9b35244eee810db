import math

import pytest
import torch

from wfn_kernels.fixing.metrics import (bits_metrics, entropy_bits, order_histogram, tensor_metrics, top_values,
                                        value_stats)


def test_value_stats_on_a_hand_made_tensor():
    t = torch.tensor([0.0, 0.0, 0.0, 0.0, 0.5, 0.5, -0.25, 0.75])
    s = value_stats(t)
    assert (s["numel"], s["unique"], s["unique_nonzero"]) == (8, 4, 3)
    h = -(0.5 * math.log2(0.5) + 0.25 * math.log2(0.25) + 2 * 0.125 * math.log2(0.125))
    assert s["entropy_bits"] == pytest.approx(h)
    assert s["entropy_nonzero_bits"] == pytest.approx(-(0.5 * math.log2(0.5) + 2 * 0.25 * math.log2(0.25)))
    assert s["zero_fraction"] == 0.5


def test_entropy_edge_cases():
    assert entropy_bits(torch.tensor([5])) == 0.0
    assert entropy_bits(torch.tensor([1, 1, 1, 1])) == pytest.approx(2.0)
    assert value_stats(torch.zeros(10))["entropy_nonzero_bits"] == 0.0


def test_order_histogram_counts_minimal_power_of_two_terms():
    t = torch.tensor([0.0, 0.5, -0.5, 0.75, 0.75, 0.875, 0.625])  # 0.875 = 1 - 1/8 (NAF: 2 terms)
    by_value, by_weight = order_histogram(t)
    assert by_value == {0: 2, 1: 3}
    assert by_weight == {0: 2, 1: 4}
    assert order_histogram(torch.tensor([0.6875]))[0] == {2: 1}  # 0.6875 = 2^-1 + 2^-3 + 2^-4


def test_bits_and_packed_size():
    s = value_stats(torch.tensor([0.0, 0.5, -0.5, 0.25] * 4 + [1.0]))
    b = bits_metrics(s)
    assert b["index_bits"] == 3 and b["packed_bytes"] == math.ceil(17 * 3 / 8) + 4 * 5
    assert b["float32_bytes"] == 68 and b["entropy_code_bits"] == s["entropy_bits"]


def test_tensor_metrics_whole_network_and_per_layer():
    a = torch.tensor([[0.5, 0.5], [0.25, 0.0]])
    b = torch.tensor([0.5, 0.125, 0.125])
    m = tensor_metrics([("a", a), ("b", b)])
    assert m["unique"] == 4 and m["unique_nonzero"] == 3
    assert [(l["name"], l["unique"]) for l in m["layers"]] == [("a", 3), ("b", 2)]
    assert m["top_values"][0] == (0.5, 3)
    assert top_values(b, 1) == [(0.125, 2)]


def test_nan_is_rejected():
    with pytest.raises(ValueError, match="NaN"):
        value_stats(torch.tensor([0.1, float("nan")]))
