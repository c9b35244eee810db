import pytest
import torch
from torch import nn

from wfn_kernels.format.codebook import Codebook
from wfn_testutil import round_to_power_of_two_sums
from wfn_kernels.workflows.models import SmallCNN
from wfn_kernels.nn import WFNConv2d, WFNLinear, convert, set_backend, weight_bytes


def fixed_cnn(seed=0):
    torch.manual_seed(seed)
    m = SmallCNN().eval()
    round_to_power_of_two_sums(m, max_terms=2)
    return m


@pytest.mark.parametrize("backend", ["reference", "extension"])
def test_converted_model_gives_float_outputs(backend):
    m = fixed_cnn()
    x = torch.randn(5, 1, 8, 8)
    y_float = m(x)
    rep = convert(m, backend=backend)
    assert len(rep.converted) == 5 and rep.skipped == []
    assert sum(isinstance(mod, (WFNLinear, WFNConv2d)) for mod in m.modules()) == 5
    torch.testing.assert_close(m(x), y_float, rtol=1e-5, atol=1e-6)


def test_convert_skips_layers_off_codebook_with_reason():
    m = fixed_cnn()
    with torch.no_grad():
        m.classifier[3].weight.add_(torch.randn_like(m.classifier[3].weight) * 1e-3)
    rep = convert(m)
    assert [c["name"] for c in rep.converted] == ["features.0", "features.3", "features.7", "classifier.1"]
    (name, why), = rep.skipped
    assert name == "classifier.3"
    assert "unique weight values" in why or "not on a power-of-two codebook" in why
    assert isinstance(m.classifier[3], nn.Linear)
    assert "skipped 1" in rep.summary()


def test_convert_filter_fn_and_strict_codebook():
    m = fixed_cnn()
    rep = convert(m, filter_fn=lambda mod, name: isinstance(mod, nn.Conv2d))
    assert {c["kind"] for c in rep.converted} == {"Conv2d"}
    assert ("classifier.1", "excluded by filter_fn") in rep.skipped
    m2 = fixed_cnn()
    small = Codebook.from_values([-0.5, 0.0, 0.5])
    with pytest.raises(ValueError, match=r"features\.0: \d+ of 144 weights are not on the codebook"):
        convert(m2, codebook=small)
    rep = convert(fixed_cnn(), codebook=small, strict=False)
    assert len(rep.skipped) == 5 and not rep.converted


def test_module_repr_bytes_and_backend_switch():
    m = fixed_cnn()
    convert(m)
    r = repr(m.classifier[1])
    assert "in_features=128, out_features=64" in r and "bits=" in r and "codebook_size=" in r
    assert "kernel_size=(3, 3)" in repr(m.features[0])
    wb = weight_bytes(m)
    assert wb["fp32_bytes"] == 4 * sum(n for n in (16 * 9, 32 * 16 * 9, 32 * 32 * 9, 64 * 128, 10 * 64))
    assert wb["packed_bytes"] < wb["fp32_bytes"] / 3
    set_backend(m, "reference")
    assert m.features[0].backend == "reference"
    with pytest.raises(ValueError, match="unknown backend 'gpu'"):
        set_backend(m, "gpu")


def test_conv_module_geometry_and_dense_weight():
    cb = Codebook.from_values([-1.0, 0.0, 0.25, 1.0])
    conv = nn.Conv2d(6, 4, (3, 2), stride=(2, 1), padding=(1, 0), dilation=(1, 2), groups=2, bias=True)
    with torch.no_grad():
        conv.weight.copy_(cb.values[torch.randint(0, 4, conv.weight.shape)])
    w = WFNConv2d.from_conv(conv, cb)
    assert torch.equal(w.dense_weight(), conv.weight)
    x = torch.randn(2, 6, 7, 9)
    torch.testing.assert_close(w(x), conv(x), rtol=1e-5, atol=1e-6)


def test_convert_rejects_reflect_padding_with_reason():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = nn.Conv2d(1, 1, 3, padding=1, padding_mode="reflect")

    rep = convert(Net())
    assert rep.skipped and "unsupported padding" in rep.skipped[0][1]


@pytest.mark.requires_extension
def test_direct_kernel_call_matches_the_front_end_and_keeps_errors():
    """Module forwards skip the Python front end for plain CPU tensors without autograd; same results."""
    from wfn_kernels.nn import modules as wnn

    m = fixed_cnn()
    convert(m)
    x = torch.randn(4, 1, 8, 8)
    lin, conv = m.classifier[1], m.features[0]
    with torch.no_grad():
        assert wnn._direct_call_ok(lin, lin.packed, torch.zeros(2, 128))
        y_direct = m(x)
    set_backend(m, "extension")  # still direct; results identical
    with torch.no_grad():
        assert torch.equal(m(x), y_direct)
    # the front end (taken whenever autograd records) gives the same numbers
    xg = x.clone().requires_grad_()
    assert not wnn._direct_call_ok(lin, lin.packed, xg)
    y_full = m(xg)
    assert torch.equal(y_full.detach(), y_direct)
    y_full.sum().backward()
    assert xg.grad is not None and torch.isfinite(xg.grad).all()
    with torch.no_grad():
        # 1-D and 3-D inputs reshape like nn.Linear
        v = torch.randn(3, 5, 128)
        assert torch.equal(lin(v), lin(v.reshape(15, 128)).reshape(3, 5, 64))
        assert lin(v[0, 0]).shape == (64,)
        # bad input still gets the front end's clear messages
        with pytest.raises(ValueError, match="x has K=100 columns but the weight has in_features=128"):
            lin(torch.randn(2, 100))
        with pytest.raises(TypeError, match="x must be float32, bfloat16 or float16"):
            lin(torch.ones(2, 128, dtype=torch.int32))
        with pytest.raises(ValueError, match="x has 3 channels, expected in_channels=1"):
            conv(torch.randn(1, 3, 8, 8))
    set_backend(m, "reference")
    assert not wnn._direct_call_ok(lin, lin.packed, torch.zeros(2, 128))
