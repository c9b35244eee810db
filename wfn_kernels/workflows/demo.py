"""``wfn demo``: the main job, end to end on real data.

Stages (a progress bar walks through them):

1. **baseline**: train a float :class:`~wfn_kernels.workflows.models.SmallCNN` on the dataset (digits by default,
   bundled with scikit-learn; ``fashion-mnist`` reads Debian's idx files).
2. **fix**: Weight Fixing Networks (:func:`wfn_kernels.fixing.fix_weights`) puts every conv/linear weight
   on a few additive power-of-two values.
3. **convert**: :func:`wfn_kernels.nn.convert` swaps the layers for packed WFN modules on the run's
   whole-network codebook; the packed model is checked to give the fixed float model's predictions,
   saved (safetensors) and reloaded.
4. **bench**: median latency of the converted model vs the fixed float model, batch 1 and 32.
5. **sim**: the accelerator simulator (``wfn_sim``) prices the fixed model on the dense weight-stationary
   array and on the codebook / shift-add / factorised designs.
6. **report**: ``report.md`` (+ ``report.json``, PNGs) in the output directory; a summary is printed.

The WFN settings are the ones measured on Fashion-MNIST in bench/results/wfn_fashion_mnist.md (δ = 0.15,
fixed δ rather than the paper's relaxed schedule, weights only, 1 epoch per fixing iteration here).
"""

from __future__ import annotations

import copy
import json
import os
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from .._optional import progress as _progress
from ..format.codebook import Codebook, power_of_two_terms
from ..nn import convert, load_packed, save_packed, set_compute, weight_bytes
from ..timing import interleaved_medians
from . import data, models
from .train import evaluate, train_classifier

STAGES = ("baseline", "fix", "convert", "bench", "sim", "report")
SIM_DESIGNS = ("dense_ws", "codebook", "shift_add", "sparse_pe", "factorised")
BENCH_BATCHES = (1, 32)


def check_args(out_dir, dataset: str, epochs: int, delta: float, data_dir=None) -> Path:
    """Validate the demo's arguments before any work; returns the (created) output directory."""
    if dataset not in data.DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of {data.DATASETS}")
    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be an integer >= 1, got {epochs!r}")
    if not (0 < delta < 1):
        raise ValueError(f"delta (the relative tolerance δ) must lie in (0, 1), got {delta!r}")
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=out, prefix=".write-test")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ValueError(f"output directory {str(out)!r} is not writable: {exc}") from None
    if dataset == "fashion-mnist":
        data.load(dataset, data_dir)  # fails now, naming the missing directory, rather than after training
    return out


class _Stages:
    """The progress bar over STAGES and each stage's wall time."""

    def __init__(self, progress: bool):
        self.bar = _progress(STAGES, desc="wfn demo", unit="stage", disable=not progress)
        self._names = iter(self.bar)
        self.seconds: dict[str, float] = {}

    def run(self, fn, *args):
        name = next(self._names)
        self.bar.set_description(f"wfn demo: {name}")
        t0 = time.perf_counter()
        result = fn(*args)
        self.seconds[name] = time.perf_counter() - t0
        return result


def run_demo(out_dir: str = "demo_out", dataset: str = "digits", epochs: int = 30, seed: int = 0,
             data_dir=None, progress: bool = True, delta: float = 0.15, fix_epochs: int = 1,
             bench_repeats: int = 20) -> dict:
    """Run every stage; writes ``report.md``, ``report.json``, ``model.wfn.safetensors`` and PNGs to
    ``out_dir`` and returns the report dict."""
    out = check_args(out_dir, dataset, epochs, delta, data_dir)
    if fix_epochs < 1:
        raise ValueError(f"fix_epochs must be >= 1, got {fix_epochs}")
    t_start = time.perf_counter()
    st = _Stages(progress)
    r = {"dataset": dataset, "epochs": epochs, "seed": seed}
    model, loaders = st.run(_baseline, r, dataset, data_dir, epochs, seed, progress)
    model, history = st.run(_fix, r, model, loaders, out, delta, fix_epochs, seed, progress)
    fixed_float, model = st.run(_convert, r, model, history, loaders[1], out)
    x_shape = tuple(next(iter(loaders[1]))[0].shape[1:])
    st.run(_bench_stage, r, fixed_float, model, x_shape, bench_repeats, out)
    st.run(_sim_stage, r, model, x_shape, out)
    st.run(lambda: None)  # the report stage: assembling what the stages wrote into r
    r["stage_seconds"] = st.seconds
    r["seconds"] = time.perf_counter() - t_start
    st.bar.close()
    _write_atomic(out / "report.json", json.dumps(r, indent=2))
    _write_atomic(out / "report.md", markdown(r))
    return r


