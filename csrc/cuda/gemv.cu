// Small-M (M <= kGemvMaxM) codebook GEMV: y = x @ codebook[codes].T + bias, memory-bound on the packed codes.
//
// One warp owns R consecutive output rows. Each lane streams 16-byte chunks (one 128-bit load per row)
// of those rows at the same byte offset, so every activation it loads (4 at a time, vectorised) is reused
// for R rows and all MR activation rows: per weight byte the x traffic drops by R, which matters because
// at batch 1 x is read once per row and would otherwise rival the weight stream in L1 traffic.
// Products accumulate in float32 registers; a butterfly warp reduction finishes each row.
// The part of a row that is not whole aligned 16-byte chunks inside K (a ragged tail, odd row_bytes or
// unaligned pointers) goes through a byte-wise loop with the same lookup.
#include "codebook_common.cuh"

namespace wfn {
namespace cuda {
namespace detail {
namespace {

// 4 warps (16 rows at R = 4) per block: an 8192-row GEMV gets ~4 blocks per SM on a 132-SM GPU, so the last
// wave is not lopsided and enough 128-bit loads are in flight per SM to cover DRAM latency.
constexpr int kGemvWarps = 4;

template <int BITS, typename T, int MR, int R>
__global__ void __launch_bounds__(kGemvWarps * 32)
    gemv_kernel(const T* __restrict__ x, int64_t stride_xm, const uint8_t* __restrict__ packed, int64_t row_bytes,
                const float* __restrict__ codebook, int num_entries, const float* __restrict__ bias,
                T* __restrict__ y, int64_t M, int64_t N, int64_t K, bool vec_ok) {
  constexpr int kPerWord = 32 / BITS;      // codes per 32-bit word
  constexpr int kPerChunk = 4 * kPerWord;  // codes per 16-byte chunk
  constexpr uint32_t kMask = (1u << BITS) - 1u;
  __shared__ float table[1 << BITS];
  fill_table(table, codebook, num_entries, 1 << BITS);
  __syncthreads();

  const int lane = threadIdx.x & 31;
  const int64_t n0 = (static_cast<int64_t>(blockIdx.x) * kGemvWarps + (threadIdx.x >> 5)) * R;
  if (n0 >= N) return;  // whole warp leaves: the shuffles below always see 32 lanes
  Lut<BITS> lut;
  lut.init(table, lane);

  // Rows past N alias row N-1 (valid memory, result discarded) so loads need no per-row branch.
  const uint8_t* rows[R];
#pragma unroll
  for (int r = 0; r < R; ++r) rows[r] = packed + (n0 + r < N ? n0 + r : N - 1) * row_bytes;

  float acc[MR][R];
#pragma unroll
  for (int m = 0; m < MR; ++m)
#pragma unroll
    for (int r = 0; r < R; ++r) acc[m][r] = 0.f;

  const int64_t chunks = vec_ok ? K / kPerChunk : 0;
  for (int64_t base = 0; base < chunks; base += 32) {  // trip count uniform across the warp
    const int64_t c = base + lane;
    const bool active = c < chunks;
    uint4 q[R];
#pragma unroll
    for (int r = 0; r < R; ++r)
      q[r] = active ? __ldg(reinterpret_cast<const uint4*>(rows[r] + c * 16)) : make_uint4(0, 0, 0, 0);
    const int64_t k0 = c * kPerChunk;
#pragma unroll
    for (int w = 0; w < 4; ++w) {
#pragma unroll
      for (int e4 = 0; e4 < kPerWord; e4 += 4) {
        float xv[MR][4];
#pragma unroll
        for (int m = 0; m < MR; ++m) {
          if (active && m < M) {
            load4(x + m * stride_xm + k0 + w * kPerWord + e4, xv[m]);
          } else {
            xv[m][0] = xv[m][1] = xv[m][2] = xv[m][3] = 0.f;
          }
        }
#pragma unroll
        for (int e = 0; e < 4; ++e) {
#pragma unroll
          for (int r = 0; r < R; ++r) {
            const uint32_t word = (&q[r].x)[w];
            const float wv = lut((word >> ((e4 + e) * BITS)) & kMask);
#pragma unroll
            for (int m = 0; m < MR; ++m) acc[m][r] = fmaf(wv, xv[m][e], acc[m][r]);
          }
        }
      }
    }
  }

  for (int64_t kb = chunks * kPerChunk; kb < K; kb += 32) {  // ragged tail, also uniform
    const int64_t k = kb + lane;
    const bool active = k < K;
    float xv[MR];
#pragma unroll
    for (int m = 0; m < MR; ++m) xv[m] = (active && m < M) ? to_float(x[m * stride_xm + k]) : 0.f;
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const uint32_t byte = active ? rows[r][(k * BITS) >> 3] : 0u;
      const float wv = lut((byte >> ((k * BITS) & 7)) & kMask);
#pragma unroll
      for (int m = 0; m < MR; ++m) acc[m][r] = fmaf(wv, xv[m], acc[m][r]);
    }
  }

#pragma unroll
  for (int m = 0; m < MR; ++m) {
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const float v = warp_sum(acc[m][r]);
      const int64_t n = n0 + r;
      if (lane == 0 && m < M && n < N) y[m * N + n] = from_float<T>(bias ? v + bias[n] : v);
    }
  }
}

template <int BITS, typename T, int MR, int R>
cudaError_t launch(const LinearArgs& a, cudaStream_t stream) {
  const int64_t rows_per_block = kGemvWarps * R;
  const int64_t blocks = (a.N + rows_per_block - 1) / rows_per_block;
  if (blocks > 0x7fffffff) return cudaErrorInvalidValue;
  const int64_t row_bytes = (a.K * BITS + 7) / 8;
  // 128-bit code loads need 16-byte aligned rows; 4-wide x loads need 16-byte aligned x rows.
  const bool vec_ok = reinterpret_cast<uintptr_t>(a.packed) % 16 == 0 && row_bytes % 16 == 0 &&
                      reinterpret_cast<uintptr_t>(a.x) % 16 == 0 &&
                      a.stride_xm * static_cast<int64_t>(sizeof(T)) % 16 == 0;
  gemv_kernel<BITS, T, MR, R><<<static_cast<unsigned>(blocks), kGemvWarps * 32, 0, stream>>>(
      static_cast<const T*>(a.x), a.stride_xm, a.packed, row_bytes, a.codebook, a.num_entries, a.bias,
      static_cast<T*>(a.y), a.M, a.N, a.K, vec_ok);
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_gemv(const LinearArgs& a, cudaStream_t stream) {
  return dispatch(a.bits, a.dtype, [&](auto bits_c, auto t) -> cudaError_t {
    constexpr int B = decltype(bits_c)::value;
    using T = decltype(t);
    // Rows per warp shrink as activation rows grow, keeping MR * R accumulators <= 8 registers.
    if (a.M <= 1) return launch<B, T, 1, 4>(a, stream);
    if (a.M <= 2) return launch<B, T, 2, 4>(a, stream);
    if (a.M <= 4) return launch<B, T, 4, 2>(a, stream);
    return launch<B, T, 8, 1>(a, stream);
  });
}

}  // namespace detail
}  // namespace cuda
}  // namespace wfn
