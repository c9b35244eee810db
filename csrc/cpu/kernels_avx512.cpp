// AVX-512 kernels (F, BW, VL, DQ, VBMI), compiled for that target per function (no -march flag), run only
// when dispatch.cpp found the CPU supports them.
//
// Decode strategies (see kernels.h for the block/phase layout that lets the weights stream unmodified):
//  * 2/4-bit: the codebook (<= 16 fp32) lives in one zmm; _mm512_permutexvar_ps reads only the low 4 bits
//    of each 32-bit index, so "shift right by p*bits" is the whole unpack, no mask. For 2-bit the table is
//    replicated (entry i = cb[i & 3]) so the two foreign bits above the code are ignored.
//  * 8-bit (<= 256 entries): the fp32 table is split into 4 byte planes of 256 bytes; each plane is two
//    128-byte vpermt2b lookups (_mm512_permutex2var_epi8) blended on the code's top bit, and the 4 planes
//    are re-interleaved into floats with unpack{lo,hi}_epi{8,16}. That yields 64 weights per 13 shuffles
//    + 8 unpacks, against 4 gathers of 16 (the alternative, kept for comparison with
//    WFN_AVX512_U8=gather). Measured on this machine (AMD EPYC, 1 thread, 512x2048 weights in L2):
//    byte planes 0.042 ns/weight, gathers 0.245 ns/weight. The unpacks leave element l*16 + g*4 + i of a 64-block in float vector g,
//    lane 4*l + i; x is permuted to match (linear.cpp). When every table entry has zero low 16 bits
//    (bf16-exact values, e.g. WFN's few-term power-of-two sums) only the two high planes are looked up:
//    0.030 instead of 0.040 ns/weight (same measurement as below).
// Headers come first so no library inline function is compiled with the AVX-512 target (ODR safety).
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "kernels.h"

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512vbmi,avx2,fma,bmi,bmi2")

