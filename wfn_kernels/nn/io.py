"""Save and load converted models as packed files (the file format itself: wfn_kernels.format.container).

Loading needs the float model's architecture (an instance of the same class): the header says which
layers are WFN layers and with what geometry. Loading is all-or-nothing: every byte of the file is
verified (CorruptFileError), then the whole file is checked against the model (every layer present with
the same shape and conv geometry, every other tensor's name and shape), and only then is the model
changed; a failure leaves the model exactly as it was.
"""

from __future__ import annotations

import torch
from torch import nn

from ..format.container import CorruptFileError, read_packed, write_packed_file
from ..format.packing import PackedWeight
from .convert import set_submodule, wfn_modules
from .modules import WFNConv2d, WFNLinear


def _layer_entry(name: str, m, aliases: list[str]) -> dict:
    entry = {"name": name, "kind": type(m).__name__, "bits": m.bits, "bias": m.bias is not None,
             "codebook_size": int(m.codebook.numel()), "compute": m.compute}
    if aliases:
        entry["aliases"] = aliases
    if isinstance(m, WFNLinear):
        entry["shape"] = [m.out_features, m.in_features]
        entry["shift_add"] = bool(m.shift_add)
    else:
        entry.update(shape=list(m.weight_shape), stride=list(m.stride), padding=list(m.padding),
                     dilation=list(m.dilation), groups=m.groups)
    return entry


def _names_by_module(model: nn.Module) -> dict[int, list[str]]:
    """{id(module): every name it is registered under} (a shared module has several)."""
    names: dict[int, list[str]] = {}
    for n, m in model.named_modules(remove_duplicate=False):
        names.setdefault(id(m), []).append(n)
    return names


def save_packed(model: nn.Module, path, global_codebook=None) -> None:
    """Write ``model`` (already converted) to ``path`` atomically (temp file + rename). A module
    registered under several names is stored once; the header lists its other names (``aliases``)."""
    names = _names_by_module(model)
    layers = [_layer_entry(n, m, [a for a in names[id(m)] if a != n]) for n, m in wfn_modules(model)]
    if not layers:
        raise ValueError("save_packed: the model has no WFN layers; call wfn_kernels.convert(model) first")
    write_packed_file(path, model.state_dict(), layers,
                      global_codebook.to_list() if global_codebook is not None else None)


def load_packed(path, model: nn.Module, backend: str = "auto") -> nn.Module:
    """Load a packed model into ``model`` (an instance of the float architecture), in place; returns it.

    Each layer listed in the header must exist in ``model`` as an ``nn.Linear``/``nn.Conv2d`` (or WFN
    module) of the same shape (and, for convs, stride, padding, dilation and groups); it is replaced by the
    packed module under every name it is registered as, then every other tensor is loaded as
    ``load_state_dict(strict=True)`` would. All of it is checked before anything changes: on any error
    (ValueError, CorruptFileError) ``model`` is left untouched.
    """
    header, tensors = read_packed(path)
    names = _names_by_module(model)
    plan = []  # (names of the target, target module, new module)
    for entry in header["layers"]:
        name = entry["name"]
        try:
            target = model.get_submodule(name)
        except AttributeError:
            raise ValueError(f"{path}: layer {name!r} does not exist in the given model "
                             f"({type(model).__name__}); is this file from another model?") from None
        _check_target(path, entry, target)
        plan.append((names[id(target)], target, _build_layer(entry, tensors, backend)))
    _check_state(path, model, {n: new for ns, _, new in plan for n in ns}, tensors)
    done = []
    try:
        for ns, target, new in plan:
            for n in ns:
                set_submodule(model, n, new)
                done.append((n, target))
        model.load_state_dict(tensors, strict=True)
    except Exception:  # noqa: BLE001  (put every original back, whatever failed, then re-raise)
        for n, target in reversed(done):
            set_submodule(model, n, target)
        raise
    return model


