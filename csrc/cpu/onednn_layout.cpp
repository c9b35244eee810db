// Decode packed codes straight into a oneDNN (mkldnn) weight tensor's buffer.
//
// Why: torch's fp32 conv2d on CPU reorders its plain OIHW weight into oneDNN's blocked layout on every
// call, which at batch 1 is 13-93 % of the conv's time on ResNet-18 layers (measured by comparing
// F.conv2d with mkldnn._convolution_pointwise on a prepacked weight). A WFNConv2d prepared by
// wfn_kernels.onednn keeps its codes in that blocked order, so decoding them sequentially *is* the
// reorder, reading 4-8x fewer bytes than the fp32 weight, into a reused oneDNN tensor.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include <cstring>
#include <vector>

#include "kernels.h"

namespace wfn {
namespace {

int64_t mkldnn_int_op(const char* name, const at::Tensor& t) {
  static const auto data_ptr = c10::Dispatcher::singleton().findSchemaOrThrow("mkldnn::data_ptr", "")
                                   .typed<int64_t(const at::Tensor&)>();
  static const auto nbytes = c10::Dispatcher::singleton().findSchemaOrThrow("mkldnn::_nbytes", "")
                                 .typed<int64_t(const at::Tensor&)>();
  return std::strcmp(name, "data_ptr") == 0 ? data_ptr.call(t) : nbytes.call(t);
}

// packed: uint8 (R, ceil(k*bits/8)) codes in the destination's element order (row r fills elements
// [r*k, (r+1)*k)); codebook float32 (C <= 2**bits); dst: an mkldnn float tensor of exactly R*k elements.
void decode_into_mkldnn(const at::Tensor& packed, const at::Tensor& codebook, int64_t bits, int64_t k,
                        const at::Tensor& dst) {
  TORCH_CHECK(dst.is_mkldnn() && dst.scalar_type() == at::kFloat, "decode_into_mkldnn: dst must be an mkldnn "
              "float32 tensor, got ", dst.toString());
  TORCH_CHECK(packed.device().is_cpu() && packed.scalar_type() == at::kByte && packed.dim() == 2 &&
              packed.is_contiguous(), "decode_into_mkldnn: packed must be a contiguous 2-D uint8 CPU tensor");
  TORCH_CHECK(bits == 2 || bits == 4 || bits == 8, "decode_into_mkldnn: bits must be 2, 4 or 8, got ", bits);
  TORCH_CHECK(packed.size(1) == (k * bits + 7) / 8, "decode_into_mkldnn: packed has ", packed.size(1),
              " bytes per row, expected ", (k * bits + 7) / 8, " for k=", k);
  TORCH_CHECK(codebook.scalar_type() == at::kFloat && codebook.dim() == 1 && codebook.numel() <= (1 << bits),
              "decode_into_mkldnn: codebook must be float32 (C,) with C <= 2**bits");
  const int64_t n = packed.size(0);
  TORCH_CHECK(mkldnn_int_op("nbytes", dst) == n * k * int64_t(sizeof(float)),
              "decode_into_mkldnn: dst holds ", mkldnn_int_op("nbytes", dst), " bytes but the codes decode to ",
              n * k * int64_t(sizeof(float)), " (padded oneDNN layouts are not supported)");
  float* out = reinterpret_cast<float*>(mkldnn_int_op("data_ptr", dst));
  std::vector<float> table(256, 0.f);
  const at::Tensor cb = codebook.contiguous();
  std::memcpy(table.data(), cb.data_ptr<float>(), sizeof(float) * size_t(cb.numel()));
  decode_parallel(active_isa(), packed, k, int(bits), table.data(), 0, n, out);
}

}  // namespace
}  // namespace wfn

TORCH_LIBRARY_FRAGMENT(wfn_cpu, m) {
  // Decode codes (already in the destination's element order) into an mkldnn float tensor, in place.
  m.def("decode_into_mkldnn(Tensor packed, Tensor codebook, int bits, int k, Tensor dst) -> ()",
        &wfn::decode_into_mkldnn);
}
