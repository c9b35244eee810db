"""The accuracy / unique-weights trade-off curve on Fashion-MNIST, like the paper's δ figure: WFN over δ and
seeds in the paper's configuration, with the quantisation baselines' points on the same axes.

    python -m wfn_kernels.workflows.curve run --runs RUNS --models small-resnet --seeds 0 1 2 \\
        --deltas 0.0075 0.01 0.015 --methods wfn apot4 uniform4
    python -m wfn_kernels.workflows.curve report --runs RUNS --out bench/results/curve

``run`` is resumable: every point (model, seed, method[, δ]) is one sealed JSON file in RUNS/points and a
point already there is skipped; an interrupted WFN run resumes from its checkpoint, an interrupted baseline
fine-tune from its last finished epoch. Every seed has one float baseline (8 epochs), shared by all its
points. Points are counted with fixing.metrics.count_values on every named parameter set.

Settings (stated in the report): WFN is ``WFNConfig.paper(relative_tolerance=δ, seed=seed)`` verbatim where
the relaxed schedule is defined (δ·N < 1, i.e. δ < 0.1 for the 10-step schedule); at δ >= 0.1 it is the
same with ``relax_tolerance=False`` (the only change, since 10δ reaches 1). The baselines get the same
fine-tuning budget as WFN: as many epochs as the paper schedule trains (27), Adam at ``--quant-lr``, the
same per-epoch shuffles.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .._optional import progress as _progress
from ..fixing.baselines import apot_attach, uniform_attach
from ..fixing.baselines._ste import freeze, train_epoch
from ..fixing.config import WFNConfig
from ..fixing.metrics import PARAMETER_SETS, count_values
from ..format.container import read_safetensors, read_sealed_json, write_sealed_json, write_sealed_safetensors
from . import data, models, train
from .curve_report import BASELINES, DELTAS, POINT_KIND, point_name, report, run_dir_name
from .pipeline import RunSpec, ensure_baseline, load_saved_model, read_summary, run, run_status

CKPT_KIND = "wfn-baseline-finetune"
BASELINE_EPOCHS = 8
BASELINE_LR = 1e-2
BATCH = 128
QUANT_LR = 1e-4
METHODS = {"apot3": lambda m: apot_attach(m, 3), "apot4": lambda m: apot_attach(m, 4),
           "apot5": lambda m: apot_attach(m, 5), "uniform4": lambda m: uniform_attach(m, 4)}
assert tuple(METHODS) == BASELINES
COUNTED = ("unique_nonzero", "unique", "entropy_bits", "entropy_nonzero_bits", "zero_fraction")


def wfn_config(delta: float, seed: int) -> WFNConfig:
    """The paper's configuration at ``delta``; without relaxation only where 10δ would reach 1."""
    relax = delta * len(WFNConfig().fix_fractions) < 1
    return WFNConfig.paper(relative_tolerance=delta, seed=seed, relax_tolerance=relax)


def budget_epochs(cfg: WFNConfig) -> int:
    """Training epochs of a WFN run: first_epochs, then epochs_per_iteration after each fixing but the last."""
    return cfg.first_epochs + cfg.epochs_per_iteration * (cfg.num_iterations - 1)


@dataclass(frozen=True)
class Where:
    """Where and on what the points run: the working directory, the dataset and the baseline training."""

    runs: Path
    dataset: str = "fashion-mnist"
    data_dir: str | None = None
    baseline_epochs: int = BASELINE_EPOCHS
    progress: bool = True

    def baseline_path(self, model: str, seed: int) -> Path:
        return self.runs / f"baseline_{model}_s{seed}.safetensors"

    def spec(self, model: str, seed: int, cfg: WFNConfig, out: Path) -> RunSpec:
        return RunSpec(dataset=self.dataset, out=str(out), model=model, config=cfg, data_dir=self.data_dir,
                       baseline=str(self.baseline_path(model, seed)), baseline_epochs=self.baseline_epochs,
                       baseline_lr=BASELINE_LR, batch_size=BATCH, progress=self.progress,
                       resume=run_status(out) == "interrupted")

    def splits(self):
        """(train split without the validation tenth, as the pipeline trains on, test split)."""
        train_split, test_split = data.load(self.dataset, self.data_dir)
        return data.validation_split(train_split, 0.1, seed=0)[0], test_split


def _counts(model) -> dict:
    out = {}
    for name in PARAMETER_SETS:
        c = count_values(model, name)
        out.update({f"{k}:{name}": c[k] for k in COUNTED})
    return out


