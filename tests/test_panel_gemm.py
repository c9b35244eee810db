"""The AVX-512 panel kernels (csrc/cpu/panel_gemm_avx512.cpp): the large-M int8 and bf16 products on CPUs
with VNNI / AVX512_BF16 and no AMX, weights decoded block by block into the dot-product instructions'
operand layout. Bit-exact (int8) or within the fp32-summation bound (bf16) against the reference, over
blockings that drive every branch: several K blocks with a partial last one, K not a multiple of the
dword, 4-bit panels packed both ways, weight-row blocks and panels with tails, several blocks per thread, activation-row tails (M % 8).

Runs where torch.ops.wfn_cpu.panel_capability() names the mode; elsewhere skipped with its reason.
"""
import pytest
import torch
import torch.nn.functional as F
from wfn_testutil import run_bench

from wfn_kernels import ops
from wfn_kernels.format.packing import pack_codes
from wfn_kernels.ops import bf16 as bf16_ops
from wfn_kernels.ops import int8 as int8_ops

pytestmark = pytest.mark.skipif(ops._C is None, reason="extension not built")


def _capability() -> str:
    return "" if ops._C is None else torch.ops.wfn_cpu.panel_capability()


def needs(mode: str):
    cap = _capability()
    return pytest.mark.skipif(mode not in cap.split(", "), reason=f"panel GEMM {mode} not used here: {cap}")


DEFAULT = (48, 1024)
BLOCKINGS = {"default": DEFAULT, "tiny": (48, 16), "mixed": (96, 32), "earlier default": (240, 256)}


@pytest.fixture(params=list(BLOCKINGS))
def blocking(request):
    """Panel blocking under test, and every M routed to the GEMM path with the panel kernel on."""
    prev = (torch.ops.wfn_cpu.set_int_gemm_min_m(0), torch.ops.wfn_cpu.set_bf16_gemm_min_m(0),
            torch.ops.wfn_cpu.set_panel_gemm(True))
    torch.ops.wfn_cpu.set_panel_blocking(*BLOCKINGS[request.param])
    yield request.param
    torch.ops.wfn_cpu.set_panel_blocking(*DEFAULT)
    torch.ops.wfn_cpu.set_int_gemm_min_m(prev[0])
    torch.ops.wfn_cpu.set_bf16_gemm_min_m(prev[1])
    torch.ops.wfn_cpu.set_panel_gemm(prev[2])


@pytest.fixture(params=["direct", "rows"])
def pack(request):
    """4-bit panels packed straight from the code bytes, or decoded by rows and transposed (2/8-bit codes
    always take the row decoders)."""
    prev = torch.ops.wfn_cpu.set_panel_direct_pack(request.param == "direct")
    yield request.param
    torch.ops.wfn_cpu.set_panel_direct_pack(prev)


SHAPES = [(1, 5, 37), (9, 130, 100), (17, 1101, 48), (8, 64, 1), (3, 1000, 97)]  # (M, K, N)


@needs("int8")
@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "m%d_k%d_n%d" % s)
def test_int8_panel_bit_exact(blocking, pack, bits, shape, rng):
    m, k, n = shape
    table = torch.randint(-128, 128, (1 << bits,), generator=rng).to(torch.int16)
    table[0], table[-1] = -128, 127
    codes = torch.randint(0, 1 << bits, (n, k), generator=rng)
    packed = pack_codes(codes, bits)
    xq = torch.randint(-127, 128, (m, k), generator=rng).to(torch.int8)
    xq[0, : min(k, 3)] = -127
    y = int8_ops.int_linear(xq, packed, table, bits, k, backend="extension")
    assert torch.equal(y, int8_ops.int_linear_reference(xq, packed, table, bits, k))
    assert torch.equal(y.long(), xq.long() @ table.long()[codes].t())
    x = torch.randn(m, k, generator=rng) * 4
    x[-1, 0] = float("nan")  # a non-finite row gives NaN outputs, the others are unaffected
    bias = torch.randn(n, generator=rng)
    got = int8_ops.int8_linear(x, packed, table, bits, 2.0 ** -5, bias, backend="extension")
    ref = int8_ops.int8_linear_reference(x, packed, table, bits, k, 2.0 ** -5, bias)
    assert torch.equal(got.isnan(), ref.isnan()) and bool(got[-1].isnan().all())
    assert torch.equal(torch.nan_to_num(got), torch.nan_to_num(ref))


