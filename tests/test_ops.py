"""The op front end, reference and C++ extension: correctness, registration, bad input, backends."""
import os

import pytest
import torch
import torch.nn.functional as F
from wfn_testutil import pow2_codebook

import wfn_kernels as wk
from wfn_kernels import ops
from wfn_kernels.ops import reference
from wfn_kernels.format.packing import pack_codes

BACKENDS = ["reference", "extension"]


def make_case(m, n, k, bits, dtype=torch.float32, gen=None, entries=None):
    c = entries or min(1 << bits, 15)
    cb = pow2_codebook(c, gen)
    codes = torch.randint(0, c, (n, k), generator=gen)
    x = torch.randint(-3, 4, (m, k), generator=gen).to(dtype)  # small integers: fp32 sums are exact
    return x, pack_codes(codes, bits), cb, codes


def test_extension_is_built():
    if os.environ.get("WFN_BUILD_EXT") == "0" or os.environ.get("WFN_DISABLE_EXT") == "1":
        pytest.skip("pure-Python build requested (WFN_BUILD_EXT=0 or WFN_DISABLE_EXT=1)")
    info = wk.available_backends()["extension"]
    assert info["available"], info["reason"]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("m", [0, 1, 3, 16, 127])
@pytest.mark.parametrize("k", [1, 33, 130])
def test_linear_bit_exact_fp32(backend, bits, m, k, rng):
    x, packed, cb, codes = make_case(m, 7, k, bits, gen=rng)
    bias = torch.randint(-4, 4, (7,), generator=rng).float()
    y = wk.codebook_linear(x, packed, cb, bits, bias, in_features=k, backend=backend)
    expected = x @ cb[codes].t() + bias
    assert y.shape == (m, 7) and y.dtype == torch.float32
    assert torch.equal(y, expected)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("bits", [2, 4, 8])
def test_linear_half_dtypes_match_reference(backend, dtype, bits, rng):
    x, packed, cb, _ = make_case(5, 11, 67, bits, dtype, gen=rng)
    y = wk.codebook_linear(x, packed, cb, bits, in_features=67, backend=backend)
    ref = reference.codebook_linear(x, packed, cb, bits, 67)
    assert y.dtype == dtype and torch.equal(y, ref)


