// The int8 mode's convolution on AVX2 CPUs without int8 dot-product instructions (no VNNI, no AMX-INT8):
// the fused NCHW kernel of conv_int8_avx512.cpp rebuilt on vpmaddubsw, so the exact integer product runs
// on the integer multipliers instead of the fp32 GEMM (int_gemm_fp32.cpp) or oneDNN's generic int8 GEMM.
//
// Per task (one image, 32 consecutive output pixels p0 .. p0 + 31 of its OH x OW plane):
//  1. Gather + quantise: im2col rows (c, kh, kw) of the block, each pixel's value fetched by a masked
//     vgatherdps through a per-task map of input offsets per kernel tap (the same for every channel, so no
//     bounds test and no division per row; padding reads nothing and gives 0), quantised with each
//     pixel's own scale, four rows at a time, interleaved in registers into act[i / 4] as 32 dwords (4
//     consecutive K values of one pixel). Activations stay signed: xq in [-127, 127].
//  2. Product: for 4 weight rows at a time and 16 pixels (two vectors of 8 dwords), per K quad one
//     broadcast weight dword w and its |w| (stored beside the weights: a.w holds n rows of w, then n rows of
//     |w| as unsigned bytes) and, per vector, vpmaddubsw(|w|, sign(w) * x) (vpsignb) then
//     vpmaddwd with ones into int32. Exact: a byte pair sums to at most 2 * 128 * 127 < 2^15, so the int16
//     step never saturates, for every int8 weight including -128 (|w| = 128 as an unsigned byte).
//  3. Rescale: y = float(acc) * s[pixel] + bias, two roundings as the reference (this file is compiled
//     without FMA, so nothing is contracted), then the optional folded-BatchNorm affine and ReLU, stored
//     straight into y[b, n, p0 ..].
// int16 weights (a layer whose integer table does not fit int8, as in models fixed with the paper's
// settings) take int16_conv_avx2 below: the same tasks, gather and rescale, activation pairs as int16 and
// vpmaddwd against a broadcast weight pair, exact without the vpsignb step.
// The interleave's unpacks work within 128-bit lanes: vector j holds pixels 4 j .. 4 j + 3 in its low lane
// and 16 + 4 j .. 16 + 4 j + 3 in its high one, so vectors (2 h, 2 h + 1) hold pixels 8 h .. 8 h + 7 and
// 16 + 8 h .. 16 + 8 h + 7, put back in order by one vperm2i128 each.
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

constexpr int64_t kPix = 32;  // output pixels per task (four ymm of 8 dword lanes)
constexpr int kRows = 4;      // weight rows per micro-kernel call: 8 accumulators + 2 activations + temps

#define WFN_INL3 inline __attribute__((always_inline))

