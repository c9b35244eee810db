// Level-independent drivers: x permutation, GEMV vs decode+GEMM choice, decode of whole weights, conv.
//
// Why two paths: at small M the op is bandwidth bound on the packed weights, so the fused GEMV (decode in
// registers, FMA, never materialise a float weight) wins. At large M it is compute bound and a tuned
// sgemm wins; decoding a tile of rows into a cache-resident float buffer costs O(N*K) against O(M*N*K)
// for the product, so decode-then-at::mm_out per row tile reaches dense speed.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>


#include <algorithm>
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <thread>
#include <cstdlib>
#include <cstring>
#include <vector>

#include <torch/library.h>

#include "amx_gemm.h"
#include "kernels.h"

namespace wfn {
namespace {

int64_t env_int(const char* name, int64_t fallback) {
  const char* v = std::getenv(name);
  return (v != nullptr && *v != '\0') ? std::atoll(v) : fallback;
}

// Smallest M that takes the decode + GEMM path. The fused kernel's 4x4 register tile reuses each decoded
// vector for 4 activation rows, which at the AVX-512 level (Zen 4 / 5) beat torch's fp32 sgemm even at
// M = 256, so that level uses it up to a large M. At the AVX2 level (Zen 3, bench/results/
// float_paths_zen3.md) the permute + blend decode fell behind the sgemm path from M = 16 (1 thread: 69.6 vs
// 55.9 ms at N=4096 K=14336); the bf16-byte decode (bf16-exact tables) stays ahead at M = 16 (43.2-44.1 vs
// 46.4-50.3 ms) and falls behind at M = 32 (88.4-91.2 vs 73.8-78.2), so it switches at 32. Scalar switches
// early. WFN_GEMM_MIN_M or torch.ops.wfn_cpu.set_gemm_min_m override (bench/float_paths.py measures both).
std::atomic<int64_t>& gemm_min_m_override() {
  static std::atomic<int64_t> v{env_int("WFN_GEMM_MIN_M", -1)};
  return v;
}

int64_t gemm_min_m(Isa isa, bool avx2_bf16) {
  const int64_t forced = gemm_min_m_override().load();
  if (forced >= 0) return forced;
  return isa == Isa::Scalar ? 4 : isa == Isa::Avx2 ? (avx2_bf16 ? 32 : 16) : 1024;
}

int64_t set_gemm_min_m_op(int64_t m) { return gemm_min_m_override().exchange(m); }

// The AVX2 GEMV's bf16-byte decode for bf16-exact 2/4-bit tables: -1 default (on), 0 off (the permute +
// blend decode every table can take), 1 on. WFN_AVX2_BF16_GEMV or torch.ops.wfn_cpu.set_avx2_bf16_gemv.
std::atomic<int64_t>& avx2_bf16_gemv_override() {
  static std::atomic<int64_t> v{env_int("WFN_AVX2_BF16_GEMV", -1)};
  return v;
}

bool avx2_bf16_gemv_enabled() { return avx2_bf16_gemv_override().load() != 0; }

// Float bytes of a decoded row tile: a few MB so it stays in L2/L3 while at::mm reads it M times.
int64_t gemm_tile_rows(int64_t k) {
  static const int64_t bytes = env_int("WFN_GEMM_TILE_BYTES", int64_t(2) << 20);
  return std::max<int64_t>(16, bytes / (4 * std::max<int64_t>(k, 1)) / 16 * 16);
}

// Output channels per decoded block of the decode + at::conv2d path: the whole layer when its fp32 weight
// fits WFN_CONV_TILE_BYTES (default 4 MB), else equal blocks of about that size (multiples of 16 channels). The
// budget bounds the fp32 workspace a model holds at run time (ResNet-18's 512 x 4608 convs: 9.4 MB whole).
int64_t conv_tile_rows(int64_t n, int64_t k) {
  static const int64_t bytes = env_int("WFN_CONV_TILE_BYTES", int64_t(4) << 20);
  const int64_t whole = 4 * n * std::max<int64_t>(k, 1);
  if (whole <= bytes) return n;
  const int64_t tiles = (whole + bytes - 1) / bytes;
  return std::min(n, std::max<int64_t>(16, ((n + tiles - 1) / tiles + 15) / 16 * 16));
}

// Per-thread scratch for decoded weights, reused across calls. Why: a fresh multi-MB at::empty per call
// is a fresh mmap, and first-touch page faults on it cost as much as the decode itself (measured on
// ResNet-18 conv weights). The buffer only ever feeds at::mm_out / at::conv2d inside one call, never
// escapes, and grows to the largest weight (or GEMM tile) seen on this thread.
// (An at::Tensor rather than a std::vector: torch's allocator aligns to 64 bytes, as oneDNN prefers.)
float* decode_workspace(int64_t floats) { return static_cast<float*>(workspace(kWsFloat, 4 * floats)); }

std::atomic<int64_t> g_ws_epoch{0}, g_ws_bytes{0}, g_ws_act_bytes{0};

struct WsSlot {
  at::Tensor buf;
  int64_t epoch = -1;
};

}  // namespace

std::vector<float> padded_table(const at::Tensor& codebook) {
  std::vector<float> table(256, 0.f);  // zero padding: a code past the codebook reads 0, never OOB
  std::memcpy(table.data(), codebook.data_ptr<float>(), sizeof(float) * size_t(codebook.numel()));
  return table;
}

void decode_rows(Isa isa, const uint8_t* packed, int64_t row_bytes, int64_t k, int bits, const float* table,
                 int64_t r0, int64_t r1, float* out) {
  switch (isa) {
    case Isa::Avx512: decode_rows_avx512(packed, row_bytes, k, bits, table, r0, r1, out); break;
    case Isa::Avx2: decode_rows_avx2(packed, row_bytes, k, bits, table, r0, r1, out); break;
    default: decode_rows_scalar(packed, row_bytes, k, bits, table, r0, r1, out); break;
  }
}

void scale_channel_blocks_avx2(float* out, int64_t e0, int64_t e1, const float* scale, int64_t block,
                               int64_t slab);  // kernels_avx2.cpp

void scale_channel_blocks(Isa isa, float* out, int64_t e0, int64_t e1, const float* scale, int64_t block,
                          int64_t slab) {
  if (isa != Isa::Scalar) return scale_channel_blocks_avx2(out, e0, e1, scale, block, slab);
  for (int64_t e = e0; e < e1; e += block) {
    const float* s = scale + (e / slab) * block;
    for (int64_t j = 0; j < block; ++j) out[e + j] *= s[j];
  }
}

namespace {

// Runs fn(lo, hi) over [0, n) in chunks claimed from an atomic counter, so a thread that starts late or
// runs slower takes fewer chunks. Default: the chunks are claimed inside at::parallel_for (torch's
// OpenMP pool, the threads torch's own ops use, so no oversubscription and the pool is warm).
// WFN_CPU_PARALLEL=launch instead claims them on the calling thread plus helpers from the inter-op pool
// and never waits for a helper that has not started: on a machine where other processes hold the
// cores, an OpenMP fork-join waits a whole scheduler slice for its descheduled worker, which that mode
// avoids (measured here under load ~5 on 2 cores: 4-bit GEMV median 2.2 ms vs 12 ms), while on a
// quiet machine OpenMP is faster (1.12 vs 1.34 ms: the helper competes with the spinning OpenMP worker).
struct ChunkState {
  std::atomic<int64_t> next{0}, done{0};
  int64_t n = 0, chunk = 1, nchunks = 0;
  std::function<void(int64_t, int64_t)> fn;
  void work() {
    for (int64_t c; (c = next.fetch_add(1)) < nchunks;) {
      fn(c * chunk, std::min(n, (c + 1) * chunk));
      done.fetch_add(1, std::memory_order_release);
    }
  }
};

}  // namespace

void* workspace(int slot, int64_t bytes) {
  thread_local WsSlot slots[kWsSlots];
  WsSlot& s = slots[slot];
  const int64_t epoch = g_ws_epoch.load();
  if (s.epoch != epoch) {  // dropped by reset_workspaces (its bytes were taken off the count then)
    s.buf = at::Tensor();
    s.epoch = epoch;
  }
  bytes = std::max<int64_t>(bytes, 64);
  if (!s.buf.defined() || s.buf.numel() < bytes) {
    const int64_t old = s.buf.defined() ? s.buf.numel() : 0;
    s.buf = at::Tensor();
    s.buf = at::empty({bytes}, at::TensorOptions().dtype(at::kByte));
    g_ws_bytes.fetch_add(bytes - old);
    if (slot == kWsAmxB) g_ws_act_bytes.fetch_add(bytes - old);
  }
  return s.buf.data_ptr();
}

int64_t workspace_bytes() { return g_ws_bytes.load(); }

int64_t activation_workspace_bytes() { return g_ws_act_bytes.load(); }

void reset_workspaces() {
  g_ws_epoch.fetch_add(1);
  g_ws_bytes.store(0);
  g_ws_act_bytes.store(0);
}

void parallel_chunks(int64_t n, int64_t chunk, std::function<void(int64_t, int64_t)> fn) {
  static const bool launch = [] {
    const char* v = std::getenv("WFN_CPU_PARALLEL");
    return v != nullptr && std::strcmp(v, "launch") == 0;
  }();
  const int64_t nchunks = (n + chunk - 1) / chunk;
  const int64_t threads = std::min<int64_t>(at::get_num_threads(), nchunks);
  if (threads <= 1 || at::in_parallel_region()) {
    if (n > 0) fn(0, n);
    return;
  }
  if (!launch) {
    std::atomic<int64_t> next{0};
    at::parallel_for(0, threads, 1, [&](int64_t, int64_t) {
      for (int64_t c; (c = next.fetch_add(1)) < nchunks;) fn(c * chunk, std::min(n, (c + 1) * chunk));
    });
    return;
  }
  auto st = std::make_shared<ChunkState>();
  st->n = n;
  st->chunk = chunk;
  st->nchunks = nchunks;
  st->fn = std::move(fn);
  for (int64_t h = 0; h < threads - 1; ++h) at::launch([st] { st->work(); });
  st->work();
  while (st->done.load(std::memory_order_acquire) < nchunks) std::this_thread::yield();
}

// Decode rows [r0, r1) into out (row-major, k floats each), parallel over chunks of ~256 KB of floats.
void decode_parallel(Isa isa, const at::Tensor& packed, int64_t k, int bits, const float* table, int64_t r0,
                     int64_t r1, float* out) {
  const uint8_t* p = packed.data_ptr<uint8_t>();
  const int64_t rb = packed.size(1);
  const int64_t chunk = std::max<int64_t>(1, (int64_t(1) << 16) / std::max<int64_t>(k, 1));
  parallel_chunks(r1 - r0, chunk, [&](int64_t lo, int64_t hi) {
    decode_rows(isa, p, rb, k, bits, table, r0 + lo, r0 + hi, out + lo * k);
  });
}

namespace {

// Activations in the order the level's GEMV reads them (kernels.h); scalar reads x as is.
at::Tensor permute_x(Isa isa, const at::Tensor& x, int64_t row_bytes, int bits, bool bf16_bytes) {
  const int64_t bb = gemv_block_bytes(isa, bits);
  if (bb == 1) return x;
  const int64_t m = x.size(0), k = x.size(1);
  const int64_t e = 32 / bits, d = bb / 4, eb = bb * 8 / bits;
  const int64_t nblk = (row_bytes + bb - 1) / bb;
  const bool planes = isa == Isa::Avx512 && bits == 8 && avx512_u8_byteplanes();
  at::Tensor xp = at::zeros({m, nblk * eb}, x.options());
  const float* src = x.data_ptr<float>();
  float* dst = xp.data_ptr<float>();
  const int64_t kp = nblk * eb;
  // Within a block, output slot p * d + j takes element el of the block: one index table per call.
  // planes: vector g=p, lane j=4l+i holds element 16l+4g+i; bf16_bytes: the AVX2 bf16-byte decode's order
  // (kernels.h); else phase p, lane j holds j*e+p.
  std::vector<int32_t> from(static_cast<size_t>(eb));
  for (int64_t p = 0; p < e; ++p)
    for (int64_t j = 0; j < d; ++j)
      from[size_t(p * d + j)] = int32_t(planes       ? (j / 4) * 16 + p * 4 + (j % 4)
                                        : bf16_bytes ? avx2_bf16_element(bits, p, j)
                                                     : j * e + p);
  const int64_t full = std::min(nblk, k / eb);  // blocks wholly inside k; the rest check each element
  at::parallel_for(0, m, 16, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) {
      const float* s = src + i * k;
      float* o = dst + i * kp;
      for (int64_t blk = 0; blk < full; ++blk) {
        const float* sb = s + blk * eb;
        float* ob = o + blk * eb;
        for (int64_t t = 0; t < eb; ++t) ob[t] = sb[from[size_t(t)]];
      }
      for (int64_t blk = full; blk < nblk; ++blk) {
        const int64_t base = blk * eb;
        for (int64_t t = 0; t < eb; ++t)
          if (base + from[size_t(t)] < k) o[base + t] = s[base + from[size_t(t)]];
      }
    }
  });
  return xp;
}

