// AVX2 + FMA kernels, compiled for that target per function, used when AVX-512 is absent (or forced with
// WFN_CPU_DISPATCH=avx2). Same block/phase scheme as AVX-512 (kernels.h) with 32-byte blocks of 8 words.
//  * 4-bit: _mm256_permutevar8x32_ps reads 3 index bits, so the 16-entry table is two registers; the code's
//    bit 3, shifted to the sign bit, picks between them with blendv.
//  * 2-bit: one register holding the 4 entries twice (bit 2 of the index belongs to the next code).
//  * 8-bit: 8-lane gathers from the 256-float table.
//  * 2/4-bit codes with a bf16-exact table (every WFN codebook: sums of powers of two with at most 8
//    significant bits): the fp32 value is its bf16 bits followed by 16 zeros, so two vpshufb byte tables
//    give each code's two bf16 bytes, vpunpck{l,h}bw joins them into words, and a shift or a mask puts a
//    word in the top half of a float (DecBf). That is 2 shuffles per 16 weights instead of 2 cross-lane
//    permutes and a blend per 8; the order the floats come out in is avx2_bf16_element (kernels.h), and x
//    is permuted to match.
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "kernels.h"

#pragma GCC push_options
#pragma GCC target("avx2,fma,bmi,bmi2")

namespace wfn {
namespace {

#define WFN_INLINE2 inline __attribute__((always_inline))

template <int BITS>
struct Dec2 {
  static constexpr int kPhases = 32 / BITS;
  static constexpr int64_t kElems = 8 * kPhases;  // weights per 32-byte block
  template <int MT>
  static constexpr int rows() { return 4; }
  __m256 lut0, lut1;
  const float* table;
  explicit Dec2(const float* t) : table(t) {
    alignas(32) float a[8], b[8];
    for (int i = 0; i < 8; ++i) {
      a[i] = t[BITS == 2 ? (i & 3) : i];
      b[i] = t[BITS == 4 ? 8 + i : 0];
    }
    lut0 = _mm256_load_ps(a);
    lut1 = _mm256_load_ps(b);
  }
  WFN_INLINE2 __m256 get(__m256i s, int p) const {
    if (BITS == 8) {
      const __m256i idx = p == 3 ? _mm256_srli_epi32(s, 24)
                                 : _mm256_and_si256(_mm256_srli_epi32(s, 8 * p), _mm256_set1_epi32(255));
      return _mm256_i32gather_ps(table, idx, 4);
    }
    const __m256i idx = p == 0 ? s : _mm256_srli_epi32(s, p * BITS);
    if (BITS == 2) return _mm256_permutevar8x32_ps(lut0, idx);
    const __m256 lo = _mm256_permutevar8x32_ps(lut0, idx), hi = _mm256_permutevar8x32_ps(lut1, idx);
    const __m256i sel = _mm256_slli_epi32(s, 28 - 4 * p);  // bit 3 of code p -> sign bit
    return _mm256_blendv_ps(lo, hi, _mm256_castsi256_ps(sel));
  }
};

template <int BITS, int R, int MT>
WFN_INLINE2 void block_fma(const Dec2<BITS>& dec, const uint8_t* const (&rows)[R], int64_t off, const float* xk,
                           int64_t xstride, __m256 (&acc)[MT][R][2]) {
  __m256i v[R];
  for (int r = 0; r < R; ++r) v[r] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(rows[r] + off));
#pragma GCC unroll 16
  for (int p = 0; p < Dec2<BITS>::kPhases; ++p) {
    __m256 w[R];
    for (int r = 0; r < R; ++r) w[r] = dec.get(v[r], p);
    for (int i = 0; i < MT; ++i) {
      const __m256 xv = _mm256_loadu_ps(xk + i * xstride + p * 8);
      for (int r = 0; r < R; ++r) acc[i][r][p & 1] = _mm256_fmadd_ps(w[r], xv, acc[i][r][p & 1]);
    }
  }
}

WFN_INLINE2 float hsum(__m256 v) {
  const __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 t = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(t, _mm_shuffle_ps(t, t, 1)));
}


