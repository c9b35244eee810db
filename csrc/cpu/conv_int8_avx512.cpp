// The int8 mode's convolution on AVX-512 VNNI CPUs without AMX: im2col, per-pixel quantisation, the exact
// integer product and the rescale fused per block of 64 output pixels, with the activations as the vector
// operand and the weights broadcast, so a pixel block's outputs land in the NCHW output as whole vectors.
//
// Per task (one image, 64 consecutive output pixels p0 .. p0 + 63 of its OH x OW plane):
//  1. Gather + quantise: im2col row i = (c, kh, kw) of the block, quantised with each pixel's own scale
//     (int8_conv_columns computes scales from the receptive-field max), four rows at a time into a 4 x 64
//     int8 scratch, then interleaved into act[i / 4] as 64 dwords (4 consecutive K values of one pixel) and
//     offset by +128 (u8), the unsigned operand vpdpbusd reads. The block (K/4 x 256 bytes, <= 295 KB for
//     ResNet-18's largest K = 4608) stays in L2.
//  2. Product: for 6 weight rows at a time, 24 accumulators (6 rows x 64 pixels); per K quad, 4 activation
//     vectors and 6 broadcast weight dwords (s8) feed 24 vpdpbusd. Accumulators start at -128 * (row sum of
//     the weights), which removes the +128 offset exactly: sum (x + 128) w - 128 sum w = sum x w. Every
//     partial sum is bounded by K * 128 * 128, inside the K * 127 * 255 < 2^31 the front end checks.
//  3. Rescale: y = float(acc) * s[pixel] + bias (s = scale * step, NaN for a pixel whose receptive field
//     holds NaN/Inf), two roundings as the reference, stored straight into y[b, n, p0 ..].
// The interleave's byte unpacks work within 128-bit lanes, so accumulator j lane L holds pixels
// 16 L + 4 j .. 16 L + 4 j + 3; a 4 x 4 transpose of 128-bit lanes puts them back in order before the store.
#include <ATen/Parallel.h>
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <vector>

#include "int_kernels.h"

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx512vbmi,avx2,fma,bmi,bmi2")

