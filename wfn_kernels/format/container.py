"""The packed-model file and the sealed files every writer of the package uses. No pickle anywhere.

**Sealed files.** Every file the package writes for itself to read back (packed models, ``wfn fix``
models, checkpoints, run manifests) carries a SHA-256 over *all* of its bytes: the metadata key
``wfn_file_sha256`` holds the digest of the whole file computed with those 64 hex digits set to ``0``.
It covers the 8-byte length prefix, the JSON header (tensor table, padding), the metadata and every
tensor byte, so any change anywhere is detected. Safetensors files also carry ``wfn_tensor_sha256``
(JSON ``{tensor: sha256}``) and ``wfn_meta_sha256`` so that a mismatch names the damaged part.
A mismatch raises :class:`CorruptFileError` naming the file and the part; JSON files use the same key.
Writes are atomic (temporary file, fsync, rename).

**Packed models** (``wfn_format = "wfn-packed"``): the model's whole state dict (packed codes, local
codebooks, biases and every other tensor) plus ``wfn_header``: JSON ``{"format_version": 2,
"layers": [...], "global_codebook": [...], "checksums": {tensor name: sha256 hex}, "aliases": {...}}``.
Each ``layers`` entry describes one WFN layer: ``name``, ``kind`` (``WFNLinear`` / ``WFNConv2d``),
``bits``, ``bias``, ``codebook_size``, ``shape`` and, for convs, ``stride``, ``padding``, ``dilation``,
``groups``. The layer's tensors are ``{name}.packed``, ``{name}.codebook``, ``{name}.global_index`` and
``{name}.bias``. ``aliases`` maps a state-dict key to the key whose tensor it shares (a module
registered under two names): the tensor is stored once.

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
import re
import tempfile
from pathlib import Path

import torch

from .packing import unpack_codes

FORMAT = "wfn-packed"
FORMAT_VERSION = 2
SEAL_KEY = "wfn_file_sha256"
TENSORS_KEY = "wfn_tensor_sha256"
META_KEY = "wfn_meta_sha256"
KIND_KEY = "wfn_format"
_PLACEHOLDER = "0" * 64
_SEAL_RE = re.compile(rb'"' + SEAL_KEY.encode() + rb'"\s*:\s*"([0-9a-f]{64})"')
_CHUNK = 1 << 20


class CorruptFileError(ValueError):
    """The file is not a valid file of the kind expected (truncated, damaged, wrong format or version);
    the message names the file and the damaged part."""


def tensor_digest(t: torch.Tensor) -> str:
    """SHA-256 (hex) of a tensor's raw bytes in row-major order."""
    return hashlib.sha256(t.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()).hexdigest()


def atomic_write(path, write) -> None:
    """Call ``write(tmp_path)`` on a temporary file next to ``path``, fsync it, then rename it over
    ``path``: a reader sees the old file or the whole new one, never a partial write."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


# --- the whole-file seal ------------------------------------------------------------------------------

def _digest_with_hole(path, start: int) -> str:
    """SHA-256 of the file at ``path`` with the 64 bytes at ``start`` read as ASCII zeros."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        done = 0
        while True:
            chunk = f.read(_CHUNK)
            if not chunk:
                break
            lo, hi = max(start - done, 0), min(start + 64 - done, len(chunk))
            if lo < hi:
                chunk = chunk[:lo] + b"0" * (hi - lo) + chunk[hi:]
            h.update(chunk)
            done += len(chunk)
    return h.hexdigest()


def _seal_position(head: bytes) -> int | None:
    """Offset (within ``head``) of the 64 hex digits of the one seal, or None if there is none."""
    found = list(_SEAL_RE.finditer(head))
    if len(found) != 1:
        return None
    return found[0].start(1)


def _seal_file(path, head_offset: int, head: bytes) -> None:
    """Replace the placeholder digest in a just-written file by the digest of the whole file."""
    pos = _seal_position(head)
    if pos is None or head[pos:pos + 64] != _PLACEHOLDER.encode():
        raise RuntimeError(f"{path}: the seal placeholder was not written as expected")  # a bug, not bad input
    digest = _digest_with_hole(path, head_offset + pos)
    with open(path, "rb+") as f:
        f.seek(head_offset + pos)
        f.write(digest.encode())


def _check_seal(path, head_offset: int, head: bytes, what: str) -> bool:
    """Raise CorruptFileError unless the seal matches; returns False when the digest differs (so the
    caller can name the damaged part), True when it matches."""
    pos = _seal_position(head)
    if pos is None:
        raise CorruptFileError(f"{path}: {what}: no whole-file checksum ({SEAL_KEY}) found; the file is "
                               "damaged, or was written by a wfn-kernels version without checksums (re-save it)")
    stored = head[pos:pos + 64].decode()
    return _digest_with_hole(path, head_offset + pos) == stored


# --- sealed JSON ----------------------------------------------------------------------------------------

