"""The WFN fixing loop: train, re-cluster the whole network, fix, checkpoint (docs/algorithm.md §1, §3).

    for t in 0..N-1:
        train (first_epochs at t = 0, else epochs_per_iteration) on CE + α·L_reg, fixed weights frozen
        δ_t = max(δ, δ·(N - t)); cluster the whole tracked vector so int(n·p_t) weights are fixed
        write the fixed values, evaluate, checkpoint atomically

Fixed weights are kept exactly fixed by zeroing their gradients (so they add nothing to the clipped norm
or to Adam's moments) AND by writing their values back after every optimiser step (so weight decay or
momentum cannot move them either). Under torch.distributed the model trains as DDP; the clustering runs
on rank 0 only and its result is broadcast, so every rank holds bit-identical weights. Every iteration
re-seeds the RNGs from (seed, t), so a run resumed from the checkpoint of iteration t-1 replays exactly
the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from .._optional import progress as _progress
from . import checkpoint
from .guards import DivergenceError, accuracy_guard, check_finite_state, check_loss, reference_loss
from .loaders import iter_batches, model_device
from .clustering import cluster
from .config import WFNConfig
from .metrics import tensor_metrics
from .params import fingerprint, flatten, split_like, tracked_parameters, unflatten_into
from .regularizer import regularised_loss
from .rescale import rescale_bn_convs


class _State:
    """Masks, frozen values and codebook of the tracked parameters during a run."""

    def __init__(self, params):
        self.params = params
        self.fixed = {n: torch.zeros_like(p, dtype=torch.bool) for n, p in params}
        self.values = {n: p.detach().clone() for n, p in params}
        self.centres = None

    def freeze(self, fixed: dict, centres) -> None:
        self.fixed = {n: fixed[n].to(p.device) for n, p in self.params}
        self.values = {n: p.detach().clone() for n, p in self.params}
        self.centres = centres

    def free_weights(self) -> torch.Tensor:
        parts = [p[~self.fixed[n]] for n, p in self.params if not bool(self.fixed[n].all())]
        return torch.cat(parts) if parts else torch.zeros(0, device=self.params[0][1].device)

    @torch.no_grad()
    def mask_grads(self) -> None:
        for n, p in self.params:
            if p.grad is not None:
                p.grad[self.fixed[n]] = 0

    @torch.no_grad()
    def restore_fixed(self) -> None:
        for n, p in self.params:
            m = self.fixed[n]
            p[m] = self.values[n][m]


def fix_weights(model: nn.Module, train_loader, val_loader=None, config: WFNConfig | None = None, *,
                run_dir=None, resume: bool = False, progress: bool = True, on_iteration=None):
    """WFN-fix ``model`` (any nn.Module classifier returning logits) in place.

    train_loader / val_loader: iterables of (inputs, int64 labels) batches. run_dir: where the
    per-iteration checkpoints go (None: no checkpoints); resume: continue from run_dir's checkpoint.
    on_iteration(entry): called after every iteration on rank 0. Returns (model, history), history being
    one dict per iteration (fractions, δ_t, centres, accuracy, unique values, entropy, timings).
    """
    cfg = config or WFNConfig()
    params = tracked_parameters(model, cfg.include_batchnorm)
    _check_finite(params)
    state, history, start = _State(params), [], 0
    if resume:
        if run_dir is None:
            raise ValueError("fix_weights: resume=True needs the run_dir of the interrupted run")
        start, history = _resume(model, params, state, cfg, run_dir)
    if cfg.rescale_bn_convs is not None and not resume:  # a resumed run's checkpoint holds the rescaled weights
        x0 = next(iter_batches(train_loader, model_device(model)), (None,))[0]
        rescale_bn_convs(model, cfg.rescale_bn_convs, check_inputs=x0)
    reference = _reference_accuracy(model, val_loader, history, start)
    loss_scale = reference_loss(model, train_loader)
    net = _maybe_ddp(model)
    bar = _progress(range(start, cfg.num_iterations), desc="WFN", unit="iter", disable=not (progress and _rank() == 0),
               initial=start, total=cfg.num_iterations)
    for t in bar:
        entry = _iteration(t, model, net, params, state, cfg, train_loader, val_loader)
        check_finite_state(model, t)  # guards run before the checkpoint: a stopped run keeps the last good one
        check_loss(entry, loss_scale, cfg.divergence_loss_factor)
        accuracy_guard(entry, reference, cfg.max_accuracy_drop, cfg.stop_on_accuracy_drop)
        history.append(entry)
        if _rank() == 0:
            if run_dir is not None:
                checkpoint.save(run_dir, t, model, state.fixed, state.centres,
                                {"config": cfg.to_dict(), "fingerprint": fingerprint(params),
                                 "model_class": type(model).__name__, "history": history})
            if on_iteration is not None:
                on_iteration(entry)
        bar.set_postfix(fixed=f"{entry['fixed_fraction']:.3f}", centres=entry["n_centres"],
                        acc=entry.get("val_accuracy"))
    _check_all_fixed(state)
    return model, history


def _iteration(t, model, net, params, state, cfg, train_loader, val_loader) -> dict:
    t0 = time.perf_counter()
    _seed(cfg, t, train_loader)
    epochs = cfg.first_epochs if t == 0 else cfg.epochs_per_iteration
    loss, reg = _train(t, net, params, state, cfg, train_loader, epochs) if epochs else (None, None)
    tol = cfg.tolerance_at(t)
    t1 = time.perf_counter()
    before = flatten(params).detach().cpu()  # clustering runs on the CPU whatever the model's device
    was_fixed = torch.cat([state.fixed[n].reshape(-1).cpu() for n, _ in params])
    values, fixed, centres, info = _cluster_on_rank0(before, cfg.fix_fractions[t], tol, cfg,
                                                     was_fixed if cfg.keep_fixed else None)
    unflatten_into(params, values)
    state.freeze({n: m for (n, _), m in zip(params, split_like(params, fixed))}, centres)
    moved = int(((values != before) & was_fixed).sum())
    if cfg.bn_recalibration_batches:
        recalibrate_batchnorm(model, train_loader, cfg.bn_recalibration_batches)
    m = tensor_metrics([(n, p) for n, p in params])
    entry = {"iteration": t, "fraction": cfg.fix_fractions[t], "tolerance": tol, "epochs": epochs,
             "train_loss": loss, "reg_loss": reg, "n_tracked": int(values.numel()), "n_fixed": int(fixed.sum()),
             "fixed_fraction": float(fixed.double().mean()), "n_centres": int(centres.numel()),
             "centres": centres.tolist(), "moved": moved, **info,
             "unique": m["unique"], "unique_nonzero": m["unique_nonzero"], "entropy_bits": m["entropy_bits"],
             "entropy_nonzero_bits": m["entropy_nonzero_bits"], "order_values": m["order_values"],
             "cluster_seconds": time.perf_counter() - t1}
    if val_loader is not None:
        entry["val_accuracy"] = evaluate(model, val_loader)
    entry["seconds"] = time.perf_counter() - t0
    return entry


def _train(t, net, params, state, cfg, loader, epochs):
    opt = _optimizer(net.parameters(), cfg)
    device = model_device(net)
    steps, total, total_reg, count = 0, 0.0, 0.0, 0
    for epoch in range(epochs):
        if hasattr(getattr(loader, "sampler", None), "set_epoch"):
            loader.sampler.set_epoch(cfg.seed * 1000 + t * 100 + epoch)
        net.train()
        for x, y in iter_batches(loader, device):
            ce = nn.functional.cross_entropy(net(x), y)
            if not torch.isfinite(ce):
                raise DivergenceError(f"WFN iteration {t}, epoch {epoch}, step {steps}: the loss is "
                                      f"{float(ce.detach())}; stopping (the last good checkpoint is kept)")
            loss, reg = regularised_loss(ce, state.free_weights(), state.centres, cfg.regularizer_ratio,
                                         cfg.zero_threshold, cfg.temperature)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            state.mask_grads()
            if cfg.grad_clip_norm is not None:
                nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip_norm)
            opt.step()
            state.restore_fixed()
            total, total_reg, count, steps = total + float(ce.detach()), total_reg + reg, count + 1, steps + 1
            if cfg.max_steps_per_iteration is not None and steps >= cfg.max_steps_per_iteration:
                return total / count, total_reg / count
    if count == 0:
        raise ValueError("fix_weights: the training loader yielded no batches")
    return total / count, total_reg / count


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, loader, batches: int) -> None:
    """Re-estimate every BatchNorm's running mean/var as the plain average over ``batches`` batches of
    ``loader`` (train-mode forward, no gradients); rank 0's statistics are broadcast under DDP."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not bns:
        return
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average = the plain mean over the batches seen
    model.train()
    for i, (x, _) in enumerate(iter_batches(loader, model_device(model))):
        if i >= batches:
            break
        model(x)
    for m, mom in zip(bns, saved):
        m.momentum = mom
    if _world() > 1:
        for m in bns:
            for buf in (m.running_mean, m.running_var, m.num_batches_tracked):
                dist.broadcast(buf, 0)


