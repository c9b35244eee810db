"""The int8 mode's two CPU paths (fused lookup + VNNI GEMV, decode-tile + at::_int_mm GEMM) against torch int8
dynamic, N=4096 K=14336, 4-bit codes, by M: where the crossover (int_linear.cpp int_gemm_min_m) should be.

    python bench/int8_paths.py THREADS   (interleaved medians; nothing else running)
"""
import sys, torch
sys.path.insert(0, __import__("os").path.dirname(__file__))
from modes import int8_friendly_pow2
import wfn_kernels as wk
from wfn_kernels.timing import interleaved_medians
torch.manual_seed(0)
th = int(sys.argv[1]) if len(sys.argv) > 1 else 1
torch.set_num_threads(th)
N, K = 4096, 14336
vals = int8_friendly_pow2()
lin = torch.nn.Linear(K, N, bias=False)
with torch.no_grad():
    lin.weight.copy_(vals[torch.randint(0, 16, (N, K))])
model = torch.nn.Sequential(lin)
dyn = torch.ao.quantization.quantize_dynamic(torch.nn.Sequential(torch.nn.Linear(K, N, bias=False)), {torch.nn.Linear}, dtype=torch.qint8)
wk.convert(model, compute="int8")
for M in (1, 4, 8, 16, 32, 64, 128):
    x = torch.randn(M, K)
    def gemv():
        torch.ops.wfn_cpu.set_int_gemm_min_m(1 << 30); model(x)
    def gemm():
        torch.ops.wfn_cpu.set_int_gemm_min_m(0); model(x)
    with torch.no_grad():
        t = interleaved_medians([gemv, gemm, lambda: dyn(x)], repeats=9 if M < 64 else 5)
    print(f"threads {th} M={M:4d}  gemv {t[0]*1e3:8.2f} ms  gemm {t[1]*1e3:8.2f} ms  int8dyn {t[2]*1e3:8.2f} ms", flush=True)
torch.ops.wfn_cpu.set_int_gemm_min_m(-1)
