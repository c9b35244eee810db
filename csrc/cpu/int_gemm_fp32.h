// Exact integer products on the fp32 GEMM (int_gemm_fp32.cpp), for CPUs whose int8 GEMM has no
// dot-product instructions to run on.
#pragma once
#include <ATen/ATen.h>

#include <cstdint>

namespace wfn {

// Whether the large-M int8 products (linear from int_gemm_min_m, int8 convs off the AVX-512 and AVX2 kernels)
// run on the fp32 GEMM instead of at::_int_mm: by default where the CPU has neither VNNI (AVX-512 VNNI or
// AVX-VNNI) nor AMX-INT8; torch.ops.wfn_cpu.set_fp32_int_gemm(mode) forces it (1 on, 0 off, -1 default).
bool use_fp32_int_gemm();

// a (m, k) @ b (k, n): float tensors holding integers, |a| <= amax and |b| <= bmax; the exact int32 result.
at::Tensor int_mm_fp32(const at::Tensor& a, const at::Tensor& b, int64_t amax, int64_t bmax);

}  // namespace wfn
