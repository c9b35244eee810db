"""Write benchmark rows as CSV, a markdown report (environment, tables, targets) and PNG plots."""

from __future__ import annotations

import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _find(rows, **kw):
    return [r for r in rows if all(r.get(k) == v for k, v in kw.items())]


def targets(rows: list[dict], backend: str) -> list[tuple[str, str, float | None, str]]:
    """(target, required, measured, PASS/MISS/not measured) for the fast-kernels and bench issues."""
    out = []

    def add(label, need, value, ok):
        out.append((label, need, value, "not measured" if value is None else ("PASS" if ok(value) else "MISS")))

    r = _find(rows, kind="linear", M=1, N=8192, K=8192, bits=4)
    add("M=1 8192^2 4-bit vs fp32 F.linear", ">= 6x", r[0].get(f"{backend}_vs_fp32") if r else None, lambda v: v >= 6)
    add("M=1 8192^2 4-bit % of read bandwidth", ">= 80 %", r[0].get(f"{backend}_pct_bw") if r else None,
        lambda v: v >= 80)
    add("M=1 8192^2 4-bit vs int8 dynamic quant", ">= 1.5x", r[0].get(f"{backend}_vs_int8_dynamic") if r else None,
        lambda v: v >= 1.5)
    r = _find(rows, kind="linear", M=1, N=8192, K=8192, bits=8)
    add("M=1 8192^2 8-bit vs fp32", ">= 3.5x", r[0].get(f"{backend}_vs_fp32") if r else None, lambda v: v >= 3.5)
    r = _find(rows, kind="linear", M=256, N=4096, K=4096, bits=4)
    add("M=256 4096^2 4-bit vs fp32", ">= 0.9x", r[0].get(f"{backend}_vs_fp32") if r else None, lambda v: v >= 0.9)
    convs = [c.get(f"{backend}_vs_fp32") for c in _find(rows, kind="conv", M=1)]
    worst = min(convs) if convs and None not in convs else None
    add("ResNet-18 conv layers batch 1, worst layer vs fp32 (op)", ">= 0.9x", worst, lambda v: v >= 0.9)
    convs = [c.get("module_opt_vs_fp32") for c in _find(rows, kind="conv", M=1)]
    worst = min(convs) if convs and None not in convs else None
    add("ResNet-18 conv layers batch 1, worst layer vs fp32 (WFNConv2d, optimize_for_inference)", ">= 0.9x", worst,
        lambda v: v >= 0.9)
    for name in ("resnet18-shaped (4-bit)", "resnet18-shaped (4-bit, oneDNN layout)"):
        r = _find(rows, kind="model", name=name, M=1)
        if r or name == "resnet18-shaped (4-bit)":
            add(f"{name} batch 1 vs float", ">= 1.0x", r[0]["wfn_vs_float"] if r else None, lambda v: v >= 1.0)
            add(f"{name} weight memory vs fp32", "<= 1/6", r[0]["memory_ratio"] if r else None,
                lambda v: v <= 1 / 6)
    return out


LINEAR_PEERS = ("fp32", "bf16", "int8_dynamic", "int8_weight_only", "int4_weight_only_g128")
MODEL_PEERS = ("fp32_eager", "fp32_channels_last", "fp32_frozen", "bf16_eager", "bf16_channels_last", "bf16_compiled",
               "int8_static")


