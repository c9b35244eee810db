// Internal interface of the integer (int8 compute mode) and bf16 kernels: int_linear.cpp / bf16_linear.cpp
// drive them, int_kernels_{scalar,avx2,avx512}.cpp implement them per SIMD level.
//
// int8 mode arithmetic: a layer's codebook values v_c are exact multiples of its smallest power-of-two
// step s (they are sums of powers of two), so w_c = v_c / s is an integer table; activations are
// quantised per row to int8 (xq in [-127, 127]); y_int[m, n] = sum_k xq[m, k] * w[codes[n, k]] is exact
// in int32 (the front end checks K * 127 * max(255, max|w|) < 2^31), and y = y_int * (x_scale[m] * s).
//
// Small-M kernels look the codes up in registers (kernels.h block/phase layout, at byte granularity):
//  * AVX-512 (needs VBMI + VNNI): vpermb reads 6 index bits, so a 16-entry (4-bit) table replicated 4x
//    (2-bit: 16x) in one zmm decodes 64 codes per instruction with no masking; 8-bit codes take two
//    vpermt2b (128 entries each) blended on the code's top bit. The table holds w + 128 as uint8 so the
//    weights are vpdpbusd's unsigned operand and the int8 activations its signed one;
//    y = dot - 128 * sum_k xq (the per-row sum is computed once per call).
//  * AVX2: vpshufb (16 entries per 128-bit lane) decodes 32 codes; the product is vpmaddubsw on |w|
//    (uint8 <= 128) and sign(w) * x (int8), exact because |pair sum| <= 2 * 128 * 127 < 2^15, then
//    vpmaddwd into int32. 8-bit codes are decoded through a scalar table into a 32-byte buffer.
//  * int16 weights (a layer whose values span more than 8 bits of steps), 2/4-bit codes, both SIMD levels:
//    the AVX2 kernel looks up each weight's low and high byte with two vpshufb, joins them with
//    vpunpck{l,h}bw and multiplies with vpmaddwd against x sign-extended by the same unpacks (32-byte
//    blocks). 8-bit codes: decoded to int16 per chunk, vpmaddwd (AVX-512BW / AVX2), natural order.
// Block of bb code bytes (bb = 64 AVX-512, 32 AVX2; E = 8 / bits codes per byte): activation element
// b * E + p of the block sits at position p * bb + b (the int16 LUT kernel: bb = 32 at both levels); the
// scalar and 8-bit int16 paths read x in natural order.
#pragma once
#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>

#include "kernels.h"

