"""wfn::codebook_linear_triton against the reference: shapes, dtypes, widths, paths, registration, bad input.

On CPU these run in Triton's interpreter (conftest.py); on a GPU, natively. Shapes are small on purpose:
an interpreted launch costs ~0.05-0.5 s.
"""

import pytest
import torch
from triton_cases import exact_case, pow2_codebook, triton_device

import wfn_kernels as wk
from wfn_kernels.ops import reference
from wfn_kernels.format.packing import pack_codes

@pytest.fixture(scope="module")
def dev():
    return triton_device()


@pytest.fixture(scope="module")
def wt(dev):
    import wfn_kernels.ops.triton as wt

    return wt


DTYPES = [torch.float32, torch.bfloat16, torch.float16]


@pytest.mark.parametrize("dtype", DTYPES, ids=["fp32", "bf16", "fp16"])
@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("k", [1, 67, 130])
@pytest.mark.parametrize("m", [0, 1, 3, 16, 127])
def test_front_end_bit_exact(dev, m, k, bits, dtype):
    """Exactly summable cases: the Triton backend equals the reference bit for bit (both paths)."""
    gen = torch.Generator().manual_seed(1000 * m + 10 * k + bits)
    x, packed, cb, bias, codes = exact_case(m, 7, k, bits, dtype, gen, device=dev)
    y = wk.codebook_linear(x, packed, cb, bits, bias, in_features=k, backend="triton")
    expected = reference.codebook_linear(x, packed, cb, bits, k, bias)
    assert y.shape == (m, 7) and y.dtype == dtype and y.device.type == dev
    assert torch.equal(y, expected)
    if dtype == torch.float32:  # and the reference itself is the plain product
        assert torch.equal(y.cpu(), x.cpu() @ cb.cpu()[codes].t() + bias.cpu())


@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("m", [1, 4, 5, 33])
def test_no_bias_odd_n_and_partial_codebook(dev, wt, m, bits):
    gen = torch.Generator().manual_seed(7 + m + bits)
    x, packed, cb, _, _ = exact_case(m, 31, 45, bits, torch.float32, gen, entries=3, device=dev)
    y = torch.ops.wfn.codebook_linear_triton(x, packed, cb, bits, 45)
    assert torch.equal(y, reference.codebook_linear(x, packed, cb, bits, 45))


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2), (torch.float16, 2e-3)],
                         ids=["fp32", "bf16", "fp16"])
@pytest.mark.parametrize("m", [1, 20])
def test_random_floats_close(dev, m, dtype, tol):
    """Arbitrary activations and codebook values: float32 accumulation, so close to the reference."""
    gen = torch.Generator().manual_seed(m)
    cb = torch.sort(torch.randn(16, generator=gen)).values
    codes = torch.randint(0, 16, (29, 300), generator=gen)
    x = torch.randn(m, 300, generator=gen).to(dtype)
    bias = torch.randn(29, generator=gen)
    args = (x.to(dev), pack_codes(codes, 4).to(dev), cb.to(dev), 4)
    y = wk.codebook_linear(*args, bias.to(dev), backend="triton")
    expected = reference.codebook_linear(*args, 300, bias.to(dev))
    torch.testing.assert_close(y.float(), expected.float(), rtol=tol, atol=tol * 10)


