"""Compute modes (float / bf16 / int8): kernels against their reference spec at every dispatch level and on
both paths (fused GEMV, decode-tile + oneDNN GEMM), error bounds, module / convert / save-load behaviour."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import wfn_kernels as wk
from wfn_kernels import ops
from wfn_kernels.format.codebook import Codebook
from wfn_kernels.format.packing import pack_codes, pack_weight, unpack_codes
from wfn_kernels.ops import bf16 as bf16_ops
from wfn_kernels.ops import int8 as int8_ops
from wfn_kernels.ops import shift_add as sa

needs_ext = pytest.mark.skipif(ops._C is None, reason="extension not built")


@pytest.fixture(params=["gemv", "gemm", "gemm-fp32", "gemm-avx2"])
def int_path(request, level):
    """Route every M through the fused GEMV (threshold above any M), the decode-tile + _int_mm path, the
    decode-tile + exact fp32 GEMM path, or (AVX2 level) the int16 vpmaddwd GEMM, the default for large M on
    CPUs without int8 dot-product instructions."""
    if ops._C is None:
        pytest.skip("extension not built")
    if request.param == "gemm-avx2" and level != "avx2":
        pytest.skip("the AVX2 int16 GEMM runs at the avx2 level only")
    previous = torch.ops.wfn_cpu.set_int_gemm_min_m(1 << 30 if request.param == "gemv" else 0)
    before = torch.ops.wfn_cpu.set_fp32_int_gemm(1 if request.param == "gemm-fp32" else 0)
    before16 = torch.ops.wfn_cpu.set_avx2_int16_gemm(1 if request.param == "gemm-avx2" else 0)
    yield request.param
    torch.ops.wfn_cpu.set_int_gemm_min_m(previous)
    torch.ops.wfn_cpu.set_fp32_int_gemm(before)
    torch.ops.wfn_cpu.set_avx2_int16_gemm(before16)


@pytest.fixture(params=["int8-gemm", "fp32-gemm", "avx2-kernel", "avx2-kernel16"])
def int_gemm(request, level):
    """The int8 conv's product on oneDNN's int8 GEMM or on the exact fp32 GEMM (and, for a long K at the AVX2
    level, the GEMV on im2col rows), wherever the level does not run the AVX-512 kernels; at the AVX2 level
    also the fused conv kernels (the default there on CPUs without int8 dot-product units): vpmaddubsw for
    int8 tables and vpmaddwd for int16 ones ("avx2-kernel"), or vpmaddwd for every table ("avx2-kernel16")."""
    if request.param.startswith("avx2-kernel") and level != "avx2":
        pytest.skip("the AVX2 conv kernels run at the avx2 level only")
    before = torch.ops.wfn_cpu.set_fp32_int_gemm(1 if request.param == "fp32-gemm" else 0)
    before_conv = torch.ops.wfn_cpu.set_avx2_int8_conv({"avx2-kernel": 1, "avx2-kernel16": 2}.get(request.param, 0))
    yield request.param
    torch.ops.wfn_cpu.set_fp32_int_gemm(before)
    torch.ops.wfn_cpu.set_avx2_int8_conv(before_conv)


@pytest.fixture(params=["gemv", "gemm"])
def bf16_path(request):
    if ops._C is None:
        pytest.skip("extension not built")
    previous = torch.ops.wfn_cpu.set_bf16_gemm_min_m(1 << 30 if request.param == "gemv" else 0)
    yield request.param
    torch.ops.wfn_cpu.set_bf16_gemm_min_m(previous)


def int_table(bits: int, wide: bool, gen) -> torch.Tensor:
    """A random integer table using every code: int8 entries (including -128 and 127), or int16 ones."""
    c = 1 << bits
    lo, hi = (-1000, 1000) if wide else (-128, 127)
    t = torch.randint(lo, hi + 1, (c,), generator=gen)
    t[0], t[-1] = lo, hi
    return t.to(torch.int16)


def codes_for(n, k, bits, gen):
    codes = torch.randint(0, 1 << bits, (n, k), generator=gen)
    return codes, pack_codes(codes, bits)


# ---------------------------------------------------------------------------------------------- int8


@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("wide", [False, True], ids=["int8w", "int16w"])
@pytest.mark.parametrize("m", [0, 1, 3, 16, 127])
def test_integer_product_bit_exact(level, int_path, bits, wide, m, rng):
    k, n = 1000 + bits, 37  # K not a multiple of any code block (64 or 32 bytes), odd N
    table = int_table(bits, wide, rng)
    codes, packed = codes_for(n, k, bits, rng)
    xq = torch.randint(-127, 128, (m, k), generator=rng).to(torch.int8)
    y = int8_ops.int_linear(xq, packed, table, bits, k, backend="extension")
    ref = int8_ops.int_linear_reference(xq, packed, table, bits, k)
    assert y.dtype == torch.int32 and y.shape == (m, n)
    assert torch.equal(y, ref)
    assert torch.equal(ref.long(), xq.long() @ table.long()[codes].t())


@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("k", [1, 63, 130, 4097])
def test_integer_product_small_and_extreme(level, int_path, bits, k, rng):
    """Every x at -127 against every weight at -128: the largest products the accumulator bound allows."""
    table = torch.full((1 << bits,), -128, dtype=torch.int16)
    table[1] = 127
    codes, packed = codes_for(5, k, bits, rng)
    xq = torch.full((3, k), -127, dtype=torch.int8)
    y = int8_ops.int_linear(xq, packed, table, bits, k, backend="extension")
    assert torch.equal(y, int8_ops.int_linear_reference(xq, packed, table, bits, k))


@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("k", [1, 63, 130, 500])
@pytest.mark.parametrize("m", [1, 3])
def test_integer_product_extreme_int16_weights(level, int_path, bits, k, m, rng):
    """int16 tables at both ends of their range (-32768 and 32639) and entries whose low byte has its top bit
    set, against x at +-127 in random signs: every byte of the wide kernels' two-LUT decode and sign extension."""
    table = torch.tensor([-32768, 32639, -129, 255, -256, 383, 1, -1] * 2, dtype=torch.int16)[: 1 << bits]
    if bits == 8:
        table = torch.cat([table, torch.randint(-32768, 32640, (256 - table.numel(),), generator=rng)]).to(torch.int16)
    codes, packed = codes_for(7, k, bits, rng)
    xq = (torch.randint(0, 2, (m, k), generator=rng) * 254 - 127).to(torch.int8)
    y = int8_ops.int_linear(xq, packed, table, bits, k, backend="extension")
    ref = int8_ops.int_linear_reference(xq, packed, table, bits, k)
    assert torch.equal(y, ref)
    assert torch.equal(ref.long(), xq.long() @ table.long()[codes].t())


