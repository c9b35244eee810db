"""torchao integration: quantize_(model, WFNQuantizeConfig(...)) swaps layers as convert() does."""
import pytest
import torch
from torch import nn

import wfn_kernels as wk

torchao = pytest.importorskip("torchao", reason="the [torchao] extra is not installed")
from torchao.quantization import quantize_  # noqa: E402

from wfn_kernels.integrations import WFNQuantizeConfig, wfn_filter_fn  # noqa: E402

CB = wk.Codebook.from_values([-1.0, -0.25, 0.0, 0.125, 0.5, 1.5])


def fixed_model(seed=0):
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    m = nn.Sequential(nn.Conv2d(2, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 16), nn.ReLU(),
                      nn.Linear(16, 10))
    with torch.no_grad():
        for layer in (m[0], m[3], m[5]):
            layer.weight.copy_(CB.values[torch.randint(0, 6, layer.weight.shape, generator=g)])
    return m.eval()


def test_default_filter_swaps_linears_only_and_keeps_outputs():
    m = fixed_model()
    x = torch.randn(3, 2, 8, 8)
    with torch.no_grad():
        expected = m(x)
    quantize_(m, WFNQuantizeConfig())
    assert type(m[0]) is nn.Conv2d  # torchao's default filter_fn selects nn.Linear only
    assert isinstance(m[3], wk.WFNLinear) and isinstance(m[5], wk.WFNLinear)
    with torch.no_grad():
        torch.testing.assert_close(m(x), expected, atol=1e-5, rtol=1e-5)


def test_wfn_filter_matches_convert_layer_for_layer():
    a, b = fixed_model(1), fixed_model(1)
    quantize_(a, WFNQuantizeConfig(codebook=CB), filter_fn=wfn_filter_fn)
    wk.convert(b, codebook=CB)
    for (na, ma), (nb, mb) in zip(a.named_modules(), b.named_modules(), strict=True):
        assert na == nb and type(ma) is type(mb)
        if isinstance(ma, (wk.WFNLinear, wk.WFNConv2d)):
            assert ma.bits == mb.bits
            assert torch.equal(ma.packed, mb.packed) and torch.equal(ma.codebook, mb.codebook)
            assert torch.equal(ma.global_index, mb.global_index)
    x = torch.randn(2, 2, 8, 8)
    with torch.no_grad():
        assert torch.equal(a(x), b(x))


def test_custom_filter_and_shift_add():
    m = fixed_model()
    quantize_(m, WFNQuantizeConfig(shift_add=True), filter_fn=lambda mod, fqn: fqn == "5")
    assert type(m[3]) is nn.Linear and isinstance(m[5], wk.WFNLinear)
    # shift_add=True is the int8 compute mode: 1.5 = 3 * 2^-1 is an exact integer weight, so it runs int8
    assert m[5].shift_add is True and m[5].compute == "int8"


def test_off_codebook_layer_is_named_or_left_alone():
    m = fixed_model()
    with torch.no_grad():
        m[5].weight[0, 0] = 0.3  # not a short sum of powers of two
    with pytest.raises(ValueError, match=r"WFNQuantizeConfig: Linear\(10, 16\)"):
        quantize_(m, WFNQuantizeConfig(max_terms=2))
    m = fixed_model()
    with torch.no_grad():
        m[5].weight[0, 0] = 0.3
    quantize_(m, WFNQuantizeConfig(max_terms=2, strict=False))
    assert isinstance(m[3], wk.WFNLinear) and type(m[5]) is nn.Linear
