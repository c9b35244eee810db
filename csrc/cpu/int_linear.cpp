// CPU kernels of the int8 compute mode (schemas and the reference spec: wfn_kernels/ops/int8.py):
//   wfn::int_linear(xq int8 (M, K), packed, int_table, bits, K) -> int32 (M, N)   the exact integer product
//   wfn::int8_linear(x float (M, K), packed, int_table, bits, K, step, bias) -> (M, N) in x's dtype
//   wfn::int8_conv2d(x (B, C, H, W), packed, int_table, bits, weight_shape, bias, stride, padding,
//                    dilation, groups, step)
// int8_linear quantises each activation row (per token; per output pixel of the conv's GEMM view):
// scale = max|x| / 127 (1 for an all-zero row), xq = clamp(round_half_even(x * (1 / scale)), -127, 127), then
// y = float(int_linear(xq)) * (scale * step) + bias, the same float operations in the same order as the
// reference, so the result is bit-identical to it. A row with a NaN or Inf gives NaN outputs.
//
// Paths (int_kernels.h): small M runs the fused lookup + dot-product GEMV; from M >= int_gemm_min_m, on
// AVX-512 VNNI CPUs without AMX, the panel kernel (panel_gemm_avx512.cpp); elsewhere a tile of weight rows
// (~1 MB) is decoded to int8 and multiplied by at::_int_mm (oneDNN's int8 GEMM), or, on CPUs without int8
// dot-product instructions, at the AVX2 level the int16 vpmaddwd GEMM (int16_gemm_avx2.cpp: panels of
// decoded weights, from M >= 128 for int8 tables and M >= 32 for int16 ones), else decoded to float and
// multiplied exactly on the fp32 GEMM (int_gemm_fp32.h). No whole-weight copy exists. int16 weights take
// two int8 GEMMs on the oneDNN path (w = 256 * hi + lo, lo in [-128, 127]).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cpuid.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>

#include "amx_gemm.h"
#include "int_gemm_fp32.h"
#include "int_kernels.h"