@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("wide", [False, True], ids=["int8w", "int16w"])
@pytest.mark.parametrize("m", [1, 5, 40])
def test_int8_linear_matches_reference_bit_for_bit(level, int_path, bits, wide, m, rng):
    k, n = 333, 19
    table = int_table(bits, wide, rng)
    _, packed = codes_for(n, k, bits, rng)
    x = torch.randn(m, k, generator=rng) * 3
    x[0, :7] = 0.0
    if m > 2:
        x[2] = 0.0  # an all-zero row (scale 1)
    bias = torch.randn(n, generator=rng)
    for b in (None, bias):
        y = int8_ops.int8_linear(x, packed, table, bits, 2.0 ** -6, b, backend="extension")
        ref = int8_ops.int8_linear_reference(x, packed, table, bits, k, 2.0 ** -6, b)
        assert torch.equal(y, ref)
    xb = x.bfloat16()
    assert torch.equal(int8_ops.int8_linear(xb, packed, table, bits, 0.5, bias, backend="extension"),
                       int8_ops.int8_linear_reference(xb, packed, table, bits, k, 0.5, bias))


@needs_ext
@pytest.mark.parametrize("width", [6, 75])  # 75: whole vectors of the SIMD quantisers and a tail
def test_int8_conv_nonfinite_pixels_give_nan(level, int_gemm, width, rng):
    cb = order0_codebook()
    iw = int8_ops.integer_weights(cb.values, 27)
    packed = pack_codes(torch.randint(0, len(cb), (4, 27), generator=rng), 4)
    x = torch.randn(1, 3, 6, width, generator=rng)
    x[0, 1, 2, 2] = float("nan")
    y = int8_ops.int8_conv2d(x, packed, iw.table, 4, (4, 3, 3, 3), iw.step, None, 1, 1, backend="extension")
    ref = int8_ops.int8_conv2d(x, packed, iw.table, 4, (4, 3, 3, 3), iw.step, None, 1, 1, backend="reference")
    assert torch.equal(torch.isnan(y), torch.isnan(ref)) and int(torch.isnan(y[0, 0]).sum()) == 9
    assert torch.equal(y.nan_to_num(), ref.nan_to_num())


@needs_ext
@pytest.mark.parametrize("geom", [(3, 13, 9, 11, 9, 3, 1, 1, 1), (2, 7, 12, 40, 5, 3, 3, 2, 2),
                                  (1, 4, 9, 9, 2, 2, 2, 0, 1), (1, 9, 3, 3, 70, 1, 1, 0, 1),
                                  (2, 3, 21, 45, 6, 7, 2, 3, 1), (1, 2, 17, 70, 5, 3, 1, 1, 1)])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("table_kind", ["int8", "int16"])
def test_int8_conv_extreme_products_exact(level, int_gemm, geom, threads, table_kind, rng):
    """Weights -128 and 127 against activations quantised to +-127 (every input +-1, so each pixel's scale
    maps them to the range's ends): the largest byte-pair sums any product meets (2 * 128 * 127 on the AVX2
    kernel's vpmaddubsw of |w| and sign(w) x), K not a multiple of 4, odd channel counts, stride 3 with
    dilation 2, pixel blocks across output rows and images, rows long enough for the AVX2 kernel's plain
    (stride 1), masked (padding, one or two output rows per vector) and paired (stride 2) loads beside its
    gathers, and work split across threads. int16: the table's ends (-32768, 32639) and low bytes with their
    top bit set, through the vpmaddwd kernel's pairs (every K here keeps K * 127 * 32768 below 2^31)."""
    b, c, h, w_, o, kk, st, p, d = geom
    k = c * kk * kk
    if table_kind == "int8":
        table = torch.tensor([-128, 127, -128, 127] * 4, dtype=torch.int16)
        table[5], table[6] = -1, 64
    else:
        table = torch.tensor([-32768, 32639, -129, 255, -256, 383, 1, -1] * 2, dtype=torch.int16)
    codes = torch.randint(0, 16, (o, k), generator=rng)
    packed = pack_codes(codes, 4)
    x = torch.randint(0, 2, (b, c, h, w_), generator=rng).float() * 2 - 1
    x[:, :, ::3] *= 0.37  # and some pixels with smaller values
    bias = torch.randn(o, generator=rng)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        y = int8_ops.int8_conv2d(x, packed, table, 4, (o, c, kk, kk), 2.0 ** -7, bias, st, p, d, backend="extension")
    finally:
        torch.set_num_threads(before)
    ref = int8_ops.int8_conv2d(x, packed, table, 4, (o, c, kk, kk), 2.0 ** -7, bias, st, p, d, backend="reference")
    assert torch.equal(y, ref)
    exact = F.conv2d(x.double(), table.double()[codes].reshape(o, c, kk, kk) * 2.0 ** -7, bias.double(), st, p, d)
    assert float((y.double() - exact).abs().max()) < 1e-3 * float(exact.abs().max())


