// AVX2 integer kernels (int_kernels.h has the layouts): vpshufb decodes 2/4-bit codes into int8, and the
// product is vpmaddubsw(|w|, sign(w) * x) + vpmaddwd, exact for x in [-127, 127] and w in [-128, 127].
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "int_kernels.h"

#pragma GCC push_options
#pragma GCC target("avx2,fma,bmi,bmi2")

namespace wfn {
namespace {

#define WFN_INL2 inline __attribute__((always_inline))

WFN_INL2 __m256i dot_s8(__m256i acc, __m256i w, __m256i x) {
  const __m256i p16 = _mm256_maddubs_epi16(_mm256_abs_epi8(w), _mm256_sign_epi8(x, w));
  return _mm256_add_epi32(acc, _mm256_madd_epi16(p16, _mm256_set1_epi16(1)));
}

template <int BITS>
struct Dec {
  static constexpr int kPhases = BITS == 8 ? 1 : 8 / BITS;
  __m256i lut;
  const int8_t* t8;
  explicit Dec(const int8_t* table8) : t8(table8) {
    alignas(32) int8_t rep[32];
    for (int j = 0; j < 32; ++j) rep[j] = table8[(j & 15) & ((1 << BITS) - 1)];
    lut = _mm256_load_si256(reinterpret_cast<const __m256i*>(rep));
  }
  WFN_INL2 __m256i get(__m256i v, const uint8_t* src, int p) const {
    if (BITS == 8) {  // no 256-entry byte shuffle on AVX2: table reads into a buffer
      alignas(32) int8_t buf[32];
      for (int j = 0; j < 32; ++j) buf[j] = t8[src[j]];
      return _mm256_load_si256(reinterpret_cast<const __m256i*>(buf));
    }
    const __m256i idx = _mm256_and_si256(p == 0 ? v : _mm256_srli_epi16(v, p * BITS),
                                         _mm256_set1_epi8(char((1 << BITS) - 1)));
    return _mm256_shuffle_epi8(lut, idx);
  }
};

template <int BITS, int R, int MT>
void tile(const Dec<BITS>& dec, const IntGemvArgs& a, int64_t r, int64_t m0) {
  constexpr int P = Dec<BITS>::kPhases;
  constexpr int64_t kElems = 32 * P;
  __m256i acc[MT][R];
  for (int i = 0; i < MT; ++i)
    for (int j = 0; j < R; ++j) acc[i][j] = _mm256_setzero_si256();
  const uint8_t* rows[R];
  for (int j = 0; j < R; ++j) rows[j] = a.packed + (r + j) * a.row_bytes;
  const int8_t* x = a.x + m0 * a.xstride;
  const int64_t nblk = (a.row_bytes + 31) / 32;
  alignas(32) uint8_t pad[R][32];
  for (int64_t b = 0; b < nblk; ++b) {
    const uint8_t* src[R];
    __m256i v[R];
    for (int j = 0; j < R; ++j) {
      src[j] = rows[j] + 32 * b;
      if (32 * (b + 1) > a.row_bytes) {  // last partial block: copy, zero padded (never read past the row)
        std::memset(pad[j], 0, 32);
        std::memcpy(pad[j], src[j], size_t(a.row_bytes - 32 * b));
        src[j] = pad[j];
      }
      v[j] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src[j]));
    }
    const int8_t* xb = x + b * kElems;
#pragma GCC unroll 4
    for (int p = 0; p < P; ++p) {
      __m256i w[R];
      for (int j = 0; j < R; ++j) w[j] = dec.get(v[j], src[j], p);
      for (int i = 0; i < MT; ++i) {
        const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xb + i * a.xstride + p * 32));
        for (int j = 0; j < R; ++j) acc[i][j] = dot_s8(acc[i][j], w[j], xv);
      }
    }
  }
  for (int i = 0; i < MT; ++i)
    for (int j = 0; j < R; ++j) {
      const __m256i d = acc[i][j];
      __m128i s = _mm_add_epi32(_mm256_castsi256_si128(d), _mm256_extracti128_si256(d, 1));
      s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
      s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
      a.y[(m0 + i) * a.ldy + r + j] = _mm_cvtsi128_si32(s);
    }
}