@pytest.mark.parametrize("backend", BACKENDS)
def test_linear_random_floats_close(backend, rng):
    x, packed, cb, codes = make_case(9, 31, 300, 4, gen=rng)
    x = torch.randn(9, 300, generator=rng)
    y = wk.codebook_linear(x, packed, cb, 4, backend=backend)
    torch.testing.assert_close(y, x @ cb[codes].t(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("backend", BACKENDS)
def test_non_contiguous_and_batched_input(backend, rng):
    x, packed, cb, codes = make_case(6, 5, 40, 4, gen=rng)
    xt = x.t().contiguous().t()  # same values, column-major strides
    assert not xt.is_contiguous()
    assert torch.equal(wk.codebook_linear(xt, packed, cb, 4, backend=backend), x @ cb[codes].t())
    x3 = x.reshape(2, 3, 40)
    assert torch.equal(wk.codebook_linear(x3, packed, cb, 4, backend=backend), (x @ cb[codes].t()).reshape(2, 3, 5))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("stride,padding,dilation,groups", [(1, 0, 1, 1), (2, 1, 1, 1), (1, 2, 2, 1), (1, 1, 1, 4)])
@pytest.mark.parametrize("batch", [1, 3])
def test_conv2d_matches_dense(backend, stride, padding, dilation, groups, batch, rng):
    wshape = (8, 8 // groups, 3, 3)
    cb = pow2_codebook(12, rng)
    codes = torch.randint(0, 12, (8, 8 // groups * 9), generator=rng)
    x = torch.randint(-2, 3, (batch, 8, 9, 10), generator=rng).float()
    bias = torch.randn(8, generator=rng)
    y = wk.codebook_conv2d(x, pack_codes(codes, 4), cb, 4, wshape, bias, stride, padding, dilation, groups,
                           backend=backend)
    expected = F.conv2d(x, cb[codes].reshape(wshape), bias, stride, padding, dilation, groups)
    torch.testing.assert_close(y, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", [(1, 128, 5, 5), (2, 8, 12, 9)])  # K = 1152 at 25 pixels: im2col + the GEMV
def test_conv2d_channels_last_input_gives_channels_last_output(backend, shape, rng):
    """A channels_last input gives a channels_last output with the NCHW values (integer inputs and power-of-two
    weights: every sum is exact, so any summation order gives the same bits), as torch's convolutions do."""
    b, c, h, w_ = shape
    wshape = (16, c, 3, 3)
    cb = pow2_codebook(12, rng)
    codes = torch.randint(0, 12, (16, c * 9), generator=rng)
    x = torch.randint(-2, 3, (b, c, h, w_), generator=rng).float()
    bias = torch.randint(-3, 4, (16,), generator=rng).float()
    args = (pack_codes(codes, 4), cb, 4, wshape, bias, 1, 1)
    y = wk.codebook_conv2d(x, *args, backend=backend)
    y_cl = wk.codebook_conv2d(x.contiguous(memory_format=torch.channels_last), *args, backend=backend)
    assert y.is_contiguous() and y_cl.is_contiguous(memory_format=torch.channels_last) and not y_cl.is_contiguous()
    assert torch.equal(y_cl, y) and torch.equal(y, F.conv2d(x, cb[codes].reshape(wshape), bias, 1, 1))


@pytest.mark.parametrize("op_args", ["linear", "conv", "conv-channels-last"])
def test_opcheck(op_args, rng):
    x, packed, cb, _ = make_case(3, 5, 18, 4, gen=rng)
    if op_args == "linear":
        x = x.requires_grad_()
        torch.library.opcheck(torch.ops.wfn.codebook_linear.default, (x, packed, cb, 4, 18, torch.randn(5)))
        torch.library.opcheck(torch.ops.wfn.codebook_linear.default, (x[:0].detach(), packed, cb, 4, 18, None))
    else:  # the fake kernel's output strides must match the real one's: channels_last in, channels_last out
        xc = torch.randn(2, 2, 5, 5)
        if op_args == "conv-channels-last":
            xc = xc.contiguous(memory_format=torch.channels_last)
        xc.requires_grad_()
        torch.library.opcheck(torch.ops.wfn.codebook_conv2d.default,
                              (xc, packed, cb, 4, [5, 2, 3, 3], None, [1, 1], [1, 1], [1, 1], 1))


def test_autograd_matches_dense(rng):
    x, packed, cb, codes = make_case(4, 6, 20, 4, gen=rng)
    x = torch.randn(4, 20, dtype=torch.float64, generator=rng).float().requires_grad_()
    bias = torch.randn(6, requires_grad=True)
    y = wk.codebook_linear(x, packed, cb, 4, bias, backend="extension" if ops._C else "reference")
    y.square().sum().backward()
    x2, b2 = x.detach().clone().requires_grad_(), bias.detach().clone().requires_grad_()
    F.linear(x2, cb[codes], b2).square().sum().backward()
    torch.testing.assert_close(x.grad, x2.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(bias.grad, b2.grad, rtol=1e-4, atol=1e-4)


def test_torch_compile_fullgraph_modules_inductor(rng):
    """Inductor, fullgraph: the WFN ops are traced through their fake kernels, no graph breaks."""
    from torch import nn

    from wfn_kernels.format.codebook import Codebook
    from wfn_kernels.nn import WFNConv2d, WFNLinear

    cb = Codebook.from_values([-1.0, -0.25, 0.0, 0.5, 2.0])
    conv, lin = nn.Conv2d(3, 4, 3, padding=1), nn.Linear(4 * 36, 10)
    with torch.no_grad():
        for layer in (conv, lin):
            layer.weight.copy_(cb.values[torch.randint(0, 5, layer.weight.shape, generator=rng)])
    dense = nn.Sequential(conv, nn.ReLU(), nn.Flatten(), lin)
    wfn = nn.Sequential(WFNConv2d.from_conv(conv, cb), nn.ReLU(), nn.Flatten(), WFNLinear.from_linear(lin, cb))
    compiled = torch.compile(wfn, fullgraph=True)
    x = torch.randn(2, 3, 6, 6, generator=rng)
    torch.testing.assert_close(compiled(x), dense(x), rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------------------- bad input

def _bad_cases():
    g = torch.Generator().manual_seed(0)
    x, packed, cb, _ = make_case(2, 3, 10, 4, gen=g)
    return [
        ("wrong x dtype", dict(x=x.double()), TypeError, "x must be float32, bfloat16 or float16, got torch.float64"),
        ("x is 1-D", dict(x=x[0]), ValueError, "x has K=10 columns"),
        ("wrong K", dict(x=torch.zeros(2, 12), in_features=10), ValueError, "x has K=12 columns but the weight has in_features=10"),
        ("codes dtype", dict(packed=packed.to(torch.int32)), ValueError, "packed codes must be a 2-D uint8 tensor"),
        ("codes width", dict(bits=2, codebook=cb[:4]), ValueError, "packed codes have 5 bytes per row, expected 3 for K=10 at 2 bits"),
        ("bad bits", dict(bits=3), ValueError, r"bits must be one of \(2, 4, 8\), got 3"),
        ("codebook dtype", dict(codebook=cb.double()), ValueError, "codebook must be a 1-D float32 tensor"),
        ("codebook NaN", dict(codebook=torch.tensor([0.0, float("nan")])), ValueError, "codebook contains NaN or Inf"),
        ("codebook Inf", dict(codebook=torch.tensor([0.0, float("inf")])), ValueError, "codebook contains NaN or Inf"),
        ("codebook dup", dict(codebook=torch.tensor([0.0, 0.5, 0.5])), ValueError, "strictly increasing"),
        ("codebook too big", dict(codebook=torch.arange(17).float()), ValueError,
         "codebook has 17 entries; 4-bit codes index 1 to 16"),
        ("codes out of range", dict(codebook=torch.tensor([0.0, 1.0])), ValueError,
         r"codes out of range: found code \d+ but the codebook has 2 entries"),
        ("bias length", dict(bias=torch.zeros(4)), ValueError, "bias must be a 1-D float tensor of length N=3"),
        ("device", dict(codebook=cb.to("meta")), ValueError, "codebook is on meta but x is on cpu"),
        ("unknown backend", dict(backend="cuda-magic"), ValueError, "unknown backend 'cuda-magic'"),
    ], (x, packed, cb)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", range(len(_bad_cases()[0])), ids=[c[0] for c in _bad_cases()[0]])
def test_bad_input_same_error_every_backend(backend, case):
    cases, (x, packed, cb) = _bad_cases()
    _, override, exc, msg = cases[case]
    kwargs = dict(x=x, packed=packed, codebook=cb, bits=4, bias=None, backend=backend)
    kwargs.update(override)
    if kwargs["x"].dim() == 1:
        kwargs["in_features"] = 11
    with pytest.raises(exc, match=msg):
        wk.codebook_linear(**kwargs)


def test_conv_bad_input():
    packed = pack_codes(torch.zeros(4, 18, dtype=torch.int64), 4)
    cb = torch.tensor([0.0, 1.0])
    with pytest.raises(ValueError, match="x has 3 channels, expected in_channels=2"):
        wk.codebook_conv2d(torch.zeros(1, 3, 5, 5), packed, cb, 4, (4, 2, 3, 3))
    with pytest.raises(ValueError, match="groups=3 must be >= 1 and divide out_channels=4"):
        wk.codebook_conv2d(torch.zeros(1, 6, 5, 5), packed, cb, 4, (4, 2, 3, 3), groups=3)
    with pytest.raises(ValueError, match=r"x must be 4-D \(B, C, H, W\)"):
        wk.codebook_conv2d(torch.zeros(2, 5, 5), packed, cb, 4, (4, 2, 3, 3))
    with pytest.raises(ops.BackendUnavailableError, match="no conv2d kernel|unavailable"):
        wk.codebook_conv2d(torch.zeros(1, 2, 5, 5), packed, cb, 4, (4, 2, 3, 3), backend="triton")


def test_unavailable_backend_names_why(monkeypatch):
    from wfn_kernels.ops import backends

    monkeypatch.setattr(backends, "_C", None)
    monkeypatch.setattr(backends, "_C_REASON", "wfn_kernels._C is not built (test)")
    x, packed, cb, _ = make_case(1, 3, 8, 4)
    with pytest.raises(ops.BackendUnavailableError, match=r"backend 'extension' is unavailable: wfn_kernels._C is not built"):
        wk.codebook_linear(x, packed, cb, 4, backend="extension")
    assert ops.resolve_backend("auto", torch.device("cpu")) is ops.Backend.REFERENCE
    assert wk.available_backends()["extension"]["available"] is False
    with pytest.raises(ops.BackendUnavailableError, match="no CUDA kernels"):
        monkeypatch.setattr(backends, "_C", type("Fake", (), {"built_with_cuda": staticmethod(lambda: False)})())
        ops.resolve_backend("extension", torch.device("cuda"))


def test_available_backends_report():
    info = wk.available_backends()
    assert set(info) == {"reference", "extension", "triton"}
    assert info["reference"]["available"] is True
    for v in info.values():
        assert v["available"] or v["reason"], "an unavailable backend must say why"
