"""C++ CPU kernels at every SIMD dispatch level against wfn_kernels.reference.

Levels are switched at run time with torch.ops.wfn_cpu.set_dispatch (the env var WFN_CPU_DISPATCH is
tested in a subprocess). Power-of-two (or quarter-integer) codebooks with small-integer activations make
every fp32 product and partial sum exact, so results must equal the reference bit for bit whatever the
summation order.
"""
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import wfn_kernels as wk
from wfn_kernels import ops
from wfn_kernels.ops import reference
from wfn_kernels.format.packing import pack_codes

pytestmark = pytest.mark.skipif(ops._C is None, reason=f"extension not built: {ops._C_REASON}")

LEVELS = ["scalar", "avx2", "avx512"]
ORDER = {name: i for i, name in enumerate(LEVELS)}


def hardware_level() -> str:
    return torch.ops.wfn_cpu.hardware_capability()


@pytest.fixture
def gemm_path():
    """Route every M >= 1 through the decode + GEMM path."""
    previous = torch.ops.wfn_cpu.set_gemm_min_m(1)
    yield
    torch.ops.wfn_cpu.set_gemm_min_m(previous)


@pytest.fixture(params=["default", "avx2-permute"])
def avx2_gemv(request, level):
    """The AVX2 GEMV's two decodes of 2/4-bit codes: the bf16-byte tables (the default for bf16-exact
    codebooks, which every power-of-two one is) and the permute + blend decode (any table; forced here)."""
    if request.param == "avx2-permute" and level != "avx2":
        pytest.skip("the permute decode is an AVX2-level choice")
    previous = torch.ops.wfn_cpu.set_avx2_bf16_gemv(0 if request.param == "avx2-permute" else -1)
    yield request.param
    torch.ops.wfn_cpu.set_avx2_bf16_gemv(previous)


def exact_codebook(bits: int, gen) -> torch.Tensor:
    """A codebook whose values times small integers sum exactly in fp32: powers of two for 2/4 bits,
    up to 256 distinct quarter-integers for 8 bits (so the 8-bit decode sees a full table)."""
    if bits == 8:
        pool = (torch.arange(256, dtype=torch.float32) - 128) / 4
        c = int(torch.randint(17, 257, (1,), generator=gen))
    else:
        pool = torch.tensor([0.0] + [s * 2.0 ** e for e in range(-4, 4) for s in (1.0, -1.0)])
        c = 1 << bits
    idx = torch.randperm(pool.numel(), generator=gen)[:c]
    return torch.sort(pool[idx]).values.float()


def make_linear(m, n, k, bits, dtype, gen):
    cb = exact_codebook(bits, gen)
    codes = torch.randint(0, cb.numel(), (n, k), generator=gen)
    x = torch.randint(-3, 4, (m, k), generator=gen).to(dtype)
    bias = torch.randint(-4, 5, (n,), generator=gen).float()
    return x, pack_codes(codes, bits), cb, bias


@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("m", [0, 1, 3, 16, 127])
@pytest.mark.parametrize("k", [1, 15, 33, 130, 1000])
def test_linear_exact_fp32(level, avx2_gemv, bits, m, k, rng):
    x, packed, cb, bias = make_linear(m, 7, k, bits, torch.float32, rng)
    y = wk.codebook_linear(x, packed, cb, bits, bias, in_features=k, backend="extension")
    assert y.shape == (m, 7) and y.dtype == torch.float32
    assert torch.equal(y, reference.codebook_linear(x, packed, cb, bits, k, bias))


@pytest.mark.parametrize("m", [1, 3, 16])
@pytest.mark.parametrize("k", [15, 130, 1000])
def test_linear_exact_8bit_full_mantissa(level, m, k, rng):
    """8-bit codebook values with non-zero low 16 bits (not bf16-exact): the AVX-512 kernel must use all
    four byte planes. Values j * 2**-16, |j| <= 1024: every sum of x * v is a multiple of 2**-16 below
    2**6, so fp32 stays exact."""
    j = torch.randperm(2048, generator=rng)[:256] - 1024
    cb = torch.sort(j.float() * 2.0 ** -16).values
    assert bool(((cb.view(torch.int32) & 0xFFFF) != 0).any())
    codes = torch.randint(0, 256, (9, k), generator=rng)
    packed = pack_codes(codes, 8)
    x = torch.randint(-3, 4, (m, k), generator=rng).float()
    y = wk.codebook_linear(x, packed, cb, 8, backend="extension")
    assert torch.equal(y, reference.codebook_linear(x, packed, cb, 8, k))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("m,k", [(1, 33), (5, 130), (16, 1000)])
