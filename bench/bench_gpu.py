"""GPU benchmark of the codebook linear op: CUDA C++ and Triton backends against torch fp16 F.linear (cuBLAS).

    python bench/bench_gpu.py --out bench/results/gpu [--sizes 8192x8192] [--bits 2,4,8] [--batches 1,16,64,256]

For each (bits, N x K, M): check correctness against the reference first (power-of-two codebook, small-integer
fp16 activations, so a correct kernel matches bit for bit), then time each backend with CUDA events (median
of --repeats, L2 flushed before every rep by zeroing a buffer larger than L2). Reports time, achieved GB/s
counting the packed code bytes, % of the device-to-device copy bandwidth measured in the same run (bytes read
+ written), and the speed ratio to fp16 F.linear on the same shape. Writes gpu.csv and gpu.md under --out.
Without a CUDA device it prints "skipped: no CUDA device" and exits 0.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

DEVICE = "cuda"  # module-level so a CPU dry run of the script logic can swap it
TARGETS = "batch 1, 8192x8192, 4-bit: >= 85 % of measured copy bandwidth and >= 3.3x torch fp16 F.linear"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="bench/results/gpu", help="output directory for gpu.csv and gpu.md")
    p.add_argument("--sizes", default="8192x8192", help="comma-separated NxK weight shapes")
    p.add_argument("--bits", default="2,4,8", help="comma-separated code widths")
    p.add_argument("--batches", default="1,16,64,256", help="comma-separated M")
    p.add_argument("--backends", default="cuda,triton", help="comma-separated: cuda (C++ extension), triton")
    p.add_argument("--repeats", type=int, default=50, help="timed reps per measurement (median)")
    p.add_argument("--warmup", type=int, default=10, help="untimed reps first (compilation, clocks)")
    p.add_argument("--triton-sweep", action=argparse.BooleanOptionalAction, default=True,
                   help="also time a small grid of Triton GEMV tile configs for M <= 4 (row 'triton-best')")
    return p.parse_args(argv)


def time_cuda(fn, repeats: int, warmup: int, flush: torch.Tensor) -> float:
    """Median seconds of fn() by CUDA events; the L2 is flushed (flush.zero_()) outside each timed region."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        flush.zero_()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return statistics.median(times)


def copy_bandwidth_gbs(flush: torch.Tensor, repeats: int) -> float:
    """Device-to-device copy of 1 GiB: (read + write) bytes / median time, GB/s (1e9 B/s)."""
    src = torch.empty(1 << 28, dtype=torch.float32, device=DEVICE).fill_(1.0)
    dst = torch.empty_like(src)
    t = time_cuda(lambda: dst.copy_(src), repeats, 3, flush)
    return 2 * src.numel() * 4 / t / 1e9


def make_case(m: int, n: int, k: int, bits: int, gen: torch.Generator):
    """Codebook (i - 2^(bits-1)) / 16 for i < 2^bits (exact in fp16 and bf16), x in {-2..2} as fp16: every
    product and partial sum is exact in float32, so a correct kernel equals the reference bit for bit."""
    from wfn_kernels.format.packing import pack_codes

    cb = (torch.arange(1 << bits, dtype=torch.float32) - (1 << (bits - 1))) / 16
    codes = torch.randint(0, cb.numel(), (n, k), generator=gen, dtype=torch.uint8).to(DEVICE)
    x = torch.randint(-2, 3, (m, k), generator=gen).half()
    return x.to(DEVICE), pack_codes(codes, bits), cb.to(DEVICE)  # packed on the GPU: 8192^2 int64 is 512 MiB


def backend_fns(names, x, packed, cb, bits, k):
    import wfn_kernels as wk

    fns = {}
    for name in names:
        if name == "cuda":
            if not wk.ops.extension_has_cuda():
                print("skipped backend cuda: wfn_kernels._C was built without CUDA kernels")
                continue
            fns[name] = lambda: torch.ops.wfn.codebook_linear(x, packed, cb, bits, k, None)
        elif name == "triton":
            ok, why = wk.ops._triton_status()
            if not ok:
                print(f"skipped backend triton: {why}")
                continue
            fns[name] = lambda: torch.ops.wfn.codebook_linear_triton(x, packed, cb, bits, k, None)
        else:
            raise SystemExit(f"unknown backend {name!r}; choose from cuda, triton")
    return fns


