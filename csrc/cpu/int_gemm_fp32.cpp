// Exact integer products on the fp32 GEMM. Without int8 dot-product instructions (VNNI of either width,
// or AMX-INT8) oneDNN's int8 GEMM behind at::_int_mm runs a slow generic kernel: on an AMD Zen 3 (AVX2),
// 1 thread, 256 x 1024 x 1024 took 513 ms against ~11 ms for the fp32 at::mm of the same shape. The int8
// mode's integers are exact in fp32 instead: |xq| <= 127 (128 bounds a non-finite pixel's junk), |w| <=
// wmax, so every partial sum of kc <= 2^24 / (128 * wmax) products is an integer of magnitude <= 2^24,
// exact in any summation order (FMA or not). The product runs as fp32 GEMMs over K chunks of kc; each
// chunk's result is converted to int32 exactly and summed in int32. Only CPUs without VNNI take this path,
// and none of those has bf16 arithmetic, so no reduced-precision fp32 GEMM setting can apply to it.
#include "int_gemm_fp32.h"

#include <torch/library.h>

#include <algorithm>
#include <atomic>

#include "int_kernels.h"

namespace wfn {
namespace {

bool hardware_has_int8_dot() {
  static const bool v = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512vnni") || __builtin_cpu_supports("avxvnni") || hardware_has_amx_int8();
  }();
  return v;
}

std::atomic<int64_t>& fp32_int_gemm_override() {
  static std::atomic<int64_t> v{-1};
  return v;
}

}  // namespace

bool use_fp32_int_gemm() {
  const int64_t forced = fp32_int_gemm_override().load();
  return forced >= 0 ? forced == 1 : !hardware_has_int8_dot();
}

at::Tensor int_mm_fp32(const at::Tensor& a, const at::Tensor& b, int64_t amax, int64_t bmax) {
  const int64_t k = a.size(1);
  const int64_t kc = std::max<int64_t>(1, (int64_t(1) << 24) / std::max<int64_t>(1, amax * bmax));
  at::Tensor acc;
  for (int64_t k0 = 0; k0 < k; k0 += kc) {
    const int64_t len = std::min(kc, k - k0);
    const at::Tensor part = at::mm(a.narrow(1, k0, len), b.narrow(0, k0, len)).to(at::kInt);
    if (acc.defined()) acc.add_(part);
    else acc = part;
  }
  if (!acc.defined()) acc = at::zeros({a.size(0), b.size(1)}, a.options().dtype(at::kInt));
  return acc;
}

}  // namespace wfn

TORCH_LIBRARY_FRAGMENT(wfn_cpu, m) {
  // The large-M int8 products on the fp32 GEMM (exact) instead of at::_int_mm: 1 on, 0 off, -1 the default
  // (on where the CPU has no VNNI / AMX-INT8). Returns the previous setting.
  m.def("set_fp32_int_gemm(int mode) -> int", [](int64_t mode) {
    TORCH_CHECK(mode >= -1 && mode <= 1, "set_fp32_int_gemm: mode must be -1 (default), 0 (off) or 1 (on), got ", mode);
    return wfn::fp32_int_gemm_override().exchange(mode);
  });
  m.def("fp32_int_gemm() -> bool", []() { return wfn::use_fp32_int_gemm(); });
}
