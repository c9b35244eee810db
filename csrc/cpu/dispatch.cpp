// Run-time choice of the SIMD level. The hardware level comes from CPUID (__builtin_cpu_supports, which
// also checks that the OS saves the AVX/AVX-512 register state). WFN_CPU_DISPATCH=scalar|avx2|avx512
// lowers it (read once, at first use) so every path can be exercised on one machine; asking for more
// than the hardware has is an error, not a silent downgrade. Tests switch levels at run time through
// torch.ops.wfn_cpu.set_dispatch(level) (registered below; returns the level now in use).
#include <ATen/ATen.h>
#include <torch/library.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <string>

#include "kernels.h"

namespace wfn {
namespace {

Isa detect_hardware() {
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
      __builtin_cpu_supports("avx512vbmi") && __builtin_cpu_supports("fma"))
    return Isa::Avx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Isa::Avx2;
  return Isa::Scalar;
}

Isa parse_level(const std::string& s, const char* source) {
  if (s == "scalar") return Isa::Scalar;
  if (s == "avx2") return Isa::Avx2;
  if (s == "avx512") return Isa::Avx512;
  TORCH_CHECK(false, source, " must be one of scalar, avx2, avx512; got '", s, "'");
}

Isa checked(Isa want, const char* source) {
  TORCH_CHECK(static_cast<int>(want) <= static_cast<int>(hardware_isa()), source, " asks for ",
              isa_name(want), " but this CPU supports at most ", isa_name(hardware_isa()));
  return want;
}

Isa initial_level() {
  const char* env = std::getenv("WFN_CPU_DISPATCH");
  if (env == nullptr || *env == '\0') return hardware_isa();
  return checked(parse_level(env, "WFN_CPU_DISPATCH"), "WFN_CPU_DISPATCH");
}

std::atomic<int>& level_slot() {
  static std::atomic<int> slot{static_cast<int>(initial_level())};
  return slot;
}

std::string set_dispatch_op(c10::string_view level) {
  set_isa(parse_level(std::string(level), "set_dispatch level"));
  return cpu_capability();
}

}  // namespace

Isa hardware_isa() {
  static const Isa hw = detect_hardware();
  return hw;
}

Isa active_isa() { return static_cast<Isa>(level_slot().load(std::memory_order_relaxed)); }

Isa set_isa(Isa isa) {
  level_slot().store(static_cast<int>(checked(isa, "set_dispatch")));
  return isa;
}

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::Avx512: return "avx512";
    case Isa::Avx2: return "avx2";
    default: return "scalar";
  }
}

const char* cpu_capability() { return isa_name(active_isa()); }

namespace {
std::atomic<int> g_pf_near{8}, g_pf_tiles{1}, g_pf_hint{2};

std::vector<int64_t> set_gemv_prefetch_op(int64_t near, int64_t tiles, int64_t hint) {
  TORCH_CHECK(near >= 0 && near <= 64,
              "set_gemv_prefetch: near (blocks ahead in the rows in use) must be in [0, 64], got ", near);
  TORCH_CHECK(tiles >= 0 && tiles <= 8, "set_gemv_prefetch: tiles (row groups ahead, 0 = none) must be in [0, 8], got ",
              tiles);
  TORCH_CHECK(hint >= 0 && hint <= 3,
              "set_gemv_prefetch: hint (locality: 3 = prefetcht0, 2 = t1, 1 = t2, 0 = nta) must be in [0, 3], got ",
              hint);
  return {g_pf_near.exchange(int(near)), g_pf_tiles.exchange(int(tiles)), g_pf_hint.exchange(int(hint))};
}

// Reads every byte of a contiguous tensor once (XOR of its 8-byte words, four independent chains): the rate
// one core streams memory, the reference bench/modes.py holds the GEMVs to beside torch.sum.
int64_t stream_read_op(const at::Tensor& t) {
  TORCH_CHECK(t.is_cpu() && t.is_contiguous(), "stream_read: needs a contiguous CPU tensor");
  const auto* p = static_cast<const uint8_t*>(t.data_ptr());
  const int64_t n = t.numel() * t.element_size(), words = n / 8;
  uint64_t a[4] = {0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 4 <= words; i += 4)
    for (int j = 0; j < 4; ++j) {
      uint64_t v;
      std::memcpy(&v, p + 8 * (i + j), 8);
      a[j] ^= v;
    }
  for (; i < words; ++i) {
    uint64_t v;
    std::memcpy(&v, p + 8 * i, 8);
    a[0] ^= v;
  }
  for (int64_t b = 8 * words; b < n; ++b) a[1] ^= p[b];
  return static_cast<int64_t>(a[0] ^ a[1] ^ a[2] ^ a[3]);
}
}  // namespace

GemvPrefetch gemv_prefetch() {
  return {g_pf_near.load(std::memory_order_relaxed), g_pf_tiles.load(std::memory_order_relaxed),
          g_pf_hint.load(std::memory_order_relaxed)};
}

}  // namespace wfn

TORCH_LIBRARY(wfn_cpu, m) {
  m.def("set_dispatch(str level) -> str", &wfn::set_dispatch_op);
  m.def("capability() -> str", []() { return std::string(wfn::cpu_capability()); });
  // The AVX-512 GEMVs' software prefetch (kernels.h, prefetch_tile_rows): blocks ahead in the rows in use,
  // row groups ahead (0: none) and that stream's locality hint. Returns the previous [near, tiles, hint].
  m.def("set_gemv_prefetch(int near, int tiles, int hint) -> int[]", &wfn::set_gemv_prefetch_op);
  // XOR of every 8-byte word of a contiguous CPU tensor: a plain one-core memory read (bench/modes.py).
  m.def("stream_read(Tensor t) -> int", &wfn::stream_read_op);
  m.def("hardware_capability() -> str", []() { return std::string(wfn::isa_name(wfn::hardware_isa())); });
}
