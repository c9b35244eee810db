"""Shift-add integer path: format, encoder errors, bit-exact kernels at every level, no multiplies."""
import re
import shutil
import subprocess

import pytest
import torch

from wfn_kernels import ops
from wfn_kernels.ops import shift_add as sa
from wfn_kernels.format.codebook import Codebook
from wfn_kernels.format.packing import pack_weight

needs_ext = pytest.mark.skipif(ops._C is None, reason="extension not built")


def pow2_codebook() -> Codebook:
    """Order-0 with the widest span the format holds (7 exponents) and both signs."""
    return Codebook.from_values([0.0] + [s * 2.0 ** e for e in range(-7, 0) for s in (1.0, -1.0)])


def integer_reference(x, codebook, codes):
    """x @ W.T in exact float64 arithmetic (values are dyadic, sums far below 2**53)."""
    return x.double() @ codebook.values.double()[codes].t()


def test_format_codes_and_scale():
    cb = Codebook.from_values([-0.5, 0.0, 0.125, 0.5])
    w = sa.encode_shift_add(cb, torch.tensor([[0, 1, 2, 3]]))
    assert w.e_min == -3 and w.scale == 0.125
    codes = (w.packed[0, 0] & 15, w.packed[0, 0] >> 4, w.packed[0, 1] & 15, w.packed[0, 1] >> 4)
    # -0.5 = -(2**-3 << 2): sign 8 | (shift 2 + 1); 0 -> 0; 0.125 -> shift 0 -> 1; 0.5 -> 3
    assert [int(c) for c in codes] == [8 | 3, 0, 1, 3]
    assert torch.equal(w.dense(), torch.tensor([[-0.5, 0.0, 0.125, 0.5]], dtype=torch.float64))


def test_encoder_rejects_non_order0_codebook():
    cb = Codebook.from_values([0.0, 0.75, 1.0])  # 0.75 = 2**-1 + 2**-2
    with pytest.raises(ValueError, match=r"not order-0 .* offending values \[0.75\]"):
        sa.encode_shift_add(cb, torch.zeros(2, 3, dtype=torch.int64))


def test_encoder_rejects_wide_exponent_span():
    cb = Codebook.from_values([2.0 ** -8, 1.0])
    with pytest.raises(ValueError, match=r"exponents span 2\*\*-8\.\.2\*\*0"):
        sa.encode_shift_add(cb, torch.zeros(1, 1, dtype=torch.int64))


def test_encoder_rejects_bad_codes():
    cb = pow2_codebook()
    with pytest.raises(ValueError, match=r"codes must lie in \[0, 15\)"):
        sa.encode_shift_add(cb, torch.full((1, 2), 15))
    with pytest.raises(ValueError, match="codes must be a 2-D integer tensor"):
        sa.encode_shift_add(cb, torch.zeros(3))


def test_encode_from_packed_weight(rng):
    cb = pow2_codebook()
    weight = cb.values[torch.randint(0, len(cb), (6, 20), generator=rng)]
    pw = pack_weight(weight, cb)
    local = Codebook.from_values(pw.codebook)
    w = sa.encode_shift_add(local, pw)
    assert torch.equal(w.dense(), weight.double())


@pytest.mark.parametrize("m", [0, 1, 3, 16])
@pytest.mark.parametrize("k", [1, 15, 33, 130, 1000])
def test_bit_exact_every_level(level, m, k, rng):
    cb = pow2_codebook()
    codes = torch.randint(0, len(cb), (7, k), generator=rng)
    w = sa.encode_shift_add(cb, codes)
    x = torch.randint(-128, 128, (m, k), generator=rng, dtype=torch.int8)
    y = sa.shift_add_linear(x, w, backend="extension")
    assert y.dtype == torch.int32 and y.shape == (m, 7)
    assert torch.equal(y, sa.shift_add_linear(x, w, backend="reference"))
    assert torch.equal(y.double() * w.scale, integer_reference(x, cb, codes))


def test_extremes_do_not_overflow(level):
    """Every weight at the largest magnitude and every x at -128: the bound the K limit is built on."""
    k = 4097
    cb = Codebook.from_values([-(2.0 ** 6), 1.0])
    w = sa.encode_shift_add(cb, torch.zeros(3, k, dtype=torch.int64))
    x = torch.full((2, k), -128, dtype=torch.int8)
    y = sa.shift_add_linear(x, w, backend="extension")
    assert torch.equal(y, torch.full((2, 3), 128 * 64 * k, dtype=torch.int32))


