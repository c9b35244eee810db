// Launch API for the CUDA codebook kernels: plain pointers, no torch headers, so the kernels (.cu) build
// with nvcc alone and a standalone harness can call them (tests/cuda/harness.cu). csrc/cuda/bindings.cpp
// wraps them as the CUDA kernels of wfn::codebook_linear / wfn::codebook_conv2d.
//
// Layout contract (wfn_kernels/packing.py): packed codes are uint8 (N, row_bytes), row_bytes =
// ceil(K * bits / 8), rows contiguous; element k of a row sits at bit (k * bits) % 8 of byte
// (k * bits) / 8, low bits first. The codebook is float32 (C,), 1 <= C <= 2^bits; a code >= C reads 0.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace wfn {
namespace cuda {

enum class DType : int { kFloat32 = 0, kBFloat16 = 1, kFloat16 = 2 };

// y (M, N) = x (M, K) @ codebook[codes].T + bias, accumulated in float32, stored in `dtype`.
struct LinearArgs {
  const void* x = nullptr;        // (M, K) in `dtype`, unit stride along K
  int64_t stride_xm = 0;          // elements between rows of x
  const uint8_t* packed = nullptr;  // (N, row_bytes), contiguous
  const float* codebook = nullptr;  // (num_entries,)
  int num_entries = 0;
  const float* bias = nullptr;    // float32 (N,) or nullptr
  void* y = nullptr;              // (M, N) contiguous, in `dtype`
  int64_t M = 0, N = 0, K = 0;
  int bits = 4;                   // 2, 4 or 8
  DType dtype = DType::kFloat32;
  int sm_major = 8;               // compute capability of the device: picks tensor cores (>= 8) or SIMT
};

// Largest M served by the GEMV kernel; larger M runs a tiled GEMM.
constexpr int64_t kGemvMaxM = 8;

// Enqueue y = x @ W.T + bias on `stream`. Returns cudaErrorInvalidValue for an unsupported bits/dtype or
// negative sizes, else the launch status (cudaGetLastError). M == 0 or N == 0 launches nothing.
cudaError_t codebook_linear_launch(const LinearArgs& args, cudaStream_t stream);

// Decode the packed codes into a dense float32 (N, K) row-major weight `w` (conv2d and backward use it).
cudaError_t codebook_decode_launch(const uint8_t* packed, int64_t N, int64_t K, int bits, const float* codebook,
                                   int num_entries, float* w, cudaStream_t stream);

}  // namespace cuda
}  // namespace wfn