@needs_ext
@pytest.mark.parametrize("geom", [(3, 13, 9, 11, 9, 3, 1, 1), (2, 16, 10, 12, 24, 3, 2, 1), (1, 8, 4, 4, 8, 1, 1, 0)])
def test_int8_conv_channels_last_matches_nchw(level, int_gemm, geom, rng):
    """A channels_last input gives the NCHW result bit for bit, in channels_last memory: on the AVX2 kernel
    through its own NHWC <-> NCHW transposes (8 x 8 blocks and the tails of both dimensions)."""
    b, c, h, w_, o, kk, st, p = geom
    cb = order0_codebook()
    iw = int8_ops.integer_weights(cb.values, c * kk * kk)
    packed = pack_codes(torch.randint(0, len(cb), (o, c * kk * kk), generator=rng), 4)
    x = torch.randn(b, c, h, w_, generator=rng)
    args = (packed, iw.table, 4, (o, c, kk, kk), iw.step, torch.randn(o, generator=rng), st, p)
    y = int8_ops.int8_conv2d(x, *args, backend="extension")
    y_cl = int8_ops.int8_conv2d(x.contiguous(memory_format=torch.channels_last), *args, backend="extension")
    assert y_cl.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(y_cl, y) and torch.equal(y, int8_ops.int8_conv2d(x, *args, backend="reference"))


@needs_ext
def test_int8_nonfinite_rows_give_nan(rng):
    table = int_table(4, False, rng)
    _, packed = codes_for(6, 40, 4, rng)
    x = torch.randn(3, 40, generator=rng)
    x[1, 5] = float("nan")
    x[2, 0] = float("inf")
    for backend in ("extension", "reference"):
        y = int8_ops.int8_linear(x, packed, table, 4, 1.0, backend=backend)
        assert torch.isnan(y[1:]).all() and torch.isfinite(y[0]).all()


def order0_codebook() -> Codebook:
    return Codebook.from_values([0.0] + [s * 2.0 ** e for e in range(-7, 0) for s in (1.0, -1.0)])


def wide_codebook() -> Codebook:
    """16 values whose integer table needs int16 (they span 12 bits of power-of-two steps), as a model fixed
    with the paper's settings has."""
    return Codebook.from_values([0.0, 2.0 ** -12, -(2.0 ** -12), 2.0 ** -9 + 2.0 ** -12]
                                + [s * 2.0 ** e for e in range(-6, 0) for s in (1.0, -1.0)])


@pytest.mark.parametrize("m", [1, 3, 16])
def test_integer_product_is_the_shift_add_spec(level, m, rng):
    """For an order-0 codebook the int8 mode's integer product equals wfn::shift_add_linear (same step)."""
    cb = order0_codebook()
    k = 517
    codes = torch.randint(0, len(cb), (9, k), generator=rng)
    sa_w = sa.encode_shift_add(cb, codes)
    iw = int8_ops.integer_weights(cb.values, k)
    assert iw.exponent == sa_w.e_min
    xq = torch.randint(-127, 128, (m, k), generator=rng).to(torch.int8)
    y = int8_ops.int_linear(xq, pack_codes(codes, 4), iw.table, 4, k, backend="extension")
    assert torch.equal(y, sa.shift_add_linear(xq, sa_w, backend="reference"))


def test_integer_weights_table_and_refusals():
    iw = int8_ops.integer_weights(torch.tensor([-0.75, 0.0, 0.125, 1.5]))
    assert iw.exponent == -3 and iw.table.tolist() == [-6, 0, 1, 12] and iw.narrow
    wide = int8_ops.integer_weights(torch.tensor([-(2.0 ** -9), 1.0]))
    assert wide.table.tolist() == [-1, 512] and not wide.narrow
    with pytest.raises(ValueError, match=r"integers up to 65536 .* \[-32768, 32639\]"):
        int8_ops.integer_weights(torch.tensor([2.0 ** -16, 1.0]))
    with pytest.raises(ValueError, match="could overflow the int32 accumulator"):
        int8_ops.integer_weights(torch.tensor([2.0 ** -9, 1.0]), in_features=40000)
    with pytest.raises(ValueError, match="below float32's normal range"):
        int8_ops.integer_weights(torch.tensor([2.0 ** -130]))
    assert int8_ops.integer_weights(torch.zeros(3)).table.tolist() == [0, 0, 0]