def test_batched_input_and_front_end_errors(rng):
    cb = pow2_codebook()
    w = sa.encode_shift_add(cb, torch.randint(0, len(cb), (5, 8), generator=rng))
    x = torch.randint(-5, 5, (2, 3, 8), generator=rng, dtype=torch.int8)
    assert sa.shift_add_linear(x, w).shape == (2, 3, 5)
    with pytest.raises(ValueError, match=r"x must be a 2-D int8 tensor \(M, K\), got torch.float32"):
        sa.shift_add_linear(x.float(), w)
    with pytest.raises(ValueError, match="x has K=7 columns but the weight has in_features=8"):
        sa.shift_add_linear(x[..., :7], w)
    with pytest.raises(ValueError, match="could overflow the int32 accumulator"):
        sa.check_shift_add_args(torch.zeros(1, sa.MAX_IN_FEATURES + 1, dtype=torch.int8),
                                torch.zeros(1, (sa.MAX_IN_FEATURES + 2) // 2, dtype=torch.uint8),
                                sa.MAX_IN_FEATURES + 1)


@needs_ext
def test_cpp_kernel_checks_its_arguments():
    with pytest.raises(RuntimeError, match="x must be a 2-D int8 tensor"):
        torch.ops.wfn.shift_add_linear(torch.zeros(1, 4), torch.zeros(1, 2, dtype=torch.uint8), 4)
    with pytest.raises(RuntimeError, match=r"packed shift-add codes must be a 2-D uint8 tensor \(N, 2\)"):
        torch.ops.wfn.shift_add_linear(torch.zeros(1, 4, dtype=torch.int8), torch.zeros(1, 3, dtype=torch.uint8), 4)


def test_opcheck(rng):
    cb = pow2_codebook()
    w = sa.encode_shift_add(cb, torch.randint(0, len(cb), (5, 9), generator=rng))
    x = torch.randint(-128, 128, (3, 9), generator=rng, dtype=torch.int8)
    torch.library.opcheck(torch.ops.wfn.shift_add_linear.default, (x, w.packed, 9))


def _disassemble(symbol: str) -> str:
    so = ops._C.__file__
    out = subprocess.run(["objdump", "-d", "--no-show-raw-insn", f"--disassemble={symbol}", so],
                         capture_output=True, text=True, check=True).stdout
    body = out.split(f"<{symbol}>:", 1)
    assert len(body) == 2, f"symbol {symbol} not found in {so}"
    return body[1]


@needs_ext
@pytest.mark.skipif(shutil.which("objdump") is None, reason="objdump not installed")
@pytest.mark.parametrize("symbol,shift_insn", [("wfn_shift_add_dot_avx512", "vpsllvd"),
                                               ("wfn_shift_add_dot_avx2", "vpsllvd"),
                                               ("wfn_shift_add_dot_scalar", "shl")])
def test_dot_kernels_have_no_multiply(symbol, shift_insn):
    """The compiled dot kernels (whole functions, so their inner loops) contain shifts but no multiply,
    multiply-add or FMA instruction of any kind."""
    asm = _disassemble(symbol)
    mnemonics = [line.split("\t")[1].split()[0] for line in asm.splitlines() if line.count("\t") >= 1
                 and len(line.split("\t")) > 1 and line.split("\t")[1].strip()]
    assert len(mnemonics) > 10, asm
    assert any(mn.startswith(shift_insn) for mn in mnemonics), f"{symbol}: no {shift_insn} in\n{asm}"
    muls = [mn for mn in mnemonics if re.search(r"mul|madd|fma", mn)]
    assert not muls, f"{symbol} contains multiplies: {muls}"


def test_two_threads_match_reference(level, rng):
    cb = pow2_codebook()
    codes = torch.randint(0, len(cb), (1031, 515), generator=rng)
    w = sa.encode_shift_add(cb, codes)
    x = torch.randint(-128, 128, (3, 515), generator=rng, dtype=torch.int8)
    torch.set_num_threads(2)
    try:
        y = sa.shift_add_linear(x, w, backend="extension")
    finally:
        torch.set_num_threads(1)
    assert torch.equal(y, sa.shift_add_linear(x, w, backend="reference"))


# ---------------------------------------------------------------------------------------------------
# The module option: WFNLinear(shift_add=True) / convert(shift_add=True)

def _order0_linear(n=24, k=37, seed=0, bias=True):
    from torch import nn
    g = torch.Generator().manual_seed(seed)
    lin = nn.Linear(k, n, bias=bias)
    vals = torch.tensor([0.0, 2.0 ** -5, -(2.0 ** -5), 2.0 ** -3, -(2.0 ** -2), 2.0 ** -1])
    with torch.no_grad():
        lin.weight.copy_(vals[torch.randint(0, len(vals), (n, k), generator=g)])
        if bias:
            lin.bias.copy_(torch.randn(n, generator=g))
    return lin


@pytest.mark.parametrize("backend", ["reference", "extension"])
def test_module_shift_add_exact_on_int8_grid_inputs(backend):
    """shift_add=True is the int8 compute mode; its integer product is the shift-add spec's."""
    from wfn_kernels.nn import WFNLinear
    from wfn_kernels.ops import int8 as int8_ops
    lin = _order0_linear()
    book = Codebook.from_values(torch.unique(lin.weight.detach()))
    m = WFNLinear.from_linear(lin, book, backend=backend, shift_add=True)
    assert m.shift_add and m.compute == "int8" and "compute=int8" in repr(m)
    g = torch.Generator().manual_seed(1)
    x = torch.randint(-127, 128, (5, 37), generator=g).float()
    x[:, 0] = 127.0  # max |x| = 127 in every row: activation scale 1, so quantisation is exact
    with torch.no_grad():
        expected = lin(x)
        got = m(x)
    # integer accumulation is exact; the only rounding is the final fp32 rescale + bias add
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-4)
    # the module's int32 product is bit-exact against the multiplier-free spec and an int64 matmul
    w = sa.encode_shift_add(book, pack_weight(lin.weight, book))
    acc = int8_ops.int_linear(x.to(torch.int8), m.packed, m.int_table, m.bits, 37, backend=backend)
    assert m.int_step == w.scale
    assert torch.equal(acc, sa.shift_add_linear(x.to(torch.int8), w, backend=backend))
    w_int = (lin.weight.detach().double() / w.scale).round().long()
    assert acc.dtype == torch.int32 and torch.equal(acc.long(), x.long() @ w_int.t())