@needs("int8")
def test_int8_panel_largest_products(blocking, pack, rng):
    """-127 activations against -128 weights over a long K: the int32 bound the front end allows."""
    k = 4097
    table = torch.full((16,), -128, dtype=torch.int16)
    table[3] = 127
    packed = pack_codes(torch.randint(0, 16, (50, k), generator=rng), 4)
    xq = torch.full((10, k), -127, dtype=torch.int8)
    y = int8_ops.int_linear(xq, packed, table, 4, k, backend="extension")
    assert torch.equal(y, int8_ops.int_linear_reference(xq, packed, table, 4, k))


def bf16_codebook(bits: int, gen) -> torch.Tensor:
    pool = torch.tensor(sorted({s * (1 + t / 8) * 2.0 ** e for e in range(-6, 2) for t in range(8)
                                for s in (1.0, -1.0)} | {0.0}))
    return torch.sort(pool[torch.randperm(pool.numel(), generator=gen)[: 1 << bits]]).values.float()


@needs("bf16")
@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "m%d_k%d_n%d" % s)
def test_bf16_panel_within_fp32_summation_bound(blocking, pack, bits, shape, rng):
    m, k, n = shape
    cb = bf16_codebook(bits, rng)
    codes = torch.randint(0, cb.numel(), (n, k), generator=rng)
    packed = pack_codes(codes, bits)
    x = torch.randn(m, k, generator=rng)
    y = bf16_ops.bf16_linear(x, packed, cb, bits, None, backend="extension")
    assert y.dtype == torch.float32 and y.shape == (m, n)
    xb, w = x.bfloat16().double(), cb[codes].double()
    exact = xb @ w.t()  # every product bf16 x bf16-exact weight is exact in fp32; only the sums round
    tol = (xb.abs() @ w.abs().t()) * k * 2.0 ** -23 + 1e-30
    assert bool(((y.double() - exact).abs() <= tol).all())
    # fp32 output: no bf16 rounding of the result (the oneDNN tile path's 2^-9), so far tighter than that
    rel = (y.double() - exact).abs() / (xb.abs() @ w.abs().t() + 1e-30)
    assert float(rel.max()) < 2.0 ** -16


@needs("bf16")
def test_bf16_panel_propagates_nan_and_inf(blocking, rng):
    cb = bf16_codebook(4, rng)
    k, n = 300, 50
    packed = pack_codes(torch.randint(0, cb.numel(), (n, k), generator=rng), 4)
    x = torch.randn(9, k, generator=rng)
    x[2, 7], x[5, 100] = float("nan"), float("inf")
    y = bf16_ops.bf16_linear(x, packed, cb, 4, None, backend="extension")
    ref = bf16_ops.bf16_linear_reference(x, packed, cb, 4, k, None)
    assert torch.equal(y.isnan(), ref.isnan())
    assert bool(y[[0, 1, 3, 4, 6, 7, 8]].isfinite().all())


def test_panel_switch_and_bad_blocking():
    cap = _capability()
    assert cap in ("int8, bf16", "int8", "bf16") or cap.startswith("off: ")
    prev = torch.ops.wfn_cpu.set_panel_gemm(False)
    try:
        assert torch.ops.wfn_cpu.panel_capability().startswith("off: turned off")
        assert torch.ops.wfn_cpu.panel_gemm_enabled() is False
    finally:
        torch.ops.wfn_cpu.set_panel_gemm(prev)
    with pytest.raises(RuntimeError, match="multiple of 48"):
        torch.ops.wfn_cpu.set_panel_blocking(50, 16)
    with pytest.raises(RuntimeError, match="multiple of 16"):
        torch.ops.wfn_cpu.set_panel_blocking(48, 20)
    assert torch.ops.wfn_cpu.set_panel_blocking(0, 0) == DEFAULT[0] * 100000 + DEFAULT[1]


