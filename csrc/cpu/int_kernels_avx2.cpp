// AVX2 integer kernels (int_kernels.h has the layouts): vpshufb decodes 2/4-bit codes into int8, and the
// product is vpmaddubsw(|w|, sign(w) * x) + vpmaddwd, exact for x in [-127, 127] and w in [-128, 127].
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cmath>
#include <cstring>
#include <limits>

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
  // One 32-byte block of R rows (src) against MT activation rows (xb: the block's x, block/phase order).
  template <int R, int MT>
  WFN_INL2 void block(const uint8_t* const (&src)[R], const int8_t* xb, int64_t xstride, __m256i (&acc)[MT][R]) const {
    __m256i v[R];
    for (int j = 0; j < R; ++j) v[j] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src[j]));
#pragma GCC unroll 4
    for (int p = 0; p < kPhases; ++p) {
      __m256i w[R];
      for (int j = 0; j < R; ++j) w[j] = get(v[j], src[j], p);
      for (int i = 0; i < MT; ++i) {
        const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xb + i * xstride + p * 32));
        for (int j = 0; j < R; ++j) acc[i][j] = dot_s8(acc[i][j], w[j], xv);
      }
    }
  }
};

// Wide (int16) tables with 2/4-bit codes, x in the same block/phase order as the narrow kernel. Two vpshufb
// LUTs give each weight's low and high byte and vpunpck{l,h}bw joins them into int16 words; within each
// 128-bit lane that puts code bytes {0..7, 16..23} in one vector and {8..15, 24..31} in the other, and the
// same unpacks of x with its sign mask line the activations up with them for vpmaddwd. Exact: |x| <= 127,
// |w| <= 32767, and the front end bounds the int32 sum.
template <int BITS>
struct WideDec {
  static constexpr int kPhases = 8 / BITS;
  __m256i lo, hi;
  explicit WideDec(const int16_t* table) {
    alignas(32) uint8_t l[32], h[32];
    for (int j = 0; j < 32; ++j) {
      const uint16_t v = uint16_t(table[(j & 15) & ((1 << BITS) - 1)]);
      l[j] = uint8_t(v & 0xff);
      h[j] = uint8_t(v >> 8);
    }
    lo = _mm256_load_si256(reinterpret_cast<const __m256i*>(l));
    hi = _mm256_load_si256(reinterpret_cast<const __m256i*>(h));
  }
  template <int R, int MT>
  WFN_INL2 void block(const uint8_t* const (&src)[R], const int8_t* xb, int64_t xstride, __m256i (&acc)[MT][R]) const {
    const __m256i mask = _mm256_set1_epi8(char((1 << BITS) - 1)), zero = _mm256_setzero_si256();
    __m256i v[R];
    for (int j = 0; j < R; ++j) v[j] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src[j]));
#pragma GCC unroll 4
    for (int p = 0; p < kPhases; ++p) {
      __m256i xa[MT], xb2[MT];
      for (int i = 0; i < MT; ++i) {
        const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xb + i * xstride + p * 32));
        const __m256i sgn = _mm256_cmpgt_epi8(zero, xv);
        xa[i] = _mm256_unpacklo_epi8(xv, sgn);
        xb2[i] = _mm256_unpackhi_epi8(xv, sgn);
      }
      for (int j = 0; j < R; ++j) {
        const __m256i idx = _mm256_and_si256(p == 0 ? v[j] : _mm256_srli_epi16(v[j], p * BITS), mask);
        const __m256i l = _mm256_shuffle_epi8(lo, idx), h = _mm256_shuffle_epi8(hi, idx);
        const __m256i wa = _mm256_unpacklo_epi8(l, h), wb = _mm256_unpackhi_epi8(l, h);
        for (int i = 0; i < MT; ++i)
          acc[i][j] = _mm256_add_epi32(acc[i][j], _mm256_add_epi32(_mm256_madd_epi16(wa, xa[i]),
                                                                   _mm256_madd_epi16(wb, xb2[i])));
      }
    }
  }
};