def _check_state(path, model: nn.Module, swapped: dict[str, nn.Module], tensors: dict) -> None:
    """The state dict ``model`` would have after the swap must match the file's keys and shapes."""
    expected = {}
    for key, value in model.state_dict(keep_vars=True).items():
        if not any(key.startswith(n + ".") for n in swapped):
            expected[key] = value
    for n, new in swapped.items():
        expected.update({f"{n}.{k}": v for k, v in new.state_dict(keep_vars=True).items()})
    missing, extra = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
    if missing or extra:
        raise ValueError(f"{path}: tensors do not fit the given model {type(model).__name__}: missing "
                         f"{missing[:5]}, unexpected {extra[:5]}; is this file from another model?")
    for key, value in expected.items():
        if value is not None and tuple(value.shape) != tuple(tensors[key].shape):
            raise ValueError(f"{path}: tensor {key!r} has shape {tuple(tensors[key].shape)} in the file but "
                             f"{tuple(value.shape)} in the given model; is this file from another model?")


def _check_target(path, entry: dict, target: nn.Module) -> None:
    shape = tuple(entry["shape"])
    kind = entry.get("kind")
    if kind == "WFNLinear" and not isinstance(target, (nn.Linear, WFNLinear)) or \
            kind == "WFNConv2d" and not isinstance(target, (nn.Conv2d, WFNConv2d)):
        raise ValueError(f"{path}: layer {entry['name']!r} is a {kind} in the file but a "
                         f"{type(target).__name__} in the given model; is this file from another model?")
    w = getattr(target, "weight", None)
    have = tuple(w.shape) if isinstance(w, torch.Tensor) else getattr(target, "weight_shape", None)
    if isinstance(target, WFNLinear):
        have = (target.out_features, target.in_features)
    if have is not None:
        have = tuple(have)
    if have != shape:
        raise ValueError(f"{path}: layer {entry['name']!r} has weight shape {shape} in the file but {have} "
                         "in the given model; is this file from another model?")
    if kind == "WFNConv2d":
        for attr in ("stride", "padding", "dilation"):
            mine = getattr(target, attr)
            mine = list(mine) if isinstance(mine, (tuple, list)) else mine
            if mine != list(entry[attr]):
                raise ValueError(f"{path}: layer {entry['name']!r} has {attr} {list(entry[attr])} in the file "
                                 f"but {mine} in the given model; is this file from another model?")
        if int(target.groups) != int(entry["groups"]):
            raise ValueError(f"{path}: layer {entry['name']!r} has groups {entry['groups']} in the file but "
                             f"{target.groups} in the given model; is this file from another model?")


def _build_layer(entry: dict, tensors: dict, backend: str):
    name = entry["name"]
    try:
        pw = PackedWeight(tensors[f"{name}.packed"], tensors[f"{name}.codebook"], int(entry["bits"]),
                          tuple(entry["shape"]), tensors[f"{name}.global_index"])
        bias = tensors.get(f"{name}.bias") if entry["bias"] else None
        if entry["kind"] == "WFNLinear":
            return WFNLinear(pw, bias, backend, compute=_compute_of(entry))
        if entry["kind"] == "WFNConv2d":
            return WFNConv2d(pw, bias, entry["stride"], entry["padding"], entry["dilation"], entry["groups"],
                             backend, compute=_compute_of(entry))
    except KeyError as exc:
        raise CorruptFileError(f"layer {name!r}: missing tensor or field {exc}") from exc
    raise CorruptFileError(f"layer {name!r}: unknown kind {entry['kind']!r}")


def _compute_of(entry: dict) -> str:
    """The layer's compute mode; files written before compute modes carry ``shift_add`` (int8) or nothing."""
    mode = entry.get("compute", "int8" if entry.get("shift_add") else "float")
    if mode not in ("float", "bf16", "int8"):
        raise CorruptFileError(f"layer {entry.get('name')!r}: unknown compute mode {mode!r}")
    return mode