SPLIT_CONFIGS = [  # (path, M, block_m, block_n, block_kb, split_k)
    ("gemv", 1, 1, 16, 16, 3), ("gemv", 3, 4, 16, 32, 2), ("gemv", 2, 2, 32, 16, 1),
    ("gemm", 19, 16, 16, 16, 3), ("gemm", 5, 32, 32, 32, 2), ("gemm", 40, 16, 32, 64, 1),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("cfg", SPLIT_CONFIGS, ids=lambda c: "-".join(map(str, c)))
@pytest.mark.parametrize("k", [512, 523])  # 4-bit rows of 256 bytes (whole tiles) and 262 bytes (ragged)
def test_forced_configs_split_k(dev, wt, cfg, k, dtype):
    """Multi-tile K loops, ragged last tile, split-K with atomics, both kernels: still bit exact."""
    path, m, bm, bn, bkb, split = cfg
    gen = torch.Generator().manual_seed(k + split)
    x, packed, cb, bias, _ = exact_case(m, 37, k, 4, dtype, gen, device=dev)
    config = wt.LaunchConfig(path, bm, bn, bkb, split_k=split)
    y = wt.codebook_linear_triton_launch(x, packed, cb, 4, k, bias, config=config)
    assert y.dtype == dtype
    assert torch.equal(y, reference.codebook_linear(x, packed, cb, 4, k, bias))


def test_strided_activations(dev, wt):
    """x need not be contiguous: the kernels take its strides."""
    gen = torch.Generator().manual_seed(3)
    x, packed, cb, bias, _ = exact_case(6, 9, 40, 2, torch.float32, gen, device=dev)
    wide = torch.zeros(40, 12, device=dev)
    wide[:, ::2] = x.t()
    xt = wide[:, ::2].t()  # (6, 40) view with strides (2, 12)
    assert not xt.is_contiguous()
    for m_rows in (slice(0, 3), slice(0, 6)):  # gemv and gemm paths
        y = torch.ops.wfn.codebook_linear_triton(xt[m_rows], packed, cb, 2, 40, bias)
        assert torch.equal(y, reference.codebook_linear(x[m_rows], packed, cb, 2, 40, bias))


def test_empty_dimensions(dev):
    gen = torch.Generator().manual_seed(5)
    x, packed, cb, bias, _ = exact_case(0, 5, 9, 4, torch.float16, gen, device=dev)
    y = torch.ops.wfn.codebook_linear_triton(x, packed, cb, 4, 9, bias)
    assert y.shape == (0, 5) and y.dtype == torch.float16
    x0 = torch.zeros(3, 0, device=dev)
    y = torch.ops.wfn.codebook_linear_triton(x0, torch.zeros(5, 0, dtype=torch.uint8, device=dev), cb, 4, 0, bias)
    assert torch.equal(y, bias.expand(3, 5))


def test_codes_past_codebook_read_zero(dev, wt):
    """With validation off the kernel must not read past the table: such codes contribute 0."""
    codes = torch.tensor([[0, 1, 2, 3, 3], [3, 2, 1, 0, 1]])
    cb = torch.tensor([1.0, 2.0])
    x = torch.ones(1, 5, device=dev)
    y = torch.ops.wfn.codebook_linear_triton(x, pack_codes(codes, 2).to(dev), cb.to(dev), 2, 5)
    assert y.cpu().tolist() == [[1 + 2 + 0 + 0 + 0, 0 + 0 + 2 + 1 + 2]]


def test_autograd_matches_reference(dev):
    gen = torch.Generator().manual_seed(11)
    x, packed, cb, bias, _ = exact_case(3, 7, 20, 4, torch.float32, gen, device=dev)
    grads = []
    for backend in ("triton", "reference"):
        xr, br = x.clone().requires_grad_(), bias.clone().requires_grad_()
        y = wk.codebook_linear(xr, packed, cb, 4, br, backend=backend)
        (y * torch.arange(7.0, device=dev)).sum().backward()
        grads.append((xr.grad, br.grad))
    assert torch.equal(grads[0][0], grads[1][0]) and torch.equal(grads[0][1], grads[1][1])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("with_bias", [False, True])
def test_opcheck(dev, wt, dtype, with_bias):
    gen = torch.Generator().manual_seed(2)
    x, packed, cb, bias, _ = exact_case(2, 5, 13, 4, dtype, gen, device=dev)
    x.requires_grad_(dtype == torch.float32)
    b = bias.requires_grad_() if with_bias else None
    torch.library.opcheck(torch.ops.wfn.codebook_linear_triton.default, (x, packed, cb, 4, 13, b))


def test_torch_compile_fullgraph(dev, wt):
    gen = torch.Generator().manual_seed(4)
    x, packed, cb, bias, _ = exact_case(3, 5, 21, 4, torch.float32, gen, device=dev)

    def f(x):
        return torch.relu(torch.ops.wfn.codebook_linear_triton(x * 2, packed, cb, 4, 21, bias)) - 1

    torch._dynamo.reset()
    compiled = torch.compile(f, fullgraph=True)
    assert torch.equal(compiled(x), f(x))


def _bad_cases():
    gen = torch.Generator().manual_seed(0)
    cb = pow2_codebook(4, gen)
    x = torch.ones(2, 11)
    packed = pack_codes(torch.zeros(3, 11, dtype=torch.int64), 4)
    return (x, packed, cb), [
        ("x dtype", dict(x=x.int()), TypeError),
        ("x not a tensor", dict(x=[[1.0] * 11]), TypeError),
        ("K mismatch", dict(x=torch.ones(2, 12), in_features=11), ValueError),
        ("device", dict(codebook=cb.to("meta")), ValueError),
        ("packed width", dict(packed=packed[:, :5]), ValueError),
        ("packed dtype", dict(packed=packed.int()), ValueError),
        ("codebook dtype", dict(codebook=cb.double()), ValueError),
        ("codebook too long", dict(codebook=torch.arange(17.0)), ValueError),
        ("codebook unsorted", dict(codebook=cb.flip(0)), ValueError),
        ("codebook nan", dict(codebook=torch.tensor([0.0, float("nan")])), ValueError),
        ("bits", dict(bits=3), ValueError),
        ("code out of range", dict(packed=pack_codes(torch.full((3, 11), 9), 4)), ValueError),
        ("bias length", dict(bias=torch.zeros(4)), ValueError),
    ]


@pytest.mark.parametrize("case", range(len(_bad_cases()[1])), ids=[c[0] for c in _bad_cases()[1]])
def test_bad_input_same_message_as_reference(dev, case):
    (x, packed, cb), cases = _bad_cases()
    _, override, exc = cases[case]
    messages = []
    for backend in ("reference", "triton"):
        kwargs = dict(x=x, packed=packed, codebook=cb, bits=4, bias=None, backend=backend)
        kwargs.update(override)
        with pytest.raises(exc) as info:
            wk.codebook_linear(**kwargs)
        messages.append(str(info.value))
    assert messages[0] == messages[1]


def test_op_called_directly_checks_shapes(dev, wt):
    packed = pack_codes(torch.zeros(3, 11, dtype=torch.int64), 4).to(dev)
    cb = torch.tensor([0.0, 1.0], device=dev)
    with pytest.raises(ValueError, match="x has K=12 columns but the weight has in_features=11"):
        torch.ops.wfn.codebook_linear_triton(torch.ones(2, 12, device=dev), packed, cb, 4, 11)
    with pytest.raises(ValueError, match="packed codes have 6 bytes per row, expected 3"):
        torch.ops.wfn.codebook_linear_triton(torch.ones(2, 5, device=dev), packed, cb, 4, 5)


def test_needs_cuda_or_interpreter(monkeypatch, dev, wt):
    if dev == "cuda":
        pytest.skip("only meaningful without a GPU")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    x, packed, cb, _, _ = exact_case(1, 3, 4, 4, torch.float32, torch.Generator().manual_seed(0))
    with pytest.raises(RuntimeError, match="x is on cpu; Triton kernels need a CUDA device"):
        wt.codebook_linear_triton_launch(x, packed, cb, 4, 4)


def test_choose_config_paths(wt):
    cpu = torch.device("cpu")
    assert wt.choose_config(1, 8192, 8192, 4, cpu).path == "gemv"
    assert wt.choose_config(4, 64, 64, 4, cpu).block_m == 4
    big = wt.choose_config(256, 4096, 4096, 4, cpu)
    assert big.path == "gemm" and big.block_m == 128 and big.split_k == 1
    for bits in (2, 4, 8):
        cfg = wt.choose_config(16, 64, 64, bits, cpu)
        assert cfg.block_kb >= 16, "the MMA K dimension must be at least 16"
    with pytest.raises(ValueError, match="block_n must be a positive power of two, got 24"):
        wt.LaunchConfig("gemm", 16, 24, 16)
    with pytest.raises(ValueError, match="gemv path handles at most 4 rows"):
        wt.LaunchConfig("gemv", 8, 16, 16)
    with pytest.raises(ValueError, match="path must be 'gemv' or 'gemm'"):
        wt.LaunchConfig("simt", 16, 16, 16)


def test_split_k_only_when_tiles_cannot_fill_the_gpu(wt, monkeypatch):
    from wfn_kernels.ops.triton import launcher

    monkeypatch.setattr(launcher, "_sm_count", lambda index: 132)
    gpu = torch.device("cuda", 0)
    assert wt.choose_config(1, 8192, 8192, 4, gpu).split_k == 1  # 512 tiles: no atomics, no extra launches
    small_n = wt.choose_config(1, 64, 8192, 4, gpu)  # 4 tiles of 16 rows; 4096-byte rows
    assert small_n.path == "gemv" and small_n.split_k == 4096 // small_n.block_kb  # capped: one tile per split
    assert wt.choose_config(1, 64, 64, 4, gpu).split_k == 1  # one 32-byte row: nothing to split
