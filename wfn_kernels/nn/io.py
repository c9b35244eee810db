"""Save and load converted models as packed files (the file format itself: wfn_kernels.format.container).

Loading needs the float model's architecture (an instance of the same class): the header says which
layers are WFN layers and with what geometry; every tensor's checksum is verified first.
"""

from __future__ import annotations

import torch
from torch import nn

from ..format.container import CorruptFileError, read_packed, write_packed_file
from ..format.packing import PackedWeight
from .convert import set_submodule, wfn_modules
from .modules import WFNConv2d, WFNLinear


def _layer_entry(name: str, m) -> dict:
    entry = {"name": name, "kind": type(m).__name__, "bits": m.bits, "bias": m.bias is not None,
             "codebook_size": int(m.codebook.numel())}
    if isinstance(m, WFNLinear):
        entry["shape"] = [m.out_features, m.in_features]
        entry["shift_add"] = bool(m.shift_add)
    else:
        entry.update(shape=list(m.weight_shape), stride=list(m.stride), padding=list(m.padding),
                     dilation=list(m.dilation), groups=m.groups)
    return entry


def save_packed(model: nn.Module, path, global_codebook=None) -> None:
    """Write ``model`` (already converted) to ``path`` atomically (temp file + rename)."""
    layers = [_layer_entry(n, m) for n, m in wfn_modules(model)]
    if not layers:
        raise ValueError("save_packed: the model has no WFN layers; call wfn_kernels.convert(model) first")
    write_packed_file(path, model.state_dict(), layers,
                      global_codebook.to_list() if global_codebook is not None else None)


def load_packed(path, model: nn.Module, backend: str = "auto") -> nn.Module:
    """Load a packed model into ``model`` (an instance of the float architecture), in place; returns it.

    Each layer listed in the header must exist in ``model`` as an ``nn.Linear``/``nn.Conv2d`` (or WFN
    module) of the same shape; it is replaced by the packed module, then every other tensor is loaded
    with ``load_state_dict(strict=True)``.
    """
    header, tensors = read_packed(path)
    for entry in header["layers"]:
        name = entry["name"]
        try:
            target = model.get_submodule(name)
        except AttributeError:
            raise ValueError(f"{path}: layer {name!r} does not exist in the given model "
                             f"({type(model).__name__}); is this checkpoint from another model?") from None
        _check_target(path, entry, target)
        set_submodule(model, name, _build_layer(entry, tensors, backend))
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"{path}: tensors do not fit the given model {type(model).__name__}: {exc}") from exc
    return model


def _check_target(path, entry: dict, target: nn.Module) -> None:
    shape = tuple(entry["shape"])
    w = getattr(target, "weight", None)
    have = tuple(w.shape) if isinstance(w, torch.Tensor) else getattr(target, "weight_shape", None)
    if isinstance(target, WFNLinear):
        have = (target.out_features, target.in_features)
    if have != shape:
        raise ValueError(f"{path}: layer {entry['name']!r} has weight shape {shape} in the file but {have} "
                         "in the given model; is this checkpoint from another model?")


def _build_layer(entry: dict, tensors: dict, backend: str):
    name = entry["name"]
    try:
        pw = PackedWeight(tensors[f"{name}.packed"], tensors[f"{name}.codebook"], int(entry["bits"]),
                          tuple(entry["shape"]), tensors[f"{name}.global_index"])
        bias = tensors.get(f"{name}.bias") if entry["bias"] else None
        if entry["kind"] == "WFNLinear":
            return WFNLinear(pw, bias, backend, shift_add=bool(entry.get("shift_add", False)))
        if entry["kind"] == "WFNConv2d":
            return WFNConv2d(pw, bias, entry["stride"], entry["padding"], entry["dilation"], entry["groups"],
                             backend)
    except KeyError as exc:
        raise CorruptFileError(f"layer {name!r}: missing tensor or field {exc}") from exc
    raise CorruptFileError(f"layer {name!r}: unknown kind {entry['kind']!r}")