namespace wfn {
namespace {

constexpr int64_t kPix = 64;  // output pixels per task (four zmm of 16 dword lanes)

#define WFN_INL inline __attribute__((always_inline))

// Rows r0..r3 (64 int8 pixels each) -> four zmm of (r0, r1, r2, r3) byte quads per pixel, +128 each.
WFN_INL void interleave4(const int8_t* rows, uint8_t* out) {
  const __m512i flip = _mm512_set1_epi8(char(0x80));
  const __m512i a = _mm512_xor_si512(_mm512_loadu_si512(rows), flip);
  const __m512i b = _mm512_xor_si512(_mm512_loadu_si512(rows + kPix), flip);
  const __m512i c = _mm512_xor_si512(_mm512_loadu_si512(rows + 2 * kPix), flip);
  const __m512i d = _mm512_xor_si512(_mm512_loadu_si512(rows + 3 * kPix), flip);
  const __m512i ab_lo = _mm512_unpacklo_epi8(a, b), ab_hi = _mm512_unpackhi_epi8(a, b);
  const __m512i cd_lo = _mm512_unpacklo_epi8(c, d), cd_hi = _mm512_unpackhi_epi8(c, d);
  _mm512_storeu_si512(out, _mm512_unpacklo_epi16(ab_lo, cd_lo));
  _mm512_storeu_si512(out + 64, _mm512_unpackhi_epi16(ab_lo, cd_lo));
  _mm512_storeu_si512(out + 128, _mm512_unpacklo_epi16(ab_hi, cd_hi));
  _mm512_storeu_si512(out + 192, _mm512_unpackhi_epi16(ab_hi, cd_hi));
}

// A task's pixels as runs within one output row: pixels j0 .. j0 + len - 1 of the block are output row oh,
// columns ow .. ow + len - 1.
struct Run {
  int64_t j0, oh, ow, len;
};

// q[j] = clamp(round(v[j] * inv[j])), j < n: int_kernels_avx512.cpp's quantize16 per lane, inlined into the
// fused kernel's gather (exported below as quantize_span_avx512 for the columns path).
WFN_INL void quantize_run(const float* v, int64_t n, const float* inv, int8_t* q) {
  const __m512 lo = _mm512_set1_ps(-127.f), hi = _mm512_set1_ps(127.f);
  for (int64_t j = 0; j < n; j += 16) {
    const __mmask16 t = n - j >= 16 ? __mmask16(0xffff) : __mmask16((1u << (n - j)) - 1u);
    const __m512 r = _mm512_roundscale_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(t, v + j), _mm512_maskz_loadu_ps(t, inv + j)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    _mm_mask_storeu_epi8(q + j, t, _mm512_cvtsepi32_epi8(_mm512_cvtps_epi32(_mm512_min_ps(hi, _mm512_max_ps(lo, r)))));
  }
}

// The same for every second input value: q[j] from v[2 j] (stride-2 convs), two loads and one permute per
// 16 values; nothing past v[2 (n - 1)] is read.
WFN_INL void quantize_run_s2(const float* v, int64_t n, const float* inv, int8_t* q) {
  const __m512 lo = _mm512_set1_ps(-127.f), hi = _mm512_set1_ps(127.f);
  const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  for (int64_t j = 0; j < n; j += 16) {
    const int64_t left = n - j, avail = 2 * left - 1;  // readable values from v + 2 j
    const __mmask16 t = left >= 16 ? __mmask16(0xffff) : __mmask16((1u << left) - 1u);
    const __mmask16 m0 = avail >= 16 ? __mmask16(0xffff) : __mmask16((1u << avail) - 1u);
    const __mmask16 m1 = avail >= 32 ? __mmask16(0xffff) : avail <= 16 ? __mmask16(0) : __mmask16((1u << (avail - 16)) - 1u);
    const __m512 x = _mm512_permutex2var_ps(_mm512_maskz_loadu_ps(m0, v + 2 * j), even,
                                            _mm512_maskz_loadu_ps(m1, v + 2 * j + 16));
    const __m512 r = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_maskz_loadu_ps(t, inv + j)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    _mm_mask_storeu_epi8(q + j, t, _mm512_cvtsepi32_epi8(_mm512_cvtps_epi32(_mm512_min_ps(hi, _mm512_max_ps(lo, r)))));
  }
}

// Quantised im2col rows i0 .. i0 + 3 (zero past K) of the block into q4 (4 x 64 int8); (c, kh, kw) is row
// i0's position, advanced here.
void quantize_quad(const Int8ConvArgs& a, const float* image, const Run* runs, int nruns, const float* inv,
                   int64_t i0, int64_t (&pos)[3], int8_t* q4) {
  const ConvGeom& g = a.g;
  std::memset(q4, 0, 4 * kPix);
  float strided[kPix];
  for (int64_t r = 0; r < 4 && i0 + r < a.k; ++r) {
    const int64_t c = pos[0], kh = pos[1], kw = pos[2];
    if (++pos[2] == g.kw) {
      pos[2] = 0;
      if (++pos[1] == g.kh) pos[1] = 0, ++pos[0];
    }
    const float* plane = image + c * g.h * g.w;
    int8_t* qr = q4 + r * kPix;
    for (int u = 0; u < nruns; ++u) {
      const Run& ru = runs[u];
      const int64_t ih = ru.oh * g.sh + kh * g.dh - g.ph;
      if (ih < 0 || ih >= g.h) continue;
      const float* row = plane + ih * g.w;
      const int64_t base = ru.ow * g.sw + kw * g.dw - g.pw;  // input column of the run's first pixel
      if (g.sw == 1) {
        const int64_t jlo = std::min(ru.len, std::max<int64_t>(0, -base));
        const int64_t jhi = std::max(jlo, std::min(ru.len, g.w - base));
        quantize_run(row + base + jlo, jhi - jlo, inv + ru.j0 + jlo, qr + ru.j0 + jlo);
      } else if (g.sw == 2) {
        const int64_t jlo = std::min(ru.len, base >= 0 ? 0 : (1 - base) / 2);
        const int64_t jhi = std::max(jlo, std::min(ru.len, (g.w - base + 1) / 2));
        quantize_run_s2(row + base + 2 * jlo, jhi - jlo, inv + ru.j0 + jlo, qr + ru.j0 + jlo);
      } else {
        const ConvSpan sp = conv_input_span(g, ru.ow, ru.len, kw);
        for (int64_t e = sp.jlo; e < sp.jhi; ++e) strided[e - sp.jlo] = row[sp.base + e * g.sw];
        quantize_run(strided, sp.jhi - sp.jlo, inv + ru.j0 + sp.jlo, qr + ru.j0 + sp.jlo);
      }
    }
  }
}

// One weight dword broadcast and its four dot products (the block's four activation vectors), in one asm
// statement: with intrinsics GCC keeps the accumulators in a stack array and reloads / stores them on every
// step (as in panel_gemm_avx512.cpp).
#define WFN_DOT4(A0, A1, A2, A3, X0, X1, X2, X3, P)                                                        \
  do {                                                                                                   \
    __m512i t_;                                                                                          \
    asm("vpbroadcastd %[m], %[t]\n\tvpdpbusd %[t], %[x0], %[a0]\n\tvpdpbusd %[t], %[x1], %[a1]\n\t"        \
        "vpdpbusd %[t], %[x2], %[a2]\n\tvpdpbusd %[t], %[x3], %[a3]"                                      \
        : [a0] "+v"(A0), [a1] "+v"(A1), [a2] "+v"(A2), [a3] "+v"(A3), [t] "=&v"(t_)                      \
        : [x0] "v"(X0), [x1] "v"(X1), [x2] "v"(X2), [x3] "v"(X3), [m] "m"(*(P)));                        \
  } while (0)

// MR weight rows n0 .. n0 + MR - 1 over the task's activation block, rescaled into y. Accumulators as four
// arrays of MR vectors (one per activation vector), not one aggregate: GCC keeps the latter in memory.
template <int MR>
__attribute__((noinline)) void product_rows(const Int8ConvArgs& a, const uint8_t* act, int64_t kq, int64_t n0,
                                            int64_t bi, int64_t p0, int64_t width) {
  __m512i a0[MR], a1[MR], a2[MR], a3[MR];
  const int32_t* wrow[MR];
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r) {
    wrow[r] = reinterpret_cast<const int32_t*>(a.w + (n0 + r) * a.kp);
    a0[r] = a1[r] = a2[r] = a3[r] = _mm512_set1_epi32(a.comp[n0 + r]);
  }
  for (int64_t q = 0; q < kq; ++q) {
    const uint8_t* aq = act + q * 4 * kPix;
    const __m512i x0 = _mm512_loadu_si512(aq), x1 = _mm512_loadu_si512(aq + 64);
    const __m512i x2 = _mm512_loadu_si512(aq + 128), x3 = _mm512_loadu_si512(aq + 192);
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) WFN_DOT4(a0[r], a1[r], a2[r], a3[r], x0, x1, x2, x3, wrow[r] + q);
  }
  const int64_t l = a.g.oh * a.g.ow;
  const float* s = a.s + bi * l + p0;
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r) {
    // lanes back in pixel order (see the header)
    const __m512i t0 = _mm512_shuffle_i32x4(a0[r], a1[r], _MM_SHUFFLE(1, 0, 1, 0));
    const __m512i t1 = _mm512_shuffle_i32x4(a2[r], a3[r], _MM_SHUFFLE(1, 0, 1, 0));
    const __m512i t2 = _mm512_shuffle_i32x4(a0[r], a1[r], _MM_SHUFFLE(3, 2, 3, 2));
    const __m512i t3 = _mm512_shuffle_i32x4(a2[r], a3[r], _MM_SHUFFLE(3, 2, 3, 2));
    const __m512i o[4] = {_mm512_shuffle_i32x4(t0, t1, _MM_SHUFFLE(2, 0, 2, 0)),
                          _mm512_shuffle_i32x4(t0, t1, _MM_SHUFFLE(3, 1, 3, 1)),
                          _mm512_shuffle_i32x4(t2, t3, _MM_SHUFFLE(2, 0, 2, 0)),
                          _mm512_shuffle_i32x4(t2, t3, _MM_SHUFFLE(3, 1, 3, 1))};
    float* y = a.y + (bi * a.n + n0 + r) * l + p0;
    const __m512 bias = _mm512_set1_ps(a.bias != nullptr ? a.bias[n0 + r] : 0.f);
    for (int j = 0; j < 4 && 16 * j < width; ++j) {
      const int64_t left = width - 16 * j;
      const __mmask16 m = left >= 16 ? __mmask16(0xffff) : __mmask16((1u << left) - 1u);
      __m512 v = _mm512_mul_ps(_mm512_cvtepi32_ps(o[j]), _mm512_maskz_loadu_ps(m, s + 16 * j));
      if (a.bias != nullptr) {
        asm("" : "+v"(v));  // keep the multiply and the add apart (no FMA contraction): as the reference
        v = _mm512_add_ps(v, bias);
      }
      _mm512_mask_storeu_ps(y + 16 * j, m, v);
    }
  }
}

