"""Why WFN's zero centre (γ0 = 2^-7) rarely fires on small nets, and what makes it fire: a measurement on a
trained baseline, clustering only (no training between fixings, so it isolates the codebook choice).

For each variant of the weights (as trained; each Conv directly followed by a BatchNorm rescaled to a
target RMS, which leaves the network's function unchanged; a larger γ0) it runs the paper schedule's
fixing passes independently on the baseline's weights (p_t, δ_t = relaxed δ) and reports how many weights
the centre 0 takes, where the centre 0 ranks among the greedy steps, and the per-layer weight scale.

    python bench/zeros.py --baseline RUNS/baseline_small-resnet_s0.safetensors --out bench/results/wfn_zeros.md
"""

from __future__ import annotations

import argparse
import copy
import json
import math
from pathlib import Path

import torch
from torch import nn

from wfn_kernels.fixing.clustering import cluster
from wfn_kernels.fixing.config import WFNConfig
from wfn_kernels.fixing.params import flatten, tracked_parameters
from wfn_kernels.fixing.rescale import rescale_bn_convs
from wfn_kernels.workflows import data
from wfn_kernels.workflows.pipeline import load_saved_model


def rescaled(model: nn.Module, rms: float, x: torch.Tensor) -> nn.Module:
    q = copy.deepcopy(model)
    rescale_bn_convs(q, rms, check_inputs=x)
    return q


def schedule_zeros(model: nn.Module, cfg: WFNConfig) -> list[dict]:
    """Each fixing pass of cfg's schedule on the model's tracked weights, independently: zeros taken, rank of
    the centre 0 among the greedy steps."""
    zero_threshold = cfg.zero_threshold
    flat = flatten(tracked_parameters(model, cfg.include_batchnorm)).detach()
    rows = []
    for t, p in enumerate(cfg.fix_fractions):
        r = cluster(flat, p, cfg.tolerance_at(t), zero_threshold, same_sign=cfg.same_sign)
        rank = next((i for i, s in enumerate(r.steps) if s.centre == 0.0), None)
        rows.append({"t": t, "p": p, "tol": cfg.tolerance_at(t), "zeros": int(((r.values == 0) & r.fixed).sum()),
                     "below_g0": int((flat.abs() < zero_threshold).sum()), "rank0": rank, "steps": len(r.steps)})
    return rows


def layer_table(model: nn.Module, g0: float) -> list[str]:
    lines = ["| layer | weights | fan-in | RMS | below γ0 (%) | below 1/16 (%) |", "|---|---|---|---|---|---|"]
    for name, p in tracked_parameters(model, False):
        if not name.endswith("weight"):
            continue
        w = p.detach()
        fan_in = int(w[0].numel())
        lines.append(f"| {name} | {w.numel()} | {fan_in} | {float(w.pow(2).mean().sqrt()):.4f} | "
                     f"{100 * float((w.abs() < g0).double().mean()):.2f} | "
                     f"{100 * float((w.abs() < 1 / 16).double().mean()):.1f} |")
    return lines


def he_fraction_below(fan_in: int, g0: float) -> float:
    """P(|w| < γ0) for w ~ N(0, 2 / fan_in) (He initialisation): erf(γ0 / (σ √2))."""
    return math.erf(g0 / math.sqrt(2 / fan_in) / math.sqrt(2))