def test_linear_exact_half_dtypes(level, avx2_gemv, dtype, bits, m, k, rng):
    x, packed, cb, bias = make_linear(m, 9, k, bits, dtype, rng)
    y = wk.codebook_linear(x, packed, cb, bits, bias, in_features=k, backend="extension")
    assert y.dtype == dtype
    assert torch.equal(y, reference.codebook_linear(x, packed, cb, bits, k, bias))


@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("m,k", [(1, 15), (3, 130), (16, 1000), (127, 33), (5, 4099)])
def test_gemm_path_exact(level, gemm_path, bits, m, k, rng):
    x, packed, cb, bias = make_linear(m, 37, k, bits, torch.float32, rng)
    y = wk.codebook_linear(x, packed, cb, bits, bias, in_features=k, backend="extension")
    assert torch.equal(y, reference.codebook_linear(x, packed, cb, bits, k, bias))


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_many_rows_and_row_tails(level, avx2_gemv, bits, rng):
    """N not a multiple of the 4-row tile, several 128 KB row chunks, K with a partial SIMD block."""
    x, packed, cb, bias = make_linear(6, 1023, 517, bits, torch.float32, rng)
    y = wk.codebook_linear(x, packed, cb, bits, bias, in_features=517, backend="extension")
    assert torch.equal(y, reference.codebook_linear(x, packed, cb, bits, 517, bias))


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_random_floats_close(level, avx2_gemv, bits, rng):
    c = {2: 4, 4: 16, 8: 256}[bits]
    cb = torch.sort(torch.randn(c, generator=rng)).values
    codes = torch.randint(0, c, (33, 700), generator=rng)
    x = torch.randn(5, 700, generator=rng)
    y = wk.codebook_linear(x, pack_codes(codes, bits), cb, bits, backend="extension")
    torch.testing.assert_close(y, x @ cb[codes].t(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("bits", [2, 4])
@pytest.mark.parametrize("m", [1, 3, 5])
def test_linear_exact_table_not_bf16(level, bits, m, rng):
    """A 2/4-bit codebook with one value that is not bf16-exact (low 16 bits set) cannot take the AVX2
    bf16-byte decode: the result is still exact (multiples of 2**-10 below 2**13: 23 bits)."""
    j = torch.randperm(128, generator=rng)[: 1 << bits] - 64
    cb = torch.sort(j.float() * 2.0 ** -4).values
    cb[0] = -4.0 - 2.0 ** -10  # 13 significant bits
    assert bool(((cb.view(torch.int32) & 0xFFFF) != 0).any())
    codes = torch.randint(0, cb.numel(), (9, 517), generator=rng)
    x = torch.randint(-3, 4, (m, 517), generator=rng).float()
    packed = pack_codes(codes, bits)
    y = wk.codebook_linear(x, packed, cb, bits, in_features=517, backend="extension")
    assert torch.equal(y, reference.codebook_linear(x, packed, cb, bits, 517))


def test_set_avx2_bf16_gemv_rejects_unknown_mode():
    with pytest.raises(RuntimeError, match=r"set_avx2_bf16_gemv: mode must be -1 \(default\), 0 \(off\) or 1 "
                                           r"\(on\), got 2"):
        torch.ops.wfn_cpu.set_avx2_bf16_gemv(2)


def test_decoded_weight_matches_reference_every_width(level, avx2_gemv, rng):
    for bits in (2, 4, 8):
        for k in (1, 15, 16, 17, 64, 130):
            cb = exact_codebook(bits, rng)
            codes = torch.randint(0, cb.numel(), (5, k), generator=rng)
            packed = pack_codes(codes, bits)
            eye = torch.eye(k)  # x = I turns the op into a decode: y = W.T exactly
            y = wk.codebook_linear(eye, packed, cb, bits, in_features=k, backend="extension")
            assert torch.equal(y.t(), cb[codes]), (bits, k)


@pytest.fixture(params=["decode+conv", "im2col+fused"])
def conv_path(request):
    """Force each conv2d path: decoded weight + at::conv2d, or im2col + the fused kernel (groups == 1)."""
    previous = torch.ops.wfn_cpu.set_conv_fused_max_m(0 if request.param == "decode+conv" else 1 << 30)
    yield request.param
    torch.ops.wfn_cpu.set_conv_fused_max_m(previous)


@pytest.mark.parametrize("stride,padding,dilation,groups", [(1, 0, 1, 1), (2, 1, 1, 1), (1, 2, 2, 1),
                                                            (1, 1, 1, 4), (2, 0, 1, 2)])
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("bits", [2, 4, 8])
def test_conv2d_exact(level, conv_path, stride, padding, dilation, groups, batch, bits, rng):
    wshape = (12, 8 // groups, 3, 3)
    cb = exact_codebook(bits, rng)
    codes = torch.randint(0, cb.numel(), (12, wshape[1] * 9), generator=rng)
    packed = pack_codes(codes, bits)
    x = torch.randint(-2, 3, (batch, 8, 9, 10), generator=rng).float()
    bias = torch.randint(-3, 4, (12,), generator=rng).float()
    args = (stride, padding, dilation, groups)
    y = wk.codebook_conv2d(x, packed, cb, bits, wshape, bias, *args, backend="extension")
    expected = F.conv2d(x, cb[codes].reshape(wshape), bias, *args)
    assert torch.equal(y, expected)
    ref = reference.codebook_conv2d(x, packed, cb, bits, wshape, bias, (stride,) * 2, (padding,) * 2,
                                    (dilation,) * 2, groups)
    assert torch.equal(y, ref)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_conv2d_half_dtype(level, conv_path, dtype, rng):
    wshape = (6, 4, 1, 1)
    cb = exact_codebook(4, rng)
    codes = torch.randint(0, cb.numel(), (6, 4), generator=rng)
    packed = pack_codes(codes, 4)
    x = torch.randint(-2, 3, (2, 4, 5, 5), generator=rng).to(dtype)
    y = wk.codebook_conv2d(x, packed, cb, 4, wshape, backend="extension")
    assert y.dtype == dtype
    assert torch.equal(y, reference.codebook_conv2d(x, packed, cb, 4, wshape))


def test_conv2d_default_path_choice_is_exact(level, rng):
    """A deep-layer shape (few pixels, K >= 1024: fused by default) and a shallow one (decode + conv)."""
    for wshape, hw in (((16, 128, 3, 3), 4), ((8, 4, 3, 3), 12)):
        cb = exact_codebook(4, rng)
        codes = torch.randint(0, cb.numel(), (wshape[0], wshape[1] * 9), generator=rng)
        x = torch.randint(-2, 3, (1, wshape[1], hw, hw), generator=rng).float()
        y = wk.codebook_conv2d(x, pack_codes(codes, 4), cb, 4, wshape, None, 1, 1, backend="extension")
        assert torch.equal(y, F.conv2d(x, cb[codes].reshape(wshape), None, 1, 1))


@pytest.mark.parametrize("channels_last", [False, True])
def test_conv2d_output_channel_blocks(channels_last):
    """A weight above WFN_CONV_TILE_BYTES is decoded and convolved in output-channel blocks (here 32 + 8 of
    40, uneven on purpose): the same bits as F.conv2d on the whole weight, the output in the input's memory
    format, and the fp32 workspace holding one block rather than the layer."""
    code = ("import torch, torch.nn.functional as F, wfn_kernels as wk; from wfn_kernels.format.packing import pack_codes;"
            "torch.ops.wfn_cpu.set_conv_fused_max_m(0); g = torch.Generator().manual_seed(0);"
            "cb = torch.tensor(sorted([0.] + [s * 2. ** e for e in range(-4, 3) for s in (1., -1.)] + [8.]));"
            "codes = torch.randint(0, 16, (40, 8 * 9), generator=g);"
            "x = torch.randint(-2, 3, (3, 8, 9, 10), generator=g).float();"
            f"x = x.contiguous(memory_format=torch.channels_last) if {channels_last} else x;"
            "b = torch.randint(-3, 4, (40,), generator=g).float(); torch.ops.wfn_cpu.reset_workspaces();"
            "y = wk.codebook_conv2d(x, pack_codes(codes, 4), cb, 4, (40, 8, 3, 3), b, 2, 1, backend='extension');"
            "e = F.conv2d(x, cb[codes].reshape(40, 8, 3, 3), b, 2, 1);"
            "print(torch.equal(y, e), y.is_contiguous(memory_format=torch.channels_last) == {0},"
            " torch.ops.wfn_cpu.workspace_bytes())".replace("{0}", str(channels_last)))
    env = dict(os.environ, WFN_CONV_TILE_BYTES="8192")  # whole weight: 40 x 72 floats = 11520 bytes
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    same, fmt_kept, ws = out.stdout.split()
    assert same == "True" and fmt_kept == "True"
    assert 32 * 72 * 4 <= int(ws) < 40 * 72 * 4, ws  # one 32-channel block, not the layer


def test_two_threads_match_one(level, avx2_gemv, rng):
    """The work-claiming parallel GEMV gives the same bits as the single-threaded run."""
    x, packed, cb, bias = make_linear(2, 2051, 300, 4, torch.float32, rng)
    x = torch.randn(2, 300, generator=rng)
    y1 = wk.codebook_linear(x, packed, cb, 4, bias, backend="extension")
    torch.set_num_threads(2)
    try:
        y2 = wk.codebook_linear(x, packed, cb, 4, bias, backend="extension")
    finally:
        torch.set_num_threads(1)
    assert torch.equal(y1, y2)


def test_launch_parallel_mode_matches_reference():
    """WFN_CPU_PARALLEL=launch (inter-op helpers instead of OpenMP) gives the reference's result."""
    code = ("import torch, wfn_kernels as wk; from wfn_kernels.ops import reference as r;"
            "from wfn_kernels.format.packing import pack_codes; torch.set_num_threads(2);"
            "g = torch.Generator().manual_seed(0); cb = torch.tensor([-2., -.5, 0., .25, 1., 4.]);"
            "codes = torch.randint(0, 6, (2053, 300), generator=g); p = pack_codes(codes, 4);"
            "x = torch.randint(-3, 4, (3, 300), generator=g).float();"
            "y = wk.codebook_linear(x, p, cb, 4, backend='extension');"
            "w = torch.randint(0, 6, (64, 8 * 9), generator=g); xc = torch.randint(-2, 3, (2, 8, 9, 9), generator=g).float();"
            "yc = wk.codebook_conv2d(xc, pack_codes(w, 4), cb, 4, (64, 8, 3, 3), None, 1, 1, backend='extension');"
            "print(torch.equal(y, r.codebook_linear(x, p, cb, 4, 300)),"
            " torch.equal(yc, r.codebook_conv2d(xc, pack_codes(w, 4), cb, 4, (64, 8, 3, 3), None, (1, 1), (1, 1))))")
    env = dict(os.environ, WFN_CPU_PARALLEL="launch")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "True"]


def test_capability_reports_hardware_by_default():
    code = "import wfn_kernels.ops as o, torch; print(o._C.cpu_capability(), torch.ops.wfn_cpu.hardware_capability())"
    env = {k: v for k, v in os.environ.items() if k != "WFN_CPU_DISPATCH"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    used, hw = out.stdout.split()
    assert used == hw and hw in LEVELS


@pytest.mark.parametrize("name", LEVELS)
def test_env_var_forces_level(name):
    if ORDER[name] > ORDER[hardware_level()]:
        pytest.skip(f"CPU lacks {name}")
    code = ("import torch, wfn_kernels as wk; from wfn_kernels.format.packing import pack_codes;"
            "cb = torch.tensor([-1., 0., .5, 2.]);"
            "y = wk.codebook_linear(torch.ones(1, 3), pack_codes(torch.tensor([[0, 1, 3]]), 2), cb, 2,"
            " in_features=3, backend='extension');"
            "print(wk.ops._C.cpu_capability(), y.item())")
    env = dict(os.environ, WFN_CPU_DISPATCH=name)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == [name, "1.0"]


def test_env_var_rejects_unknown_level():
    code = "import wfn_kernels.ops as o; o._C.cpu_capability()"
    env = dict(os.environ, WFN_CPU_DISPATCH="avx9000")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode != 0
    assert "WFN_CPU_DISPATCH must be one of scalar, avx2, avx512; got 'avx9000'" in out.stderr


def test_set_dispatch_rejects_unknown_and_unsupported_level():
    with pytest.raises(RuntimeError, match="set_dispatch level must be one of scalar, avx2, avx512"):
        torch.ops.wfn_cpu.set_dispatch("sse")
    if hardware_level() != "avx512":
        with pytest.raises(RuntimeError, match="this CPU supports at most"):
            torch.ops.wfn_cpu.set_dispatch("avx512")


def test_cpp_entry_checks_name_the_argument():
    """Direct op calls (bypassing the Python front end) still reject bad arguments by name."""
    x = torch.ones(1, 4)
    cb = torch.tensor([0.0, 1.0])
    with pytest.raises(RuntimeError, match="bits must be one of"):
        torch.ops.wfn.codebook_linear(x, torch.zeros(1, 2, dtype=torch.uint8), cb, 3, 4, None)
    with pytest.raises(RuntimeError, match="packed codes have 3 bytes per row, expected 2"):
        torch.ops.wfn.codebook_linear(x, torch.zeros(1, 3, dtype=torch.uint8), cb, 4, 4, None)
    with pytest.raises(RuntimeError, match="codebook must be a 1-D float32 tensor"):
        torch.ops.wfn.codebook_linear(x, torch.zeros(1, 2, dtype=torch.uint8), cb.double(), 4, 4, None)


def test_set_gemv_prefetch_rejects_out_of_range_and_restores():
    previous = torch.ops.wfn_cpu.set_gemv_prefetch(8, 1, 2)
    try:
        assert torch.ops.wfn_cpu.set_gemv_prefetch(4, 2, 1) == [8, 1, 2]
        for args, what in [((65, 1, 1), "near"), ((4, 9, 1), "tiles"), ((4, 1, 4), "hint"), ((-1, 1, 1), "near")]:
            with pytest.raises(RuntimeError, match=f"set_gemv_prefetch: {what} "):
                torch.ops.wfn_cpu.set_gemv_prefetch(*args)
        assert torch.ops.wfn_cpu.set_gemv_prefetch(8, 1, 2) == [4, 2, 1]  # a refused call changes nothing
    finally:
        torch.ops.wfn_cpu.set_gemv_prefetch(*previous)


@pytest.mark.skipif(ops._C is None or hardware_level() != "avx512",
                    reason="the prefetch settings apply to the AVX-512 GEMVs")
@pytest.mark.parametrize("compute", ["float", "int8", "bf16"])
def test_gemv_prefetch_settings_leave_results_unchanged(compute, rng):
    """Every prefetch setting (none, far ahead, each hint) gives the same M=1 output: 37 rows (8-row tiles and
    a tail), K not a multiple of the 64-byte block; the float mode also equals the exact product."""
    cb = exact_codebook(4, rng)
    w = cb[torch.randint(0, 16, (37, 1000), generator=rng)]
    lin = torch.nn.Linear(1000, 37, bias=False)
    with torch.no_grad():
        lin.weight.copy_(w)
    model = torch.nn.Sequential(lin)
    wk.convert(model, compute=compute)
    x = torch.randint(-3, 4, (1, 1000), generator=rng).float()
    previous = torch.ops.wfn_cpu.capability()
    torch.ops.wfn_cpu.set_dispatch("avx512")
    pf = torch.ops.wfn_cpu.set_gemv_prefetch(8, 1, 2)
    try:
        with torch.no_grad():
            want = model(x)
            for setting in [(0, 0, 0), (4, 2, 1), (64, 8, 3), (1, 3, 0)]:
                torch.ops.wfn_cpu.set_gemv_prefetch(*setting)
                assert torch.equal(model(x), want), setting
    finally:
        torch.ops.wfn_cpu.set_gemv_prefetch(*pf)
        torch.ops.wfn_cpu.set_dispatch(previous)
    if compute == "float":
        assert torch.equal(want, x @ w.T)


@pytest.mark.parametrize("n", [0, 7, 8, 33, 1000, 4099])
def test_stream_read_reads_every_byte(n, rng):
    """The benchmarks' streaming reference folds every byte in: the XOR of its result's 8 bytes is the XOR of
    all the tensor's bytes (lengths that are not whole words included)."""
    t = torch.randint(0, 256, (n,), generator=rng, dtype=torch.uint8)
    got = torch.ops.wfn_cpu.stream_read(t) & (2**64 - 1)
    folded = 0
    for i in range(8):
        folded ^= (got >> (8 * i)) & 0xFF
    want = 0
    for b in t.tolist():
        want ^= b
    assert folded == want
    with pytest.raises(RuntimeError, match="stream_read: needs a contiguous CPU tensor"):
        torch.ops.wfn_cpu.stream_read(torch.zeros(4, 4).t())