template <int BITS, int R>
void tile_m(const Dec<BITS>& dec, const IntGemvArgs& a, int64_t r, int64_t m0, int64_t mt) {
  switch (mt) {
    case 1: tile<BITS, R, 1>(dec, a, r, m0); break;
    case 2: tile<BITS, R, 2>(dec, a, r, m0); break;
    case 3: tile<BITS, R, 3>(dec, a, r, m0); break;
    default: tile<BITS, R, 4>(dec, a, r, m0); break;
  }
}

template <int BITS>
void narrow_rows(const IntGemvArgs& a, int64_t r0, int64_t r1) {
  alignas(32) int8_t t8[256];
  for (int e = 0; e < 256; ++e) t8[e] = int8_t(a.table[e]);
  const Dec<BITS> dec(t8);
  constexpr int R = 4;
  const int64_t rc = std::max<int64_t>(R, (int64_t(128) << 10) / std::max<int64_t>(a.row_bytes, 1) / R * R);
  for (int64_t c0 = r0; c0 < r1; c0 += rc) {
    const int64_t c1 = std::min(r1, c0 + rc);
    for (int64_t m0 = 0; m0 < a.m; m0 += 4) {
      const int64_t mt = std::min<int64_t>(4, a.m - m0);
      int64_t r = c0;
      for (; r + R <= c1; r += R) tile_m<BITS, R>(dec, a, r, m0, mt);
      for (; r < c1; ++r) tile_m<BITS, 1>(dec, a, r, m0, mt);
    }
  }
}

void wide_rows(const IntGemvArgs& a, int64_t r0, int64_t r1) {
  constexpr int64_t kChunk = 512;
  alignas(32) int16_t w[kChunk];
  const int per = 8 / a.bits;
  const unsigned mask = (1u << a.bits) - 1u;
  for (int64_t r = r0; r < r1; ++r) {
    const uint8_t* row = a.packed + r * a.row_bytes;
    for (int64_t i = 0; i < a.m; ++i) a.y[i * a.ldy + r] = 0;
    for (int64_t c0 = 0; c0 < a.k; c0 += kChunk) {
      const int64_t n = std::min(kChunk, a.k - c0), nv = (n + 15) / 16 * 16;
      for (int64_t e = 0; e < n; ++e) {
        const int64_t el = c0 + e;
        w[e] = a.table[(row[el / per] >> ((el % per) * a.bits)) & mask];
      }
      for (int64_t e = n; e < nv; ++e) w[e] = 0;
      for (int64_t i = 0; i < a.m; ++i) {
        const int8_t* xi = a.x + i * a.xstride + c0;
        __m256i acc = _mm256_setzero_si256();
        for (int64_t e = 0; e < nv; e += 16) {
          const __m256i xv = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(xi + e)));
          acc = _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_load_si256(reinterpret_cast<const __m256i*>(w + e)), xv));
        }
        __m128i s = _mm_add_epi32(_mm256_castsi256_si128(acc), _mm256_extracti128_si256(acc, 1));
        s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
        s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
        a.y[i * a.ldy + r] += _mm_cvtsi128_si32(s);
      }
    }
  }
}

}  // namespace

void int_gemv_rows_avx2(const IntGemvArgs& a, int64_t r0, int64_t r1) {
  if (!a.narrow) wide_rows(a, r0, r1);
  else if (a.bits == 2) narrow_rows<2>(a, r0, r1);
  else if (a.bits == 4) narrow_rows<4>(a, r0, r1);
  else narrow_rows<8>(a, r0, r1);
}

}  // namespace wfn

#pragma GCC pop_options
