"""Save and load packed models: safetensors tensors plus a small JSON header. No pickle anywhere.

File = one safetensors file holding the model's whole state dict (packed codes, local codebooks, biases
and every other tensor) with string metadata:

- ``wfn_format``: ``"wfn-packed"``; ``wfn_header``: JSON ``{"format_version": 1, "layers": [...],
  "global_codebook": [...], "checksums": {tensor name: sha256 hex}}``.

Loading needs the float model's architecture (an instance of the same class): the header says which
layers are WFN layers and with what geometry; the SHA-256 of every tensor is checked, so a truncated or
tampered file raises :class:`CorruptFileError` naming what is wrong.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import torch
from torch import nn

from .nn import WFNConv2d, WFNLinear, _set_submodule, wfn_modules
from .packing import PackedWeight

FORMAT = "wfn-packed"
FORMAT_VERSION = 1


class CorruptFileError(ValueError):
    """The file is not a valid packed model (truncated, tampered, wrong format or version)."""


def _digest(t: torch.Tensor) -> str:
    return hashlib.sha256(t.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()).hexdigest()


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
    from safetensors.torch import save_file

    layers = [_layer_entry(n, m) for n, m in wfn_modules(model)]
    if not layers:
        raise ValueError("save_packed: the model has no WFN layers; call wfn_kernels.nn.convert(model) first")
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    header = {"format_version": FORMAT_VERSION, "layers": layers,
              "global_codebook": global_codebook.to_list() if global_codebook is not None else None,
              "checksums": {k: _digest(v) for k, v in tensors.items()}}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata={"wfn_format": FORMAT, "wfn_header": json.dumps(header)})
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def read_packed(path) -> tuple[dict, dict[str, torch.Tensor]]:
    """(header, tensors) of a packed-model file, verified; raises CorruptFileError on any damage."""
    from safetensors import SafetensorError
    from safetensors.torch import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"packed model {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, RuntimeError) as exc:
        raise CorruptFileError(f"{path} is not a readable safetensors file (truncated or damaged?): {exc}") from exc
    if meta.get("wfn_format") != FORMAT:
        raise CorruptFileError(f"{path} is not a packed WFN model (wfn_format={meta.get('wfn_format')!r})")
    try:
        header = json.loads(meta["wfn_header"])
    except (KeyError, json.JSONDecodeError) as exc:
        raise CorruptFileError(f"{path}: malformed wfn_header metadata ({exc})") from exc
    if header.get("format_version") != FORMAT_VERSION:
        raise CorruptFileError(f"{path}: format_version {header.get('format_version')!r} is not supported "
                               f"(this build reads version {FORMAT_VERSION})")
    sums = header.get("checksums", {})
    if set(sums) != set(tensors):
        raise CorruptFileError(f"{path}: tensor list does not match the header (missing or extra: "
                               f"{sorted(set(sums) ^ set(tensors))[:5]})")
    for k, t in tensors.items():
        if _digest(t) != sums[k]:
            raise CorruptFileError(f"{path}: checksum mismatch for tensor {k!r}; the file was modified")
    return header, tensors


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
        _set_submodule(model, name, _build_layer(entry, tensors, backend))
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
