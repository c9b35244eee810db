"""``wfn demo``: the main job on the embedded default data (scikit-learn's digits).

Stages: train a float baseline -> put its weights on a power-of-two codebook -> convert() to packed
WFN modules -> evaluate with the C++ kernel -> report accuracy before/after and the weight memory.
(For now the codebook step is plain rounding; the WFN fixing trainer replaces it when it lands.)
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from torch import nn

from . import data, models
from .codebook import power_of_two_terms
from .nn import convert, weight_bytes
from .serialization import load_packed, save_packed
from .train import evaluate, train_classifier


def round_to_power_of_two_sums(model: nn.Module, max_terms: int = 2, zero_threshold: float = 2 ** -7) -> None:
    """Round every Linear/Conv2d weight (in place) to the nearest value with <= ``max_terms`` signed power
    -of-two terms (greedy: take the nearest power of two in log2, then of the residual), zeroing
    magnitudes below ``zero_threshold``. A stand-in for WFN fixing with no retraining."""
    with torch.no_grad():
        for mod in model.modules():
            if type(mod) in (nn.Linear, nn.Conv2d):
                w = mod.weight
                out = torch.zeros_like(w)
                resid = torch.where(w.abs() < zero_threshold, torch.zeros_like(w), w)
                for _ in range(max_terms):
                    mag = resid.abs()
                    term = resid.sign() * torch.exp2(torch.round(torch.log2(mag.clamp_min(zero_threshold / 2))))
                    keep = mag >= zero_threshold / 2
                    out += torch.where(keep, term, torch.zeros_like(term))
                    resid = w - out
                w.copy_(out)


def run_demo(out_dir: str = "demo_out", dataset: str = "digits", epochs: int = 30, seed: int = 0,
             data_dir=None, progress: bool = True) -> dict:
    """Run the demo pipeline; writes ``report.json``, ``report.md`` and ``model.wfn.safetensors`` to
    ``out_dir`` and returns the report dict."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    train, test = data.load(dataset, data_dir)
    model = models.build("small-cnn")
    t0 = time.perf_counter()
    train_classifier(model, train.loader(64, shuffle=True, seed=seed), epochs=epochs, seed=seed, progress=progress)
    test_loader = test.loader(256)
    acc_float = evaluate(model, test_loader)
    round_to_power_of_two_sums(model)
    acc_rounded = evaluate(model, test_loader)
    report_conv = convert(model)
    acc_packed = evaluate(model, test_loader)
    save_packed(model, out / "model.wfn.safetensors", report_conv.codebook)
    reloaded = load_packed(out / "model.wfn.safetensors", models.build("small-cnn"))
    reloaded.load_state_dict(model.state_dict())
    acc_reloaded = evaluate(reloaded, test_loader)
    mem = weight_bytes(model)
    report = {
        "dataset": dataset, "epochs": epochs, "seed": seed,
        "accuracy_float": acc_float, "accuracy_rounded_float": acc_rounded,
        "accuracy_packed": acc_packed, "accuracy_reloaded": acc_reloaded,
        "unique_weights": len(report_conv.codebook) if report_conv.codebook is not None else 0,
        "max_terms": max(len(power_of_two_terms(v)) for v in report_conv.codebook.to_list()),
        "converted_layers": report_conv.converted, "skipped_layers": report_conv.skipped,
        **mem, "compression_vs_fp32": mem["fp32_bytes"] / max(mem["packed_bytes"], 1),
        "seconds": time.perf_counter() - t0,
    }
    (out / "report.json").write_text(json.dumps(report, indent=2))
    (out / "report.md").write_text(_markdown(report))
    return report


def _markdown(r: dict) -> str:
    return "\n".join([
        f"# wfn demo ({r['dataset']})", "",
        "| quantity | value |", "|---|---|",
        f"| float baseline accuracy | {r['accuracy_float']:.2f} % |",
        f"| rounded to power-of-two sums (float) | {r['accuracy_rounded_float']:.2f} % |",
        f"| packed WFN modules (C++ kernel) | {r['accuracy_packed']:.2f} % |",
        f"| unique weight values (whole network) | {r['unique_weights']} |",
        f"| packed weight bytes / fp32 bytes | {r['packed_bytes']} / {r['fp32_bytes']} "
        f"({r['compression_vs_fp32']:.1f}x smaller) |", ""])
