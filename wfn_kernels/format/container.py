"""The packed-model file: safetensors tensors plus a JSON header. No pickle anywhere.

File = one safetensors file holding the model's whole state dict (packed codes, local codebooks, biases
and every other tensor) with string metadata:

- ``wfn_format``: ``"wfn-packed"``; ``wfn_header``: JSON ``{"format_version": 1, "layers": [...],
  "global_codebook": [...], "checksums": {tensor name: sha256 hex}}``.

Each ``layers`` entry describes one WFN layer: ``name``, ``kind`` (``WFNLinear`` / ``WFNConv2d``),
``bits``, ``bias``, ``codebook_size``, ``shape`` and, for convs, ``stride``, ``padding``, ``dilation``,
``groups``. The layer's tensors are ``{name}.packed``, ``{name}.codebook``, ``{name}.global_index`` and
``{name}.bias``. docs/packed-format.md describes the format byte by byte.

This module knows files, not modules: :func:`write_packed_file` / :func:`read_packed` move
(header, tensors) pairs, and :func:`decoded_weights` turns them into dense float weights. It is the
interface the simulator (``wfn_sim``) reads packed models through; ``wfn_kernels.nn`` builds modules
from it (``save_packed`` / ``load_packed``).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from pathlib import Path

import torch

from .packing import unpack_codes

FORMAT = "wfn-packed"
FORMAT_VERSION = 1


class CorruptFileError(ValueError):
    """The file is not a valid packed model (truncated, tampered, wrong format or version)."""


def tensor_digest(t: torch.Tensor) -> str:
    """SHA-256 (hex) of a tensor's raw bytes in row-major order."""
    return hashlib.sha256(t.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()).hexdigest()


def atomic_write(path, write) -> None:
    """Call ``write(tmp_path)`` on a temporary file next to ``path``, then rename it over ``path``: a
    reader sees the old file or the whole new one, never a partial write."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_packed_file(path, tensors: dict[str, torch.Tensor], layers: list[dict],
                      global_codebook: list[float] | None = None) -> None:
    """Write a packed-model file atomically: ``tensors`` (the state dict) and the ``layers`` header."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    header = {"format_version": FORMAT_VERSION, "layers": layers, "global_codebook": global_codebook,
              "checksums": {k: tensor_digest(v) for k, v in tensors.items()}}
    metadata = {"wfn_format": FORMAT, "wfn_header": json.dumps(header)}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


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
        if tensor_digest(t) != sums[k]:
            raise CorruptFileError(f"{path}: checksum mismatch for tensor {k!r}; the file was modified")
    return header, tensors


def is_packed_file(path) -> bool:
    """Whether ``path`` is a safetensors file that declares itself a packed WFN model (not verified)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            return (f.metadata() or {}).get("wfn_format") == FORMAT
    except Exception:  # noqa: BLE001  (not safetensors at all: not a packed file either)
        return False


def decoded_weights(header: dict, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``{layer name: dense float32 weight}`` (nn.Linear / nn.Conv2d weight shape) of every WFN layer."""
    out = {}
    for entry in header["layers"]:
        name, shape = entry["name"], [int(d) for d in entry["shape"]]
        try:
            packed, codebook = tensors[f"{name}.packed"], tensors[f"{name}.codebook"]
        except KeyError as exc:
            raise CorruptFileError(f"layer {name!r}: missing tensor {exc}") from None
        codes = unpack_codes(packed, int(entry["bits"]), math.prod(shape[1:]))
        if codes.numel() and int(codes.max()) >= codebook.numel():
            raise CorruptFileError(f"layer {name!r}: a code indexes past its {codebook.numel()}-value codebook")
        out[name] = codebook[codes].reshape(shape)
    return out