def wfn_point(w: Where, model: str, seed: int, delta: float) -> dict:
    """Run (or resume, or read back) the WFN run of one point; its row."""
    cfg = wfn_config(delta, seed)
    out = w.runs / run_dir_name(model, seed, delta)
    if run_status(out) == "finished":
        s = read_summary(out)
        theirs = WFNConfig.from_dict(s["config"]).to_dict()  # fields added since take their defaults
        if theirs != cfg.to_dict() or s["model"] != model or s["dataset"] != w.dataset:
            diff = sorted(k for k, v in cfg.to_dict().items() if theirs.get(k) != v)
            raise ValueError(f"{out} holds a run with other settings ({', '.join(diff) or 'model'}); move it away")
        fixed, _, _ = load_saved_model(out / "model.safetensors")
        r = {"baseline_accuracy": s["baseline_accuracy"], "test_accuracy": s["test_accuracy"],
             "fix_seconds": s["fix_seconds"], "fix_cpu_seconds": s.get("fix_cpu_seconds")}
    else:
        res = run(w.spec(model, seed, cfg, out))
        fixed = res["model"]
        r = {k: res[k] for k in ("baseline_accuracy", "test_accuracy", "fix_seconds", "fix_cpu_seconds")}
    return {"model": model, "seed": seed, "method": "wfn", "delta": delta, "relax": cfg.relax_tolerance,
            "epochs": budget_epochs(cfg), "baseline_accuracy": r["baseline_accuracy"],
            "accuracy": r["test_accuracy"], "seconds": r["fix_seconds"], "cpu_seconds": r["fix_cpu_seconds"],
            **_counts(fixed)}


def float_baseline(w: Where, model: str, seed: int):
    """(the seed's float baseline, trained as a WFN point's would be if missing, train split, test split)."""
    train_split, test_split = w.splits()
    torch.manual_seed(seed)  # as the pipeline does before building the model
    net = models.build(model)
    ensure_baseline(net, w.baseline_path(model, seed), train_split,
                    w.spec(model, seed, wfn_config(0.01, seed), w.runs / "unused"))
    return net, train_split, test_split


def _save_ckpt(path: Path, q, opt, epoch: int, meta: dict) -> None:
    tensors = {f"model.{k}": v.detach().contiguous() for k, v in q.state_dict().items()}
    for i, st in opt.state_dict()["state"].items():
        tensors.update({f"opt.{i}.{k}": torch.as_tensor(v).contiguous() for k, v in st.items()})
    write_sealed_safetensors(path, tensors, {**meta, "epochs_done": str(epoch)}, kind=CKPT_KIND)


def _load_ckpt(path: Path, q, opt, meta: dict) -> int:
    """Epochs already done (0 without a checkpoint); restores the model and optimiser state."""
    if not path.exists():
        return 0
    _, m, tensors = read_safetensors(path, kind=CKPT_KIND, what="baseline fine-tune checkpoint")
    if any(m.get(k) != v for k, v in meta.items()):
        raise ValueError(f"{path} was written with other settings ({ {k: m.get(k) for k in meta} }); delete it")
    q.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    state = {}
    for k, v in tensors.items():
        if k.startswith("opt."):
            _, i, name = k.split(".", 2)
            state.setdefault(int(i), {})[name] = v
    opt.load_state_dict({"state": state, "param_groups": opt.state_dict()["param_groups"]})
    return int(m["epochs_done"])


def _ckpt_path(w: Where, model: str, seed: int, method: str) -> Path:
    return w.runs / f"{point_name(model, seed, method)}.ckpt.safetensors"


