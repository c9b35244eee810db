"""The float mode's small-M linear on an AVX2 CPU: the bf16-byte decode (csrc/cpu/kernels_avx2.cpp, DecBf:
two vpshufb byte tables and an unpack per 16 weights, for tables whose values are bf16-exact, as every WFN
codebook is) against the permute + blend decode it replaces (two vpermps and a blend per 8 weights), and
against torch's fp32 F.linear and int8 dynamic linear (fbgemm) on the same weight. Interleaved medians.

    python bench/float_gemv_avx2.py [M ...] [--threads T] [--repeats R]     (default M: 1 2 4 8 15)

N=4096, K=14336 (the shape of the compute-mode rows in bench/modes.py), 4-bit codes of 16 powers of two.
Both WFN columns are the same op with torch.ops.wfn_cpu.set_avx2_bf16_gemv(1 / 0); both are exact (fp32
products of x with the exact weights, fp32 accumulation). M up to 15: from M = 16 the AVX2 level takes the
decode + sgemm path (linear.cpp gemm_min_m).
"""

from __future__ import annotations

import argparse
import warnings

import torch
import torch.nn.functional as F
from common import git_commit, interleaved_medians

import wfn_kernels as wk
from wfn_kernels.format.packing import pack_codes

N, K = 4096, 14336


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("ms", nargs="*", type=int, default=[1, 2, 4, 8, 15])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=15)
    args = ap.parse_args()
    if any(m < 1 for m in args.ms) or args.threads < 1 or args.repeats < 1:
        ap.error(f"every M, --threads and --repeats must be >= 1, got {args.ms}, {args.threads}, {args.repeats}")
    if torch.ops.wfn_cpu.capability() != "avx2":
        ap.error(f"the bf16-byte decode is the AVX2 level's; this CPU's level is {torch.ops.wfn_cpu.capability()}")
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    cb = torch.tensor(sorted(s * 2.0 ** -e for e in range(1, 9) for s in (1.0, -1.0)))
    codes = torch.randint(0, 16, (N, K), generator=g)
    packed = pack_codes(codes, 4)
    lin = torch.nn.Linear(K, N, bias=False)
    with torch.no_grad():
        lin.weight.copy_(cb[codes])
    w = lin.weight.detach()
    warnings.filterwarnings("ignore", category=DeprecationWarning)  # torch.ao.quantization's notice
    warnings.filterwarnings("ignore", message=".*quantize_per_tensor.*")
    dyn = torch.ao.quantization.quantize_dynamic(torch.nn.Sequential(lin), {torch.nn.Linear}, dtype=torch.qint8)
    print(f"commit {git_commit()}, torch {torch.__version__}, {args.threads} thread(s), N={N}, K={K}, 4-bit codes, "
          f"medians of {args.repeats} interleaved runs (ms); codes streamed at N*K/2 bytes\n")
    print("| M | WFN float, bf16-byte decode | WFN float, permute decode | fp32 F.linear | torch int8 dynamic | "
          "bf16-byte vs permute | vs fp32 | vs int8 dynamic | codes GB/s |")
    print("|---|---|---|---|---|---|---|---|---|")
    before = torch.ops.wfn_cpu.set_avx2_bf16_gemv(-1)
    try:
        for m in args.ms:
            x = torch.randn(m, K, generator=g)

            def wfn(mode: int):
                def run():
                    torch.ops.wfn_cpu.set_avx2_bf16_gemv(mode)
                    return wk.codebook_linear(x, packed, cb, 4, in_features=K, backend="extension")
                return run
            ref = x @ w.t()
            for mode in (1, 0):  # both decodes exact up to summation order
                err = float((wfn(mode)() - ref).abs().max() / ref.abs().max())
                if err > 1e-5:
                    raise SystemExit(f"decode {mode}: relative error {err:.1e} against x @ W.T")
            with torch.no_grad():
                t = interleaved_medians([wfn(1), wfn(0), lambda: F.linear(x, w), lambda: dyn(x)],
                                        repeats=args.repeats)
            ms = " | ".join(f"{v * 1e3:.2f}" for v in t)
            print(f"| {m} | {ms} | {t[1] / t[0]:.2f}x | {t[2] / t[0]:.2f}x | {t[3] / t[0]:.2f}x | "
                  f"{N * K / 2 / t[0] / 1e9:.1f} |")
    finally:
        torch.ops.wfn_cpu.set_avx2_bf16_gemv(before)


if __name__ == "__main__":
    main()
