// AVX-512 integer and bf16 kernels (int_kernels.h has the layouts). Three target sections: the decoders
// need F/BW/VL/DQ/VBMI (the avx512 level), the int8 GEMV adds VNNI and the bf16 GEMV adds AVX512_BF16;
// int_linear.cpp / bf16_linear.cpp only call each when the CPU has its features.
// Headers come first so no library inline function is compiled with these targets (ODR safety).
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>

#include "int_kernels.h"

#define WFN_INL inline __attribute__((always_inline))

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512vbmi,avx2,fma,bmi,bmi2")

namespace wfn {
namespace {

// 64 code bytes, element j of a 64-element group in byte j (junk above the code's bits), for 2/4-bit
// codes starting at element i of a row: vpermb spreads the source bytes so each qword holds its 8
// elements' bytes, vpmultishiftqb moves each element's bits to the bottom of its byte.
template <int BITS>
struct Spread {
  __m512i idx, ctrl;
  Spread() {
    constexpr int E = 8 / BITS;
    alignas(64) uint8_t a[64], c[64];
    for (int j = 0; j < 64; ++j) {
      a[j] = uint8_t(j / E);
      c[j] = uint8_t(8 * (j % 8) + (j % E) * BITS);
    }
    idx = _mm512_load_si512(a);
    ctrl = _mm512_load_si512(c);
  }
  WFN_INL __m512i codes(const uint8_t* row, int64_t i) const {
    const __m512i src = BITS == 4 ? _mm512_castsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + i / 2)))
                                  : _mm512_castsi128_si512(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + i / 4)));
    return _mm512_multishift_epi64_epi8(ctrl, _mm512_permutexvar_epi8(idx, src));
  }
};

template <int BITS>
void int8_decode_impl(const uint8_t* packed, int64_t row_bytes, int64_t k, const int8_t* table8, int64_t r0,
                      int64_t r1, int8_t* out, int64_t ld) {
  alignas(64) int8_t rep[64];
  for (int j = 0; j < 64; ++j) rep[j] = table8[j & ((1 << BITS) - 1)];
  const __m512i lut = _mm512_load_si512(rep);
  const Spread<BITS> sp;
  const int64_t full = k / 64 * 64;
  for (int64_t r = r0; r < r1; ++r) {
    const uint8_t* row = packed + r * row_bytes;
    int8_t* o = out + (r - r0) * ld;
    for (int64_t i = 0; i < full; i += 64)
      _mm512_storeu_si512(o + i, _mm512_permutexvar_epi8(sp.codes(row, i), lut));
    for (int64_t i = full; i < k; ++i) o[i] = table8[code_at(row, BITS, i)];
  }
}

void int8_decode_u8(const uint8_t* packed, int64_t row_bytes, int64_t k, const int8_t* table8, int64_t r0,
                    int64_t r1, int8_t* out, int64_t ld) {
  __m512i t[4];
  for (int q = 0; q < 4; ++q) t[q] = _mm512_loadu_si512(table8 + 64 * q);
  const int64_t full = k / 64 * 64;
  for (int64_t r = r0; r < r1; ++r) {
    const uint8_t* row = packed + r * row_bytes;
    int8_t* o = out + (r - r0) * ld;
    for (int64_t i = 0; i < full; i += 64) {
      const __m512i c = _mm512_loadu_si512(row + i);
      const __m512i lo = _mm512_permutex2var_epi8(t[0], c, t[1]), hi = _mm512_permutex2var_epi8(t[2], c, t[3]);
      _mm512_storeu_si512(o + i, _mm512_mask_blend_epi8(_mm512_movepi8_mask(c), lo, hi));
    }
    for (int64_t i = full; i < k; ++i) o[i] = table8[row[i]];
  }
}