// t16: the table as bf16 when the AVX2 bf16-byte decode applies (linear_dispatch decides), else null.
at::Tensor gemv(Isa isa, const at::Tensor& x, const at::Tensor& packed, const float* table, const uint16_t* t16,
                int bits, int64_t k) {
  const int64_t m = x.size(0), n = packed.size(0);
  at::Tensor y = at::empty({m, n}, x.options());
  const bool bf = t16 != nullptr;
  const at::Tensor xp = permute_x(isa, x, packed.size(1), bits, bf);
  GemvArgs a{xp.data_ptr<float>(), m, xp.size(1), packed.data_ptr<uint8_t>(), packed.size(1), k, bits,
             table, y.data_ptr<float>(), n, t16};
  auto fn = isa == Isa::Avx512 ? gemv_rows_avx512 : isa == Isa::Avx2 ? gemv_rows_avx2 : gemv_rows_scalar;
  // Chunks of whole 4-row groups (every kernel's row tile divides 4), ~256 KB of codes each, so threads
  // balance dynamically; small problems stay on the calling thread.
  const int64_t chunk = std::max<int64_t>(4, (int64_t(256) << 10) / std::max<int64_t>(packed.size(1) * m, 1) / 4 * 4);
  parallel_chunks(n, chunk, [&](int64_t lo, int64_t hi) { fn(a, lo, hi); });
  return y;
}