template <int BITS>
struct DecBf {
  static constexpr int kQ = 8 / BITS;  // code vectors per 32-byte block, 4 float vectors each
  static constexpr int64_t kElems = 32 * kQ;
  template <int MT>
  static constexpr int rows() { return MT == 1 ? 4 : MT == 2 ? 2 : 1; }
  __m256i tlo, thi, mask, hiword;
  explicit DecBf(const uint16_t* t16) {
    alignas(16) uint8_t lo[16], hi[16];
    for (int i = 0; i < 16; ++i) {
      const uint16_t v = i < (1 << BITS) ? t16[i] : 0;
      lo[i] = uint8_t(v & 255);
      hi[i] = uint8_t(v >> 8);
    }
    tlo = _mm256_broadcastsi128_si256(_mm_load_si128(reinterpret_cast<const __m128i*>(lo)));
    thi = _mm256_broadcastsi128_si256(_mm_load_si128(reinterpret_cast<const __m128i*>(hi)));
    mask = _mm256_set1_epi8(char((1 << BITS) - 1));
    hiword = _mm256_set1_epi32(int(0xFFFF0000u));
  }
  // Float vectors 4q..4q+3 of block v.
  WFN_INLINE2 void get(__m256i v, int q, __m256 (&w)[4]) const {
    const __m256i c = _mm256_and_si256(q == 0 ? v : _mm256_srli_epi16(v, q * BITS), mask);
    const __m256i l = _mm256_shuffle_epi8(tlo, c), h = _mm256_shuffle_epi8(thi, c);
    const __m256i u0 = _mm256_unpacklo_epi8(l, h), u1 = _mm256_unpackhi_epi8(l, h);
    w[0] = _mm256_castsi256_ps(_mm256_slli_epi32(u0, 16));
    w[1] = _mm256_castsi256_ps(_mm256_and_si256(u0, hiword));
    w[2] = _mm256_castsi256_ps(_mm256_slli_epi32(u1, 16));
    w[3] = _mm256_castsi256_ps(_mm256_and_si256(u1, hiword));
  }
};

// One row at a time within a code vector, its code block re-read from L1 each time: holding R blocks and
// R x 4 decoded vectors at once spilled (AVX2 has 16 registers).
template <int BITS, int R, int MT>
WFN_INLINE2 void block_fma(const DecBf<BITS>& dec, const uint8_t* const (&rows)[R], int64_t off,
                              const float* xk, int64_t xstride, __m256 (&acc)[MT][R][2]) {
#pragma GCC unroll 4
  for (int q = 0; q < DecBf<BITS>::kQ; ++q)
    for (int r = 0; r < R; ++r) {
      __m256 w[4];
      dec.get(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(rows[r] + off)), q, w);
      for (int g = 0; g < 4; ++g)
        for (int i = 0; i < MT; ++i)
          acc[i][r][g & 1] = _mm256_fmadd_ps(w[g], _mm256_loadu_ps(xk + i * xstride + (4 * q + g) * 8),
                                             acc[i][r][g & 1]);
    }
}

// One tile: R weight rows against MT activation rows, whole 32-byte blocks, then the last partial block
// from a zeroed copy (never reading past a row; x is zero past K). D is Dec2 or DecBf.
template <class D, int R, int MT>
void gemv_tile(const D& dec, const GemvArgs& a, int64_t r, int64_t m0) {
  constexpr int64_t kElems = D::kElems;
  __m256 acc[MT][R][2];
  for (int i = 0; i < MT; ++i)
    for (int j = 0; j < R; ++j) acc[i][j][0] = acc[i][j][1] = _mm256_setzero_ps();
  const uint8_t* rows[R];
  for (int j = 0; j < R; ++j) rows[j] = a.packed + (r + j) * a.row_bytes;
  const float* x = a.x + m0 * a.xstride;
  const int64_t nfull = a.row_bytes / 32, tail = a.row_bytes % 32;
  for (int64_t b = 0; b < nfull; ++b) block_fma(dec, rows, 32 * b, x + b * kElems, a.xstride, acc);
  if (tail) {
    alignas(32) uint8_t buf[R][32];
    const uint8_t* brows[R];
    for (int j = 0; j < R; ++j) {
      std::memset(buf[j], 0, 32);
      std::memcpy(buf[j], rows[j] + 32 * nfull, size_t(tail));
      brows[j] = buf[j];
    }
    block_fma(dec, brows, 0, x + nfull * kElems, a.xstride, acc);
  }
  for (int i = 0; i < MT; ++i)
    for (int j = 0; j < R; ++j) a.y[(m0 + i) * a.ldy + r + j] = hsum(_mm256_add_ps(acc[i][j][0], acc[i][j][1]));
}

// Rows per tile: D::rows<MT>() (Dec2: 4 at every MT, as measured when it was the only decode; DecBf: at most
// 8 accumulators, MT x R x 2). DecBf on Zen 3, N=4096, K=14336, M=1, 1 thread, medians of 25 (ad hoc builds):
// R = 4 3.85 ms, R = 2 4.15, R = 1 5.20 (one row's two accumulator chains are FMA-latency bound); a software
// prefetch 512 bytes ahead changed nothing.
template <class D, int MT>
void rows_m(const D& dec, const GemvArgs& a, int64_t c0, int64_t c1, int64_t m0) {
  constexpr int R = D::template rows<MT>();
  int64_t r = c0;
  for (; r + R <= c1; r += R) gemv_tile<D, R, MT>(dec, a, r, m0);
  for (; r < c1; ++r) gemv_tile<D, 1, MT>(dec, a, r, m0);
}