// 16-bit lookups of 32 codes held one per word (low bits of each word; junk above for 2/4-bit).
template <int BITS>
struct WordLut {
  __m512i t[8];
  explicit WordLut(const uint16_t* table16) {
    alignas(64) uint16_t rep[32];
    if (BITS == 8) {
      for (int q = 0; q < 8; ++q) t[q] = _mm512_loadu_si512(table16 + 32 * q);
    } else {
      for (int j = 0; j < 32; ++j) rep[j] = table16[j & ((1 << BITS) - 1)];
      t[0] = _mm512_load_si512(rep);
    }
  }
  WFN_INL __m512i get(__m512i idx) const {  // vpermw reads 5 index bits, vpermt2w 6
    if (BITS != 8) return _mm512_permutexvar_epi16(idx, t[0]);
    const __m512i q0 = _mm512_permutex2var_epi16(t[0], idx, t[1]), q1 = _mm512_permutex2var_epi16(t[2], idx, t[3]);
    const __m512i q2 = _mm512_permutex2var_epi16(t[4], idx, t[5]), q3 = _mm512_permutex2var_epi16(t[6], idx, t[7]);
    const __mmask32 b6 = _mm512_test_epi16_mask(idx, _mm512_set1_epi16(64));
    const __mmask32 b7 = _mm512_test_epi16_mask(idx, _mm512_set1_epi16(128));
    return _mm512_mask_blend_epi16(b7, _mm512_mask_blend_epi16(b6, q0, q1), _mm512_mask_blend_epi16(b6, q2, q3));
  }
};

template <int BITS>
void u16_decode_impl(const uint8_t* packed, int64_t row_bytes, int64_t k, const uint16_t* table16, int64_t r0,
                     int64_t r1, uint16_t* out, int64_t ld) {
  const WordLut<BITS> lut(table16);
  const Spread<BITS == 8 ? 4 : BITS> sp;
  const int64_t full = k / 64 * 64;
  for (int64_t r = r0; r < r1; ++r) {
    const uint8_t* row = packed + r * row_bytes;
    uint16_t* o = out + (r - r0) * ld;
    for (int64_t i = 0; i < full; i += 64) {
      __m512i c;
      if constexpr (BITS == 8) c = _mm512_loadu_si512(row + i);
      else c = sp.codes(row, i);
      const __m512i lo = _mm512_cvtepu8_epi16(_mm512_castsi512_si256(c));
      const __m512i hi = _mm512_cvtepu8_epi16(_mm512_extracti64x4_epi64(c, 1));
      _mm512_storeu_si512(o + i, lut.get(lo));
      _mm512_storeu_si512(o + i + 32, lut.get(hi));
    }
    for (int64_t i = full; i < k; ++i) o[i] = table16[code_at(row, BITS, i)];
  }
}

// inv = 1 / scale (float32): one multiply per value, as the reference (a divide costs ~10x more here)
WFN_INL __m128i quantize16(__m512 v, __m512 inv) {
  const __m512 r = _mm512_roundscale_ps(_mm512_mul_ps(v, inv), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m512 c = _mm512_min_ps(_mm512_set1_ps(127.f), _mm512_max_ps(_mm512_set1_ps(-127.f), r));
  return _mm512_cvtsepi32_epi8(_mm512_cvtps_epi32(c));
}

}  // namespace

float amax_avx512(const float* x, int64_t k, bool* finite) {
  const __m512 big = _mm512_set1_ps(3.40282347e38f);
  __m512 m = _mm512_setzero_ps();
  __mmask16 bad = 0;
  int64_t i = 0;
  for (; i + 16 <= k; i += 16) {
    const __m512 a = _mm512_abs_ps(_mm512_loadu_ps(x + i));
    bad |= _mm512_cmp_ps_mask(a, big, _CMP_NLE_UQ);  // NaN or Inf
    m = _mm512_max_ps(m, a);
  }
  if (i < k) {
    const __mmask16 t = __mmask16((1u << (k - i)) - 1u);
    const __m512 a = _mm512_abs_ps(_mm512_maskz_loadu_ps(t, x + i));
    bad |= _mm512_mask_cmp_ps_mask(t, a, big, _CMP_NLE_UQ);
    m = _mm512_max_ps(m, a);
  }
  *finite = bad == 0;
  return _mm512_reduce_max_ps(m);
}

int32_t quantize_avx512(const float* x, int64_t k, float inv, int8_t* q) {
  const __m512 s = _mm512_set1_ps(inv);
  __m512i sum = _mm512_setzero_si512();
  int64_t i = 0;
  for (; i + 16 <= k; i += 16) {
    const __m128i b = quantize16(_mm512_loadu_ps(x + i), s);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(q + i), b);
    sum = _mm512_add_epi32(sum, _mm512_cvtepi8_epi32(b));
  }
  if (i < k) {
    const __mmask16 t = __mmask16((1u << (k - i)) - 1u);
    const __m128i b = quantize16(_mm512_maskz_loadu_ps(t, x + i), s);
    _mm_mask_storeu_epi8(q + i, t, b);
    sum = _mm512_add_epi32(sum, _mm512_cvtepi8_epi32(b));  // masked-off lanes quantise 0 to 0
  }
  return _mm512_reduce_add_epi32(sum);
}