at::Tensor gemm(Isa isa, const at::Tensor& x, const at::Tensor& packed, const float* table, int bits, int64_t k) {
  const int64_t m = x.size(0), n = packed.size(0);
  at::Tensor y = at::empty({m, n}, x.options());
  const int64_t nb = std::min(n, gemm_tile_rows(k));
  at::Tensor w = at::from_blob(decode_workspace(nb * k), {nb, k}, x.options());
  for (int64_t n0 = 0; n0 < n; n0 += nb) {
    const int64_t rows = std::min(nb, n - n0);
    at::Tensor wt = w.narrow(0, 0, rows);
    decode_parallel(isa, packed, k, bits, table, n0, n0 + rows, wt.data_ptr<float>());
    at::Tensor out = y.narrow(1, n0, rows);  // strides (n, 1): BLAS-compatible, written in place
    at::mm_out(out, x, wt.t());
  }
  return y;
}

}  // namespace

int64_t gemv_block_bytes(Isa isa, int bits) {
  (void)bits;
  return isa == Isa::Avx512 ? 64 : isa == Isa::Avx2 ? 32 : 1;
}

at::Tensor decode_weight_cpu(const at::Tensor& packed, const at::Tensor& codebook, int64_t bits, int64_t k) {
  const int64_t n = packed.size(0);
  at::Tensor w = at::empty({n, k}, codebook.options());
  if (n == 0 || k == 0) return w;
  const std::vector<float> table = padded_table(codebook);
  decode_parallel(active_isa(), packed, k, int(bits), table.data(), 0, n, w.data_ptr<float>());
  return w;
}