// Lanes i < n set (n in 0 .. 8), as the mask operand of vmaskmov.
WFN_INL3 __m256i lanes(int64_t n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(int32_t(n)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

// A task's gather map, the same for every input channel: for kernel tap t = (kh, kw) and block pixel j,
// off[t * 32 + j] = the input element (ih * W + iw) of the channel plane that pixel reads, and valid[t * 32 +
// j] = -1 where it lies inside the image and the pixel inside the block (else 0: the gather reads nothing
// and the value is 0, as the zero padding).
// dense[t * 4 + v] = 1 where vector v's 8 pixels read 8 consecutive elements, all inside (a stride-1 run
// within one output row): one plain load instead of the gather; 2 where they read every second element
// of 16 that lie inside the plane (a stride-2 run): two loads and a shuffle. With stride 1 and some lanes
// outside (padding, block end): 3 where the block's pixels of the vector lie in one output row (one masked
// load, vmaskmovps reads nothing where masked), 8 + s where they start a new output row at lane s (two
// masked loads, lanes < s and >= s, each a run of consecutive elements). Else 0: the gather. On Zen 3 the
// gathers took half the time of a 16 -> 32 channel 3x3 conv (28 x 28, batch 64); the masked loads took
// min-of-25 times from 7.7 to 7.2 ms there, 4.1 to 3.3 ms at 32 -> 32 channels on 14 x 14, and 8.6 to 7.9
// ms at 256 -> 256 on 14 x 14 (batch 4); about 1 % at 56 x 56, where few vectors touch the padding.
// (The masked lanes' addresses may lie outside the plane; vmaskmovps does not touch them.)
struct TapMap {
  std::vector<int32_t> off, valid;
  std::vector<uint8_t> dense;
  int64_t p0 = -1, width = -1;  // the block it was built for (blocks at the same p0 of other images share it)
  // Separable: a pixel's offset for tap (kh, kw) is its base (ih0 * W + iw0) plus kh * dh * W + kw * dw, and
  // it is inside where ih0 + kh * dh and iw0 + kw * dw both are; so per tap one add and one AND over the 32
  // lanes (loops the compiler vectorises), no branch per (pixel, tap).
  void build(const ConvGeom& g, int64_t block_p0, int64_t block_width) {
    if (block_p0 == p0 && block_width == width) return;
    p0 = block_p0, width = block_width;
    const int64_t taps = g.kh * g.kw;
    off.resize(size_t(taps * kPix));
    valid.resize(size_t(taps * kPix));
    dense.resize(size_t(taps * 4));
    int32_t base[kPix], ih0[kPix], iw0[kPix], inblock[kPix];
    bool run[4];   // vector v's 8 pixels: all in the block, one output row, consecutive columns
    int split[4];  // the lane where vector v's block pixels start a new output row (0: none; -1: two rows start)
    int64_t oh = p0 / g.ow, ow = p0 % g.ow;
    for (int64_t j = 0; j < kPix; ++j) {
      if (j % 8 == 0) run[j / 8] = j + 8 <= width && ow + 8 <= g.ow, split[j / 8] = 0;
      if (ow == 0 && j % 8 != 0 && j < width) split[j / 8] = split[j / 8] == 0 ? int(j % 8) : -1;
      ih0[j] = int32_t(oh * g.sh - g.ph);
      iw0[j] = int32_t(ow * g.sw - g.pw);
      base[j] = int32_t(ih0[j] * g.w + iw0[j]);
      inblock[j] = j < width ? -1 : 0;
      if (++ow == g.ow) ow = 0, ++oh;
    }
    const int32_t h = int32_t(g.h), w = int32_t(g.w), hw = int32_t(g.h * g.w);
    for (int64_t kh = 0, t = 0; kh < g.kh; ++kh) {
      const int32_t dh = int32_t(kh * g.dh);
      int32_t rowok[kPix];
      for (int j = 0; j < kPix; ++j) rowok[j] = inblock[j] & -int32_t(uint32_t(ih0[j] + dh) < uint32_t(h));
      for (int64_t kw = 0; kw < g.kw; ++kw, ++t) {
        const int32_t dw = int32_t(kw * g.dw), shift = dh * w + dw;
        int32_t* o = off.data() + t * kPix;
        int32_t* ok = valid.data() + t * kPix;
        for (int j = 0; j < kPix; ++j) {
          o[j] = base[j] + shift;
          ok[j] = rowok[j] & -int32_t(uint32_t(iw0[j] + dw) < uint32_t(w));
        }
        for (int v = 0; v < 4; ++v) {
          bool all = run[v];
          for (int j = 8 * v; j < 8 * v + 8; ++j) all = all && ok[j] != 0;
          uint8_t d = !all ? 0 : g.sw == 1 ? 1 : g.sw == 2 && o[8 * v] + 16 <= hw ? 2 : 0;
          if (d == 0 && g.sw == 1 && split[v] >= 0) d = uint8_t(split[v] == 0 ? 3 : 8 + split[v]);
          dense[size_t(t * 4 + v)] = d;
        }
      }
    }
  }
};

// 8 pixels' values of one im2col row, quantised: clamp(round_half_even(v * inv), -127, 127) as the scalar
// definition (a masked-off lane reads nothing and gives 0).
WFN_INL3 __m256i quantize8(const float* plane, const int32_t* off, const int32_t* valid, int dense, __m256 inv) {
  __m256 v;
  if (dense == 1) {
    v = _mm256_loadu_ps(plane + off[0]);
  } else if (dense == 2) {  // elements 0, 2, .., 14 of 16: per lane evens of (lo, hi), then lanes in order
    const __m256 lo = _mm256_loadu_ps(plane + off[0]), hi = _mm256_loadu_ps(plane + off[0] + 8);
    v = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(lo, hi, 0x88)), 0xd8));
  } else if (dense == 3) {  // one run of consecutive elements, masked lanes read nothing
    v = _mm256_maskload_ps(plane + off[0], _mm256_loadu_si256(reinterpret_cast<const __m256i*>(valid)));
  } else if (dense >= 8) {  // a run in each of two output rows: lanes < s from off[0], lanes >= s from off[s]
    const int sp = dense - 8;
    const __m256i m = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(valid));
    const __m256i first = lanes(sp);
    v = _mm256_or_ps(_mm256_maskload_ps(plane + off[0], _mm256_and_si256(m, first)),
                     _mm256_maskload_ps(plane + (off[sp] - sp), _mm256_andnot_si256(first, m)));
  } else {
    const __m256i idx = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(off));
    const __m256 m = _mm256_castsi256_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(valid)));
    v = _mm256_mask_i32gather_ps(_mm256_setzero_ps(), plane, idx, m, 4);
  }
  const __m256 r = _mm256_round_ps(_mm256_mul_ps(v, inv), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  return _mm256_cvtps_epi32(_mm256_min_ps(_mm256_set1_ps(127.f), _mm256_max_ps(_mm256_set1_ps(-127.f), r)));
}

