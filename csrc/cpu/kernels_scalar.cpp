// Portable kernels: row decode, GEMV/GEMM through decoded rows, conv via decode + at::conv2d.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "kernels.h"

namespace wfn {

void decode_row(const uint8_t* row, const float* table, int64_t bits, int64_t k, float* out) {
  const int per_byte = int(8 / bits);
  const unsigned mask = (1u << bits) - 1u;
  for (int64_t i = 0; i < k; ++i) {
    const unsigned byte = row[(i * bits) >> 3];
    out[i] = table[(byte >> ((i % per_byte) * bits)) & mask];
  }
}

at::Tensor linear_dispatch(const at::Tensor& x, const at::Tensor& packed, const at::Tensor& codebook,
                           int64_t bits, int64_t k) {
  const int64_t m = x.size(0), n = packed.size(0);
  at::Tensor y = at::zeros({m, n}, x.options());
  if (m == 0 || n == 0) return y;
  std::vector<float> table(size_t(1) << bits, 0.f);
  std::memcpy(table.data(), codebook.data_ptr<float>(), sizeof(float) * codebook.numel());
  const uint8_t* p = packed.data_ptr<uint8_t>();
  const float* xp = x.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  const int64_t rb = packed.size(1);
  at::parallel_for(0, n, 16, [&](int64_t lo, int64_t hi) {
    std::vector<float> w(k);
    for (int64_t r = lo; r < hi; ++r) {
      decode_row(p + r * rb, table.data(), bits, k, w.data());
      for (int64_t i = 0; i < m; ++i) {
        const float* xi = xp + i * k;
        float acc = 0.f;
        for (int64_t j = 0; j < k; ++j) acc += xi[j] * w[j];
        yp[i * n + r] = acc;
      }
    }
  });
  return y;
}

at::Tensor conv2d_dispatch(const at::Tensor& x, const at::Tensor& packed, const at::Tensor& codebook,
                           int64_t bits, at::IntArrayRef weight_shape, const std::optional<at::Tensor>& bias,
                           at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                           int64_t groups) {
  const int64_t k = weight_shape[1] * weight_shape[2] * weight_shape[3];
  at::Tensor w = decode_weight_cpu(packed, codebook, bits, k).view(weight_shape);
  std::optional<at::Tensor> b;
  if (bias.has_value() && bias->defined()) b = bias->to(at::kFloat);
  return at::conv2d(x.to(at::kFloat), w, b, stride, padding, dilation, groups).to(x.scalar_type());
}

const char* cpu_capability() { return "scalar"; }

}  // namespace wfn