@pytest.mark.parametrize("backend", ["extension", "reference"])
def test_int8_error_within_quantisation_bound(backend, rng):
    cb = order0_codebook()
    k, n = 700, 50
    codes = torch.randint(0, len(cb), (n, k), generator=rng)
    w = cb.values.float()[codes]
    iw = int8_ops.integer_weights(cb.values, k)
    x = torch.randn(8, k, generator=rng)
    y = int8_ops.int8_linear(x, pack_codes(codes, 4), iw.table, 4, iw.step, backend=backend)
    exact = x.double() @ w.double().t()
    err = (y.double() - exact).abs()
    bound = int8_ops.error_bound(x, w)
    assert bool((err <= bound).all()), float((err - bound).max())
    assert float(err.max()) > 0  # the mode really quantises


# ---------------------------------------------------------------------------------------------- bf16


def bf16_codebook(bits: int, gen) -> torch.Tensor:
    """Distinct bf16-exact values (few-term power-of-two sums), sorted."""
    pool = torch.tensor(sorted({s * (1 + t / 8) * 2.0 ** e for e in range(-6, 2) for t in range(8)
                                for s in (1.0, -1.0)} | {0.0}))
    idx = torch.randperm(pool.numel(), generator=gen)[: 1 << bits]
    return torch.sort(pool[idx]).values.float()


@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("m", [0, 1, 3, 16, 127])
def test_bf16_linear_matches_reference(level, bf16_path, bits, m, rng):
    k, n = 517, 23
    cb = bf16_codebook(bits, rng)
    codes = torch.randint(0, cb.numel(), (n, k), generator=rng)
    packed = pack_codes(codes, bits)
    x = torch.randn(m, k, generator=rng)
    bias = torch.randn(n, generator=rng)
    y = bf16_ops.bf16_linear(x, packed, cb, bits, bias, backend="extension")
    ref = bf16_ops.bf16_linear_reference(x, packed, cb, bits, k, bias)
    assert y.shape == (m, n) and y.dtype == torch.float32
    w = cb[codes]
    # same products (bf16(x) * exact w); only the fp32 summation order and, on the oneDNN GEMM path, one
    # bf16 rounding of the output differ
    mag = x.bfloat16().double().abs() @ w.double().abs().t()
    # (that rounding is relative to x @ W.T, before the bias is added)
    tol = mag * k * 2.0 ** -22 + ((ref - bias).double().abs() * 2.0 ** -8 if bf16_path == "gemm" else 0) + 1e-6
    assert bool(((y.double() - ref.double()).abs() <= tol).all())


@needs_ext
@pytest.mark.parametrize("m", [1, 64])
def test_bf16_without_bf16_arithmetic_runs_the_fp32_kernels(level, bf16_path, m, rng):
    """Below the AVX512_BF16 level the bf16 mode is bf16(x) on the fp32 kernels at every M: no bf16 output
    rounding (oneDNN would emulate bf16 there), so only the fp32 summation order differs from the reference."""
    if not torch.ops.wfn_cpu.bf16_capability().startswith("fp32 kernels"):
        pytest.skip(f"this level has bf16 arithmetic ({torch.ops.wfn_cpu.bf16_capability()})")
    k, n = 700, 37
    cb = bf16_codebook(4, rng)
    codes = torch.randint(0, cb.numel(), (n, k), generator=rng)
    x = torch.randn(m, k, generator=rng)
    y = bf16_ops.bf16_linear(x, pack_codes(codes, 4), cb, 4, backend="extension")
    ref = bf16_ops.bf16_linear_reference(x, pack_codes(codes, 4), cb, 4, k, None)
    mag = x.bfloat16().double().abs() @ cb[codes].double().abs().t()
    assert bool(((y.double() - ref.double()).abs() <= mag * k * 2.0 ** -22 + 1e-7).all())


@pytest.mark.parametrize("backend", ["extension", "reference"])
def test_bf16_error_within_rounding_bound(backend, rng):
    cb = bf16_codebook(4, rng)
    k, n = 900, 40
    codes = torch.randint(0, cb.numel(), (n, k), generator=rng)
    w = cb[codes]
    for m in (1, 64):
        x = torch.randn(m, k, generator=rng)
        y = bf16_ops.bf16_linear(x, pack_codes(codes, 4), cb, 4, backend=backend)
        err = (y.double() - x.double() @ w.double().t()).abs()
        assert bool((err <= bf16_ops.error_bound(x, w)).all())


def test_bf16_refuses_inexact_weights():
    cb = torch.tensor([0.0, 1.0 + 2.0 ** -9])  # 10 significant bits: not bf16
    assert bf16_ops.bf16_inexact_values(cb) == [1.0 + 2.0 ** -9]
    with pytest.raises(ValueError, match="not exactly representable in bfloat16"):
        bf16_ops.bf16_linear(torch.randn(2, 4), pack_codes(torch.zeros(3, 4, dtype=torch.int64), 2), cb, 2)


# ---------------------------------------------------------------------------------------------- convs


@pytest.mark.parametrize("mode", ["int8", "bf16"])
@pytest.mark.parametrize("geom", [(1, 3, 9, 9, 5, 3, 1, 1), (2, 4, 8, 7, 6, 3, 2, 0), (1, 8, 5, 5, 3, 1, 1, 0),
                                  (2, 3, 21, 19, 7, 3, 1, 1), (2, 1, 6, 6, 4, 1, 1, 0), (1, 5, 7, 75, 6, 3, 1, 1),
                                  (1, 460, 4, 5, 7, 3, 1, 1)])  # K = 4140: the AVX2 GEMV-on-rows path
