// Internal interface between the CPU op entry points and the SIMD kernels.
#pragma once
#include <ATen/ATen.h>

#include <cstdint>
#include <optional>

namespace wfn {

// Decode one packed row of k codes into floats through a 2^bits-entry table.
void decode_row(const uint8_t* row, const float* table, int64_t bits, int64_t k, float* out);

// y (M, N) float32 = x (M, K) float32 contiguous @ decode(packed).T
at::Tensor linear_dispatch(const at::Tensor& x, const at::Tensor& packed, const at::Tensor& codebook,
                           int64_t bits, int64_t k);

at::Tensor conv2d_dispatch(const at::Tensor& x, const at::Tensor& packed, const at::Tensor& codebook,
                           int64_t bits, at::IntArrayRef weight_shape, const std::optional<at::Tensor>& bias,
                           at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                           int64_t groups);

at::Tensor decode_weight_cpu(const at::Tensor& packed, const at::Tensor& codebook, int64_t bits, int64_t k);

// Which SIMD level the kernels use: "avx512", "avx2" or "scalar" (WFN_CPU_DISPATCH may lower it).
const char* cpu_capability();

}  // namespace wfn
