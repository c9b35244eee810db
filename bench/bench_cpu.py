"""CPU kernel benchmark of the CPU kernel targets (a script, not a pass/fail test).

For every case: a correctness check against wfn_kernels.reference first, then medians of interleaved
runs (WFN extension and each baseline alternate inside one loop, so load drift on this shared machine
hits both alike), the speed ratio, GB/s counting packed code bytes, % of the read bandwidth measured
here (a large torch.sum), and PASS/MISS against each target. Writes bench/results/cpu_kernels.{csv,md}.

    .venv/bin/python bench/bench_cpu.py [--threads 2] [--repeats 15] [--quick]
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import sys
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import cpu_flags, cpu_model, read_bandwidth_gbs  # noqa: E402
from shapes import RESNET18_CONVS  # noqa: E402

import wfn_kernels as wk  # noqa: E402
from wfn_kernels import ops  # noqa: E402
from wfn_kernels.format.codebook import Codebook  # noqa: E402
from wfn_kernels.format.packing import pack_codes  # noqa: E402
from wfn_kernels.ops import reference  # noqa: E402
from wfn_kernels.ops import shift_add as sa  # noqa: E402
from wfn_kernels.timing import interleaved_times  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
FIELDS = ["case", "shape", "wfn_ms", "baseline", "baseline_ms", "speedup", "packed_gbs", "pct_bandwidth",
          "target", "status", "wfn_min_ms", "baseline_min_ms"]
MINIMA: dict[float, float] = {}  # median -> fastest run of the same series, reported next to the medians (noise diagnostics)


def interleaved_medians(fns: list, repeats: int, warmup: int = 2) -> list[float]:
    """Median seconds of each fn, calls interleaved round-robin; records each series' fastest run in MINIMA."""
    times = interleaved_times(fns, repeats, warmup)
    medians = [statistics.median(t) for t in times]
    for med, t in zip(medians, times):
        MINIMA[med] = min(t)
    return medians


def random_codebook(c: int, gen) -> torch.Tensor:
    return torch.sort(torch.unique(torch.randn(4 * c, generator=gen)[: c * 2]))[0][:c].float()


def wfn_codebook_256() -> torch.Tensor:
    """256 values j/64, j = -128..127: each a signed sum of <= 4 powers of two (a WFN-style codebook,
    bf16-exact, so the AVX-512 8-bit decode needs only two byte planes)."""
    return Codebook.from_values((torch.arange(256, dtype=torch.float64) - 128) / 64, max_terms=4).values


def linear_case(m, n, k, bits, gen, wfn_values=False):
    c = 1 << bits
    cb = wfn_codebook_256() if wfn_values else random_codebook(c, gen)
    codes = torch.randint(0, c, (n, k), generator=gen)
    return torch.randn(m, k, generator=gen), pack_codes(codes, bits), cb, codes


def check_linear(x, packed, cb, bits, k):
    y = wk.codebook_linear(x, packed, cb, bits, backend="extension", validate=False)
    ref = reference.codebook_linear(x, packed, cb, bits, k)
    scale = float(ref.abs().max()) + 1e-6
    err = float((y - ref).abs().max()) / scale
    if err > 1e-5:
        raise AssertionError(f"extension differs from reference: max rel err {err:.2e}")
    return err


def row(case, shape, t_wfn, baseline, t_base, packed_bytes, bw, target_speedup=None, target_bw=None):
    speed = t_base / t_wfn if t_base else float("nan")
    gbs = packed_bytes / t_wfn / 1e9 if packed_bytes else float("nan")
    pct = 100 * gbs / bw if packed_bytes else float("nan")
    targets, ok = [], True
    if target_speedup is not None:
        targets.append(f">= {target_speedup}x {baseline}")
        ok &= speed >= target_speedup
    if target_bw is not None:
        targets.append(f">= {target_bw}% bandwidth")
        ok &= pct >= target_bw
    status = ("PASS" if ok else "MISS") if targets else "info"
    return dict(case=case, shape=shape, wfn_ms=f"{t_wfn * 1e3:.3f}", baseline=baseline,
                baseline_ms=f"{t_base * 1e3:.3f}" if t_base else "", speedup=f"{speed:.2f}",
                packed_gbs=f"{gbs:.1f}" if packed_bytes else "", pct_bandwidth=f"{pct:.0f}" if packed_bytes else "",
                target="; ".join(targets), status=status,
                wfn_min_ms=f"{MINIMA.get(t_wfn, t_wfn) * 1e3:.3f}",
                baseline_min_ms=f"{MINIMA[t_base] * 1e3:.3f}" if t_base in MINIMA else "")


