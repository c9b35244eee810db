// AMX tile products for the large-M paths (amx_gemm.cpp): the weight decoded tile by tile into the A
// operand of oneDNN's brgemm micro-kernel, the activations in VNNI order as its B operand.
#pragma once
#include <ATen/ATen.h>

#include <cstdint>
#include <functional>
#include <string>

namespace wfn {

// Whether the AMX-BF16 path can run now: oneDNN reports AMX (at::native::cpublas::could_pack), the
// AVX-512 level is active, and it is not switched off (WFN_AMX=0 or torch.ops.wfn_cpu.set_amx(0)).
bool amx_bf16_available();
// "" when the AMX path can run, else why not (shown by torch.ops.wfn_cpu.amx_status()).
std::string amx_off_reason();

// y (M, N) fp32 = x @ W.T, W decoded from packed (N, row_bytes) codes through table (256 bf16 bit
// patterns, bf16-exact weights). x is (M, K) contiguous: bf16 (splits = 1, the bf16 mode), or fp32 with
// splits = 3 (the exact float mode: x = x1 + x2 + x3 in bf16) or 1 (x rounded to bf16 once).
at::Tensor amx_bf16_linear(const at::Tensor& x, int splits, const at::Tensor& packed, const uint16_t* table,
                           int bits, int64_t k);

// conv2d (groups 1) as im2col + the same product: x (B, C, H, W) float (bf16-valued for the bf16 mode),
// output (B, N, H', W') fp32 without bias.
at::Tensor amx_bf16_conv2d(const at::Tensor& x, int splits, const at::Tensor& packed, const uint16_t* table, int bits,
                           at::IntArrayRef weight_shape, at::IntArrayRef stride, at::IntArrayRef padding,
                           at::IntArrayRef dilation);

// Whether a conv with `pixels` = B * H' * W' GEMM rows and K = C * kh * kw takes the AMX path: only where
// the weight is large next to the activations (oneDNN's direct conv wins elsewhere: im2col alone costs
// more than its whole AMX conv on ResNet-18's early layers). WFN_AMX_CONV_MAX_M or
// torch.ops.wfn_cpu.set_amx_conv_max_m override the pixel limit (default 64; K >= 1024 as well).
bool amx_conv_ok(int64_t pixels, int64_t k);

// AMX-INT8 tiles usable (the hardware has them and amx_bf16_available()).
bool amx_int8_available();

// The exact int32 product acc (N, ML) = W_int8 @ q for int8 columns q (K, ML) row-major (one column per
// output pixel) and a narrow integer table (table8: 256 int8 entries), delivered tile by tile:
// sink(n0, rows, acc, ldc, p0, count) gets acc[r * ldc + j] = y_int[n0 + r, p0 + j], r < rows, j < count.
using Int32TileSink = std::function<void(int64_t, int64_t, const int32_t*, int64_t, int64_t, int64_t)>;
void amx_int8_columns(const int8_t* q, int64_t k, int64_t ml, const at::Tensor& packed, const int8_t* table8, int bits,
                      const Int32TileSink& sink);

// Smallest M that takes the AMX path: splits = 1 (bf16 mode) or 3 (float mode). WFN_AMX_MIN_M_BF16 /
// WFN_AMX_MIN_M_FLOAT or torch.ops.wfn_cpu.set_amx_min_m override.
int64_t amx_min_m(int splits);

// The 256-entry float table as bf16 bit patterns; false when some entry is not bf16-exact.
bool bf16_table(const float* table, uint16_t* out);

}  // namespace wfn