def _baseline(r: dict, dataset, data_dir, epochs: int, seed: int, progress: bool):
    """Stage 1: train the float baseline; (model, (train_loader, test_loader))."""
    from ..fixing.metrics import network_metrics

    torch.manual_seed(seed)
    train, test = data.load(dataset, data_dir)
    model = models.build("small-cnn")
    loaders = (train.loader(64, shuffle=True, seed=seed), test.loader(256))
    train_classifier(model, loaders[0], epochs=epochs, seed=seed, progress=progress)
    float_metrics = network_metrics(model, include_batchnorm=False)
    r.update(accuracy_float=evaluate(model, loaders[1]), unique_weights_float=float_metrics["unique"],
             entropy_bits_float=float_metrics["entropy_bits"])
    return model, loaders


def _fix(r: dict, model, loaders, out: Path, delta: float, fix_epochs: int, seed: int, progress: bool):
    """Stage 2: WFN fixing (the test split only monitors progress per iteration; nothing is selected on it)."""
    from ..fixing.config import WFNConfig
    from ..fixing.metrics import network_metrics
    from ..fixing.trainer import fix_weights
    from .plots import plot_run

    cfg = WFNConfig(relative_tolerance=delta, relax_tolerance=False, include_batchnorm=False,
                    epochs_per_iteration=fix_epochs, lr=3e-4, bn_recalibration_batches=20, seed=seed)
    model, history = fix_weights(model, loaders[0], loaders[1], cfg, progress=progress)
    model.eval()
    metrics = network_metrics(model, include_batchnorm=False)
    r.update(wfn_config=cfg.to_dict(), accuracy_fixed=evaluate(model, loaders[1]), unique_weights=metrics["unique"],
             unique_nonzero=metrics["unique_nonzero"], entropy_bits=metrics["entropy_bits"],
             order_values=metrics["order_values"],
             fix_history=[{k: h[k] for k in ("iteration", "fixed_fraction", "n_centres", "val_accuracy") if k in h}
                          for h in history],
             plots=[p.name for p in plot_run(history, metrics, out, baseline_accuracy=r["accuracy_float"])])
    return model, history


def _convert(r: dict, model, history, test_loader, out: Path):
    """Stage 3: convert to packed modules on the run's whole-network codebook; check; save and reload."""
    fixed_float = copy.deepcopy(model)
    centres = [float(v) for v in history[-1]["centres"]]
    book = Codebook.from_values(centres, max_terms=max(1, max(len(power_of_two_terms(v)) for v in centres)),
                                max_entries=None)
    conv_report = convert(model, codebook=book)
    save_packed(model, out / "model.wfn.safetensors", book)
    reloaded = load_packed(out / "model.wfn.safetensors", models.build("small-cnn")).eval()
    mem = weight_bytes(model)
    r.update(accuracy_packed=evaluate(model, test_loader), accuracy_reloaded=evaluate(reloaded, test_loader),
             prediction_agreement=_agreement(fixed_float, model, test_loader), codebook=centres,
             codebook_max_terms=book.max_terms, converted_layers=conv_report.converted,
             skipped_layers=conv_report.skipped, **mem,
             compression_vs_fp32=mem["fp32_bytes"] / max(mem["packed_bytes"], 1),
             compute_modes=_mode_accuracy(model, test_loader))
    return fixed_float, model


