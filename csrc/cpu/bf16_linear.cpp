// CPU kernels of the bf16 compute mode (schemas and reference: wfn_kernels/ops/bf16.py):
//   wfn::bf16_linear(x, packed, codebook, bits, K, bias): y = bf16(x) @ W.T + bias, W bf16-exact
//   wfn::bf16_conv2d(x, packed, codebook, bits, weight_shape, bias, stride, padding, dilation, groups)
// Activations are rounded to bf16 once (round to nearest even); products and sums in fp32.
//
// Paths: without bf16 arithmetic in hardware (no AVX512_BF16 at the active level, e.g. AVX2 CPUs) every
// size runs on the fp32 kernels (native_bf16 below): bf16-rounded x widened, bf16-exact weights, so every
// product is the same and only the summation order differs. With it: small M runs the fused bf16 GEMV
// (vpermw lookups + vdpbf16ps, int_kernels_avx512.cpp). On CPUs with AMX, from M >= amx_min_m(1) the
// product runs on AMX tiles with an fp32 output (amx_gemm.cpp), and so do convs with few output pixels and
// a large K. Without AMX, from M >= bf16_gemm_min_m the panel kernel (panel_gemm_avx512.cpp) runs it with
// an fp32 output (with the panel kernels off: a tile of rows decoded to bf16 and multiplied with oneDNN's
// bf16 GEMM, at::mm, which accumulates in fp32 and rounds its output to bf16 once: relative error <= 2^-9).
// Other convs decode the weight to bf16 into a reused per-thread workspace and run oneDNN's bf16
// convolution (same rounding).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>

#include "amx_gemm.h"
#include "int_kernels.h"