namespace wfn {

// Code i of a packed row (kernels.h packing: element i in byte i / (8 / bits), bits from the bottom).
inline unsigned code_at(const uint8_t* row, int bits, int64_t i) {
  const int per = 8 / bits;
  return (row[i / per] >> ((i % per) * bits)) & ((1u << bits) - 1u);
}

// The int8 mode's activation quantiser for one value (inv = 1 / scale, float32): round half to even, as
// torch.round, then clamp to [-127, 127] (a NaN lands on -127). The SIMD quantisers give the same values.
inline int8_t quantize(float v, float inv) {
  const float q = std::nearbyint(v * inv);  // default rounding mode
  return int8_t(std::min(127.f, std::max(-127.f, q)));
}

// The level the integer kernels run at: the active level, except that the AVX-512 kernels also need
// VNNI (else the AVX2 ones run). The bf16 kernels' AVX-512 level needs AVX512_BF16 (else the fp32 path).
Isa int_isa();
bool hardware_has_avx512_vnni();
bool hardware_has_avx512_bf16();

struct IntGemvArgs {
  const int8_t* x;       // (m, xstride) int8 activations, order per level (above)
  int64_t m;
  int64_t xstride;
  const int32_t* xsum;   // (m,) sum of each activation row (the AVX-512 offset correction)
  const uint8_t* packed; // (N, row_bytes)
  int64_t row_bytes;
  int64_t k;
  int bits;
  const int16_t* table;  // 256 integer weights (codes past the codebook read 0)
  bool narrow;           // every table entry in [-128, 127]
  int32_t* y;            // (m, ldy)
  int64_t ldy;
};

void int_gemv_rows_scalar(const IntGemvArgs& a, int64_t r0, int64_t r1);
void int_gemv_rows_avx2(const IntGemvArgs& a, int64_t r0, int64_t r1);
void int_gemv_rows_avx512(const IntGemvArgs& a, int64_t r0, int64_t r1);

// Natural-order decode of rows [r0, r1) into int8 (narrow tables) for the large-M GEMM path:
// out[(r - r0) * ld + i] = table[code] for i < k (ld = -1: k). table8 holds 256 int8 entries.
void int8_decode_rows_scalar(const uint8_t* packed, int64_t row_bytes, int64_t k, int bits, const int8_t* table8,
                             int64_t r0, int64_t r1, int8_t* out, int64_t ld = -1);
void int8_decode_rows_avx512(const uint8_t* packed, int64_t row_bytes, int64_t k, int bits, const int8_t* table8,
                             int64_t r0, int64_t r1, int8_t* out, int64_t ld = -1);

// AVX-512 activation quantisation, bit-identical to the scalar definition (int_linear.cpp): scale =
// amax / 127 (1 when amax == 0), inv = 1 / scale (float32), q = clamp(round_half_even(x * inv), -127, 127).
// amax_avx512: max |x[0..k)| and whether every value is finite. quantize_avx512: q[0..k), returns sum q.
float amax_avx512(const float* x, int64_t k, bool* finite);
int32_t quantize_avx512(const float* x, int64_t k, float inv, int8_t* q);
// One scale per element (a conv's input row, one scale per output pixel): q[j] = quantised x[j] with
// inv[j] = 1 / scale[j], j < n.
void quantize_span_avx512(const float* x, int64_t n, const float* inv, int8_t* q);
// am[p] = max over the c planes of |x[ci * hw + p]| (+Inf where any is NaN or Inf), p < hw.
void absmax_planes_avx512(const float* x, int64_t c, int64_t hw, float* am);

// AVX2 versions of the decode and the quantisers above (the same values, bit for bit).
void int8_decode_rows_avx2(const uint8_t* packed, int64_t row_bytes, int64_t k, int bits, const int8_t* table8,
                           int64_t r0, int64_t r1, int8_t* out, int64_t ld = -1);
float amax_avx2(const float* x, int64_t k, bool* finite);
int32_t quantize_avx2(const float* x, int64_t k, float inv, int8_t* q);
void quantize_span_avx2(const float* x, int64_t n, const float* inv, int8_t* q);
void absmax_planes_avx2(const float* x, int64_t c, int64_t hw, float* am);
// The 4-bit GEMVs' activation order: for each block of 2 * bb bytes (bb = 32 or 64), dst[p * bb + w] =
// src[2 * w + p] (even elements, then odd ones). AVX2 (both SIMD levels have it).
void deinterleave2_avx2(const int8_t* src, int64_t blocks, int64_t bb, int8_t* dst);

// Natural-order decode into 16-bit words (bf16 bit patterns, or int16 weights): out[(r - r0) * ld + i]
// for i < k (ld = -1: k).
void u16_decode_rows_scalar(const uint8_t* packed, int64_t row_bytes, int64_t k, int bits,
                            const uint16_t* table16, int64_t r0, int64_t r1, uint16_t* out, int64_t ld = -1);
void u16_decode_rows_avx512(const uint8_t* packed, int64_t row_bytes, int64_t k, int bits,
                            const uint16_t* table16, int64_t r0, int64_t r1, uint16_t* out, int64_t ld = -1);

// bf16 GEMV: y[m, r] (fp32) = sum_k bf16(x[m, k]) * w[r, k], w bf16-exact, fp32 accumulation (vdpbf16ps).
struct Bf16GemvArgs {
  const uint16_t* x;     // (m, xstride) bf16 activations, pairs ordered per bf16_x_position
  int64_t m;
  int64_t xstride;
  const uint8_t* packed;
  int64_t row_bytes;
  int64_t k;
  int bits;
  const uint16_t* table; // 256 bf16 bit patterns
  float* y;
  int64_t ldy;
};
void bf16_gemv_rows_avx512(const Bf16GemvArgs& a, int64_t r0, int64_t r1);
// Position (within a row padded to whole 64-byte code blocks) of activation element e in the order the
// AVX-512 bf16 GEMV reads it.
int64_t bf16_x_position(int bits, int64_t e);
int64_t bf16_padded_k(int bits, int64_t row_bytes);

// Large-M products on AVX-512 dot-product instructions without AMX (panel_gemm_avx512.cpp): weight rows
// [n0, n1) decoded block by block into the dword-interleaved operand of vpdpbusd / vdpbf16ps, all M rows
// streamed past each block. x rows are natural order, zero-padded to a multiple of 4 (int8) / 2 (bf16)
// elements past k. int8 (needs VNNI): y int32 (m, ldy) = exact product, table = 256 int8 weights, xsum =
// per-row sums of x. bf16 (needs AVX512_BF16): y fp32, table = 256 bf16 bit patterns, xsum unused.
struct PanelGemmArgs {
  const void* x;
  int64_t m;
  int64_t xstride;
  const int32_t* xsum;
  const uint8_t* packed;
  int64_t row_bytes;
  int64_t k;
  int bits;
  const void* table;
  void* y;
  int64_t ldy;
};
// y for all n weight rows, parallel over row blocks.
void int8_panel_gemm_avx512(const PanelGemmArgs& a, int64_t n);
void bf16_panel_gemm_avx512(const PanelGemmArgs& a, int64_t n);
// Whether the large-M int8 / bf16 paths use these kernels where the CPU has the instructions and no AMX
// (WFN_PANEL_GEMM=0 or set_panel_gemm(False) turns them off: the decode-tile + oneDNN path runs).
bool panel_gemm_enabled();
std::string panel_capability();
bool hardware_has_amx_int8();
// Rows per packed block (multiple of 48) and dwords of K per block (multiple of 16); <= 0 keeps a value.
// Returns nc * 100000 + kdw after the change.
int64_t set_panel_blocking(int64_t nc, int64_t kdw);
// 4-bit codes packed straight from the code bytes (default) or decoded by rows then transposed; returns the
// previous setting.
bool set_panel_direct_pack(bool on);

// The large-M int8 product on AVX2 without int8 dot-product instructions (int16_gemm_avx2.cpp): y (m, ldy)
// int32 = x (m, xstride) int8, natural order . W^T for all n weight rows, exact; W decoded from the codes
// through lo (int8 weights, or a wide table's low bytes) and hi (a wide table's high bytes: w = 256 hi + lo;
// nullptr for narrow tables), or, for 8-bit codes, table. Activation pairs and weights as int16 on vpmaddwd.
struct Int16GemmArgs {
  const int8_t* x;
  int64_t m, xstride;
  const uint8_t* packed;
  int64_t row_bytes, k;
  int bits;
  const int8_t* lo;
  const int8_t* hi;
  const int16_t* table;  // the 256 integer weights (8-bit codes look them up directly)
  int32_t* y;
  int64_t ldy;
};
void int16_gemm_avx2(const Int16GemmArgs& a, int64_t n);
// One row's k codes (from codes, byte aligned) as int16 weights: 8-bit codes through table, 2/4-bit ones
// through the byte tables lo / hi (hi nullptr for an int8 table) joined; blo / bhi: k bytes of scratch each.
void int16_decode_row_avx2(const uint8_t* codes, int64_t k, int bits, const int8_t* lo, const int8_t* hi,
                           const int16_t* table, int16_t* out, int8_t* blo, int8_t* bhi);

// Convolution geometry of the int8 conv paths (int_linear.cpp, conv_int8_avx512.cpp): input C x H x W,
// kernel kh x kw, output oh x ow, strides, paddings, dilations.
struct ConvGeom {
  int64_t c, h, w, kh, kw, oh, ow, sh, sw, ph, pw, dh, dw;
};

// How the fused NCHW int8 convs (AVX-512 VNNI, AVX2) share out their work: tasks of (pixel tile, part of the
// weight rows). With fewer than 2 tiles per thread (batch 1, late layers: one 7x7 image is one or two tiles)
// the rows are split too, each part quantising its own copy of the tile; a part holds whole micro-kernel
// calls (multiples of rows_step rows).
struct ConvWorkSplit {
  int64_t parts, rows_per_part;
};
inline ConvWorkSplit conv_work_split(int64_t tiles, int64_t n, int64_t rows_step, int64_t threads) {
  const int64_t max_parts = std::max<int64_t>(1, n / (4 * rows_step));
  const int64_t parts =
      threads == 1 || tiles >= 2 * threads ? 1 : std::min(max_parts, (2 * threads + tiles - 1) / tiles);
  return {parts, (n / parts + rows_step - 1) / rows_step * rows_step};
}

// Output pixels ow0 + j, j in [jlo, jhi), of kernel column b read input column base + j * sw inside [0, w).
struct ConvSpan {
  int64_t base, jlo, jhi;
};
inline ConvSpan conv_input_span(const ConvGeom& g, int64_t ow0, int64_t width, int64_t b) {
  const int64_t base = ow0 * g.sw + b * g.dw - g.pw;
  int64_t jlo = base >= 0 ? 0 : (-base + g.sw - 1) / g.sw;
  int64_t jhi = base >= g.w ? 0 : std::min<int64_t>(width, (g.w - base + g.sw - 1) / g.sw);
  jlo = std::min(jlo, width);
  jhi = std::max(jhi, jlo);
  return {base, jlo, jhi};
}

// The fused int8 conv on AVX-512 VNNI (conv_int8_avx512.cpp): y (B, n, OH, OW) fp32 =
// float(sum_k xq[pixel, k] * w[n, k]) * s[pixel] + bias[n], xq quantised from x with inv[pixel].
struct Int8ConvArgs {
  const float* x;        // (B, C, H, W) fp32, contiguous
  ConvGeom g;
  int64_t batch;
  const int8_t* w;       // (n, kp) decoded int8 weights, rows zero-padded from k to kp = k rounded up to 4
  const int32_t* comp;   // (n) -128 * row sum of w
  int64_t n, k, kp;
  const float* inv;      // (B * OH * OW) 1 / scale per output pixel
  const float* s;        // (B * OH * OW) scale * step per output pixel; NaN where its inputs are not finite
  const float* bias;     // (n) or nullptr
  float* y;
  // optional epilogue, int8_conv_avx2 only (as Int8ConvNhwcArgs): y = y * post_scale[n] + post_shift[n],
  // then max(y, 0) with relu
  const float* post_scale = nullptr;
  const float* post_shift = nullptr;
  bool relu = false;
  // int16_conv_avx2 only: (n, kp) int16 weight rows, kp = k rounded up to 2, zero-padded (w unused)
  const int16_t* w16 = nullptr;
};
void int8_conv_vnni(const Int8ConvArgs& a);
// The same conv on AVX2 without int8 dot-product instructions (conv_int8_avx2.cpp): signed activations and
// vpmaddubsw(|w|, sign(w) x), so comp is unused; the same integers and rescale, bit for bit. a.w holds the n
// rows, then their absolute values (n rows of unsigned bytes, int8_abs_rows_avx2).
void int8_conv_avx2(const Int8ConvArgs& a);
// The same for int16 weights (a.w16; tables that do not fit int8): activation pairs as int16 and vpmaddwd,
// the same integers and rescale, bit for bit.
void int16_conv_avx2(const Int8ConvArgs& a);
// dst[b][j][i] = src[b][i][j] for (rows x cols) float matrices, b < batch: NHWC <-> NCHW for the AVX2 conv
// kernel (8 x 8 register transposes, parallel over batch and row blocks).
void transpose_batched_avx2(const float* src, float* dst, int64_t batch, int64_t rows, int64_t cols);
// out[i] = 256 * hi[i] + lo[i] as int16 (hi == nullptr: lo[i]), i < len: a wide table's weights from the
// row decodes of its two byte tables (IntTable lo / hi), or a narrow one's sign-extended.
void int16_join_rows_avx2(const int8_t* lo, const int8_t* hi, int64_t len, int16_t* out);
// out[i] = |w[i]| as an unsigned byte (|-128| = 128), i < len.
void int8_abs_rows_avx2(const int8_t* w, int64_t len, uint8_t* out);

// The same conv on channels_last (NHWC) activations (conv_int8_avx512.cpp): x (B, H, W, C) fp32, y (B, OH,
// OW, n) fp32, the same integers and rescale (so the same values, bit for bit). Pixels are the broadcast
// operand and 16 output channels one vector, so a pixel's outputs land as whole vectors in its NHWC row;
// the weights are decoded from the codes and packed per call into wpk (K reordered (kh, kw, c), C padded
// to a multiple of 4, 16 channels per vector: int8_conv_nhwc_workspace_bytes).
struct Int8ConvNhwcArgs {
  const float* x;
  ConvGeom g;
  int64_t batch;
  const uint8_t* packed;  // (n, row_bytes) codes, canonical (c, kh, kw) order
  int64_t row_bytes;
  int bits;
  const int8_t* table8;   // 256 int8 weights (narrow tables only)
  int64_t n, k;
  const float* inv;       // (B * OH * OW) 1 / scale per output pixel
  const float* s;         // (B * OH * OW) scale * step; NaN where the receptive field is not finite
  const float* bias;      // (n) or nullptr
  float* y;
  int8_t* wpk;            // workspace
  // optional epilogue (a folded eval BatchNorm, then ReLU): y = y * post_scale[n] + post_shift[n] (two
  // roundings), then max(y, 0) with relu (NaN stays NaN)
  const float* post_scale = nullptr;
  const float* post_shift = nullptr;
  bool relu = false;
};
int64_t int8_conv_nhwc_workspace_bytes(const ConvGeom& g, int64_t n);
void int8_conv_nhwc_vnni(const Int8ConvNhwcArgs& a);
// am[p] = max over c of |x[p * c + ci]| (+Inf where any is NaN or Inf), p < pixels (NHWC channel max).
void absmax_pixels_avx512(const float* x, int64_t pixels, int64_t c, float* am);
// out[r] = sum of w[r * ld .. r * ld + ld) (int8), r < rows (VNNI).
void int8_row_sums_vnni(const int8_t* w, int64_t rows, int64_t ld, int32_t* out);

}  // namespace wfn
