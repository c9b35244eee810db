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

#include <algorithm>
#include <cstring>
#include <optional>
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
// scale (optional): float32, one per output channel of the blocked layout [O/block][K][block] (kdim columns
// per channel, O = scale.numel() a multiple of block): every decoded weight of channel o is multiplied by
// scale[o] (an eval BatchNorm folded into the conv), chunk by chunk while the chunk is still in cache.
void decode_into_mkldnn(const at::Tensor& packed, const at::Tensor& codebook, int64_t bits, int64_t k,
                        const at::Tensor& dst, const std::optional<at::Tensor>& scale, int64_t block, int64_t kdim) {
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
  const float* sc = nullptr;
  if (scale.has_value()) {
    const at::Tensor& s = *scale;
    TORCH_CHECK(s.device().is_cpu() && s.scalar_type() == at::kFloat && s.dim() == 1 && s.is_contiguous(),
                "decode_into_mkldnn: scale must be a contiguous 1-D float32 CPU tensor");
    TORCH_CHECK(block >= 1 && kdim >= 1 && s.numel() % block == 0 && s.numel() * kdim == n * k &&
                    (k % block == 0) && ((kdim * block) % k == 0),
                "decode_into_mkldnn: scale has ", s.numel(), " channels, block ", block, ", ", kdim,
                " columns per channel: that does not tile the ", n, " x ", k, " decoded elements in whole rows");
    sc = s.data_ptr<float>();
  }
  float* out = reinterpret_cast<float*>(mkldnn_int_op("data_ptr", dst));
  const std::vector<float> table = padded_table(codebook.contiguous());
  if (sc == nullptr) {
    decode_parallel(active_isa(), packed, k, int(bits), table.data(), 0, n, out);
    return;
  }
  // Rows never straddle an output-channel block (k is a multiple of block and divides kdim * block), so a
  // chunk of rows is whole [K][block] slabs or part of one; element e has channel (e / (block*kdim)) * block
  // + e % block.
  const Isa isa = active_isa();
  const uint8_t* p = packed.data_ptr<uint8_t>();
  const int64_t rb = packed.size(1), slab = block * kdim;
  const int64_t chunk = std::max<int64_t>(1, (int64_t(1) << 14) / std::max<int64_t>(k, 1));  // ~64 KB of floats
  parallel_chunks(n, chunk, [&](int64_t lo, int64_t hi) {
    float* o = out + lo * k;
    if (isa == Isa::Avx2 && block % 8 == 0) {  // scaled as decoded, no second pass
      decode_rows_avx2(p, rb, k, int(bits), table.data(), lo, hi, o, sc, block, slab);
      return;
    }
    decode_rows(isa, p, rb, k, int(bits), table.data(), lo, hi, o);
    scale_channel_blocks(isa, out, lo * k, hi * k, sc, block, slab);
  });
}

}  // namespace
}  // namespace wfn

TORCH_LIBRARY_FRAGMENT(wfn_cpu, m) {
  // Decode codes (already in the destination's element order) into an mkldnn float tensor, in place.
  // With scale (one float per output channel of the [O/block][kdim][block] layout), each channel's weights
  // are multiplied by it as they are decoded (a folded eval BatchNorm).
  m.def("decode_into_mkldnn(Tensor packed, Tensor codebook, int bits, int k, Tensor dst, Tensor? scale=None, "
        "int block=1, int kdim=1) -> ()",
        &wfn::decode_into_mkldnn);
}