// One im2col row (channel plane, tap t) of the block's 32 pixels as 32 int8 in pixel order: the packs
// interleave 128-bit lanes, one vpermd restores the order.
WFN_INL3 __m256i quantize_row(const float* plane, const TapMap& tm, int64_t t, const __m256 (&inv)[4]) {
  const int32_t* off = tm.off.data() + t * kPix;
  const int32_t* valid = tm.valid.data() + t * kPix;
  const uint8_t* dense = tm.dense.data() + t * 4;
  const __m256i a = quantize8(plane, off, valid, dense[0], inv[0]);
  const __m256i b = quantize8(plane, off + 8, valid + 8, dense[1], inv[1]);
  const __m256i c = quantize8(plane, off + 16, valid + 16, dense[2], inv[2]);
  const __m256i d = quantize8(plane, off + 24, valid + 24, dense[3], inv[3]);
  const __m256i ab = _mm256_packs_epi32(a, b), cd = _mm256_packs_epi32(c, d);
  return _mm256_permutevar8x32_epi32(_mm256_packs_epi16(ab, cd), _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

// Rows a..d (32 int8 pixels each) -> four ymm of (a, b, c, d) byte quads per pixel (lane order above).
WFN_INL3 void interleave4(__m256i a, __m256i b, __m256i c, __m256i d, int8_t* out) {
  const __m256i ab_lo = _mm256_unpacklo_epi8(a, b), ab_hi = _mm256_unpackhi_epi8(a, b);
  const __m256i cd_lo = _mm256_unpacklo_epi8(c, d), cd_hi = _mm256_unpackhi_epi8(c, d);
  __m256i* o = reinterpret_cast<__m256i*>(out);
  _mm256_storeu_si256(o, _mm256_unpacklo_epi16(ab_lo, cd_lo));
  _mm256_storeu_si256(o + 1, _mm256_unpackhi_epi16(ab_lo, cd_lo));
  _mm256_storeu_si256(o + 2, _mm256_unpacklo_epi16(ab_hi, cd_hi));
  _mm256_storeu_si256(o + 3, _mm256_unpackhi_epi16(ab_hi, cd_hi));
}

// The block's quantised im2col rows, quad by quad, into act (K / 4 quads of 4 x 32 bytes).
void gather_block(const Int8ConvArgs& a, const float* image, const TapMap& tm, const float* inv, int64_t width,
                  int64_t kq, int8_t* act) {
  const ConvGeom& g = a.g;
  const int64_t taps = g.kh * g.kw, plane = g.h * g.w;
  __m256 iv[4];
  for (int v = 0; v < 4; ++v) iv[v] = _mm256_maskload_ps(inv + 8 * v, lanes(width - 8 * v));
  int64_t c = 0, t = 0;  // channel and tap of im2col row 4 q + r
  for (int64_t q = 0; q < kq; ++q) {
    __m256i rows[4];
    for (int r = 0; r < 4; ++r) {
      if (4 * q + r >= a.k) {
        rows[r] = _mm256_setzero_si256();
        continue;
      }
      rows[r] = quantize_row(image + c * plane, tm, t, iv);
      if (++t == taps) t = 0, ++c;
    }
    interleave4(rows[0], rows[1], rows[2], rows[3], act + q * 4 * kPix);
  }
}

// acc += the four-byte dot products of w (4 signed weights, broadcast) and x (8 pixels' quads), exactly.
WFN_INL3 __m256i dot4(__m256i acc, __m256i absw, __m256i w, __m256i x) {
  const __m256i p16 = _mm256_maddubs_epi16(absw, _mm256_sign_epi8(x, w));
  return _mm256_add_epi32(acc, _mm256_madd_epi16(p16, _mm256_set1_epi16(1)));
}

// One output channel's rescale and epilogue constants.
struct Post {
  bool bias, affine, relu;
  float b, scale, shift;
};

// count (<= 8) consecutive pixels of one output channel: y = float(acc) * s (+ bias), then the optional
// affine (multiply, add) and ReLU (max(0, NaN) is NaN: vmaxps returns its second operand), each rounded.
WFN_INL3 void rescale8(__m256i acc, const float* s, const Post& p, float* y, int64_t count) {
  if (count <= 0) return;
  const __m256i m = lanes(count);
  const __m256 sv = count >= 8 ? _mm256_loadu_ps(s) : _mm256_maskload_ps(s, m);
  __m256 v = _mm256_mul_ps(_mm256_cvtepi32_ps(acc), sv);
  if (p.bias) v = _mm256_add_ps(v, _mm256_set1_ps(p.b));
  if (p.affine) v = _mm256_add_ps(_mm256_mul_ps(v, _mm256_set1_ps(p.scale)), _mm256_set1_ps(p.shift));
  if (p.relu) v = _mm256_max_ps(_mm256_setzero_ps(), v);
  if (count >= 8) _mm256_storeu_ps(y, v);
  else _mm256_maskstore_ps(y, m, v);
}

// Output channel o's accumulators for block pixels lo .. lo + 7 and hi .. hi + 7 (in order), rescaled with
// the channel's epilogue into y[bi, o, p0 + ..] (s: the block's pixel scales).
WFN_INL3 void store_pixels(const Int8ConvArgs& a, int64_t o, int64_t bi, int64_t p0, int64_t width, const float* s,
                           __m256i v_lo, int64_t lo, __m256i v_hi, int64_t hi) {
  float* y = a.y + (bi * a.n + o) * (a.g.oh * a.g.ow) + p0;
  const Post post{a.bias != nullptr, a.post_scale != nullptr, a.relu, a.bias != nullptr ? a.bias[o] : 0.f,
                  a.post_scale != nullptr ? a.post_scale[o] : 1.f, a.post_shift != nullptr ? a.post_shift[o] : 0.f};
  rescale8(v_lo, s + lo, post, y + lo, std::min<int64_t>(8, width - lo));
  rescale8(v_hi, s + hi, post, y + hi, std::min<int64_t>(8, width - hi));
}

// MR weight rows n0 .. n0 + MR - 1 against half h of the task's block (vectors 2 h, 2 h + 1 of each quad:
// pixels 8 h .. 8 h + 7 and 16 + 8 h .. 16 + 8 h + 7), rescaled into y. Accumulators as two arrays.
template <int MR>
__attribute__((noinline)) void product_rows(const Int8ConvArgs& a, const int8_t* act, int64_t kq, int64_t n0,
                                            int64_t bi, int64_t p0, int64_t width, int h) {
  __m256i a0[MR], a1[MR];
  const int32_t *wrow[MR], *arow[MR];
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r) {
    wrow[r] = reinterpret_cast<const int32_t*>(a.w + (n0 + r) * a.kp);
    arow[r] = reinterpret_cast<const int32_t*>(a.w + (a.n + n0 + r) * a.kp);
    a0[r] = a1[r] = _mm256_setzero_si256();
  }
  const int8_t* aq = act + 64 * h;
  for (int64_t q = 0; q < kq; ++q, aq += 4 * kPix) {
    const __m256i x0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(aq));
    const __m256i x1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(aq + 32));
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      const __m256i w = _mm256_set1_epi32(wrow[r][q]);
      const __m256i absw = _mm256_set1_epi32(arow[r][q]);
      a0[r] = dot4(a0[r], absw, w, x0);
      a1[r] = dot4(a1[r], absw, w, x1);
    }
  }
  const int64_t l = a.g.oh * a.g.ow;
  const float* s = a.s + bi * l + p0;
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r)
    store_pixels(a, n0 + r, bi, p0, width, s, _mm256_permute2x128_si256(a0[r], a1[r], 0x20), 8 * h,
                 _mm256_permute2x128_si256(a0[r], a1[r], 0x31), 16 + 8 * h);
}