def _mode_accuracy(model, test_loader) -> dict:
    """Test accuracy and logit error vs the float mode of the packed model in each compute mode (a copy each;
    a layer that cannot honour a mode stays float and is listed)."""
    out = {}
    for mode in ("float", "bf16", "int8"):
        m = copy.deepcopy(model)
        fallback = set_compute(m, mode, strict=False)
        ag = _agreement(model, m, test_loader)
        out[mode] = {"accuracy": evaluate(m, test_loader), "same_prediction_fraction": ag["same_prediction_fraction"],
                     "max_rel_logit_err": ag["max_rel_logit_err"], "float_layers": [n for n, _ in fallback]}
    return out


def _bench_stage(r: dict, fixed_float, model, x_shape, repeats: int, out: Path) -> None:
    """Stage 4: latency of the converted model vs the fixed float model."""
    r["bench"] = _bench(fixed_float, model, x_shape, repeats)
    r["plots"].append(_plot_bench(r["bench"], out / "latency.png").name)


def _sim_stage(r: dict, model, x_shape, out: Path) -> None:
    """Stage 5: simulator energy of the fixed model, every design vs the dense weight-stationary array."""
    r["sim"] = _simulate(model, (1, *x_shape), out / "sim")
    r["plots"] += [f"sim/{p}" for p in r["sim"].pop("plots")]


def _agreement(a: nn.Module, b: nn.Module, loader) -> dict:
    """Predictions and logits of two models over a loader: fraction of equal argmax, max |logit diff|."""
    same = total = 0
    diff = rel = 0.0
    with torch.no_grad():
        for x, _ in loader:
            ya, yb = a(x), b(x)
            same += int((ya.argmax(1) == yb.argmax(1)).sum())
            total += x.shape[0]
            diff = max(diff, float((ya - yb).abs().max()))
            rel = max(rel, float((ya - yb).abs().max() / ya.abs().max().clamp_min(1e-30)))
    return {"same_prediction_fraction": same / max(total, 1), "max_abs_logit_diff": diff, "max_rel_logit_err": rel}


def _bench(float_model: nn.Module, packed_model: nn.Module, x_shape, repeats: int) -> list[dict]:
    """Median latency of the fixed float model, the packed model, and the packed model with its conv codes
    in oneDNN's layout (optimize_for_inference; a copy, so the saved model is untouched), interleaved."""
    from ..nn import optimize_for_inference

    rows = []
    gen = torch.Generator().manual_seed(0)
    opt = copy.deepcopy(packed_model)
    layout = optimize_for_inference(opt, torch.zeros((1, *x_shape)))
    with torch.no_grad():
        for batch in BENCH_BATCHES:
            x = torch.rand((batch, *x_shape), generator=gen)
            # same weights, another conv algorithm: equal up to fp32 accumulation order
            torch.testing.assert_close(opt(x), packed_model(x), rtol=1e-4, atol=1e-5)
            t_float, t_packed, t_opt = interleaved_medians(
                [lambda: float_model(x), lambda: packed_model(x), lambda: opt(x)], repeats)
            rows.append({"batch": batch, "float_ms": 1e3 * t_float, "packed_ms": 1e3 * t_packed,
                         "speedup": t_float / t_packed, "packed_onednn_ms": 1e3 * t_opt,
                         "speedup_onednn": t_float / t_opt,
                         "onednn_layers": sum(why.startswith("optimized") for _, why in layout)})
    return rows


