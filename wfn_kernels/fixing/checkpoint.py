"""Atomic per-iteration checkpoints of a WFN run: safetensors for tensors, JSON for everything else.

Layout of a run directory:
    state-XX.safetensors  model state_dict ("model.<key>"), fixed masks ("fixed.<param>", uint8) and the
                          codebook ("centres") after iteration XX
    checkpoint.json       the commit point: {"iteration", "state_file", "config", "fingerprint", "history"}

Each file is written to a temporary name, fsynced and moved into place with os.replace, and
checkpoint.json is replaced last, so a run killed at any instant leaves the previous complete checkpoint.
Nothing is unpickled: tensors come from safetensors, metadata from JSON.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

FORMAT = 1
INDEX = "checkpoint.json"


def _atomic_write(path: Path, writer) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    writer(tmp)
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


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
    _atomic_write(run_dir / state_name, lambda p: save_file(tensors, str(p)))
    index = {"format": FORMAT, "iteration": iteration, "state_file": state_name, **meta}
    _atomic_write(run_dir / INDEX, lambda p: p.write_text(json.dumps(index, indent=1)))
    for old in run_dir.glob("state-*.safetensors"):
        if old.name != state_name:
            old.unlink(missing_ok=True)
    return run_dir / INDEX


def load(run_dir) -> tuple[dict, dict]:
    """(index dict, tensors dict) of the last committed checkpoint in ``run_dir``."""
    path = Path(run_dir) / INDEX
    if not path.is_file():
        raise FileNotFoundError(f"no WFN checkpoint in {run_dir}: {INDEX} is missing")
    try:
        index = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from exc
    for key in ("format", "iteration", "state_file", "fingerprint", "config", "history"):
        if key not in index:
            raise ValueError(f"{path} is malformed: missing key {key!r}")
    if index["format"] != FORMAT:
        raise ValueError(f"{path} has format {index['format']}, this version reads format {FORMAT}")
    state = Path(run_dir) / index["state_file"]
    if not state.is_file():
        raise FileNotFoundError(f"{path} names {state.name}, which is missing")
    return index, load_file(str(state))


def restore(model: torch.nn.Module, tensors: dict, names: list[str]) -> tuple[dict, torch.Tensor | None]:
    """Load model tensors into ``model``; return ({param name: fixed mask}, centres)."""
    sd = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    missing = set(model.state_dict()) ^ set(sd)
    if missing:
        raise ValueError(f"checkpoint does not match the model: differing state keys {sorted(missing)[:5]}")
    model.load_state_dict(sd)
    fixed = {n: tensors[f"fixed.{n}"].bool() for n in names}
    return fixed, tensors.get("centres")