// ---- int16 weights (a layer whose integer table does not fit int8): the same task, gather and epilogue, the
// product on vpmaddwd. An activation pair dword holds two consecutive im2col rows of one pixel as int16
// (row 2 q low, row 2 q + 1 high), in natural pixel order: act16[q * 32 + j]. The weights are int16 rows
// (a.w16, kp = k rounded up to 2, zero-padded); per pair one broadcast weight dword and, per vector of 8
// pixels, vpmaddwd(w, x) adds w[2q] x[2q] + w[2q+1] x[2q+1] to the pixel's int32 accumulator. Exact: the
// front end bounds K * 127 * max|w| below 2^31, so no partial sum overflows. One vpmaddwd per two MACs
// against vpsignb + vpmaddubsw + vpmaddwd per four in the int8 kernel: no more multiplier-pipe work per MAC.

// (a, b) int32 lanes in [-127, 127] -> dwords (a low, b high) as int16.
WFN_INL3 __m256i pair16(__m256i a, __m256i b) { return _mm256_blend_epi16(a, _mm256_slli_epi32(b, 16), 0xAA); }

void gather_block_wide(const Int8ConvArgs& a, const float* image, const TapMap& tm, const float* inv, int64_t width,
                       int64_t kpairs, int32_t* act) {
  const ConvGeom& g = a.g;
  const int64_t taps = g.kh * g.kw, plane = g.h * g.w;
  __m256 iv[4];
  for (int v = 0; v < 4; ++v) iv[v] = _mm256_maskload_ps(inv + 8 * v, lanes(width - 8 * v));
  int64_t c = 0, t = 0;  // channel and tap of im2col row 2 q + r
  for (int64_t q = 0; q < kpairs; ++q) {
    __m256i rows[2][4];
    for (int r = 0; r < 2; ++r) {
      if (2 * q + r >= a.k) {
        for (int v = 0; v < 4; ++v) rows[r][v] = _mm256_setzero_si256();
        continue;
      }
      const float* pl = image + c * plane;
      const int32_t* off = tm.off.data() + t * kPix;
      const int32_t* valid = tm.valid.data() + t * kPix;
      const uint8_t* dense = tm.dense.data() + t * 4;
      for (int v = 0; v < 4; ++v) rows[r][v] = quantize8(pl, off + 8 * v, valid + 8 * v, dense[v], iv[v]);
      if (++t == taps) t = 0, ++c;
    }
    __m256i* o = reinterpret_cast<__m256i*>(act + q * kPix);
    for (int v = 0; v < 4; ++v) _mm256_storeu_si256(o + v, pair16(rows[0][v], rows[1][v]));
  }
}