// Cache blocking as in kernels_avx512.cpp: ~128 KB of rows in L2, x in 4-row blocks.
template <class D>
void gemv_rows(const D& dec, const GemvArgs& a, int64_t r0, int64_t r1) {
  const int64_t rc = std::max<int64_t>(4, (int64_t(128) << 10) / std::max<int64_t>(a.row_bytes, 1) / 4 * 4);
  for (int64_t c0 = r0; c0 < r1; c0 += rc) {
    const int64_t c1 = std::min(r1, c0 + rc);
    for (int64_t m0 = 0; m0 < a.m; m0 += 4) {
      switch (std::min<int64_t>(4, a.m - m0)) {
        case 1: rows_m<D, 1>(dec, a, c0, c1, m0); break;
        case 2: rows_m<D, 2>(dec, a, c0, c1, m0); break;
        case 3: rows_m<D, 3>(dec, a, c0, c1, m0); break;
        default: rows_m<D, 4>(dec, a, c0, c1, m0); break;
      }
    }
  }
}

}  // namespace

void gemv_rows_avx2(const GemvArgs& a, int64_t r0, int64_t r1) {
  if (a.table16 != nullptr && a.bits == 2) gemv_rows(DecBf<2>(a.table16), a, r0, r1);
  else if (a.table16 != nullptr && a.bits == 4) gemv_rows(DecBf<4>(a.table16), a, r0, r1);
  else if (a.bits == 2) gemv_rows(Dec2<2>(a.table), a, r0, r1);
  else if (a.bits == 4) gemv_rows(Dec2<4>(a.table), a, r0, r1);
  else gemv_rows(Dec2<8>(a.table), a, r0, r1);
}

void scale_channel_blocks_avx2(float* out, int64_t e0, int64_t e1, const float* scale, int64_t block,
                               int64_t slab) {
  for (int64_t e = e0; e < e1; e += block) {
    const float* s = scale + (e / slab) * block;
    float* w = out + e;
    int64_t j = 0;
    for (; j + 8 <= block; j += 8) _mm256_storeu_ps(w + j, _mm256_mul_ps(_mm256_loadu_ps(w + j), _mm256_loadu_ps(s + j)));
    for (; j < block; ++j) w[j] *= s[j];
  }
}

// Natural-order decode, 8 codes per step, scalar tail. scale (block a multiple of 8, k a multiple of block):
// each 8 decoded weights, all of one [O/block][K][block] slab, times their channels' scales before the store.
void decode_rows_avx2(const uint8_t* packed, int64_t row_bytes, int64_t k, int bits, const float* table,
                      int64_t r0, int64_t r1, float* out, const float* scale, int64_t block, int64_t slab) {
  const Dec2<4> d4(table);
  const Dec2<2> d2(table);
  const __m256i sh4 = _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28);
  const __m256i sh2 = _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14);
  const int64_t full = k / 8 * 8;
  for (int64_t r = r0; r < r1; ++r) {
    const uint8_t* row = packed + r * row_bytes;
    float* o = out + (r - r0) * k;
    const float* srow = scale == nullptr ? nullptr : scale + (r * k / slab) * block;
    int64_t j = 0;
    for (int64_t i = 0; i < full; i += 8) {
      __m256 w;
      if (bits == 2) {
        uint16_t h;
        std::memcpy(&h, row + i / 4, 2);
        w = d2.get(_mm256_srlv_epi32(_mm256_set1_epi32(h), sh2), 0);
      } else if (bits == 4) {
        int32_t word;
        std::memcpy(&word, row + i / 2, 4);
        w = d4.get(_mm256_srlv_epi32(_mm256_set1_epi32(word), sh4), 0);
      } else {
        const __m256i idx = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(row + i)));
        w = _mm256_i32gather_ps(table, idx, 4);
      }
      if (scale != nullptr) {  // k is a multiple of block: element i of the row is channel i % block
        w = _mm256_mul_ps(w, _mm256_loadu_ps(srow + j));
        j = j + 8 == block ? 0 : j + 8;
      }
      _mm256_storeu_ps(o + i, w);
    }
    const int per_byte = 8 / bits;
    for (int64_t i = full; i < k; ++i) {
      o[i] = table[(row[i / per_byte] >> ((i % per_byte) * bits)) & ((1u << bits) - 1u)];
      if (scale != nullptr) o[i] *= scale[((r * k + i) / slab) * block + (r * k + i) % block];
    }
  }
}

}  // namespace wfn

#pragma GCC pop_options