at::Tensor linear_dispatch(const at::Tensor& x, const at::Tensor& packed, const at::Tensor& codebook,
                           int64_t bits, int64_t k) {
  const int64_t m = x.size(0), n = packed.size(0);
  if (m == 0 || n == 0 || k == 0) return at::zeros({m, n}, x.options());
  const Isa isa = active_isa();
  const std::vector<float> table = padded_table(codebook);
  // AMX tiles, exact: x as three bf16 parts against bf16-exact weights (amx_gemm.cpp).
  uint16_t t16[256];
  if (m >= amx_min_m(3) && amx_bf16_available() && bf16_table(table.data(), t16))
    return amx_bf16_linear(x, 3, packed, t16, int(bits), k);
  // AVX2, 2/4-bit codes: bf16-exact tables (every WFN codebook) take the bf16-byte decode (kernels_avx2.cpp)
  const bool bf = isa == Isa::Avx2 && bits != 8 && avx2_bf16_gemv_enabled() && bf16_table(table.data(), t16);
  if (m >= gemm_min_m(isa, bf)) return gemm(isa, x, packed, table.data(), int(bits), k);
  return gemv(isa, x, packed, table.data(), bf ? t16 : nullptr, int(bits), k);
}

namespace {

// Largest B*H'*W' for which conv2d runs as im2col + the fused kernel (WFN_CONV_FUSED_MAX_M or
// torch.ops.wfn_cpu.set_conv_fused_max_m override; -1: default, which also asks K >= 1024). Why: at
// batch 1 the deepest ResNet-18 layers have few output pixels and many weights, so materialising the
// float weight (and oneDNN reordering it) costs more than the product; the fused kernel never writes
// the weight. Measured (1 thread, bench/bench_cpu.py): layer4 3x3 (M=49, K=4608) fused 1.59 ms vs decode
// + conv 2.33 ms (torch 1.85 ms); layer3 3x3 (M=196) fused 1.89 ms vs 1.13 ms; 1x1 downsample (M=49,
// K=256) fused 0.162 ms vs 0.130 ms. Elsewhere oneDNN's direct conv on the decoded weight is faster.
std::atomic<int64_t>& conv_fused_max_m_override() {
  static std::atomic<int64_t> v{env_int("WFN_CONV_FUSED_MAX_M", -1)};
  return v;
}

int64_t conv_fused_max_m() {
  const int64_t forced = conv_fused_max_m_override().load();
  return forced >= 0 ? forced : 64;
}

bool conv_use_fused(int64_t m, int64_t k) {
  const bool forced = conv_fused_max_m_override().load() >= 0;
  return m <= conv_fused_max_m() && (forced || k >= 1024);
}

}  // namespace

