"""wk.fuse_batchnorm: eval BatchNorm (+ ReLU) folded into the WFN conv's output epilogue (nn/fuse.py), and the
int8 conv's epilogue op (int8_conv2d_post) it runs on."""
import pytest
import torch
from torch import nn

import wfn_kernels as wk
from wfn_kernels import ops
from wfn_kernels.format.codebook import Codebook
from wfn_kernels.format.packing import pack_codes
from wfn_kernels.ops import int8 as int8_ops

needs_ext = pytest.mark.skipif(ops._C is None, reason="extension not built")
VALUES = [0.0] + [s * 2.0 ** e for e in range(-6, 0) for s in (1.0, -1.0)]
WIDE_VALUES = [0.0, 2.0 ** -12] + [s * 2.0 ** e for e in range(-6, 0) for s in (1.0, -1.0)]  # int16 table


def _randomise_bn(net, seed=0):
    g = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.2)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.3)
            if m.affine:
                m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.2)


class Block(nn.Module):
    """conv -> bn -> relu, conv -> bn -> (+ skip) -> relu (the shared ReLU module), a 1x1 downsample with BN."""

    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(16, 32, 3, 2, 1, bias=False), nn.BatchNorm2d(32)
        self.conv2, self.bn2 = nn.Conv2d(32, 32, 3, 1, 1), nn.BatchNorm2d(32, affine=False)
        self.down, self.bn_down = nn.Conv2d(16, 32, 1, 2, bias=False), nn.BatchNorm2d(32)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        y = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(y)) + self.bn_down(self.down(x)))


def small_model(mode: str):
    g = torch.Generator().manual_seed(1)
    net = nn.Sequential(nn.Conv2d(3, 16, 5, 1, 2), nn.BatchNorm2d(16), nn.ReLU(), Block(), nn.AdaptiveAvgPool2d(1),
                        nn.Flatten(), nn.Linear(32, 10))
    values = torch.tensor(VALUES)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.copy_(values[torch.randint(0, len(VALUES), m.weight.shape, generator=g)])
    _randomise_bn(net)
    net.eval()
    wk.convert(net, compute=mode)
    return net


@pytest.mark.parametrize("mode", ["int8", "bf16", "float"])
@pytest.mark.parametrize("channels_last", [False, True])
def test_fused_model_matches_unfused(mode, channels_last, rng):
    net = small_model(mode)
    fused = wk.fuse_batchnorm(net)
    assert fused.wfn_fused == [("0", "1", True), ("3.conv1", "3.bn1", True), ("3.conv2", "3.bn2", False),
                               ("3.down", "3.bn_down", False)]
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in net.modules())  # the model passed in is unchanged
    x = torch.randn(3, 3, 16, 16, generator=rng)
    if channels_last:
        net, fused = net.to(memory_format=torch.channels_last), fused.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        ref, y = net(x), fused(x)
    # BatchNorm's own formula rounds differently; int8 also re-quantises from slightly different activations
    tol = {"float": 1e-5, "bf16": 1e-2, "int8": 2e-2}[mode]
    assert float((y - ref).abs().max()) <= tol * float(ref.abs().max())


@needs_ext
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("geom", [(2, 64, 7, 6, 70, 3, 1, 1), (1, 3, 15, 15, 16, 7, 2, 3), (2, 5, 8, 8, 9, 1, 2, 0)])
@pytest.mark.parametrize("avx2_kernel", [0, 1, 2])
@pytest.mark.parametrize("table", ["int8", "int16"])
def test_int8_conv_post_bit_exact(level, layout, geom, avx2_kernel, table, rng):
    """The epilogue (multiply, add, ReLU) in the NHWC kernel, in the AVX2 conv kernels (1: vpmaddubsw for int8
    tables, vpmaddwd for int16 ones; 2: vpmaddwd for both) and as separate passes elsewhere equals the
    reference bit for bit, NaN pixels included, at every dispatch level."""
    if avx2_kernel and level != "avx2":
        pytest.skip("the AVX2 conv kernels run at the avx2 level only")
    before = torch.ops.wfn_cpu.set_avx2_int8_conv(avx2_kernel)
    try:
        _check_post_bit_exact(layout, geom, rng, VALUES if table == "int8" else WIDE_VALUES)
    finally:
        torch.ops.wfn_cpu.set_avx2_int8_conv(before)