namespace wfn {

bool hardware_has_avx512_vnni() {
  static const bool v = [] {
    __builtin_cpu_init();
    return hardware_isa() == Isa::Avx512 && __builtin_cpu_supports("avx512vnni");
  }();
  return v;
}

bool hardware_has_avx512_bf16() {
  static const bool v = [] {
    __builtin_cpu_init();
    return hardware_isa() == Isa::Avx512 && __builtin_cpu_supports("avx512bf16");
  }();
  return v;
}

std::atomic<bool>& panel_gemm_flag() {
  static std::atomic<bool> v{[] {
    const char* e = std::getenv("WFN_PANEL_GEMM");
    return !(e != nullptr && std::strcmp(e, "0") == 0);
  }()};
  return v;
}

bool panel_gemm_enabled() { return panel_gemm_flag().load(); }

// AMX-INT8 (CPUID.(EAX=7, ECX=0):EDX bit 25): oneDNN's int8 GEMM runs on tiles there and wins from small M.
bool hardware_has_amx_int8() {
  static const bool v = [] {
    unsigned a = 0, b = 0, c = 0, d = 0;
    return __get_cpuid_count(7, 0, &a, &b, &c, &d) != 0 && ((d >> 25) & 1u) != 0;
  }();
  return v;
}

std::string panel_capability() {
  if (!panel_gemm_enabled()) return "off: turned off (WFN_PANEL_GEMM=0 or set_panel_gemm(False))";
  const bool avx512 = active_isa() == Isa::Avx512;
  const bool i8 = avx512 && hardware_has_avx512_vnni() && !hardware_has_amx_int8();
  const bool b16 = avx512 && hardware_has_avx512_bf16() && !amx_bf16_available();
  if (i8 && b16) return "int8, bf16";
  if (i8) return "int8";
  if (b16) return "bf16";
  if (!avx512) return "off: needs the AVX-512 level";
  if (hardware_has_amx_int8() || amx_bf16_available()) return "off: AMX present (its tile paths run instead)";
  return "off: needs AVX-512 VNNI or AVX512_BF16";
}

Isa int_isa() {
  const Isa a = active_isa();
  return a == Isa::Avx512 && !hardware_has_avx512_vnni() ? Isa::Avx2 : a;
}

namespace {

int64_t env_int(const char* name, int64_t fallback) {
  const char* v = std::getenv(name);
  return (v != nullptr && *v != '\0') ? std::atoll(v) : fallback;
}

// Smallest M that takes the decode-tile + at::_int_mm path (WFN_INT_GEMM_MIN_M or
// torch.ops.wfn_cpu.set_int_gemm_min_m override; bench/bench_modes.py measures both paths).
std::atomic<int64_t>& int_gemm_min_m_override() {
  static std::atomic<int64_t> v{env_int("WFN_INT_GEMM_MIN_M", -1)};
  return v;
}


// Crossovers (N=4096, K=14336, 4-bit, 1 thread): 16 was chosen on an Intel Xeon with AMX; measured on
// an AMD EPYC Zen 5 (VNNI, no AMX; bench/results/int8_paths_zen5.md): GEMV ahead up to M=64 (20.6 vs 22.8
// ms), GEMM from M=128 (37.5 vs 42.2).
bool use_panel(Isa isa, bool narrow);

// The large-M int8 linear product on the AVX2 int16 GEMM (int16_gemm_avx2.cpp) at the AVX2 level: by default
// where the CPU has no int8 dot-product instructions (use_fp32_int_gemm). set_avx2_int16_gemm(mode): 1 on,
// 0 off (the exact fp32 GEMM, or oneDNN's int8 GEMM without the fp32 setting), -1 the default.
std::atomic<int64_t>& avx2_gemm_override() {
  static std::atomic<int64_t> v{env_int("WFN_AVX2_INT16_GEMM", -1)};
  return v;
}
// The AVX2 integer kernels' switches: at the AVX2 level, on where forced (mode >= 1), else by default where
// the CPU has no int8 dot-product instructions.
bool avx2_switch_on(Isa isa, const std::atomic<int64_t>& mode) {
  if (isa != Isa::Avx2) return false;
  const int64_t forced = mode.load();
  return forced >= 0 ? forced >= 1 : use_fp32_int_gemm();
}
bool use_avx2_gemm(Isa isa) { return avx2_switch_on(isa, avx2_gemm_override()); }

// With the VNNI panel kernel (bench/results/panel_gemm_zen5.md, 1 and 2 threads): GEMV ahead up to M=48,
// the panel kernel from M=64.
// The AVX2 int16 GEMM against the AVX2 GEMVs (AMD Zen 3, N=4096, K=14336, 4-bit, bench/results/
// int16_gemm_zen3.md, 1 / 2 threads): int8 tables level at M=64 (1.01x / 0.98x), 0.98x / 1.09x at M=128,
// 1.10x / 1.02x at M=256; int16 tables ahead from M=32 (1.13x / 1.18x; M=16: 0.87x).
int64_t int_gemm_min_m(Isa isa, bool narrow) {
  const int64_t forced = int_gemm_min_m_override().load();
  if (forced >= 0) return forced;
  if (isa == Isa::Scalar) return 2;
  if (hardware_has_amx_int8()) return 16;
  if (use_avx2_gemm(isa)) return narrow ? 128 : 32;
  if (isa == Isa::Avx2 && use_fp32_int_gemm()) return std::numeric_limits<int64_t>::max();  // conv_rows_on_gemv
  return use_panel(isa, true) ? 64 : 128;
}

int64_t set_int_gemm_min_m_op(int64_t m) { return int_gemm_min_m_override().exchange(m); }

// The large-M int8 product on the AVX-512 VNNI panel kernel (panel_gemm_avx512.cpp) instead of decoded
// tiles + at::_int_mm: narrow tables, VNNI, no AMX-INT8 (oneDNN's int8 GEMM runs on tiles there).
bool use_panel(Isa isa, bool narrow) {
  return narrow && isa == Isa::Avx512 && !hardware_has_amx_int8() && panel_gemm_enabled();
}

// The int8 conv on the AVX2 kernels (conv_int8_avx2.cpp) at the AVX2 level: vpmaddubsw for narrow tables,
// vpmaddwd for int16 ones; by default where the CPU has no int8 dot-product instructions
// (use_fp32_int_gemm), where they beat both the exact fp32 GEMM and the GEMV on im2col rows
// (bench/results/conv_int8_zen3.md; int16 tables: bench/results/fixed_model_modes_zen3.md).
// torch.ops.wfn_cpu.set_avx2_int8_conv(mode) forces it: 1 on, 0 off, -1 the default, 2 on with the
// vpmaddwd kernel for narrow tables too (level with vpmaddubsw on Zen 3: 0.99x over ResNet-18's convs at
// batch 1, 0.93-1.00x at batch 8, 1 thread).
std::atomic<int64_t>& avx2_conv_override() {
  static std::atomic<int64_t> v{env_int("WFN_AVX2_INT8_CONV", -1)};
  return v;
}
bool use_avx2_conv(Isa isa) { return avx2_switch_on(isa, avx2_conv_override()); }

// set_avx2_int8_conv(2): narrow tables on the int16 kernel too (measurement switch).
bool avx2_conv_int16_all() { return avx2_conv_override().load() == 2; }

struct IntTable {
  int16_t t[256] = {0};
  int8_t lo[256] = {0};  // narrow: the weights; wide: low byte (signed) of each weight
  int8_t hi[256] = {0};  // wide only: (w - lo) / 256
  bool narrow = true;
};

IntTable make_table(const at::Tensor& table, int64_t bits) {
  TORCH_CHECK(table.scalar_type() == at::kShort && table.dim() == 1, "int_table must be a 1-D int16 tensor, got ",
              table.scalar_type(), " of shape ", table.sizes());
  TORCH_CHECK(table.numel() >= 1 && table.numel() <= (int64_t(1) << bits), "int_table has ", table.numel(),
              " entries; ", bits, "-bit codes index 1 to ", int64_t(1) << bits);
  IntTable t;
  const at::Tensor tc = table.contiguous();
  const int16_t* src = tc.data_ptr<int16_t>();
  for (int64_t c = 0; c < tc.numel(); ++c) {
    TORCH_CHECK(src[c] >= -32768 + 0 && src[c] <= 32639, "int_table entry ", src[c],
                " is outside the supported int16 range [-32768, 32639]");
    t.t[c] = src[c];
    if (src[c] < -128 || src[c] > 127) t.narrow = false;
  }
  for (int c = 0; c < 256; ++c) {
    t.lo[c] = t.narrow ? int8_t(t.t[c]) : int8_t(uint8_t(t.t[c] & 0xff));
    t.hi[c] = t.narrow ? int8_t(0) : int8_t((int32_t(t.t[c]) - int32_t(t.lo[c])) / 256);
  }
  return t;
}

void check_int_args(const at::Tensor& packed, int64_t bits, int64_t k, const IntTable& t) {
  TORCH_CHECK(bits == 2 || bits == 4 || bits == 8, "bits must be one of (2, 4, 8), got ", bits);
  TORCH_CHECK(packed.scalar_type() == at::kByte && packed.dim() == 2,
              "packed codes must be a 2-D uint8 tensor (N, row_bytes)");
  TORCH_CHECK(packed.size(1) == (k * bits + 7) / 8, "packed codes have ", packed.size(1), " bytes per row, expected ",
              (k * bits + 7) / 8, " for K=", k, " at ", bits, " bits");
  int64_t wmax = 0;
  for (int c = 0; c < 256; ++c) wmax = std::max<int64_t>(wmax, std::abs(int64_t(t.t[c])));
  TORCH_CHECK(k * 127 * std::max<int64_t>(255, wmax) < (int64_t(1) << 31), "in_features=", k,
              " with integer weights up to ", wmax, " could overflow the int32 accumulator");
}

// Wide (int16) tables with 2/4-bit codes run the AVX2 GEMV's two-LUT decode at the AVX2 and AVX-512 levels.
// The other wide GEMVs decode element by element: on Zen 3 (AVX2 file) that took 130 ms at M = 1, N=4096,
// K=14336, 4-bit, against 2.8 ms for the LUT kernel; the AVX-512 file's loop is the same.
bool wide_lut_gemv(Isa isa, bool narrow, int bits) { return !narrow && bits != 8 && isa != Isa::Scalar; }

// Where activation element e of a row goes in the level's GEMV order (int_kernels.h).
struct XLayout {
  int64_t bb = 1, e = 1, stride = 0;
  int64_t pos(int64_t el) const {
    if (bb == 1) return el;
    const int64_t eb = bb * e, blk = el / eb, w = el % eb;
    return blk * eb + (w % e) * bb + w / e;
  }
};

XLayout x_layout(Isa isa, bool gemv, bool narrow, int bits, int64_t row_bytes, int64_t k) {
  XLayout l;
  if (!gemv && use_panel(isa, narrow)) {  // natural order, zero-padded past k (the panel kernel reads dwords)
    l.stride = (k + 63) / 64 * 64;
    return l;
  }
  // block/phase order: narrow tables at the SIMD levels, and the wide ones of the AVX2 LUT kernel
  // (wide_lut_gemv, 32-byte blocks at both levels); the other wide paths read x in natural order
  const bool lut = wide_lut_gemv(isa, narrow, bits);
  if (gemv && isa != Isa::Scalar && (narrow || lut)) {
    l.bb = isa == Isa::Avx512 && !lut ? 64 : 32;
    l.e = 8 / bits;
    l.stride = (row_bytes + l.bb - 1) / l.bb * l.bb * l.e;
  } else {
    l.stride = gemv ? (k + 63) / 64 * 64 : k;  // the GEMM path hands x to at::_int_mm as a dense (M, K)
  }
  return l;
}

// src[0 .. k) into the layout at dst (one row; bytes past k untouched). A whole block moves as a
// (bb, e) -> (e, bb) transpose, with no per-element division.
void to_layout(const int8_t* src, int64_t k, const XLayout& l, int8_t* dst) {
  if (l.bb == 1) {
    std::memcpy(dst, src, size_t(k));
    return;
  }
  const int64_t eb = l.bb * l.e;
  int64_t b0 = 0;
  if (l.e == 2 && (l.bb == 32 || l.bb == 64) && active_isa() != Isa::Scalar) {  // 4-bit codes: SIMD transpose
    deinterleave2_avx2(src, k / eb, l.bb, dst);
    b0 = k / eb * eb;
  }
  for (; b0 + eb <= k; b0 += eb)
    for (int64_t p = 0; p < l.e; ++p)
      for (int64_t w = 0; w < l.bb; ++w) dst[b0 + p * l.bb + w] = src[b0 + w * l.e + p];
  for (int64_t el = b0; el < k; ++el) dst[l.pos(el)] = src[el];
}

// Quantised rows: xq (M, stride) int8 in the layout, per-row scale, sum and finiteness.
struct QRows {
  at::Tensor xq;
  std::vector<float> scale;
  std::vector<int32_t> sum;
  std::vector<uint8_t> bad;
};

inline float row_scale(float amax) { return amax > 0.f ? amax / 127.f : 1.f; }


QRows quantize_rows(const at::Tensor& x, const XLayout& l) {
  const int64_t m = x.size(0), k = x.size(1);
  QRows q;
  q.xq = l.stride == k ? at::empty({m, k}, x.options().dtype(at::kChar))
                       : at::zeros({m, l.stride}, x.options().dtype(at::kChar));
  q.scale.assign(size_t(m), 1.f);
  q.sum.assign(size_t(m), 0);
  q.bad.assign(size_t(m), 0);
  const float* src = x.data_ptr<float>();
  int8_t* dst = q.xq.data_ptr<int8_t>();
  const bool simd = active_isa() != Isa::Scalar;
  const bool z = active_isa() == Isa::Avx512;
  auto amax_fn = z ? amax_avx512 : amax_avx2;
  auto quantize_fn = z ? quantize_avx512 : quantize_avx2;
  at::parallel_for(0, m, 64, [&](int64_t lo, int64_t hi) {
    std::vector<int8_t> tmp(simd && l.bb != 1 ? size_t(k) : 0);
    for (int64_t i = lo; i < hi; ++i) {
      const float* s = src + i * k;
      if (simd) {  // same arithmetic, 16 (AVX-512) or 8 (AVX2) lanes at a time
        bool finite = true;
        const float amax = amax_fn(s, k, &finite);
        int8_t* o = dst + i * l.stride;
        if (!finite) {
          q.bad[size_t(i)] = 1;
          std::memset(o, 0, size_t(l.stride));
          continue;
        }
        const float sc = row_scale(amax);
        q.scale[size_t(i)] = sc;
        if (l.bb == 1) {
          q.sum[size_t(i)] = quantize_fn(s, k, 1.f / sc, o);
        } else {
          q.sum[size_t(i)] = quantize_fn(s, k, 1.f / sc, tmp.data());
          to_layout(tmp.data(), k, l, o);
        }
        continue;
      }
      float amax = 0.f;
      bool finite = true;
      for (int64_t e = 0; e < k; ++e) {
        const float a = std::fabs(s[e]);
        finite &= a <= std::numeric_limits<float>::max();  // false for Inf and NaN
        amax = std::max(amax, a);
      }
      int8_t* o = dst + i * l.stride;
      if (!finite) {
        q.bad[size_t(i)] = 1;
        std::memset(o, 0, size_t(l.stride));
        continue;
      }
      const float sc = row_scale(amax);
      q.scale[size_t(i)] = sc;
      const float inv = 1.f / sc;
      int32_t sum = 0;
      if (l.bb == 1) {
        for (int64_t e = 0; e < k; ++e) { o[e] = quantize(s[e], inv); sum += o[e]; }
      } else {
        for (int64_t e = 0; e < k; ++e) {
          const int8_t v = quantize(s[e], inv);
          o[l.pos(e)] = v;
          sum += v;
        }
      }
      q.sum[size_t(i)] = sum;
    }
  });
  return q;
}

// Already-quantised int8 rows (the integer spec op) into the layout.
QRows layout_rows(const at::Tensor& xq, const XLayout& l) {
  const int64_t m = xq.size(0), k = xq.size(1);
  QRows q;
  q.scale.assign(size_t(m), 1.f);
  q.bad.assign(size_t(m), 0);
  q.sum.assign(size_t(m), 0);
  if (l.stride == k && l.bb == 1) {
    q.xq = xq;
  } else {
    q.xq = at::zeros({m, l.stride}, xq.options());
  }
  const int8_t* src = xq.data_ptr<int8_t>();
  int8_t* dst = q.xq.data_ptr<int8_t>();
  for (int64_t i = 0; i < m; ++i) {
    int32_t sum = 0;
    for (int64_t e = 0; e < k; ++e) sum += src[i * k + e];
    if (dst != src) to_layout(src + i * k, k, l, dst + i * l.stride);
    q.sum[size_t(i)] = sum;
  }
  return q;
}

void int8_decode(Isa isa, const uint8_t* p, int64_t rb, int64_t k, int bits, const int8_t* t8, int64_t r0,
                 int64_t r1, int8_t* out) {
  if (isa == Isa::Avx512) int8_decode_rows_avx512(p, rb, k, bits, t8, r0, r1, out);
  else if (isa == Isa::Avx2) int8_decode_rows_avx2(p, rb, k, bits, t8, r0, r1, out);
  else int8_decode_rows_scalar(p, rb, k, bits, t8, r0, r1, out);
}

// Per-thread int8 workspace for decoded tiles (kernels.h: reused, so no per-call page faults).
int8_t* int8_workspace(int64_t bytes, int slot) {
  return static_cast<int8_t*>(workspace(slot == 0 ? kWsInt8Lo : kWsInt8Hi, bytes));
}

int64_t int_tile_rows(int64_t k, int64_t n) {
  static const int64_t bytes = env_int("WFN_INT_GEMM_TILE_BYTES", int64_t(1) << 20);
  return std::min(n, std::max<int64_t>(16, bytes / std::max<int64_t>(k, 1) / 16 * 16));
}

// Decode weight rows [n0, n0 + rows) into int8 tiles for at::_int_mm: wlo holds the int8 weights (the low
// byte of int16 ones) and whi, for int16 tables only (else nullptr), the high byte; parallel over row chunks.
void decode_int_tile(Isa isa, const uint8_t* p, int64_t rb, int64_t k, int bits, const IntTable& t, int64_t n0,
                     int64_t rows, int8_t* wlo, int8_t* whi) {
  const int64_t chunk = std::max<int64_t>(1, (int64_t(1) << 16) / std::max<int64_t>(k, 1));
  parallel_chunks(rows, chunk, [&](int64_t lo, int64_t hi) {
    int8_decode(isa, p, rb, k, bits, t.lo, n0 + lo, n0 + hi, wlo + lo * k);
    if (whi != nullptr) int8_decode(isa, p, rb, k, bits, t.hi, n0 + lo, n0 + hi, whi + lo * k);
  });
}

// Integer weight tables as floats for the fp32 GEMM path (int_gemm_fp32.h): lo (and hi for int16 tables),
// with the largest magnitude of each.
struct FloatTables {
  float lo[256], hi[256];
  int64_t lo_max = 1, hi_max = 1;
  explicit FloatTables(const IntTable& t) {
    for (int e = 0; e < 256; ++e) {
      lo[e] = float(t.narrow ? t.t[e] : t.lo[e]);
      hi[e] = float(t.hi[e]);
      lo_max = std::max<int64_t>(lo_max, std::abs(int64_t(lo[e])));
      hi_max = std::max<int64_t>(hi_max, std::abs(int64_t(hi[e])));
    }
  }
};

// The exact int32 product of x-side floats and weight rows [n0, n0 + rows) on the fp32 GEMM: weights decoded
// into float tiles (~1 MB); rows_first: y (rows, cols) = W (rows, K) @ xf (K, cols), else y (cols, rows) =
// xf (cols, K) @ W.T. wlo / whi: workspaces of rows * k floats (whi only for int16 tables).
at::Tensor int_tile_fp32(const at::Tensor& packed, int bits, int64_t k, const IntTable& t, const FloatTables& ft,
                         int64_t n0, int64_t rows, const at::Tensor& xf, bool rows_first, float* wlo, float* whi) {
  const at::TensorOptions f32 = at::TensorOptions().dtype(at::kFloat);
  auto product = [&](float* w, const float* table, int64_t wmax) {
    decode_parallel(active_isa(), packed, k, bits, table, n0, n0 + rows, w);
    const at::Tensor wt = at::from_blob(w, {rows, k}, f32);
    return rows_first ? int_mm_fp32(wt, xf, 128, wmax) : int_mm_fp32(xf, wt.t(), 128, wmax);
  };
  at::Tensor out = product(wlo, ft.lo, ft.lo_max);
  if (!t.narrow) out.add_(product(whi, ft.hi, ft.hi_max), 256);
  return out;
}

// The exact integer product y_int (M, N) for quantised rows; sink(n0, tile) receives int32 (M, rows)
// column blocks on the GEMM path, or the whole (M, N) result on the GEMV path.
template <class Sink>
void int_product(Isa isa, bool gemv, const QRows& q, const XLayout& l, int64_t m, const at::Tensor& packed,
                 const IntTable& t, int bits, int64_t k, Sink&& sink) {
  const int64_t n = packed.size(0), rb = packed.size(1);
  const uint8_t* p = packed.data_ptr<uint8_t>();
  if (gemv) {
    at::Tensor y = at::empty({m, n}, at::TensorOptions().dtype(at::kInt));
    IntGemvArgs a{q.xq.data_ptr<int8_t>(), m, l.stride, q.sum.data(), p, rb, k, bits, t.t, t.narrow,
                  y.data_ptr<int32_t>(), n};
    auto fn = wide_lut_gemv(isa, t.narrow, bits) ? int_gemv_rows_avx2
              : isa == Isa::Avx512                ? int_gemv_rows_avx512
              : isa == Isa::Avx2                  ? int_gemv_rows_avx2
                                                  : int_gemv_rows_scalar;
    const int64_t chunk = std::max<int64_t>(4, (int64_t(256) << 10) / std::max<int64_t>(rb * m, 1) / 4 * 4);
    parallel_chunks(n, chunk, [&](int64_t lo, int64_t hi) { fn(a, lo, hi); });
    sink(int64_t(0), y);
    return;
  }
  if (use_panel(isa, t.narrow)) {
    at::Tensor y = at::empty({m, n}, at::TensorOptions().dtype(at::kInt));
    const PanelGemmArgs a{q.xq.data_ptr<int8_t>(), m, l.stride, q.sum.data(), p, rb, k, bits, t.lo,
                          y.data_ptr<int32_t>(), n};
    int8_panel_gemm_avx512(a, n);
    sink(int64_t(0), y);
    return;
  }
  if (use_avx2_gemm(isa)) {  // no int8 dot-product instructions: vpmaddwd on int16 (int16_gemm_avx2.cpp)
    at::Tensor y = at::empty({m, n}, at::TensorOptions().dtype(at::kInt));
    const Int16GemmArgs a{q.xq.data_ptr<int8_t>(), m, l.stride, p, rb, k, bits, t.lo, t.narrow ? nullptr : t.hi,
                          t.t, y.data_ptr<int32_t>(), n};
    int16_gemm_avx2(a, n);
    sink(int64_t(0), y);
    return;
  }
  if (use_fp32_int_gemm()) {  // no int8 dot-product instructions: the exact product on the fp32 GEMM
    const int64_t nb = int_tile_rows(4 * k, n);
    float* wlo = reinterpret_cast<float*>(int8_workspace(4 * nb * k, 0));
    float* whi = t.narrow ? nullptr : reinterpret_cast<float*>(int8_workspace(4 * nb * k, 1));
    const FloatTables ft(t);
    const at::Tensor xf = q.xq.narrow(1, 0, k).to(at::kFloat);
    for (int64_t n0 = 0; n0 < n; n0 += nb) {
      const int64_t rows = std::min(nb, n - n0);
      sink(n0, int_tile_fp32(packed, bits, k, t, ft, n0, rows, xf, false, wlo, whi));
    }
    return;
  }
  const int64_t nb = int_tile_rows(k, n);
  int8_t* wlo = int8_workspace(nb * k, 0);
  int8_t* whi = t.narrow ? nullptr : int8_workspace(nb * k, 1);
  const at::TensorOptions i8 = at::TensorOptions().dtype(at::kChar);
  for (int64_t n0 = 0; n0 < n; n0 += nb) {
    const int64_t rows = std::min(nb, n - n0);
    decode_int_tile(isa, p, rb, k, bits, t, n0, rows, wlo, whi);
    at::Tensor out = at::_int_mm(q.xq, at::from_blob(wlo, {rows, k}, i8).t());
    if (whi != nullptr) out.add_(at::_int_mm(q.xq, at::from_blob(whi, {rows, k}, i8).t()), 256);
    sink(n0, out);
  }
}

// Without int8 dot-product instructions (no VNNI / AMX-INT8, so use_fp32_int_gemm) the lookup + vpmaddubsw
// GEMV beat the exact fp32 GEMM at every M (AMD Zen 3, N=4096 K=14336 4-bit, 1 thread: M=128 142 ms
// against 374 ms; bench/int8_paths.py); the int16 GEMM (int_gemm_min_m) now takes large M. Convs with a long
// K run the int8 linear product on their im2col rows (one row per output pixel, the quantisation's own
// unit): ResNet-18's layer4 3x3 at batch 8, 27.8 ms against 34.0 on the fp32 GEMM of quantised columns;
// with K <= 2304 the columns were level or far ahead (conv1, K=147: 69 against 209 ms; bench/conv_int8.py).
// Both now serve only where the AVX2 conv kernels are off (set_avx2_int8_conv(0); use_avx2_conv).
bool conv_rows_on_gemv(int64_t k) { return int_isa() == Isa::Avx2 && use_fp32_int_gemm() && k >= 4096; }

// K = 1 stays on the GEMV: at::_int_mm returns wrong values for K = 1 on CPU (torch 2.13, checked by
// tests/test_compute_modes.py through the forced GEMM path).
bool use_gemv(Isa isa, bool narrow, int64_t m, int64_t k) { return m < int_gemm_min_m(isa, narrow) || k < 2; }

// y (M, N) float = rescaled integer product of quantised rows; bias may be undefined.
at::Tensor int8_linear_float(const at::Tensor& xf, const at::Tensor& packed, const IntTable& t, int bits, int64_t k,
                             double step, const at::Tensor& bias) {
  const int64_t m = xf.size(0), n = packed.size(0);
  at::Tensor y = at::empty({m, n}, xf.options());
  if (m == 0 || n == 0) return y;
  const Isa isa = int_isa();
  const bool gemv = use_gemv(isa, t.narrow, m, k);
  const XLayout l = x_layout(isa, gemv, t.narrow, bits, packed.size(1), k);
  const QRows q = quantize_rows(xf, l);
  std::vector<float> s(static_cast<size_t>(m), 0.f);
  const float stepf = float(step);
  for (int64_t i = 0; i < m; ++i) s[size_t(i)] = q.scale[size_t(i)] * stepf;
  const float* b = bias.defined() ? bias.data_ptr<float>() : nullptr;
  float* yd = y.data_ptr<float>();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  int_product(isa, gemv, q, l, m, packed, t, bits, k, [&](int64_t n0, const at::Tensor& tile) {
    const int64_t cols = tile.size(1);
    const int32_t* td = tile.data_ptr<int32_t>();
    at::parallel_for(0, m, 64, [&](int64_t lo, int64_t hi) {
      for (int64_t i = lo; i < hi; ++i) {
        float* yr = yd + i * n + n0;
        const int32_t* tr = td + i * cols;
        const float si = s[size_t(i)];
        if (q.bad[size_t(i)]) {
          for (int64_t j = 0; j < cols; ++j) yr[j] = nan;
        } else if (b != nullptr) {
          for (int64_t j = 0; j < cols; ++j) {
            const float prod = float(tr[j]) * si;  // two roundings, as the reference (no FMA in this file)
            yr[j] = prod + b[n0 + j];
          }
        } else {
          for (int64_t j = 0; j < cols; ++j) yr[j] = float(tr[j]) * si;
        }
      }
    });
  });
  return y;
}

// Per output pixel of every image: amax over its receptive field, +Inf where any value there is non-finite
// (Inf and NaN count as +Inf, so "bad" is amax == Inf). One pass over the channels builds the max |x| map,
// then a separable window max: along rows (kw taps), then along columns (kh taps). x is (B, C, H, W), or
// (B, H, W, C) with nhwc.
void conv_pixel_amax(const float* x, const ConvGeom& g, int64_t batch, float* amax, bool nhwc = false) {
  const int64_t hw = g.h * g.w, l = g.oh * g.ow;
  const float inf = std::numeric_limits<float>::infinity(), big = std::numeric_limits<float>::max();
  TORCH_CHECK(!nhwc || active_isa() == Isa::Avx512, "the channels_last amax needs AVX-512 (the NHWC kernel's level)");
  if (nhwc && g.kh == 1 && g.kw == 1) {  // 1x1: each output pixel reads one
    at::parallel_for(0, batch * l, 256, [&](int64_t lo, int64_t hi) {   // input pixel (a strided one skips 3/4)
      for (int64_t j = lo; j < hi; ++j) {
        const int64_t bi = j / l, oh = (j % l) / g.ow, ow = j % g.ow;
        const int64_t ih = oh * g.sh - g.ph, iw = ow * g.sw - g.pw;
        amax[j] = 0.f;
        if (ih >= 0 && ih < g.h && iw >= 0 && iw < g.w) absmax_pixels_avx512(x + ((bi * g.h + ih) * g.w + iw) * g.c, 1, g.c, amax + j);
      }
    });
    return;
  }
  at::parallel_for(0, batch, 1, [&](int64_t lo, int64_t hi) {
    std::vector<float> am(static_cast<size_t>(hw)), rows(static_cast<size_t>(g.h * g.ow));
    for (int64_t bi = lo; bi < hi; ++bi) {
      float* a = am.data();
      if (nhwc) {
        absmax_pixels_avx512(x + bi * g.c * hw, hw, g.c, a);
      } else if (active_isa() == Isa::Avx512) {
        absmax_planes_avx512(x + bi * g.c * hw, g.c, hw, a);
      } else if (active_isa() == Isa::Avx2) {
        absmax_planes_avx2(x + bi * g.c * hw, g.c, hw, a);
      } else {
        std::fill(am.begin(), am.end(), 0.f);
        for (int64_t c = 0; c < g.c; ++c) {
          const float* xc = x + (bi * g.c + c) * hw;
          for (int64_t p = 0; p < hw; ++p) {
            float v = std::fabs(xc[p]);
            v = v <= big ? v : inf;  // NaN -> Inf
            a[p] = a[p] > v ? a[p] : v;
          }
        }
      }
      for (int64_t ih = 0; ih < g.h; ++ih)  // rows[ih][ow] = max over kernel columns inside the row
        for (int64_t ow = 0; ow < g.ow; ++ow) {
          float m = 0.f;
          for (int64_t b = 0; b < g.kw; ++b) {
            const int64_t iw = ow * g.sw + b * g.dw - g.pw;
            if (iw >= 0 && iw < g.w) m = std::max(m, a[ih * g.w + iw]);
          }
          rows[size_t(ih * g.ow + ow)] = m;
        }
      float* out = amax + bi * l;
      for (int64_t oh = 0; oh < g.oh; ++oh) {
        float* o = out + oh * g.ow;
        std::fill(o, o + g.ow, 0.f);
        for (int64_t k = 0; k < g.kh; ++k) {
          const int64_t ih = oh * g.sh + k * g.dh - g.ph;
          if (ih < 0 || ih >= g.h) continue;
          const float* r = rows.data() + ih * g.ow;
          for (int64_t ow = 0; ow < g.ow; ++ow) o[ow] = o[ow] > r[ow] ? o[ow] : r[ow];
        }
      }
    }
  });
}

// Per output pixel: the receptive field's amax (conv_pixel_amax), the quantiser's 1 / scale, and the output
// scale s = scale * step (NaN for a pixel with a non-finite input, which makes its outputs NaN).
struct PixelScales {
  std::vector<float> amax, inv, s;
};
PixelScales conv_pixel_scales(const float* x, const ConvGeom& g, int64_t batch, double step, bool nhwc) {
  const size_t ml = size_t(batch * g.oh * g.ow);
  PixelScales p{std::vector<float>(ml, 0.f), std::vector<float>(ml, 1.f), std::vector<float>(ml, 0.f)};
  conv_pixel_amax(x, g, batch, p.amax.data(), nhwc);
  const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
  for (size_t j = 0; j < ml; ++j) {
    const float scale = p.amax[j] == inf ? 1.f : row_scale(p.amax[j]);
    p.inv[j] = 1.f / scale;
    p.s[j] = p.amax[j] == inf ? nan : scale * float(step);
  }
  return p;
}

// y[j] = float(acc[j]) * s[j] (+ bias): as the reference, rescale then add, two roundings (this file is
// built without FMA, so the compiler cannot fuse them). Plain loops: they vectorise.
void rescale_span(const int32_t* acc, const float* s, int64_t n, bool has_bias, float bias, float* y) {
  if (has_bias) {
    for (int64_t j = 0; j < n; ++j) y[j] = float(acc[j]) * s[j] + bias;
  } else {
    for (int64_t j = 0; j < n; ++j) y[j] = float(acc[j]) * s[j];
  }
}

// The optional epilogue of int8_conv2d_post: a per-channel affine (a folded eval BatchNorm), then ReLU.
struct ConvPost {
  at::Tensor scale, shift;  // (n) float32 contiguous, or undefined
  bool relu = false;
  bool any() const { return scale.defined() || relu; }
  // The same arithmetic as the fused epilogue, as separate passes over y: multiply, add, max(0, y).
  void apply(at::Tensor& y) const {
    const int64_t n = y.size(1);
    if (scale.defined()) y.mul_(scale.view({1, n, 1, 1})).add_(shift.view({1, n, 1, 1}));
    if (relu) y.clamp_min_(0);
  }
};

// The channels_last int8 conv on VNNI CPUs without AMX (conv_int8_avx512.cpp): x (B, H, W, C) fp32
// contiguous, y (B, n, OH, OW) in channels_last memory; the same scales and integers as the NCHW kernel,
// and the epilogue applied in registers.
at::Tensor int8_conv_nhwc(const at::Tensor& x, const ConvGeom& g, const at::Tensor& packed, const IntTable& t,
                          int bits, int64_t k, double step, const at::Tensor& bias, const int64_t (&out_hw)[2],
                          const ConvPost& post) {
  const int64_t batch = x.size(0), n = packed.size(0);
  const PixelScales ps = conv_pixel_scales(x.data_ptr<float>(), g, batch, step, true);
  at::Tensor y = at::empty({batch, n, out_hw[0], out_hw[1]}, x.options().memory_format(at::MemoryFormat::ChannelsLast));
  int8_t* wpk = int8_workspace(int8_conv_nhwc_workspace_bytes(g, n), 0);
  Int8ConvNhwcArgs args{x.data_ptr<float>(), g, batch, packed.data_ptr<uint8_t>(), packed.size(1), bits, t.lo, n, k,
                        ps.inv.data(), ps.s.data(), bias.defined() ? bias.data_ptr<float>() : nullptr,
                        y.data_ptr<float>(), wpk};
  if (post.scale.defined()) args.post_scale = post.scale.data_ptr<float>(), args.post_shift = post.shift.data_ptr<float>();
  args.relu = post.relu;
  int8_conv_nhwc_vnni(args);
  return y;
}

// The int8 conv. A pixel's scale needs the max |x| over its receptive field: the kh x kw window max of the
// channel-wise max |x| map (max is exact, so it equals the max over the im2col column). On VNNI CPUs
// without AMX the fused kernel (conv_int8_avx512.cpp) does the rest. Elsewhere the conv is a transposed
// GEMM on im2col columns, so nothing is transposed: column j of image b is output pixel j, its rows
// (c, kh, kw)-major like the weight rows; the columns are quantised per output pixel straight from the
// input into q (K, B * L) int8 (no fp32 im2col block exists), and each decoded weight tile W (rows, K) gives
// y_int (rows, B * L) = at::_int_mm(W, q) (or AMX-INT8 tiles), rescaled straight into the NCHW output.
at::Tensor int8_conv_columns(const at::Tensor& x, const ConvGeom& g, const at::Tensor& packed, const IntTable& t,
                             int bits, int64_t k, double step, const at::Tensor& bias, const int64_t (&out_hw)[2],
                             const ConvPost& post, bool* post_done) {
  *post_done = false;
  const int64_t batch = x.size(0), l = g.oh * g.ow, n = packed.size(0), ml = batch * l;
  const Isa isa = int_isa();
  const bool simd = active_isa() != Isa::Scalar;
  auto quantize_span = active_isa() == Isa::Avx512 ? quantize_span_avx512 : quantize_span_avx2;
  const float* src = x.data_ptr<float>();
  const PixelScales ps = conv_pixel_scales(src, g, batch, step, false);
  const std::vector<float>&amax = ps.amax, &inv = ps.inv, &s = ps.s;
  const float inf = std::numeric_limits<float>::infinity();
  at::Tensor y = at::empty({batch, n, out_hw[0], out_hw[1]}, x.options());
  float* yd = y.data_ptr<float>();
  const float* bptr = bias.defined() ? bias.data_ptr<float>() : nullptr;
  const uint8_t* p = packed.data_ptr<uint8_t>();
  const int64_t rb = packed.size(1);
  if (use_panel(isa, t.narrow)) {  // fused gather + quantise + VNNI product + rescale (conv_int8_avx512.cpp)
    const int64_t kp = (k + 3) / 4 * 4;
    int8_t* w = int8_workspace(n * kp, 0);
    std::vector<int32_t> comp(size_t(n), 0);
    parallel_chunks(n, std::max<int64_t>(1, (int64_t(1) << 16) / kp), [&](int64_t lo, int64_t hi) {
      int8_decode_rows_avx512(p, rb, k, bits, t.lo, lo, hi, w + lo * kp, kp);
      for (int64_t r = lo; r < hi; ++r) std::memset(w + r * kp + k, 0, size_t(kp - k));
      int8_row_sums_vnni(w + lo * kp, hi - lo, kp, comp.data() + lo);
      for (int64_t r = lo; r < hi; ++r) comp[size_t(r)] *= -128;
    });
    int8_conv_vnni({src, g, batch, w, comp.data(), n, k, kp, inv.data(), s.data(), bptr, yd});
    return y;
  }
  if (use_avx2_conv(isa) && (!t.narrow || avx2_conv_int16_all())) {  // int16 weights: vpmaddwd
    const int64_t kp = (k + 1) / 2 * 2;
    int16_t* w = reinterpret_cast<int16_t*>(int8_workspace(2 * n * kp, 0));
    parallel_chunks(n, std::max<int64_t>(1, (int64_t(1) << 15) / kp), [&](int64_t lo, int64_t hi) {
      std::vector<int8_t> blo(static_cast<size_t>(k)), bhi(static_cast<size_t>(k));  // decode scratch
      for (int64_t r = lo; r < hi; ++r) {
        int16_decode_row_avx2(p + r * rb, k, bits, t.lo, t.narrow ? nullptr : t.hi, t.t, w + r * kp, blo.data(),
                              bhi.data());
        if (kp != k) w[r * kp + k] = 0;
      }
    });
    Int8ConvArgs args{src, g, batch, nullptr, nullptr, n, k, kp, inv.data(), s.data(), bptr, yd};
    if (post.scale.defined()) args.post_scale = post.scale.data_ptr<float>(), args.post_shift = post.shift.data_ptr<float>();
    args.relu = post.relu;
    args.w16 = w;
    int16_conv_avx2(args);
    *post_done = true;
    return y;
  }
  if (use_avx2_conv(isa)) {  // fused gather + quantise + vpmaddubsw product + rescale
    const int64_t kp = (k + 3) / 4 * 4;
    int8_t* w = int8_workspace(2 * n * kp, 0);  // the rows, then their absolute values (u8)
    parallel_chunks(n, std::max<int64_t>(1, (int64_t(1) << 16) / kp), [&](int64_t lo, int64_t hi) {
      int8_decode_rows_avx2(p, rb, k, bits, t.lo, lo, hi, w + lo * kp, kp);
      for (int64_t r = lo; r < hi; ++r) std::memset(w + r * kp + k, 0, size_t(kp - k));
      int8_abs_rows_avx2(w + lo * kp, (hi - lo) * kp, reinterpret_cast<uint8_t*>(w + (n + lo) * kp));
    });
    Int8ConvArgs args{src, g, batch, w, nullptr, n, k, kp, inv.data(), s.data(), bptr, yd};
    if (post.scale.defined()) args.post_scale = post.scale.data_ptr<float>(), args.post_shift = post.shift.data_ptr<float>();
    args.relu = post.relu;
    int8_conv_avx2(args);
    *post_done = true;
    return y;
  }
  at::Tensor q = at::empty({k, ml}, x.options().dtype(at::kChar));
  int8_t* qd = q.data_ptr<int8_t>();
  const int64_t cb = 64;  // output pixels per task (within one output row)
  const int64_t per_row = (g.ow + cb - 1) / cb, nblk = g.oh * per_row;
  at::parallel_for(0, batch * nblk, 1, [&](int64_t lo, int64_t hi) {
    float strided[64];
    for (int64_t task = lo; task < hi; ++task) {
      const int64_t bi = task / nblk, rem = task % nblk, oh = rem / per_row, ow0 = (rem % per_row) * cb;
      const int64_t w = std::min(cb, g.ow - ow0), j0 = bi * l + oh * g.ow + ow0;
      const float* iv = inv.data() + j0;
      const float* am = amax.data() + j0;
      int8_t* qcol = qd + j0;
      int64_t i = 0;  // im2col row (c, kh, kw)
      for (int64_t c = 0; c < g.c; ++c)
        for (int64_t a = 0; a < g.kh; ++a) {
          const int64_t ih = oh * g.sh + a * g.dh - g.ph;
          for (int64_t b = 0; b < g.kw; ++b, ++i) {
            int8_t* qr = qcol + i * ml;
            if (ih < 0 || ih >= g.h) {
              std::memset(qr, 0, size_t(w));
              continue;
            }
            const ConvSpan sp = conv_input_span(g, ow0, w, b);
            std::memset(qr, 0, size_t(sp.jlo));
            std::memset(qr + sp.jhi, 0, size_t(w - sp.jhi));
            const float* row = src + ((bi * g.c + c) * g.h + ih) * g.w + sp.base;
            const float* v = row + sp.jlo;  // v[j - jlo] is pixel j's input
            if (g.sw != 1) {
              for (int64_t j = sp.jlo; j < sp.jhi; ++j) strided[j - sp.jlo] = row[j * g.sw];
              v = strided;
            }
            if (simd) {
              quantize_span(v, sp.jhi - sp.jlo, iv + sp.jlo, qr + sp.jlo);  // a bad pixel's q is unused
            } else {
              for (int64_t j = sp.jlo; j < sp.jhi; ++j) qr[j] = am[j] == inf ? int8_t(0) : quantize(v[j - sp.jlo], iv[j]);
            }
          }
        }
    }
  });
  if (t.narrow && amx_int8_available()) {  // AMX-INT8 tiles on the same columns (amx_gemm.cpp), same rescale
    amx_int8_columns(qd, k, ml, packed, t.lo, bits,
                     [&](int64_t n0, int64_t rows, const int32_t* acc, int64_t ldc, int64_t p0, int64_t count) {
                       for (int64_t r = 0; r < rows; ++r) {
                         const float bv = bptr != nullptr ? bptr[n0 + r] : 0.f;
                         for (int64_t j = 0; j < count;) {  // runs of pixels within one image
                           const int64_t px = p0 + j, bi = px / l, l0 = px % l, run = std::min(count - j, l - l0);
                           rescale_span(acc + r * ldc + j, s.data() + px, run, bptr != nullptr, bv,
                                        yd + (bi * n + n0 + r) * l + l0);
                           j += run;
                         }
                       }
                     });
    return y;
  }
  const bool fp32 = use_fp32_int_gemm();  // no int8 dot-product instructions: the exact product in fp32
  const int64_t nb = int_tile_rows(fp32 ? 4 * k : k, n);
  const int64_t wbytes = fp32 ? 4 * nb * k : nb * k;
  int8_t* wlo = int8_workspace(wbytes, 0);
  int8_t* whi = t.narrow ? nullptr : int8_workspace(wbytes, 1);
  const at::TensorOptions i8 = at::TensorOptions().dtype(at::kChar);
  const at::Tensor qf = fp32 ? q.to(at::kFloat) : at::Tensor();
  const FloatTables ft(t);
  for (int64_t n0 = 0; n0 < n; n0 += nb) {
    const int64_t rows = std::min(nb, n - n0);
    at::Tensor acc;  // (rows, B * L)
    if (fp32) {
      acc = int_tile_fp32(packed, bits, k, t, ft, n0, rows, qf, true, reinterpret_cast<float*>(wlo),
                          reinterpret_cast<float*>(whi));
    } else {
      decode_int_tile(isa, p, rb, k, bits, t, n0, rows, wlo, whi);
      acc = at::_int_mm(at::from_blob(wlo, {rows, k}, i8), q);
      if (whi != nullptr) acc.add_(at::_int_mm(at::from_blob(whi, {rows, k}, i8), q), 256);
    }
    const int32_t* ad = acc.data_ptr<int32_t>();
    at::parallel_for(0, rows, 4, [&](int64_t lo, int64_t hi) {
      for (int64_t r = lo; r < hi; ++r) {
        const float bv = bptr != nullptr ? bptr[n0 + r] : 0.f;
        for (int64_t bi = 0; bi < batch; ++bi) {
          rescale_span(ad + r * ml + bi * l, s.data() + bi * l, l, bptr != nullptr, bv, yd + (bi * n + n0 + r) * l);
        }
      }
    });
  }
  return y;
}

at::Tensor int_linear_cpu(const at::Tensor& xq, const at::Tensor& packed, const at::Tensor& int_table, int64_t bits,
                          int64_t k) {
  TORCH_CHECK(xq.scalar_type() == at::kChar && xq.dim() == 2, "xq must be a 2-D int8 tensor (M, K), got ",
              xq.scalar_type(), " of shape ", xq.sizes());
  TORCH_CHECK(xq.size(1) == k, "xq has K=", xq.size(1), " columns but the weight has in_features=", k);
  const IntTable t = make_table(int_table, bits);
  check_int_args(packed, bits, k, t);
  const at::Tensor xc = xq.contiguous(), pc = packed.contiguous();
  const int64_t m = xc.size(0), n = pc.size(0);
  at::Tensor y = at::zeros({m, n}, xq.options().dtype(at::kInt));
  if (m == 0 || n == 0 || k == 0) return y;
  const Isa isa = int_isa();
  const bool gemv = use_gemv(isa, t.narrow, m, k);
  const XLayout l = x_layout(isa, gemv, t.narrow, int(bits), pc.size(1), k);
  const QRows q = layout_rows(xc, l);
  int_product(isa, gemv, q, l, m, pc, t, int(bits), k, [&](int64_t n0, const at::Tensor& tile) {
    y.narrow(1, n0, tile.size(1)).copy_(tile);
  });
  return y;
}

at::Tensor int8_linear_cpu(const at::Tensor& x, const at::Tensor& packed, const at::Tensor& int_table, int64_t bits,
                           int64_t k, double step, const std::optional<at::Tensor>& bias) {
  TORCH_CHECK(x.dim() == 2 && x.size(1) == k, "x must be 2-D (M, K) with K=", k);
  const IntTable t = make_table(int_table, bits);
  check_int_args(packed, bits, k, t);
  at::Tensor b;
  if (bias.has_value() && bias->defined()) b = bias->to(at::kFloat).contiguous();
  if (k == 0) {
    at::Tensor y = at::zeros({x.size(0), packed.size(0)}, x.options().dtype(at::kFloat));
    if (b.defined()) y.add_(b);
    return y.to(x.scalar_type());
  }
  const at::Tensor xf = x.to(at::kFloat).contiguous();
  return int8_linear_float(xf, packed.contiguous(), t, int(bits), k, step, b).to(x.scalar_type());
}

at::Tensor int8_conv2d_impl(const at::Tensor& x, const at::Tensor& packed, const at::Tensor& int_table, int64_t bits,
                            at::IntArrayRef weight_shape, const std::optional<at::Tensor>& bias,
                            at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                            double step, const ConvPost& post);

at::Tensor int8_conv2d_cpu(const at::Tensor& x, const at::Tensor& packed, const at::Tensor& int_table, int64_t bits,
                           at::IntArrayRef weight_shape, const std::optional<at::Tensor>& bias,
                           at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                           double step) {
  return int8_conv2d_impl(x, packed, int_table, bits, weight_shape, bias, stride, padding, dilation, groups, step, {});
}

// int8_conv2d, then y * post_scale[n] + post_shift[n] (two roundings) and, with relu, max(y, 0): an eval
// BatchNorm (and its ReLU) folded into the conv (wfn_kernels.nn.fuse), applied in the NHWC kernel's epilogue.
at::Tensor int8_conv2d_post_cpu(const at::Tensor& x, const at::Tensor& packed, const at::Tensor& int_table,
                                int64_t bits, at::IntArrayRef weight_shape, const std::optional<at::Tensor>& bias,
                                at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                                int64_t groups, double step, const at::Tensor& post_scale,
                                const at::Tensor& post_shift, bool relu) {
  TORCH_CHECK(weight_shape.size() == 4, "weight_shape must have 4 entries");
  const int64_t n = weight_shape[0];
  TORCH_CHECK(post_scale.dim() == 1 && post_scale.numel() == n && post_shift.dim() == 1 && post_shift.numel() == n,
              "post_scale and post_shift must be 1-D with out_channels=", n, " entries, got ", post_scale.sizes(),
              " and ", post_shift.sizes());
  ConvPost post{post_scale.to(at::kFloat).contiguous(), post_shift.to(at::kFloat).contiguous(), relu};
  return int8_conv2d_impl(x, packed, int_table, bits, weight_shape, bias, stride, padding, dilation, groups, step, post);
}

at::Tensor int8_conv2d_impl(const at::Tensor& x, const at::Tensor& packed, const at::Tensor& int_table, int64_t bits,
                            at::IntArrayRef weight_shape, const std::optional<at::Tensor>& bias,
                            at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                            double step, const ConvPost& post) {
  TORCH_CHECK(weight_shape.size() == 4, "weight_shape must have 4 entries");
  TORCH_CHECK(groups == 1, "the int8 conv kernel supports groups=1 only, got groups=", groups);
  TORCH_CHECK(x.dim() == 4 && x.size(1) == weight_shape[1], "x must be (B, ", weight_shape[1], ", H, W), got ",
              x.sizes());
  const int64_t k = weight_shape[1] * weight_shape[2] * weight_shape[3];
  const IntTable t = make_table(int_table, bits);
  check_int_args(packed, bits, k, t);
  const int64_t batch = x.size(0), n = weight_shape[0];
  const int64_t out_hw[2] = {conv_out_size(x, weight_shape, stride, padding, dilation, 0),
                             conv_out_size(x, weight_shape, stride, padding, dilation, 1)};
  const int64_t pixels = out_hw[0] * out_hw[1];
  at::Tensor b;
  if (bias.has_value() && bias->defined()) b = bias->to(at::kFloat).contiguous();
  // The output's memory format follows the input's, as torch's convolutions do.
  const at::MemoryFormat fmt = x.suggest_memory_format();
  if (batch * pixels == 0) return at::empty({batch, n, out_hw[0], out_hw[1]}, x.options().memory_format(fmt));
  auto finish = [&](at::Tensor y) {  // the epilogue as separate passes (paths without the NHWC kernel)
    if (post.any()) post.apply(y);
    return y.to(x.scalar_type()).contiguous(fmt);
  };
  const ConvGeom g{x.size(1), x.size(2), x.size(3), weight_shape[2], weight_shape[3], out_hw[0], out_hw[1],
                   stride[0], stride[1], padding[0], padding[1], dilation[0], dilation[1]};
  if (fmt == at::MemoryFormat::ChannelsLast && k >= 2 && use_panel(int_isa(), t.narrow)) {
    const at::Tensor xl = x.to(at::kFloat).contiguous(at::MemoryFormat::ChannelsLast);
    return int8_conv_nhwc(xl, g, packed.contiguous(), t, int(bits), k, step, b, out_hw, post).to(x.scalar_type());
  }
  if (fmt == at::MemoryFormat::ChannelsLast && k >= 2 && use_avx2_conv(int_isa())) {
    // the AVX2 kernel reads and writes NCHW: both layout changes by its own 8 x 8 transposes, which are
    // several times faster than torch's strided copies (bench/results/conv_int8_zen3.md)
    const at::Tensor xl = x.to(at::kFloat).contiguous(at::MemoryFormat::ChannelsLast);
    at::Tensor xn = at::empty(xl.sizes(), xl.options().memory_format(at::MemoryFormat::Contiguous));
    transpose_batched_avx2(xl.data_ptr<float>(), xn.data_ptr<float>(), batch, x.size(2) * x.size(3), x.size(1));
    bool post_done = false;
    at::Tensor y = int8_conv_columns(xn, g, packed.contiguous(), t, int(bits), k, step, b, out_hw, post, &post_done);
    if (!post_done) post.apply(y);
    at::Tensor yl = at::empty(y.sizes(), y.options().memory_format(at::MemoryFormat::ChannelsLast));
    transpose_batched_avx2(y.data_ptr<float>(), yl.data_ptr<float>(), batch, n, pixels);
    return yl.to(x.scalar_type());
  }
  const at::Tensor xf = x.to(at::kFloat).contiguous();
  if (k >= 2 && (!conv_rows_on_gemv(k) || use_avx2_conv(int_isa()))) {
    bool post_done = false;
    at::Tensor y = int8_conv_columns(xf, g, packed.contiguous(), t, int(bits), k, step, b, out_hw, post, &post_done);
    return post_done ? y.to(x.scalar_type()).contiguous(fmt) : finish(y);
  }
  // GEMM view: one row per output pixel, (c, kh, kw)-major like the flattened weight rows
  const at::Tensor cols = at::im2col(xf, {weight_shape[2], weight_shape[3]}, dilation, padding, stride);  // (B, K, L)
  {  // at::_int_mm is wrong for K = 1 (see use_gemv), and without int8 dot-product instructions the GEMV is
     // the fastest int8 product: the row path takes both
    const at::Tensor xm = cols.transpose(1, 2).reshape({batch * pixels, k}).contiguous();
    at::Tensor y = int8_linear_float(xm, packed.contiguous(), t, int(bits), k, step, b);
    return finish(y.view({batch, pixels, n}).transpose(1, 2).reshape({batch, n, out_hw[0], out_hw[1]}).contiguous());
  }
}

}  // namespace
}  // namespace wfn