// Full blocks in a branch-free loop, then the last partial block from a zero-padded copy (never reading past
// a row).
// The next tile's rows (the R rows after these, when below rend) are prefetched line by line as this tile
// runs: each tile starts R new code streams, which the hardware prefetchers only pick up after a few misses.
template <class D, int R, int MT>
void tile(const D& dec, const IntGemvArgs& a, int64_t r, int64_t m0, int64_t rend) {
  constexpr int64_t kElems = 32 * D::kPhases;
  __m256i acc[MT][R];
  for (int i = 0; i < MT; ++i)
    for (int j = 0; j < R; ++j) acc[i][j] = _mm256_setzero_si256();
  const uint8_t* rows[R];
  for (int j = 0; j < R; ++j) rows[j] = a.packed + (r + j) * a.row_bytes;
  const int64_t ahead = r + 2 * R <= rend ? R * a.row_bytes : 0;  // 0: prefetch lines already in use
  const int8_t* x = a.x + m0 * a.xstride;
  const int64_t nfull = a.row_bytes / 32, tail = a.row_bytes % 32;
  for (int64_t b = 0; b < nfull; ++b) {
    const uint8_t* src[R];
    for (int j = 0; j < R; ++j) src[j] = rows[j] + 32 * b;
    if ((b & 1) == 0)
      for (int j = 0; j < R; ++j) _mm_prefetch(reinterpret_cast<const char*>(src[j] + ahead), _MM_HINT_T0);
    dec.template block<R, MT>(src, x + b * kElems, a.xstride, acc);
  }
  if (tail) {
    alignas(32) uint8_t pad[R][32];
    const uint8_t* src[R];
    for (int j = 0; j < R; ++j) {
      std::memset(pad[j], 0, 32);
      std::memcpy(pad[j], rows[j] + 32 * nfull, size_t(tail));
      src[j] = pad[j];
    }
    dec.template block<R, MT>(src, x + nfull * kElems, a.xstride, acc);
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

template <class D, int R>
void tile_m(const D& dec, const IntGemvArgs& a, int64_t r, int64_t m0, int64_t mt, int64_t rend) {
  switch (mt) {
    case 1: tile<D, R, 1>(dec, a, r, m0, rend); break;
    case 2: tile<D, R, 2>(dec, a, r, m0, rend); break;
    case 3: tile<D, R, 3>(dec, a, r, m0, rend); break;
    default: tile<D, R, 4>(dec, a, r, m0, rend); break;
  }
}

// Rows per tile: 16 ymm registers hold MT x R accumulators, R codes, R decoded rows and their absolute
// values, an x vector and three constants; with up to 4 activation rows (MT) R = 2 keeps them in registers.
// Without the next-tile prefetch a single row ran faster with R = 4 (more streams in flight); with it R = 2
// wins there too. Zen 3, N=4096, K=14336, 4-bit, 1 thread, int8 table, module forward, builds alternated by
// process, two rounds: M = 1 without prefetch (R = 4) 2.67 / 2.32 ms, prefetch + R = 4 2.27 / 1.95, prefetch +
// R = 2 1.89 / 1.86 (torch int8 dynamic 3.8-4.3 in the same processes). Earlier, M = 16: R = 2 17.1-17.8 ms,
// R = 4 18.2-23.0; M = 256: R = 2 263-269 ms, R = 4 283-290.
template <class D, int R>
void rows_r(const D& dec, const IntGemvArgs& a, int64_t r0, int64_t r1) {
  const int64_t rc = std::max<int64_t>(R, (int64_t(128) << 10) / std::max<int64_t>(a.row_bytes, 1) / R * R);
  for (int64_t c0 = r0; c0 < r1; c0 += rc) {
    const int64_t c1 = std::min(r1, c0 + rc);
    for (int64_t m0 = 0; m0 < a.m; m0 += 4) {
      const int64_t mt = std::min<int64_t>(4, a.m - m0);
      int64_t r = c0;
      for (; r + R <= c1; r += R) tile_m<D, R>(dec, a, r, m0, mt, r1);
      for (; r < c1; ++r) tile_m<D, 1>(dec, a, r, m0, mt, r1);
    }
  }
}

template <int BITS>
void narrow_rows(const IntGemvArgs& a, int64_t r0, int64_t r1) {
  alignas(32) int8_t t8[256];
  for (int e = 0; e < 256; ++e) t8[e] = int8_t(a.table[e]);
  const Dec<BITS> dec(t8);
  rows_r<Dec<BITS>, 2>(dec, a, r0, r1);
}

template <int BITS>
void wide_rows_lut(const IntGemvArgs& a, int64_t r0, int64_t r1) {
  const WideDec<BITS> dec(a.table);
  rows_r<WideDec<BITS>, 2>(dec, a, r0, r1);
}

template <int BITS>  // compile-time code width: the decode below divides by 8 / BITS
void wide_rows(const IntGemvArgs& a, int64_t r0, int64_t r1) {
  constexpr int64_t kChunk = 512;
  alignas(32) int16_t w[kChunk];
  constexpr int per = 8 / BITS;
  constexpr unsigned mask = (1u << BITS) - 1u;
  for (int64_t r = r0; r < r1; ++r) {
    const uint8_t* row = a.packed + r * a.row_bytes;
    for (int64_t i = 0; i < a.m; ++i) a.y[i * a.ldy + r] = 0;
    for (int64_t c0 = 0; c0 < a.k; c0 += kChunk) {
      const int64_t n = std::min(kChunk, a.k - c0), nv = (n + 15) / 16 * 16;
      for (int64_t e = 0; e < n; ++e) {
        const int64_t el = c0 + e;
        w[e] = a.table[(row[el / per] >> ((el % per) * BITS)) & mask];
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

// inv = 1 / scale (float32), one multiply per value and round half to even, as the scalar definition.
WFN_INL2 __m256i quantize8(__m256 v, __m256 inv) {  // 8 int32 in [-127, 127]
  const __m256 r = _mm256_round_ps(_mm256_mul_ps(v, inv), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  return _mm256_cvtps_epi32(_mm256_min_ps(_mm256_set1_ps(127.f), _mm256_max_ps(_mm256_set1_ps(-127.f), r)));
}

// 32 int32 (four vectors, in order) into 32 int8 in order: the packs interleave 128-bit lanes, one vpermd
// restores the order.
WFN_INL2 __m256i pack32(__m256i a, __m256i b, __m256i c, __m256i d) {
  const __m256i ab = _mm256_packs_epi32(a, b), cd = _mm256_packs_epi32(c, d);
  return _mm256_permutevar8x32_epi32(_mm256_packs_epi16(ab, cd), _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

}  // namespace

void int_gemv_rows_avx2(const IntGemvArgs& a, int64_t r0, int64_t r1) {
  if (!a.narrow && a.bits == 2) wide_rows_lut<2>(a, r0, r1);
  else if (!a.narrow && a.bits == 4) wide_rows_lut<4>(a, r0, r1);
  else if (!a.narrow) wide_rows<8>(a, r0, r1);
  else if (a.bits == 2) narrow_rows<2>(a, r0, r1);
  else if (a.bits == 4) narrow_rows<4>(a, r0, r1);
  else narrow_rows<8>(a, r0, r1);
}

float amax_avx2(const float* x, int64_t k, bool* finite) {
  const __m256 big = _mm256_set1_ps(3.40282347e38f), absm = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  __m256 m = _mm256_setzero_ps(), bad = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= k; i += 8) {
    const __m256 a = _mm256_and_ps(_mm256_loadu_ps(x + i), absm);
    bad = _mm256_or_ps(bad, _mm256_cmp_ps(a, big, _CMP_NLE_UQ));  // NaN or Inf
    m = _mm256_max_ps(m, a);
  }
  alignas(32) float l[8];
  _mm256_store_ps(l, m);
  float amax = 0.f;
  for (int j = 0; j < 8; ++j) amax = std::max(amax, l[j]);
  bool ok = _mm256_movemask_ps(bad) == 0;
  for (; i < k; ++i) {
    const float a = std::fabs(x[i]);
    ok &= a <= std::numeric_limits<float>::max();
    amax = std::max(amax, a);
  }
  *finite = ok;
  return amax;
}

void deinterleave2_avx2(const int8_t* src, int64_t blocks, int64_t bb, int8_t* dst) {
  // per 128-bit lane: even bytes to the low half, odd bytes to the high half
  const __m256i split = _mm256_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15,
                                         0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15);
  for (int64_t b = 0; b < blocks; ++b) {
    const int8_t* s = src + b * 2 * bb;
    int8_t* d = dst + b * 2 * bb;
    for (int64_t h = 0; h < bb; h += 32) {  // 64 source bytes -> 32 evens at d[h], 32 odds at d[bb + h]
      // after the shuffle and the qword permute: [evens 0..15 | odds 0..15] of each 32-byte half
      const __m256i lo = _mm256_permute4x64_epi64(
          _mm256_shuffle_epi8(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(s + 2 * h)), split), 0xd8);
      const __m256i hi = _mm256_permute4x64_epi64(
          _mm256_shuffle_epi8(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(s + 2 * h + 32)), split), 0xd8);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(d + h), _mm256_permute2x128_si256(lo, hi, 0x20));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(d + bb + h), _mm256_permute2x128_si256(lo, hi, 0x31));
    }
  }
}

int32_t quantize_avx2(const float* x, int64_t k, float inv, int8_t* q) {
  const __m256 s = _mm256_set1_ps(inv);
  __m256i sum = _mm256_setzero_si256();
  int64_t i = 0;
  for (; i + 32 <= k; i += 32) {
    const __m256i a = quantize8(_mm256_loadu_ps(x + i), s), b = quantize8(_mm256_loadu_ps(x + i + 8), s);
    const __m256i c = quantize8(_mm256_loadu_ps(x + i + 16), s), d = quantize8(_mm256_loadu_ps(x + i + 24), s);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + i), pack32(a, b, c, d));
    sum = _mm256_add_epi32(sum, _mm256_add_epi32(_mm256_add_epi32(a, b), _mm256_add_epi32(c, d)));
  }
  alignas(32) int32_t l[8];
  _mm256_store_si256(reinterpret_cast<__m256i*>(l), sum);
  int32_t total = 0;
  for (int j = 0; j < 8; ++j) total += l[j];
  for (; i < k; ++i) {
    q[i] = quantize(x[i], inv);
    total += q[i];
  }
  return total;
}

