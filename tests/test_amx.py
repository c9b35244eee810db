"""The AMX tile path (csrc/cpu/amx_gemm.cpp): oneDNN's brgemm micro-kernel on weight tiles decoded from the
codes, for the float mode (x as three bf16 parts, exact products) and the bf16 mode, linear and conv.

Runs where oneDNN reports AMX-BF16 (the path's own capability check); elsewhere the module is skipped with
that reason. Every blocking branch is driven through torch.ops.wfn_cpu.set_amx_blocking: several weight
tiles per thread, K split into blocks (re-decoded per pixel chunk), several pixel chunks, sub-row calls,
column blocks with tails.
"""
import pytest
import torch
import torch.nn.functional as F
from wfn_testutil import run_bench

from wfn_kernels import ops
from wfn_kernels.format.packing import pack_codes
from wfn_kernels.ops import bf16 as bf16_ops

pytestmark = pytest.mark.skipif(ops._C is None, reason="extension not built")


def _amx_reason() -> str:
    return "" if ops._C is None or torch.ops.wfn_cpu.amx_capability() else torch.ops.wfn_cpu.amx_status()


needs_amx = pytest.mark.skipif(bool(_amx_reason()), reason=f"AMX path not usable here: {_amx_reason()}")

DEFAULT = (256, 1024, 64, 256, 1 << 20)
BLOCKINGS = {
    "default": DEFAULT,
    "small": (16, 64, 16, 16, 4096),       # many tiles, K blocks, chunks, sub-row calls, whole-K off
    "mixed": (48, 128, 32, 16, 20000),
}


@pytest.fixture(params=list(BLOCKINGS))
def blocking(request):
    torch.ops.wfn_cpu.set_amx_blocking(*BLOCKINGS[request.param])
    yield request.param
    torch.ops.wfn_cpu.set_amx_blocking(*DEFAULT)


@pytest.fixture
def amx_everywhere():
    """Every M and every conv takes the AMX path; afterwards the defaults come back."""
    p1 = torch.ops.wfn_cpu.set_amx_min_m(1, 0)
    p3 = torch.ops.wfn_cpu.set_amx_min_m(3, 0)
    pc = torch.ops.wfn_cpu.set_amx_conv_max_m(1 << 40)
    yield
    torch.ops.wfn_cpu.set_amx_min_m(1, p1)
    torch.ops.wfn_cpu.set_amx_min_m(3, p3)
    torch.ops.wfn_cpu.set_amx_conv_max_m(pc)


def pow2_codebook(bits: int, gen) -> torch.Tensor:
    """2^bits distinct signed sums of at most two powers of two (2^-12 .. 2^3): bf16-exact, as WFN fixes them."""
    cands = {0.0}
    for a in range(-12, 4):
        for sa in (1, -1):
            cands.add(sa * 2.0 ** a)
            for b in range(max(-12, a - 7), a):  # at most 8 significant bits
                for sb in (1, -1):
                    cands.add(sa * 2.0 ** a + sb * 2.0 ** b)
    cands = torch.tensor(sorted(cands))
    pick = torch.randperm(cands.numel(), generator=gen)[: 1 << bits]
    return cands[pick].sort().values.float()


def layer(n, k, bits, gen):
    cb = pow2_codebook(bits, gen)
    codes = torch.randint(0, cb.numel(), (n, k), generator=gen)
    return pack_codes(codes, bits), cb, cb[codes]