def run(args) -> list[dict]:
    from wfn_kernels.ops import reference

    gen = torch.Generator().manual_seed(0)
    flush = torch.empty(256 << 20, dtype=torch.uint8, device=DEVICE)  # > L2 of any current GPU
    copy_gbs = copy_bandwidth_gbs(flush, max(args.repeats // 5, 5))
    print(f"device-to-device copy bandwidth: {copy_gbs:.0f} GB/s")
    rows = []
    for size in args.sizes.split(","):
        n, k = (int(v) for v in size.lower().split("x"))
        w16 = torch.randn(n, k, device=DEVICE, dtype=torch.float16)
        for bits in (int(b) for b in args.bits.split(",")):
            for m in (int(b) for b in args.batches.split(",")):
                x, packed, cb = make_case(m, n, k, bits, gen)
                t_fp16 = time_cuda(lambda: F.linear(x, w16), args.repeats, args.warmup, flush)
                base = dict(bits=bits, M=m, N=n, K=k, packed_bytes=packed.numel())
                rows.append(base | dict(backend="torch-fp16", correct="n/a", ms=t_fp16 * 1e3,
                                        gbs=2 * n * k / t_fp16 / 1e9, pct_copy=100 * 2 * n * k / t_fp16 / 1e9 / copy_gbs,
                                        x_fp16=1.0))
                expected = reference.codebook_linear(x, packed, cb, bits, k)
                for name, fn in backend_fns(args.backends.split(","), x, packed, cb, bits, k).items():
                    correct = bool(torch.equal(fn(), expected))
                    row = base | dict(backend=name, correct=correct)
                    if correct:
                        t = time_cuda(fn, args.repeats, args.warmup, flush)
                        gbs = packed.numel() / t / 1e9
                        row |= dict(ms=t * 1e3, gbs=gbs, pct_copy=100 * gbs / copy_gbs, x_fp16=t_fp16 / t)
                    rows.append(row)
                    print({key: (round(v, 4) if isinstance(v, float) else v) for key, v in row.items()})
                if args.triton_sweep and "triton" in args.backends.split(",") and m <= 4:
                    best = triton_sweep(x, packed, cb, bits, k, expected, args, flush)
                    if best is not None:
                        t, cfg = best
                        gbs = packed.numel() / t / 1e9
                        rows.append(base | dict(backend="triton-best", correct=True, ms=t * 1e3, gbs=gbs,
                                                pct_copy=100 * gbs / copy_gbs, x_fp16=t_fp16 / t, config=str(cfg)))
                        print(f"triton-best {bits}-bit M={m}: {t * 1e3:.4f} ms with {cfg}")
    for r in rows:
        r["copy_gbs"] = copy_gbs
    return rows


def triton_sweep(x, packed, cb, bits, k, expected, args, flush):
    """Time GEMV tile configs (block_n x block_kb x warps, split-K from the heuristic); (seconds, config) of the
    fastest correct one, or None when the Triton backend cannot run."""
    from dataclasses import replace

    try:
        import wfn_kernels.ops.triton as wt
    except ImportError as exc:
        print(f"skipped triton sweep: {exc}")
        return None
    base = wt.choose_config(x.shape[0], packed.shape[0], k, bits, x.device)
    best = None
    for block_n in (8, 16, 32):
        for block_kb in (64, 128, 256, 512):
            for warps in (4, 8):
                cfg = replace(base, block_n=block_n, block_kb=block_kb, num_warps=warps)
                fn = (lambda c=cfg: wt.codebook_linear_triton_launch(x, packed, cb, bits, k, None, config=c))
                if not torch.equal(fn(), expected):
                    print(f"triton config {cfg} gives a wrong result; skipped")
                    continue
                t = time_cuda(fn, args.repeats, args.warmup, flush)
                if best is None or t < best[0]:
                    best = (t, cfg)
    return best


def write(rows: list[dict], out: Path) -> None:
    from common import environment

    out.mkdir(parents=True, exist_ok=True)
    cols = ["backend", "bits", "M", "N", "K", "correct", "ms", "gbs", "pct_copy", "x_fp16", "packed_bytes", "copy_gbs",
            "config"]
    with open(out / "gpu.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    env = environment()
    lines = ["# GPU benchmark: codebook linear", ""] + [f"- {k}: {v}" for k, v in env.items()]
    lines += [f"- device-to-device copy bandwidth: {rows[0]['copy_gbs']:.0f} GB/s", f"- target: {TARGETS}", "",
              "| backend | bits | M | N x K | correct | ms | GB/s (packed) | % copy BW | x fp16 | config |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        fmt = (lambda key, spec: format(r[key], spec) if key in r else "-")
        lines.append(f"| {r['backend']} | {r['bits']} | {r['M']} | {r['N']}x{r['K']} | {r['correct']} | "
                     f"{fmt('ms', '.4f')} | {fmt('gbs', '.0f')} | {fmt('pct_copy', '.1f')} | {fmt('x_fp16', '.2f')} | "
                     f"{r.get('config', '')} |")
    lines += ["", *target_lines(rows)]
    (out / "gpu.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out / 'gpu.csv'} and {out / 'gpu.md'}")


def target_lines(rows: list[dict]) -> list[str]:
    out = []
    for r in rows:
        is_target_shape = r["bits"] == 4 and r["M"] == 1 and (r["N"], r["K"]) == (8192, 8192)
        if r["backend"] in ("cuda", "triton", "triton-best") and is_target_shape:
            if "ms" not in r:
                out.append(f"- {r['backend']}: MISS (incorrect result, not timed)")
                continue
            ok = r["pct_copy"] >= 85 and r["x_fp16"] >= 3.3
            out.append(f"- {r['backend']}: {'PASS' if ok else 'MISS'}: {r['pct_copy']:.1f} % of copy bandwidth, "
                       f"{r['x_fp16']:.2f}x fp16")
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    if not torch.cuda.is_available():
        print("skipped: no CUDA device")
        return 0
    rows = run(args)
    write(rows, Path(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