constexpr int kRows = 6;  // weight rows per micro-kernel call: 24 accumulators + 4 activations + 1 broadcast

void product_tail(int64_t rows, const Int8ConvArgs& a, const uint8_t* act, int64_t kq, int64_t n0, int64_t bi,
                  int64_t p0, int64_t width) {
  switch (rows) {
    case 1: product_rows<1>(a, act, kq, n0, bi, p0, width); break;
    case 2: product_rows<2>(a, act, kq, n0, bi, p0, width); break;
    case 3: product_rows<3>(a, act, kq, n0, bi, p0, width); break;
    case 4: product_rows<4>(a, act, kq, n0, bi, p0, width); break;
    default: product_rows<5>(a, act, kq, n0, bi, p0, width); break;
  }
}

}  // namespace

void quantize_span_avx512(const float* x, int64_t n, const float* inv, int8_t* q) { quantize_run(x, n, inv, q); }

void int8_row_sums_vnni(const int8_t* w, int64_t rows, int64_t ld, int32_t* out) {
  const __m512i ones = _mm512_set1_epi8(1);
  for (int64_t r = 0; r < rows; ++r) {
    const int8_t* wr = w + r * ld;
    __m512i acc = _mm512_setzero_si512();
    int64_t e = 0;
    for (; e + 64 <= ld; e += 64) acc = _mm512_dpbusd_epi32(acc, ones, _mm512_loadu_si512(wr + e));
    if (e < ld) acc = _mm512_dpbusd_epi32(acc, ones, _mm512_maskz_loadu_epi8(_bzhi_u64(~0ULL, unsigned(ld - e)), wr + e));
    out[r] = _mm512_reduce_add_epi32(acc);
  }
}

void int8_conv_vnni(const Int8ConvArgs& a) {
  const ConvGeom& g = a.g;
  const int64_t l = g.oh * g.ow, blocks = (l + kPix - 1) / kPix, kq = a.kp / 4, tiles = a.batch * blocks;
  const ConvWorkSplit split = conv_work_split(tiles, a.n, kRows, at::get_num_threads());
  const int64_t parts = split.parts, rows_per_part = split.rows_per_part;
  at::parallel_for(0, tiles * parts, 1, [&](int64_t lo, int64_t hi) {
    std::vector<uint8_t> act_buf(static_cast<size_t>(kq * 4 * kPix) + 64);
    uint8_t* act = act_buf.data();
    alignas(64) int8_t q4[4 * kPix];
    for (int64_t task = lo; task < hi; ++task) {
      const int64_t tile = task / parts, part = task % parts;
      const int64_t bi = tile / blocks, p0 = (tile % blocks) * kPix, width = std::min(kPix, l - p0);
      const int64_t r0 = part * rows_per_part, r1 = std::min(a.n, r0 + rows_per_part);
      if (r0 >= r1) continue;
      Run runs[kPix];
      int nruns = 0;
      for (int64_t j = 0; j < width;) {
        const int64_t px = p0 + j, ow = px % g.ow, len = std::min(width - j, g.ow - ow);
        runs[nruns++] = {j, px / g.ow, ow, len};
        j += len;
      }
      int64_t pos[3] = {0, 0, 0};  // (c, kh, kw) of the next im2col row
      const float* image = a.x + bi * g.c * g.h * g.w;
      for (int64_t q = 0; q < kq; ++q) {
        quantize_quad(a, image, runs, nruns, a.inv + bi * l + p0, 4 * q, pos, q4);
        interleave4(q4, act + q * 4 * kPix);
      }
      int64_t n0 = r0;
      for (; n0 + kRows <= r1; n0 += kRows) product_rows<kRows>(a, act, kq, n0, bi, p0, width);
      if (n0 < r1) product_tail(r1 - n0, a, act, kq, n0, bi, p0, width);
    }
  });
}


