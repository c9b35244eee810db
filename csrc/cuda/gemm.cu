// Larger-M (M > kGemvMaxM) codebook GEMM: decode a tile of codes into shared memory, then multiply.
//
// fp16/bf16 activations on sm_80+: tensor cores through WMMA (16x16x16, float32 accumulators). The decoded
// weight is rounded to the activation dtype, exact for power-of-two sums spanning <= 8 (bf16) / 11 (fp16)
// binary places; a 64x64 block tile, 4 warps of 32x32. float32 activations (and 16-bit ones on older
// GPUs): a SIMT tile, 64x64 per block of 256 threads, 4x4 outputs per thread, IEEE fp32 FMAs (no TF32,
// so the result follows the float32 spec). Both are single-buffered: at large M the decode cost is spread
// over BM rows, and the tiles are simple enough to check by reading; cp.async double buffering is the next
// step if a GPU run shows this below dense cuBLAS.
#include <mma.h>

#include "codebook_common.cuh"

namespace wfn {
namespace cuda {
namespace detail {
namespace {

// Decode the (BN rows x BK codes) tile starting at (n0, k0) into dst[r * ld + kk] = codebook[code] as T.
// k0 is a multiple of BK, itself a multiple of 8 / BITS codes, so the tile starts on a byte boundary.
template <int BITS, int BN, int BK, int THREADS, typename T>
__device__ __forceinline__ void decode_tile(const uint8_t* __restrict__ packed, int64_t row_bytes, int64_t N,
                                            int64_t K, int64_t n0, int64_t k0, const float* table, T* dst,
                                            int ld) {
  constexpr int kPerByte = 8 / BITS;
  constexpr int kBytes = BK / kPerByte;
  constexpr uint32_t kMask = (1u << BITS) - 1u;
  const int64_t b0 = k0 / kPerByte;
  for (int i = threadIdx.x; i < BN * kBytes; i += THREADS) {
    const int r = i / kBytes, b = i % kBytes;  // consecutive threads read consecutive bytes of a row
    const int64_t n = n0 + r;
    const uint32_t byte = (n < N && b0 + b < row_bytes) ? packed[n * row_bytes + b0 + b] : 0u;
#pragma unroll
    for (int j = 0; j < kPerByte; ++j) {
      const int kk = b * kPerByte + j;
      const float w = k0 + kk < K ? table[(byte >> (j * BITS)) & kMask] : 0.f;
      dst[r * ld + kk] = from_float<T>(w);
    }
  }
}

constexpr int kWmmaBM = 64, kWmmaBN = 64, kWmmaBK = 32, kWmmaPad = 8, kWmmaThreads = 128;

template <int BITS, typename T>
__global__ void __launch_bounds__(kWmmaThreads)
    gemm_wmma_kernel(const T* __restrict__ x, int64_t stride_xm, const uint8_t* __restrict__ packed,
                     int64_t row_bytes, const float* __restrict__ codebook, int num_entries,
                     const float* __restrict__ bias, T* __restrict__ y, int64_t M, int64_t N, int64_t K) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  using namespace nvcuda;
  constexpr int LD = kWmmaBK + kWmmaPad;  // 40 halves = 80 bytes: WMMA needs ld % 8 == 0, pad skews banks
  constexpr int LDC = kWmmaBN + 4;
  __shared__ float table[1 << BITS];
  __shared__ __align__(32) T xs[kWmmaBM * LD];  // x tile, row-major (m, k)
  __shared__ __align__(32) T ws[kWmmaBN * LD];  // W tile (n, k) = the K x N operand in column-major order
  __shared__ __align__(32) float cs[kWmmaBM * LDC];
  fill_table(table, codebook, num_entries, 1 << BITS);
  const int64_t m0 = static_cast<int64_t>(blockIdx.y) * kWmmaBM, n0 = static_cast<int64_t>(blockIdx.x) * kWmmaBN;
  const int warp = threadIdx.x >> 5, wm = (warp >> 1) * 32, wn = (warp & 1) * 32;
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[2][2];
#pragma unroll
  for (int i = 0; i < 2; ++i)
#pragma unroll
    for (int j = 0; j < 2; ++j) wmma::fill_fragment(acc[i][j], 0.f);
  __syncthreads();