int64_t set_conv_fused_max_m_op(int64_t m) { return conv_fused_max_m_override().exchange(m); }

at::Tensor conv2d_dispatch(const at::Tensor& x, const at::Tensor& packed, const at::Tensor& codebook,
                           int64_t bits, at::IntArrayRef weight_shape, const std::optional<at::Tensor>& bias,
                           at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                           int64_t groups) {
  const int64_t k = weight_shape[1] * weight_shape[2] * weight_shape[3];
  const int64_t n = packed.size(0), batch = x.size(0);
  const int64_t out_hw[2] = {conv_out_size(x, weight_shape, stride, padding, dilation, 0),
                             conv_out_size(x, weight_shape, stride, padding, dilation, 1)};
  const int64_t pixels = out_hw[0] * out_hw[1];
  std::optional<at::Tensor> b;
  if (bias.has_value() && bias->defined()) b = bias->to(at::kFloat);
  const std::vector<float> table = padded_table(codebook);
  // The output's memory format follows the input's (channels_last in, channels_last out), as torch's
  // convolutions do: the decode + at::conv2d path runs oneDNN's NHWC conv with no layout copy.
  const at::MemoryFormat fmt = x.suggest_memory_format();
  uint16_t t16[256];
  if (groups == 1 && pixels > 0 && amx_conv_ok(batch * pixels, k) && bf16_table(table.data(), t16)) {
    // AMX tiles, exact (x as three bf16 parts): im2col + the tile product, no whole-weight copy
    at::Tensor y = amx_bf16_conv2d(x.contiguous(), 3, packed, t16, int(bits), weight_shape, stride, padding, dilation);
    if (b.has_value()) y.add_(b->view({1, n, 1, 1}));
    return y.to(x.scalar_type()).contiguous(fmt);
  }
  if (groups == 1 && active_isa() != Isa::Scalar && pixels > 0 && conv_use_fused(batch * pixels, k)) {
    // im2col rows are (c, kh, kw)-major like the flattened weight rows: y (B*L, N) = cols (B*L, K) @ W.T
    const at::Tensor cols = at::im2col(x.to(at::kFloat).contiguous(), {weight_shape[2], weight_shape[3]},
                                       dilation, padding, stride);  // (B, K, L)
    const at::Tensor xm = cols.transpose(1, 2).reshape({batch * pixels, k}).contiguous();
    at::Tensor y = linear_dispatch(xm, packed, codebook, bits, k);
    if (b.has_value()) y.add_(*b);
    return y.view({batch, pixels, n}).transpose(1, 2).reshape({batch, n, out_hw[0], out_hw[1]})
        .to(x.scalar_type()).contiguous(fmt);
  }
  const at::Tensor xf = x.to(at::kFloat);
  const int64_t nb = groups == 1 ? conv_tile_rows(n, k) : n;
  float* wbuf = decode_workspace(std::max<int64_t>(nb * k, 1));
  if (nb >= n) {
    decode_parallel(active_isa(), packed, k, int(bits), table.data(), 0, n, wbuf);
    const at::Tensor w = at::from_blob(wbuf, weight_shape, codebook.options());
    return at::conv2d(xf, w, b, stride, padding, dilation, groups).to(x.scalar_type()).contiguous(fmt);
  }
  // A weight above the tile budget: output-channel blocks of nb, each decoded into the same workspace and
  // convolved on its own, so the fp32 copy held at run time is one block, not the layer.
  at::Tensor y;
  for (int64_t n0 = 0; n0 < n; n0 += nb) {
    const int64_t rows = std::min(nb, n - n0);
    decode_parallel(active_isa(), packed, k, int(bits), table.data(), n0, n0 + rows, wbuf);
    const at::Tensor w = at::from_blob(wbuf, {rows, weight_shape[1], weight_shape[2], weight_shape[3]},
                                       codebook.options());
    std::optional<at::Tensor> bt;
    if (b.has_value()) bt = b->narrow(0, n0, rows);
    const at::Tensor yt = at::conv2d(xf, w, bt, stride, padding, dilation, 1);
    if (!y.defined())
      y = at::empty({batch, n, yt.size(2), yt.size(3)}, yt.options().memory_format(fmt));
    y.narrow(1, n0, rows).copy_(yt);
  }
  return y.to(x.scalar_type()).contiguous(fmt);
}

}  // namespace wfn