// ---------------------------------------------------------------------------------------------------
// channels_last (NHWC). A task takes kPixN consecutive output pixels of the flattened (B, OH, OW) space
// (blocks may span images: every pixel's im2col row is gathered on its own) and builds their quantised
// im2col rows, (kh, kw, c)-ordered so that a tap's C channels are one contiguous run of the input:
// act[r][(kh * KW + kw) * cp + c] = xq + 128 (u8; 128 where the tap is padding or c >= C). Weights are
// packed per group of 64 output channels (nb <= 4 vectors of 16): for K quad q, nb vectors of 16 dwords,
// dword i of vector j = the 4 weights of channel 64 g + 16 j + i at K positions 4 q .. 4 q + 3. The
// micro-kernel takes MR <= 6 pixels x nb vectors: per K quad, one broadcast activation dword per pixel and
// nb vpdpbusd (24 accumulators at 6 x 4), then y[pixel, channels] = float(acc) * s[pixel] + bias.
namespace {

constexpr int64_t kPixN = 48;  // output pixels per NHWC task (8 micro-kernel calls of 6)
constexpr int kRowsN = 6;

struct NhwcGeom {
  int64_t cp, taps, kn, kqn, np16, groups;
};
NhwcGeom nhwc_geom(const ConvGeom& g, int64_t n) {
  NhwcGeom r;
  r.cp = (g.c + 3) / 4 * 4;
  r.taps = g.kh * g.kw;
  r.kn = r.taps * r.cp;
  r.kqn = r.kn / 4;
  r.np16 = (n + 15) / 16 * 16;
  r.groups = (r.np16 + 63) / 64;
  return r;
}

// One broadcast activation dword (u8 x 4) against NB weight vectors (s8), in one asm statement (see WFN_DOT4).
#define WFN_BDOT1(A0, W0, P)                                                                             \
  do {                                                                                                   \
    __m512i t_;                                                                                          \
    asm("vpbroadcastd %[m], %[t]\n\tvpdpbusd %[w0], %[t], %[a0]"                                          \
        : [a0] "+v"(A0), [t] "=&v"(t_) : [w0] "v"(W0), [m] "m"(*(P)));                                   \
  } while (0)
#define WFN_BDOT2(A0, A1, W0, W1, P)                                                                     \
  do {                                                                                                   \
    __m512i t_;                                                                                          \
    asm("vpbroadcastd %[m], %[t]\n\tvpdpbusd %[w0], %[t], %[a0]\n\tvpdpbusd %[w1], %[t], %[a1]"            \
        : [a0] "+v"(A0), [a1] "+v"(A1), [t] "=&v"(t_) : [w0] "v"(W0), [w1] "v"(W1), [m] "m"(*(P)));      \
  } while (0)
#define WFN_BDOT3(A0, A1, A2, W0, W1, W2, P)                                                             \
  do {                                                                                                   \
    __m512i t_;                                                                                          \
    asm("vpbroadcastd %[m], %[t]\n\tvpdpbusd %[w0], %[t], %[a0]\n\tvpdpbusd %[w1], %[t], %[a1]\n\t"        \
        "vpdpbusd %[w2], %[t], %[a2]"                                                                    \
        : [a0] "+v"(A0), [a1] "+v"(A1), [a2] "+v"(A2), [t] "=&v"(t_)                                     \
        : [w0] "v"(W0), [w1] "v"(W1), [w2] "v"(W2), [m] "m"(*(P)));                                      \
  } while (0)
#define WFN_BDOT4(A0, A1, A2, A3, W0, W1, W2, W3, P)                                                     \
  do {                                                                                                   \
    __m512i t_;                                                                                          \
    asm("vpbroadcastd %[m], %[t]\n\tvpdpbusd %[w0], %[t], %[a0]\n\tvpdpbusd %[w1], %[t], %[a1]\n\t"        \
        "vpdpbusd %[w2], %[t], %[a2]\n\tvpdpbusd %[w3], %[t], %[a3]"                                      \
        : [a0] "+v"(A0), [a1] "+v"(A1), [a2] "+v"(A2), [a3] "+v"(A3), [t] "=&v"(t_)                      \
        : [w0] "v"(W0), [w1] "v"(W1), [w2] "v"(W2), [w3] "v"(W3), [m] "m"(*(P)));                        \
  } while (0)

struct NhwcCall {
  const uint8_t* act;  // pixel 0's im2col row; pixel r at act + r * kn
  int64_t kn, kqn;
  const int8_t* wg;    // the channel group's packed weights
  const int32_t* comp; // the group's 64 compensations (-128 * row sum; 0 past n)
  const float* s;      // pixel 0's output scale
  const float* bias;   // the group's first bias, or nullptr
  float* y;            // pixel 0's first output of the group
  int64_t ldy, nvalid; // NHWC row stride (n); valid channels of the group (<= 16 NB)
  const float* post_scale;  // the group's first epilogue scale / shift, or nullptr (Int8ConvNhwcArgs)
  const float* post_shift;
  bool relu;
};

template <int MR, int NB>
__attribute__((noinline)) void nhwc_rows(const NhwcCall& c) {
  __m512i a0[MR], a1[MR], a2[MR], a3[MR];
  const int32_t* arow[MR];
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r) {
    arow[r] = reinterpret_cast<const int32_t*>(c.act + r * c.kn);
    a0[r] = _mm512_loadu_si512(c.comp);
    if (NB > 1) a1[r] = _mm512_loadu_si512(c.comp + 16);
    if (NB > 2) a2[r] = _mm512_loadu_si512(c.comp + 32);
    if (NB > 3) a3[r] = _mm512_loadu_si512(c.comp + 48);
  }
  const int8_t* wq = c.wg;
  for (int64_t q = 0; q < c.kqn; ++q, wq += 64 * NB) {
    const __m512i w0 = _mm512_loadu_si512(wq);
    if constexpr (NB == 1) {
#pragma GCC unroll 8
      for (int r = 0; r < MR; ++r) WFN_BDOT1(a0[r], w0, arow[r] + q);
    } else if constexpr (NB == 2) {
      const __m512i w1 = _mm512_loadu_si512(wq + 64);
#pragma GCC unroll 8
      for (int r = 0; r < MR; ++r) WFN_BDOT2(a0[r], a1[r], w0, w1, arow[r] + q);
    } else if constexpr (NB == 3) {
      const __m512i w1 = _mm512_loadu_si512(wq + 64), w2 = _mm512_loadu_si512(wq + 128);
#pragma GCC unroll 8
      for (int r = 0; r < MR; ++r) WFN_BDOT3(a0[r], a1[r], a2[r], w0, w1, w2, arow[r] + q);
    } else {
      const __m512i w1 = _mm512_loadu_si512(wq + 64), w2 = _mm512_loadu_si512(wq + 128);
      const __m512i w3 = _mm512_loadu_si512(wq + 192);
#pragma GCC unroll 8
      for (int r = 0; r < MR; ++r) WFN_BDOT4(a0[r], a1[r], a2[r], a3[r], w0, w1, w2, w3, arow[r] + q);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r) {
    const __m512 sv = _mm512_set1_ps(c.s[r]);
    const __m512i acc[4] = {a0[r], NB > 1 ? a1[r] : a0[r], NB > 2 ? a2[r] : a0[r], NB > 3 ? a3[r] : a0[r]};
    float* y = c.y + r * c.ldy;
#pragma GCC unroll 4
    for (int j = 0; j < NB; ++j) {
      const int64_t left = c.nvalid - 16 * j;
      if (left <= 0) break;
      const __mmask16 m = left >= 16 ? __mmask16(0xffff) : __mmask16((1u << left) - 1u);
      __m512 v = _mm512_mul_ps(_mm512_cvtepi32_ps(acc[j]), sv);
      if (c.bias != nullptr) {
        asm("" : "+v"(v));  // no FMA contraction: rescale, then add (as the reference)
        v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, c.bias + 16 * j));
      }
      if (c.post_scale != nullptr) {  // folded BatchNorm: multiply, then add (two roundings)
        v = _mm512_mul_ps(v, _mm512_maskz_loadu_ps(m, c.post_scale + 16 * j));
        asm("" : "+v"(v));
        v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, c.post_shift + 16 * j));
      }
      if (c.relu) v = _mm512_max_ps(_mm512_setzero_ps(), v);  // max(0, NaN) is NaN (the second operand)
      _mm512_mask_storeu_ps(y + 16 * j, m, v);
    }
  }
}