void absmax_planes_avx512(const float* x, int64_t c, int64_t hw, float* am) {
  const __m512 inf = _mm512_set1_ps(std::numeric_limits<float>::infinity());
  const __m512i abs_mask = _mm512_set1_epi32(0x7fffffff);
  for (int64_t p = 0; p < hw; p += 16) {
    const __mmask16 t = hw - p >= 16 ? __mmask16(0xffff) : __mmask16((1u << (hw - p)) - 1u);
    _mm512_mask_storeu_ps(am + p, t, _mm512_setzero_ps());
  }
  for (int64_t ci = 0; ci < c; ++ci) {
    const float* xc = x + ci * hw;
    for (int64_t p = 0; p < hw; p += 16) {
      const __mmask16 t = hw - p >= 16 ? __mmask16(0xffff) : __mmask16((1u << (hw - p)) - 1u);
      __m512 v = _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(_mm512_maskz_loadu_ps(t, xc + p)), abs_mask));
      v = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q), v, inf);  // NaN -> Inf
      _mm512_mask_storeu_ps(am + p, t, _mm512_max_ps(_mm512_maskz_loadu_ps(t, am + p), v));
    }
  }
}

void int8_decode_rows_avx512(const uint8_t* packed, int64_t row_bytes, int64_t k, int bits, const int8_t* table8,
                             int64_t r0, int64_t r1, int8_t* out, int64_t ld) {
  if (ld < 0) ld = k;
  if (bits == 2) int8_decode_impl<2>(packed, row_bytes, k, table8, r0, r1, out, ld);
  else if (bits == 4) int8_decode_impl<4>(packed, row_bytes, k, table8, r0, r1, out, ld);
  else int8_decode_u8(packed, row_bytes, k, table8, r0, r1, out, ld);
}

void u16_decode_rows_avx512(const uint8_t* packed, int64_t row_bytes, int64_t k, int bits,
                            const uint16_t* table16, int64_t r0, int64_t r1, uint16_t* out, int64_t ld) {
  if (ld < 0) ld = k;
  if (bits == 2) u16_decode_impl<2>(packed, row_bytes, k, table16, r0, r1, out, ld);
  else if (bits == 4) u16_decode_impl<4>(packed, row_bytes, k, table16, r0, r1, out, ld);
  else u16_decode_impl<8>(packed, row_bytes, k, table16, r0, r1, out, ld);
}

}  // namespace wfn

#pragma GCC pop_options

// ---------------------------------------------------------------------------------------------------
// int8 GEMV: vpermb lookups into uint8 (w + 128), vpdpbusd against int8 activations.
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512vbmi,avx512vnni,avx2,fma,bmi,bmi2")

