// Portable kernels (no SIMD intrinsics): the fallback on CPUs without AVX2, and the baseline every SIMD
// path is tested against. x is in natural order here (gemv_block_bytes(Scalar) == 1).
#include <cstdint>

#include "kernels.h"

namespace wfn {

namespace {
constexpr int64_t kChunk = 512;  // elements decoded at a time: stays in L1 while every x row reads it

// Decode elements [i0, i1) of one packed row into out[0 .. i1-i0).
inline void decode_span(const uint8_t* row, int bits, const float* table, int64_t i0, int64_t i1, float* out) {
  if (bits == 8) {
    for (int64_t i = i0; i < i1; ++i) out[i - i0] = table[row[i]];
    return;
  }
  const int per_byte = 8 / bits;
  const unsigned mask = (1u << bits) - 1u;
  for (int64_t i = i0; i < i1; ++i) {
    const unsigned byte = row[i / per_byte];
    out[i - i0] = table[(byte >> ((i % per_byte) * bits)) & mask];
  }
}
}  // namespace

void decode_rows_scalar(const uint8_t* packed, int64_t row_bytes, int64_t k, int bits, const float* table,
                        int64_t r0, int64_t r1, float* out) {
  for (int64_t r = r0; r < r1; ++r) decode_span(packed + r * row_bytes, bits, table, 0, k, out + (r - r0) * k);
}

void gemv_rows_scalar(const GemvArgs& a, int64_t r0, int64_t r1) {
  float w[kChunk];
  for (int64_t r = r0; r < r1; ++r) {
    const uint8_t* row = a.packed + r * a.row_bytes;
    for (int64_t i = 0; i < a.m; ++i) a.y[i * a.ldy + r] = 0.f;
    for (int64_t c0 = 0; c0 < a.k; c0 += kChunk) {
      const int64_t c1 = c0 + kChunk < a.k ? c0 + kChunk : a.k;
      decode_span(row, a.bits, a.table, c0, c1, w);
      for (int64_t i = 0; i < a.m; ++i) {
        const float* xi = a.x + i * a.xstride + c0;
        float acc0 = 0.f, acc1 = 0.f, acc2 = 0.f, acc3 = 0.f;  // 4 chains: not latency bound
        int64_t j = 0;
        for (; j + 4 <= c1 - c0; j += 4) {
          acc0 += xi[j] * w[j];
          acc1 += xi[j + 1] * w[j + 1];
          acc2 += xi[j + 2] * w[j + 2];
          acc3 += xi[j + 3] * w[j + 3];
        }
        for (; j < c1 - c0; ++j) acc0 += xi[j] * w[j];
        a.y[i * a.ldy + r] += (acc0 + acc1) + (acc2 + acc3);
      }
    }
  }
}

}  // namespace wfn