@needs("int8")
def test_panel_and_onednn_tiles_agree_on_a_module(rng):
    """The same int8 module through the panel kernel and through the decode-tile + _int_mm path."""
    import wfn_kernels as wk
    lin = torch.nn.Linear(333, 70)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([-0.5, -0.25, 0.125, 0.25, 0.5, 1.0])[torch.randint(0, 6, (70, 333), generator=rng)])
    model = torch.nn.Sequential(lin)
    wk.convert(model, compute="int8")
    x = torch.randn(100, 333, generator=rng)
    with torch.no_grad():
        prev = torch.ops.wfn_cpu.set_panel_gemm(True)
        a = model(x)
        torch.ops.wfn_cpu.set_panel_gemm(False)
        b = model(x)
        torch.ops.wfn_cpu.set_panel_gemm(prev)
    assert torch.equal(a, b)


@pytest.mark.parametrize("argv, message", [
    (["--blocking", "50:16"], "NC must be a positive multiple of 48"),
    (["--blocking", "48"], "blocking must be NC:KDW"),
    (["--threads", "0"], "--threads, --ms and --repeats must be positive"),
    (["--ms", "0"], "--threads, --ms and --repeats must be positive"),
])
def test_panel_bench_names_bad_arguments(argv, message):
    """bench/panel_gemm.py checks its arguments before building anything (real subprocess)."""
    out = run_bench("panel_gemm.py", argv)
    assert out.returncode != 0 and message in out.stderr



# ------------------------------------------------------------------ fused int8 conv (conv_int8_avx512.cpp)

CONV_GEOMS = {  # (B, C, H, W, O, kh, kw, stride, padding, dilation)
    "3x3_multi_block": (2, 5, 13, 11, 9, 3, 3, (1, 1), (1, 1), (1, 1)),  # 143 pixels: 3 blocks, last 15 wide
    "k_not_quad_n_tail": (1, 3, 9, 9, 7, 3, 3, (1, 1), (0, 0), (1, 1)),  # K = 27, N = 7: 4 + 3 rows
    "stride2_dilation2": (3, 4, 17, 15, 6, 3, 3, (2, 2), (2, 1), (2, 2)),
    "stride_2x1_rect": (1, 6, 10, 70, 5, 1, 3, (2, 1), (0, 2), (1, 1)),  # output rows longer than a block
    "7x7_wide_k": (1, 40, 12, 12, 13, 7, 7, (2, 2), (3, 3), (1, 1)),  # K = 1960
    "1x1": (2, 64, 7, 7, 4, 1, 1, (1, 1), (0, 0), (1, 1)),
    "stride3_gather": (2, 2, 11, 20, 5, 2, 3, (1, 3), (1, 1), (1, 1)),  # neither the stride-1 nor -2 loads
    "1x1_stride2_wide": (2, 8, 9, 150, 6, 1, 1, (2, 2), (0, 0), (1, 1)),  # 75-pixel output rows
    "one_block_rows_split": (1, 16, 7, 7, 50, 3, 3, (1, 1), (1, 1), (1, 1)),  # one pixel block: rows in 2 parts
    # channels_last kernel branches: the vpermt2b tap transpose (C % 64 == 0) with a 20-channel tail group;
    # 2 channel groups (4 + 3 vectors); an RGB stem (one quantise + vpermb per row of taps, 6-channel last
    # group); C = 13 (padded to 16, taps one by one); a padded strided 1x1 (per-pixel amax); 9 pixels x 200
    # channels (one pixel block, channel groups split between threads)
    "c64_tap_transpose": (2, 64, 6, 5, 20, 3, 3, (1, 1), (1, 1), (1, 1)),
    "c128_two_groups": (1, 128, 5, 5, 100, 3, 3, (2, 2), (1, 1), (1, 1)),
    "rgb_stem_7x7": (2, 3, 20, 18, 70, 7, 7, (2, 2), (3, 3), (1, 1)),
    "c13_5x5_per_tap": (1, 13, 9, 9, 17, 5, 5, (1, 1), (2, 2), (1, 1)),
    "1x1_padded_stride2": (2, 16, 5, 6, 9, 1, 1, (2, 2), (1, 1), (1, 1)),
    "few_pixels_many_channels": (1, 32, 3, 3, 200, 3, 3, (1, 1), (1, 1), (1, 1)),
}


