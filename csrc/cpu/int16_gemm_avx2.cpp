// The int8 mode's large-M linear product on AVX2 CPUs without int8 dot-product instructions (no VNNI, no
// AMX-INT8): y (M, N) int32 = x (M, K) int8 . W^T, W the layer's integer weights (int8 or int16 tables),
// exact, on vpmaddwd.
//
// Why int16: vpmaddubsw needs one unsigned operand, and the int8 mode's activations and weights are both
// signed, so the int8 kernels add a vpsignb per product (|w| times sign(w) x): three multiplier-pipe ops per
// 32 multiply-adds (Zen 3 runs vpsignb, vpmaddubsw and vpmaddwd on the same two pipes). vpmaddwd on int16
// operands is one op per 16 multiply-adds with no widening step, as many multiplier ops per multiply-add as
// fbgemm's unsigned-by-signed vpmaddubsw + vpmaddwd (torch's int8 dynamic linear, still faster on Zen 3:
// bench/results/int16_gemm_zen3.md), and it takes int16 weights (tables that do not fit int8) at the same
// speed.
//
// Layout: x is sign-extended once per call into int16 rows of kp = K rounded up to 2 elements, so a dword
// is the pair (x[2q], x[2q + 1]). Weights are decoded per block of kNc columns x kKc pairs into a panel
// of 8-column strips: panel[strip][q] = 8 dwords, the pairs (w[n][2q], w[n][2q + 1]) of the strip's
// columns (row decode of the codes into int16, then 8 x 8 dword transposes). The micro-kernel takes 4
// rows of x and 2 strips (16 columns) per broadcast x pair. The first K block stores y, later ones add
// to it. Exact: the front end bounds K x 127 x max|w| below 2^31, so no partial sum overflows.
#include <ATen/Parallel.h>
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "int_kernels.h"

#pragma GCC push_options
#pragma GCC target("avx2,bmi,bmi2")
#include "avx2_transpose.h"  // inside the AVX2 region

namespace wfn {
namespace {

constexpr int64_t kNc = 96;   // columns per panel (12 strips of 8, 6 micro-kernel calls)
constexpr int64_t kKc = 256;  // K pairs per panel: 96 x 256 x 4 bytes = 96 KB, in L2
// 4 x rows and 2 strips per micro-kernel call: 8 accumulators, 2 weight vectors, the broadcast and a
// product temporary, no spill. On Zen 3 (M=256, N=4096, K=14336, 1 thread) it took 239.6 ms where 4 x 3
// (16 live registers plus the temporary: spills) took 324.6, 3 x 3 255.1 and 5 x 2 285.2. Its loop is 8
// vpmaddwd + 8 vpaddd + 6 loads per pair, at the two multiplier pipes' rate.
constexpr int kMr = 4;  // x rows per micro-kernel call
constexpr int kNv = 2;  // strips per micro-kernel call

#define WFN_INL4 inline __attribute__((always_inline))

// 8 x 8 dword transpose: v[i] = row i (8 dwords) -> v[j] = dword j of every row.
WFN_INL4 void transpose8(__m256i (&v)[8]) {
  __m256 u[8];
  for (int i = 0; i < 8; ++i) u[i] = _mm256_castsi256_ps(v[i]);
  transpose8x8_ps(u);
  for (int i = 0; i < 8; ++i) v[i] = _mm256_castps_si256(u[i]);
}

// Columns [n0, n0 + cols) and pairs [q0, q0 + qn) of W into the panel (strips of 8 columns, qn dwords
// each per column; columns past cols and pairs past K are zero). rows: scratch of 8 x 2 qn int16 + bytes.
void pack_panel(const Int16GemmArgs& a, int64_t n0, int64_t cols, int64_t q0, int64_t qn, int32_t* panel,
                int16_t* rows, int8_t* lo, int8_t* hi) {
  const int64_t e0 = 2 * q0, elems = std::min(2 * qn, a.k - e0);  // K elements of this block
  const uint8_t* base = a.packed + e0 * a.bits / 8;                // e0 is a multiple of 8: byte aligned
  for (int64_t s = 0; s * 8 < cols; ++s) {
    const int64_t c0 = s * 8, nc = std::min<int64_t>(8, cols - c0);
    for (int64_t c = 0; c < 8; ++c) {
      int16_t* r = rows + c * 2 * qn;
      if (c >= nc) {
        std::memset(r, 0, size_t(4 * qn));
        continue;
      }
      int16_decode_row_avx2(base + (n0 + c0 + c) * a.row_bytes, elems, a.bits, a.lo, a.hi, a.table, r, lo, hi);
      std::memset(r + elems, 0, size_t(2 * (2 * qn - elems)));
    }
    int32_t* out = panel + s * qn * 8;
    const int32_t* rd = reinterpret_cast<const int32_t*>(rows);  // row c's pair q at rd[c * qn + q]
    int64_t q = 0;
    for (; q + 8 <= qn; q += 8) {
      __m256i v[8];
      for (int c = 0; c < 8; ++c) v[c] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(rd + c * qn + q));
      transpose8(v);
      for (int j = 0; j < 8; ++j) _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + (q + j) * 8), v[j]);
    }
    for (; q < qn; ++q)
      for (int c = 0; c < 8; ++c) out[q * 8 + c] = rd[c * qn + q];
  }
}

