"""Benchmark runner: `python bench/run.py --out bench/results`.

Writes results.csv, results.md (environment header, tables, targets with PASS/MISS) and PNG plots.
Every row checks correctness against the reference before timing; dense baselines (torch fp32 and bf16
F.linear, int8 dynamic quantisation on CPU, fp16 on GPU) are timed in the same run; medians.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

import wfn_kernels as wk  # noqa: E402

BACKEND_NAMES = ("extension", "triton", "reference")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="bench/results", help="output directory")
    p.add_argument("--shapes", default="square-gemv,square-gemm,resnet18,mlp",
                   help="comma-separated shape sets: square-gemv, square-gemm, resnet18, mlp")
    p.add_argument("--bits", default="2,4,8", help="comma-separated code widths")
    p.add_argument("--backends", default="extension", help=f"comma-separated WFN backends: {BACKEND_NAMES}")
    p.add_argument("--batches", default="1,4,16,64,256", help="batch sizes M for the GEMM sets")
    p.add_argument("--repeats", type=int, default=10, help="timed runs per measurement (median)")
    p.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads")
    p.add_argument("--models", action=argparse.BooleanOptionalAction, default=True,
                   help="whole-model rows (ResNet-18-shaped network, the demo model)")
    p.add_argument("--demo-model", default="demo_out/model.wfn.safetensors", help="packed demo model, if present")
    p.add_argument("--modes", action=argparse.BooleanOptionalAction, default=True,
                   help="compute-mode rows (float/bf16/int8 against torch's CPU peers; bench/modes.py)")
    p.add_argument("--mode-threads", default="1,2", help="thread counts of the compute-mode rows")
    p.add_argument("--mode-batches", default="1,4,16,64,256", help="M of the N=4096 K=14336 compute-mode rows")
    p.add_argument("--model-batches", default="1,8", help="batches of the ResNet-18-shaped compute-mode rows")
    p.add_argument("--int8-static", action=argparse.BooleanOptionalAction, default=True,
                   help="build the torchao PT2E int8 static peer (torch.compile; minutes)")
    p.add_argument("--bf16-compile", action=argparse.BooleanOptionalAction, default=True,
                   help="build the bf16 channels_last torch.compile peer")
    p.add_argument("--only-modes", action="store_true", help="run the compute-mode rows only")
    p.add_argument("--mode-shape", default="4096,14336", help="N,K of the compute-mode linear rows")
    p.add_argument("--model-resolution", type=int, default=224, help="input size of the ResNet-18-shaped rows")
    return p.parse_args(argv)


SKIPPED: list[str] = []  # "backend: reason" for each requested backend that cannot run here


def validate(args) -> tuple[list[str], list[int], list[str], list[int]]:
    """Check every argument before any work; returns (shape sets, bits, runnable backends, batches)."""
    from shapes import SHAPE_SETS

    sets = [s.strip() for s in args.shapes.split(",") if s.strip()]
    for s in sets:
        if s not in SHAPE_SETS:
            raise SystemExit(f"bench/run.py: unknown shape set {s!r}; choose from {', '.join(SHAPE_SETS)}")
    try:
        bits = [int(b) for b in args.bits.split(",")]
        batches = [int(b) for b in args.batches.split(",")]
    except ValueError:
        raise SystemExit(f"bench/run.py: --bits/--batches must be comma-separated integers, got {args.bits!r}, "
                         f"{args.batches!r}") from None
    if any(b not in (2, 4, 8) for b in bits):
        raise SystemExit(f"bench/run.py: --bits must be from 2, 4, 8, got {bits}")
    try:
        args.mode_threads_list = [int(t) for t in args.mode_threads.split(",")]
        args.mode_batches_list = [int(t) for t in args.mode_batches.split(",")]
        args.model_batches_list = [int(t) for t in args.model_batches.split(",")]
        args.mode_n, args.mode_k = (int(t) for t in args.mode_shape.split(","))
    except ValueError:
        raise SystemExit("bench/run.py: --mode-threads/--mode-batches/--model-batches must be comma-separated "
                         "integers") from None
    if min(args.mode_threads_list + args.mode_batches_list + args.model_batches_list
           + [args.mode_n, args.mode_k, args.model_resolution]) < 1:
        raise SystemExit("bench/run.py: mode thread counts and batch sizes must be >= 1")
    if args.repeats < 1 or args.threads < 1 or min(batches) < 1:
        raise SystemExit("bench/run.py: --repeats, --threads and batch sizes must be >= 1")
    backends, info = [], wk.available_backends()
    for b in [b.strip() for b in args.backends.split(",") if b.strip()]:
        if b not in BACKEND_NAMES:
            raise SystemExit(f"bench/run.py: unknown backend {b!r}; choose from {', '.join(BACKEND_NAMES)}")
        if not info[b]["available"]:
            SKIPPED.append(f"{b}: {info[b]['reason']}")
            print(f"skipped backend {SKIPPED[-1]}")
        elif b == "triton" and not torch.cuda.is_available():
            SKIPPED.append("triton: no CUDA device (the interpreter is for correctness only)")
            print(f"skipped backend {SKIPPED[-1]}")
        else:
            backends.append(b)
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        tempfile.NamedTemporaryFile(dir=out).close()
    except OSError as exc:
        raise SystemExit(f"bench/run.py: output directory {out} is not writable: {exc}") from None
    return sets, bits, backends, batches


def run(args) -> list[dict]:
    import cases
    from common import environment, read_bandwidth_gbs
    from report import write_outputs
    from shapes import conv_cases, linear_cases

    sets, bits, backends, batches = validate(args)
    torch.set_num_threads(args.threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    bw = read_bandwidth_gbs()
    env = environment(bw)
    if not torch.cuda.is_available():
        SKIPPED.append("GPU baselines (torch fp16 cuBLAS) and bench/bench_gpu.py: no CUDA device")
    env["skipped"] = "; ".join(SKIPPED) if SKIPPED else "none"
    print(json.dumps(env, indent=1))
    lin = [c for s in sets for c in linear_cases(s, batches)] if not args.only_modes else []
    conv = [c for s in sets for c in conv_cases(s)] if not args.only_modes else []
    rows, base_cache = [], {}
    for name, m, n, k in tqdm(lin, desc="linear shapes"):
        if (m, n, k) not in base_cache:
            base_cache.clear()  # one shape's dense weights at a time (8192^2 fp32 is 256 MB)
            base_cache[(m, n, k)] = cases.dense_baselines(m, n, k, device)
        for b in bits:
            rows.append(cases.linear_row(name, m, n, k, b, backends, base_cache[(m, n, k)], args.repeats,
                                         device, bw))
    for c in tqdm(conv, desc="conv layers"):
        rows.append(cases.conv_row(*c, 4, backends, args.repeats, device))
    if args.models and not args.only_modes:
        rows += model_rows(args, device)
    if args.modes and device == "cpu" and "extension" in backends:
        import modes

        notes = []
        for threads in args.mode_threads_list:
            r, n = modes.linear_mode_rows(args.mode_batches_list, args.repeats, threads, args.mode_n, args.mode_k)
            rows += r
            notes += n
            r, n = modes.model_mode_rows(args.model_batches_list, max(3, args.repeats // 2), threads,
                                         int8_static=args.int8_static, resolution=args.model_resolution,
                                         bf16_compile=args.bf16_compile)
            rows += r
            notes += n
        torch.set_num_threads(args.threads)
        env["compute_mode_notes"] = "; ".join(sorted(set(notes))) if notes else "none"
    elif args.modes:
        env["compute_mode_notes"] = "compute-mode rows need the C++ extension on the CPU; skipped"
    write_outputs(rows, env, Path(args.out), backends)
    return rows


def model_rows(args, device) -> list[dict]:
    import copy

    import cases
    from shapes import ResNet18, put_on_codebook

    from wfn_kernels.nn import onednn_layout as onednn

    rows = []
    net = ResNet18().eval()
    put_on_codebook(net, cases.pow2_codebook(4) / 8)
    packed = copy.deepcopy(net)
    wk.convert(packed)
    onednn.clear_workspaces()
    for batch in (1, 32):
        x = torch.randn(batch, 3, 224, 224)
        rows.append(cases.model_row("resnet18-shaped (4-bit)", net, packed, x, max(3, args.repeats // 3)))
    if device == "cpu" and not onednn.unavailable_reason():
        opt = copy.deepcopy(packed)
        report = wk.optimize_for_inference(opt, torch.randn(1, 3, 224, 224))
        left = [f"{n}: {why}" for n, why in report if not why.startswith("optimized")]
        print(f"optimize_for_inference: {len(report) - len(left)}/{len(report)} conv layers on the oneDNN layout"
              + (f"; left alone: {left}" if left else ""))
        for batch in (1, 32):
            x = torch.randn(batch, 3, 224, 224)
            rows.append(cases.model_row("resnet18-shaped (4-bit, oneDNN layout)", net, opt, x,
                                        max(3, args.repeats // 3)))
    else:
        print(f"skipped oneDNN-layout model rows: {onednn.unavailable_reason() or 'not on the CPU'}")
    demo = Path(args.demo_model)
    onednn.clear_workspaces()
    if demo.is_file():
        from wfn_kernels.workflows.models import build

        float_model = build("small-cnn")
        conv_model = wk.load_packed(demo, build("small-cnn"))
        float_model.load_state_dict({k: v for k, v in conv_model.state_dict().items()
                                     if not k.endswith((".packed", ".codebook", ".global_index"))}, strict=False)
        for name, mod in conv_model.named_modules():
            if isinstance(mod, (wk.WFNLinear, wk.WFNConv2d)):
                with torch.no_grad():
                    float_model.get_submodule(name).weight.copy_(mod.dense_weight())
        for batch in (1, 32):
            x = torch.rand(batch, 1, 8, 8)
            rows.append(cases.model_row("demo model (WFN-fixed)", float_model, conv_model, x, args.repeats))
    else:
        print(f"skipped demo-model rows: {demo} not found (run `make demo` first)")
    return rows


def main(argv=None) -> int:
    run(parse_args(argv))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))
    sys.exit(main())
