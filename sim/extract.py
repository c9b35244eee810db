"""Workload from a torch model: trace one forward pass, record every conv/linear layer's shapes and
weights. torch is imported inside the functions only, so the rest of the simulator runs without it.

Recognised layers: ``nn.Conv2d``, ``nn.Linear``, and any module with ``dense_weight()`` plus either
Conv2d's attributes (in_channels, out_channels, kernel_size, stride, padding, dilation, groups) or
Linear's (in_features, out_features), such as ``wfn_kernels.nn.WFNConv2d`` / ``WFNLinear``.
"""

from __future__ import annotations

import math
from pathlib import Path

from .workload import Layer, WeightStats, Workload

CONV_ATTRS = ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups")
LINEAR_ATTRS = ("in_features", "out_features")


def _pair(v) -> tuple[int, int]:
    return (int(v[0]), int(v[1])) if isinstance(v, (tuple, list)) else (int(v), int(v))


def layer_kind(module) -> str | None:
    """'conv', 'linear' or None for a module the simulator does not model."""
    import torch.nn as nn

    duck = hasattr(module, "dense_weight")
    if isinstance(module, nn.Conv2d) or (duck and all(hasattr(module, a) for a in CONV_ATTRS)):
        return "conv"
    if isinstance(module, nn.Linear) or (duck and all(hasattr(module, a) for a in LINEAR_ATTRS)):
        return "linear"
    return None


def module_weight(module):
    """Dense weight as float64 numpy, in nn.Conv2d / nn.Linear weight shape."""
    import torch

    with torch.no_grad():
        w = module.dense_weight() if hasattr(module, "dense_weight") else module.weight
        return w.detach().to("cpu", torch.float64).numpy()


def _conv_layer(name, module, x) -> Layer:
    if isinstance(module.padding, str):
        raise ValueError(f"layer {name!r}: string padding {module.padding!r} is not supported; use integers")
    kh, kw = _pair(module.kernel_size)
    sh, sw = _pair(module.stride)
    ph, pw = _pair(module.padding)
    dh, dw = _pair(module.dilation)
    if x.dim() != 4:
        raise ValueError(f"layer {name!r}: expected a 4-D (B, C, H, W) input, got shape {tuple(x.shape)}")
    return Layer(name, "conv", int(x.shape[2]), int(x.shape[3]), int(module.in_channels), int(module.out_channels),
                 kh, kw, sh, sw, ph, pw, dh, dw, int(module.groups))


def _linear_layer(name, module, x) -> Layer:
    rows = math.prod(int(s) for s in x.shape[:-1]) // max(1, int(x.shape[0]))  # per sample
    return Layer(name, "linear", max(rows, 1), 1, int(module.in_features), int(module.out_features))


def extract_workload(model, input_shape, name: str = "model") -> Workload:
    """Trace ``model`` on zeros of ``input_shape`` (batch first; batch 1 is modelled) and return its
    conv/linear layers in call order, each with the WeightStats of its real weights.

    A module called several times appears once per call (its name suffixed ``#2``, ``#3``...).
    """
    import torch

    layers, stats, seen, hooks = [], [], {}, []

    def hook(module, inputs, _output, module_name):
        x = inputs[0]
        kind = layer_kind(module)
        layer = _conv_layer(module_name, module, x) if kind == "conv" else _linear_layer(module_name, module, x)
        seen[module_name] = seen.get(module_name, 0) + 1
        if seen[module_name] > 1:
            layer = Layer(**{**layer.__dict__, "name": f"{module_name}#{seen[module_name]}"})
        layers.append(layer)
        stats.append(WeightStats.from_weight(module_weight(module), layer.groups))

    for module_name, module in model.named_modules():
        if layer_kind(module) is not None:
            label = module_name or type(module).__name__
            hooks.append(module.register_forward_hook(lambda m, i, o, n=label: hook(m, i, o, n)))
    if not hooks:
        raise ValueError(f"model {name!r}: no nn.Conv2d / nn.Linear / dense_weight() layers found")
    try:
        was_training = model.training
        model.eval()
        with torch.no_grad():
            model(torch.zeros(tuple(input_shape)))
        model.train(was_training)
    finally:
        for h in hooks:
            h.remove()
    if not layers:
        raise ValueError(f"model {name!r}: the forward pass on shape {tuple(input_shape)} called no modelled layer")
    return Workload(name, tuple(layers), tuple(stats))


def load_model_workload(path, input_shape, model_class: str | None = None) -> Workload:
    """Workload of a saved model, loaded without running pickled code.

    ``path`` is one of: a packed WFN model (``wfn_kernels.save_packed``, ``.safetensors``), a safetensors
    model written by ``wfn fix`` (its metadata names the architecture), or a ``torch.save``'d state dict
    (loaded with ``weights_only=True``). ``model_class`` names the architecture in
    ``wfn_kernels.models.MODELS`` (e.g. ``small-cnn``) where the file does not. A whole pickled
    ``nn.Module`` is refused: unpickling it could execute arbitrary code.
    """
    import pickle

    import torch

    from wfn_kernels import models

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file {path} does not exist")

    def build():
        if model_class is None:
            raise ValueError(f"{path}: the file does not name its architecture; pass --model-class "
                             f"(one of {sorted(models.MODELS)})")
        return models.build(model_class)

    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        if "wfn_format" in meta:
            from wfn_kernels.serialization import load_packed

            model = load_packed(path, build())
        else:
            from wfn_kernels.fixing.pipeline import load_saved_model

            model, tensors, _ = load_saved_model(path)
            if model is None:
                model = build()
                model.load_state_dict(tensors)
    else:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            raise ValueError(f"{path}: not a plain state dict ({str(exc).splitlines()[0]}); a pickled "
                             "nn.Module is not loaded because unpickling can execute code: save "
                             "model.state_dict() (with --model-class) or a packed .safetensors file") from None
        if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
            raise ValueError(f"{path}: expected a state dict of tensors, got {type(obj).__name__}")
        model = build()
        try:
            model.load_state_dict(obj)
        except RuntimeError as exc:
            raise ValueError(f"{path}: does not fit --model-class {model_class}: {exc}") from None
    return extract_workload(model, input_shape, path.name.split(".")[0])