namespace wfn {
namespace {

template <int BITS>
struct NarrowDec {
  static constexpr int kPhases = BITS == 8 ? 1 : 8 / BITS;
  __m512i t[4];
  explicit NarrowDec(const int16_t* table) {
    alignas(64) uint8_t b[256];
    for (int e = 0; e < 256; ++e) b[e] = uint8_t(table[e] + 128);
    if (BITS == 8) {
      for (int q = 0; q < 4; ++q) t[q] = _mm512_load_si512(b + 64 * q);
    } else {
      alignas(64) uint8_t rep[64];
      for (int j = 0; j < 64; ++j) rep[j] = b[j & ((1 << BITS) - 1)];
      t[0] = _mm512_load_si512(rep);
    }
  }
  WFN_INL __m512i get(__m512i v, int p) const {
    if (BITS == 8) {
      const __m512i lo = _mm512_permutex2var_epi8(t[0], v, t[1]), hi = _mm512_permutex2var_epi8(t[2], v, t[3]);
      return _mm512_mask_blend_epi8(_mm512_movepi8_mask(v), lo, hi);
    }
    return _mm512_permutexvar_epi8(p == 0 ? v : _mm512_srli_epi16(v, p * BITS), t[0]);
  }
};

template <int BITS, int R, int MT>
void narrow_tile(const NarrowDec<BITS>& dec, const IntGemvArgs& a, int64_t r, int64_t m0) {
  constexpr int P = NarrowDec<BITS>::kPhases;
  // Two chains per (row, x row) hide vpdpbusd's latency when there is one x row; with MT >= 2 the MT * R
  // chains already do, and MT * R * 2 accumulators would not fit the 32 zmm registers (MT = 4: spills).
  // With eight rows (the one-x-row tile, R = 8) eight chains already hide it.
  constexpr int NA = P >= 2 && MT == 1 && R < 8 ? 2 : 1;
  constexpr int64_t kElems = 64 * P;  // activation bytes per 64-byte code block
  __m512i acc[MT][R][NA];
  for (int i = 0; i < MT; ++i)
    for (int j = 0; j < R; ++j)
      for (int h = 0; h < NA; ++h) acc[i][j][h] = _mm512_setzero_si512();
  const uint8_t* rows[R];
  for (int j = 0; j < R; ++j) rows[j] = a.packed + (r + j) * a.row_bytes;
  const int8_t* x = a.x + m0 * a.xstride;
  const int64_t nfull = a.row_bytes / 64, tail = a.row_bytes % 64;
  const uint8_t* next = rows[0] + R * a.row_bytes;  // see prefetch_tile_rows (kernels.h)
  __m512i v[R];
  auto block = [&](int64_t b) __attribute__((always_inline)) {
    const int8_t* xb = x + b * kElems;
#pragma GCC unroll 8
    for (int p = 0; p < P; ++p) {
      __m512i w[R];
      for (int j = 0; j < R; ++j) w[j] = dec.get(v[j], p);
      for (int i = 0; i < MT; ++i) {
        const __m512i xv = _mm512_loadu_si512(xb + i * a.xstride + p * 64);
        for (int j = 0; j < R; ++j) acc[i][j][p % NA] = _mm512_dpbusd_epi32(acc[i][j][p % NA], w[j], xv);
      }
    }
  };
  const GemvPrefetch pf = gemv_prefetch();
  for (int64_t b = 0; b < nfull; ++b) {
    prefetch_tile_rows<R>(rows, next, a.row_bytes, b, pf);
    for (int j = 0; j < R; ++j) v[j] = _mm512_loadu_si512(rows[j] + 64 * b);
    block(b);
  }
  if (tail) {  // bytes past the row end are not read; their codes meet zero activations
    const __mmask64 mask = _bzhi_u64(~0ULL, unsigned(tail));
    for (int j = 0; j < R; ++j) v[j] = _mm512_maskz_loadu_epi8(mask, rows[j] + 64 * nfull);
    block(nfull);
  }
  for (int i = 0; i < MT; ++i)
    for (int j = 0; j < R; ++j) {
      __m512i s = acc[i][j][0];
      for (int h = 1; h < NA; ++h) s = _mm512_add_epi32(s, acc[i][j][h]);
      a.y[(m0 + i) * a.ldy + r + j] = _mm512_reduce_add_epi32(s) - 128 * a.xsum[m0 + i];
    }
}

template <int BITS, int R>
void narrow_tile_m(const NarrowDec<BITS>& dec, const IntGemvArgs& a, int64_t r, int64_t m0, int64_t mt) {
  switch (mt) {
    case 1: narrow_tile<BITS, R, 1>(dec, a, r, m0); break;
    case 2: narrow_tile<BITS, R, 2>(dec, a, r, m0); break;
    case 3: narrow_tile<BITS, R, 3>(dec, a, r, m0); break;
    default: narrow_tile<BITS, R, 4>(dec, a, r, m0); break;
  }
}

template <int BITS>
void narrow_rows(const IntGemvArgs& a, int64_t r0, int64_t r1) {
  const NarrowDec<BITS> dec(a.table);
  // One x row (the GEMV proper) is bound by how fast the codes stream in, and more rows in flight stream
  // faster: 8 rows per tile read ~12 % faster than 4 on a Zen 4 EPYC (bench/int8_m1.py). With several
  // x rows, 4 weight rows x 4 x rows already fill the registers. The 8-bit decoder's table takes 4 zmm.
  if (BITS != 8 && a.m == 1) {
    constexpr int R8 = 8;
    int64_t r = r0;
    for (; r + R8 <= r1; r += R8) narrow_tile<BITS, R8, 1>(dec, a, r, 0);
    for (; r < r1; ++r) narrow_tile<BITS, 1, 1>(dec, a, r, 0);
    return;
  }
  constexpr int R = 4;
  // ~128 KB of codes stay in L2 while every 4-row block of x streams over them
  const int64_t rc = std::max<int64_t>(R, (int64_t(128) << 10) / std::max<int64_t>(a.row_bytes, 1) / R * R);
  for (int64_t c0 = r0; c0 < r1; c0 += rc) {
    const int64_t c1 = std::min(r1, c0 + rc);
    for (int64_t m0 = 0; m0 < a.m; m0 += 4) {
      const int64_t mt = std::min<int64_t>(4, a.m - m0);
      int64_t r = c0;
      for (; r + R <= c1; r += R) narrow_tile_m<BITS, R>(dec, a, r, m0, mt);
      for (; r < c1; ++r) narrow_tile_m<BITS, 1>(dec, a, r, m0, mt);
    }
  }
}

// int16 weights: decode 512-element chunks of a row to int16, vpmaddwd with sign-extended activations.
template <int BITS>  // compile-time code width: the decode below divides by 8 / BITS
void wide_rows(const IntGemvArgs& a, int64_t r0, int64_t r1) {
  constexpr int64_t kChunk = 512;
  alignas(64) int16_t w[kChunk];
  constexpr int per = 8 / BITS;
  constexpr unsigned mask = (1u << BITS) - 1u;
  for (int64_t r = r0; r < r1; ++r) {
    const uint8_t* row = a.packed + r * a.row_bytes;
    for (int64_t i = 0; i < a.m; ++i) a.y[i * a.ldy + r] = 0;
    for (int64_t c0 = 0; c0 < a.k; c0 += kChunk) {
      const int64_t n = std::min(kChunk, a.k - c0), nv = (n + 31) / 32 * 32;
      for (int64_t e = 0; e < n; ++e) {
        const int64_t el = c0 + e;
        w[e] = a.table[(row[el / per] >> ((el % per) * BITS)) & mask];
      }
      for (int64_t e = n; e < nv; ++e) w[e] = 0;
      for (int64_t i = 0; i < a.m; ++i) {
        const int8_t* xi = a.x + i * a.xstride + c0;
        __m512i acc = _mm512_setzero_si512();
        for (int64_t e = 0; e < nv; e += 32) {
          const __m512i xv = _mm512_cvtepi8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(xi + e)));
          acc = _mm512_dpwssd_epi32(acc, _mm512_load_si512(w + e), xv);
        }
        a.y[i * a.ldy + r] += _mm512_reduce_add_epi32(acc);
      }
    }
  }
}

}  // namespace

