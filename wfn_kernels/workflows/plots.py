"""PNG plots of a WFN run, like the paper's: fixing progress, accuracy, order histogram, top values."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_run(history: list[dict], final_metrics: dict, out_dir, baseline_accuracy: float | None = None) -> list:
    """Write progress.png, accuracy.png, orders.png and top_values.png into out_dir; return their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    its = [h["iteration"] for h in history]
    paths = []

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(its, [h["fixed_fraction"] for h in history], "o-", color="tab:blue")
    ax.set_xlabel("iteration"), ax.set_ylabel("fraction of weights fixed", color="tab:blue")
    ax2 = ax.twinx()
    ax2.plot(its, [h["unique_nonzero"] if h["fixed_fraction"] == 1 else h["n_centres"] for h in history],
             "s--", color="tab:red")
    ax2.set_ylabel("cluster centres in use", color="tab:red")
    paths.append(_save(fig, out / "progress.png"))

    if any(h.get("val_accuracy") is not None for h in history):
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.plot(its, [h.get("val_accuracy") for h in history], "o-", label="WFN")
        if baseline_accuracy is not None:
            ax.axhline(baseline_accuracy, color="gray", ls=":", label="float baseline")
        ax.set_xlabel("iteration"), ax.set_ylabel("top-1 accuracy (%)"), ax.legend()
        paths.append(_save(fig, out / "accuracy.png"))

    fig, ax = plt.subplots(figsize=(5, 3.5))
    ov = {int(k): v for k, v in final_metrics["order_values"].items()}
    ax.bar([str(k) for k in ov], list(ov.values()))
    ax.set_xlabel("order (power-of-two terms - 1)"), ax.set_ylabel("distinct non-zero values")
    paths.append(_save(fig, out / "orders.png"))

    fig, ax = plt.subplots(figsize=(7, 3.5))
    top = final_metrics["top_values"]
    ax.bar([_label(v) for v, _ in top], [c for _, c in top])
    ax.set_ylabel("weights"), ax.set_title("15 most frequent weight values")
    ax.tick_params(axis="x", rotation=60)
    paths.append(_save(fig, out / "top_values.png"))
    return paths


def plot_sweep(rows: list[dict], out_dir, x: str = "delta") -> list:
    """Accuracy, unique non-zero weights and entropy against ``x`` for each (ratio, bn) group."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for metric, label in [("accuracy", "top-1 accuracy (%)"), ("unique_nonzero", "unique non-zero weights"),
                          ("entropy_nonzero_bits", "entropy, non-zero (bits)")]:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        groups = sorted({(r["ratio"], r["bn"]) for r in rows})
        for ratio, bn in groups:
            sel = sorted((r for r in rows if r["ratio"] == ratio and r["bn"] == bn), key=lambda r: r[x])
            label = f"ratio {ratio}, BN {'on' if bn else 'off'}"
            ax.plot([r[x] for r in sel], [r[metric] for r in sel], "o-", label=label)
        ax.set_xscale("log"), ax.set_xlabel("δ"), ax.set_ylabel(label), ax.legend(fontsize=7)
        paths.append(_save(fig, out / f"sweep_{metric}.png"))
    return paths


def _label(v: float) -> str:
    return "0" if v == 0 else f"{v:.4g}"


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
