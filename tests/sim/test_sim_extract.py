import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn as nn
from wfn_sim.extract import extract_workload

torch.set_num_threads(1)


def small_model():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
        nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=2), nn.ReLU(),
        nn.Conv2d(8, 6, 3, stride=1, padding=2, dilation=2), nn.Flatten(),
        nn.Linear(6 * 5 * 5, 10))


def test_layer_shapes_match_the_torch_forward_pass():
    model = small_model()
    outputs = {}
    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            m.register_forward_hook(lambda mod, i, o, n=name: outputs.__setitem__(n, tuple(o.shape)))
    model(torch.zeros(1, 3, 9, 10))
    wl = extract_workload(model, (1, 3, 9, 10))
    assert [ly.name for ly in wl.layers] == ["0", "2", "4", "6"]
    for layer in wl.layers:
        shape = outputs[layer.name]
        if layer.kind == "conv":
            assert (layer.out_channels, layer.out_h, layer.out_w) == shape[1:]
        else:
            assert (layer.out_h, layer.out_channels) == (1, shape[1])
    assert wl.layers[1].groups == 2 and wl.layers[2].dilation_h == 2
    for layer, stats, module in zip(wl.layers, wl.stats, [model[0], model[2], model[4], model[6]], strict=True):
        expected = module.weight.detach().double().reshape(layer.out_channels, -1).numpy()
        np.testing.assert_array_equal(stats.dense(), expected)


def test_packed_wfn_model_is_extracted_through_dense_weight():
    from wfn_kernels.format.codebook import Codebook
    from wfn_kernels.nn import convert

    model = small_model()
    cb = Codebook.from_values([-0.5, -0.25, 0.0, 0.25, 0.5, 0.75])
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(cb.values[torch.randint(0, 6, p.shape)].float())
    reference = extract_workload(model, (1, 3, 9, 10))
    convert(model, codebook=cb)
    assert type(model[0]).__name__ == "WFNConv2d" and type(model[6]).__name__ == "WFNLinear"
    packed = extract_workload(model, (1, 3, 9, 10))
    assert packed.layers == reference.layers
    for a, b in zip(packed.stats, reference.stats, strict=True):
        np.testing.assert_array_equal(a.dense(), b.dense())
        assert a.codebook_size <= 6 and a.terms_per_value.max() <= 2


def test_model_without_modelled_layers_is_rejected():
    with pytest.raises(ValueError, match="no nn.Conv2d / nn.Linear / dense_weight"):
        extract_workload(nn.Sequential(nn.ReLU()), (1, 3))


def test_simulator_modules_do_not_import_torch():
    code = ("import sys, wfn_sim.cli, wfn_sim.simulate, wfn_sim.report, wfn_sim.sweep, wfn_sim.functional, "
            "wfn_sim.extract; assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