def run_rows(run_dirs) -> list[str]:
    """One row per finished `wfn fix` / curve run directory: settings, accuracy, zeros, when 0 entered."""
    from wfn_kernels.workflows.pipeline import read_summary

    lines = ["| run | δ, relaxed | rescale RMS | baseline / WFN top-1 (%) | unique non-zero | entropy (bits) | "
             "zeros (%) | first iteration with centre 0 |", "|---|---|---|---|---|---|---|---|"]
    for d in run_dirs:
        s = read_summary(d)  # verified against the run's manifest
        c = s["config"]
        hist = json.loads(Path(d, "history.json").read_text())
        first = next((h["iteration"] for h in hist if 0.0 in h["centres"]), None)
        metrics = json.loads(Path(d, "metrics.json").read_text())
        lines.append(f"| {Path(d).name} | {c['relative_tolerance']:g}, {c['relax_tolerance']} | "
                     f"{c.get('rescale_bn_convs') or '-'} | {s['baseline_accuracy']:.2f} / {s['test_accuracy']:.2f} | "
                     f"{s['unique_nonzero']} | {s['entropy_bits']:.3f} | {100 * metrics['zero_fraction']:.2f} | "
                     f"{'never' if first is None else first} |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", required=True, help="a baseline model.safetensors written by wfn fix / curve run")
    ap.add_argument("--delta", type=float, default=0.01)
    ap.add_argument("--rms", type=float, nargs="+", default=[0.05, 0.02], help="target RMS of the BN convs")
    ap.add_argument("--runs", nargs="*", default=[], help="finished run directories to tabulate (zeros, accuracy)")
    ap.add_argument("--out", default=None, help="markdown file to write (default: print only)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    model, _, meta = load_saved_model(args.baseline)
    g0 = WFNConfig().zero_threshold
    _, test = data.load(meta.get("dataset", "fashion-mnist"))
    x = test.images[:512]
    model.eval()
    ref = model(x)
    paper = WFNConfig.paper(relative_tolerance=args.delta)
    variants = [("as trained", model, paper)]
    for rms in args.rms:
        q = rescaled(model, rms, x)
        q.eval()
        diff = float((q(x) - ref).abs().max() / ref.abs().max())
        variants.append((f"BN convs rescaled to RMS {rms:g} (max logit change {diff:.1e})", q, paper))
    variants += [(f"γ0 = 2^-{k}", model, WFNConfig.paper(relative_tolerance=args.delta, zero_threshold=2.0 ** -k))
                 for k in (5, 4)]
    variants.append(("small-model preset (δ = 0.15, no relaxation, BN not fixed)", model, WFNConfig.small_model()))
    md = [f"# Zeros in WFN: the centre 0 on `{meta.get('wfn_model')}` ({args.baseline.split('/')[-1]}, "
          f"δ = {args.delta:g}, paper schedule unless the row says otherwise, clustering only)", "", "Per-layer weight scale as trained (γ0 = 2^-7):",
          "", *layer_table(model, g0), "",
          "For comparison, He-initialised convs of ResNet-18's fan-ins would have "
          + ", ".join(f"{100 * he_fraction_below(f, g0):.1f} % (fan-in {f})" for f in (147, 576, 1152, 2304, 4608))
          + " of their weights below 2^-7.", "",
          "| variant | weights | below γ0 | zeros taken at p = 0.3 / 0.9 / 0.99 / 1.0 | greedy rank of centre 0 "
          "at p = 0.3 / 1.0 (of steps) |", "|---|---|---|---|---|"]
    for label, m, cfg in variants:
        rows = schedule_zeros(m, cfg)
        by_p = {r["p"]: r for r in rows}
        n = sum(p.numel() for _, p in tracked_parameters(m, cfg.include_batchnorm))
        zs = " / ".join(f"{by_p[p]['zeros']}" for p in (0.3, 0.9, 0.99, 1.0))
        rk = " / ".join(f"{by_p[p]['rank0'] if by_p[p]['rank0'] is not None else '-'} ({by_p[p]['steps']})"
                        for p in (0.3, 1.0))
        md.append(f"| {label} | {n} | {rows[0]['below_g0']} ({100 * rows[0]['below_g0'] / n:.2f} %) | {zs} | {rk} |")
        print(md[-1], flush=True)
    if args.runs:
        md += ["", "Full WFN runs (training between fixings), from their run directories:", "", *run_rows(args.runs)]
    text = "\n".join(md) + "\n"
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