def _check_post_bit_exact(layout, geom, rng, values):
    b, c, h, w_, o, kk, s, p = geom
    cb = Codebook.from_values(values)
    assert int8_ops.integer_weights(cb.values).narrow == (values is VALUES)
    iw = int8_ops.integer_weights(cb.values, c * kk * kk)
    packed = pack_codes(torch.randint(0, len(cb), (o, c * kk * kk), generator=rng), 4)
    x = torch.randn(b, c, h, w_, generator=rng)
    x[0, 0, 0, 0] = float("nan")  # every geometry below reads pixel (0, 0)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    scale, shift = torch.rand(o, generator=rng) + 0.5, torch.randn(o, generator=rng)
    for post in ({"post_scale": scale, "post_shift": shift, "relu": True}, {"post_scale": scale, "post_shift": shift},
                 {"relu": True}):
        args = (x, packed, iw.table, 4, (o, c, kk, kk), iw.step, torch.randn(o, generator=rng), s, p)
        y = int8_ops.int8_conv2d(*args, backend="extension", **post)
        ref = int8_ops.int8_conv2d(*args, backend="reference", **post)
        torch.testing.assert_close(y, ref, rtol=0, atol=0, equal_nan=True)
        assert y.is_contiguous(memory_format=int8_ops.memory_format_of(x))
        if post.get("relu"):
            assert bool((y.nan_to_num(0) >= 0).all()) and bool(y.isnan().any())


def test_conv_with_two_users_is_not_fused():
    class TwoUsers(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4)

        def forward(self, x):
            y = self.conv(x)
            return self.bn(y) + y

    net = TwoUsers().eval()
    with torch.no_grad():
        net.conv.weight.copy_(torch.tensor(VALUES)[torch.randint(0, len(VALUES), net.conv.weight.shape)])
    wk.convert(net)
    fused = wk.fuse_batchnorm(net)
    assert fused.wfn_fused == [] and isinstance(fused.bn, nn.BatchNorm2d)


def test_bad_input_is_named(rng):
    net = small_model("int8")
    with pytest.raises(ValueError, match=r"call model.eval\(\) first"):
        wk.fuse_batchnorm(net.train())
    net.eval()

    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = net

        def forward(self, x):
            return self.inner(x) if x.sum() > 0 else x

    with pytest.raises(ValueError, match="traces the model with torch.fx and could not: TraceError"):
        wk.fuse_batchnorm(Branchy().eval())
    with pytest.raises(ValueError, match="fuse_batchnorm needs an nn.Module, got str"):
        wk.fuse_batchnorm("model")
    fused = wk.fuse_batchnorm(net)
    with pytest.raises(ValueError, match="save the model before fusing"):
        fused.state_dict()
    conv = fused.get_submodule("0")
    with pytest.raises(ValueError, match="fold_post scale must be a 1-D float tensor of out_channels=16 values"):
        conv.fold_post(torch.ones(15), torch.zeros(15))
    with pytest.raises(ValueError, match="needs both scale and shift"):
        conv.fold_post(torch.ones(16), None)
    cb = Codebook.from_values(VALUES)
    iw = int8_ops.integer_weights(cb.values, 27)
    packed = pack_codes(torch.zeros(4, 27, dtype=torch.int64), 4)
    if ops._C is not None:  # the op itself checks the epilogue's length too
        with pytest.raises(RuntimeError, match=r"post_scale and post_shift must be 1-D with out_channels=4 entries"):
            torch.ops.wfn.int8_conv2d_post(torch.randn(1, 3, 5, 5), packed, iw.table, 4, [4, 3, 3, 3], None, [1, 1],
                                           [0, 0], [1, 1], 1, iw.step, torch.ones(5), torch.zeros(5), False)
    with pytest.raises(ValueError, match="post_shift must be a 1-D float tensor of out_channels=4 values"):
        int8_ops.int8_conv2d(torch.randn(1, 3, 5, 5), packed, iw.table, 4, (4, 3, 3, 3), iw.step,
                             post_scale=torch.ones(4), post_shift=torch.zeros(3))


def test_unfused_model_still_saves(tmp_path):
    """Fusing works on a copy: the original model's state_dict (and save_packed) are untouched."""
    net = small_model("int8")
    wk.fuse_batchnorm(net)
    assert "1.running_mean" in net.state_dict()
    wk.save_packed(net, tmp_path / "m.wfn")


@needs_ext
def test_int8_conv_post_opcheck(rng):
    cb = Codebook.from_values(VALUES)
    iw = int8_ops.integer_weights(cb.values, 8 * 9)
    packed = pack_codes(torch.randint(0, len(cb), (16, 72), generator=rng), 4)
    x = torch.randn(2, 8, 6, 6, generator=rng).contiguous(memory_format=torch.channels_last)
    torch.library.opcheck(torch.ops.wfn.int8_conv2d_post.default,
                          (x, packed, iw.table, 4, [16, 8, 3, 3], None, [1, 1], [1, 1], [1, 1], 1, iw.step,
                           torch.rand(16) + 0.5, torch.randn(16), True))