def write_sealed_json(path, obj: dict, *, kind: str) -> None:
    """Write ``obj`` (a dict) as JSON with ``wfn_format = kind`` and a whole-file seal, atomically."""
    if SEAL_KEY in obj or KIND_KEY in obj:
        raise ValueError(f"write_sealed_json: {SEAL_KEY!r} and {KIND_KEY!r} are reserved keys")
    text = json.dumps({KIND_KEY: kind, **obj, SEAL_KEY: _PLACEHOLDER}, indent=1).encode()

    def write(tmp):
        Path(tmp).write_bytes(text)
        _seal_file(tmp, 0, text)

    atomic_write(path, write)


def read_sealed_json(path, *, kind: str) -> dict:
    """The dict written by :func:`write_sealed_json`, verified (CorruptFileError on any changed byte)."""
    path = _existing_file(path, f"{kind} file")
    data = path.read_bytes()
    if not _check_seal(path, 0, data, "JSON"):
        raise CorruptFileError(f"{path}: checksum mismatch: the file was modified or damaged after it was written")
    try:
        obj = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:  # the seal matched: written so by someone else
        raise CorruptFileError(f"{path}: JSON: not valid JSON ({exc})") from None
    if not isinstance(obj, dict) or obj.get(KIND_KEY) != kind:
        found = obj.get(KIND_KEY) if isinstance(obj, dict) else type(obj).__name__
        raise CorruptFileError(f"{path}: is not a {kind} file ({KIND_KEY}={found!r})")
    obj.pop(SEAL_KEY)
    obj.pop(KIND_KEY)
    return obj


def file_digest(path) -> str:
    """SHA-256 (hex) of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


# --- sealed safetensors ---------------------------------------------------------------------------------

def _meta_digest(metadata: dict) -> str:
    rest = {k: v for k, v in metadata.items() if k not in (SEAL_KEY, META_KEY)}
    return hashlib.sha256(json.dumps(rest, sort_keys=True).encode()).hexdigest()


def write_sealed_safetensors(path, tensors: dict[str, torch.Tensor], metadata: dict[str, str], *,
                             kind: str) -> None:
    """Write ``tensors`` + string ``metadata`` as a safetensors file with ``wfn_format = kind``, per-tensor
    and metadata digests and the whole-file seal, atomically. Tensors must not share memory."""
    from safetensors.torch import save_file

    reserved = {SEAL_KEY, TENSORS_KEY, META_KEY, KIND_KEY} & set(metadata)
    if reserved:
        raise ValueError(f"write_sealed_safetensors: metadata keys {sorted(reserved)} are reserved")
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    meta = {KIND_KEY: kind, **metadata, TENSORS_KEY: json.dumps({k: tensor_digest(v) for k, v in tensors.items()})}
    meta[META_KEY] = _meta_digest(meta)
    meta[SEAL_KEY] = _PLACEHOLDER

    def write(tmp):
        save_file(tensors, tmp, metadata=meta)
        with open(tmp, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            head = f.read(n)
        _seal_file(tmp, 8, head)

    atomic_write(path, write)


def _existing_file(path, what: str) -> Path:
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{what} {path} is a directory, expected a file")
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist")
    return path


def _raw_header(path: Path) -> tuple[bytes, dict]:
    """(JSON header bytes, parsed header) of a safetensors file; CorruptFileError naming the part."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise CorruptFileError(f"{path}: length prefix: the file has {size} bytes, fewer than the 8-byte "
                                   "header length of a safetensors file (truncated?)")
        n = int.from_bytes(prefix, "little")
        if n == 0 or n > size - 8:
            raise CorruptFileError(f"{path}: length prefix: says the JSON header has {n} bytes but {size - 8} "
                                   "follow (truncated file or damaged prefix)")
        head = f.read(n)
    try:
        doc = json.loads(head)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CorruptFileError(f"{path}: JSON header: not valid JSON ({exc}; truncated or damaged)") from None
    if not isinstance(doc, dict):
        raise CorruptFileError(f"{path}: JSON header: expected an object, got {type(doc).__name__}")
    return head, doc


def sealed_kind(path) -> str | None:
    """The ``wfn_format`` a safetensors file written by this package declares; None for a foreign
    safetensors file (no ``wfn`` metadata at all and no seal). A file that is ours but whose kind key
    was damaged reports ``"damaged"``: :func:`read_safetensors` then names the damage."""
    path = _existing_file(path, "file")
    head, doc = _raw_header(path)
    meta = doc.get("__metadata__")
    meta = meta if isinstance(meta, dict) else {}
    kind = meta.get(KIND_KEY)
    if isinstance(kind, str) and kind.startswith("wfn-"):
        return kind
    ours = _SEAL_RE.search(head) is not None or any(str(k).startswith("wfn") for k in meta)
    return "damaged" if ours else None