@pytest.fixture(params=[1, 2])
def threads(request):
    """1 thread (one part per pixel block) and 2 (few blocks: the weight rows split between tasks)."""
    prev = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(prev)


@pytest.fixture(params=["fused", "int_mm", "fused_channels_last", "int_mm_channels_last"])
def conv_path(request):
    """The fused kernel (NCHW, or NHWC for a channels_last input) and, with it off, the columns path (which
    takes a channels_last input through an NCHW copy and returns channels_last)."""
    prev = torch.ops.wfn_cpu.set_panel_gemm(request.param.startswith("fused"))
    yield request.param
    torch.ops.wfn_cpu.set_panel_gemm(prev)


@needs("int8")
@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("geom", list(CONV_GEOMS))
def test_int8_conv_bit_exact(conv_path, threads, geom, bits):
    """Every conv path (the fused VNNI kernels, NCHW and channels_last, and the quantised-columns + at::_int_mm
    one) against the reference, bit for bit, with a bias and without, an all-zero image, zero patches and a
    NaN / Inf pixel (NaN outputs wherever a receptive field holds it); the output's memory format is the
    input's."""
    b, c, h, w, o, kh, kw, stride, padding, dilation = CONV_GEOMS[geom]
    g = torch.Generator().manual_seed(hash(geom) % 1000 + bits)
    k = c * kh * kw
    table = torch.randint(-128, 128, (1 << bits,), generator=g).to(torch.int16)
    table[0], table[-1] = -128, 127
    packed = pack_codes(torch.randint(0, 1 << bits, (o, k), generator=g), bits)
    x = torch.randn(b, c, h, w, generator=g) * 3
    x[0, :, :2, :3] = 0.0
    if b > 1:
        x[1] = 0.0
        x[0, 0, h // 2, w // 2] = float("nan")
        x[0, c - 1, 1, w - 1] = float("inf")
    bias = torch.randn(o, generator=g)
    channels_last = conv_path.endswith("channels_last")
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    for bb in (None, bias):
        args = (x, packed, table, bits, (o, c, kh, kw), 2.0 ** -5, bb, stride, padding, dilation)
        y = int8_ops.int8_conv2d(*args, backend="extension")
        ref = int8_ops.int8_conv2d(*args, backend="reference")
        assert y.shape == ref.shape
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        assert y.is_contiguous(memory_format=fmt) and ref.is_contiguous(memory_format=fmt)
        torch.testing.assert_close(y, ref, rtol=0, atol=0, equal_nan=True)
        if b > 1:  # NaN exactly where a receptive field holds the NaN or the Inf
            bad = (~x[:1].isfinite()).any(1, keepdim=True).float()
            hit = F.conv2d(bad, torch.ones(1, 1, kh, kw), None, stride, padding, dilation)[0, 0] > 0
            assert bool(y[1].isfinite().all()) and torch.equal(y[0].isnan(), hit.expand_as(y[0]))


@pytest.mark.parametrize("argv, message", [
    (["--batch", "0"], "--batch, --threads and --repeats must be >= 1"),
    (["--repeats", "0"], "--batch, --threads and --repeats must be >= 1"),
    (["--layers", "layer9.conv"], "invalid choice: 'layer9.conv'"),
])
def test_conv_bench_names_bad_arguments(argv, message):
    """bench/conv_int8.py checks its arguments before building anything (real subprocess)."""
    out = run_bench("conv_int8.py", argv)
    assert out.returncode != 0 and message in out.stderr


@needs("int8")
def test_conv_bench_runs_one_layer(tmp_path):
    """bench/conv_int8.py end to end on the smallest layer, 1 repeat: a table row per contender, appended to --out."""
    out = tmp_path / "conv.md"
    proc = run_bench("conv_int8.py", ["--batch", "1", "--repeats", "1", "--layers", "layer4.0.downsample",
                                      "--out", str(out)])
    assert proc.returncode == 0, proc.stderr
    table = out.read_text()
    assert "| layer4.0.downsample |" in table and "| all convs (x count) |" in table
    row = next(line for line in table.splitlines() if line.startswith("| layer4.0.downsample |"))
    assert all(float(c) > 0 for c in row.strip("| ").split(" | ")[1:5])
