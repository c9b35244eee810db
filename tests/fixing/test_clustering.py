"""The fast greedy clustering against a direct O(n·k) transcription, and its invariants."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from wfn_kernels.format.codebook import power_of_two_terms
from wfn_kernels.fixing.candidates import additive_powers_of_two, candidate_centres, grid
from wfn_kernels.fixing.clustering import cluster

from naive import naive_cluster

G0 = 2.0 ** -7


def _weights(seed, n, dup=False):
    g = np.random.default_rng(seed)
    w = g.laplace(0, 0.05, n).astype(np.float32)
    if dup:  # blocks of identical values, as after an earlier fixing step
        w[: n // 3] = np.float32(2.0 ** -4)
        w[n // 3: n // 2] = 0
    return w


@pytest.mark.parametrize("same_sign", [False, True])
@pytest.mark.parametrize("seed", range(12))
def test_matches_naive_transcription(seed, same_sign):
    g = np.random.default_rng(100 + seed)
    n = int(g.integers(20, 1500))
    w = _weights(seed, n, dup=seed % 3 == 0)
    frac = float(g.choice([0.3, 0.6, 0.9, 0.999, 1.0]))
    tol = float(g.choice([0.01, 0.05, 0.1, 0.3, 0.9]))
    r = cluster(torch.from_numpy(w), frac, tol, same_sign=same_sign)
    out, assigned, steps = naive_cluster(w, frac, tol, same_sign=same_sign)
    assert np.array_equal(r.fixed.numpy(), assigned)
    assert np.array_equal(r.values.numpy(), out.astype(np.float32))
    assert [(s.centre, s.order, s.taken) for s in r.steps] == [(float(c), o, int(k)) for c, o, k in steps]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(-4, 4, width=32), min_size=1, max_size=300), st.floats(0.0, 1.0),
       st.sampled_from([0.005, 0.02, 0.1, 0.5, 0.9]))
def test_exact_quota_and_values_on_centres(ws, frac, tol):
    w = torch.tensor(ws, dtype=torch.float32)
    r = cluster(w, frac, tol)
    assert int(r.fixed.sum()) == int(len(ws) * frac)
    assert torch.isin(r.values[r.fixed], r.centres).all()
    assert torch.equal(r.values[~r.fixed], w[~r.fixed])  # free weights untouched
    assert bool((r.values * w >= 0).all())  # the default (same_sign) never flips a sign


@pytest.mark.parametrize("ws", [[0.0] * 50, [0.3] * 50, [1e-9, -1e-9, 0.0, 5.0, -7.0], [1e3, -1e3, 1e-3],
                                [0.0, 0.0, 0.001, 1.0]])
def test_terminates_and_fixes_everything_on_pathological_inputs(ws):
    r = cluster(torch.tensor(ws), 1.0, 0.01)
    assert bool(r.fixed.all())
    assert torch.isin(r.values, r.centres).all()


def test_threshold_doubling_guarantees_termination():
    # with no order escalation allowed (max 0) only doubling the threshold can fix the spread weights
    w = torch.tensor([0.3, 0.71, 1.9, -0.45, 2.9, -5.5])
    r = cluster(w, 1.0, 0.001, max_order_before_doubling=0)
    assert bool(r.fixed.all())
    assert max(s.threshold for s in r.steps) > 0.001


def test_order_escalation_when_powers_of_two_are_too_far():
    # 0.75 = 2^-1 + 2^-2 is 1/3 away (relative) from 2^-1 and 2^0: order 0 cannot take it at δ = 0.01
    w = torch.full((100,), 0.75)
    r = cluster(w, 1.0, 0.01)
    assert r.steps[0].order == 1 and r.steps[0].centre == 0.75 and r.failures == 1
    # near powers of two stay at order 0
    assert cluster(torch.full((10,), 0.5), 1.0, 0.01).steps[0].order == 0


def test_zero_centre_takes_sub_threshold_weights_at_no_cost():
    w = torch.tensor([0.001, -0.002, 0.0, 0.004, 0.5, 0.25, -0.125])
    r = cluster(w, 4 / 7, 0.01)
    assert r.steps[0].centre == 0.0 and r.steps[0].taken == 4
    assert torch.equal(r.values[:4], torch.zeros(4))


def test_mean_not_each_distance_is_bounded():
    """Acceptance is on the mean of non-zero relative distances: individual members may exceed δ_t."""
    g = np.random.default_rng(0)
    w = torch.from_numpy(g.laplace(0, 0.05, 3000).astype(np.float32))
    tol = 0.05
    r = cluster(w, 1.0, tol)
    first = r.steps[0]
    members = w[(r.values == first.centre) & r.fixed]
    d = ((members - first.centre).abs() / members.abs()).double()
    assert d[d > 0].mean() <= tol + 1e-9
    assert d.max() > tol


def test_grid_covers_every_weight_within_tolerance():
    for tol in (0.0075, 0.01, 0.1, 0.5):
        pts = grid(1.0, tol, G0)
        assert pts[0] == G0 and pts[-1] < 1.0 and pts[-1] * (1 + tol) / (1 - tol) >= 1.0
        w = np.exp(np.linspace(np.log(G0), np.log(pts[-1]), 2000))
        d = np.min(np.abs(w[:, None] - pts[None]) / w[:, None], axis=1)
        assert d.max() <= tol * (1 + 1e-9)


def test_grid_sizes_match_the_spec_table():
    # docs/algorithm.md §2.3: points in [2^-7, 1) for δ = 0.0075, 0.01, 0.015 are 324, 243, 162
    for tol, count in [(0.0075, 324), (0.01, 243), (0.015, 162)]:
        pts = grid(1.0, tol, G0)
        assert int((pts < 1.0).sum()) == count


@pytest.mark.parametrize("order", [0, 1, 2, 3])
def test_candidates_are_additive_powers_of_two(order):
    c = candidate_centres(1.0, 0.01, order, G0)
    assert c[0] == -c[-1] and 0.0 in c and np.all(np.diff(c) > 0)
    for v in c[c > 0]:
        assert len(power_of_two_terms(float(v))) <= order + 1
    if order == 0:  # docs/algorithm.md §2.4: pure powers of two 2^-7 .. 2^0
        assert sorted(c[c > 0].tolist()) == [2.0 ** e for e in range(-7, 1)]


def test_candidate_counts_match_the_spec_table():
    # docs/algorithm.md §2.4 table (signed, including 0, B = 1)
    table = {0.1: [17, 51, 51, 51], 0.05: [17, 81, 99, 99], 0.015: [17, 107, 265, 311],
             0.01: [17, 119, 337, 441], 0.0075: [17, 125, 393, 561]}
    for tol, counts in table.items():
        assert [len(candidate_centres(1.0, tol, k, G0)) for k in range(4)] == counts
    assert candidate_centres(G0, 0.01, 0, G0).tolist() == [0.0]


def test_residual_terms_stop_once_within_tolerance():
    v = np.array([0.5 * 1.004])  # within 1 % of 2^-1: no second term even at order 3
    assert additive_powers_of_two(v, 0.01, 3, G0)[0] == 0.5
    assert math.isclose(additive_powers_of_two(np.array([0.75]), 0.01, 1, G0)[0], 0.75)


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="non-finite"):
        cluster(torch.tensor([0.1, float("nan")]), 0.5, 0.01)
    with pytest.raises(ValueError, match="1-D"):
        cluster(torch.zeros(2, 2), 0.5, 0.01)
    with pytest.raises(ValueError, match="fraction"):
        cluster(torch.zeros(4), 1.5, 0.01)


def test_stable_sort_equals_numpy_stable_argsort():
    from wfn_kernels.fixing.clustering import stable_sort

    g = np.random.default_rng(5)
    w = np.concatenate([g.laplace(0, 1, 5000), np.zeros(50), -np.zeros(50), np.full(100, 0.25), [np.inf, -np.inf],
                        [1e-42, -1e-42]]).astype(np.float32)
    g.shuffle(w)
    s, p = stable_sort(w)
    ref = np.argsort(w + np.float32(0), kind="stable")
    assert np.array_equal(p, ref) and np.array_equal(s, (w + np.float32(0))[ref])


# ---- decisions: previously fixed weights stay (keep) and centres never flip a sign (same_sign)

def _poaching_case():
    """100 weights fixed at 0.75, 3 fixed at -1.0, 50 free at 0.8 (d = 0.0625 from 0.75), δ = 0.15.

    0.75 is the most popular centre; under the running mean two of the -1.0 weights (d = 1.75) fit in its
    prefix: (50·0.0625 + 2·1.75) / 52 = 0.127 <= 0.15. The shape of the Fashion-MNIST seed-0 collapse."""
    w = np.concatenate([np.full(100, 0.75), np.full(3, -1.0), np.full(50, 0.8)]).astype(np.float32)
    keep = torch.zeros(len(w), dtype=torch.bool)
    keep[:103] = True
    return torch.from_numpy(w), keep


def test_original_rule_moves_a_fixed_weight_across_zero():
    w, keep = _poaching_case()
    r = cluster(w, 1.0, 0.15, keep=None, same_sign=False)
    flipped = (torch.sign(r.values) != torch.sign(w)) & keep
    assert int(flipped.sum()) == 2 and torch.equal(r.values[flipped], torch.full((2,), 0.75))
    out, _, _ = naive_cluster(w.numpy(), 1.0, 0.15)
    assert np.array_equal(r.values.numpy(), out.astype(np.float32))  # the transcription agrees


@pytest.mark.parametrize("kw", [dict(keep=None, same_sign=True), dict(same_sign=False, keep="mask"),
                                dict(same_sign=True, keep="mask")])
def test_keep_or_same_sign_prevents_it(kw):
    w, keep = _poaching_case()
    kw = {**kw, "keep": keep if isinstance(kw["keep"], str) else None}
    r = cluster(w, 1.0, 0.15, **kw)
    assert torch.equal(r.values[:103], w[:103])  # no fixed weight moved
    assert bool(r.fixed.all())
    if kw["keep"] is not None:
        assert r.kept == 103


@pytest.mark.parametrize("seed", range(8))
def test_keep_matches_naive_transcription_over_two_fixings(seed):
    g = np.random.default_rng(300 + seed)
    n = int(g.integers(50, 1200))
    w = _weights(seed, n, dup=seed % 2 == 0)
    tol = float(g.choice([0.02, 0.1, 0.3, 0.9]))
    first = cluster(torch.from_numpy(w), 0.5, tol)
    w2 = first.values.numpy().copy()  # free weights train on a little between the two fixings
    w2[~first.fixed.numpy()] += g.normal(0, 0.01, int((~first.fixed).sum())).astype(np.float32)
    frac = float(g.choice([0.6, 0.9, 1.0]))
    same = bool(seed % 3)
    r = cluster(torch.from_numpy(w2), frac, tol, keep=first.fixed, same_sign=same)
    out, assigned, steps = naive_cluster(w2, frac, tol, keep=first.fixed.numpy(), same_sign=same)
    assert np.array_equal(r.fixed.numpy(), assigned)
    assert np.array_equal(r.values.numpy(), out.astype(np.float32))
    assert [(s.centre, s.order, s.taken) for s in r.steps] == [(float(c), o, int(k)) for c, o, k in steps]
    assert r.kept == int(first.fixed.sum()) and bool(r.fixed[first.fixed].all())
    assert torch.equal(r.values[first.fixed], first.values[first.fixed])


def test_keep_is_validated():
    w = torch.linspace(-1, 1, 10)
    with pytest.raises(ValueError, match=r"keep must be a bool tensor of shape \(10,\)"):
        cluster(w, 0.5, 0.1, keep=torch.zeros(9, dtype=torch.bool))
    with pytest.raises(ValueError, match="keep must be a bool tensor"):
        cluster(w, 0.5, 0.1, keep=torch.zeros(10))
    with pytest.raises(ValueError, match="6 weights are to be kept fixed but this step fixes only 5"):
        cluster(w, 0.5, 0.1, keep=torch.arange(10) < 6)