def _optimizer(parameters, cfg: WFNConfig):
    if cfg.optimizer == "adam":
        return torch.optim.Adam(parameters, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(parameters, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def _cluster_on_rank0(flat, fraction, tol, cfg, keep=None):
    """Cluster on rank 0 and broadcast (values, fixed mask, centres) to every rank."""
    info = {}
    if _rank() == 0:
        r = cluster(flat, fraction, tol, cfg.zero_threshold, cfg.max_order_before_doubling, cfg.ratio_cap,
                    keep=keep, same_sign=cfg.same_sign)
        values, fixed, centres = r.values, r.fixed, r.centres
        info = {"accepted_steps": len(r.steps), "failures": r.failures, "max_order": r.max_order,
                "kept": r.kept}
    if _world() > 1:
        if _rank() != 0:
            values, fixed = torch.empty_like(flat), torch.empty(flat.numel(), dtype=torch.bool)
        size = torch.tensor([centres.numel() if _rank() == 0 else 0])
        dist.broadcast(size, 0)
        if _rank() != 0:
            centres = torch.empty(int(size), dtype=torch.float32)
        fixed_u8 = fixed.to(torch.uint8)
        for tensor in (values, fixed_u8, centres):
            dist.broadcast(tensor, 0)
        fixed = fixed_u8.bool()
    return values, fixed, centres, info


def _resume(model, params, state, cfg, run_dir):
    index, tensors = checkpoint.load(run_dir)
    if index["fingerprint"] != fingerprint(params):
        raise ValueError(f"checkpoint in {run_dir} is from another model: its tracked parameters "
                         f"{index['fingerprint'][:3]}... differ from this model's {fingerprint(params)[:3]}...")
    theirs = WFNConfig.from_dict(index["config"]).to_dict()  # fields added since take their defaults
    if theirs != cfg.to_dict():
        diff = sorted(k for k in cfg.to_dict() if theirs.get(k) != cfg.to_dict()[k])
        raise ValueError(f"checkpoint in {run_dir} was made with a different WFNConfig (fields {diff})")
    fixed, centres = checkpoint.restore(model, tensors, [n for n, _ in params])
    state.freeze(fixed, centres)
    return int(index["iteration"]) + 1, list(index["history"])


def _reference_accuracy(model, val_loader, history: list[dict], start: int) -> float | None:
    """Validation accuracy before any fixing (the accuracy guard's reference); a resumed run reuses it."""
    if val_loader is None:
        return None
    if start > 0:
        return next((h.get("reference_val_accuracy") for h in history if "reference_val_accuracy" in h), None)
    return evaluate(model, val_loader)


def _seed(cfg: WFNConfig, t: int, loader) -> None:
    torch.manual_seed(cfg.seed * 1000 + t)
    gen = getattr(loader, "generator", None)
    if isinstance(gen, torch.Generator):
        gen.manual_seed(cfg.seed * 1000 + t)


def _check_finite(params) -> None:
    for name, p in params:
        if not torch.isfinite(p).all():
            raise ValueError(f"parameter {name} contains NaN/Inf; WFN needs a finite trained model")


def _check_all_fixed(state: _State) -> None:
    loose = [n for n, m in state.fixed.items() if not bool(m.all())]
    if loose:
        raise RuntimeError(f"after the last iteration parameters {loose} still have unfixed weights")


def _maybe_ddp(model):
    if _world() > 1:
        return nn.parallel.DistributedDataParallel(model)
    return model


def _rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _world() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def run_dir_has_checkpoint(run_dir) -> bool:
    return run_dir is not None and (Path(run_dir) / checkpoint.INDEX).is_file()


def evaluate(model: nn.Module, loader) -> float:
    """Top-1 accuracy in percent of ``model`` over ``loader`` (batches of (images, labels))."""
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for x, y in iter_batches(loader, model_device(model)):
            correct += int((model(x).argmax(1) == y).sum())
            total += int(y.numel())
    if total == 0:
        raise ValueError("evaluate: the loader yielded no samples")
    return 100.0 * correct / total