void quantize_span_avx2(const float* x, int64_t n, const float* inv, int8_t* q) {
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    const __m256i a = quantize8(_mm256_loadu_ps(x + i), _mm256_loadu_ps(inv + i));
    const __m256i b = quantize8(_mm256_loadu_ps(x + i + 8), _mm256_loadu_ps(inv + i + 8));
    const __m256i c = quantize8(_mm256_loadu_ps(x + i + 16), _mm256_loadu_ps(inv + i + 16));
    const __m256i d = quantize8(_mm256_loadu_ps(x + i + 24), _mm256_loadu_ps(inv + i + 24));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + i), pack32(a, b, c, d));
  }
  for (; i < n; ++i) q[i] = quantize(x[i], inv[i]);  // a NaN pixel's value is never read (its scale is NaN)
}

void absmax_planes_avx2(const float* x, int64_t c, int64_t hw, float* am) {
  const __m256 inf = _mm256_set1_ps(std::numeric_limits<float>::infinity());
  const __m256 absm = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  const int64_t full = hw / 8 * 8;
  std::fill(am, am + hw, 0.f);
  for (int64_t ci = 0; ci < c; ++ci) {
    const float* xc = x + ci * hw;
    for (int64_t p = 0; p < full; p += 8) {
      __m256 v = _mm256_and_ps(_mm256_loadu_ps(xc + p), absm);
      v = _mm256_blendv_ps(v, inf, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));  // NaN -> Inf
      _mm256_storeu_ps(am + p, _mm256_max_ps(_mm256_loadu_ps(am + p), v));
    }
    for (int64_t p = full; p < hw; ++p) {
      const float v = std::fabs(xc[p]);
      const float a = v <= std::numeric_limits<float>::max() ? v : std::numeric_limits<float>::infinity();
      am[p] = am[p] > a ? am[p] : a;
    }
  }
}

