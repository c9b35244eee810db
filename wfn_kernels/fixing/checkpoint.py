"""Atomic, sealed per-iteration checkpoints of a WFN run: safetensors for tensors, JSON for everything else.

Layout of a run directory:
    state-XX.safetensors  model state_dict ("model.<key>"), fixed masks ("fixed.<param>", uint8) and the
                          codebook ("centres") after iteration XX (``wfn_format = "wfn-checkpoint"``)
    checkpoint.json       the commit point: {"iteration", "state_file", "state_sha256", "config",
                          "fingerprint", "history"} (``wfn_format = "wfn-checkpoint-index"``)

Both files carry a SHA-256 over every byte (``wfn_kernels.format.container``'s seal) and the index also
holds the digest of the state file it names, so a damaged, truncated or swapped file is refused with
CorruptFileError naming it. Each file is written to a temporary name, fsynced and moved into place with
os.replace, and checkpoint.json is replaced last, so a run killed at any instant leaves the previous
complete checkpoint. Nothing is unpickled: tensors come from safetensors, metadata from JSON.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..format.container import (CorruptFileError, file_digest, read_safetensors, read_sealed_json,
                                write_sealed_json, write_sealed_safetensors)

FORMAT = 2
INDEX = "checkpoint.json"
STATE_KIND = "wfn-checkpoint"
INDEX_KIND = "wfn-checkpoint-index"


def save(run_dir, iteration: int, model: torch.nn.Module, fixed: dict, centres: torch.Tensor | None,
         meta: dict) -> Path:
    """Write the state after ``iteration`` and commit it. ``fixed``: {param name: bool mask}."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.{k}": v.detach().cpu().clone().contiguous() for k, v in model.state_dict().items()}
    tensors.update({f"fixed.{k}": m.detach().cpu().to(torch.uint8).contiguous() for k, m in fixed.items()})
    if centres is not None:
        tensors["centres"] = centres.detach().cpu().float().contiguous()
    state_name = f"state-{iteration:02d}.safetensors"
    write_sealed_safetensors(run_dir / state_name, tensors, {"iteration": str(iteration)}, kind=STATE_KIND)
    index = {"format": FORMAT, "iteration": iteration, "state_file": state_name,
             "state_sha256": file_digest(run_dir / state_name), **meta}
    write_sealed_json(run_dir / INDEX, index, kind=INDEX_KIND)
    for old in run_dir.glob("state-*.safetensors"):
        if old.name != state_name:
            old.unlink(missing_ok=True)
    return run_dir / INDEX


def load(run_dir) -> tuple[dict, dict]:
    """(index dict, tensors dict) of the last committed checkpoint in ``run_dir``, every byte verified.

    Raises FileNotFoundError when there is none, CorruptFileError when a file is damaged or truncated."""
    run_dir = Path(run_dir)
    path = run_dir / INDEX
    if run_dir.exists() and not run_dir.is_dir():
        raise NotADirectoryError(f"checkpoint directory {run_dir} is a file, expected a directory")
    if not path.is_file():
        raise FileNotFoundError(f"no WFN checkpoint in {run_dir}: {INDEX} is missing")
    index = read_sealed_json(path, kind=INDEX_KIND)
    for key in ("format", "iteration", "state_file", "state_sha256", "fingerprint", "config", "history"):
        if key not in index:
            raise CorruptFileError(f"{path} is malformed: missing key {key!r}")
    if index["format"] != FORMAT:
        raise CorruptFileError(f"{path} has format {index['format']}, this version reads format {FORMAT}")
    state = run_dir / str(index["state_file"])
    if Path(index["state_file"]).name != index["state_file"]:
        raise CorruptFileError(f"{path}: state_file {index['state_file']!r} must be a file name in {run_dir}")
    if not state.is_file():
        raise FileNotFoundError(f"{path} names {state.name}, which is missing")
    _, meta, tensors = read_safetensors(state, kind=STATE_KIND, what="checkpoint state")
    if file_digest(state) != index["state_sha256"] or meta.get("iteration") != str(index["iteration"]):
        raise CorruptFileError(f"{state}: is not the state file {path} committed (digest or iteration differ; "
                               "files from two runs mixed?)")
    return index, tensors


def restore(model: torch.nn.Module, tensors: dict, names: list[str]) -> tuple[dict, torch.Tensor | None]:
    """Load model tensors into ``model``; return ({param name: fixed mask}, centres)."""
    sd = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    missing = set(model.state_dict()) ^ set(sd)
    if missing:
        raise ValueError(f"checkpoint does not match the model: differing state keys {sorted(missing)[:5]}")
    absent = [n for n in names if f"fixed.{n}" not in tensors]
    if absent:
        raise ValueError(f"checkpoint does not match the model: no fixed mask for {absent[:5]}")
    model.load_state_dict(sd)
    fixed = {n: tensors[f"fixed.{n}"].bool() for n in names}
    return fixed, tensors.get("centres")