def _plot_bench(rows: list[dict], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    xs = range(len(rows))
    w = 0.27
    ax.bar([x - w for x in xs], [r["float_ms"] for r in rows], w, label="fixed float (torch fp32)")
    ax.bar(list(xs), [r["packed_ms"] for r in rows], w, label="packed WFN modules")
    ax.bar([x + w for x in xs], [r["packed_onednn_ms"] for r in rows], w, label="packed, oneDNN layout")
    for x, r in zip(xs, rows):
        ax.text(x, r["packed_ms"], f"{r['speedup']:.2f}x", ha="center", va="bottom", fontsize=7)
        ax.text(x + w, r["packed_onednn_ms"], f"{r['speedup_onednn']:.2f}x", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(list(xs), [f"batch {r['batch']}" for r in rows])
    ax.set_ylabel("median latency (ms)"), ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _simulate(model: nn.Module, input_shape, out: Path) -> dict:
    from wfn_sim.arch import load_arch
    from wfn_sim.extract import extract_workload
    from wfn_sim.report import relative_to_dense, write_all
    from wfn_sim.simulate import simulate

    arch = load_arch("ws32")
    workload = extract_workload(model, input_shape, "demo-small-cnn")
    result = simulate(workload, arch, SIM_DESIGNS)
    paths = write_all(result, out)
    rel = relative_to_dense(result)
    base = result.totals["sparse_pe"]["total_energy_pj"]
    return {"arch": arch.name, "energy_table": result.table_name, "energy_unit": result.table_unit,
            "designs": {d: {"energy_pj": result.totals[d]["total_energy_pj"], "energy_vs_dense": rel[d][0],
                            "cycles_vs_dense": rel[d][1], "saving_vs_dense": 1.0 / rel[d][0]}
                        for d in result.designs},
            "factorised_gain_vs_sparse_pe": base / result.totals["factorised"]["total_energy_pj"],
            "plots": [p.name for p in paths if p.suffix == ".png"]}


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def summary_rows(r: dict) -> list[tuple[str, str]]:
    """(quantity, value) pairs of the short summary printed at the end and heading report.md."""
    b1 = next(b for b in r["bench"] if b["batch"] == 1)
    designs = r["sim"]["designs"]
    best = min(designs, key=lambda d: designs[d]["energy_vs_dense"])
    return [
        ("accuracy: float baseline", f"{r['accuracy_float']:.2f} %"),
        ("accuracy: WFN-fixed (float)", f"{r['accuracy_fixed']:.2f} %"),
        ("accuracy: packed WFN modules", f"{r['accuracy_packed']:.2f} % (reloaded from disk "
                                         f"{r['accuracy_reloaded']:.2f} %)"),
        ("accuracy by compute mode", " / ".join(f"{m} {v['accuracy']:.2f} %" for m, v in r["compute_modes"].items())),
        ("unique weight values", f"{r['unique_weights']} ({r['unique_nonzero']} non-zero), float had "
                                 f"{r['unique_weights_float']:,}"),
        ("weight-space entropy", f"{r['entropy_bits']:.3f} bits (float {r['entropy_bits_float']:.2f} bits)"),
        ("weight memory packed / fp32", f"{r['packed_bytes']:,} / {r['fp32_bytes']:,} B "
                                        f"({r['compression_vs_fp32']:.1f}x smaller)"),
        ("speed-up packed vs float, batch 1", f"{b1['speedup']:.2f}x plain, {b1['speedup_onednn']:.2f}x oneDNN "
                                              f"layout ({b1['packed_ms']:.3f} / {b1['packed_onednn_ms']:.3f} vs "
                                              f"{b1['float_ms']:.3f} ms)"),
        ("simulated energy saving vs dense", f"{designs[best]['saving_vs_dense']:.2f}x ({best}; "
                                             f"{r['sim']['energy_table']} table)"),
    ]


def markdown(r: dict) -> str:
    lines = [f"# wfn demo ({r['dataset']})", "", "| quantity | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in summary_rows(r)]
    ag = r["prediction_agreement"]
    cfg = r["wfn_config"]
    lines += ["", "## WFN fixing", "",
              f"δ = {cfg['relative_tolerance']} (fixed, not relaxed), weights of conv/linear layers only, "
              f"{cfg['epochs_per_iteration']} epoch(s) per iteration, Adam lr {cfg['lr']}, "
              f"{len(r['fix_history'])} iterations; baseline trained {r['epochs']} epochs. "
              f"Whole-network codebook ({len(r['codebook'])} values, at most {r['codebook_max_terms']} "
              f"power-of-two terms each): {', '.join(f'{v:g}' for v in r['codebook'])}.", "",
              "| iteration | fixed fraction | cluster centres | test accuracy (%) |", "|---|---|---|---|"]
    lines += [f"| {h['iteration']} | {h['fixed_fraction']:.3f} | {h['n_centres']} | "
              f"{h.get('val_accuracy', float('nan')):.2f} |" for h in r["fix_history"]]
    lines += ["", "![progress](progress.png) ![accuracy](accuracy.png)", "",
              "![orders](orders.png) ![top values](top_values.png)", "",
              "## Packed model", "",
              f"Converted {len(r['converted_layers'])} layer(s), skipped {len(r['skipped_layers'])}. Packed vs "
              f"fixed float model on the test set: {100 * ag['same_prediction_fraction']:.2f} % identical "
              f"predictions, max |logit difference| {ag['max_abs_logit_diff']:.2e} (accumulation order).", "",
              "| layer | kind | bits | local codebook |", "|---|---|---|---|"]
    lines += [f"| {c['name']} | {c['kind']} | {c['bits']} | {c['codebook_size']} |" for c in r["converted_layers"]]
    lines += ["", "Compute modes (`wk.set_compute`), the packed model on the test set:", "",
              "| mode | test accuracy (%) | predictions equal to float mode (%) | max logit error vs float "
              "(relative) | layers left float |", "|---|---|---|---|---|"]
    lines += [f"| {m} | {v['accuracy']:.2f} | {100 * v['same_prediction_fraction']:.2f} | {v['max_rel_logit_err']:.2e} "
              f"| {', '.join(v['float_layers']) or 'none'} |" for m, v in r["compute_modes"].items()]
    lines += ["", "## Latency (median of interleaved runs, this machine)", "",
              "| batch | fixed float ms | packed ms | speed-up | packed, oneDNN layout ms | speed-up |",
              "|---|---|---|---|---|---|"]
    lines += [f"| {b['batch']} | {b['float_ms']:.3f} | {b['packed_ms']:.3f} | {b['speedup']:.2f}x | "
              f"{b['packed_onednn_ms']:.3f} | {b['speedup_onednn']:.2f}x |" for b in r["bench"]]
    lines += ["", "oneDNN layout: `wk.optimize_for_inference` stores conv codes in oneDNN's blocked weight order "
              f"({r['bench'][0]['onednn_layers']} conv layer(s) here). A model this small is dominated by "
              "per-layer call overhead; bench/results has the kernel-level and ResNet-18-shaped figures.", "",
              "![latency](latency.png)", "",
              f"## Simulated accelerator energy ({r['sim']['arch']}, table {r['sim']['energy_table']})", "",
              "| design | energy (pJ) | energy / dense | cycles / dense |", "|---|---|---|---|"]
    lines += [f"| {d} | {v['energy_pj']:.4g} | {v['energy_vs_dense']:.3f} | {v['cycles_vs_dense']:.3f} |"
              for d, v in r["sim"]["designs"].items()]
    lines += ["", f"Factorised (UCNN-style) vs the zero-skipping sparse PE: "
              f"{r['sim']['factorised_gain_vs_sparse_pe']:.2f}x less energy.", "",
              "![vs dense](sim/vs_dense.png)", "",
              "Stage times (s): " + ", ".join(f"{k} {v:.1f}" for k, v in r["stage_seconds"].items())
              + f"; total {r['seconds']:.1f} s.", ""]
    return "\n".join(lines)


def summary_table(r: dict) -> str:
    """The short plain-text summary printed at the end of ``wfn demo``."""
    rows = summary_rows(r)
    w = max(len(k) for k, _ in rows)
    return "\n".join([f"{k:<{w}}  {v}" for k, v in rows])
