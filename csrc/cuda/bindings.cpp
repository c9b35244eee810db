// CUDA kernels of wfn::codebook_linear and wfn::codebook_conv2d (schemas defined in wfn_kernels/ops.py).
// Thin: argument checks with TORCH_CHECK, dtype mapping, the current stream, then the plain-pointer launch
// API of codebook_cuda.h. Compiled into wfn_kernels._C by setup.py only when torch has CUDA.
//
// Only c10/cuda headers (not ATen/cuda/CUDAContext.h, which pulls in cuBLAS/cuSPARSE headers) so this file
// also syntax-checks against a CPU torch plus the CUDA runtime headers (tests/test_cuda_compile.py).
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <optional>

#include "codebook_cuda.h"

namespace wfn {
namespace {

cuda::DType activation_dtype(const at::Tensor& x) {
  switch (x.scalar_type()) {
    case at::kFloat: return cuda::DType::kFloat32;
    case at::kBFloat16: return cuda::DType::kBFloat16;
    case at::kHalf: return cuda::DType::kFloat16;
    default: TORCH_CHECK(false, "x must be float32, bfloat16 or float16, got ", x.scalar_type());
  }
}

void check_weight(const at::Tensor& x, const at::Tensor& packed, const at::Tensor& codebook, int64_t bits,
                  int64_t k, const std::optional<at::Tensor>& bias) {
  TORCH_CHECK(bits == 2 || bits == 4 || bits == 8, "bits must be one of (2, 4, 8), got ", bits);
  TORCH_CHECK(x.is_cuda(), "x must be a CUDA tensor, got ", x.device());
  TORCH_CHECK(packed.device() == x.device(), "packed is on ", packed.device(), " but x is on ", x.device());
  TORCH_CHECK(codebook.device() == x.device(), "codebook is on ", codebook.device(), " but x is on ", x.device());
  TORCH_CHECK(packed.scalar_type() == at::kByte && packed.dim() == 2,
              "packed codes must be a 2-D uint8 tensor (N, row_bytes), got ", packed.scalar_type(), " of ",
              packed.dim(), " dims");
  TORCH_CHECK(packed.size(1) == (k * bits + 7) / 8, "packed codes have ", packed.size(1), " bytes per row, expected ",
              (k * bits + 7) / 8, " for K=", k, " at ", bits, " bits");
  TORCH_CHECK(codebook.scalar_type() == at::kFloat && codebook.dim() == 1, "codebook must be a 1-D float32 tensor");
  TORCH_CHECK(codebook.numel() >= 1 && codebook.numel() <= (int64_t(1) << bits), "codebook has ", codebook.numel(),
              " entries; ", bits, "-bit codes index 1 to ", int64_t(1) << bits);
  if (bias.has_value() && bias->defined()) {
    TORCH_CHECK(bias->device() == x.device(), "bias is on ", bias->device(), " but x is on ", x.device());
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == packed.size(0), "bias must be 1-D of length N=",
                packed.size(0), ", got shape ", bias->sizes());
  }
}

void check_launch(cudaError_t err, const char* what) {
  TORCH_CHECK(err == cudaSuccess, what, " failed: ", cudaGetErrorString(err));
}

cudaStream_t current_stream() { return c10::cuda::getCurrentCUDAStream().stream(); }

int sm_major(const at::Tensor& x) {
  int major = 0;
  check_launch(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, x.device().index()),
               "cudaDeviceGetAttribute");
  return major;
}

at::Tensor codebook_linear_cuda(const at::Tensor& x, const at::Tensor& packed, const at::Tensor& codebook,
                                int64_t bits, int64_t k, const std::optional<at::Tensor>& bias) {
  TORCH_CHECK(x.dim() == 2 && x.size(1) == k, "x must be 2-D (M, K) with K=", k, ", got shape ", x.sizes());
  check_weight(x, packed, codebook, bits, k, bias);
  const c10::cuda::CUDAGuard guard(x.device());
  const at::Tensor xc = x.stride(1) == 1 && x.stride(0) >= k ? x : x.contiguous();
  const at::Tensor pc = packed.contiguous(), cb = codebook.contiguous();
  at::Tensor bf;
  if (bias.has_value() && bias->defined()) bf = bias->to(at::kFloat).contiguous();
  at::Tensor y = at::empty({x.size(0), packed.size(0)}, x.options());
  cuda::LinearArgs a;
  a.x = xc.data_ptr();
  a.stride_xm = x.size(0) > 1 ? xc.stride(0) : k;
  a.packed = pc.data_ptr<uint8_t>();
  a.codebook = cb.data_ptr<float>();
  a.num_entries = static_cast<int>(cb.numel());
  a.bias = bf.defined() ? bf.data_ptr<float>() : nullptr;
  a.y = y.data_ptr();
  a.M = x.size(0);
  a.N = packed.size(0);
  a.K = k;
  a.bits = static_cast<int>(bits);
  a.dtype = activation_dtype(x);
  a.sm_major = sm_major(x);
  check_launch(cuda::codebook_linear_launch(a, current_stream()), "wfn codebook_linear (CUDA)");
  return y;
}

at::Tensor decode_weight_cuda(const at::Tensor& packed, const at::Tensor& codebook, int64_t bits, int64_t k) {
  const at::Tensor pc = packed.contiguous(), cb = codebook.contiguous();
  at::Tensor w = at::empty({packed.size(0), k}, codebook.options());
  check_launch(cuda::codebook_decode_launch(pc.data_ptr<uint8_t>(), packed.size(0), k, static_cast<int>(bits),
                                            cb.data_ptr<float>(), static_cast<int>(cb.numel()), w.data_ptr<float>(),
                                            current_stream()),
               "wfn codebook decode (CUDA)");
  return w;
}

// conv2d: decode the weight once (small next to the activations) and run cuDNN in float32, as the
// reference does, so results follow the same float32 spec.
at::Tensor codebook_conv2d_cuda(const at::Tensor& x, const at::Tensor& packed, const at::Tensor& codebook,
                                int64_t bits, at::IntArrayRef weight_shape, const std::optional<at::Tensor>& bias,
                                at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                                int64_t groups) {
  TORCH_CHECK(x.dim() == 4, "x must be 4-D (B, C, H, W), got shape ", x.sizes());
  TORCH_CHECK(weight_shape.size() == 4, "weight_shape must have 4 entries, got ", weight_shape.size());
  const int64_t k = weight_shape[1] * weight_shape[2] * weight_shape[3];
  check_weight(x, packed, codebook, bits, k, bias);
  activation_dtype(x);
  TORCH_CHECK(packed.size(0) == weight_shape[0], "packed has ", packed.size(0), " rows, expected out_channels=",
              weight_shape[0]);
  const c10::cuda::CUDAGuard guard(x.device());
  const at::Tensor w = decode_weight_cuda(packed, codebook, bits, k).view(weight_shape);
  std::optional<at::Tensor> bf;
  if (bias.has_value() && bias->defined()) bf = bias->to(at::kFloat);
  return at::conv2d(x.to(at::kFloat), w, bf, stride, padding, dilation, groups).to(x.scalar_type());
}

}  // namespace
}  // namespace wfn

TORCH_LIBRARY_IMPL(wfn, CUDA, m) {
  m.impl("codebook_linear", &wfn::codebook_linear_cuda);
  m.impl("codebook_conv2d", &wfn::codebook_conv2d_cuda);
}