void int_gemv_rows_avx512(const IntGemvArgs& a, int64_t r0, int64_t r1) {
  if (!a.narrow) {  // 2/4-bit wide tables take the AVX2 LUT kernel (int_linear.cpp, wide_lut_gemv)
    TORCH_CHECK(a.bits == 8, "int_gemv_rows_avx512: wide tables need 8-bit codes here, got ", a.bits);
    wide_rows<8>(a, r0, r1);
  } else if (a.bits == 2) {
    narrow_rows<2>(a, r0, r1);
  } else if (a.bits == 4) {
    narrow_rows<4>(a, r0, r1);
  } else {
    narrow_rows<8>(a, r0, r1);
  }
}

}  // namespace wfn

#pragma GCC pop_options

// ---------------------------------------------------------------------------------------------------
// bf16 GEMV: vpermw / vpermt2w lookups into bf16, vdpbf16ps (pairs of bf16 products into fp32 lanes).
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512vbmi,avx512bf16,avx2,fma,bmi,bmi2")

namespace wfn {

// A 64-byte code block is 32 words; word w holds E = 16 / bits codes, element w * E + p at bit p * bits.
// Phase p (every word shifted right by p * bits) looks up elements w * E + p, w = 0..31, so x element
// w * E + p of the block sits at position p * 32 + w.
int64_t bf16_x_position(int bits, int64_t e) {
  const int64_t eb = 64 * 8 / bits, per_word = 16 / bits;
  const int64_t blk = e / eb, rem = e % eb;
  return blk * eb + (rem % per_word) * 32 + rem / per_word;
}

int64_t bf16_padded_k(int bits, int64_t row_bytes) { return (row_bytes + 63) / 64 * (64 * 8 / bits); }

namespace {

template <int BITS, int R, int MT>
void bf16_tile(const WordLut<BITS>& lut, const Bf16GemvArgs& a, int64_t r, int64_t m0) {
  constexpr int P = 16 / BITS;
  constexpr int NA = MT == 1 ? 2 : 1;
  constexpr int64_t kElems = 32 * P;
  __m512 acc[MT][R][NA];
  for (int i = 0; i < MT; ++i)
    for (int j = 0; j < R; ++j)
      for (int h = 0; h < NA; ++h) acc[i][j][h] = _mm512_setzero_ps();
  const uint8_t* rows[R];
  for (int j = 0; j < R; ++j) rows[j] = a.packed + (r + j) * a.row_bytes;
  const uint16_t* x = a.x + m0 * a.xstride;
  const int64_t nfull = a.row_bytes / 64, tail = a.row_bytes % 64;
  const uint8_t* next = rows[0] + R * a.row_bytes;
  __m512i v[R];
  const __m512i low8 = _mm512_set1_epi16(0xff);
  auto block = [&](int64_t b) __attribute__((always_inline)) {
    const uint16_t* xb = x + b * kElems;
#pragma GCC unroll 8
    for (int p = 0; p < P; ++p) {
      __m512i w[R];
      for (int j = 0; j < R; ++j) {
        __m512i idx = p == 0 ? v[j] : _mm512_srli_epi16(v[j], p * BITS);
        if (BITS == 8 && p == 0) idx = _mm512_and_si512(idx, low8);
        w[j] = lut.get(idx);
      }
      for (int i = 0; i < MT; ++i) {
        const __m512bh xv = (__m512bh)_mm512_loadu_si512(xb + i * a.xstride + p * 32);
        for (int j = 0; j < R; ++j) acc[i][j][p % NA] = _mm512_dpbf16_ps(acc[i][j][p % NA], (__m512bh)w[j], xv);
      }
    }
  };
  const GemvPrefetch pf = gemv_prefetch();
  for (int64_t b = 0; b < nfull; ++b) {
    prefetch_tile_rows<R>(rows, next, a.row_bytes, b, pf);
    for (int j = 0; j < R; ++j) v[j] = _mm512_loadu_si512(rows[j] + 64 * b);
    block(b);
  }
  if (tail) {
    const __mmask64 mask = _bzhi_u64(~0ULL, unsigned(tail));
    for (int j = 0; j < R; ++j) v[j] = _mm512_maskz_loadu_epi8(mask, rows[j] + 64 * nfull);
    block(nfull);
  }
  for (int i = 0; i < MT; ++i)
    for (int j = 0; j < R; ++j) {
      __m512 s = acc[i][j][0];
      for (int h = 1; h < NA; ++h) s = _mm512_add_ps(s, acc[i][j][h]);
      a.y[(m0 + i) * a.ldy + r + j] = _mm512_reduce_add_ps(s);
    }
}

template <int BITS, int R>
void bf16_tile_m(const WordLut<BITS>& lut, const Bf16GemvArgs& a, int64_t r, int64_t m0, int64_t mt) {
  switch (mt) {
    case 1: bf16_tile<BITS, R, 1>(lut, a, r, m0); break;
    case 2: bf16_tile<BITS, R, 2>(lut, a, r, m0); break;
    case 3: bf16_tile<BITS, R, 3>(lut, a, r, m0); break;
    default: bf16_tile<BITS, R, 4>(lut, a, r, m0); break;
  }
}

template <int BITS>
void bf16_rows(const Bf16GemvArgs& a, int64_t r0, int64_t r1) {
  const WordLut<BITS> lut(a.table);
  constexpr int R = BITS == 8 ? 2 : 4;  // the 8-bit table takes 8 zmm
  const int64_t rc = std::max<int64_t>(R, (int64_t(128) << 10) / std::max<int64_t>(a.row_bytes, 1) / R * R);
  for (int64_t c0 = r0; c0 < r1; c0 += rc) {
    const int64_t c1 = std::min(r1, c0 + rc);
    for (int64_t m0 = 0; m0 < a.m; m0 += 4) {
      const int64_t mt = std::min<int64_t>(4, a.m - m0);
      int64_t r = c0;
      for (; r + R <= c1; r += R) bf16_tile_m<BITS, R>(lut, a, r, m0, mt);
      for (; r < c1; ++r) bf16_tile_m<BITS, 1>(lut, a, r, m0, mt);
    }
  }
}

}  // namespace

void bf16_gemv_rows_avx512(const Bf16GemvArgs& a, int64_t r0, int64_t r1) {
  if (a.bits == 2) bf16_rows<2>(a, r0, r1);
  else if (a.bits == 4) bf16_rows<4>(a, r0, r1);
  else bf16_rows<8>(a, r0, r1);
}

}  // namespace wfn

#pragma GCC pop_options
