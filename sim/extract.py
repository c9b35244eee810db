"""Workload from a torch model: trace one forward pass, record every conv/linear layer's shapes and
weights. torch is imported inside the functions only, so the rest of the simulator runs without it.

Recognised layers: ``nn.Conv2d``, ``nn.Linear``, and any module with ``dense_weight()`` plus either
Conv2d's attributes (in_channels, out_channels, kernel_size, stride, padding, dilation, groups) or
Linear's (in_features, out_features), such as ``wfn_kernels.nn.WFNConv2d`` / ``WFNLinear``.

Saved models are read by :func:`load_model_workload`; of wfn_kernels it uses only the packed-file
interface ``wfn_kernels.format.container`` (``read_packed``, ``decoded_weights``).
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


# Bundled architectures by name, as import paths (wfn_sim imports no wfn_kernels code but the packed format).
BUNDLED_MODELS = {"small-cnn": "wfn_kernels.workflows.models:SmallCNN",
                  "small-resnet": "wfn_kernels.workflows.models:SmallResNet"}


def build_model(spec: str):
    """A fresh instance of the architecture ``spec``: ``package.module:Name`` (a class or factory of the
    user's, called with no arguments: importing the module is the only code run) or a bundled name
    (``small-cnn``, ``small-resnet``)."""
    import importlib

    import torch.nn as nn

    target = BUNDLED_MODELS.get(spec, spec)
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"model class {spec!r}: expected 'package.module:ClassName' or one of "
                         f"{sorted(BUNDLED_MODELS)}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"model class {spec!r}: cannot import module {module_name!r} ({exc})") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ValueError(f"model class {spec!r}: module {module_name!r} has no class or function {attr!r}")
    try:
        model = factory()
    except TypeError as exc:
        raise ValueError(f"model class {spec!r}: cannot be built without arguments ({exc}); point "
                         "--model-class at a factory function that takes none") from None
    if not isinstance(model, nn.Module):
        raise ValueError(f"model class {spec!r}: built a {type(model).__name__}, not a torch.nn.Module")
    return model


def _is_safetensors(path: Path) -> bool:
    """By content, not by name: an 8-byte little-endian header length, then a JSON object."""
    with open(path, "rb") as f:
        head = f.read(9)
    # a header length larger than the file is a truncated safetensors file (reported as such), not a pickle
    return len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < 1 << 40


def _packed_state(path: Path) -> tuple[dict, list[dict]]:
    """(float state dict, layer entries) of a packed WFN file: every WFN layer decoded to its dense weight."""
    from wfn_kernels.format.container import decoded_weights, read_packed

    header, tensors = read_packed(path)
    dense = decoded_weights(header, tensors)
    packed_keys = {f"{e['name']}.{b}" for e in header["layers"] for b in ("packed", "codebook", "global_index")}
    state = {k: v for k, v in tensors.items() if k not in packed_keys}
    state.update({f"{name}.weight": w for name, w in dense.items()})
    return state, header["layers"]


def _check_geometry(path: Path, model, layers: list[dict]) -> None:
    """A packed file's conv geometry must be the model's: the simulator prices the model it traces."""
    for entry in layers:
        if entry.get("kind") != "WFNConv2d":
            continue
        module = model.get_submodule(entry["name"])
        for attr in ("stride", "padding", "dilation", "groups"):
            have = getattr(module, attr)
            have = list(_pair(have)) if attr != "groups" else int(have)
            if have != entry[attr]:
                raise ValueError(f"{path}: layer {entry['name']!r} has {attr} {entry[attr]} in the file but "
                                 f"{have} in the model class; is this file from another model?")


def _load_state(path: Path):
    """(state dict, packed layer entries or None, architecture named by the file or None)."""
    import pickle

    import torch

    if _is_safetensors(path):
        from wfn_kernels.format.container import FORMAT as PACKED, read_safetensors

        # every byte of a file wfn_kernels wrote is verified (CorruptFileError names the damaged part)
        kind, meta, tensors = read_safetensors(path, what="model file")
        if kind == PACKED:
            state, layers = _packed_state(path)
            return state, layers, None
        if kind not in (None, "wfn-model"):
            raise ValueError(f"{path}: is a {kind} file, not a model (pass a packed model or a model.safetensors)")
        return tensors, None, meta.get("wfn_model")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ValueError(f"{path}: not a plain state dict ({str(exc).splitlines()[0]}); a pickled "
                         "nn.Module is not loaded because unpickling can execute code: save "
                         "model.state_dict() (with --model-class) or a packed .safetensors file") from None
    except (RuntimeError, EOFError, OSError) as exc:
        raise ValueError(f"{path}: neither a safetensors file nor a torch state dict ({exc})") from None
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path}: expected a state dict of tensors, got {type(obj).__name__}")
    return obj, None, None


def load_model_workload(path, input_shape, model_class: str | None = None) -> Workload:
    """Workload of a saved model, loaded without running pickled code.

    ``path`` is one of (recognised by content, whatever its name): a packed WFN model
    (``wfn_kernels.save_packed``; read through ``wfn_kernels.format.container``, every checksum verified),
    a safetensors state dict (``wfn fix``'s model.safetensors names its architecture in its metadata), or a
    ``torch.save``'d state dict (loaded with ``weights_only=True``). ``model_class`` (see
    :func:`build_model`) names the architecture where the file does not. A whole pickled ``nn.Module`` is
    refused: unpickling it could execute arbitrary code.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"model file {path} is a directory, not a file")
    if not path.is_file():
        raise FileNotFoundError(f"model file {path} does not exist")
    state, layers, named = _load_state(path)
    spec = model_class or named
    if spec is None:
        raise ValueError(f"{path}: the file does not name its architecture; pass --model-class "
                         f"(package.module:Class or one of {sorted(BUNDLED_MODELS)})")
    model = build_model(spec)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"{path}: does not fit model class {spec}: {str(exc).splitlines()[0]}") from None
    if layers:
        _check_geometry(path, model, layers)
    return extract_workload(model, input_shape, path.name.split(".")[0])
