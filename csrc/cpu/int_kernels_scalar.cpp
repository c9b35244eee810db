// Portable integer kernels (no intrinsics): the baseline the SIMD levels are tested against, and the
// fallback on CPUs without AVX2. Activations in natural order.
#include <algorithm>
#include <cstdint>

#include "int_kernels.h"

namespace wfn {

void int_gemv_rows_scalar(const IntGemvArgs& a, int64_t r0, int64_t r1) {
  constexpr int64_t kChunk = 512;
  int32_t w[kChunk];
  for (int64_t r = r0; r < r1; ++r) {
    const uint8_t* row = a.packed + r * a.row_bytes;
    for (int64_t i = 0; i < a.m; ++i) a.y[i * a.ldy + r] = 0;
    for (int64_t c0 = 0; c0 < a.k; c0 += kChunk) {
      const int64_t n = std::min(kChunk, a.k - c0);
      for (int64_t e = 0; e < n; ++e) w[e] = a.table[code_at(row, a.bits, c0 + e)];
      for (int64_t i = 0; i < a.m; ++i) {
        const int8_t* xi = a.x + i * a.xstride + c0;
        int32_t acc = 0;  // |partial sums| <= K * 127 * max|w| < 2^31 (checked by the front end)
        for (int64_t e = 0; e < n; ++e) acc += int32_t(xi[e]) * w[e];
        a.y[i * a.ldy + r] += acc;
      }
    }
  }
}

void int8_decode_rows_scalar(const uint8_t* packed, int64_t row_bytes, int64_t k, int bits, const int8_t* table8,
                             int64_t r0, int64_t r1, int8_t* out, int64_t ld) {
  if (ld < 0) ld = k;
  for (int64_t r = r0; r < r1; ++r) {
    const uint8_t* row = packed + r * row_bytes;
    int8_t* o = out + (r - r0) * ld;
    for (int64_t i = 0; i < k; ++i) o[i] = table8[code_at(row, bits, i)];
  }
}

void u16_decode_rows_scalar(const uint8_t* packed, int64_t row_bytes, int64_t k, int bits,
                            const uint16_t* table16, int64_t r0, int64_t r1, uint16_t* out, int64_t ld) {
  if (ld < 0) ld = k;
  for (int64_t r = r0; r < r1; ++r) {
    const uint8_t* row = packed + r * row_bytes;
    uint16_t* o = out + (r - r0) * ld;
    for (int64_t i = 0; i < k; ++i) o[i] = table16[code_at(row, bits, i)];
  }
}

}  // namespace wfn