namespace wfn {
namespace {

int64_t env_int(const char* name, int64_t fallback) {
  const char* v = std::getenv(name);
  return (v != nullptr && *v != '\0') ? std::atoll(v) : fallback;
}

std::atomic<int64_t>& bf16_gemm_min_m_override() {
  static std::atomic<int64_t> v{env_int("WFN_BF16_GEMM_MIN_M", -1)};
  return v;
}

bool use_bf16_panel();

// Without AMX (bench/results/panel_gemm_zen5.md, 1 thread): the bf16 GEMV is ahead of both GEMM paths up
// to M=48 and level with them at 64; with AMX this threshold is not reached (amx_min_m takes over first).
int64_t bf16_gemm_min_m() {
  const int64_t forced = bf16_gemm_min_m_override().load();
  return forced >= 0 ? forced : (use_bf16_panel() ? 64 : 16);
}

int64_t set_bf16_gemm_min_m_op(int64_t m) { return bf16_gemm_min_m_override().exchange(m); }

struct Bf16Table {
  uint16_t t[256] = {0};
  float f[256] = {0};
};

Bf16Table make_table(const at::Tensor& codebook, int64_t bits) {
  TORCH_CHECK(bits == 2 || bits == 4 || bits == 8, "bits must be one of (2, 4, 8), got ", bits);
  TORCH_CHECK(codebook.scalar_type() == at::kFloat && codebook.dim() == 1, "codebook must be a 1-D float32 tensor");
  TORCH_CHECK(codebook.numel() >= 1 && codebook.numel() <= (int64_t(1) << bits), "codebook has ", codebook.numel(),
              " entries; ", bits, "-bit codes index 1 to ", int64_t(1) << bits);
  const at::Tensor c = codebook.contiguous();
  Bf16Table t;
  for (int64_t i = 0; i < c.numel(); ++i) {
    uint32_t u;
    std::memcpy(&u, c.data_ptr<float>() + i, 4);
    TORCH_CHECK((u & 0xffffu) == 0, "codebook value ", c.data_ptr<float>()[i],
                " is not exactly representable in bfloat16 (the bf16 mode keeps weights exact)");
    t.t[i] = uint16_t(u >> 16);
    t.f[i] = c.data_ptr<float>()[i];
  }
  return t;
}

void check_packed(const at::Tensor& packed, int64_t bits, int64_t k) {
  TORCH_CHECK(packed.scalar_type() == at::kByte && packed.dim() == 2,
              "packed codes must be a 2-D uint8 tensor (N, row_bytes)");
  TORCH_CHECK(packed.size(1) == (k * bits + 7) / 8, "packed codes have ", packed.size(1), " bytes per row, expected ",
              (k * bits + 7) / 8, " for K=", k, " at ", bits, " bits");
}

void u16_decode(const uint8_t* p, int64_t rb, int64_t k, int bits, const uint16_t* t, int64_t r0, int64_t r1,
                uint16_t* out) {
  if (active_isa() == Isa::Avx512) u16_decode_rows_avx512(p, rb, k, bits, t, r0, r1, out);
  else u16_decode_rows_scalar(p, rb, k, bits, t, r0, r1, out);
}

void decode_parallel_u16(const at::Tensor& packed, int64_t k, int bits, const uint16_t* t, int64_t r0, int64_t r1,
                         uint16_t* out) {
  const uint8_t* p = packed.data_ptr<uint8_t>();
  const int64_t rb = packed.size(1);
  const int64_t chunk = std::max<int64_t>(1, (int64_t(1) << 16) / std::max<int64_t>(k, 1));
  parallel_chunks(r1 - r0, chunk, [&](int64_t lo, int64_t hi) { u16_decode(p, rb, k, bits, t, r0 + lo, r0 + hi, out + lo * k); });
}

// Reused per-thread bf16 workspace (see linear.cpp's decode_workspace for why).
at::Tensor bf16_workspace(int64_t elems) {
  return at::from_blob(workspace(kWsBf16, 2 * elems), {elems}, at::TensorOptions().dtype(at::kBFloat16));
}

// x element w * E + p of each 32 * E-element block to position p * 32 + w (bf16_x_position, whose divisions
// made this loop ~0.1 ms per call at K = 14336); the last partial block takes bf16_x_position itself.
template <int BITS>
void permute_bf16_x(const uint16_t* src, int64_t k, uint16_t* dst) {
  constexpr int64_t E = 16 / BITS, eb = 32 * E;
  int64_t b0 = 0;
  for (; b0 + eb <= k; b0 += eb)
    for (int64_t w = 0; w < 32; ++w)
      for (int64_t p = 0; p < E; ++p) dst[b0 + p * 32 + w] = src[b0 + w * E + p];
  for (int64_t e = b0; e < k; ++e) dst[bf16_x_position(BITS, e)] = src[e];
}

at::Tensor bf16_gemv(const at::Tensor& xb, const at::Tensor& packed, const Bf16Table& t, int bits, int64_t k) {
  const int64_t m = xb.size(0), n = packed.size(0), rb = packed.size(1);
  const int64_t kp = bf16_padded_k(bits, rb);
  at::Tensor xp = at::zeros({m, kp}, xb.options());
  const uint16_t* src = reinterpret_cast<const uint16_t*>(xb.data_ptr());
  uint16_t* dst = reinterpret_cast<uint16_t*>(xp.data_ptr());
  for (int64_t i = 0; i < m; ++i) {
    if (bits == 2) permute_bf16_x<2>(src + i * k, k, dst + i * kp);
    else if (bits == 4) permute_bf16_x<4>(src + i * k, k, dst + i * kp);
    else permute_bf16_x<8>(src + i * k, k, dst + i * kp);
  }
  at::Tensor y = at::empty({m, n}, xb.options().dtype(at::kFloat));
  Bf16GemvArgs a{dst, m, kp, packed.data_ptr<uint8_t>(), rb, k, bits, t.t, y.data_ptr<float>(), n};
  const int64_t chunk = std::max<int64_t>(4, (int64_t(256) << 10) / std::max<int64_t>(rb * m, 1) / 4 * 4);
  parallel_chunks(n, chunk, [&](int64_t lo, int64_t hi) { bf16_gemv_rows_avx512(a, lo, hi); });
  return y;
}

int64_t bf16_tile_rows(int64_t k, int64_t n) {
  static const int64_t bytes = env_int("WFN_BF16_GEMM_TILE_BYTES", int64_t(2) << 20);
  return std::min(n, std::max<int64_t>(16, bytes / (2 * std::max<int64_t>(k, 1)) / 16 * 16));
}

at::Tensor bf16_gemm(const at::Tensor& xb, const at::Tensor& packed, const Bf16Table& t, int bits, int64_t k) {
  const int64_t m = xb.size(0), n = packed.size(0);
  at::Tensor y = at::empty({m, n}, xb.options().dtype(at::kFloat));
  const int64_t nb = bf16_tile_rows(k, n);
  at::Tensor w = bf16_workspace(nb * k);
  for (int64_t n0 = 0; n0 < n; n0 += nb) {
    const int64_t rows = std::min(nb, n - n0);
    at::Tensor wt = w.narrow(0, 0, rows * k).view({rows, k});
    decode_parallel_u16(packed, k, bits, t.t, n0, n0 + rows, reinterpret_cast<uint16_t*>(wt.data_ptr()));
    y.narrow(1, n0, rows).copy_(at::mm(xb, wt.t()));
  }
  return y;
}

// bf16 arithmetic in hardware: AVX512_BF16 at the active level (AMX CPUs have it too). Without it oneDNN
// emulates bf16 GEMMs and convs in software (AMD Zen 3, 1 thread: a 64-channel 3x3 conv on 56x56 takes
// 103 ms in bf16 against 4.3 ms in fp32), so the bf16 mode runs its arithmetic on the fp32 kernels there:
// x rounded to bf16 once and widened (exact), the bf16-exact weights in fp32, products and sums in fp32.
bool native_bf16() { return active_isa() == Isa::Avx512 && (hardware_has_avx512_bf16() || amx_bf16_available()); }

// Large M without AMX: the AVX-512 vdpbf16ps panel kernel (panel_gemm_avx512.cpp), fp32 output.
bool use_bf16_panel() {
  return active_isa() == Isa::Avx512 && hardware_has_avx512_bf16() && panel_gemm_enabled() && !amx_bf16_available();
}

at::Tensor bf16_panel(const at::Tensor& xb, const at::Tensor& packed, const Bf16Table& t, int bits, int64_t k) {
  const int64_t m = xb.size(0), n = packed.size(0), kp = (k + 63) / 64 * 64;
  at::Tensor xp = kp == k ? xb : at::zeros({m, kp}, xb.options());
  if (kp != k) xp.narrow(1, 0, k).copy_(xb);
  at::Tensor y = at::empty({m, n}, xb.options().dtype(at::kFloat));
  const PanelGemmArgs a{xp.data_ptr(), m, kp, nullptr, packed.data_ptr<uint8_t>(), packed.size(1), k, bits, t.t,
                        y.data_ptr<float>(), n};
  bf16_panel_gemm_avx512(a, n);
  return y;
}

at::Tensor bf16_linear_cpu(const at::Tensor& x, const at::Tensor& packed, const at::Tensor& codebook, int64_t bits,
                           int64_t k, const std::optional<at::Tensor>& bias) {
  TORCH_CHECK(x.dim() == 2 && x.size(1) == k, "x must be 2-D (M, K) with K=", k);
  const Bf16Table t = make_table(codebook, bits);
  check_packed(packed, bits, k);
  const at::Tensor pc = packed.contiguous();
  const int64_t m = x.size(0), n = pc.size(0);
  at::Tensor y;
  if (m == 0 || n == 0 || k == 0) {
    y = at::zeros({m, n}, x.options().dtype(at::kFloat));
  } else {
    const at::Tensor xb = x.to(at::kBFloat16).contiguous();
    if (m >= amx_min_m(1) && amx_bf16_available()) {
      y = amx_bf16_linear(xb, 1, pc, t.t, int(bits), k);
    } else if (!native_bf16()) {
      y = linear_dispatch(xb.to(at::kFloat), pc, codebook.contiguous(), bits, k);
    } else if (m >= bf16_gemm_min_m()) {
      y = use_bf16_panel() ? bf16_panel(xb, pc, t, int(bits), k) : bf16_gemm(xb, pc, t, int(bits), k);
    } else if (active_isa() == Isa::Avx512 && hardware_has_avx512_bf16()) {
      y = bf16_gemv(xb, pc, t, int(bits), k);
    } else {
      y = linear_dispatch(xb.to(at::kFloat), pc, codebook.contiguous(), bits, k);
    }
  }
  if (bias.has_value() && bias->defined()) y.add_(bias->to(at::kFloat));
  return y.to(x.scalar_type());
}

// Decode into the reused bf16 workspace and run oneDNN's bf16 conv (channels_last for a channels_last input,
// as at::conv2d). hwc: the codes are in (O, kh, kw, C) order and the weight is their channels_last view.
at::Tensor bf16_onednn_conv(const at::Tensor& x, const at::Tensor& packed, const Bf16Table& t, int64_t bits,
                            at::IntArrayRef weight_shape, const std::optional<at::Tensor>& bias,
                            at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                            bool hwc) {
  const int64_t n = weight_shape[0], k = weight_shape[1] * weight_shape[2] * weight_shape[3];
  at::Tensor w = bf16_workspace(std::max<int64_t>(n * k, 1)).narrow(0, 0, n * k);
  decode_parallel_u16(packed, k, int(bits), t.t, 0, n, reinterpret_cast<uint16_t*>(w.data_ptr()));
  const at::Tensor wv = hwc ? w.view({n, weight_shape[2], weight_shape[3], weight_shape[1]}).permute({0, 3, 1, 2})
                            : w.view(weight_shape);
  at::Tensor y = at::conv2d(x.to(at::kBFloat16), wv, {}, stride, padding, dilation, groups);
  const bool has_bias = bias.has_value() && bias->defined();
  // bf16 in, no bias: oneDNN's output is already the fp32 sums rounded once to x's dtype (no round trip)
  if (!has_bias && x.scalar_type() == at::kBFloat16) return y.contiguous(x.suggest_memory_format());
  y = y.to(at::kFloat);
  if (has_bias) y.add_(bias->to(at::kFloat).view({1, n, 1, 1}));
  return y.to(x.scalar_type()).contiguous(x.suggest_memory_format());
}

// The conv ops' argument checks; the codebook's bf16 table.
Bf16Table checked_conv_table(const at::Tensor& packed, const at::Tensor& codebook, int64_t bits,
                             at::IntArrayRef weight_shape) {
  TORCH_CHECK(weight_shape.size() == 4, "weight_shape must have 4 entries");
  const int64_t k = weight_shape[1] * weight_shape[2] * weight_shape[3], n = weight_shape[0];
  Bf16Table t = make_table(codebook, bits);
  check_packed(packed, bits, k);
  TORCH_CHECK(packed.size(0) == n, "packed has ", packed.size(0), " rows, expected out_channels=", n);
  return t;
}

at::Tensor bf16_conv2d_cpu(const at::Tensor& x, const at::Tensor& packed, const at::Tensor& codebook, int64_t bits,
                           at::IntArrayRef weight_shape, const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                           at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  const Bf16Table t = checked_conv_table(packed, codebook, bits, weight_shape);
  const int64_t k = weight_shape[1] * weight_shape[2] * weight_shape[3], n = weight_shape[0];
  const int64_t pixels = x.size(0) * conv_out_size(x, weight_shape, stride, padding, dilation, 0) *
                         conv_out_size(x, weight_shape, stride, padding, dilation, 1);
  if (groups == 1 && amx_conv_ok(pixels, k)) {  // im2col + AMX tiles, fp32 output (no bf16 output rounding)
    at::Tensor y = amx_bf16_conv2d(x.to(at::kBFloat16), 1, packed.contiguous(), t.t, int(bits), weight_shape, stride,
                                   padding, dilation);
    if (bias.has_value() && bias->defined()) y.add_(bias->to(at::kFloat).view({1, n, 1, 1}));
    return y.to(x.scalar_type()).contiguous(x.suggest_memory_format());
  }
  if (!native_bf16()) {  // the fp32 conv on bf16-rounded x (the memory format is kept)
    at::Tensor y = conv2d_dispatch(x.to(at::kBFloat16).to(at::kFloat), packed.contiguous(), codebook.contiguous(), bits,
                                   weight_shape, bias, stride, padding, dilation, groups);
    return y.to(x.scalar_type()).contiguous(x.suggest_memory_format());
  }
  return bf16_onednn_conv(x, packed.contiguous(), t, bits, weight_shape, bias, stride, padding, dilation, groups,
                          false);
}

// bf16_conv2d with each output channel's codes in (kh, kw, C) order (WFNConv2d re-lays them so for
// channels_last inputs): the decode then writes the channels_last weight a channels_last conv reads, which
// at::conv2d would otherwise copy out of (O, C, kh, kw) on every call (~1.7 ms for a 512-channel 3x3 conv
// on one Zen 4 core, more than the decode itself). Only where oneDNN runs bf16 natively.
at::Tensor bf16_conv2d_hwc_cpu(const at::Tensor& x, const at::Tensor& packed, const at::Tensor& codebook, int64_t bits,
                               at::IntArrayRef weight_shape, const std::optional<at::Tensor>& bias,
                               at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                               int64_t groups) {
  const Bf16Table t = checked_conv_table(packed, codebook, bits, weight_shape);
  TORCH_CHECK(native_bf16(), "bf16_conv2d_hwc: needs bf16 arithmetic (AVX512_BF16 or AMX) at the active dispatch "
              "level; use bf16_conv2d with canonical codes");
  return bf16_onednn_conv(x, packed.contiguous(), t, bits, weight_shape, bias, stride, padding, dilation, groups,
                          true);
}

}  // namespace
}  // namespace wfn

TORCH_LIBRARY_IMPL(wfn, CPU, m) {
  m.impl("bf16_linear", &wfn::bf16_linear_cpu);
  m.impl("bf16_conv2d", &wfn::bf16_conv2d_cpu);
  m.impl("bf16_conv2d_hwc", &wfn::bf16_conv2d_hwc_cpu);
}

TORCH_LIBRARY_FRAGMENT(wfn_cpu, m) {
  // Force the M threshold of the bf16 decode-tile + at::mm path (-1: default); returns the previous.
  m.def("set_bf16_gemm_min_m(int m) -> int", &wfn::set_bf16_gemm_min_m_op);
  m.def("bf16_capability() -> str", []() {
    return std::string(wfn::native_bf16() ? (wfn::hardware_has_avx512_bf16() ? "avx512_bf16" : "amx")
                                          : "fp32 kernels (no bf16 arithmetic on this CPU)");
  });
}
