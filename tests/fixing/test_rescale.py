"""The BatchNorm-invariant rescale before fixing (fixing/rescale.py, WFNConfig.rescale_bn_convs)."""

import pytest
import torch
from torch import nn
from wfn_helpers import fast_config, tiny_setup

from wfn_kernels.fixing import WFNConfig, fix_weights
from wfn_kernels.fixing.metrics import count_values
from wfn_kernels.fixing.rescale import conv_bn_pairs, rescale_bn_convs
from wfn_kernels.workflows import models


def _trained_stats_resnet():
    torch.manual_seed(0)
    m = models.build("small-resnet", width=4)
    m.train()
    with torch.no_grad():
        for _ in range(3):  # non-trivial running statistics
            m(torch.rand(32, 1, 12, 12))
    return m.eval()


@pytest.mark.parametrize("rms", [0.5, 0.05, 0.005])
def test_rescale_keeps_the_function_and_sets_the_rms(rms):
    m = _trained_stats_resnet()
    x = torch.rand(16, 1, 12, 12)
    with torch.no_grad():
        ref = m(x)
    scales = rescale_bn_convs(m, rms, check_inputs=x)
    assert len(scales) == len(conv_bn_pairs(m)) == 9  # stem + 2 per block + 2 shortcuts
    for _, conv, _ in conv_bn_pairs(m):
        assert float(conv.weight.detach().pow(2).mean().sqrt()) == pytest.approx(rms, rel=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(m(x), ref, rtol=1e-4, atol=1e-5 * float(ref.abs().max()))
    assert not m.training


class _MisWired(nn.Module):
    """conv is defined just before bn, but bn normalises another branch."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)
        self.bn = nn.BatchNorm2d(2)
        self.other = nn.Conv2d(1, 2, 3, padding=1)

    def forward(self, x):
        return (self.conv(x) + self.bn(self.other(x))).mean((2, 3))


def test_a_pair_that_is_not_wired_conv_to_bn_is_refused_and_the_model_restored():
    torch.manual_seed(0)
    m = _MisWired().eval()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    with pytest.raises(ValueError, match=r"does not feed it directly in forward\(\); not rescaled"):
        rescale_bn_convs(m, 0.01, check_inputs=torch.rand(4, 1, 6, 6))
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())


def test_no_pair_and_bad_rms_are_named():
    with pytest.raises(ValueError, match="has no Conv2d directly followed by a BatchNorm2d"):
        rescale_bn_convs(nn.Sequential(nn.Linear(2, 2)), 0.1)
    with pytest.raises(ValueError, match="rms must be > 0"):
        rescale_bn_convs(_trained_stats_resnet(), 0)
    for bad in (0, -1.0, float("nan"), True):
        with pytest.raises(ValueError, match="rescale_bn_convs must be None or a weight RMS > 0"):
            WFNConfig(rescale_bn_convs=bad)


def test_fix_weights_with_a_rescale_prunes_more():
    cfg = fast_config()
    plain, loader, val = tiny_setup()
    fix_weights(plain, loader, val, cfg, progress=False)
    scaled, loader, val = tiny_setup()
    fix_weights(scaled, loader, val, fast_config(rescale_bn_convs=0.01), progress=False)
    z_plain, z_scaled = (count_values(m, "all")["zero_fraction"] for m in (plain, scaled))
    assert z_scaled > z_plain + 0.05, (z_plain, z_scaled)
