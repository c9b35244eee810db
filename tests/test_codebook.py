import math

import pytest
import torch

from wfn_kernels.format.codebook import Codebook, bits_for_entries, power_of_two_terms


@pytest.mark.parametrize("v", [0.0, 1.0, -0.5, 0.75, 3.0, -7.0, 2 ** -20, 1.0 + 2 ** -23, 0.1, -123.456])
def test_terms_reconstruct_exactly(v):
    v32 = float(torch.tensor(v, dtype=torch.float32))
    terms = power_of_two_terms(v32)
    assert math.fsum(s * 2.0 ** e for s, e in terms) == v32
    exps = [e for _, e in terms]
    assert exps == sorted(exps, reverse=True) and all(a - b >= 2 for a, b in zip(exps, exps[1:]))  # NAF: non-adjacent


def test_terms_minimal_examples():
    assert power_of_two_terms(0.0) == []
    assert power_of_two_terms(0.25) == [(1, -2)]
    assert power_of_two_terms(7.0) == [(1, 3), (-1, 0)]  # 8 - 1, not 4 + 2 + 1
    assert power_of_two_terms(-0.375) == [(-1, -1), (1, -3)]


def test_codebook_sorted_and_terms():
    cb = Codebook.from_values([1.0, -0.5, 0.0, 0.75])
    assert cb.values.tolist() == [-0.5, 0.0, 0.75, 1.0]
    assert cb.terms(2) == [(1, 0), (-1, -2)]
    assert cb.num_terms.tolist() == [1, 0, 2, 1]
    assert cb.order == 1 and not cb.is_power_of_two
    assert Codebook.from_values([0.0, 0.5, -2.0]).is_power_of_two
    assert cb.index_bits == 2


def test_rejects_value_that_needs_too_many_terms():
    with pytest.raises(ValueError, match=r"value 0\.100000001490116.* at most 2 powers of two: it needs 13 terms"):
        Codebook.from_values(torch.tensor([0.0, 0.1]), max_terms=2)


@pytest.mark.parametrize("bad,msg", [
    ([0.0, float("nan")], "non-finite"),
    ([1.0, float("inf")], "non-finite"),
    ([0.5, 0.5], "duplicate values \\[0.5\\]"),
    ([], "empty"),
    ([0.1 + 1e-12], "not representable in float32"),
])
def test_rejects_bad_values(bad, msg):
    with pytest.raises(ValueError, match=msg):
        Codebook.from_values(bad, max_terms=30)


def test_size_limits():
    vals = [float(i) for i in range(257)]
    with pytest.raises(ValueError, match="257 entries exceed the limit of 256"):
        Codebook.from_values(vals, max_terms=8)
    assert len(Codebook.from_values(vals, max_terms=8, max_entries=None)) == 257
    assert [bits_for_entries(n) for n in (1, 4, 5, 16, 17, 256)] == [2, 2, 4, 4, 8, 8]
    with pytest.raises(ValueError, match="257 entries"):
        bits_for_entries(257)


def test_index_of():
    cb = Codebook.from_values([-1.0, 0.0, 0.5])
    idx, hit = cb.index_of(torch.tensor([[0.5, -1.0], [0.25, 0.0]]))
    assert idx[0].tolist() == [2, 0] and idx[1, 1] == 1
    assert hit.tolist() == [[True, True], [False, True]]
