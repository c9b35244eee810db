"""End-to-end WFN on the bundled data: baseline (train or load), fix, evaluate, write every output.

Used by ``wfn fix`` / ``wfn sweep`` (fix_cli.py) and meant for ``wfn demo``:

    from wfn_kernels.workflows.pipeline import RunSpec, run
    result = run(RunSpec(dataset="digits", out="demo_out/wfn", config=WFNConfig(...)))
    result["model"]  # the fixed float model (every tracked weight on the codebook)

Every output is written atomically, and ``run.json`` (sealed: see wfn_kernels.format.container) is
written last with the SHA-256 of every other output: it marks the run finished, and :func:`verify_run` /
:func:`read_summary` check the outputs against it. ``model.safetensors`` and the baseline are sealed
``wfn-model`` files. A new run never replaces a finished or interrupted one in the same ``out`` unless
``RunSpec.overwrite`` (``wfn fix --overwrite``); ``resume`` continues an interrupted one.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from ..fixing import checkpoint
from ..fixing.config import WFNConfig
from ..format.container import (CorruptFileError, atomic_write, file_digest, read_safetensors, read_sealed_json,
                                write_sealed_json, write_sealed_safetensors)
from ..fixing.metrics import network_metrics
from ..fixing.trainer import fix_weights
from . import data, models, train
from .plots import plot_run

MODEL_KIND = "wfn-model"
RUN_KIND = "wfn-run"
MANIFEST = "run.json"
CHECKPOINTS = "checkpoints"
BASELINE = "baseline.safetensors"

CSV_FIELDS = ("iteration", "fraction", "tolerance", "epochs", "train_loss", "reg_loss", "n_fixed", "fixed_fraction",
              "n_centres", "moved", "max_order", "unique", "unique_nonzero", "entropy_bits",
              "entropy_nonzero_bits", "val_accuracy", "cluster_seconds", "seconds")


@dataclass(frozen=True)
class RunSpec:
    """One WFN run on a bundled dataset. ``baseline``: a safetensors state dict to start from; trained
    (``baseline_epochs`` epochs, lr ``baseline_lr``) and written there if it does not exist."""

    dataset: str = "digits"
    out: str = "wfn_out"
    model: str = "small-cnn"
    config: WFNConfig = field(default_factory=WFNConfig)
    data_dir: str | None = None
    baseline: str | None = None
    baseline_epochs: int = 10
    baseline_lr: float = 1e-2
    batch_size: int = 128
    val_fraction: float = 0.1
    resume: bool = False
    progress: bool = True
    overwrite: bool = False


class RunExistsError(ValueError):
    """``out`` already holds a finished or interrupted run and neither resume nor overwrite was asked."""


def run_status(out) -> str:
    """``"finished"`` (run.json present), ``"interrupted"`` (a checkpoint but no run.json) or ``"new"``."""
    out = Path(out)
    if (out / MANIFEST).exists():
        return "finished"
    if (out / CHECKPOINTS / checkpoint.INDEX).exists():
        return "interrupted"
    return "new"


def check_out(spec: RunSpec) -> None:
    """Refuse, before any work, an ``out`` that cannot take this run: a file, unwritable, a finished or
    interrupted run without overwrite/resume, ``resume`` with no (or a damaged) checkpoint."""
    out = Path(spec.out)
    if spec.resume and spec.overwrite:
        raise ValueError("resume and overwrite exclude each other: resume continues the run in "
                         f"{out}, overwrite starts it again")
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"output directory {out} is a file, expected a directory")
    probe = out
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise PermissionError(f"output directory {out} is not writable ({probe} is "
                              f"{'not a directory' if not probe.is_dir() else 'read-only'})")
    status = run_status(out)
    if spec.resume:
        if status == "new":
            raise FileNotFoundError(f"nothing to resume in {out}: {out / CHECKPOINTS / checkpoint.INDEX} is "
                                    "missing; run without resume to start")
        checkpoint.load(out / CHECKPOINTS)  # verified now, not after the baseline is trained
        return
    if status != "new" and not spec.overwrite:
        what = ("a finished run (run.json)" if status == "finished" else
                "an interrupted run (a checkpoint, no run.json; resume it with --resume)")
        raise RunExistsError(f"output directory {out} already holds {what}; pass --overwrite to replace "
                             "it, or choose another --out")


def clear_run(out) -> None:
    """Remove a previous run's outputs from ``out`` (before an overwrite): run.json first (the run is then
    no longer finished), the files it lists, the checkpoints and the default baseline."""
    out = Path(out)
    listed = []
    if (out / MANIFEST).is_file():
        try:
            listed = list(read_sealed_json(out / MANIFEST, kind=RUN_KIND)["files"])
        except (CorruptFileError, KeyError, TypeError):
            listed = []
        (out / MANIFEST).unlink()
    for name in listed + ["history.json", "history.csv", "metrics.json", "summary.json", "model.safetensors",
                          BASELINE]:
        if Path(name).name == name:
            (out / name).unlink(missing_ok=True)
    if (out / CHECKPOINTS).is_dir():
        shutil.rmtree(out / CHECKPOINTS)


def run(spec: RunSpec) -> dict:
    """Run the pipeline; returns {"model", "history", "metrics", "baseline_accuracy", "test_accuracy", ...}."""
    out = Path(spec.out)
    check_out(spec)
    torch.manual_seed(spec.config.seed)  # before the model is built: its initial weights follow --seed
    model = models.build(spec.model)
    train_split, test_split = data.load(spec.dataset, spec.data_dir)
    train_split, val_split = data.validation_split(train_split, spec.val_fraction, seed=0)
    if spec.overwrite and _rank() == 0:
        clear_run(out)
    t0 = time.perf_counter()
    base_path = Path(spec.baseline) if spec.baseline else out / BASELINE
    ensure_baseline(model, base_path, train_split, spec)
    test_loader = test_split.loader(512)
    base_acc = train.evaluate(model, test_loader)
    t1, cpu1 = time.perf_counter(), time.process_time()
    loader = _train_loader(train_split, spec.batch_size, spec.config.seed)
    model, history = fix_weights(model, loader, val_split.loader(512), spec.config, run_dir=out / CHECKPOINTS,
                                 resume=spec.resume, progress=spec.progress)
    result = {"model": model, "history": history, "baseline_accuracy": base_acc,
              "test_accuracy": train.evaluate(model, test_loader), "fix_seconds": time.perf_counter() - t1,
              "fix_cpu_seconds": time.process_time() - cpu1,
              "baseline_seconds": t1 - t0,
              "metrics": network_metrics(model, spec.config.include_batchnorm)}
    if _rank() == 0:
        write_outputs(result, spec, out)
    return result


def write_outputs(result: dict, spec: RunSpec, out: Path) -> None:
    """history.json/.csv, metrics.json, summary.json, model.safetensors, the PNG plots, then run.json."""
    out.mkdir(parents=True, exist_ok=True)
    names = ["history.json", "history.csv", "metrics.json", "summary.json", "model.safetensors"]
    _write_text(out / "history.json", json.dumps(result["history"], indent=1))
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=CSV_FIELDS, extrasaction="ignore")
    w.writeheader()
    w.writerows(result["history"])
    _write_text(out / "history.csv", buf.getvalue())
    _write_text(out / "metrics.json", json.dumps(result["metrics"], indent=1))
    summary = {k: result[k] for k in ("baseline_accuracy", "test_accuracy", "fix_seconds", "fix_cpu_seconds",
                                         "baseline_seconds")}
    summary.update({k: result["metrics"][k] for k in ("unique", "unique_nonzero", "entropy_bits",
                                                       "entropy_nonzero_bits", "index_bits", "packed_bytes")})
    summary.update(dataset=spec.dataset, model=spec.model, config=spec.config.to_dict())
    _write_text(out / "summary.json", json.dumps(summary, indent=1))
    save_model(result["model"], out / "model.safetensors", spec.model, spec.config.include_batchnorm)
    plots = plot_run(result["history"], result["metrics"], out, result["baseline_accuracy"])
    names += [Path(p).name for p in plots if Path(p).parent == out]
    write_sealed_json(out / MANIFEST, {"model": spec.model, "dataset": spec.dataset,
                                       "files": {n: file_digest(out / n) for n in names}}, kind=RUN_KIND)


def _write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def verify_run(out) -> dict:
    """The run.json of a finished run with every file it lists checked; CorruptFileError naming the file
    that changed, FileNotFoundError when the run is not finished."""
    out = Path(out)
    if not (out / MANIFEST).is_file():
        raise FileNotFoundError(f"{out} holds no finished run: {MANIFEST} is missing")
    manifest = read_sealed_json(out / MANIFEST, kind=RUN_KIND)
    for name, digest in manifest["files"].items():
        path = out / name
        if not path.is_file():
            raise CorruptFileError(f"{path}: listed in {out / MANIFEST} but missing")
        if file_digest(path) != digest:
            raise CorruptFileError(f"{path}: checksum mismatch against {out / MANIFEST}; the file was modified "
                                   "or damaged after the run finished")
    return manifest


def read_summary(out) -> dict:
    """summary.json of a finished run, verified against run.json."""
    verify_run(out)
    return json.loads((Path(out) / "summary.json").read_text())


def save_model(model, path, model_name: str, include_batchnorm: bool, extra: dict | None = None) -> None:
    """The float state dict as a sealed ``wfn-model`` safetensors file naming its architecture
    (``wfn_model``: a bundled name or package.module:Class) so ``wfn stats`` / ``wfn-sim`` rebuild it."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = {"wfn_model": model_name, "include_batchnorm": str(include_batchnorm), **(extra or {})}
    write_sealed_safetensors(path, tensors, meta, kind=MODEL_KIND)