namespace wfn {
namespace {

#define WFN_INLINE inline __attribute__((always_inline))

template <int BITS>
struct DecNibble {  // 2- or 4-bit codes through a 16-entry table in one register
  static constexpr int kPhases = 32 / BITS;
  static constexpr int kRows = 4;
  using State = __m512i;
  __m512 lut;
  explicit DecNibble(const float* table) {
    alignas(64) float t[16];
    for (int i = 0; i < 16; ++i) t[i] = table[BITS == 2 ? (i & 3) : i];
    lut = _mm512_load_ps(t);
  }
  WFN_INLINE State prepare(__m512i v) const { return v; }
  WFN_INLINE __m512 get(const State& s, int p) const {
    return _mm512_permutexvar_ps(p == 0 ? s : _mm512_srli_epi32(s, p * BITS), lut);
  }
};

struct DecU8Gather {  // 8-bit codes through 16-lane gathers from the 256-float table
  static constexpr int kPhases = 4;
  static constexpr int kRows = 4;
  using State = __m512i;
  const float* table;
  explicit DecU8Gather(const float* t) : table(t) {}
  WFN_INLINE State prepare(__m512i v) const { return v; }
  WFN_INLINE __m512 get(const State& s, int p) const {
    const __m512i idx = p == 3 ? _mm512_srli_epi32(s, 24)
                               : _mm512_and_si512(p == 0 ? s : _mm512_srli_epi32(s, 8 * p), _mm512_set1_epi32(255));
    return _mm512_i32gather_ps(idx, table, 4);
  }
};

// NP = 4: all four byte planes. NP = 2: only the two high bytes, for tables whose low 16 bits are all
// zero (bf16-exact values, which WFN's few-term power-of-two sums usually are): half the lookups.
template <int NP>
struct DecU8Planes {  // 8-bit codes through NP byte planes x 2 vpermt2b lookups
  static constexpr int kPhases = 4;
  static constexpr int kRows = 2;  // 4*NP zmm hold the tables; 2 rows keep the rest in registers
  struct State { __m512 f[4]; };
  __m512i t[NP][4];  // t[plane][quarter]: byte (4 - NP + plane) of entries quarter*64 .. quarter*64+63
  explicit DecU8Planes(const float* table) {
    alignas(64) uint8_t bytes[4][256];
    for (int e = 0; e < 256; ++e) {
      uint32_t u;
      std::memcpy(&u, table + e, 4);
      for (int q = 0; q < 4; ++q) bytes[q][e] = uint8_t(u >> (8 * q));
    }
    for (int q = 0; q < NP; ++q)
      for (int h = 0; h < 4; ++h) t[q][h] = _mm512_load_si512(bytes[4 - NP + q] + 64 * h);
  }
  WFN_INLINE State prepare(__m512i c) const {
    const __mmask64 top = _mm512_movepi8_mask(c);  // code >= 128: entries from the upper 128
    __m512i pl[4];
    for (int q = 0; q < 4 - NP; ++q) pl[q] = _mm512_setzero_si512();
    for (int q = 0; q < NP; ++q) {
      const __m512i lo = _mm512_permutex2var_epi8(t[q][0], c, t[q][1]);
      const __m512i hi = _mm512_permutex2var_epi8(t[q][2], c, t[q][3]);
      pl[4 - NP + q] = _mm512_mask_blend_epi8(top, lo, hi);
    }
    const __m512i w_lo = _mm512_unpacklo_epi8(pl[0], pl[1]), w_hi = _mm512_unpackhi_epi8(pl[0], pl[1]);
    const __m512i q_lo = _mm512_unpacklo_epi8(pl[2], pl[3]), q_hi = _mm512_unpackhi_epi8(pl[2], pl[3]);
    State s;
    s.f[0] = _mm512_castsi512_ps(_mm512_unpacklo_epi16(w_lo, q_lo));
    s.f[1] = _mm512_castsi512_ps(_mm512_unpackhi_epi16(w_lo, q_lo));
    s.f[2] = _mm512_castsi512_ps(_mm512_unpacklo_epi16(w_hi, q_hi));
    s.f[3] = _mm512_castsi512_ps(_mm512_unpackhi_epi16(w_hi, q_hi));
    return s;
  }
  WFN_INLINE __m512 get(const State& s, int p) const { return s.f[p]; }
};

bool low_halves_zero(const float* table) {
  for (int e = 0; e < 256; ++e) {
    uint32_t u;
    std::memcpy(&u, table + e, 4);
    if (u & 0xffffu) return false;
  }
  return true;
}

// acc[i][r] += decoded weights of one 64-byte block of rows r times the matching x block of rows i.
template <class Dec, int R, int MT, int NA>
WFN_INLINE void block_fma(const Dec& dec, const __m512i (&v)[R], const float* xk, int64_t xstride,
                          __m512 (&acc)[MT][R][NA]) {
  typename Dec::State s[R];
  for (int r = 0; r < R; ++r) s[r] = dec.prepare(v[r]);
#pragma GCC unroll 16
  for (int p = 0; p < Dec::kPhases; ++p) {
    __m512 w[R];
    for (int r = 0; r < R; ++r) w[r] = dec.get(s[r], p);
    for (int i = 0; i < MT; ++i) {
      const __m512 xv = _mm512_loadu_ps(xk + i * xstride + p * 16);
      for (int r = 0; r < R; ++r) acc[i][r][p % NA] = _mm512_fmadd_ps(w[r], xv, acc[i][r][p % NA]);
    }
  }
}

// y[m0 .. m0+MT, r .. r+R] for R weight rows and MT activation rows.
template <class Dec, int R, int MT>
void gemv_tile(const Dec& dec, const GemvArgs& a, int64_t r, int64_t m0) {
  constexpr int NA = MT == 1 ? 2 : 1;  // M = 1: two chains per row so FMA latency is hidden
  constexpr int64_t kElems = 16 * Dec::kPhases;
  __m512 acc[MT][R][NA];
  for (int i = 0; i < MT; ++i)
    for (int j = 0; j < R; ++j)
      for (int h = 0; h < NA; ++h) acc[i][j][h] = _mm512_setzero_ps();
  const uint8_t* rows[R];
  for (int j = 0; j < R; ++j) rows[j] = a.packed + (r + j) * a.row_bytes;
  const float* x = a.x + m0 * a.xstride;
  const int64_t nfull = a.row_bytes / 64, tail = a.row_bytes % 64;
  __m512i v[R];
  const uint8_t* next = rows[0] + R * a.row_bytes;
  const GemvPrefetch pf = gemv_prefetch();
  for (int64_t b = 0; b < nfull; ++b) {
    prefetch_tile_rows<R>(rows, next, a.row_bytes, b, pf);
    for (int j = 0; j < R; ++j) v[j] = _mm512_loadu_si512(rows[j] + 64 * b);
    block_fma<Dec, R, MT, NA>(dec, v, x + b * kElems, a.xstride, acc);
  }
  if (tail) {  // masked load: bytes past the row end are neither read nor used (codes 0, x padding 0)
    const __mmask64 mask = _bzhi_u64(~0ULL, unsigned(tail));
    for (int j = 0; j < R; ++j) v[j] = _mm512_maskz_loadu_epi8(mask, rows[j] + 64 * nfull);
    block_fma<Dec, R, MT, NA>(dec, v, x + nfull * kElems, a.xstride, acc);
  }
  for (int i = 0; i < MT; ++i)
    for (int j = 0; j < R; ++j) {
      __m512 s = acc[i][j][0];
      for (int h = 1; h < NA; ++h) s = _mm512_add_ps(s, acc[i][j][h]);
      a.y[(m0 + i) * a.ldy + r + j] = _mm512_reduce_add_ps(s);
    }
}

template <class Dec, int R>
void gemv_tile_m(const Dec& dec, const GemvArgs& a, int64_t r, int64_t m0, int64_t mt) {
  switch (mt) {
    case 1: gemv_tile<Dec, R, 1>(dec, a, r, m0); break;
    case 2: gemv_tile<Dec, R, 2>(dec, a, r, m0); break;
    case 3: gemv_tile<Dec, R, 3>(dec, a, r, m0); break;
    default: gemv_tile<Dec, R, 4>(dec, a, r, m0); break;
  }
}

// Cache blocking: a chunk of rows (~128 KB of codes) stays in L2 while every 4-row block of x streams
// over it, and each x block (4 rows) stays in L1/L2 while the chunk's row tiles read it. At M <= 4 this
// is a plain pass over the rows.
template <class Dec>
void gemv_rows_impl(const Dec& dec, const GemvArgs& a, int64_t r0, int64_t r1) {
  constexpr int R = Dec::kRows;
  const int64_t rc = std::max<int64_t>(R, (int64_t(128) << 10) / std::max<int64_t>(a.row_bytes, 1) / R * R);
  for (int64_t c0 = r0; c0 < r1; c0 += rc) {
    const int64_t c1 = std::min(r1, c0 + rc);
    for (int64_t m0 = 0; m0 < a.m; m0 += 4) {
      const int64_t mt = std::min<int64_t>(4, a.m - m0);
      int64_t r = c0;
      for (; r + R <= c1; r += R) gemv_tile_m<Dec, R>(dec, a, r, m0, mt);
      for (; r < c1; ++r) gemv_tile_m<Dec, 1>(dec, a, r, m0, mt);
    }
  }
}

}  // namespace

bool avx512_u8_byteplanes() {
  static const bool planes = [] {
    const char* env = std::getenv("WFN_AVX512_U8");
    return env == nullptr || std::strcmp(env, "gather") != 0;
  }();
  return planes;
}

void gemv_rows_avx512(const GemvArgs& a, int64_t r0, int64_t r1) {
  if (a.bits == 2) {
    gemv_rows_impl(DecNibble<2>(a.table), a, r0, r1);
  } else if (a.bits == 4) {
    gemv_rows_impl(DecNibble<4>(a.table), a, r0, r1);
  } else if (avx512_u8_byteplanes()) {
    if (low_halves_zero(a.table)) gemv_rows_impl(DecU8Planes<2>(a.table), a, r0, r1);
    else gemv_rows_impl(DecU8Planes<4>(a.table), a, r0, r1);
  } else {
    gemv_rows_impl(DecU8Gather(a.table), a, r0, r1);
  }
}

// Natural-order decode (GEMM / conv paths): 16 codes -> 16 floats per step, scalar tail.
void decode_rows_avx512(const uint8_t* packed, int64_t row_bytes, int64_t k, int bits, const float* table,
                        int64_t r0, int64_t r1, float* out) {
  alignas(64) float t16[16];
  for (int i = 0; i < 16; ++i) t16[i] = table[bits == 2 ? (i & 3) : (bits == 4 ? i : 0)];
  const __m512 lut = _mm512_load_ps(t16);
  const __m512i shifts2 = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
  const __m128i low4 = _mm_set1_epi8(0x0f);
  // 4-bit, 32 codes per step: widen 16 bytes, look up low and high nibbles, interleave with vpermt2ps.
  const __m512i even_odd_lo = _mm512_set_epi32(23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
  const __m512i even_odd_hi = _mm512_set_epi32(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8);
  const int64_t full32 = bits == 4 ? k / 32 * 32 : 0;
  const int64_t full = k / 16 * 16;
  for (int64_t r = r0; r < r1; ++r) {
    const uint8_t* row = packed + r * row_bytes;
    float* o = out + (r - r0) * k;
    for (int64_t i = 0; i < full32; i += 32) {
      const __m512i v = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + i / 2)));
      const __m512 lo = _mm512_permutexvar_ps(v, lut), hi = _mm512_permutexvar_ps(_mm512_srli_epi32(v, 4), lut);
      _mm512_storeu_ps(o + i, _mm512_permutex2var_ps(lo, even_odd_lo, hi));
      _mm512_storeu_ps(o + i + 16, _mm512_permutex2var_ps(lo, even_odd_hi, hi));
    }
    for (int64_t i = full32; i < full; i += 16) {
      __m512i idx;
      if (bits == 2) {  // 4 bytes -> 16 codes: broadcast the word, shift lane j right by 2j
        int32_t word;
        std::memcpy(&word, row + i / 4, 4);
        idx = _mm512_srlv_epi32(_mm512_set1_epi32(word), shifts2);
      } else if (bits == 4) {  // 8 bytes -> 16 codes: interleave low and high nibbles, widen
        const __m128i b = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(row + i / 2));
        const __m128i nib = _mm_unpacklo_epi8(_mm_and_si128(b, low4), _mm_and_si128(_mm_srli_epi16(b, 4), low4));
        idx = _mm512_cvtepu8_epi32(nib);
      } else {
        idx = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + i)));
        _mm512_storeu_ps(o + i, _mm512_i32gather_ps(idx, table, 4));
        continue;
      }
      _mm512_storeu_ps(o + i, _mm512_permutexvar_ps(idx, lut));
    }
    const int per_byte = 8 / bits;
    for (int64_t i = full; i < k; ++i)  // tail of < 16 codes
      o[i] = table[(row[i / per_byte] >> ((i % per_byte) * bits)) & ((1u << bits) - 1u)];
  }
}

}  // namespace wfn

#pragma GCC pop_options
