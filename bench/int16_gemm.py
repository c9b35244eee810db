"""The int8 mode's large-M linear product on a CPU without int8 dot-product instructions: the AVX2 int16
GEMM (csrc/cpu/int16_gemm_avx2.cpp) against the AVX2 GEMVs it replaces above a threshold, for an int8
integer table (16 power-of-two values, bench/modes.int8_friendly_pow2) and an int16 one (16 values spanning
11 bits of steps), and against torch's int8 dynamic linear (fbgemm) on the same weight. Interleaved medians.

    python bench/int16_gemm.py [M ...] [--threads T] [--repeats R]      (default M: 16 32 64 128 256)

N=4096, K=14336, 4-bit codes. "GEMV" forces the GEMVs (torch.ops.wfn_cpu.set_avx2_int16_gemm(0): above
int_gemm_min_m the AVX2 level keeps them); the GEMM column is the int16 kernel forced on at every M.
"""

from __future__ import annotations

import argparse
import subprocess
import warnings

import torch
from common import interleaved_medians
from modes import int8_friendly_pow2

from wfn_kernels.format.packing import pack_codes
from wfn_kernels.ops import int8 as int8_ops
from wfn_kernels.ops.int8 import integer_weights

N, K = 4096, 14336


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("ms", nargs="*", type=int, default=[16, 32, 64, 128, 256])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    if any(m < 1 for m in args.ms) or args.threads < 1 or args.repeats < 1:
        ap.error(f"every M, --threads and --repeats must be >= 1, got {args.ms}, {args.threads}, {args.repeats}")
    if torch.ops.wfn_cpu.int_capability() != "avx2":
        ap.error(f"the AVX2 int16 GEMM runs at the avx2 level; this CPU's integer level is "
                 f"{torch.ops.wfn_cpu.int_capability()}")
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    narrow = integer_weights(int8_friendly_pow2(4))
    # 16 values over 11 bits of steps (integers up to 1024: K x 127 x 1024 stays below 2^31 at K=14336)
    wide_vals = torch.tensor(sorted([0.0, 2.0 ** -11, -(2.0 ** -11), 2.0 ** -3 + 2.0 ** -11]
                                    + [s * 2.0 ** e for e in range(-6, 0) for s in (1.0, -1.0)]))
    wide = integer_weights(wide_vals)
    assert narrow.narrow and not wide.narrow
    codes = torch.randint(0, 16, (N, K), generator=g)
    packed = pack_codes(codes, 4)
    lin = torch.nn.Linear(K, N, bias=False)
    with torch.no_grad():
        lin.weight.copy_(int8_friendly_pow2(4)[codes])
    warnings.filterwarnings("ignore", category=DeprecationWarning)  # torch.ao.quantization's notice
    warnings.filterwarnings("ignore", message=".*quantize_per_tensor.*")
    dyn = torch.ao.quantization.quantize_dynamic(torch.nn.Sequential(lin), {torch.nn.Linear}, dtype=torch.qint8)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    print(f"commit {commit}, torch {torch.__version__}, {args.threads} thread(s), N={N}, K={K}, 4-bit codes, "
          f"medians of {args.repeats} interleaved runs (ms)\n")
    print("| M | int8 table: GEMM | int8 table: GEMV | int16 table: GEMM | int16 table: GEMV | torch int8 dynamic | "
          "GEMM vs GEMV (int8 / int16 table) | GEMM vs int8 dynamic (int8 / int16 table) |")
    print("|---|---|---|---|---|---|---|---|")
    before = torch.ops.wfn_cpu.set_avx2_int16_gemm(-1)
    before_m = torch.ops.wfn_cpu.set_int_gemm_min_m(-1)
    try:
        for m in args.ms:
            x = torch.randn(m, K, generator=g)

            def wfn(iw, gemm: bool):
                def run():
                    torch.ops.wfn_cpu.set_avx2_int16_gemm(1 if gemm else 0)
                    torch.ops.wfn_cpu.set_int_gemm_min_m(0 if gemm else -1)
                    return int8_ops.int8_linear(x, packed, iw.table, 4, iw.step, backend="extension")
                return run
            with torch.no_grad():
                t = interleaved_medians([wfn(narrow, True), wfn(narrow, False), wfn(wide, True), wfn(wide, False),
                                         lambda: dyn(x)], repeats=args.repeats)
            ms = " | ".join(f"{v * 1e3:.1f}" for v in t)
            print(f"| {m} | {ms} | {t[1] / t[0]:.2f}x / {t[3] / t[2]:.2f}x | {t[4] / t[0]:.2f}x / {t[4] / t[2]:.2f}x |")
    finally:
        torch.ops.wfn_cpu.set_avx2_int16_gemm(before)
        torch.ops.wfn_cpu.set_int_gemm_min_m(before_m)


if __name__ == "__main__":
    main()