  for (int64_t k0 = 0; k0 < K; k0 += kWmmaBK) {
    for (int i = threadIdx.x; i < kWmmaBM * kWmmaBK; i += kWmmaThreads) {
      const int r = i / kWmmaBK, kk = i % kWmmaBK;
      const int64_t m = m0 + r, k = k0 + kk;
      xs[r * LD + kk] = (m < M && k < K) ? x[m * stride_xm + k] : from_float<T>(0.f);
    }
    decode_tile<BITS, kWmmaBN, kWmmaBK, kWmmaThreads>(packed, row_bytes, N, K, n0, k0, table, ws, LD);
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kWmmaBK; kk += 16) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> fa[2];
      wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> fb[2];
#pragma unroll
      for (int i = 0; i < 2; ++i) wmma::load_matrix_sync(fa[i], xs + (wm + i * 16) * LD + kk, LD);
#pragma unroll
      for (int j = 0; j < 2; ++j) wmma::load_matrix_sync(fb[j], ws + (wn + j * 16) * LD + kk, LD);
#pragma unroll
      for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int j = 0; j < 2; ++j) wmma::mma_sync(acc[i][j], fa[i], fb[j], acc[i][j]);
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 2; ++i)
#pragma unroll
    for (int j = 0; j < 2; ++j)
      wmma::store_matrix_sync(cs + (wm + i * 16) * LDC + wn + j * 16, acc[i][j], LDC, wmma::mem_row_major);
  __syncthreads();
  for (int i = threadIdx.x; i < kWmmaBM * kWmmaBN; i += kWmmaThreads) {
    const int r = i / kWmmaBN, c = i % kWmmaBN;
    const int64_t m = m0 + r, n = n0 + c;
    if (m < M && n < N) y[m * N + n] = from_float<T>(bias ? cs[r * LDC + c] + bias[n] : cs[r * LDC + c]);
  }
#endif
}

constexpr int kSimtBM = 64, kSimtBN = 64, kSimtBK = 16, kSimtThreads = 256;

template <int BITS, typename T>
__global__ void __launch_bounds__(kSimtThreads)
    gemm_simt_kernel(const T* __restrict__ x, int64_t stride_xm, const uint8_t* __restrict__ packed,
                     int64_t row_bytes, const float* __restrict__ codebook, int num_entries,
                     const float* __restrict__ bias, T* __restrict__ y, int64_t M, int64_t N, int64_t K) {
  __shared__ float table[1 << BITS];
  __shared__ float xs[kSimtBK][kSimtBM + 1];  // transposed: a k-slice of 64 rows is one broadcast-free read
  __shared__ float ws[kSimtBN * (kSimtBK + 1)];  // (n, k) as decoded; +1 so 16 rows hit 16 banks
  fill_table(table, codebook, num_entries, 1 << BITS);
  const int64_t m0 = static_cast<int64_t>(blockIdx.y) * kSimtBM, n0 = static_cast<int64_t>(blockIdx.x) * kSimtBN;
  const int ty = threadIdx.x / 16, tx = threadIdx.x % 16;  // outputs (ty + 16 i, tx + 16 j)
  float acc[4][4] = {};
  __syncthreads();
  for (int64_t k0 = 0; k0 < K; k0 += kSimtBK) {
    for (int i = threadIdx.x; i < kSimtBM * kSimtBK; i += kSimtThreads) {
      const int r = i / kSimtBK, kk = i % kSimtBK;
      const int64_t m = m0 + r, k = k0 + kk;
      xs[kk][r] = (m < M && k < K) ? to_float(x[m * stride_xm + k]) : 0.f;
    }
    decode_tile<BITS, kSimtBN, kSimtBK, kSimtThreads>(packed, row_bytes, N, K, n0, k0, table, ws, kSimtBK + 1);
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kSimtBK; ++kk) {
      float a[4], b[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) a[i] = xs[kk][ty + 16 * i];
#pragma unroll
      for (int j = 0; j < 4; ++j) b[j] = ws[(tx + 16 * j) * (kSimtBK + 1) + kk];
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 4; ++i) {
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int64_t m = m0 + ty + 16 * i, n = n0 + tx + 16 * j;
      if (m < M && n < N) y[m * N + n] = from_float<T>(bias ? acc[i][j] + bias[n] : acc[i][j]);
    }
  }
}

template <int BITS, typename T>
cudaError_t launch(const LinearArgs& a, cudaStream_t stream) {
  const int64_t row_bytes = (a.K * BITS + 7) / 8;
  const bool tensor_cores = !std::is_same<T, float>::value && a.sm_major >= 8;
  const int bm = tensor_cores ? kWmmaBM : kSimtBM, bn = tensor_cores ? kWmmaBN : kSimtBN;
  const int64_t gx = (a.N + bn - 1) / bn, gy = (a.M + bm - 1) / bm;
  if (gx > 0x7fffffff || gy > 65535) return cudaErrorInvalidValue;
  const dim3 grid(static_cast<unsigned>(gx), static_cast<unsigned>(gy));
  const T* x = static_cast<const T*>(a.x);
  T* y = static_cast<T*>(a.y);
  if constexpr (!std::is_same<T, float>::value) {  // WMMA has no float32 operand type
    if (tensor_cores) {
      gemm_wmma_kernel<BITS, T><<<grid, kWmmaThreads, 0, stream>>>(x, a.stride_xm, a.packed, row_bytes,
                                                                   a.codebook, a.num_entries, a.bias, y, a.M,
                                                                   a.N, a.K);
      return cudaGetLastError();
    }
  }
  gemm_simt_kernel<BITS, T><<<grid, kSimtThreads, 0, stream>>>(x, a.stride_xm, a.packed, row_bytes, a.codebook,
                                                               a.num_entries, a.bias, y, a.M, a.N, a.K);
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_gemm(const LinearArgs& a, cudaStream_t stream) {
  return dispatch(a.bits, a.dtype, [&](auto bits_c, auto t) -> cudaError_t {
    return launch<decltype(bits_c)::value, decltype(t)>(a, stream);
  });
}

}  // namespace detail
}  // namespace cuda
}  // namespace wfn
