"""The one counting function (metrics.count_values) and the uniform per-channel baseline."""

import pytest
import torch
from torch import nn

from wfn_kernels.fixing.baselines.apot import apot_quantize
from wfn_kernels.fixing.baselines.uniform import fit_scales, quantize_per_channel, uniform_quantize
from wfn_kernels.fixing.metrics import PARAMETER_SETS, count_values, parameter_set
from wfn_kernels.workflows import data, models


def _net():
    net = nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(2, 2))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([0.5, -0.5]).view(2, 1, 1, 1))
        net[0].bias.copy_(torch.tensor([0.1, 0.2]))
        net[1].weight.copy_(torch.tensor([1.0, 3.0]))
        net[1].bias.copy_(torch.tensor([0.0, 0.0]))
        net[3].weight.copy_(torch.tensor([[0.5, 0.25], [0.0, 0.25]]))
        net[3].bias.copy_(torch.tensor([0.7, 0.1]))
    return net


def test_each_named_set_counts_exactly_its_parameters():
    net = _net()
    w, cl, a = (count_values(net, s) for s in ("weights", "conv-linear", "all"))
    assert (w["numel"], w["unique"], w["unique_nonzero"]) == (6, 4, 3)  # {±0.5, 0.25, 0}
    assert (cl["numel"], cl["unique_nonzero"]) == (10, 6)  # + biases 0.1, 0.2, 0.7
    assert (a["numel"], a["unique_nonzero"]) == (14, 8)  # + BN γ 1, 3 (β 0)
    assert a["parameter_set"] == "all" and set(PARAMETER_SETS) == {"weights", "conv-linear", "all"}
    assert [n for n, _ in parameter_set(net, "weights")] == ["0.weight", "3.weight"]
    with pytest.raises(ValueError, match="unknown parameter set 'bn'"):
        count_values(net, "bn")


def test_uniform_levels_per_channel_and_error_bound():
    torch.manual_seed(0)
    w = torch.randn(8, 3, 3, 3)
    s = fit_scales(w, 4)
    q = quantize_per_channel(w, s, 4)
    for c in range(8):
        ints = q[c] / s[c]
        assert torch.allclose(ints, ints.round(), atol=1e-5) and ints.abs().max() <= 7 + 1e-5
        assert len(torch.unique(q[c])) <= 15
    inside = w.abs() <= 7 * s.view(-1, 1, 1, 1)  # unclipped weights are within half a step
    assert ((q - w).abs()[inside] <= (s.view(-1, 1, 1, 1) / 2 + 1e-6).expand_as(w)[inside]).all()
    again = quantize_per_channel(q, s, 4)
    assert torch.equal(again, q)  # already on the grid: unchanged
    with pytest.raises(ValueError, match="2 <= bits <= 8"):
        fit_scales(w, 1)


def test_baselines_fine_tune_on_real_data_and_count_alike():
    train, _ = data.load("digits")
    torch.manual_seed(0)
    model = models.build("small-cnn", width=4)
    loader = train.loader(64, shuffle=True)
    u = uniform_quantize(model, 4, loader, epochs=1)
    a5 = apot_quantize(model, 5, loader, epochs=1)
    for q in (u, a5):
        assert not any(torch.equal(p, p0) for p, p0 in zip(q.parameters(), model.parameters()) if p.dim() > 1)
        assert count_values(q, "weights")["unique_nonzero"] < count_values(model, "weights")["unique_nonzero"]
        assert count_values(q, "all")["unique_nonzero"] > count_values(q, "weights")["unique_nonzero"]
    conv = u.features[0]
    assert len(torch.unique(conv.weight[0])) <= 15
    with pytest.raises(ValueError, match="need a train_loader"):
        uniform_quantize(model, 4, None, epochs=1)