def test_conv_modes_match_reference(level, int_gemm, mode, geom, rng):
    if mode == "bf16" and int_gemm in ("fp32-gemm", "avx2-kernel16"):
        pytest.skip("the int8 product's setting does not apply to the bf16 mode")
    b, c, h, w_, o, kk, s, p = geom
    # the batch-2 geometries of the int8 mode take an int16 table (wide_codebook), the others an int8 one
    cb = order0_codebook() if mode == "bf16" or geom[0] == 1 else wide_codebook()
    wshape = (o, c, kk, kk)
    codes = torch.randint(0, len(cb), (o, c * kk * kk), generator=rng)
    packed = pack_codes(codes, 4)
    x = torch.randn(b, c, h, w_, generator=rng)
    bias = torch.randn(o, generator=rng)
    dense = cb.values.float()[codes].reshape(wshape)
    exact = F.conv2d(x.double(), dense.double(), bias.double(), s, p)
    if mode == "int8":
        iw = int8_ops.integer_weights(cb.values, c * kk * kk)
        y = int8_ops.int8_conv2d(x, packed, iw.table, 4, wshape, iw.step, bias, s, p, backend="extension")
        ref = int8_ops.int8_conv2d(x, packed, iw.table, 4, wshape, iw.step, bias, s, p, backend="reference")
        assert torch.equal(y, ref)
        # per-output-pixel bound: rows of the GEMM view are the receptive fields
        cols = F.unfold(x, kk, 1, p, s).transpose(1, 2).reshape(-1, c * kk * kk)
        bound = int8_ops.error_bound(cols, dense.reshape(o, -1))
        err = (y.double() - exact).permute(0, 2, 3, 1).reshape(-1, o).abs()
        assert bool((err <= bound).all())
    else:
        y = bf16_ops.bf16_conv2d(x, packed, cb.values.float(), 4, wshape, bias, s, p, backend="extension")
        mag = F.conv2d(x.double().abs(), dense.double().abs(), None, s, p)
        assert bool(((y.double() - exact).abs() <= mag * 2.0 ** -7 + bias.double().abs().view(1, -1, 1, 1) * 2.0 ** -8
                     + 1e-6).all())


@needs_ext
@pytest.mark.parametrize("geom", [(2, 64, 7, 6, 70, 3, 1, 1), (1, 3, 15, 15, 16, 7, 2, 3), (2, 5, 8, 8, 9, 1, 2, 0)])
def test_int8_conv_channels_last(level, geom, rng):
    """A channels_last input gives a channels_last output with the NCHW values, bit for bit, at every dispatch
    level (the NHWC kernel where AVX-512 VNNI runs it, else the NCHW path with the layout restored)."""
    b, c, h, w_, o, kk, s, p = geom
    cb = order0_codebook()
    iw = int8_ops.integer_weights(cb.values, c * kk * kk)
    packed = pack_codes(torch.randint(0, len(cb), (o, c * kk * kk), generator=rng), 4)
    x = torch.randn(b, c, h, w_, generator=rng)
    bias = torch.randn(o, generator=rng)
    args = (packed, iw.table, 4, (o, c, kk, kk), iw.step, bias, s, p)
    y = int8_ops.int8_conv2d(x, *args, backend="extension")
    y_cl = int8_ops.int8_conv2d(x.contiguous(memory_format=torch.channels_last), *args, backend="extension")
    assert y.is_contiguous() and y_cl.is_contiguous(memory_format=torch.channels_last) and not y_cl.is_contiguous()
    assert torch.equal(y, y_cl)
    assert torch.equal(y_cl, int8_ops.int8_conv2d(x, *args, backend="reference"))


@needs_ext
def test_bf16_conv_channels_last(level, rng):
    """The bf16 conv keeps a channels_last input's layout (oneDNN's channels_last conv), within the bf16 bound of
    the exact conv, like the NCHW result."""
    cb = order0_codebook()
    codes = torch.randint(0, len(cb), (24, 16 * 9), generator=rng)
    packed = pack_codes(codes, 4)
    x = torch.randn(2, 16, 9, 8, generator=rng)
    bias = torch.randn(24, generator=rng)
    dense = cb.values.float()[codes].reshape(24, 16, 3, 3)
    exact = F.conv2d(x.double(), dense.double(), bias.double(), 1, 1)
    mag = F.conv2d(x.double().abs(), dense.double().abs(), None, 1, 1)
    for xi in (x, x.contiguous(memory_format=torch.channels_last)):
        y = bf16_ops.bf16_conv2d(xi, packed, cb.values.float(), 4, (24, 16, 3, 3), bias, 1, 1, backend="extension")
        assert y.is_contiguous(memory_format=int8_ops.memory_format_of(xi))
        assert bool(((y.double() - exact).abs() <= mag * 2.0 ** -7 + bias.double().abs().view(1, -1, 1, 1) * 2.0 ** -8
                     + 1e-6).all())
    assert int8_ops.memory_format_of(x.contiguous(memory_format=torch.channels_last)) == torch.channels_last