TORCH_LIBRARY_IMPL(wfn, CPU, m) {
  m.impl("int_linear", &wfn::int_linear_cpu);
  m.impl("int8_linear", &wfn::int8_linear_cpu);
  m.impl("int8_conv2d", &wfn::int8_conv2d_cpu);
  m.impl("int8_conv2d_post", &wfn::int8_conv2d_post_cpu);
}

TORCH_LIBRARY_FRAGMENT(wfn_cpu, m) {
  // Force the M threshold of the int8 decode-tile + at::_int_mm path (-1: default); returns the previous.
  m.def("set_int_gemm_min_m(int m) -> int", &wfn::set_int_gemm_min_m_op);
  // The AVX-512 panel kernels for large-M int8 / bf16 products on CPUs without AMX (on by default;
  // WFN_PANEL_GEMM=0 turns them off); returns the previous setting.
  m.def("set_panel_gemm(bool on) -> bool", [](bool on) { return wfn::panel_gemm_flag().exchange(on); });
  m.def("panel_gemm_enabled() -> bool", []() { return wfn::panel_gemm_enabled(); });
  // Panel blocking: weight rows per packed block (multiple of 48) and dwords of K per block (multiple of
  // 16); a value <= 0 keeps the current one. Returns nc * 100000 + kdw after the change.
  m.def("set_panel_blocking(int nc, int kdw) -> int", [](int64_t nc, int64_t kdw) {
    TORCH_CHECK(nc <= 0 || nc % 48 == 0, "set_panel_blocking: nc (weight rows per block) must be a multiple of 48, got ",
                nc);
    TORCH_CHECK(kdw <= 0 || kdw % 16 == 0, "set_panel_blocking: kdw (dwords of K per block) must be a multiple of 16, got ",
                kdw);
    return wfn::set_panel_blocking(nc, kdw);
  });
  // 4-bit panels packed straight from the code bytes (true, default) or through the row decoders.
  m.def("set_panel_direct_pack(bool on) -> bool", &wfn::set_panel_direct_pack);
  // Where the panel kernels run on this CPU: "int8, bf16", one of them, or "off: <why>".
  m.def("panel_capability() -> str", []() { return wfn::panel_capability(); });
  // The int8 conv on the AVX2 vpmaddubsw kernel at the AVX2 level (narrow tables): 1 on, 0 off, -1 the
  // default (on where the CPU has no VNNI / AMX-INT8). Returns the previous setting.
  m.def("set_avx2_int8_conv(int mode) -> int", [](int64_t mode) {
    TORCH_CHECK(mode >= -1 && mode <= 2,
                "set_avx2_int8_conv: mode must be -1 (default), 0 (off), 1 (on) or 2 (on, int16 kernel for every table), got ",
                mode);
    return wfn::avx2_conv_override().exchange(mode);
  });
  m.def("int_capability() -> str", []() { return std::string(wfn::isa_name(wfn::int_isa())); });
  // The large-M int8 linear product on the AVX2 int16 GEMM at the AVX2 level: 1 on, 0 off, -1 the default (on
  // where the CPU has no VNNI / AMX-INT8). Returns the previous setting.
  m.def("set_avx2_int16_gemm(int mode) -> int", [](int64_t mode) {
    TORCH_CHECK(mode >= -1 && mode <= 1, "set_avx2_int16_gemm: mode must be -1 (default), 0 (off) or 1 (on), got ",
                mode);
    return wfn::avx2_gemm_override().exchange(mode);
  });
}