def read_safetensors(path, *, kind: str | None = None, what: str = "file") -> tuple[str | None, dict, dict]:
    """(kind, metadata, tensors) of a safetensors file, every byte verified when the package wrote it.

    ``kind``: the ``wfn_format`` required (CorruptFileError if the file is another kind or foreign); None
    accepts a foreign safetensors file too (returned unverified, with kind None: it carries no seal).
    The seal, tensor digests and metadata digest are removed from the returned metadata.
    """
    from safetensors import SafetensorError
    from safetensors.torch import safe_open

    path = _existing_file(path, what)
    head, doc = _raw_header(path)
    found = sealed_kind(path)
    if found is None and kind is not None:
        raise CorruptFileError(f"{path}: is not a {kind} file (no wfn metadata; a plain safetensors file?)")
    sealed = found is not None
    intact = _check_seal(path, 8, head, "metadata") if sealed else True
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, RuntimeError, ValueError) as exc:
        part = "JSON header (tensor table)" if sealed else "file"
        raise CorruptFileError(f"{path}: {part}: not a readable safetensors file (truncated or damaged?): "
                               f"{str(exc).splitlines()[0]}") from None
    if not intact:
        raise CorruptFileError(f"{path}: checksum mismatch in {_damaged_part(meta, tensors)}; the file was "
                               "modified or damaged after it was written")
    if sealed:
        if meta.get(KIND_KEY) != (kind or meta.get(KIND_KEY)):
            raise CorruptFileError(f"{path}: is a {meta.get(KIND_KEY)} file, not a {kind} file")
        for key in (SEAL_KEY, TENSORS_KEY, META_KEY):
            meta.pop(key, None)
    return (meta.get(KIND_KEY) if sealed else None), meta, tensors


def _damaged_part(meta: dict, tensors: dict) -> str:
    """Which part of a file whose seal does not match was changed (best effort, for the message)."""
    try:
        sums = json.loads(meta.get(TENSORS_KEY, ""))
    except (json.JSONDecodeError, TypeError):
        return f"the metadata ({TENSORS_KEY} is damaged)"
    bad = sorted(k for k, t in tensors.items() if sums.get(k) != tensor_digest(t))
    if bad or set(sums) != set(tensors):
        names = bad or sorted(set(sums) ^ set(tensors))
        return f"tensor {names[0]!r} (its bytes or its entry in the JSON header)"
    if meta.get(META_KEY) != _meta_digest(meta):
        return "the metadata"
    return "the length prefix, JSON header or the checksum itself (tensors and metadata are intact)"


# --- packed models -------------------------------------------------------------------------------------

def _dedupe_shared(tensors: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Keep one key per storage (a module registered under two names shares its tensors): (unique
    tensors, {alias key: kept key})."""
    kept, aliases, seen = {}, {}, {}
    for k, v in tensors.items():
        ident = (v.device, v.untyped_storage().data_ptr() if v.numel() else id(v), v.storage_offset(),
                 tuple(v.shape), tuple(v.stride()), v.dtype)
        if v.numel() and ident in seen:
            aliases[k] = seen[ident]
        else:
            seen[ident] = k
            kept[k] = v
    return kept, aliases


def write_packed_file(path, tensors: dict[str, torch.Tensor], layers: list[dict],
                      global_codebook: list[float] | None = None) -> None:
    """Write a packed-model file atomically: ``tensors`` (the state dict) and the ``layers`` header.
    Tensors shared under several keys are stored once (``aliases`` in the header)."""
    tensors, aliases = _dedupe_shared(tensors)
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    header = {"format_version": FORMAT_VERSION, "layers": layers, "global_codebook": global_codebook,
              "checksums": {k: tensor_digest(v) for k, v in tensors.items()}, "aliases": aliases}
    write_sealed_safetensors(path, tensors, {"wfn_header": json.dumps(header)}, kind=FORMAT)


def read_packed(path) -> tuple[dict, dict[str, torch.Tensor]]:
    """(header, tensors) of a packed-model file, every byte verified; raises CorruptFileError on any
    damage. Aliased keys (see the module docstring) are present in ``tensors``, sharing the tensor."""
    path = Path(path)
    _, meta, tensors = read_safetensors(path, kind=FORMAT, what="packed model")
    try:
        header = json.loads(meta["wfn_header"])
    except (KeyError, json.JSONDecodeError) as exc:
        raise CorruptFileError(f"{path}: metadata: malformed wfn_header ({exc})") from None
    if not isinstance(header, dict) or header.get("format_version") != FORMAT_VERSION:
        version = header.get("format_version") if isinstance(header, dict) else None
        raise CorruptFileError(f"{path}: format_version {version!r} is not supported "
                               f"(this build reads version {FORMAT_VERSION})")
    sums = header.get("checksums", {})
    if set(sums) != set(tensors):
        raise CorruptFileError(f"{path}: tensor list does not match the header (missing or extra: "
                               f"{sorted(set(sums) ^ set(tensors))[:5]})")
    for k, t in tensors.items():
        if tensor_digest(t) != sums[k]:
            raise CorruptFileError(f"{path}: checksum mismatch for tensor {k!r}; the file was modified")
    for alias, target in header.get("aliases", {}).items():
        if target not in tensors or alias in tensors:
            raise CorruptFileError(f"{path}: header alias {alias!r} -> {target!r} does not match the tensors")
        tensors[alias] = tensors[target]
    return header, tensors


def is_packed_file(path) -> bool:
    """Whether ``path`` is a safetensors file that declares itself a packed WFN model (not verified)."""
    try:
        return sealed_kind(path) == FORMAT
    except (OSError, ValueError):  # not a file, or not safetensors at all: not a packed file either
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