// MR weight rows n0 .. against vectors 2 h, 2 h + 1 (pixels 16 h .. 16 h + 15), rescaled into y. (A whole
// block of K = 4608 is 590 KB of pairs, beyond Zen 3's 512 KB L2; sweeping it in K chunks of 256 or 512
// pairs, partial sums kept between, measured the same as this at batch 1 and 8.)
template <int MR>
__attribute__((noinline)) void product_rows_wide(const Int8ConvArgs& a, const int32_t* act, int64_t kpairs,
                                                 int64_t n0, int64_t bi, int64_t p0, int64_t width, int h) {
  __m256i a0[MR], a1[MR];
  const int32_t* wrow[MR];
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r) {
    wrow[r] = reinterpret_cast<const int32_t*>(a.w16 + (n0 + r) * a.kp);
    a0[r] = a1[r] = _mm256_setzero_si256();
  }
  const int32_t* aq = act + 16 * h;
  for (int64_t q = 0; q < kpairs; ++q, aq += kPix) {
    const __m256i x0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(aq));
    const __m256i x1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(aq + 8));
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      const __m256i w = _mm256_set1_epi32(wrow[r][q]);
      a0[r] = _mm256_add_epi32(a0[r], _mm256_madd_epi16(w, x0));
      a1[r] = _mm256_add_epi32(a1[r], _mm256_madd_epi16(w, x1));
    }
  }
  const int64_t l = a.g.oh * a.g.ow;
  const float* s = a.s + bi * l + p0;
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r) store_pixels(a, n0 + r, bi, p0, width, s, a0[r], 16 * h, a1[r], 16 * h + 8);
}

