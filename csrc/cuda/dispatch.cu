// codebook_linear_launch (argument checks, GEMV vs GEMM choice) and the dense decode kernel.
#include <algorithm>

#include "codebook_common.cuh"

namespace wfn {
namespace cuda {
namespace {

// One thread per packed byte writes its 8 / BITS decoded weights; consecutive threads cover consecutive
// bytes of a row, so both the byte reads and the float writes are coalesced.
template <int BITS>
__global__ void decode_kernel(const uint8_t* __restrict__ packed, int64_t N, int64_t K, int64_t row_bytes,
                              const float* __restrict__ codebook, int num_entries, float* __restrict__ w) {
  constexpr int kPerByte = 8 / BITS;
  constexpr uint32_t kMask = (1u << BITS) - 1u;
  __shared__ float table[1 << BITS];
  detail::fill_table(table, codebook, num_entries, 1 << BITS);
  __syncthreads();
  const int64_t total = N * row_bytes;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t n = i / row_bytes, b = i % row_bytes;
    const uint32_t byte = packed[i];
#pragma unroll
    for (int j = 0; j < kPerByte; ++j) {
      const int64_t k = b * kPerByte + j;
      if (k < K) w[n * K + k] = table[(byte >> (j * BITS)) & kMask];
    }
  }
}

bool valid_bits(int bits) { return bits == 2 || bits == 4 || bits == 8; }

}  // namespace

cudaError_t codebook_linear_launch(const LinearArgs& a, cudaStream_t stream) {
  if (!valid_bits(a.bits) || a.M < 0 || a.N < 0 || a.K < 0 || a.num_entries < 1 ||
      a.num_entries > (1 << a.bits) || a.stride_xm < a.K) {
    return cudaErrorInvalidValue;
  }
  if (a.M == 0 || a.N == 0) return cudaSuccess;
  return a.M <= kGemvMaxM ? detail::launch_gemv(a, stream) : detail::launch_gemm(a, stream);
}

cudaError_t codebook_decode_launch(const uint8_t* packed, int64_t N, int64_t K, int bits, const float* codebook,
                                   int num_entries, float* w, cudaStream_t stream) {
  if (!valid_bits(bits) || N < 0 || K < 0 || num_entries < 1 || num_entries > (1 << bits)) {
    return cudaErrorInvalidValue;
  }
  const int64_t row_bytes = (K * bits + 7) / 8;
  const int64_t total = N * row_bytes;
  if (total == 0) return cudaSuccess;
  constexpr int kThreads = 256;
  const int64_t blocks = std::min<int64_t>((total + kThreads - 1) / kThreads, 65535);
  const unsigned g = static_cast<unsigned>(blocks);
  switch (bits) {
    case 2: decode_kernel<2><<<g, kThreads, 0, stream>>>(packed, N, K, row_bytes, codebook, num_entries, w); break;
    case 4: decode_kernel<4><<<g, kThreads, 0, stream>>>(packed, N, K, row_bytes, codebook, num_entries, w); break;
    default: decode_kernel<8><<<g, kThreads, 0, stream>>>(packed, N, K, row_bytes, codebook, num_entries, w); break;
  }
  return cudaGetLastError();
}

}  // namespace cuda
}  // namespace wfn
