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
#include <cstdint>
#include <cstring>
#include <vector>

#include "int_kernels.h"

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,bmi,bmi2")

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
  // Few pixel blocks (batch 1, late layers: one 7x7 image is one block) would leave threads idle: then the
  // weight rows are split too, each part quantising its own copy of the block.
  const int64_t threads = at::get_num_threads();
  const int64_t max_parts = std::max<int64_t>(1, a.n / (4 * kRows));
  const int64_t parts =
      threads == 1 || tiles >= 2 * threads ? 1 : std::min(max_parts, (2 * threads + tiles - 1) / tiles);
  const int64_t rows_per_part = (a.n / parts + kRows - 1) / kRows * kRows;
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

}  // namespace wfn

#pragma GCC pop_options