// Either kernel's rows [r0, r1) of the task against its block, both halves (act: the gathered block, steps
// quads (int8) or pairs (int16) of K).
template <bool Wide, int MR>
void product(const Int8ConvArgs& a, const int32_t* act, int64_t steps, int64_t n0, int64_t bi, int64_t p0,
             int64_t width, int h) {
  if constexpr (Wide) product_rows_wide<MR>(a, act, steps, n0, bi, p0, width, h);
  else product_rows<MR>(a, reinterpret_cast<const int8_t*>(act), steps, n0, bi, p0, width, h);
}

template <bool Wide>
void product_block(const Int8ConvArgs& a, const int32_t* act, int64_t steps, int64_t r0, int64_t r1, int64_t bi,
                   int64_t p0, int64_t width) {
  for (int h = 0; h < 2 && (Wide ? 16 : 8) * h < width; ++h) {  // a half with no pixel of the block is skipped
    int64_t n0 = r0;
    for (; n0 + kRows <= r1; n0 += kRows) product<Wide, kRows>(a, act, steps, n0, bi, p0, width, h);
    switch (r1 - n0) {
      case 1: product<Wide, 1>(a, act, steps, n0, bi, p0, width, h); break;
      case 2: product<Wide, 2>(a, act, steps, n0, bi, p0, width, h); break;
      case 3: product<Wide, 3>(a, act, steps, n0, bi, p0, width, h); break;
      default: break;
    }
  }
}

