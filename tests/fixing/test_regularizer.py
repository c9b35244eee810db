import pytest
import torch

from wfn_kernels.fixing.regularizer import expected_distance, regularised_loss, relative_distances

G0 = 2.0 ** -7
CENTRES = torch.tensor([-0.5, -0.125, 0.0, 0.0625, 0.25, 1.0], dtype=torch.float64)


def test_gradcheck_away_from_kinks():
    w = torch.tensor([0.3, -0.2, 0.07, 0.9, -0.6, 0.004, 0.14], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: expected_distance(x, CENTRES, G0, 0.05), (w,))
    assert torch.autograd.gradcheck(lambda x: expected_distance(x, CENTRES, G0, 1.0), (w,))


def test_zero_gradient_at_centres():
    w = CENTRES[CENTRES != 0].clone().requires_grad_(True)
    expected_distance(w, CENTRES, G0, 0.05).backward()
    assert w.grad.abs().max() < 1e-6
    # and a weight just off a centre is pulled back towards it
    v = torch.tensor([0.26, 0.24], dtype=torch.float64, requires_grad=True)
    expected_distance(v, CENTRES, G0, 0.05).backward()
    assert v.grad[0] > 0 and v.grad[1] < 0


def test_distance_definition():
    w = torch.tensor([0.5, 0.004, -0.004], dtype=torch.float64)
    d = relative_distances(w, CENTRES, G0)
    assert torch.allclose(d[0], (0.5 - CENTRES).abs() / 0.5)
    assert torch.allclose(d[1], (0.004 - CENTRES).abs().where(CENTRES != 0, torch.zeros(1, dtype=torch.float64)))
    assert d[2, 2] == 0  # |w| <= γ0 is at distance 0 from the centre 0


def test_softmin_expectation_tends_to_nearest_distance_at_low_temperature():
    w = torch.tensor([0.3, -0.2], dtype=torch.float64)
    d = relative_distances(w, CENTRES, G0)
    assert torch.isclose(expected_distance(w, CENTRES, G0, 1e-4), d.min(1).values.mean())


def test_regulariser_is_a_fixed_ratio_of_the_cross_entropy():
    ce = torch.tensor(1.7, dtype=torch.float64, requires_grad=True)
    w = torch.tensor([0.3, -0.2, 0.07], dtype=torch.float64, requires_grad=True)
    loss, reg = regularised_loss(ce, w, CENTRES, 0.4, G0, 0.05)
    assert reg > 0
    assert torch.isclose(loss, torch.tensor(1.7 * 1.4, dtype=torch.float64))
    loss.backward()
    assert ce.grad == 1.0  # α is a stop-gradient constant


def test_no_regulariser_when_everything_is_on_a_centre_or_ratio_zero():
    ce = torch.tensor(0.9)
    loss, reg = regularised_loss(ce, torch.tensor([0.25, 0.25]), torch.tensor([0.25]), 0.4, G0, 0.05)
    assert loss == ce and reg == 0.0
    # near (not on) centres L_reg is tiny but α rescales it: the value stays (1 + ratio)·CE
    loss, reg = regularised_loss(ce, CENTRES.float()[:2] * 1.001, CENTRES.float(), 0.4, G0, 0.05)
    assert 0 < reg < 1e-2 and loss.item() == pytest.approx(0.9 * 1.4)
    assert regularised_loss(ce, torch.tensor([0.3]), CENTRES.float(), 0.0, G0, 0.05)[0] == ce
    assert regularised_loss(ce, torch.tensor([0.3]), None, 0.4, G0, 0.05)[0] == ce


def test_empty_codebook_is_an_error():
    with pytest.raises(ValueError, match="empty"):
        expected_distance(torch.tensor([0.1]), torch.zeros(0), G0)