using NhwcFn = void (*)(const NhwcCall&);
#define WFN_NHWC_ROW(MR) {&nhwc_rows<MR, 1>, &nhwc_rows<MR, 2>, &nhwc_rows<MR, 3>, &nhwc_rows<MR, 4>}
const NhwcFn kNhwcFns[6][4] = {WFN_NHWC_ROW(1), WFN_NHWC_ROW(2), WFN_NHWC_ROW(3),
                               WFN_NHWC_ROW(4), WFN_NHWC_ROW(5), WFN_NHWC_ROW(6)};
#undef WFN_NHWC_ROW

// dst[0 .. n) = quantised v[0 .. c) + 128 as u8 (128 from c on): a run of one pixel's channels-contiguous
// input. round(v * inv) with the conversion's own round-to-nearest-even; no clamp is needed: |v| <= amax of
// the pixel's receptive field, so |v * inv| <= 127 (1 + 2^-22) rounds into [-127, 127]. (A pixel whose field
// holds NaN / Inf gets NaN outputs whatever its bytes.)
WFN_INL void quantize_run_u8(const float* v, int64_t c, int64_t n, __m512 inv, uint8_t* dst) {
  const __m128i flip = _mm_set1_epi8(char(0x80));
  int64_t j = 0;
  // 64 values at a time: four conversions packed by vpackssdw / vpacksswb (saturating like vpmovsdb, so the
  // bytes are the same), which leaves lane i holding values 4 i .. 4 i + 3 of each vector; one vpermd puts
  // the dwords back in order
  const __m512i order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
  const __m512i flip64 = _mm512_set1_epi8(char(0x80));
  for (; j + 64 <= c; j += 64) {
    __m512i r[4];
#pragma GCC unroll 4
    for (int e = 0; e < 4; ++e)
      r[e] = _mm512_cvt_roundps_epi32(_mm512_mul_ps(_mm512_loadu_ps(v + j + 16 * e), inv),
                                      _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m512i b = _mm512_packs_epi16(_mm512_packs_epi32(r[0], r[1]), _mm512_packs_epi32(r[2], r[3]));
    _mm512_storeu_si512(dst + j, _mm512_xor_si512(_mm512_permutexvar_epi32(order, b), flip64));
  }
  for (; j + 16 <= c; j += 16) {
    const __m512i r = _mm512_cvt_roundps_epi32(_mm512_mul_ps(_mm512_loadu_ps(v + j), inv),
                                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + j), _mm_xor_si128(_mm512_cvtsepi32_epi8(r), flip));
  }
  for (; j < n; j += 16) {
    const int64_t left = c - j, room = n - j;
    const __mmask16 t = left >= 16 ? __mmask16(0xffff) : left <= 0 ? __mmask16(0) : __mmask16((1u << left) - 1u);
    const __mmask16 st = room >= 16 ? __mmask16(0xffff) : __mmask16((1u << room) - 1u);
    const __m512i r = _mm512_cvt_roundps_epi32(_mm512_mul_ps(_mm512_maskz_loadu_ps(t, v + j), inv),
                                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    _mm_mask_storeu_epi8(dst + j, st, _mm_xor_si128(_mm512_cvtsepi32_epi8(r), flip));  // masked-off lanes -> 128
  }
}

// The same for n <= 64 values, returned in one register (bytes past n undefined): building it in memory
// with masked stores and reloading it stalls on store forwarding.
WFN_INL __m512i quantize_64_u8(const float* v, int64_t n, __m512 inv) {
  __m128i q[4];
#pragma GCC unroll 4
  for (int j = 0; j < 4; ++j) {
    const int64_t left = n - 16 * j;
    if (left <= 0) {  // no load at all (an all-masked load can still be slow where it would cross a page)
      q[j] = _mm_setzero_si128();
      continue;
    }
    const __mmask16 t = left >= 16 ? __mmask16(0xffff) : __mmask16((1u << left) - 1u);
    q[j] = _mm512_cvtsepi32_epi8(_mm512_cvt_roundps_epi32(_mm512_mul_ps(_mm512_maskz_loadu_ps(t, v + 16 * j), inv),
                                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  }
  const __m512i lo = _mm512_inserti32x4(_mm512_castsi128_si512(q[0]), q[1], 1);
  const __m512i r = _mm512_inserti32x4(_mm512_inserti32x4(lo, q[2], 2), q[3], 3);
  return _mm512_xor_si512(r, _mm512_set1_epi8(char(0x80)));
}

// Row [C][T] -> [T][C] byte transpose of one decoded weight row (C % 64 == 0), 64 channels at a time: the
// block's 64 T bytes are T vectors; output vector t (channels c0 .. c0 + 63 at tap t) takes byte c from
// input byte c T + t, drawn from vector pairs (2 p, 2 p + 1) by vpermt2b under precomputed masks.
struct TapTranspose {
  int64_t taps, pairs;
  std::vector<uint8_t> idx;      // (taps, pairs) vectors of 64 byte indices
  std::vector<__mmask64> mask;   // (taps, pairs)
  explicit TapTranspose(int64_t t) : taps(t), pairs((t + 1) / 2), idx(size_t(64 * t * pairs)), mask(size_t(t * pairs), 0) {
    for (int64_t tap = 0; tap < taps; ++tap)
      for (int64_t p = 0; p < pairs; ++p) {
        uint8_t* b = idx.data() + 64 * (tap * pairs + p);
        __mmask64 m = 0;
        for (int c = 0; c < 64; ++c) {
          const int64_t src = c * taps + tap - 128 * p;  // byte within the pair
          b[c] = uint8_t(src >= 0 && src < 128 ? src : 0);
          if (src >= 0 && src < 128 && 128 * p + src < 64 * taps) m |= __mmask64(1) << c;
        }
        mask[size_t(tap * pairs + p)] = m;
      }
  }
  // in: 64 channels x taps bytes; out: taps rows of 64 bytes, ld apart
  void run(const int8_t* in, int8_t* out, int64_t ld) const {
    for (int64_t tap = 0; tap < taps; ++tap) {
      __m512i r = _mm512_setzero_si512();
      for (int64_t p = 0; p < pairs; ++p) {
        const __m512i lo = _mm512_loadu_si512(in + 128 * p);
        const __m512i hi = 2 * p + 1 < taps ? _mm512_loadu_si512(in + 128 * p + 64) : lo;
        const size_t e = size_t(tap * pairs + p);
        r = _mm512_mask_blend_epi8(mask[e], r, _mm512_permutex2var_epi8(lo, _mm512_loadu_si512(idx.data() + 64 * e), hi));
      }
      _mm512_storeu_si512(out + tap * ld, r);
    }
  }
};

// Weights of output channels 16 j .. 16 j + 15 into the packed layout (see above), and their compensations:
// decode 16 rows (canonical (c, kh, kw) order), reorder each to (kh, kw, c) with C padded to cp (tmp2), then
// gather each K quad's 16 dwords (one per row) into one vector.
void pack_nhwc_block(const Int8ConvNhwcArgs& a, const NhwcGeom& h, const TapTranspose* tt, int64_t j, int8_t* tmp,
                     int8_t* tmp2, int64_t kp) {
  const ConvGeom& g = a.g;
  const int64_t r0 = 16 * j, rows = std::min<int64_t>(16, a.n - r0);
  const int64_t gi = j / 4, jj = j % 4, nbg = std::min<int64_t>(4, h.np16 / 16 - 4 * gi);
  int8_t* wg = a.wpk + gi * 256 * h.kqn;
  int32_t* comp = reinterpret_cast<int32_t*>(a.wpk + h.np16 * h.kn) + r0;
  if (rows < 16) std::memset(tmp + rows * kp, 0, size_t((16 - rows) * kp));
  int8_decode_rows_avx512(a.packed, a.row_bytes, a.k, a.bits, a.table8, r0, r0 + rows, tmp, kp);
  int8_row_sums_vnni(tmp, 16, kp, comp);
  for (int i = 0; i < 16; ++i) comp[i] *= -128;
  const int8_t* src = tmp;  // rows of h.kn bytes in (kh, kw, c) order
  int64_t ld = kp;
  if (h.taps > 1) {
    src = tmp2;
    ld = h.kn;
    for (int i = 0; i < 16; ++i) {
      const int8_t* row = tmp + i * kp;
      int8_t* out = tmp2 + i * h.kn;
      if (tt != nullptr) {
        for (int64_t c0 = 0; c0 < g.c; c0 += 64) tt->run(row + c0 * h.taps, out + c0, h.cp);
      } else {
        for (int64_t tap = 0; tap < h.taps; ++tap)
          for (int64_t c = 0; c < h.cp; ++c) out[tap * h.cp + c] = c < g.c ? row[c * h.taps + tap] : int8_t(0);
      }
    }
  }  // taps == 1: (c) order is already (kh, kw, c), and kp == cp
  const __m512i rowoff = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                            _mm512_set1_epi32(int32_t(ld)));
  for (int64_t q = 0; q < h.kqn; ++q)
    _mm512_storeu_si512(wg + (q * nbg + jj) * 64, _mm512_i32gather_epi32(rowoff, src + 4 * q, 1));
}

}  // namespace

int64_t int8_conv_nhwc_workspace_bytes(const ConvGeom& g, int64_t n) {
  const NhwcGeom h = nhwc_geom(g, n);
  return h.np16 * h.kn + 4 * h.np16;  // packed weights, then the compensations (int32)
}

void absmax_pixels_avx512(const float* x, int64_t pixels, int64_t c, float* am) {
  const __m512 inf = _mm512_set1_ps(std::numeric_limits<float>::infinity());
  const __m512i abs_mask = _mm512_set1_epi32(0x7fffffff);
  if (c < 16) {  // few channels (an RGB input): scalar beats a masked vector and its reduction
    const float big = std::numeric_limits<float>::max(), finf = std::numeric_limits<float>::infinity();
    for (int64_t p = 0; p < pixels; ++p) {
      float m = 0.f;
      for (int64_t j = 0; j < c; ++j) {
        float v = std::fabs(x[p * c + j]);
        v = v <= big ? v : finf;  // NaN -> Inf
        m = m > v ? m : v;
      }
      am[p] = m;
    }
    return;
  }
  for (int64_t p = 0; p < pixels; ++p) {
    const float* xp = x + p * c;
    __m512 m = _mm512_setzero_ps();
    for (int64_t j = 0; j < c; j += 16) {
      const __mmask16 t = c - j >= 16 ? __mmask16(0xffff) : __mmask16((1u << (c - j)) - 1u);
      __m512 v = _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(_mm512_maskz_loadu_ps(t, xp + j)), abs_mask));
      v = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q), v, inf);  // NaN -> Inf
      m = _mm512_max_ps(m, v);
    }
    am[p] = _mm512_reduce_max_ps(m);
  }
}