// y[m0 + r][n0 + 8 (s0 + v) + j] (+)= sum over pairs q < qn of x16[m0 + r][q0 + q] . panel strip s0 + v,
// r < mr, v < NV; cols: valid columns from strip s0's first (8 NV may exceed it).
template <int MR, int NV>
__attribute__((noinline)) void micro(const int32_t* x16, int64_t xs, const int32_t* panel, int64_t qn, int64_t q0,
                                     int32_t* y, int64_t ldy, int64_t cols, bool first) {
  __m256i acc[MR][NV];
#pragma GCC unroll 4
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 3
    for (int v = 0; v < NV; ++v) acc[r][v] = _mm256_setzero_si256();
  const int32_t* xr[MR];
#pragma GCC unroll 4
  for (int r = 0; r < MR; ++r) xr[r] = x16 + r * xs + q0;
  const int32_t* w = panel;
  for (int64_t q = 0; q < qn; ++q, w += 8) {
    __m256i wv[NV];
#pragma GCC unroll 3
    for (int v = 0; v < NV; ++v) wv[v] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + v * qn * 8));
#pragma GCC unroll 4
    for (int r = 0; r < MR; ++r) {
      const __m256i xb = _mm256_set1_epi32(xr[r][q]);
#pragma GCC unroll 3
      for (int v = 0; v < NV; ++v) acc[r][v] = _mm256_add_epi32(acc[r][v], _mm256_madd_epi16(xb, wv[v]));
    }
  }
#pragma GCC unroll 4
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 3
    for (int v = 0; v < NV; ++v) {
      const int64_t left = cols - 8 * v;
      if (left <= 0) break;
      int32_t* o = y + r * ldy + 8 * v;
      if (left >= 8) {
        __m256i val = acc[r][v];
        if (!first) val = _mm256_add_epi32(val, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(o)));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(o), val);
      } else {
        alignas(32) int32_t tmp[8];
        _mm256_store_si256(reinterpret_cast<__m256i*>(tmp), acc[r][v]);
        for (int64_t j = 0; j < left; ++j) o[j] = first ? tmp[j] : o[j] + tmp[j];
      }
    }
}

template <int NV, int MR = kMr>
void micro_rows(int64_t mr, const int32_t* x16, int64_t xs, const int32_t* panel, int64_t qn, int64_t q0, int32_t* y,
                int64_t ldy, int64_t cols, bool first) {
  if constexpr (MR == 1) {
    micro<1, NV>(x16, xs, panel, qn, q0, y, ldy, cols, first);
  } else {
    if (mr == MR) micro<MR, NV>(x16, xs, panel, qn, q0, y, ldy, cols, first);
    else micro_rows<NV, MR - 1>(mr, x16, xs, panel, qn, q0, y, ldy, cols, first);
  }
}

}  // namespace

void int16_decode_row_avx2(const uint8_t* codes, int64_t k, int bits, const int8_t* lo, const int8_t* hi,
                           const int16_t* table, int16_t* out, int8_t* blo, int8_t* bhi) {
  if (bits == 8) {  // one code per byte: one int16 table lookup each
    for (int64_t i = 0; i < k; ++i) out[i] = table[codes[i]];
    return;
  }
  int8_decode_rows_avx2(codes, 0, k, bits, lo, 0, 1, blo, k);  // the byte tables' vpshufb decodes, joined
  if (hi != nullptr) int8_decode_rows_avx2(codes, 0, k, bits, hi, 0, 1, bhi, k);
  int16_join_rows_avx2(blo, hi != nullptr ? bhi : nullptr, k, out);
}

void int16_gemm_avx2(const Int16GemmArgs& a, int64_t n) {
  const int64_t m = a.m, kp = (a.k + 1) / 2;  // pairs per row
  std::vector<int32_t> x16(size_t(m * kp));   // x sign-extended to int16, (M, 2 kp), zero past K
  at::parallel_for(0, m, 16, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) {
      int16_t* dst = reinterpret_cast<int16_t*>(x16.data() + i * kp);
      int16_join_rows_avx2(a.x + i * a.xstride, nullptr, a.k, dst);
      if (a.k % 2) dst[a.k] = 0;
    }
  });
  const int64_t blocks = (n + kNc - 1) / kNc;
  at::parallel_for(0, blocks, 1, [&](int64_t lo, int64_t hi) {
    const int64_t qc = std::min(kKc, kp);
    std::vector<int32_t> panel(size_t(kNc * qc));
    std::vector<int16_t> rows(size_t(8 * 2 * qc));
    std::vector<int8_t> blo(size_t(2 * qc)), bhi(size_t(2 * qc));
    for (int64_t b = lo; b < hi; ++b) {
      const int64_t n0 = b * kNc, cols = std::min(kNc, n - n0);
      for (int64_t q0 = 0; q0 < kp; q0 += kKc) {
        const int64_t qn = std::min(kKc, kp - q0);
        pack_panel(a, n0, cols, q0, qn, panel.data(), rows.data(), blo.data(), bhi.data());
        for (int64_t m0 = 0; m0 < m; m0 += kMr) {
          const int64_t mr = std::min<int64_t>(kMr, m - m0);
          for (int64_t s = 0; s * 8 < cols; s += kNv) {
            const int64_t c = std::min<int64_t>(8 * kNv, cols - 8 * s), strips = (c + 7) / 8;
            const int32_t* pp = panel.data() + s * qn * 8;
            int32_t* yy = a.y + m0 * a.ldy + n0 + 8 * s;
            const int32_t* xx = x16.data() + m0 * kp;
            if (strips == kNv) micro_rows<kNv>(mr, xx, kp, pp, qn, q0, yy, a.ldy, c, q0 == 0);
            else if (kNv > 2 && strips == 2) micro_rows<2>(mr, xx, kp, pp, qn, q0, yy, a.ldy, c, q0 == 0);
            else micro_rows<1>(mr, xx, kp, pp, qn, q0, yy, a.ldy, c, q0 == 0);
          }
        }
      }
    }
  });
}

}  // namespace wfn

#pragma GCC pop_options