@needs_ext
@pytest.mark.parametrize("cin,kernel", [(16, 3), (40, 3), (8, 5), (33, 1)])
@pytest.mark.parametrize("hwc", [False, True])
def test_bf16_conv_channels_last_weight_order(level, cin, kernel, hwc, rng):
    """A bf16 channels_last input with no bias, canonical codes (bf16_conv2d) or codes in (kh, kw, C) order
    (bf16_conv2d_hwc, whose decoded weight is channels_last as it is): oneDNN's output comes back as it is, equal
    bit for bit to torch's own bf16 channels_last conv of the same weight where the CPU has bf16 arithmetic (the
    hwc op refuses to run elsewhere, naming why)."""
    cb = order0_codebook()
    k = cin * kernel * kernel
    codes = torch.randint(0, len(cb), (24, k), generator=rng)
    shape = (24, cin, kernel, kernel)
    packed = pack_codes(bf16_ops.hwc_codes(codes, shape) if hwc else codes, 4)
    cl = torch.channels_last
    x = torch.randn(2, cin, 9, 8, generator=rng).bfloat16().contiguous(memory_format=cl)
    w = cb.values.float()[codes].reshape(shape).bfloat16().contiguous(memory_format=cl)
    expected = F.conv2d(x, w, None, 1, kernel // 2)
    op = torch.ops.wfn.bf16_conv2d_hwc if hwc else torch.ops.wfn.bf16_conv2d
    args = (x, packed, cb.values.float(), 4, list(shape), None, [1, 1], [kernel // 2] * 2, [1, 1], 1)
    native = not torch.ops.wfn_cpu.bf16_capability().startswith("fp32 kernels")
    if hwc and not native:
        with pytest.raises(RuntimeError, match="needs bf16 arithmetic"):
            op(*args)
        return
    y = op(*args)
    assert y.dtype == torch.bfloat16 and y.is_contiguous(memory_format=cl)
    if native:
        assert torch.equal(y, expected)
    else:
        mag = F.conv2d(x.double().abs(), w.double().abs(), None, 1, kernel // 2)
        assert bool(((y.double() - expected.double()).abs() <= mag * 2.0 ** -7 + 1e-6).all())
    # the reference kernel of each op decodes the same weight
    ref_op = bf16_ops.bf16_conv2d_hwc_reference if hwc else bf16_ops.bf16_conv2d_reference
    assert torch.equal(ref_op(*args), bf16_ops.bf16_conv2d_reference(x, pack_codes(codes, 4), *args[2:]))


@needs_ext
def test_bf16_module_relays_codes_for_channels_last(rng):
    """WFNConv2d in bf16 mode: a channels_last input re-lays the codes in (kh, kw, C) order (where the CPU has
    AVX512_BF16 and no AMX), an NCHW input puts them back; codes(), state_dict() and the float mode always see canonical
    codes, and model.bfloat16() leaves the codebook and bias in float32."""
    conv = nn.Conv2d(40, 24, 3, padding=1, bias=True)
    cb = order0_codebook()
    codes = torch.randint(0, len(cb), (24, 40 * 9), generator=rng)
    with torch.no_grad():
        conv.weight.copy_(cb.values.float()[codes].reshape(24, 40, 3, 3))
    net = nn.Sequential(conv)
    wk.convert(net, compute="bf16")
    net = net.bfloat16()
    layer = net[0]
    assert layer.codebook.dtype == torch.float32 and layer.bias.dtype == torch.float32
    canonical = layer.packed.clone()
    x = torch.randn(2, 40, 7, 6, generator=rng).bfloat16()
    with torch.no_grad():
        y_nchw = net(x)
        y_cl = net(x.contiguous(memory_format=torch.channels_last))
    relaid = torch.ops.wfn_cpu.bf16_capability() == "avx512_bf16" and not torch.ops.wfn_cpu.amx_capability()
    assert layer._hwc == relaid and ("layout=hwc" in repr(layer)) == relaid
    assert y_cl.is_contiguous(memory_format=torch.channels_last) and y_cl.dtype == torch.bfloat16
    assert torch.equal(layer.codes(), unpack_codes(canonical, 4, 40 * 9))
    assert torch.equal(layer.state_dict()["packed"], canonical)
    mag = F.conv2d(x.double().abs(), layer.dense_weight().double().abs(), None, 1, 1) + layer.bias.double().abs().view(
        1, -1, 1, 1)
    assert bool(((y_cl.double() - y_nchw.double()).abs() <= mag * 2.0 ** -7).all())
    with torch.no_grad():
        net(x)
    assert not layer._hwc and torch.equal(layer.packed, canonical)
    with torch.no_grad():
        net(x.contiguous(memory_format=torch.channels_last))
    layer.set_compute("float")
    assert not layer._hwc and torch.equal(layer.packed, canonical)
    xf = torch.randn(1, 40, 5, 5, generator=rng)
    with torch.no_grad():
        torch.testing.assert_close(net(xf), F.conv2d(xf, layer.dense_weight(), layer.bias, 1, 1), rtol=1e-5, atol=1e-5)


@needs_ext
def test_int8_conv_channels_last_opcheck(rng):
    """The op's fake kernel gives a channels_last input a channels_last output, as the CPU kernel does."""
    cb = order0_codebook()
    iw = int8_ops.integer_weights(cb.values, 8 * 9)
    packed = pack_codes(torch.randint(0, len(cb), (16, 72), generator=rng), 4)
    x = torch.randn(2, 8, 6, 6, generator=rng).contiguous(memory_format=torch.channels_last)
    torch.library.opcheck(torch.ops.wfn.int8_conv2d.default,
                          (x, packed, iw.table, 4, [16, 8, 3, 3], None, [1, 1], [1, 1], [1, 1], 1, iw.step))


# ---------------------------------------------------------------------------------------------- modules


@needs_ext
@pytest.mark.parametrize("mode", ["int8", "bf16"])
def test_net_runs_channels_last(mode, rng):
    """A converted convnet moved to channels_last (as PyTorch recommends for CPU convnets) keeps that layout
    through every int8 / bf16 conv and gives the NCHW model's logits (int8: the same integers and scales;
    bf16: oneDNN's channels_last conv sums in another order)."""
    cb = order0_codebook()
    g = torch.Generator().manual_seed(3)
    net = nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(3, 2, 1),
                        nn.Conv2d(64, 64, 3, 1, 1), nn.ReLU(), nn.Conv2d(64, 32, 1, 2), nn.AdaptiveAvgPool2d(1),
                        nn.Flatten(), nn.Linear(32, 10))
    with torch.no_grad():
        for mod in net.modules():
            if isinstance(mod, (nn.Linear, nn.Conv2d)):
                values = cb.values.float()
                mod.weight.copy_(values[torch.randint(0, values.numel(), mod.weight.shape, generator=g)])
    net.eval()
    wk.convert(net, compute=mode)
    x = torch.randn(2, 3, 32, 32, generator=rng)
    formats = []
    hooks = [m.register_forward_hook(lambda m, i, o: formats.append(o.is_contiguous(memory_format=torch.channels_last)))
             for m in net.modules() if type(m).__name__ == "WFNConv2d"]
    with torch.no_grad():
        ref = net(x)
        assert formats == [False] * 3
        formats.clear()
        net_cl = net.to(memory_format=torch.channels_last)
        y = net_cl(x.contiguous(memory_format=torch.channels_last))
    assert formats == [True] * 3
    for hk in hooks:
        hk.remove()
    # int8: the convs agree bit for bit; the channels_last average pool sums in another order
    tol = (1e-6 if mode == "int8" else 2e-2) * float(ref.abs().max())
    torch.testing.assert_close(y, ref, rtol=0, atol=tol)


def small_net(values, seed=0):
    g = torch.Generator().manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2, groups=2),
                        nn.Flatten(), nn.Linear(8 * 3 * 3, 10))
    with torch.no_grad():
        for mod in net.modules():
            if isinstance(mod, (nn.Linear, nn.Conv2d)):
                mod.weight.copy_(values[torch.randint(0, values.numel(), mod.weight.shape, generator=g)])
                mod.bias.copy_(torch.randn(mod.bias.shape, generator=g) / 4)
    return net.eval()


@pytest.mark.parametrize("mode", ["bf16", "int8"])
def test_convert_compute_mode_and_report(mode, rng):
    cb = order0_codebook()
    net = small_net(cb.values.float())
    x = torch.randn(2, 3, 8, 8, generator=rng)
    with torch.no_grad():
        expected = net(x)
    if mode == "int8":  # the grouped conv cannot run int8: strict (default) names it, strict=False reports it
        with pytest.raises(ValueError, match=r"^2: cannot use compute='int8': .*groups=1 only"):
            wk.convert(small_net(cb.values.float()), compute=mode)
        report = wk.convert(net, compute=mode, strict=False)
        entries = {c["name"]: c for c in report.converted}
        assert entries["2"]["compute"] == "float" and "groups=1 only" in entries["2"]["compute_note"]
        assert entries["0"]["compute"] == entries["4"]["compute"] == "int8"
        assert "2: Conv2d 4-bit, 15 values, compute float (stays float: int8 impossible" in report.summary()
    else:
        report = wk.convert(net, compute=mode)
        assert all(c["compute"] == "bf16" for c in report.converted)
    assert f"compute={mode}" in repr(net[0])
    with torch.no_grad():
        y = net(x)
    rel = float((y - expected).abs().max() / expected.abs().max())
    assert 0 < rel < (0.03 if mode == "bf16" else 0.1)


def test_set_compute_checks_every_layer_first(rng):
    cb = order0_codebook()
    net = small_net(cb.values.float())
    wk.convert(net)
    with pytest.raises(ValueError, match=r"^2: cannot use compute='int8'"):
        wk.set_compute(net, "int8")
    assert all(m.compute == "float" for _, m in wk.nn.wfn_modules(net))  # nothing changed
    refused = wk.set_compute(net, "int8", strict=False)
    assert [n for n, _ in refused] == ["2"] and net[2].compute == "float" and net[0].compute == "int8"
    with pytest.raises(ValueError, match="unknown compute mode 'fp8'"):
        wk.set_compute(net, "fp8")
    wk.set_compute(net, "float")
    assert net[0].compute == "float" and net[0].int_table is None


def test_mode_refusals_name_the_layer():
    lin = nn.Sequential(nn.Linear(4, 3))
    with torch.no_grad():
        lin[0].weight.copy_(torch.tensor([1.0 + 2.0 ** -9, 1.0, 0.5, 0.0]).repeat(3, 1))
    wk.convert(lin, codebook=Codebook.from_values([0.0, 0.5, 1.0, 1.0 + 2.0 ** -9], max_terms=2))
    with pytest.raises(ValueError, match=r"0: cannot use compute='bf16': codebook values \[1.001953125\] are not"):
        wk.set_compute(lin, "bf16")
    with pytest.raises(ValueError, match=r"WFNLinear\(4->3\): cannot use compute='bf16'"):
        lin[0].set_compute("bf16")
    with pytest.raises(ValueError, match="shift_add=True means compute='int8'"):
        wk.convert(nn.Sequential(nn.Linear(2, 2)), shift_add=True, compute="bf16")


def test_shift_add_flag_is_the_int8_mode(rng):
    cb = Codebook.from_values([-1.5, -0.25, 0.0, 0.125, 0.5, 1.5])  # not order-0: the int8 mode still holds it
    w = cb.values.float()[torch.randint(0, len(cb), (6, 20), generator=rng)]
    layer = wk.WFNLinear(pack_weight(w, cb), shift_add=True)
    assert layer.compute == "int8" and layer.shift_add
    layer.enable_shift_add(False)
    assert layer.compute == "float" and not layer.shift_add
    lin = nn.Sequential(nn.Linear(20, 6, bias=False))
    with torch.no_grad():
        lin[0].weight.copy_(w)
    report = wk.convert(lin, shift_add=True)
    assert report.converted[0]["compute"] == "int8" and lin[0].shift_add


@pytest.mark.parametrize("mode", ["float", "bf16", "int8"])
def test_modes_survive_save_and_load(mode, tmp_path, rng):
    cb = order0_codebook()
    net = small_net(cb.values.float())
    wk.convert(net, compute=mode, strict=False)
    path = tmp_path / "m.wfn.safetensors"
    wk.save_packed(net, path)
    loaded = wk.load_packed(path, small_net(cb.values.float(), seed=5))
    for (na, a), (nb, b) in zip(wk.nn.wfn_modules(net), wk.nn.wfn_modules(loaded), strict=True):
        assert na == nb and a.compute == b.compute
    x = torch.randn(1, 3, 8, 8, generator=rng)
    with torch.no_grad():
        assert torch.equal(net(x), loaded(x))


def test_modes_are_inference_only(rng):
    cb = order0_codebook()
    lin = nn.Sequential(nn.Linear(8, 4))
    with torch.no_grad():
        lin[0].weight.copy_(cb.values.float()[torch.randint(0, len(cb), (4, 8), generator=rng)])
    wk.convert(lin, compute="int8")
    with pytest.raises(RuntimeError, match="inference mode"):
        lin(torch.randn(2, 8, requires_grad=True))
    with torch.no_grad():
        assert lin(torch.randn(2, 8, requires_grad=True)).shape == (2, 4)


@needs_ext
@pytest.mark.parametrize("mode", ["bf16", "int8"])
def test_module_direct_call_equals_front_end(mode, rng):
    cb = order0_codebook()
    net = small_net(cb.values.float())
    wk.convert(net, compute=mode, strict=False)
    ref_net = small_net(cb.values.float())
    wk.convert(ref_net, compute=mode, strict=False, backend="reference")
    x = torch.randn(3, 3, 8, 8, generator=rng)
    with torch.no_grad():
        y, r = net(x), ref_net(x)
    if mode == "int8":
        assert torch.equal(y, r)
    else:
        # oneDNN's bf16 conv rounds each conv output to bf16 (the reference does not): 2**-8 per layer
        assert float((y - r).abs().max()) <= 2.0 ** -5 * float(r.abs().max())


@needs_ext
def test_avx2_int8_conv_setting_checks_its_mode():
    for bad in (-2, 3):
        with pytest.raises(RuntimeError, match="set_avx2_int8_conv: mode must be -1 \\(default\\), 0 \\(off\\), 1 "
                                               f"\\(on\\) or 2 \\(on, int16 kernel for every table\\), got {bad}"):
            torch.ops.wfn_cpu.set_avx2_int8_conv(bad)
    before = torch.ops.wfn_cpu.set_avx2_int8_conv(2)
    assert torch.ops.wfn_cpu.set_avx2_int8_conv(before) == 2


@needs_ext
def test_avx2_int16_gemm_setting_checks_its_mode():
    with pytest.raises(RuntimeError, match="set_avx2_int16_gemm: mode must be -1 \\(default\\), 0 \\(off\\) or 1 "
                                           "\\(on\\), got 2"):
        torch.ops.wfn_cpu.set_avx2_int16_gemm(2)
    before = torch.ops.wfn_cpu.set_avx2_int16_gemm(1)
    assert torch.ops.wfn_cpu.set_avx2_int16_gemm(before) == 1


@needs_ext
def test_fp32_int_gemm_setting_checks_its_mode():
    with pytest.raises(RuntimeError, match="mode must be -1 \\(default\\), 0 \\(off\\) or 1 \\(on\\), got 2"):
        torch.ops.wfn_cpu.set_fp32_int_gemm(2)
    before = torch.ops.wfn_cpu.set_fp32_int_gemm(1)
    try:
        assert torch.ops.wfn_cpu.fp32_int_gemm() is True
    finally:
        torch.ops.wfn_cpu.set_fp32_int_gemm(before)


@needs_ext
def test_report_says_when_the_cpu_lacks_int8_units():
    """The conversion report and available_backends() say when the int8 mode runs on the fp32 GEMM."""
    cb = order0_codebook()
    before = torch.ops.wfn_cpu.set_fp32_int_gemm(1)
    try:
        report = wk.convert(small_net(cb.values.float()), compute="int8", strict=False)
        note = "note: compute int8 on this CPU: this CPU has no int8 dot-product instructions (VNNI / AMX-INT8)"
        assert note in report.summary()
        assert "need int16 (values spanning more than 8 bits" in report.summary()  # the slow case named
        assert "int8 mode: this CPU has no int8 dot-product" in wk.available_backends()["extension"]["reason"]
        torch.ops.wfn_cpu.set_fp32_int_gemm(0)
        assert "compute int8 on this CPU" not in report.summary()
    finally:
        torch.ops.wfn_cpu.set_fp32_int_gemm(before)