def bench_gemv(bits, bw, repeats, gen, with_qdyn, wfn_values=False):
    n = k = 8192
    x, packed, cb, codes = linear_case(1, n, k, bits, gen, wfn_values)
    err = check_linear(x, packed, cb, bits, k)
    dense = cb[codes]
    del codes
    wfn = lambda: wk.codebook_linear(x, packed, cb, bits, backend="extension", validate=False)  # noqa: E731
    fp32 = lambda: F.linear(x, dense)  # noqa: E731
    fns = [wfn, fp32]
    if with_qdyn:
        lin = nn.Linear(k, n, bias=False)
        with torch.no_grad():
            lin.weight.copy_(dense)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            q = torch.ao.quantization.quantize_dynamic(nn.Sequential(lin), {nn.Linear}, dtype=torch.qint8)
        fns.append(lambda: q(x))
    times = interleaved_medians(fns, repeats)
    shape = f"M=1 N=K=8192 {bits}-bit" + (" WFN-style codebook j/64" if wfn_values else "")
    target = {4: 6.0, 8: 3.5}.get(bits) if not wfn_values else None
    rows = [row(f"gemv_{bits}bit" + ("_wfn_codebook" if wfn_values else ""), shape, times[0], "F.linear fp32", times[1], packed.numel(), bw,
                target_speedup=target, target_bw=80 if bits == 4 else None)]
    if with_qdyn:
        rows.append(row(f"gemv_{bits}bit", shape, times[0], "quantize_dynamic int8", times[2], packed.numel(), bw,
                        target_speedup=1.5 if bits == 4 else None))
    print(f"  correctness: max rel err {err:.1e}")
    return rows


