import pytest
import torch
from torch.nn.utils import parametrize

from wfn_kernels.workflows import models
from wfn_kernels.format.codebook import power_of_two_terms
from wfn_kernels.fixing.baselines.apot import apot_levels, apot_quantize, fit_alpha, quantize
from wfn_kernels.fixing.metrics import network_metrics


def test_levels_are_additive_powers_of_two_before_normalisation():
    l4, l3 = apot_levels(4), apot_levels(3)
    assert len(l4) == 8 and len(l3) == 4 and l4[0] == 0 and l4[-1] == 1 and l3.tolist() == [0, 0.25, 0.5, 1]
    for v in (l4 * 0.625).tolist():  # APoT 4-bit: sums of one term from each of two sets
        assert len(power_of_two_terms(round(v, 10))) <= 2
    l5 = apot_levels(5)  # APoT 5-bit (B = 4): one term from each of two 4-element sets, 16 magnitudes
    assert len(l5) == 16 and l5[0] == 0 and l5[-1] == 1
    for v in (l5 * 0.75 * 2 ** 6).tolist():  # max 2^-1 + 2^-2 = 0.75; back on the 2^-6 grid
        assert v == round(v) and len(power_of_two_terms(round(v))) <= 2
    with pytest.raises(ValueError, match="3-, 4- and 5-bit"):
        apot_levels(6)


def test_quantize_maps_onto_signed_scaled_levels():
    w = torch.tensor([-2.0, -0.31, 0.0, 0.09, 0.5, 3.0])
    q = quantize(w, 1.0, apot_levels(4))
    assert q.tolist() == pytest.approx([-1.0, -0.3, 0.0, 0.1, 0.4, 1.0])
    assert fit_alpha(torch.tensor([0.0, 0.0]), apot_levels(4)) == 1.0


def test_per_layer_codebooks_inflate_the_whole_network_count():
    torch.manual_seed(0)
    model = models.build("small-cnn", width=4)
    q = apot_quantize(model, bits=4)
    layers = [m for m in q.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    for m in layers:
        assert len(torch.unique(m.weight)) <= 15
    weights = torch.cat([m.weight.reshape(-1) for m in layers])
    assert len(torch.unique(weights)) > 15  # different α per layer
    m = network_metrics(q, include_batchnorm=True)
    assert m["unique"] > 15 * len(layers) // 2
    assert not parametrize.is_parametrized(q.features[0])  # plain tensors again, ready for convert()