TORCH_LIBRARY_FRAGMENT(wfn_cpu, m) {
  // Force the M threshold of the decode + GEMM path (-1: default); returns the previous override.
  m.def("set_gemm_min_m(int m) -> int", &wfn::set_gemm_min_m_op);
  // Force the largest B*H'*W' of the im2col + fused conv path (0: never; -1: default); returns previous.
  m.def("set_conv_fused_max_m(int m) -> int", &wfn::set_conv_fused_max_m_op);
  // The AVX2 GEMV's bf16-byte decode for bf16-exact 2/4-bit tables: -1 default (on), 0 off, 1 on; returns
  // the previous setting.
  m.def("set_avx2_bf16_gemv(int mode) -> int", [](int64_t mode) {
    TORCH_CHECK(mode >= -1 && mode <= 1, "set_avx2_bf16_gemv: mode must be -1 (default), 0 (off) or 1 (on), got ",
                mode);
    return wfn::avx2_bf16_gemv_override().exchange(mode);
  });
  // Bytes of per-thread decode workspaces held (all threads, every slot) since the last reset.
  m.def("workspace_bytes() -> int", []() { return wfn::workspace_bytes(); });
  // The part of workspace_bytes() that holds activations (the AMX path's packed operand), not weights.
  m.def("activation_workspace_bytes() -> int", []() { return wfn::activation_workspace_bytes(); });
  m.def("reset_workspaces() -> ()", []() { wfn::reset_workspaces(); });
}
