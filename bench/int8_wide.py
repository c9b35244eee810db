"""The int8 mode on layers whose integer weights need int16 ("wide" tables: values spanning more than 8 bits of
power-of-two steps, as the paper configuration's layers do) against the same layer with an int8 table, the
float mode and torch int8 dynamic, with 4-bit codes; and an int16 table with 8-bit codes (21 values).
N=4096, K=14336, interleaved medians (1 thread by default); one markdown row per M.

    python bench/int8_wide.py [M ...] [--threads T]      (default M = 1 16; nothing else running)
"""

from __future__ import annotations

import argparse
import subprocess
import warnings

import torch
from common import interleaved_medians
from modes import LLM_K, LLM_N, int8_friendly_pow2, wfn_linear


def wide_pow2() -> torch.Tensor:
    """16 values: 0, +-2^-1 .. +-2^-7 and 2^-10, so the integer table (units of 2^-10) reaches 512: int16."""
    vals = [0.0] + [s * 2.0 ** -e for e in range(1, 8) for s in (1.0, -1.0)] + [2.0 ** -10]
    return torch.tensor(sorted(vals), dtype=torch.float32)


def wide8_pow2() -> torch.Tensor:
    """21 values (so 8-bit codes): 0 and +-2^-1 .. +-2^-10, integer weights up to 512 in units of 2^-10."""
    return torch.tensor(sorted([0.0] + [s * 2.0 ** -e for e in range(1, 11) for s in (1.0, -1.0)]))


def main(ms: list[int], threads: int = 1) -> None:
    torch.manual_seed(0)
    torch.set_num_threads(threads)
    idx = torch.randint(0, 16, (LLM_N, LLM_K))
    narrow, wide = wfn_linear(int8_friendly_pow2()[idx], "int8"), wfn_linear(wide_pow2()[idx], "int8")
    wide_float = wfn_linear(wide_pow2()[idx], "float")
    wide8 = wfn_linear(wide8_pow2()[torch.randint(0, 21, (LLM_N, LLM_K))], "int8")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dyn = torch.ao.quantization.quantize_dynamic(torch.nn.Sequential(torch.nn.Linear(LLM_K, LLM_N, bias=False)),
                                                     {torch.nn.Linear}, dtype=torch.qint8)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    print(f"commit {commit}, torch {torch.__version__}, {threads} thread(s), N={LLM_N} K={LLM_K} 4-bit")
    print("| M | int8 table: WFN int8 ms | int16 table: WFN int8 ms | int16 table: WFN float ms | torch int8 dynamic ms "
          "| int16 vs int8 table | int16 table int8 vs int8 dynamic | int16 table, 8-bit codes: WFN int8 ms |")
    print("|---|---|---|---|---|---|---|---|")
    for m in ms:
        x = torch.randn(m, LLM_K)
        with torch.no_grad():
            t = interleaved_medians([lambda: narrow(x), lambda: wide(x), lambda: wide_float(x), lambda: dyn(x),
                                     lambda: wide8(x)], repeats=15, warmup=2)
        print(f"| {m} | {t[0] * 1e3:.2f} | {t[1] * 1e3:.2f} | {t[2] * 1e3:.2f} | {t[3] * 1e3:.2f} | "
              f"{t[0] / t[1]:.2f}x | {t[3] / t[1]:.2f}x | {t[4] * 1e3:.2f} |", flush=True)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("m", type=int, nargs="*", default=[1, 16], help="batch sizes M (default 1 16)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    if min(args.m) < 1:
        ap.error(f"every M must be >= 1, got {args.m}")
    if args.threads < 1:
        ap.error(f"--threads must be >= 1, got {args.threads}")
    main(args.m, args.threads)