def fp32_bound(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Worst-case fp32-accumulation error of x @ w.T (exact products): (K + 2) * 2^-24 * sum |x| |w|."""
    mag = x.double().abs() @ w.double().abs().t()
    return (x.shape[-1] + 2) * 2.0 ** -24 * mag + 1e-30


@needs_amx
@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("m,k", [(1, 1), (5, 31), (17, 100), (33, 1100), (100, 129)])
def test_float_mode_linear_exact_products(amx_everywhere, blocking, bits, m, k, rng):
    n = 37
    packed, cb, w = layer(n, k, bits, rng)
    # activations over a wide dynamic range: all 24 bits of each matter
    x = torch.randn(m, k, generator=rng) * torch.exp2(torch.randint(-30, 30, (m, k), generator=rng).float())
    y = ops.codebook_linear(x, packed, cb, bits, in_features=k, backend="extension")
    ref = x.double() @ w.double().t()
    assert y.dtype == torch.float32 and y.shape == (m, n)
    assert ((y.double() - ref).abs() <= fp32_bound(x, w)).all()


@needs_amx
@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("m,k", [(3, 64), (16, 100), (40, 1100)])
def test_bf16_mode_linear_within_bound(amx_everywhere, blocking, bits, m, k, rng):
    n = 45
    packed, cb, w = layer(n, k, bits, rng)
    x = torch.randn(m, k, generator=rng)
    bias = torch.randn(n, generator=rng)
    y = bf16_ops.bf16_linear(x, packed, cb, bits, bias, in_features=k, backend="extension")
    exact = x.bfloat16().double() @ w.double().t() + bias.double()
    # x is rounded to bf16 exactly as the reference does; then only fp32 accumulation (no output rounding)
    bound = fp32_bound(x.bfloat16().float(), w) + 2.0 ** -24 * exact.abs()
    assert ((y.double() - exact).abs() <= bound).all()
    ref = bf16_ops.bf16_linear(x, packed, cb, bits, bias, in_features=k, backend="reference")
    assert ((y - ref).abs() <= bf16_ops.error_bound(x, w) + 1e-6).all()


@needs_amx
def test_non_finite_activations_propagate(amx_everywhere, rng):
    packed, cb, w = layer(20, 70, 4, rng)
    x = torch.randn(4, 70, generator=rng)
    x[1, 5] = float("nan")
    x[2, 9] = float("inf")
    y = ops.codebook_linear(x, packed, cb, 4, in_features=70, backend="extension")
    ref = x @ w.t()
    assert torch.isnan(y[1]).all()
    assert torch.equal(torch.isinf(y[2]), torch.isinf(ref[2])) and torch.equal(torch.isnan(y[2]), torch.isnan(ref[2]))
    assert torch.isfinite(y[[0, 3]]).all()


@needs_amx
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("stride,padding,dilation", [(1, 1, 1), (2, 0, 1), (1, 2, 2)])
@pytest.mark.parametrize("mode", ["float", "bf16"])
def test_conv2d(amx_everywhere, blocking, batch, stride, padding, dilation, mode, rng):
    cin, cout, ks = 6, 19, 3
    packed, cb, w = layer(cout, cin * ks * ks, 4, rng)
    w4 = w.reshape(cout, cin, ks, ks)
    bias = torch.randn(cout, generator=rng)
    x = torch.randn(batch, cin, 11, 9, generator=rng)
    args = (stride, padding, dilation)
    if mode == "float":
        y = ops.codebook_conv2d(x, packed, cb, 4, list(w4.shape), bias, *args, backend="extension")
        xs = x
    else:
        y = bf16_ops.bf16_conv2d(x, packed, cb, 4, list(w4.shape), bias, *args, backend="extension")
        xs = x.bfloat16().float()
    ref = F.conv2d(xs.double(), w4.double(), bias.double(), *args)
    mag = F.conv2d(xs.double().abs(), w4.double().abs(), None, *args)
    assert y.shape == ref.shape and y.dtype == torch.float32
    assert ((y.double() - ref).abs() <= (cin * ks * ks + 2) * 2.0 ** -24 * mag + 2.0 ** -24 * ref.abs() + 1e-30).all()


@needs_amx
def test_switch_off_gives_the_gemv_result(rng):
    packed, cb, w = layer(64, 300, 4, rng)
    x = torch.randn(80, 300, generator=rng)  # above the float mode's default AMX threshold (64)
    on = ops.codebook_linear(x, packed, cb, 4, in_features=300, backend="extension")
    previous = torch.ops.wfn_cpu.set_amx(0)
    try:
        assert not torch.ops.wfn_cpu.amx_capability()
        off = ops.codebook_linear(x, packed, cb, 4, in_features=300, backend="extension")
    finally:
        torch.ops.wfn_cpu.set_amx(previous)
    assert ((on.double() - off.double()).abs() <= 2 * fp32_bound(x, w)).all()


def test_bad_blocking_names_every_size():
    with pytest.raises(RuntimeError, match="rows=0 kblock=64 cols=16 subrows=16 chunk_bytes=4096"):
        torch.ops.wfn_cpu.set_amx_blocking(0, 64, 16, 16, 4096)


@needs_amx
def test_codebook_needing_more_than_bf16_takes_the_gemv(amx_everywhere, rng):
    """A value with more than 8 significant bits is not bf16-exact: the float mode must not round it."""
    cb = torch.tensor([-1.0, 0.0, 1.0 + 2.0 ** -10, 3.0])  # 1 + 2^-10 needs 11 bits
    codes = torch.randint(0, 4, (24, 50), generator=rng)
    x = torch.randn(40, 50, generator=rng)
    y = ops.codebook_linear(x, pack_codes(codes, 2), cb, 2, in_features=50, backend="extension")
    w = cb[codes]
    assert ((y.double() - x.double() @ w.double().t()).abs() <= fp32_bound(x, w)).all()


@needs_amx
@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("cin,ks,stride,padding", [(3, 7, 2, 3), (5, 3, 1, 1), (16, 1, 1, 0)])
def test_int8_conv_on_tiles_is_bit_exact(blocking, batch, cin, ks, stride, padding, rng):
    """The int8 conv's product on AMX-INT8 tiles gives the reference's bits (same quantisation, same rescale)."""
    from wfn_kernels.ops import int8 as int8_ops

    cout = 21
    table = torch.randint(-128, 128, (16,), generator=rng).to(torch.int16)
    table[0], table[-1] = -128, 127
    codes = torch.randint(0, 16, (cout, cin * ks * ks), generator=rng)
    packed = pack_codes(codes, 4)
    bias = torch.randn(cout, generator=rng)
    x = torch.randn(batch, cin, 13, 10, generator=rng)
    x[0, 0, 3, 4] = float("nan")  # the pixels whose receptive field holds it give NaN
    shape = [cout, cin, ks, ks]
    args = (shape, bias, [stride] * 2, [padding] * 2, [1, 1], 1, 2.0 ** -7)
    y = torch.ops.wfn.int8_conv2d(x, packed, table, 4, *args)
    ref = int8_ops.int8_conv2d_reference(x, packed, table, 4, *args)
    assert torch.equal(torch.isnan(y), torch.isnan(ref))
    assert torch.equal(torch.nan_to_num(y), torch.nan_to_num(ref))


def test_status_names_why_the_path_is_off():
    previous = torch.ops.wfn_cpu.set_amx(0)
    try:
        assert torch.ops.wfn_cpu.amx_status().startswith("off: ")
        assert not torch.ops.wfn_cpu.amx_capability()
    finally:
        torch.ops.wfn_cpu.set_amx(previous)


def test_private_api_switch_turns_the_path_off():
    """WFN_TORCH_INTERNALS=0 switches off every private-torch-API path, this C++ one included."""
    import subprocess
    import sys

    code = "import torch, wfn_kernels; print(torch.ops.wfn_cpu.amx_status())"
    env = {**__import__("os").environ, "WFN_TORCH_INTERNALS": "0"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "off: private torch APIs disabled by WFN_TORCH_INTERNALS=0"


@needs_amx
def test_activation_buffer_is_counted_apart_from_weight_workspaces(amx_everywhere, rng):
    packed, cb, _ = layer(64, 300, 4, rng)
    torch.ops.wfn_cpu.reset_workspaces()
    ops.codebook_linear(torch.randn(40, 300, generator=rng), packed, cb, 4, in_features=300, backend="extension")
    act, total = torch.ops.wfn_cpu.activation_workspace_bytes(), torch.ops.wfn_cpu.workspace_bytes()
    # 40 rows padded to 64 columns x 3 parts x 160 pairs (K = 300 padded to 320) x 4 bytes
    assert act == 64 * 3 * 160 * 4
    assert total > act  # the weight tile and output tile are weight-side workspaces


@pytest.mark.parametrize("argv,message", [
    (["--configs", "1,2,3"], "each config is rows,kblock,cols,subrows,chunk_bytes"),
    (["--configs", "256,1024,64,0,4096"], "each config is rows,kblock,cols,subrows,chunk_bytes"),
    (["--crossover", "4,x"], "comma-separated integers"),
    (["--m", "0"], "must be >= 1"),
])
def test_blocking_bench_names_bad_arguments(argv, message):
    out = run_bench("amx_blocking.py", argv)
    assert out.returncode != 0 and message in out.stderr


def test_threshold_setter_names_bad_splits():
    with pytest.raises(RuntimeError, match="splits must be 1 \\(bf16 mode\\) or 3 \\(float mode\\)"):
        torch.ops.wfn_cpu.set_amx_min_m(2, 16)