def bench_levels(bw, repeats, gen):
    """Same 4-bit GEMV at every dispatch level this CPU has (info: what each SIMD path gives)."""
    x, packed, cb, _ = linear_case(1, 8192, 8192, 4, gen)
    hw = torch.ops.wfn_cpu.hardware_capability()
    levels = ["scalar", "avx2", "avx512"][: ["scalar", "avx2", "avx512"].index(hw) + 1]
    before = torch.ops.wfn_cpu.capability()
    rows = []
    for level in levels:
        torch.ops.wfn_cpu.set_dispatch(level)
        check_linear(x, packed, cb, 4, 8192)
        (t,) = interleaved_medians([lambda: wk.codebook_linear(x, packed, cb, 4, backend="extension",
                                                               validate=False)], max(3, repeats // 3))
        rows.append(row(f"gemv_4bit_level_{level}", "M=1 N=K=8192 4-bit", t, "", 0, packed.numel(), bw))
    torch.ops.wfn_cpu.set_dispatch(before)
    return rows


def bench_gemm(bw, repeats, gen, m=256):
    n = k = 4096
    x, packed, cb, codes = linear_case(m, n, k, 4, gen)
    dense = cb[codes]
    err = check_linear(x, packed, cb, 4, k)
    wfn = lambda: wk.codebook_linear(x, packed, cb, 4, backend="extension", validate=False)  # noqa: E731
    previous = torch.ops.wfn_cpu.set_gemm_min_m(1)
    try:
        check_linear(x, packed, cb, 4, k)
        t_tiles, = interleaved_medians([wfn], max(3, repeats // 2))
    finally:
        torch.ops.wfn_cpu.set_gemm_min_m(previous)
    times = interleaved_medians([wfn, lambda: F.linear(x, dense)], repeats)
    print(f"  correctness: max rel err {err:.1e}")
    shape = f"M={m} N=K=4096 4-bit"
    return [row("gemm_4bit", shape, times[0], "F.linear fp32", times[1], 0, bw, target_speedup=0.9),
            row("gemm_4bit_decode_tiles+mm", shape, t_tiles, "F.linear fp32", times[1], 0, bw)]


def bench_conv(bw, repeats, gen, bits=4):
    rows = []
    for name, ci, h, w, co, kk, s, p, _ in RESNET18_CONVS:
        wshape = (co, ci, kk, kk)
        c = 1 << bits
        cb = random_codebook(c, gen)
        codes = torch.randint(0, c, (co, ci * kk * kk), generator=gen)
        packed = pack_codes(codes, bits)
        dense = cb[codes].reshape(wshape)
        x = torch.randn(1, ci, h, w, generator=gen)
        y = wk.codebook_conv2d(x, packed, cb, bits, wshape, None, s, p, backend="extension", validate=False)
        torch.testing.assert_close(y, F.conv2d(x, dense, None, s, p), rtol=1e-4, atol=1e-4)
        times = interleaved_medians(
            [lambda: wk.codebook_conv2d(x, packed, cb, bits, wshape, None, s, p, backend="extension",
                                        validate=False),
             lambda: F.conv2d(x, dense, None, s, p)], repeats)
        rows.append(row(f"conv_{name}", f"1x{ci}x{h}x{w} -> {co} k{kk} s{s} {bits}-bit", times[0],
                        "conv2d fp32", times[1], packed.numel(), bw, target_speedup=0.9))
    return rows


def bench_shift_add(bw, repeats, gen):
    n = k = 8192
    cb = Codebook.from_values([0.0] + [sg * 2.0 ** e for e in range(-7, 0) for sg in (1.0, -1.0)])
    codes = torch.randint(0, len(cb), (n, k), generator=gen)
    w = sa.encode_shift_add(cb, codes)
    x8 = torch.randint(-128, 128, (1, k), generator=gen, dtype=torch.int8)
    y = sa.shift_add_linear(x8, w)
    exact = (x8.double() @ cb.values.double()[codes].t())
    assert torch.equal(y.double() * w.scale, exact), "shift-add result is not exact"
    dense = cb.values[codes]
    xf = x8.float()
    times = interleaved_medians([lambda: sa.shift_add_linear(x8, w), lambda: F.linear(xf, dense)], repeats)
    return [row("shift_add_int8", "M=1 N=K=8192 4-bit sign+shift", times[0], "F.linear fp32", times[1],
                w.packed.numel(), bw)]


def header(threads: int) -> list[str]:
    load = os.getloadavg() if hasattr(os, "getloadavg") else ("?",)
    return [f"torch {torch.__version__}; CPU {cpu_model()} ({os.cpu_count()} cores); flags: {cpu_flags()}",
            f"threads {threads}; dispatch level {ops._C.cpu_capability()}; load average at start "
            f"{', '.join(f'{v:.2f}' for v in load)}"]


def write(rows, lines, bw, stem):
    RESULTS.mkdir(exist_ok=True)
    with open(RESULTS / f"{stem}.csv", "w", newline="") as f:
        wr = csv.DictWriter(f, fieldnames=FIELDS)
        wr.writeheader()
        wr.writerows(rows)
    md = ["# CPU kernels (bench/bench_cpu.py)", ""] + [f"- {ln}" for ln in lines]
    md += [f"- measured read bandwidth (torch.sum over 512 MB fp32, median): {bw:.1f} GB/s",
           "- medians of interleaved runs; speedup = baseline time / WFN time; GB/s counts packed code bytes", "",
           "| " + " | ".join(FIELDS) + " |", "|" + "---|" * len(FIELDS)]
    md += ["| " + " | ".join(str(r[k]) for k in FIELDS) + " |" for r in rows]
    (RESULTS / f"{stem}.md").write_text("\n".join(md) + "\n")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--quick", action="store_true", help="GEMV cases only")
    ap.add_argument("--only", default="", help="comma list of sections: gemv,levels,gemm,conv,shift_add")
    ap.add_argument("--stem", default="cpu_kernels", help="output file name stem under bench/results")
    args = ap.parse_args(argv)
    if ops._C is None:
        raise SystemExit(f"extension not built: {ops._C_REASON}")
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    lines = header(args.threads)
    for ln in lines:
        print(ln)
    bw = read_bandwidth_gbs(512, repeats=max(10, args.repeats))
    print(f"read bandwidth {bw:.1f} GB/s")
    sections = args.only.split(",") if args.only else (["gemv"] if args.quick else
                                                      ["gemv", "levels", "gemm", "conv", "shift_add"])
    rows = []
    for sec in sections:
        print(f"[{sec}]")
        if sec == "gemv":
            new = bench_gemv(4, bw, args.repeats, gen, True) + bench_gemv(8, bw, args.repeats, gen, False)
            new += bench_gemv(8, bw, args.repeats, gen, False, wfn_values=True)
            new += bench_gemv(2, bw, args.repeats, gen, False)
        elif sec == "levels":
            new = bench_levels(bw, args.repeats, gen)
        elif sec == "gemm":
            new = bench_gemm(bw, max(10, args.repeats // 2), gen)
        elif sec == "conv":
            new = bench_conv(bw, args.repeats, gen)
        elif sec == "shift_add":
            new = bench_shift_add(bw, args.repeats, gen)
        else:
            raise SystemExit(f"unknown section {sec!r}")
        for r in new:
            print("  " + "  ".join(f"{k}={r[k]}" for k in FIELDS if r[k] != ""))
        rows += new
    lines.append(f"load average at end {', '.join(f'{v:.2f}' for v in os.getloadavg())}; with more runnable "
                 f"processes than the {os.cpu_count()} cores, multi-threaded medians include scheduler stalls")
    write(rows, lines, bw, args.stem)
    print(f"wrote {RESULTS / args.stem}.csv and .md")


if __name__ == "__main__":
    main()
