// An 8 x 8 transpose of 32-bit lanes in AVX2 registers, shared by the AVX2 kernels (NHWC <-> NCHW copies in
// conv_int8_avx2.cpp, weight panels in int16_gemm_avx2.cpp). Include it inside an AVX2 target region
// (#pragma GCC target("avx2") after push_options), as those files do.
#pragma once
#include <immintrin.h>

namespace wfn {

// v[i] = row i (8 lanes) -> v[j] = lane j of every row: unpack pairs, then quads, then 128-bit halves.
inline __attribute__((always_inline)) void transpose8x8_ps(__m256 (&v)[8]) {
  __m256 t[8];
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm256_unpacklo_ps(v[i], v[i + 1]);
    t[i + 1] = _mm256_unpackhi_ps(v[i], v[i + 1]);
  }
  for (int i = 0; i < 8; i += 4) {
    v[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
    v[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xee);
    v[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
    v[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xee);
  }
  for (int i = 0; i < 4; ++i) {
    t[i] = _mm256_permute2f128_ps(v[i], v[i + 4], 0x20);
    t[i + 4] = _mm256_permute2f128_ps(v[i], v[i + 4], 0x31);
  }
  for (int i = 0; i < 8; ++i) v[i] = t[i];
}

}  // namespace wfn
