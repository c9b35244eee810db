"""End-to-end WFN on the bundled data: baseline (train or load), fix, evaluate, write every output.

Used by ``wfn fix`` / ``wfn sweep`` (fixing/cli.py) and meant for ``wfn demo``:

    from wfn_kernels.fixing.pipeline import RunSpec, run
    result = run(RunSpec(dataset="digits", out="demo_out/wfn", config=WFNConfig(...)))
    result["model"]  # the fixed float model (every tracked weight on the codebook)
"""

from __future__ import annotations

import csv
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch.distributed as dist
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from ..fixing.config import WFNConfig
from ..fixing.metrics import network_metrics
from ..fixing.trainer import fix_weights
from . import data, models, train
from .plots import plot_run

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


def run(spec: RunSpec) -> dict:
    """Run the pipeline; returns {"model", "history", "metrics", "baseline_accuracy", "test_accuracy", ...}."""
    out = Path(spec.out)
    train_split, test_split = data.load(spec.dataset, spec.data_dir)
    train_split, val_split = data.validation_split(train_split, spec.val_fraction, seed=0)
    model = models.build(spec.model)
    t0 = time.perf_counter()
    base_path = Path(spec.baseline) if spec.baseline else out / "baseline.safetensors"
    _baseline(model, base_path, train_split, spec)
    test_loader = test_split.loader(512)
    base_acc = train.evaluate(model, test_loader)
    t1, cpu1 = time.perf_counter(), time.process_time()
    loader = _train_loader(train_split, spec.batch_size, spec.config.seed)
    model, history = fix_weights(model, loader, val_split.loader(512), spec.config, run_dir=out / "checkpoints",
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
    """history.json/.csv, metrics.json, summary.json, model.safetensors and the PNG plots."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "history.json").write_text(json.dumps(result["history"], indent=1))
    with open(out / "history.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction="ignore")
        w.writeheader()
        w.writerows(result["history"])
    (out / "metrics.json").write_text(json.dumps(result["metrics"], indent=1))
    summary = {k: result[k] for k in ("baseline_accuracy", "test_accuracy", "fix_seconds", "fix_cpu_seconds",
                                         "baseline_seconds")}
    summary.update({k: result["metrics"][k] for k in ("unique", "unique_nonzero", "entropy_bits",
                                                       "entropy_nonzero_bits", "index_bits", "packed_bytes")})
    summary.update(dataset=spec.dataset, model=spec.model, config=spec.config.to_dict())
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    save_model(result["model"], out / "model.safetensors", spec.model, spec.config.include_batchnorm)
    plot_run(result["history"], result["metrics"], out, result["baseline_accuracy"])


def save_model(model, path, model_name: str, include_batchnorm: bool) -> None:
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tmp = Path(path).with_name(f".{Path(path).name}.tmp")
    save_file(tensors, str(tmp), metadata={"wfn_model": model_name, "include_batchnorm": str(include_batchnorm)})
    os.replace(tmp, path)


def _baseline(model, path: Path, train_split, spec: RunSpec) -> None:
    if path.is_file():
        try:
            model.load_state_dict(load_file(str(path)))
        except RuntimeError as exc:
            raise ValueError(f"baseline {path} does not fit model {spec.model!r}: {exc}") from exc
        return
    if _world() > 1:
        raise ValueError(f"baseline {path} is missing; train it in a single process before using torchrun")
    train.train_classifier(model, train_split.loader(spec.batch_size, shuffle=True, seed=spec.config.seed),
                           spec.baseline_epochs, lr=spec.baseline_lr, seed=spec.config.seed, progress=spec.progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_model(model, path, spec.model, spec.config.include_batchnorm)


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
    """(model or None, tensors, metadata) of a safetensors file written by save_model or any state dict."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file {path} does not exist")
    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
    tensors = load_file(str(path))
    name = meta.get("wfn_model")
    if name in models.MODELS:
        model = models.build(name)
        model.load_state_dict(tensors)
        return model, tensors, meta
    return None, tensors, meta