void int8_conv_nhwc_vnni(const Int8ConvNhwcArgs& a) {
  const ConvGeom& g = a.g;
  const NhwcGeom h = nhwc_geom(g, a.n);
  const int64_t kp = (a.k + 3) / 4 * 4;
  std::unique_ptr<TapTranspose> tt;
  if (h.taps > 1 && g.c % 64 == 0) tt = std::make_unique<TapTranspose>(h.taps);
  at::parallel_for(0, h.np16 / 16, 1, [&](int64_t lo, int64_t hi) {
    std::vector<int8_t> tmp(size_t(16 * kp) + 64), tmp2(size_t(16 * h.kn) + 64);
    for (int64_t j = lo; j < hi; ++j) pack_nhwc_block(a, h, tt.get(), j, tmp.data(), tmp2.data(), kp);
  });
  const int32_t* comp = reinterpret_cast<const int32_t*>(a.wpk + h.np16 * h.kn);
  // Small C (cp != C, a row of kernel taps within 64 bytes, dilation 1; e.g. an RGB stem): per (kw0, kw1),
  // byte t cp + c of the row is byte (t - kw0) C + c of the quantised run of taps kw0 .. kw1 - 1, and 128
  // (zero) for padding channels c >= C and for taps outside [kw0, kw1).
  const bool small_c = g.dw == 1 && h.cp != g.c && g.kw * h.cp <= 64;
  std::vector<uint8_t> spread_idx;
  std::vector<__mmask64> spread_keep;
  if (small_c) {
    spread_idx.assign(size_t(64 * (g.kw + 1) * (g.kw + 1)), 0);
    spread_keep.assign(size_t((g.kw + 1) * (g.kw + 1)), 0);
    for (int64_t k0 = 0; k0 <= g.kw; ++k0)
      for (int64_t k1 = k0; k1 <= g.kw; ++k1) {
        const size_t e = size_t(k0 * (g.kw + 1) + k1);
        for (int64_t t = k0; t < k1; ++t)
          for (int64_t c = 0; c < g.c; ++c) {
            spread_idx[64 * e + size_t(t * h.cp + c)] = uint8_t((t - k0) * g.c + c);
            spread_keep[e] |= __mmask64(1) << (t * h.cp + c);
          }
      }
  }
  // Pixel blocks of at most kPixN, all about the same size (49 pixels: 30 + 19, not 48 + 1); with few blocks
  // per thread the channel groups are split too (each part quantises its own copy of the block), so that
  // every thread gets a similar share.
  const int64_t l = g.oh * g.ow, total = a.batch * l;
  const int64_t nblk = (total + kPixN - 1) / kPixN;
  const int64_t blk = std::min(kPixN, ((total + nblk - 1) / nblk + kRowsN - 1) / kRowsN * kRowsN);
  const int64_t tasks = (total + blk - 1) / blk;
  const int64_t threads = at::get_num_threads();
  const int64_t parts = threads == 1 || tasks >= 8 * threads ? 1 : std::min(h.groups, (8 * threads + tasks - 1) / tasks);
  const int64_t per_part = (h.groups + parts - 1) / parts;
  at::parallel_for(0, tasks * parts, 1, [&](int64_t lo, int64_t hi) {
    std::vector<uint8_t> act_buf(size_t(kPixN * h.kn) + 64);
    uint8_t* act = act_buf.data();
    const __m512i pad128 = _mm512_set1_epi8(char(0x80));
    for (int64_t task = lo; task < hi; ++task) {
      const int64_t tp = task / parts, part = task % parts;
      const int64_t g0 = part * per_part, g1 = std::min(h.groups, g0 + per_part);
      if (g0 >= g1) continue;
      const int64_t p0 = tp * blk, width = std::min(blk, total - p0);
      int64_t bi = p0 / l, oh = (p0 % l) / g.ow, ow = p0 % g.ow;  // advanced per pixel (no divisions)
      for (int64_t r = 0; r < width; ++r) {
        const __m512 inv = _mm512_set1_ps(a.inv[p0 + r]);
        uint8_t* ar = act + r * h.kn;
        const int64_t iw0 = ow * g.sw - g.pw;
        // kernel columns [kw0, kw1) read inside the row
        int64_t kw0, kw1;
        if (g.dw == 1) {
          kw0 = std::min(g.kw, std::max<int64_t>(0, -iw0));
          kw1 = std::max(kw0, std::min(g.kw, g.w - iw0));
        } else {
          kw0 = std::min(g.kw, iw0 >= 0 ? 0 : (-iw0 + g.dw - 1) / g.dw);
          kw1 = std::max(kw0, std::min(g.kw, iw0 >= g.w ? 0 : (g.w - iw0 + g.dw - 1) / g.dw));
        }
        const int64_t row_bytes = g.kw * h.cp;
        for (int64_t kh = 0; kh < g.kh; ++kh) {
          const int64_t ih = oh * g.sh + kh * g.dh - g.ph;
          uint8_t* dst = ar + kh * row_bytes;
          if (ih < 0 || ih >= g.h) {
            std::memset(dst, 128, size_t(row_bytes));
            continue;
          }
          const float* src = a.x + ((bi * g.h + ih) * g.w + iw0) * g.c;
          if (small_c) {  // the row's taps in one quantise, spread to cp bytes per tap (128 outside) by one vpermb
            const __m512i run = quantize_64_u8(src + kw0 * g.c, (kw1 - kw0) * g.c, inv);
            const size_t e = size_t(kw0 * (g.kw + 1) + kw1);
            _mm512_mask_storeu_epi8(dst, _bzhi_u64(~0ULL, unsigned(row_bytes)),
                                    _mm512_mask_permutexvar_epi8(pad128, spread_keep[e],
                                                                 _mm512_loadu_si512(spread_idx.data() + 64 * e), run));
            continue;
          }
          if (kw0 > 0) std::memset(dst, 128, size_t(kw0 * h.cp));
          if (kw1 < g.kw) std::memset(dst + kw1 * h.cp, 128, size_t((g.kw - kw1) * h.cp));
          if (g.dw == 1 && h.cp == g.c) {  // the taps are one run of the input
            const int64_t len = (kw1 - kw0) * g.c;
            quantize_run_u8(src + kw0 * g.c, len, len, inv, dst + kw0 * h.cp);
          } else {
            for (int64_t kw = kw0; kw < kw1; ++kw)
              quantize_run_u8(src + kw * g.dw * g.c, g.c, h.cp, inv, dst + kw * h.cp);
          }
        }
        if (++ow == g.ow) {
          ow = 0;
          if (++oh == g.oh) oh = 0, ++bi;
        }
      }
      for (int64_t gi = g0; gi < g1; ++gi) {
        const int64_t nbg = std::min<int64_t>(4, h.np16 / 16 - 4 * gi);
        for (int64_t r0 = 0; r0 < width; r0 += kRowsN) {
          const int64_t mr = std::min<int64_t>(kRowsN, width - r0);
          const NhwcCall c{act + r0 * h.kn, h.kn, h.kqn, a.wpk + gi * 256 * h.kqn, comp + 64 * gi,
                           a.s + p0 + r0, a.bias != nullptr ? a.bias + 64 * gi : nullptr,
                           a.y + (p0 + r0) * a.n + 64 * gi, a.n, std::min<int64_t>(64, a.n - 64 * gi),
                           a.post_scale != nullptr ? a.post_scale + 64 * gi : nullptr,
                           a.post_shift != nullptr ? a.post_shift + 64 * gi : nullptr, a.relu};
          kNhwcFns[mr - 1][nbg - 1](c);
        }
      }
    }
  });
}

}  // namespace wfn

#pragma GCC pop_options
