"""WFNConv2d's oneDNN inference layout (wfn_kernels/onednn.py): exact, reversible, really taken."""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import wfn_kernels as wk
from wfn_kernels.nn import onednn_layout as onednn

pytestmark = pytest.mark.skipif(bool(onednn.unavailable_reason()), reason=onednn.unavailable_reason() or "-")


def pow2_conv(cin, cout, k, stride=1, padding=0, bias=False, values=8, seed=0, groups=1):
    g = torch.Generator().manual_seed(seed)
    conv = nn.Conv2d(cin, cout, k, stride, padding, bias=bias, groups=groups)
    vals = torch.arange(-(values // 2), values - values // 2) / 16.0  # sums of few powers of two
    with torch.no_grad():
        conv.weight.copy_(vals[torch.randint(0, len(vals), conv.weight.shape, generator=g)])
        if bias:
            conv.bias.copy_(torch.randint(-8, 8, (cout,), generator=g).float())
    return conv


def int_input(shape, seed=1):
    return torch.randint(-8, 9, shape, generator=torch.Generator().manual_seed(seed)).float()


def ops_called(fn) -> set:
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fn()
    return {e.name for e in prof.events()}


@pytest.mark.parametrize("values,bits", [(3, 2), (12, 4), (40, 8)])
@pytest.mark.parametrize("geom", [(3, 64, 7, 2, 3, 32), (64, 64, 3, 1, 1, 14), (64, 128, 3, 2, 1, 14),
                                  (32, 128, 1, 1, 0, 9), (128, 256, 3, 1, 1, 6)])
def test_optimized_conv_is_exact(values, bits, geom):
    cin, cout, k, s, p, hw = geom
    conv = pow2_conv(cin, cout, k, s, p, bias=True, values=values)
    model = nn.Sequential(conv)
    x = int_input((1, cin, hw, hw))
    with torch.no_grad():
        expected = F.conv2d(x, conv.weight, conv.bias, s, p)  # small integers x powers of two: exact in fp32
    wk.convert(model)
    assert model[0].bits == bits
    plain_codes = model[0].codes().clone()
    report = wk.optimize_for_inference(model, x, measure=False)
    assert report == [("0", "optimized")]
    assert "layout=onednn" in repr(model)
    with torch.no_grad():
        names = ops_called(lambda: model(x))
        y = model(x)
    assert "wfn_cpu::decode_into_mkldnn" in names and "mkldnn::_convolution_pointwise" in names
    assert torch.equal(y, expected)
    assert torch.equal(model[0].codes(), plain_codes)
    assert onednn.workspace_bytes() >= 4 * conv.weight.numel()


def test_state_dict_save_load_stay_canonical(tmp_path):
    net = nn.Sequential(pow2_conv(16, 32, 3, padding=1), nn.ReLU(), pow2_conv(32, 64, 3, 2, 1, seed=3))
    wk.convert(net)
    plain = copy.deepcopy(net)
    x = int_input((1, 16, 12, 12))
    assert [r for _, r in wk.optimize_for_inference(net, x, measure=False)] == ["optimized", "optimized"]
    assert net[0].packed.shape != plain[0].packed.shape  # really re-laid out in memory
    sd, sd_plain = net.state_dict(), plain.state_dict()
    assert sd.keys() == sd_plain.keys() and all(torch.equal(sd[k], sd_plain[k]) for k in sd)
    assert net[0].weight_bytes()["fp32_bytes"] == plain[0].weight_bytes()["fp32_bytes"]
    wk.save_packed(net, tmp_path / "m.safetensors")
    fresh = nn.Sequential(nn.Conv2d(16, 32, 3, padding=1, bias=False), nn.ReLU(),
                          nn.Conv2d(32, 64, 3, 2, 1, bias=False))
    wk.load_packed(tmp_path / "m.safetensors", fresh)
    with torch.no_grad():
        assert torch.equal(fresh(x), plain(x)) and torch.equal(net(x), plain(x))
    # loading a (canonical) state dict into an optimized model puts it back on the plain layout
    net.load_state_dict(sd_plain)
    assert net[0]._onednn is None and torch.equal(net[0].packed, plain[0].packed)


def test_other_batch_sizes_grad_and_reference_backend_stay_correct():
    net = nn.Sequential(pow2_conv(8, 32, 3, padding=1, bias=True))
    wk.convert(net)
    plain = copy.deepcopy(net)
    wk.optimize_for_inference(net, int_input((1, 8, 10, 10)), measure=False)
    for batch in (1, 3):
        x = int_input((batch, 8, 10, 10), seed=batch)
        with torch.no_grad():
            assert torch.equal(net(x), plain(x))
    x = int_input((2, 8, 10, 10)).requires_grad_()
    x2 = x.detach().clone().requires_grad_()
    names = ops_called(lambda: net(x).sum().backward())
    assert "wfn_cpu::decode_into_mkldnn" not in names  # autograd takes the plain op
    plain(x2).sum().backward()
    assert torch.equal(x.grad, x2.grad)
    wk.set_backend(net, "reference")
    with torch.no_grad():
        xr = int_input((1, 8, 10, 10))
        assert "wfn_cpu::decode_into_mkldnn" not in ops_called(lambda: net(xr))
        assert torch.equal(net(xr), plain(xr))


def test_channels_last_input_runs_the_onednn_conv_without_a_layout_copy():
    """A channels_last model (optimised on a channels_last input) feeds its NHWC activations to the oneDNN conv
    as they are: channels_last out, the exact values, no NCHW copy (aten::copy_) on the way in."""
    net = nn.Sequential(pow2_conv(16, 32, 3, padding=1, bias=True))
    wk.convert(net)
    plain = copy.deepcopy(net)
    net = net.to(memory_format=torch.channels_last)
    x = int_input((2, 16, 12, 12)).contiguous(memory_format=torch.channels_last)
    assert wk.optimize_for_inference(net, x, measure=False) == [("0", "optimized")]
    with torch.no_grad():
        names = ops_called(lambda: net(x))
        y = net(x)
        assert torch.equal(y, plain(x.contiguous()))
    assert "mkldnn::_convolution_pointwise" in names and "aten::copy_" not in names
    assert y.is_contiguous(memory_format=torch.channels_last) and not y.is_contiguous()


def test_unsupported_layers_are_reported_and_left_alone():
    net = nn.Sequential(pow2_conv(8, 16, 3, padding=1, groups=2), nn.Flatten(), nn.Linear(16 * 36, 4))
    with torch.no_grad():
        net[2].weight.copy_(torch.where(torch.rand(4, 576) > 0.5, 0.5, -0.25))
    wk.convert(net)
    packed_before = net[0].packed.clone()
    report = wk.optimize_for_inference(net, int_input((1, 8, 6, 6)))
    (name, why), = report
    assert name == "0" and "groups=2" in why
    assert net[0]._onednn is None and torch.equal(net[0].packed, packed_before)
    assert wk.optimize_for_inference(nn.Sequential(nn.ReLU()), torch.zeros(1)) == []


def test_decode_into_mkldnn_rejects_bad_arguments():
    conv = pow2_conv(4, 16, 3)
    wk.convert(m := nn.Sequential(conv))
    packed, cb = m[0].packed, m[0].codebook
    with pytest.raises(RuntimeError, match="dst must be an mkldnn float32 tensor"):
        torch.ops.wfn_cpu.decode_into_mkldnn(packed, cb, 4, 36, torch.zeros(16, 36))
    dst = torch.zeros(16, 4, 3, 3).to_mkldnn()
    with pytest.raises(RuntimeError, match="bits must be 2, 4 or 8"):
        torch.ops.wfn_cpu.decode_into_mkldnn(packed, cb, 3, 36, dst)
    with pytest.raises(RuntimeError, match="bytes per row"):
        torch.ops.wfn_cpu.decode_into_mkldnn(packed, cb, 4, 30, dst)
    small = torch.zeros(8, 4, 3, 3).to_mkldnn()
    with pytest.raises(RuntimeError, match="dst holds 1152 bytes but the codes decode to 2304"):
        torch.ops.wfn_cpu.decode_into_mkldnn(packed, cb, 4, 36, small)
    torch.ops.wfn_cpu.decode_into_mkldnn(packed, cb, 4, 36, dst)  # plain-layout dst: decodes row-major
    assert torch.equal(dst.to_dense().reshape(16, 36), cb[m[0].codes()])


def test_decode_into_mkldnn_scale_and_its_bad_arguments(level):
    """The per-channel scale multiplies each output channel's weights in a [O/block][K][block] layout, at every
    dispatch level (AVX2 scales blocks of 8 channels as it decodes; otherwise a pass per decoded chunk)."""
    conv = pow2_conv(4, 16, 3)
    wk.convert(m := nn.Sequential(conv))
    packed, cb = m[0].packed, m[0].codebook
    scale = torch.arange(1, 17).float() / 4  # channel o: (o + 1) / 4, exact
    dst = torch.zeros(16, 4, 3, 3).to_mkldnn()
    torch.ops.wfn_cpu.decode_into_mkldnn(packed, cb, 4, 36, dst, scale, 1, 36)  # block 1: rows are channels
    assert torch.equal(dst.to_dense().reshape(16, 36), cb[m[0].codes()] * scale[:, None])
    # block 8: channel of element e is (e // (8 * 36)) * 8 + e % 8, rows of 72 = 8 channels x 9 columns
    blocked = onednn.to_blocked(m[0].codes(), onednn.Layout(block=8, colperm=tuple(range(36)), rows=16))
    from wfn_kernels.format.packing import pack_codes
    packed8 = pack_codes(blocked.reshape(-1, 72), 4)
    torch.ops.wfn_cpu.decode_into_mkldnn(packed8, cb, 4, 72, dst, scale, 8, 36)
    w = cb[m[0].codes()] * scale[:, None]  # (16, 36) canonical
    assert torch.equal(dst.to_dense().reshape(-1), w.reshape(2, 8, 36).transpose(1, 2).reshape(-1))
    with pytest.raises(RuntimeError, match="scale has 15 channels, block 1, 36 columns per channel"):
        torch.ops.wfn_cpu.decode_into_mkldnn(packed, cb, 4, 36, dst, scale[:15], 1, 36)
    with pytest.raises(RuntimeError, match="scale has 16 channels, block 5"):
        torch.ops.wfn_cpu.decode_into_mkldnn(packed, cb, 4, 36, dst, scale, 5, 36)
    with pytest.raises(RuntimeError, match="scale must be a contiguous 1-D float32 CPU tensor"):
        torch.ops.wfn_cpu.decode_into_mkldnn(packed, cb, 4, 36, dst, scale.double(), 1, 36)


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("relu", [False, True])
def test_folded_batchnorm_runs_inside_the_onednn_conv(channels_last, relu):
    """wk.fuse_batchnorm + optimize_for_inference on a float model: the BatchNorm (and ReLU) run inside the
    oneDNN conv (weights scaled as decoded, shift in the bias, ReLU post-op), no BatchNorm or ReLU pass."""
    g = torch.Generator().manual_seed(3)
    conv = pow2_conv(16, 40, 3, padding=1, bias=True, values=12)
    bn = nn.BatchNorm2d(40)
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1, generator=g)
        bn.running_var.uniform_(0.5, 2, generator=g)
        bn.weight.uniform_(-1.5, 1.5, generator=g)
        bn.bias.uniform_(-1, 1, generator=g)
    net = nn.Sequential(conv, bn, *([nn.ReLU()] if relu else [])).eval()
    wk.convert(net)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(2, 16, 10, 10, generator=g).contiguous(memory_format=fmt)
    with torch.no_grad():
        expected = net(x)
    fused = wk.fuse_batchnorm(net).to(memory_format=fmt)
    assert wk.optimize_for_inference(fused, x, measure=False) == [("0", "optimized")]
    with torch.no_grad():
        y = fused(x)  # the first call folds the epilogue into a bias (cached)
        names = ops_called(lambda: fused(x))
    assert "wfn_cpu::decode_into_mkldnn" in names and "mkldnn::_convolution_pointwise" in names
    assert not {"aten::native_batch_norm", "aten::batch_norm", "aten::relu", "aten::clamp_min", "aten::mul",
                "aten::add"} & names, names
    torch.testing.assert_close(y, expected, rtol=1e-5, atol=1e-5)
    if relu:
        assert bool((y >= 0).all()) and bool((y == 0).any())
    conv_fused = fused.get_submodule("0")
    conv_fused.fold_post(None, None, False)  # epilogue removed: back to the plain conv's output
    with torch.no_grad():
        torch.testing.assert_close(fused(x), net[0](x), rtol=1e-5, atol=1e-5)


def test_layout_permutation_round_trips():
    layout = onednn.Layout(block=4, colperm=(2, 0, 1), rows=8)
    codes = torch.arange(8 * 3).reshape(8, 3)
    flat = onednn.to_blocked(codes, layout)
    assert flat[:4].tolist() == [2, 5, 8, 11]  # block 0, first column in oneDNN order (canonical column 2)
    assert torch.equal(onednn.from_blocked(flat, layout, 8, 3), codes)
    padded = onednn.Layout(block=4, colperm=(2, 0, 1), rows=8)
    six = codes[:6]
    with pytest.raises(ValueError, match="pass the code that decodes to 0"):
        onednn.to_blocked(six, padded)
    flat = onednn.to_blocked(six, padded, pad_code=99)
    assert flat.numel() == 24 and int((flat == 99).sum()) == 6
    assert torch.equal(onednn.from_blocked(flat, padded, 6, 3), six)


@pytest.mark.parametrize("o,block", [(40, 48), (40, 16), (64, 16), (7, 8), (48, 48)])
def test_layout_read_from_a_probe_permutation(o, block):
    """The probe's permutation -> Layout, whatever the hardware: a block wider than the layer (40 channels in one
    48-channel block, as oneDNN lays them out on AVX-512) holds padding rows (-1) and still gives the layout; a
    permutation of another form is refused with the reason."""
    k = 6
    colperm = torch.tensor([0, 3, 5, 1, 4, 2])  # oneDNN orders start at column 0, as the probe assumes
    rows = -(-o // block) * block
    perm = onednn.to_blocked(torch.arange(o * k).reshape(o, k), onednn.Layout(block, tuple(colperm.tolist()), rows),
                             pad_code=-1)
    layout, why = onednn.layout_from_perm(perm, o, k)
    assert why == "" and layout == onednn.Layout(block, tuple(colperm.tolist()), rows)
    swapped = perm.clone()
    swapped[[0, -1]] = swapped[[-1, 0]]
    layout, why = onednn.layout_from_perm(swapped, o, k)
    assert layout is None and "oneDNN" in why


# ResNet-18's layer4.0.downsample: on AVX-512 oneDNN blocks 48 output channels and pads 512 to 528
PADDED_GEOM = (256, 512, 1, 2, 0, 14)


@pytest.mark.parametrize("values,has_zero", [(12, True), (15, False), (16, False)])
def test_padded_layout_exact_or_reported(values, has_zero):
    cin, cout, k, s, p, hw = PADDED_GEOM
    layout, why = onednn.probe_layout((cout, cin, k, k), (s, s), (p, p), (1, 1), 1, (1, cin, hw, hw))
    if layout is None or layout.rows == cout:
        pytest.skip(f"oneDNN does not pad this weight on this CPU ({why or 'no padding'})")
    conv = pow2_conv(cin, cout, k, s, p, values=values)
    if not has_zero:  # shift the values off 0: every code is in use, none decodes to 0
        with torch.no_grad():
            conv.weight.copy_(torch.where(conv.weight >= 0, conv.weight + 1 / 16, conv.weight))
    model = nn.Sequential(conv)
    x = int_input((1, cin, hw, hw))
    with torch.no_grad():
        expected = F.conv2d(x, conv.weight, None, s, p)
    wk.convert(model)
    (_, how), = wk.optimize_for_inference(model, x, measure=False)
    if values == 16:
        assert "has no code for 0" in how and model[0]._onednn is None
    else:
        assert how == "optimized" and model[0]._onednn["layout"].rows > cout
    with torch.no_grad():
        assert torch.equal(model(x), expected)


def test_measured_choice_keeps_whichever_layout_is_faster_and_stays_exact():
    net = nn.Sequential(pow2_conv(1, 16, 3, padding=1), nn.ReLU(), pow2_conv(64, 128, 3, padding=1, seed=4))
    x1, x2 = int_input((1, 1, 8, 8)), int_input((1, 64, 28, 28))
    wk.convert(net)
    plain = copy.deepcopy(net)
    r1 = wk.optimize_for_inference(nn.Sequential(net[0]), x1)
    r2 = wk.optimize_for_inference(nn.Sequential(net[2]), x2)
    for (_, why), mod in ((r1[0], net[0]), (r2[0], net[2])):
        assert why.startswith("optimized (") or why.startswith("kept the plain layout: the oneDNN layout measured")
        assert (mod._onednn is not None) == why.startswith("optimized")
        assert " ms)" in why
    with torch.no_grad():
        assert torch.equal(net[0](x1), plain[0](x1)) and torch.equal(net[2](x2), plain[2](x2))


def _three_conv_net():
    net = nn.Sequential(pow2_conv(8, 16, 3, padding=1), nn.ReLU(), pow2_conv(16, 64, 3, padding=1, seed=2),
                        nn.ReLU(), pow2_conv(64, 64, 3, padding=1, seed=3))
    wk.convert(net)
    return net


@pytest.mark.parametrize("measure", [False, True])
def test_workspace_budget_caps_the_onednn_copies(measure):
    """max_workspace_bytes: the optimized signatures' oneDNN weight copies fit it, the others stay plain
    (and say why), outputs are unchanged, and probes of layers left alone hold no workspace afterwards."""
    x = int_input((1, 8, 8, 8))
    plain = _three_conv_net()
    with torch.no_grad():
        expected = plain(x)
    first_two = _three_conv_net()[:3]  # the first two convs' copies, as oneDNN lays (and pads) them
    onednn.clear_workspaces()
    wk.optimize_for_inference(first_two, x, measure=False)
    two = onednn.workspace_bytes()
    sizes = {}
    for budget in (None, 0, two):
        net = _three_conv_net()
        onednn.clear_workspaces()
        report = dict(wk.optimize_for_inference(net, x, measure=measure, repeats=3, max_workspace_bytes=budget))
        held = onednn.workspace_bytes()
        optimized = {name for name, why in report.items() if why.startswith("optimized")}
        assert {name for name in ("0", "2", "4") if net[int(name)]._onednn is not None} == optimized
        if budget is not None:
            assert held <= budget
            for name in set(report) - optimized:
                if not measure or "does not fit" in report[name]:
                    assert f"does not fit max_workspace_bytes={budget}" in report[name]
        with torch.no_grad():
            assert torch.equal(net(x), expected)
        sizes[budget] = (held, optimized)
    assert sizes[0] == (0, set())
    if not measure:  # model order: the first two fit, the 64 x 576 one does not
        assert sizes[None][1] == {"0", "2", "4"} and sizes[two] == (two, {"0", "2"})
        assert sizes[None][0] > two > 0


def test_workspace_budget_rejects_bad_values():
    net = _three_conv_net()
    for bad in (-1, True, 1.5, "4MB"):
        with pytest.raises(ValueError, match="max_workspace_bytes must be None or a byte count >= 0"):
            wk.optimize_for_inference(net, int_input((1, 8, 8, 8)), max_workspace_bytes=bad)
