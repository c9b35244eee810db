// Run-time choice of the SIMD level. The hardware level comes from CPUID (__builtin_cpu_supports, which
// also checks that the OS saves the AVX/AVX-512 register state). WFN_CPU_DISPATCH=scalar|avx2|avx512
// lowers it (read once, at first use) so every path can be exercised on one machine; asking for more
// than the hardware has is an error, not a silent downgrade. Tests switch levels at run time through
// torch.ops.wfn_cpu.set_dispatch(level) (registered below; returns the level now in use).
#include <ATen/ATen.h>
#include <torch/library.h>

#include <atomic>
#include <cstdlib>
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

}  // namespace wfn

TORCH_LIBRARY(wfn_cpu, m) {
  m.def("set_dispatch(str level) -> str", &wfn::set_dispatch_op);
  m.def("capability() -> str", []() { return std::string(wfn::cpu_capability()); });
  m.def("hardware_capability() -> str", []() { return std::string(wfn::isa_name(wfn::hardware_isa())); });
}
