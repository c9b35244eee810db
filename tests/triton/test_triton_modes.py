"""The bf16 and int8 compute modes on the Triton backend (ops/triton/mode_ops.py, int_kernels.py) against the
reference: bit-exact integer products on both kernel paths, the int8 rescale identical, bf16 within its bound.

On CPU these run in Triton's interpreter (triton_cases.py); on a GPU, natively.
"""

import pytest
import torch
from torch import nn
from triton_cases import exact_case, triton_device

import wfn_kernels as wk
from wfn_kernels.format.packing import pack_codes
from wfn_kernels.ops import bf16 as bf16_ops
from wfn_kernels.ops import int8 as int8_ops
from wfn_kernels.ops.backends import BackendUnavailableError


@pytest.fixture(scope="module")
def dev():
    return triton_device()


def _int_case(m, n, k, bits, wide, gen, dev):
    c = 1 << bits
    hi, lo = (32639, -32768) if wide else (127, -128)
    table = torch.randint(lo, hi + 1, (c,), generator=gen).to(torch.int16)
    table[0] = hi if wide else table[0]  # a wide table really needs int16
    codes = torch.randint(0, c, (n, k), generator=gen)
    xq = torch.randint(-127, 128, (m, k), generator=gen, dtype=torch.int8)
    return xq.to(dev), pack_codes(codes, bits).to(dev), table, codes


@pytest.mark.parametrize("wide", [False, True], ids=["int8-table", "int16-table"])
@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("m", [0, 1, 3, 16, 127])
def test_int_product_bit_exact_on_both_paths(dev, m, bits, wide):
    gen = torch.Generator().manual_seed(100 * m + 10 * bits + wide)
    xq, packed, table, codes = _int_case(m, 13, 67, bits, wide, gen, dev)  # odd N, K not a byte multiple
    y = int8_ops.int_linear(xq, packed, table, bits, 67, backend="triton")
    assert y.dtype == torch.int32 and y.shape == (m, 13)
    expected = xq.cpu().long() @ table.long()[codes].t()
    assert torch.equal(y.cpu().long(), expected)


@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("m", [1, 5, 40])
def test_int8_linear_identical_to_reference_including_nonfinite_rows(dev, m, with_bias):
    gen = torch.Generator().manual_seed(m + with_bias)
    _, packed, table, _ = _int_case(m, 9, 50, 4, False, gen, dev)
    x = torch.randn(m, 50, generator=gen)
    x[0, 3] = float("nan")
    bias = torch.randn(9, generator=gen) if with_bias else None
    y = int8_ops.int8_linear(x.to(dev), packed, table, 4, 2.0 ** -5, None if bias is None else bias.to(dev),
                             backend="triton")
    ref = int8_ops.int8_linear(x, packed.cpu(), table, 4, 2.0 ** -5, bias, backend="reference")
    assert torch.isnan(y[0]).all()
    torch.testing.assert_close(y.cpu(), ref, rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("m", [1, 3, 16, 33])
def test_bf16_mode_exact_cases_equal_reference(dev, m, dtype):
    gen = torch.Generator().manual_seed(7 * m)
    x, packed, cb, bias, _ = exact_case(m, 11, 70, 4, dtype, gen, device=dev)
    y = bf16_ops.bf16_linear(x, packed, cb, 4, bias, backend="triton")
    assert y.dtype == dtype and y.shape == (m, 11)
    assert torch.equal(y.cpu(), bf16_ops.bf16_linear(x.cpu(), packed.cpu(), cb.cpu(), 4, bias.cpu(),
                                                     backend="reference"))


@pytest.mark.parametrize("m", [1, 20])
def test_bf16_mode_random_activations_within_bound(dev, m):
    gen = torch.Generator().manual_seed(m)
    _, packed, cb, _, codes = exact_case(m, 24, 96, 4, torch.float32, gen, device=dev)
    x = torch.randn(m, 96, generator=gen)
    y = bf16_ops.bf16_linear(x.to(dev), packed, cb, 4, backend="triton").cpu().double()
    w = cb.cpu()[codes]
    err = (y - (x.double() @ w.double().t())).abs()
    assert (err <= bf16_ops.error_bound(x, w, output_rounding=False)).all()


@pytest.mark.parametrize("mode", ["bf16", "int8"])
def test_wfn_linear_mode_on_triton_matches_the_reference_backend(dev, mode):
    torch.manual_seed(0)
    lin = nn.Linear(40, 12)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([0.0, 0.25, -0.5, 1.0])[torch.randint(0, 4, (12, 40))])
    model = nn.Sequential(lin).to(dev)
    wk.convert(model, compute=mode)
    x = torch.randn(6, 40, device=dev)
    wk.set_backend(model, "triton")
    y = model(x)
    wk.set_backend(model, "reference")
    torch.testing.assert_close(y, model(x), rtol=0, atol=1e-6)


def test_ops_pass_opcheck(dev):
    gen = torch.Generator().manual_seed(3)
    xq, packed, table, _ = _int_case(5, 7, 33, 4, False, gen, dev)
    torch.library.opcheck(torch.ops.wfn.int_linear_triton.default, (xq, packed, table, 4, 33))
    x, packed, cb, bias, _ = exact_case(2, 7, 33, 4, torch.float32, gen, device=dev)
    torch.library.opcheck(torch.ops.wfn.bf16_linear_triton.default, (x, packed, cb, 4, 33, bias))


def test_int8_conv_on_triton_is_refused_with_the_reason(dev):
    iw = int8_ops.integer_weights(torch.tensor([0.0, 0.5, -1.0]))
    packed = pack_codes(torch.zeros(4, 27, dtype=torch.long), 4).to(dev)
    with pytest.raises(BackendUnavailableError, match="no int8-mode conv2d kernel"):
        int8_ops.int8_conv2d(torch.randn(1, 3, 5, 5, device=dev), packed, iw.table, 4, (4, 3, 3, 3), iw.step,
                             backend="triton")