// The task loop of both kernels: tiles of 32 pixels (block-major: one tap map serves every image) x parts of
// the weight rows (conv_work_split).
template <bool Wide>
void run_conv(const Int8ConvArgs& a) {
  const ConvGeom& g = a.g;
  const int64_t l = g.oh * g.ow, blocks = (l + kPix - 1) / kPix, tiles = a.batch * blocks;
  const int64_t steps = Wide ? a.kp / 2 : a.kp / 4;  // K pairs (int16) or quads (int8): one dword per pixel
  const ConvWorkSplit split = conv_work_split(tiles, a.n, kRows, at::get_num_threads());
  const int64_t parts = split.parts, rows_per_part = split.rows_per_part;
  at::parallel_for(0, tiles * parts, 1, [&](int64_t lo, int64_t hi) {
    std::vector<int32_t> act_buf(size_t(steps * kPix) + 16);
    int32_t* act = act_buf.data();
    TapMap tm;
    for (int64_t task = lo; task < hi; ++task) {
      const int64_t tile = task / parts, part = task % parts;
      const int64_t bi = tile % a.batch, p0 = (tile / a.batch) * kPix, width = std::min(kPix, l - p0);
      const int64_t r0 = part * rows_per_part, r1 = std::min(a.n, r0 + rows_per_part);
      if (r0 >= r1) continue;
      tm.build(g, p0, width);
      const float* image = a.x + bi * g.c * g.h * g.w;
      if constexpr (Wide) gather_block_wide(a, image, tm, a.inv + bi * l + p0, width, steps, act);
      else gather_block(a, image, tm, a.inv + bi * l + p0, width, steps, reinterpret_cast<int8_t*>(act));
      product_block<Wide>(a, act, steps, r0, r1, bi, p0, width);
    }
  });
}

}  // namespace

void int8_conv_avx2(const Int8ConvArgs& a) { run_conv<false>(a); }
void int16_conv_avx2(const Int8ConvArgs& a) { run_conv<true>(a); }

void transpose_batched_avx2(const float* src, float* dst, int64_t batch, int64_t rows, int64_t cols) {
  const int64_t rb = (rows + 7) / 8;
  at::parallel_for(0, batch * rb, 1, [&](int64_t lo, int64_t hi) {
    for (int64_t task = lo; task < hi; ++task) {
      const int64_t b = task / rb, r0 = (task % rb) * 8, nr = std::min<int64_t>(8, rows - r0);
      const float* s = src + (b * rows + r0) * cols;
      float* d = dst + b * rows * cols + r0;
      int64_t c0 = 0;
      if (nr == 8) {
        for (; c0 + 8 <= cols; c0 += 8) {  // rows r0.. x cols c0..
          __m256 v[8];
          for (int i = 0; i < 8; ++i) v[i] = _mm256_loadu_ps(s + i * cols + c0);
          transpose8x8_ps(v);
          for (int j = 0; j < 8; ++j) _mm256_storeu_ps(d + (c0 + j) * rows, v[j]);
        }
      }
      for (; c0 < cols; ++c0)
        for (int64_t i = 0; i < nr; ++i) d[c0 * rows + i] = s[i * cols + c0];
    }
  });
}

void int16_join_rows_avx2(const int8_t* lo, const int8_t* hi, int64_t len, int16_t* out) {
  int64_t i = 0;
  for (; i + 16 <= len; i += 16) {
    __m256i v = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(lo + i)));
    if (hi != nullptr) {  // 256 hi + lo, modulo 2^16: exact, as the weight fits int16
      const __m256i h = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(hi + i)));
      v = _mm256_add_epi16(v, _mm256_slli_epi16(h, 8));
    }
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + i), v);
  }
  for (; i < len; ++i) out[i] = int16_t(int32_t(lo[i]) + (hi != nullptr ? 256 * int32_t(hi[i]) : 0));
}

void int8_abs_rows_avx2(const int8_t* w, int64_t len, uint8_t* out) {
  int64_t i = 0;
  for (; i + 32 <= len; i += 32)
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + i),
                        _mm256_abs_epi8(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + i))));
  for (; i < len; ++i) out[i] = uint8_t(w[i] < 0 ? -int(w[i]) : int(w[i]));
}


}  // namespace wfn

#pragma GCC pop_options