void int8_decode_rows_avx2(const uint8_t* packed, int64_t row_bytes, int64_t k, int bits, const int8_t* table8,
                           int64_t r0, int64_t r1, int8_t* out, int64_t ld) {
  if (ld < 0) ld = k;
  if (bits == 8) {  // one code per byte: a plain table lookup (code_at would divide per element)
    for (int64_t r = r0; r < r1; ++r) {
      const uint8_t* row = packed + r * row_bytes;
      int8_t* o = out + (r - r0) * ld;
      for (int64_t i = 0; i < k; ++i) o[i] = table8[row[i]];
    }
    return;
  }
  alignas(32) int8_t rep[32];
  for (int j = 0; j < 32; ++j) rep[j] = table8[(j & 15) & ((1 << bits) - 1)];
  const __m256i lut = _mm256_load_si256(reinterpret_cast<const __m256i*>(rep));
  const __m256i mask = _mm256_set1_epi8(char((1 << bits) - 1));
  const int64_t full = k / 64 * 64;  // 64 elements per step: 32 code bytes (4-bit) or 16 (2-bit)
  for (int64_t r = r0; r < r1; ++r) {
    const uint8_t* row = packed + r * row_bytes;
    int8_t* o = out + (r - r0) * ld;
    for (int64_t i = 0; i < full; i += 64) {
      __m256i first, second;  // elements [i, i + 32) and [i + 32, i + 64)
      if (bits == 4) {  // element 2j in byte j's low nibble, 2j + 1 in its high one
        const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + i / 2));
        const __m256i lo = _mm256_shuffle_epi8(lut, _mm256_and_si256(v, mask));
        const __m256i hi = _mm256_shuffle_epi8(lut, _mm256_and_si256(_mm256_srli_epi16(v, 4), mask));
        const __m256i a = _mm256_unpacklo_epi8(lo, hi), b = _mm256_unpackhi_epi8(lo, hi);  // per 128-bit lane
        first = _mm256_permute2x128_si256(a, b, 0x20);
        second = _mm256_permute2x128_si256(a, b, 0x31);
      } else {  // element 4j + p in byte j, bits 2p..2p+1
        const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(row + i / 4));
        const __m128i m2 = _mm256_castsi256_si128(mask), l2 = _mm256_castsi256_si128(lut);
        const __m128i p0 = _mm_shuffle_epi8(l2, _mm_and_si128(v, m2));
        const __m128i p1 = _mm_shuffle_epi8(l2, _mm_and_si128(_mm_srli_epi16(v, 2), m2));
        const __m128i p2 = _mm_shuffle_epi8(l2, _mm_and_si128(_mm_srli_epi16(v, 4), m2));
        const __m128i p3 = _mm_shuffle_epi8(l2, _mm_and_si128(_mm_srli_epi16(v, 6), m2));
        const __m128i a = _mm_unpacklo_epi8(p0, p1), b = _mm_unpacklo_epi8(p2, p3);  // bytes 0..7
        const __m128i c = _mm_unpackhi_epi8(p0, p1), d = _mm_unpackhi_epi8(p2, p3);  // bytes 8..15
        first = _mm256_set_m128i(_mm_unpackhi_epi16(a, b), _mm_unpacklo_epi16(a, b));
        second = _mm256_set_m128i(_mm_unpackhi_epi16(c, d), _mm_unpacklo_epi16(c, d));
      }
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(o + i), first);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(o + i + 32), second);
    }
    for (int64_t i = full; i < k; ++i) o[i] = table8[code_at(row, bits, i)];
  }
}

}  // namespace wfn

#pragma GCC pop_options