def mode_targets(rows: list[dict]) -> list[tuple[str, str, float | None, str]]:
    """Compute-mode speed, accuracy and memory targets, from the 1-thread rows."""
    out = []

    def add(label, need, value, ok):
        out.append((label, need, value, "not measured" if value is None else ("PASS" if ok(value) else "MISS")))

    def lin(m, key):
        r = _find(rows, kind="modes-linear", M=m, N=4096, K=14336, threads=1)
        return r[0].get(key) if r else None

    add("M=1 float mode vs best peer", ">= 1.5x", lin(1, "wfn_float_vs_best"), lambda v: v >= 1.5)
    add("M=1 int8 mode vs torch int8 dynamic", ">= 2.0x", lin(1, "wfn_int8_vs_int8_dynamic"), lambda v: v >= 2.0)
    pct = lin(1, "wfn_int8_pct_stream")
    add("M=1 int8 mode, share of one core's weight-streaming rate", ">= 0.85",
        None if pct is None else pct / 100, lambda v: v >= 0.85)
    add("M=256 bf16 mode vs bf16 F.linear", ">= 1.0x", lin(256, "wfn_bf16_vs_bf16"), lambda v: v >= 1.0)
    add("M=256 int8 mode vs int8 dynamic", ">= 1.0x", lin(256, "wfn_int8_vs_int8_dynamic"), lambda v: v >= 1.0)
    add("M=256 float mode vs fp32 F.linear", ">= 1.5x", lin(256, "wfn_float_vs_fp32"), lambda v: v >= 1.5)
    for b in sorted({r["M"] for r in _find(rows, kind="modes-model", threads=1)}):
        r = _find(rows, kind="modes-model", M=b, threads=1)[0]
        add(f"ResNet-18-shaped batch {b}: float vs fastest fp32 path", ">= 1.0x", r.get("wfn_float_vs_fastest_fp32"),
            lambda v: v >= 1.0)
        add(f"ResNet-18-shaped batch {b}: float channels_last vs fastest fp32 path", ">= 1.0x",
            r.get("wfn_float_cl_vs_fastest_fp32"), lambda v: v >= 1.0)
        add(f"ResNet-18-shaped batch {b}: float channels_last + folded BatchNorm/ReLU vs fastest fp32 path", ">= 1.0x",
            r.get("wfn_float_cl_fused_vs_fastest_fp32"), lambda v: v >= 1.0)
        add(f"ResNet-18-shaped batch {b}: float channels_last + folded BatchNorm/ReLU, oneDNN copies capped to "
            "1/4 of fp32 in all, vs fastest fp32 path", ">= 1.0x", r.get("wfn_float_cl_fused_cap_vs_fastest_fp32"),
            lambda v: v >= 1.0)
        add(f"ResNet-18-shaped batch {b}: bf16 channels_last vs bf16 eager", ">= 1.0x",
            r.get("wfn_bf16_cl_vs_bf16_eager"), lambda v: v >= 1.0)
        add(f"ResNet-18-shaped batch {b}: bf16 channels_last vs bf16 channels_last (same layout; stricter)",
            ">= 1.0x", r.get("wfn_bf16_cl_vs_bf16_channels_last"), lambda v: v >= 1.0)
        add(f"ResNet-18-shaped batch {b}: bf16 NCHW vs bf16 eager", ">= 1.0x", r.get("wfn_bf16_vs_bf16_eager"),
            lambda v: v >= 1.0)
        add(f"ResNet-18-shaped batch {b}: int8 channels_last vs bf16 eager", ">= 1.3x",
            r.get("wfn_int8_cl_vs_bf16_eager"), lambda v: v >= 1.3)
        add(f"ResNet-18-shaped batch {b}: int8 channels_last vs bf16 channels_last (same layout; stricter)",
            ">= 1.3x", r.get("wfn_int8_cl_vs_bf16_channels_last"), lambda v: v >= 1.3)
        add(f"ResNet-18-shaped batch {b}: int8 channels_last + folded BatchNorm/ReLU vs fastest bf16 path "
            "(eager, channels_last, torch.compile; stricter)", ">= 1.3x", r.get("wfn_int8_cl_fused_vs_fastest_bf16"),
            lambda v: v >= 1.3)
        add(f"ResNet-18-shaped batch {b}: int8 channels_last + folded BatchNorm/ReLU vs fastest path of any precision "
            f"({r.get('best_peer', '?')}; stricter)", ">= 1.0x", r.get("wfn_int8_cl_fused_vs_best"), lambda v: v >= 1.0)
        add(f"ResNet-18-shaped batch {b}: int8 NCHW vs bf16 eager", ">= 1.3x", r.get("wfn_int8_vs_bf16_eager"),
            lambda v: v >= 1.3)
        add(f"ResNet-18-shaped batch {b}: int8 channels_last vs int8 static", ">= 1.0x",
            r.get("wfn_int8_cl_vs_int8_static"), lambda v: v >= 1.0)
        add(f"ResNet-18-shaped batch {b}: bf16 logits vs float (max rel.)", "<= 0.03", r.get("wfn_bf16_err"),
            lambda v: v <= 0.03)
        add(f"ResNet-18-shaped batch {b}: int8 logits vs float (max rel.)", "<= 0.10", r.get("wfn_int8_err"),
            lambda v: v <= 0.10)
        add(f"ResNet-18-shaped batch {b}: int8 channels_last logits vs float (max rel.)", "<= 0.10",
            r.get("wfn_int8_cl_err"), lambda v: v <= 0.10)
        add(f"ResNet-18-shaped batch {b}: bf16 channels_last logits vs float (max rel.)", "<= 0.03",
            r.get("wfn_bf16_cl_err"), lambda v: v <= 0.03)
        add(f"ResNet-18-shaped batch {b}: int8 channels_last + folded BatchNorm/ReLU logits vs float (max rel.)",
            "<= 0.10", r.get("wfn_int8_cl_fused_err"), lambda v: v <= 0.10)
        add(f"ResNet-18-shaped batch {b}: float channels_last + folded BatchNorm/ReLU logits vs float (max rel.)",
            "<= 1e-4", r.get("wfn_float_cl_fused_err"), lambda v: v <= 1e-4)
        for mode in ("float", "float_cl", "float_cl_fused", "float_cl_fused_cap", "bf16", "int8", "bf16_cl", "int8_cl",
                     "int8_cl_fused"):
            add(f"ResNet-18-shaped batch {b}: {mode} runtime weight memory vs fp32", "<= 0.25",
                r.get(f"wfn_{mode}_memory_ratio"), lambda v: v <= 0.25)
    return out


