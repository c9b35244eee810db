// CPU kernels for wfn::codebook_linear and wfn::codebook_conv2d.
//
// Layout contract (wfn_kernels/packing.py): packed is uint8 (N, ceil(K*bits/8)); element k of a row
// sits at bit (k*bits)%8 of byte (k*bits)/8. The codebook is float32 (C,), C <= 2^bits.
// Accumulation is float32; bf16/fp16 activations are widened once and the result narrowed at the end.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cstdint>

#include "kernels.h"

namespace wfn {

void check_common(const at::Tensor& packed, const at::Tensor& codebook, int64_t bits, int64_t k) {
  TORCH_CHECK(bits == 2 || bits == 4 || bits == 8, "bits must be one of (2, 4, 8), got ", bits);
  TORCH_CHECK(packed.scalar_type() == at::kByte && packed.dim() == 2,
              "packed codes must be a 2-D uint8 tensor (N, row_bytes)");
  TORCH_CHECK(packed.size(1) == (k * bits + 7) / 8, "packed codes have ", packed.size(1),
              " bytes per row, expected ", (k * bits + 7) / 8, " for K=", k, " at ", bits, " bits");
  TORCH_CHECK(codebook.scalar_type() == at::kFloat && codebook.dim() == 1,
              "codebook must be a 1-D float32 tensor");
  TORCH_CHECK(codebook.numel() >= 1 && codebook.numel() <= (int64_t(1) << bits), "codebook has ",
              codebook.numel(), " entries; ", bits, "-bit codes index 1 to ", int64_t(1) << bits);
}

at::Tensor codebook_linear_cpu(const at::Tensor& x, const at::Tensor& packed, const at::Tensor& codebook,
                               int64_t bits, int64_t k, const std::optional<at::Tensor>& bias) {
  TORCH_CHECK(x.dim() == 2 && x.size(1) == k, "x must be 2-D (M, K) with K=", k);
  check_common(packed, codebook, bits, k);
  at::Tensor xf = x.to(at::kFloat).contiguous();
  at::Tensor y = linear_dispatch(xf, packed.contiguous(), codebook.contiguous(), bits, k);
  if (bias.has_value() && bias->defined()) y.add_(bias->to(at::kFloat));
  return y.to(x.scalar_type());
}

at::Tensor codebook_conv2d_cpu(const at::Tensor& x, const at::Tensor& packed, const at::Tensor& codebook,
                               int64_t bits, at::IntArrayRef weight_shape,
                               const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                               at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  TORCH_CHECK(weight_shape.size() == 4, "weight_shape must have 4 entries");
  const int64_t k = weight_shape[1] * weight_shape[2] * weight_shape[3];
  check_common(packed, codebook, bits, k);
  return conv2d_dispatch(x, packed.contiguous(), codebook.contiguous(), bits, weight_shape, bias, stride,
                         padding, dilation, groups);
}

}  // namespace wfn

TORCH_LIBRARY_IMPL(wfn, CPU, m) {
  m.impl("codebook_linear", &wfn::codebook_linear_cpu);
  m.impl("codebook_conv2d", &wfn::codebook_conv2d_cpu);
}