def test_module_shift_add_approximates_float_on_real_inputs():
    from wfn_kernels.nn import WFNLinear
    lin = _order0_linear(n=64, k=200, seed=3)
    book = Codebook.from_values(torch.unique(lin.weight.detach()))
    m = WFNLinear.from_linear(lin, book, shift_add=True)
    x = torch.randn(3, 7, 200, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        expected, got = lin(x), m(x)
    assert got.shape == (3, 7, 64)
    # per-activation error <= scale/2, scale = max|x[row]|/127 <= max|x|/127: bound |W| row sums times that
    x_scale = float(x.abs().max()) / 127
    bound = lin.weight.abs().sum(1).max().item() * x_scale / 2
    assert (got - expected).abs().max().item() <= bound + 1e-5
    assert (got - expected).abs().max().item() > 0  # it really is the int8 path, not the float one
    m.enable_shift_add(False)
    with torch.no_grad():
        torch.testing.assert_close(m(x), expected, rtol=1e-5, atol=1e-5)


def test_module_shift_add_accepts_few_term_codebooks_and_names_refusals():
    """The int8 mode holds any codebook whose values are integers in units of its smallest step."""
    from torch import nn

    from wfn_kernels.nn import WFNLinear
    lin = nn.Linear(8, 4, bias=False)
    with torch.no_grad():
        lin.weight.fill_(0.75)  # 2**-1 + 2**-2: a 2-term value, 3 steps of 2**-2
    m = WFNLinear.from_linear(lin, Codebook.from_values(torch.tensor([0.75])), shift_add=True)
    assert m.shift_add and m.int_table.tolist() == [3] and m.int_step == 0.25
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([2.0 ** -20, 1.0]).repeat(4, 4))  # 2**20 steps: beyond int16
    with pytest.raises(ValueError, match=r"WFNLinear\(8->4\): cannot use compute='int8': .*integers up to 1048576"):
        WFNLinear.from_linear(lin, Codebook.from_values(torch.tensor([2.0 ** -20, 1.0]), max_terms=1), shift_add=True)


def test_convert_shift_add_option_and_save_load(tmp_path):
    from torch import nn

    from wfn_kernels.nn import WFNLinear, convert
    from wfn_kernels.nn.io import load_packed, save_packed
    torch.manual_seed(0)
    model = nn.Sequential(_order0_linear(16, 37, seed=1), nn.ReLU(), nn.Linear(16, 5))
    with torch.no_grad():
        model[2].weight.copy_(torch.where(torch.rand(5, 16) > 0.5, 0.75, -0.375))  # 2-term values
    x = torch.randint(-127, 128, (4, 37)).float()
    x[0, 0] = 127.0
    rep = convert(model, shift_add=True)
    assert rep.converted[0]["compute"] == rep.converted[1]["compute"] == "int8"
    assert "compute int8" in rep.summary()
    assert model[0].shift_add and model[2].shift_add  # 2-term values are exact integers too
    with torch.no_grad():
        y = model(x)
    path = tmp_path / "m.safetensors"
    save_packed(model, path)
    fresh = nn.Sequential(nn.Linear(37, 16), nn.ReLU(), nn.Linear(16, 5))
    load_packed(path, fresh)
    assert isinstance(fresh[0], WFNLinear) and fresh[0].shift_add and fresh[2].shift_add
    with torch.no_grad():
        assert torch.equal(fresh(x), y)
