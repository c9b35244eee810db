"""M=1, N=4096, K=14336, 4-bit: the int8, bf16 and float modes against torch int8 dynamic, bf16 F.linear and
one core's streaming rate (the faster of torch.sum and wfn_cpu.stream_read over an fp32 buffer the size of
the packed codes), 1 thread,
interleaved medians of 41; and each mode's fixed cost per call (a layer of 8 rows, same K: quantising or reordering x,
the launch), medians of 401.

    python bench/int8_m1.py
"""

from __future__ import annotations

import torch
from cases import int8_dynamic
from common import interleaved_medians, stream_reads
from modes import LLM_K, LLM_N, int8_friendly_pow2, wfn_linear



def main() -> None:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    w = int8_friendly_pow2()[torch.randint(0, 16, (LLM_N, LLM_K))]
    models = {mode: wfn_linear(w, mode) for mode in ("int8", "float", "bf16")}
    dyn = int8_dynamic(torch.nn.Linear(LLM_K, LLM_N, bias=False))
    buf = torch.ones(LLM_N * LLM_K // 8)  # fp32, the byte size of the 4-bit codes
    x = torch.randn(1, LLM_K)
    xb, wb = x.bfloat16(), w.bfloat16()
    with torch.no_grad():
        read_sum, read_xor = stream_reads(buf)
        t = interleaved_medians([lambda: models["int8"](x), lambda: models["float"](x), lambda: dyn(x), read_sum,
                                 lambda: models["bf16"](x), lambda: torch.nn.functional.linear(xb, wb), read_xor],
                                repeats=41, warmup=5)
    t[3] = min(t[3], t.pop())  # the faster of the two streaming reads
    gb = LLM_N * LLM_K / 2 / 1e9
    print(f"int8 {t[0] * 1e3:.3f} ms ({gb / t[0]:.1f} GB/s)  float {t[1] * 1e3:.3f} ms  int8 dynamic {t[2] * 1e3:.3f} ms  "
          f"stream {t[3] * 1e3:.3f} ms ({gb / t[3]:.1f} GB/s)  int8 vs dynamic {t[2] / t[0]:.2f}x  "
          f"int8 share of stream {100 * t[3] / t[0]:.0f} %")
    print(f"bf16 {t[4] * 1e3:.3f} ms  bf16 F.linear {t[5] * 1e3:.3f} ms  bf16 vs F.linear {t[5] / t[4]:.2f}x  "
          f"float vs int8 dynamic {t[2] / t[1]:.2f}x")
    small = {mode: wfn_linear(w[:8], mode) for mode in ("int8", "float", "bf16")}
    with torch.no_grad():
        c = interleaved_medians([lambda m=m: m(x) for m in small.values()], repeats=401, warmup=20)
    print(f"per call, 8 rows x K={LLM_K}: " + "  ".join(f"{mode} {v * 1e6:.1f} us" for mode, v in zip(small, c)))


if __name__ == "__main__":
    main()