def _modes_linear_table(rows) -> str:
    head = ("| threads | M | N | K | " + " | ".join(LINEAR_PEERS) + " | WFN float | WFN bf16 | WFN int8 | best peer | "
            "float vs best | bf16 vs bf16 | int8 vs int8 dyn | int8 vs best | int8 GB/s | 1-core stream GB/s | "
            "err bf16 | err int8 |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in _find(rows, kind="modes-linear"):
        cells = [r["threads"], r["M"], r["N"], r["K"]] + [_fmt(r.get(f"{p}_s", 0) * 1e3, 3) if f"{p}_s" in r else "n/a"
                                          for p in LINEAR_PEERS]
        cells += [_fmt(r[f"wfn_{m}_s"] * 1e3, 3) for m in ("float", "bf16", "int8")]
        cells += [r["best_peer"], _fmt(r["wfn_float_vs_best"]) + "x", _fmt(r.get("wfn_bf16_vs_bf16")) + "x",
                  _fmt(r.get("wfn_int8_vs_int8_dynamic")) + "x", _fmt(r["wfn_int8_vs_best"]) + "x",
                  _fmt(r["wfn_int8_gbs"], 1), _fmt(r["stream_gbs"], 1), f"{r['wfn_bf16_err']:.1e}",
                  f"{r['wfn_int8_err']:.1e}"]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def _modes_model_table(rows) -> str:
    head = ("| model | threads | batch | " + " | ".join(MODEL_PEERS) + " | WFN float | WFN float channels_last | "
            "WFN float channels_last + folded BN | WFN float cl + folded BN, memory cap | WFN bf16 | WFN int8 | "
            "WFN bf16 channels_last | WFN int8 channels_last | WFN int8 channels_last + folded BN | "
            "float vs fastest fp32 | float channels_last vs fastest fp32 | float cl + folded BN vs fastest fp32 | "
            "float cl + folded BN, memory cap vs fastest fp32 | "
            "bf16 vs bf16 eager | bf16 channels_last vs bf16 eager | "
            "bf16 channels_last vs bf16 channels_last | int8 vs bf16 eager | int8 channels_last vs bf16 eager | "
            "int8 channels_last vs bf16 channels_last | int8 channels_last vs int8 static | "
            "int8 cl + folded BN vs fastest bf16 | fastest peer | int8 cl + folded BN vs fastest peer | "
            "err bf16 | err int8 | err bf16 / int8 channels_last | "
            "memory float / float cl / float cl folded / float cl folded capped / bf16 / int8 / bf16 cl / int8 cl / "
            "int8 cl folded (of fp32) | "
            "activation workspace MB float / bf16 / int8 |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in _find(rows, kind="modes-model"):
        cells = [r["name"], r["threads"], r["M"]] + [_fmt(r[f"{p}_s"] * 1e3, 2) if f"{p}_s" in r else "n/a"
                                                     for p in MODEL_PEERS]
        modes = ("float", "float_cl", "float_cl_fused", "float_cl_fused_cap", "bf16", "int8", "bf16_cl", "int8_cl",
                 "int8_cl_fused")
        cells += [_fmt(r[f"wfn_{m}_s"] * 1e3, 2) if f"wfn_{m}_s" in r else "n/a" for m in modes]

        def ratio(key):
            return (_fmt(r[key]) + "x") if key in r else "n/a"

        cells += [ratio("wfn_float_vs_fastest_fp32"), ratio("wfn_float_cl_vs_fastest_fp32"),
                  ratio("wfn_float_cl_fused_vs_fastest_fp32"), ratio("wfn_float_cl_fused_cap_vs_fastest_fp32"),
                  ratio("wfn_bf16_vs_bf16_eager"), ratio("wfn_bf16_cl_vs_bf16_eager"),
                  ratio("wfn_bf16_cl_vs_bf16_channels_last"), ratio("wfn_int8_vs_bf16_eager"),
                  ratio("wfn_int8_cl_vs_bf16_eager"), ratio("wfn_int8_cl_vs_bf16_channels_last"),
                  ratio("wfn_int8_cl_vs_int8_static"), ratio("wfn_int8_cl_fused_vs_fastest_bf16"),
                  r.get("best_peer", "n/a"), ratio("wfn_int8_cl_fused_vs_best"),
                  f"{r['wfn_bf16_err']:.1e}", f"{r['wfn_int8_err']:.1e}",
                  " / ".join(f"{r[k]:.1e}" if k in r else "n/a" for k in ("wfn_bf16_cl_err", "wfn_int8_cl_err")),
                  " / ".join(_fmt(r[f"wfn_{m}_memory_ratio"], 3) if f"wfn_{m}_memory_ratio" in r else "n/a"
                             for m in modes),
                  " / ".join(_fmt(r.get(f"wfn_{m}_activation_workspace_bytes", 0) / 1e6, 2)
                             for m in ("float", "bf16", "int8"))]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def write_outputs(rows: list[dict], env: dict, out: Path, backends: list[str]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    keys = sorted({k for r in rows for k in r}, key=lambda k: (k not in ("kind", "name", "M", "N", "K", "bits"), k))
    with open(out / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    main = backends[0] if backends else "extension"
    lines = ["# wfn-kernels benchmark results", "", "## Environment", ""]
    lines += [f"- {k}: {v}" for k, v in env.items()]
    lines += ["", f"## Targets (backend `{main}`)", "", "| target | required | measured | status |", "|---|---|---|---|"]
    for label, need, value, status in targets(rows, main):
        lines.append(f"| {label} | {need} | {'' if value is None else f'{value:.2f}'} | {status} |")
    if _find(rows, kind="modes-linear") or _find(rows, kind="modes-model"):
        lines += ["", "## Compute-mode targets (1 thread)", "", "| target | required | measured | status |",
                  "|---|---|---|---|"]
        for label, need, value, status in mode_targets(rows):
            shown = '' if value is None else (f'{value:.1e}' if 0 < abs(value) < 1e-3 else f'{value:.3f}')
            lines.append(f"| {label} | {need} | {shown} | {status} |")
        lines += ["", "## Compute modes: linear layers, 4-bit (ms, medians, interleaved)", "",
                  _modes_linear_table(rows), "", "## Compute modes: ResNet-18-shaped net (ms)", "",
                  _modes_model_table(rows)]
    lines += ["", "## Linear layers", "", _linear_table(rows, backends), "", "## Conv layers (ResNet-18, batch 1)", "",
              _conv_table(rows, backends), "", "## Whole models", "", _model_table(rows), ""]
    (out / "results.md").write_text("\n".join(lines))
    plot_speedup_vs_batch(rows, main, out / "speedup_vs_batch.png")
    plot_bandwidth(rows, main, env.get("read_bandwidth_gbs"), out / "bandwidth.png")
    plot_memory(rows, out / "weight_memory.png")


def _fmt(v, p=2):
    return "" if v is None else (f"{v:.{p}f}" if isinstance(v, float) else str(v))


def _linear_table(rows, backends) -> str:
    head = "| shape | M | N | K | bits | " + " | ".join(
        f"{b} ms | {b} GB/s | {b} % bw | {b} vs fp32 | {b} vs bf16 | {b} vs int8" for b in backends
    ) + " | fp32 ms | packed MB |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in _find(rows, kind="linear"):
        cells = [r["name"], r["M"], r["N"], r["K"], r["bits"]]
        for b in backends:
            cells += [_fmt(r.get(f"{b}_s", 0) * 1e3, 3), _fmt(r.get(f"{b}_gbs"), 1), _fmt(r.get(f"{b}_pct_bw"), 0),
                      _fmt(r.get(f"{b}_vs_fp32")), _fmt(r.get(f"{b}_vs_bf16")), _fmt(r.get(f"{b}_vs_int8_dynamic"))]
        cells += [_fmt(r["fp32_s"] * 1e3, 3), _fmt(r["weight_bytes_packed"] / 1e6, 3)]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def _conv_table(rows, backends) -> str:
    mod = any("module_opt_s" in r for r in _find(rows, kind="conv"))
    extra = " WFNConv2d after optimize_for_inference ms | vs fp32 (interleaved) | path |" if mod else ""
    lines = ["| layer | batch | C_out | K | " + " | ".join(f"{b} ms | {b} vs fp32" for b in backends) + " | fp32 ms |"
             + extra, "|" + "---|" * (5 + 2 * len(backends) + (3 if mod else 0))]
    for r in _find(rows, kind="conv"):
        cells = [r["name"], r["M"], r["N"], r["K"]]
        for b in backends:
            cells += [_fmt(r.get(f"{b}_s", 0) * 1e3, 3), _fmt(r.get(f"{b}_vs_fp32"))]
        cells.append(_fmt(r["fp32_s"] * 1e3, 3))
        if mod:
            cells += [_fmt(r.get("module_opt_s", 0) * 1e3, 3), _fmt(r.get("module_opt_vs_fp32")),
                      r.get("module_opt_path", "")]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def _model_table(rows) -> str:
    lines = ["| model | batch | float ms | WFN ms | speed-up | packed KB | fp32 KB | memory ratio | "
             "oneDNN decode workspace KB |", "|---|---|---|---|---|---|---|---|---|"]
    for r in _find(rows, kind="model"):
        lines.append(f"| {r['name']} | {r['M']} | {r['float_s'] * 1e3:.2f} | {r['wfn_s'] * 1e3:.2f} | "
                     f"{r['wfn_vs_float']:.2f}x | {r['weight_bytes_packed'] / 1e3:.1f} | "
                     f"{r['weight_bytes_fp32'] / 1e3:.1f} | {r['memory_ratio']:.3f} | "
                     f"{r.get('workspace_bytes', 0) / 1e3:.1f} |")
    return "\n".join(lines)


def plot_speedup_vs_batch(rows, backend, path) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    for bits in (2, 4, 8):
        pts = sorted((r["M"], r[f"{backend}_vs_fp32"]) for r in _find(rows, kind="linear", N=4096, K=4096, bits=bits)
                     if f"{backend}_vs_fp32" in r)
        if pts:
            ax.plot(*zip(*pts), marker="o", label=f"{bits}-bit")
    ax.axhline(1.0, color="grey", lw=0.8, ls="--")
    ax.set(xscale="log", xlabel="batch M", ylabel="speed-up vs fp32 F.linear", title=f"4096x4096, backend {backend}")
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_bandwidth(rows, backend, bw, path) -> None:
    """Roofline-style: achieved GB/s of each M=1 row against the measured read bandwidth."""
    fig, ax = plt.subplots(figsize=(7, 4))
    pts = [r for r in _find(rows, kind="linear", M=1) if f"{backend}_gbs" in r]
    labels = [f"{r['name']}\n{r['bits']}b" for r in pts]
    ax.bar(range(len(pts)), [r[f"{backend}_gbs"] for r in pts], color="tab:blue")
    if bw:
        ax.axhline(bw, color="red", ls="--", label=f"measured read bandwidth {bw:.1f} GB/s")
        ax.legend()
    ax.set_xticks(range(len(pts)), labels, fontsize=7)
    ax.set(ylabel="GB/s (packed bytes moved / time)", title=f"batch-1 GEMV bandwidth, backend {backend}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_memory(rows, path) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    sq = [r for r in _find(rows, kind="linear", M=1) if r["N"] == 4096]
    models = [r for r in _find(rows, kind="model") if r["M"] == 1]
    labels = [f"4096^2 {r['bits']}b" for r in sq] + [r["name"] for r in models]
    fp32 = [r["weight_bytes_fp32"] / 1e6 for r in sq + models]
    packed = [r["weight_bytes_packed"] / 1e6 for r in sq + models]
    xs = range(len(labels))
    ax.bar([x - 0.2 for x in xs], fp32, 0.4, label="fp32")
    ax.bar([x + 0.2 for x in xs], packed, 0.4, label="WFN packed")
    ax.set_xticks(list(xs), labels, rotation=20, fontsize=7)
    ax.set(ylabel="weight MB", yscale="log", title="weight memory")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