def _baseline_meta(spec: RunSpec) -> dict:
    return {"dataset": spec.dataset, "baseline_epochs": str(spec.baseline_epochs),
            "baseline_lr": repr(spec.baseline_lr), "batch_size": str(spec.batch_size), "seed": str(spec.config.seed)}


def ensure_baseline(model, path: Path, train_split, spec: RunSpec) -> None:
    """Load the baseline at ``path`` into ``model`` (checked against the run's settings), or train it with
    the spec's baseline settings and write it there."""
    if path.exists():
        kind, meta, tensors = read_safetensors(path, what="baseline")
        if kind not in (None, MODEL_KIND):
            raise ValueError(f"baseline {path} is a {kind} file, not a model state dict")
        if kind == MODEL_KIND:  # trained by this pipeline: it must be the baseline this run asks for
            want = {"wfn_model": spec.model, **_baseline_meta(spec)}
            diff = sorted(k for k, v in want.items() if k in meta and meta[k] != v)
            if diff:
                raise ValueError(f"baseline {path} was trained with other settings ("
                                 + ", ".join(f"{k} {meta[k]} here {want[k]}" for k in diff)
                                 + "); delete it, pass --overwrite (the baseline in --out), or --baseline FILE")
        try:
            model.load_state_dict(tensors)
        except RuntimeError as exc:
            raise ValueError(f"baseline {path} does not fit model {spec.model!r}: "
                             f"{' '.join(str(exc).split())[:300]}") from None
        return
    if _world() > 1:
        raise ValueError(f"baseline {path} is missing; train it in a single process before using torchrun")
    train.train_classifier(model, train_split.loader(spec.batch_size, shuffle=True, seed=spec.config.seed),
                           spec.baseline_epochs, lr=spec.baseline_lr, seed=spec.config.seed, progress=spec.progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_model(model, path, spec.model, spec.config.include_batchnorm, _baseline_meta(spec))


def _train_loader(split, batch_size: int, seed: int) -> DataLoader:
    if _world() > 1:
        ds = TensorDataset(split.images, split.labels)
        return DataLoader(ds, batch_size=batch_size, sampler=DistributedSampler(ds, shuffle=True, seed=seed))
    return split.loader(batch_size, shuffle=True, seed=seed)


def init_distributed() -> None:
    """Join the torchrun process group (gloo, CPU) when launched with WORLD_SIZE > 1."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("gloo")


def _rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def _world() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def load_saved_model(path):
    """(model or None, tensors, metadata) of a safetensors file written by save_model (every byte verified)
    or any plain safetensors state dict (model None unless its metadata names an architecture)."""
    kind, meta, tensors = read_safetensors(path, what="model file")
    if kind not in (None, MODEL_KIND):
        raise ValueError(f"{path} is a {kind} file, not a model state dict")
    name = meta.get("wfn_model")
    if name is None:
        return None, tensors, meta
    model = models.build(name)
    try:
        model.load_state_dict(tensors)
    except RuntimeError as exc:
        raise ValueError(f"{path}: does not fit its model {name!r}: {' '.join(str(exc).split())[:300]}") from None
    return model, tensors, meta
