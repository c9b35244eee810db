// Device helpers shared by the CUDA codebook kernels: dtype conversion, vector loads, codebook lookup.
// Internal to csrc/cuda (not part of the launch API in codebook_cuda.h).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "codebook_cuda.h"

namespace wfn {
namespace cuda {
namespace detail {

constexpr unsigned kFullMask = 0xffffffffu;

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T>
__device__ __forceinline__ T from_float(float v);
template <>
__device__ __forceinline__ float from_float<float>(float v) { return v; }
template <>
__device__ __forceinline__ __half from_float<__half>(float v) { return __float2half_rn(v); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }

// Four consecutive activations as float. The caller guarantees 16-byte (fp32) / 8-byte (16-bit) alignment.
__device__ __forceinline__ void load4(const float* p, float (&o)[4]) {
  const float4 v = __ldg(reinterpret_cast<const float4*>(p));
  o[0] = v.x; o[1] = v.y; o[2] = v.z; o[3] = v.w;
}
__device__ __forceinline__ void load4(const __half* p, float (&o)[4]) {
  const uint2 v = __ldg(reinterpret_cast<const uint2*>(p));
  const float2 a = __half22float2(*reinterpret_cast<const __half2*>(&v.x));
  const float2 b = __half22float2(*reinterpret_cast<const __half2*>(&v.y));
  o[0] = a.x; o[1] = a.y; o[2] = b.x; o[3] = b.y;
}
__device__ __forceinline__ void load4(const __nv_bfloat16* p, float (&o)[4]) {
  const uint2 v = __ldg(reinterpret_cast<const uint2*>(p));
  const float2 a = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&v.x));
  const float2 b = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&v.y));
  o[0] = a.x; o[1] = a.y; o[2] = b.x; o[3] = b.y;
}

// Copy the codebook into a 2^bits shared table, zero-padded so a code >= num_entries reads 0 rather
// than memory past the codebook (the Python front end rejects such codes unless validation is off).
__device__ __forceinline__ void fill_table(float* table, const float* codebook, int num_entries, int size) {
  for (int i = threadIdx.x; i < size; i += blockDim.x) table[i] = i < num_entries ? codebook[i] : 0.f;
}

// Codebook lookup used by the GEMV inner loop, one strategy per width (bitsandbytes and FLUTE use the
// same three ideas): 2-bit: four registers and two selects, no memory access; 4-bit: lane l holds entry
// l % 16 and a lookup is one warp shuffle (all 32 lanes must call it together); 8-bit: 256 entries do not
// fit a warp's registers, so they are read from shared memory.
template <int BITS>
struct Lut;

template <>
struct Lut<2> {
  float v0, v1, v2, v3;
  __device__ __forceinline__ void init(const float* table, int) {
    v0 = table[0]; v1 = table[1]; v2 = table[2]; v3 = table[3];
  }
  __device__ __forceinline__ float operator()(uint32_t code) const {
    const float lo = (code & 1u) ? v1 : v0;
    const float hi = (code & 1u) ? v3 : v2;
    return (code & 2u) ? hi : lo;
  }
};

template <>
struct Lut<4> {
  float v;
  __device__ __forceinline__ void init(const float* table, int lane) { v = table[lane & 15]; }
  __device__ __forceinline__ float operator()(uint32_t code) const {
    return __shfl_sync(kFullMask, v, static_cast<int>(code));
  }
};

template <>
struct Lut<8> {
  const float* table;
  __device__ __forceinline__ void init(const float* t, int) { table = t; }
  __device__ __forceinline__ float operator()(uint32_t code) const { return table[code]; }
};

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(kFullMask, v, offset);
  return v;
}

// Call f(std::integral_constant<int, BITS>{}, T{}) for the run-time (bits, dtype); invalid -> error.
template <typename F>
cudaError_t dispatch(int bits, DType dtype, F&& f) {
  auto with_bits = [&](auto t) -> cudaError_t {
    switch (bits) {
      case 2: return f(std::integral_constant<int, 2>{}, t);
      case 4: return f(std::integral_constant<int, 4>{}, t);
      case 8: return f(std::integral_constant<int, 8>{}, t);
      default: return cudaErrorInvalidValue;
    }
  };
  switch (dtype) {
    case DType::kFloat32: return with_bits(float{});
    case DType::kFloat16: return with_bits(__half{});
    case DType::kBFloat16: return with_bits(__nv_bfloat16{});
    default: return cudaErrorInvalidValue;
  }
}

cudaError_t launch_gemv(const LinearArgs& a, cudaStream_t stream);
cudaError_t launch_gemm(const LinearArgs& a, cudaStream_t stream);

}  // namespace detail
}  // namespace cuda
}  // namespace wfn