def quant_point(w: Where, model: str, seed: int, method: str, epochs: int, lr: float = QUANT_LR) -> dict:
    """Quantise the seed's baseline with ``method`` and fine-tune it ``epochs`` epochs (checkpointed)."""
    if method not in METHODS:
        raise ValueError(f"unknown baseline method {method!r}; choose one of {sorted(METHODS)} or wfn")
    net, train_split, test_split = float_baseline(w, model, seed)
    base_acc = train.evaluate(net, test_split.loader(512))
    q, layers = METHODS[method](net)
    torch.manual_seed(seed)
    opt = torch.optim.Adam(q.parameters(), lr=lr)
    ckpt = _ckpt_path(w, model, seed, method)
    meta = {"model": model, "seed": str(seed), "method": method, "epochs": str(epochs), "lr": repr(lr)}
    done = _load_ckpt(ckpt, q, opt, meta)
    t0, c0 = time.perf_counter(), time.process_time()
    for e in _progress(range(done, epochs), desc=f"{method} fine-tune", disable=not w.progress, unit="epoch"):
        loss = train_epoch(q, train_split.loader(BATCH, shuffle=True, seed=seed * 1000 + e), opt)
        if not torch.isfinite(torch.tensor(loss)):
            raise FloatingPointError(f"{method} fine-tune of {model} seed {seed}: loss {loss} at epoch {e}")
        _save_ckpt(ckpt, q, opt, e + 1, meta)
    freeze(layers)
    row = {"model": model, "seed": seed, "method": method, "delta": None, "relax": None, "epochs": epochs,
           "baseline_accuracy": base_acc, "accuracy": train.evaluate(q, test_split.loader(512)),
           "seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - c0, **_counts(q)}
    return row


def run_points(args) -> int:
    w = Where(Path(args.runs), args.dataset, args.data_dir, args.baseline_epochs, not args.no_progress)
    (w.runs / "points").mkdir(parents=True, exist_ok=True)
    if args.threads:
        torch.set_num_threads(args.threads)
    budget = args.epochs if args.epochs is not None else budget_epochs(wfn_config(0.01, 0))
    todo = [(s, m, meth, d) for s in args.seeds for m in args.models for meth in args.methods
            for d in (args.deltas if meth == "wfn" else [None])]
    for seed, model, method, delta in todo:
        path = w.runs / "points" / f"{point_name(model, seed, method, delta)}.json"
        if path.exists():
            read_sealed_json(path, kind=POINT_KIND)  # a damaged point is an error, not a skip
            continue
        print(f"[curve] {path.stem}", flush=True)
        row = wfn_point(w, model, seed, delta) if method == "wfn" else quant_point(w, model, seed, method, budget,
                                                                                   args.quant_lr)
        row["dataset"] = w.dataset
        write_sealed_json(path, row, kind=POINT_KIND)
        print(f"[curve] {path.stem}: accuracy {row['accuracy']:.2f} (baseline {row['baseline_accuracy']:.2f}), "
              f"unique non-zero {row['unique_nonzero:all']} (all), entropy {row['entropy_bits:all']:.3f} bits",
              flush=True)
        if method != "wfn":
            _ckpt_path(w, model, seed, method).unlink(missing_ok=True)
    return 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m wfn_kernels.workflows.curve", description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="compute the missing points", formatter_class=p.formatter_class)
    r.add_argument("--runs", required=True, help="working directory (baselines, WFN runs, points/)")
    r.add_argument("--models", nargs="+", default=["small-resnet", "small-cnn"], choices=sorted(models.MODELS))
    r.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    r.add_argument("--deltas", type=float, nargs="+", default=list(DELTAS), help="δ values of the WFN points")
    r.add_argument("--methods", nargs="+", default=["wfn", *METHODS], choices=["wfn", *METHODS])
    r.add_argument("--epochs", type=int, default=None,
                   help="baseline fine-tuning epochs (default: the WFN paper schedule's, 27)")
    r.add_argument("--quant-lr", type=float, default=QUANT_LR, help="baseline fine-tuning learning rate (Adam)")
    r.add_argument("--dataset", choices=data.DATASETS, default="fashion-mnist")
    r.add_argument("--data-dir", default=None, help="Fashion-MNIST idx directory")
    r.add_argument("--baseline-epochs", type=int, default=BASELINE_EPOCHS, help="float baseline training epochs")
    r.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    r.add_argument("--no-progress", action="store_true", help="hide progress bars")
    rep = sub.add_parser("report", help="CSV, PNG and markdown of the points there are",
                         formatter_class=p.formatter_class)
    rep.add_argument("--runs", required=True, nargs="+", help="directories holding points/")
    rep.add_argument("--out", default="bench/results/curve")
    return p


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    if args.cmd == "run":
        bad = [d for d in args.deltas if not 0 < d < 1]
        if bad:
            raise SystemExit(f"error: --deltas must lie in (0, 1), got {bad}")
        if (args.epochs is not None and args.epochs < 0) or args.baseline_epochs < 1:
            raise SystemExit(f"error: --epochs must be >= 0 and --baseline-epochs >= 1, got {args.epochs}, "
                             f"{args.baseline_epochs}")
        return run_points(args)
    return report([Path(r) for r in args.runs], Path(args.out))


if __name__ == "__main__":
    sys.exit(main())
