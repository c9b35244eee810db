// Large-M products on AMX tiles through oneDNN's batch-reduce GEMM micro-kernel (at::native::cpublas::brgemm,
// the one torch's own CPU flash attention and inductor's GEMM template call), with the weight decoded
// straight from its codes into the micro-kernel's A operand, one cache-sized tile at a time.
//
// Why roles are swapped (Y^T = W X^T): the micro-kernel wants its B operand in VNNI order (pairs of K for
// bf16, quads for int8, interleaved across N), which for a weight would mean a transposing decode. As the
// A operand a weight tile is plain row-major, exactly what the existing row decoders write; the
// activations (small next to the weight at every M this path takes) are put in VNNI order once per call.
//
// Blocking (amx_run): one task per tile of weight rows. A task decodes its rows (the whole K when that
// fits in ~1 MiB, else K blocks), then walks the activations in chunks of pixels: one brgemm per (column
// block, row block, K block) accumulates into the task's output tile (rows x chunk, fp32 or int32,
// L2-resident), which a store callback writes out (transposed into y for linear layers, straight into
// NCHW for convs). Every code is decoded once per task (once per chunk when K is blocked), no
// whole-weight copy exists, and the activations are read once per weight tile.
//
// Float mode on this path (exact): an fp32 activation is the exact sum of three bf16 numbers
// (x1 = bf16(x), x2 = bf16(x - x1), x3 = x - x1 - x2; 8 + 8 + 8 significant bits), and a WFN weight is
// bf16-exact, so every product w * xi is exact in fp32 and the three column blocks are accumulated in fp32
// and added: the same arithmetic class as an fp32 GEMM, on the bf16 tiles. One exception: the conversion
// instruction (vcvtne2ps2bf16) treats fp32 subnormals (|x| < 2^-126) as zero, so such activations count as 0.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/native/CPUBlas.h>
#include <torch/library.h>
#include <torch/version.h>

#include <algorithm>
#include <cstdio>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <cpuid.h>
#include <immintrin.h>

#include "amx_gemm.h"
#include "int_kernels.h"

// The brgemm entry points this file calls (CPUBlas.h defines one macro per available element type).
#if defined(__x86_64__) && defined(CPUBLAS_BRGEMM_BF16BF16F32) && defined(CPUBLAS_BRGEMM_I8I8I32)
#define WFN_HAVE_BRGEMM 1
#else
#define WFN_HAVE_BRGEMM 0
#endif

namespace wfn {
namespace {

int64_t env_int(const char* name, int64_t fallback) {
  const char* v = std::getenv(name);
  return (v != nullptr && *v != '\0') ? std::atoll(v) : fallback;
}

std::atomic<int>& amx_override() {  // -1: auto, 0: off, 1: on where the hardware has it
  static std::atomic<int> v{int(env_int("WFN_AMX", -1))};
  return v;
}

// Blocking (WFN_AMX_BLOCKING="rows,kblock,cols,subrows,chunk_bytes" or torch.ops.wfn_cpu.set_amx_blocking):
// weight rows per task, K per decoded tile (when a whole-K tile exceeds 1 MiB), activation columns and
// weight rows per brgemm call, bytes of a task's fp32 output tile (which sets the pixels per chunk).
struct Blocking {
  std::atomic<int64_t> rows{256}, kblock{1024}, cols{64}, subrows{256}, chunk_bytes{int64_t(1) << 20};
  Blocking() {
    long long r = 0, k = 0, c = 0, s = 0, y = 0;
    const char* e = std::getenv("WFN_AMX_BLOCKING");
    if (e != nullptr && std::sscanf(e, "%lld,%lld,%lld,%lld,%lld", &r, &k, &c, &s, &y) == 5 && r > 0 && k > 0 &&
        c > 0 && s > 0 && y > 0) {
      rows = r; kblock = k; cols = c; subrows = s; chunk_bytes = y;
    }
  }
};

Blocking& blocking() {
  static Blocking b;
  return b;
}

int64_t tile_rows() { return std::max<int64_t>(16, blocking().rows.load() / 16 * 16); }
int64_t k_block() { return std::max<int64_t>(64, blocking().kblock.load() / 64 * 64); }
int64_t col_block() { return std::max<int64_t>(16, blocking().cols.load()); }
int64_t sub_rows() { return std::max<int64_t>(16, blocking().subrows.load()); }
int64_t chunk_bytes() { return std::max<int64_t>(4096, blocking().chunk_bytes.load()); }

void set_amx_blocking_op(int64_t rows, int64_t kblock, int64_t cols, int64_t subrows, int64_t chunk) {
  TORCH_CHECK(rows > 0 && kblock > 0 && cols > 0 && subrows > 0 && chunk > 0,
              "set_amx_blocking: every size must be positive, got rows=", rows, " kblock=", kblock, " cols=", cols,
              " subrows=", subrows, " chunk_bytes=", chunk);
  blocking().rows = rows;
  blocking().kblock = kblock;
  blocking().cols = cols;
  blocking().subrows = subrows;
  blocking().chunk_bytes = chunk;
}

int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

// Decode of rows [r0, r0 + rows) restricted to elements [k0, k0 + kvalid), written with row stride ld (the
// columns kvalid..kcur zero-filled): 16-bit words (bf16 bit patterns) or int8, through the row decoders of
// the active level. k0 is a multiple of 64, so the block starts on a byte.
template <typename T>
void decode_tile(const uint8_t* packed, int64_t row_bytes, int bits, const T* table, int64_t r0, int64_t rows,
                 int64_t k0, int64_t kvalid, int64_t kcur, int64_t ld, T* out) {
  const uint8_t* base = packed + k0 * bits / 8;
  const bool simd = active_isa() == Isa::Avx512;
  if constexpr (sizeof(T) == 2) {
    if (simd) u16_decode_rows_avx512(base, row_bytes, kvalid, bits, table, r0, r0 + rows, out, ld);
    else u16_decode_rows_scalar(base, row_bytes, kvalid, bits, table, r0, r0 + rows, out, ld);
  } else {
    if (simd) int8_decode_rows_avx512(base, row_bytes, kvalid, bits, table, r0, r0 + rows, out, ld);
    else int8_decode_rows_scalar(base, row_bytes, kvalid, bits, table, r0, r0 + rows, out, ld);
  }
  if (kcur > kvalid)
    for (int64_t i = 0; i < rows; ++i) std::memset(out + i * ld + kvalid, 0, size_t(kcur - kvalid) * sizeof(T));
}

// The weight decoder amx_run calls: decode(n0, rows, k0, kvalid, kcur, ld, out) for element type E (the
// brgemm operand type) from a table of T (the same bits).
template <typename E, typename T>
auto tile_decoder(const at::Tensor& packed, const T* table, int bits) {
  static_assert(sizeof(E) == sizeof(T), "operand and table element sizes differ");
  const uint8_t* pk = packed.data_ptr<uint8_t>();
  const int64_t rb = packed.size(1);
  return [=](int64_t n0, int64_t rows, int64_t k0, int64_t kvalid, int64_t kcur, int64_t ld, E* out) {
    decode_tile<T>(pk, rb, bits, table, n0, rows, k0, kvalid, kcur, ld, reinterpret_cast<T*>(out));
  };
}

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16")

// In-register transpose of 16 rows of 16 dwords: afterwards r[j] lane i holds what r[i] lane j held.
void transpose16(__m512i r[16]) {
  __m512i t[16];
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
  }
  for (int i = 0; i < 16; i += 4) {
    r[i] = _mm512_unpacklo_epi64(t[i], t[i + 2]);
    r[i + 1] = _mm512_unpackhi_epi64(t[i], t[i + 2]);
    r[i + 2] = _mm512_unpacklo_epi64(t[i + 1], t[i + 3]);
    r[i + 3] = _mm512_unpackhi_epi64(t[i + 1], t[i + 3]);
  }
  for (int i = 0; i < 4; ++i) {
    t[i] = _mm512_shuffle_i32x4(r[i], r[i + 4], 0x88);
    t[i + 4] = _mm512_shuffle_i32x4(r[i], r[i + 4], 0xdd);
    t[i + 8] = _mm512_shuffle_i32x4(r[i + 8], r[i + 12], 0x88);
    t[i + 12] = _mm512_shuffle_i32x4(r[i + 8], r[i + 12], 0xdd);
  }
  for (int i = 0; i < 4; ++i) {
    r[i] = _mm512_shuffle_i32x4(t[i], t[i + 8], 0x88);
    r[i + 8] = _mm512_shuffle_i32x4(t[i], t[i + 8], 0xdd);
    r[i + 4] = _mm512_shuffle_i32x4(t[i + 4], t[i + 12], 0x88);
    r[i + 12] = _mm512_shuffle_i32x4(t[i + 4], t[i + 12], 0xdd);
  }
}

__mmask16 lanes(int64_t n) { return n >= 16 ? __mmask16(0xffff) : n <= 0 ? __mmask16(0) : __mmask16((1u << n) - 1u); }

__m512 bf16_words_to_ps(__m256i w) { return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(w), 16)); }

// Pairs p0..p0+15 (elements 2 p0 .. 2 p0 + 31) of one activation row as 16 dwords, for each split:
// out[s] = bf16 pairs of the s-th residual (s = 0: x rounded to nearest even).
void row_pairs_f32(const float* row, int64_t k, int64_t e0, int splits, __m512i* out) {
  __m512 a = _mm512_maskz_loadu_ps(lanes(k - e0), row + e0);
  __m512 b = _mm512_maskz_loadu_ps(lanes(k - e0 - 16), row + e0 + 16);
  for (int s = 0; s < splits; ++s) {
    const __m512i h = (__m512i)_mm512_cvtne2ps_pbh(b, a);  // words: a's 16, then b's 16 = element order
    out[s] = h;
    if (s + 1 < splits) {
      const __m512 ah = bf16_words_to_ps(_mm512_castsi512_si256(h)), bh = bf16_words_to_ps(_mm512_extracti64x4_epi64(h, 1));
      // an infinite part leaves no finite residual (x - inf would be NaN)
      const __m512 inf = _mm512_set1_ps(__builtin_inff());
      a = _mm512_maskz_sub_ps(_mm512_cmp_ps_mask(_mm512_abs_ps(ah), inf, _CMP_NEQ_UQ), a, ah);
      b = _mm512_maskz_sub_ps(_mm512_cmp_ps_mask(_mm512_abs_ps(bh), inf, _CMP_NEQ_UQ), b, bh);
    }
  }
}

// Activations in VNNI order, in blocks of cb columns: dword (p, c) of the result = elements (2p, 2p + 1)
// of column c, stored at ((c / cb) * np + p) * cb + c % cb, so that each block is one contiguous
// (K/2, cb, 2) operand. Column c = s * mp + m holds split s of row m (mp = M rounded up to 16; the padding
// columns are zero); pairs past K are zero. 16 rows x 16 pairs per in-register transpose.
void pack_x_vnni(const at::Tensor& x, int splits, int64_t kp, int64_t mp, int64_t cb, uint32_t* dst) {
  const int64_t m = x.size(0), k = x.size(1), np = kp / 2;
  const bool bf = x.scalar_type() == at::kBFloat16;
  const int64_t iblocks = mp / 16, pblocks = (np + 15) / 16;
  at::parallel_for(0, iblocks * pblocks, 16, [&](int64_t lo, int64_t hi) {
    __m512i r[3][16];
    for (int64_t blk = lo; blk < hi; ++blk) {
      const int64_t i0 = (blk / pblocks) * 16, p0 = (blk % pblocks) * 16;  // pairs fastest: rows stream
      const int64_t ni = std::min<int64_t>(16, m - i0);
      for (int64_t i = 0; i < 16; ++i) {
        if (i >= ni) {
          for (int s = 0; s < splits; ++s) r[s][i] = _mm512_setzero_si512();
        } else if (bf) {
          const uint16_t* row = reinterpret_cast<const uint16_t*>(x.data_ptr()) + (i0 + i) * k;
          const int64_t e0 = 2 * p0, left = k - e0;
          const __mmask32 t = left >= 32 ? __mmask32(0xffffffffu) : left <= 0 ? __mmask32(0) : __mmask32((1u << left) - 1u);
          r[0][i] = _mm512_maskz_loadu_epi16(t, row + e0);
        } else {
          __m512i o[3];
          row_pairs_f32(x.data_ptr<float>() + (i0 + i) * k, k, 2 * p0, splits, o);
          for (int s = 0; s < splits; ++s) r[s][i] = o[s];
        }
      }
      for (int s = 0; s < splits; ++s) {
        transpose16(r[s]);
        const int64_t c = s * mp + i0;
        uint32_t* base = dst + (c / cb) * np * cb + c % cb;
        for (int64_t j = 0; j < 16 && p0 + j < np; ++j) _mm512_storeu_si512(base + (p0 + j) * cb, r[s][j]);
      }
    }
  });
}

// y[i, n0 + r] = sum_s yt[r, s * mp + i] for r < rows, i < M (yt row stride ldc).
void store_transposed(const float* yt, int64_t rows, int64_t ldc, int64_t m, int64_t mp, int splits, float* y,
                      int64_t n, int64_t n0) {
  __m512i r[16];
  for (int64_t r0 = 0; r0 < rows; r0 += 16) {
    const int64_t nr = std::min<int64_t>(16, rows - r0);
    for (int64_t i0 = 0; i0 < m; i0 += 16) {
      const __mmask16 t = lanes(m - i0);
      for (int64_t j = 0; j < 16; ++j) {
        if (j >= nr) {
          r[j] = _mm512_setzero_si512();
          continue;
        }
        const float* src = yt + (r0 + j) * ldc + i0;
        __m512 v = _mm512_maskz_loadu_ps(t, src);
        for (int s = 1; s < splits; ++s) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(t, src + s * mp));
        r[j] = _mm512_castps_si512(v);
      }
      transpose16(r);
      for (int64_t i = 0; i < 16 && i0 + i < m; ++i)
        _mm512_mask_storeu_ps(y + (i0 + i) * n + n0 + r0, lanes(nr), _mm512_castsi512_ps(r[i]));
    }
  }
}


// The bf16 parts of 16 floats: out[s] = words of split s (s = 0: v rounded to nearest even).
void split16(__m512 v, int splits, __m256i* out) {
  const __m512 inf = _mm512_set1_ps(__builtin_inff());
  for (int s = 0; s < splits; ++s) {
    const __m256i h = (__m256i)_mm512_cvtneps_pbh(v);
    out[s] = h;
    if (s + 1 < splits) {
      const __m512 hf = bf16_words_to_ps(h);
      v = _mm512_maskz_sub_ps(_mm512_cmp_ps_mask(_mm512_abs_ps(hf), inf, _CMP_NEQ_UQ), v, hf);
    }
  }
}

// Stores `count` (<= 16) dwords of v as columns c .. c + count - 1 of pair p in the cb-blocked VNNI layout.
void store_cols(uint32_t* dst, int64_t np, int64_t cb, int64_t p, int64_t c, int64_t count, __m512i v) {
  const int64_t off = c % cb;
  if (off + count <= cb) {
    _mm512_mask_storeu_epi32(dst + ((c / cb) * np + p) * cb + off, lanes(count), v);
    return;
  }
  alignas(64) uint32_t tmp[16];
  _mm512_store_si512(tmp, v);
  for (int64_t j = 0; j < count; ++j) dst[(((c + j) / cb) * np + p) * cb + (c + j) % cb] = tmp[j];
}

// A conv's im2col columns (B, K, L) fp32 in the cb-blocked VNNI layout: column c = s * mp + b * L + l.
void pack_cols_vnni(const float* cols, int64_t batch, int64_t k, int64_t l, int splits, int64_t kp, int64_t mp,
                    int64_t cb, uint32_t* dst) {
  const int64_t np = kp / 2;
  const __m512i inter = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22, 6,
                                         21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
  at::parallel_for(0, batch * np, 1, [&](int64_t lo, int64_t hi) {
    for (int64_t t = lo; t < hi; ++t) {
      const int64_t b = t / np, p = t % np;
      const float* r0 = cols + (b * k + 2 * p) * l;
      const bool has0 = 2 * p < k, has1 = 2 * p + 1 < k;
      for (int64_t l0 = 0; l0 < l; l0 += 16) {
        const __mmask16 msk = lanes(l - l0);
        const __m512 a = has0 ? _mm512_maskz_loadu_ps(msk, r0 + l0) : _mm512_setzero_ps();
        const __m512 c = has1 ? _mm512_maskz_loadu_ps(msk, r0 + l + l0) : _mm512_setzero_ps();
        __m256i ha[3], hc[3];
        split16(a, splits, ha);
        split16(c, splits, hc);
        for (int s = 0; s < splits; ++s) {
          const __m512i both = _mm512_inserti64x4(_mm512_castsi256_si512(ha[s]), hc[s], 1);
          store_cols(dst, np, cb, p, s * mp + b * l + l0, std::min<int64_t>(16, l - l0),
                     _mm512_permutexvar_epi16(inter, both));
        }
      }
    }
  });
}

// int8 columns q (K, ML) (one column per output pixel) in the cb-blocked VNNI layout of quads: dword (p, c)
// = q[4p .. 4p + 3, c] (zero past K).
void pack_q_vnni4(const int8_t* q, int64_t k, int64_t ml, int64_t kp, int64_t cb, uint32_t* dst) {
  const int64_t np = kp / 4, cblocks16 = (ml + 15) / 16;
  at::parallel_for(0, np, 4, [&](int64_t lo, int64_t hi) {
    for (int64_t p = lo; p < hi; ++p) {
      for (int64_t c16 = 0; c16 < cblocks16; ++c16) {
        const int64_t c0 = c16 * 16, count = std::min<int64_t>(16, ml - c0);
        __m128i a[4];
        for (int i = 0; i < 4; ++i) {
          const int64_t row = 4 * p + i;
          a[i] = row < k ? _mm_maskz_loadu_epi8(lanes(count), q + row * ml + c0) : _mm_setzero_si128();
        }
        const __m128i t0 = _mm_unpacklo_epi8(a[0], a[1]), t1 = _mm_unpackhi_epi8(a[0], a[1]);
        const __m128i t2 = _mm_unpacklo_epi8(a[2], a[3]), t3 = _mm_unpackhi_epi8(a[2], a[3]);
        __m512i v = _mm512_castsi128_si512(_mm_unpacklo_epi16(t0, t2));
        v = _mm512_inserti32x4(v, _mm_unpackhi_epi16(t0, t2), 1);
        v = _mm512_inserti32x4(v, _mm_unpacklo_epi16(t1, t3), 2);
        v = _mm512_inserti32x4(v, _mm_unpackhi_epi16(t1, t3), 3);
        store_cols(dst, np, cb, p, c0, count, v);
      }
    }
  });
}

#pragma GCC pop_options

}  // namespace

// Why the AMX path is off, or "" when it can run. It uses a torch-internal C++ API, so like the Python
// private-API paths (wfn_kernels/nn/torch_internals.py) it is on only for tested torch versions (2.13)
// unless WFN_TORCH_INTERNALS=1, and off with WFN_TORCH_INTERNALS=0.
std::string amx_off_reason() {
#if !WFN_HAVE_BRGEMM
  return "this torch build lacks at::native::cpublas::brgemm (bf16 and int8)";
#else
  static const std::string internals = [] {
    const char* v = std::getenv("WFN_TORCH_INTERNALS");
    const std::string setting = v == nullptr ? "" : v;
    if (setting == "0") return std::string("private torch APIs disabled by WFN_TORCH_INTERNALS=0");
    if (!(TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR == 13) && setting != "1")
      return std::string("torch ") + std::to_string(TORCH_VERSION_MAJOR) + "." + std::to_string(TORCH_VERSION_MINOR) +
             " is not a tested version for at::native::cpublas::brgemm (2.13); WFN_TORCH_INTERNALS=1 forces it";
    return std::string();
  }();
  if (!internals.empty()) return internals;
  static const bool hw = at::native::cpublas::could_pack(at::kBFloat16);
  if (!hw) return "oneDNN reports no AMX-BF16 on this CPU";
  if (active_isa() != Isa::Avx512) return "the AVX-512 dispatch level is not active";
  if (amx_override().load() == 0) return "switched off (WFN_AMX=0 or torch.ops.wfn_cpu.set_amx(0))";
  return "";
#endif
}

bool amx_bf16_available() { return amx_off_reason().empty(); }

int64_t set_amx_op(int64_t mode) { return amx_override().exchange(int(mode)); }

bool amx_int8_available() {
  static const bool hw = [] {  // AMX-INT8: CPUID.(EAX=7, ECX=0):EDX bit 25
    unsigned a = 0, b = 0, c = 0, d = 0;
    return __get_cpuid_count(7, 0, &a, &b, &c, &d) != 0 && ((d >> 25) & 1u) != 0;
  }();
  return hw && amx_bf16_available();
}

namespace {
std::atomic<int64_t>& min_m_override(int splits) {
  static std::atomic<int64_t> bf{env_int("WFN_AMX_MIN_M_BF16", -1)}, fl{env_int("WFN_AMX_MIN_M_FLOAT", -1)};
  return splits == 1 ? bf : fl;
}
}  // namespace

// Crossovers with the register-lookup GEMVs (bench/amx_blocking.py --crossover, 1 thread, N=4096 K=14336,
// Intel Xeon with AMX; bench/results/amx_xeon.md): bf16 AMX / GEMV time 0.69 at M=8, 1.24x faster at 16;
// float (three bf16 parts) 0.81 at M=32, 1.08x faster at 64.
int64_t amx_min_m(int splits) {
  const int64_t forced = min_m_override(splits).load();
  if (forced >= 0) return forced;
  return splits == 1 ? 16 : 64;
}

int64_t set_amx_min_m_op(int64_t splits, int64_t m) {
  TORCH_CHECK(splits == 1 || splits == 3, "set_amx_min_m: splits must be 1 (bf16 mode) or 3 (float mode)");
  return min_m_override(int(splits)).exchange(m);
}

namespace {
std::atomic<int64_t>& conv_max_m_override() {
  static std::atomic<int64_t> v{env_int("WFN_AMX_CONV_MAX_M", -1)};
  return v;
}
}  // namespace

bool amx_conv_ok(int64_t pixels, int64_t k) {
  const int64_t forced = conv_max_m_override().load();
  if (!amx_bf16_available() || pixels <= 0) return false;
  return forced >= 0 ? pixels <= forced : (pixels <= 64 && k >= 1024);
}

int64_t set_amx_conv_max_m_op(int64_t m) { return conv_max_m_override().exchange(m); }

bool bf16_table(const float* table, uint16_t* out) {
  for (int i = 0; i < 256; ++i) {
    uint32_t u;
    std::memcpy(&u, table + i, 4);
    if ((u & 0xffffu) != 0) return false;
    out[i] = uint16_t(u >> 16);
  }
  return true;
}

namespace {

// Element types of the tile product: bf16 x bf16 -> fp32 (pairs of K per VNNI dword), int8 x int8 -> int32
// (quads of K per dword).
template <typename T>
struct Elem;
template <>
struct Elem<at::BFloat16> {
  using Acc = float;
  static constexpr int64_t kVnni = 2, kKAlign = 32;
};
template <>
struct Elem<int8_t> {
  using Acc = int32_t;
  static constexpr int64_t kVnni = 4, kKAlign = 64;
};

#if WFN_HAVE_BRGEMM
void brgemm_call(int64_t m, int64_t n, int64_t k, int64_t lda, int64_t ldb, int64_t ldc, bool add,
                 const at::BFloat16* a, const at::BFloat16* b, float* c) {
  at::native::cpublas::brgemm(m, n, k, lda, ldb, ldc, add, a, b, c, true);
}

void brgemm_call(int64_t m, int64_t n, int64_t k, int64_t lda, int64_t ldb, int64_t ldc, bool add, const int8_t* a,
                 const int8_t* b, int32_t* c) {
  at::native::cpublas::brgemm(m, n, k, lda, ldb, ldc, add, reinterpret_cast<const signed char*>(a),
                              reinterpret_cast<const signed char*>(b), c, true);
}

void brgemm_done() { at::native::cpublas::brgemm_release(true); }
#else
template <typename A, typename C>
void brgemm_call(int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, bool, const A*, const A*, C*) {
  TORCH_CHECK(false, "the AMX path was called but ", amx_off_reason());
}
void brgemm_done() {}
#endif

// The product on packed activations: for each tile of weight rows and each chunk of `chunk` pixels
// (activation rows), yt[r, s * chunk + j] = sum_k W[n0 + r, k] * split s of pixel p0 + j, then
// store(yt, rows, ldc, chunk, n0, p0, count). Pixel p of split s is column s * mp + p of xv (dwords of
// kVnni consecutive K elements; mp a multiple of cb). decode(n0, rows, k0, kvalid, kcur, ld, out) writes the
// weight tile's elements [k0, k0 + kvalid) of each row with stride ld, zero up to kcur.
struct AmxProblem {
  const uint32_t* xv;
  int64_t pixels, mp, cb, np, kp, k, n;
  int splits;
};

template <typename T, typename Decode, typename Store>
void amx_run(const AmxProblem& pr, Decode decode, Store store) {
  using Acc = typename Elem<T>::Acc;
  constexpr int64_t vnni = Elem<T>::kVnni;
  const int64_t cb = pr.cb, np = pr.np, kp = pr.kp, n = pr.n;
  int64_t nr = std::min(tile_rows(), round_up(n, 16));
  const int64_t pad = 64 / int64_t(sizeof(T));  // a row stride off 4 KiB multiples: tile rows do not alias in L1
  // Whole-K tiles (decoded once, reused by every pixel chunk) when they fit in ~1 MiB; else K blocks.
  const bool whole_k = nr * (kp + pad) * int64_t(sizeof(T)) <= (int64_t(1) << 20) || pr.pixels <= cb;
  const int64_t kb = whole_k ? kp : std::min(round_up(k_block(), Elem<T>::kKAlign), kp), lda = kb + pad;
  const int64_t chunk = std::min(round_up(pr.pixels, cb), std::max(cb, (chunk_bytes() / (nr * 4 * pr.splits)) / cb * cb));
  const int64_t rs = std::min(sub_rows(), nr), ldc = chunk * pr.splits;
  const T* xvp = reinterpret_cast<const T*>(pr.xv);
  parallel_chunks(n, nr, [&](int64_t lo, int64_t hi) {
    T* wt = static_cast<T*>(workspace(kWsAmxA, nr * lda * int64_t(sizeof(T))));
    Acc* yt = static_cast<Acc*>(workspace(kWsAmxC, nr * ldc * 4));
    for (int64_t n0 = lo; n0 < hi; n0 += nr) {
      const int64_t rows = std::min(nr, hi - n0);
      if (whole_k) decode(n0, rows, int64_t(0), pr.k, kp, lda, wt);
      for (int64_t p0 = 0; p0 < pr.pixels; p0 += chunk) {
        const int64_t count = std::min(chunk, pr.pixels - p0);
        for (int64_t k0 = 0; k0 < kp; k0 += kb) {
          const int64_t kcur = std::min(kb, kp - k0);
          if (!whole_k) decode(n0, rows, k0, std::min(kcur, pr.k - k0), kcur, lda, wt);
          for (int s = 0; s < pr.splits; ++s)
            for (int64_t j0 = 0; j0 < count; j0 += cb) {
              const int64_t cc = std::min(cb, count - j0), col = s * pr.mp + p0 + j0;
              const T* b = xvp + ((col / cb) * np + k0 / vnni) * cb * vnni;
              for (int64_t r0 = 0; r0 < rows; r0 += rs)
                brgemm_call(std::min(rs, rows - r0), cc, kcur, lda, cb, ldc, k0 > 0, wt + r0 * lda, b,
                            yt + r0 * ldc + s * chunk + j0);
            }
        }
        store(static_cast<const Acc*>(yt), rows, ldc, chunk, n0, p0, count);
      }
    }
    brgemm_done();
  });
}

}  // namespace

at::Tensor amx_bf16_linear(const at::Tensor& x, int splits, const at::Tensor& packed, const uint16_t* table,
                           int bits, int64_t k) {
  TORCH_CHECK(splits == 1 || splits == 3, "amx_bf16_linear: splits must be 1 or 3");
  TORCH_CHECK(x.dim() == 2 && x.size(1) == k && x.is_contiguous(), "amx_bf16_linear: x must be contiguous (M, K)");
  const int64_t m = x.size(0), n = packed.size(0);
  const int64_t cb = round_up(col_block(), 16), kp = round_up(k, 32), mp = round_up(m, cb), np = kp / 2;
  uint32_t* xv = static_cast<uint32_t*>(workspace(kWsAmxB, mp * splits * np * 4));
  pack_x_vnni(x, splits, kp, mp, cb, xv);
  at::Tensor y = at::empty({m, n}, at::TensorOptions().dtype(at::kFloat));
  float* yp = y.data_ptr<float>();
  amx_run<at::BFloat16>(AmxProblem{xv, m, mp, cb, np, kp, k, n, splits}, tile_decoder<at::BFloat16>(packed, table, bits),
          [&](const float* yt, int64_t rows, int64_t ldc, int64_t chunk, int64_t n0, int64_t p0, int64_t count) {
            store_transposed(yt, rows, ldc, count, chunk, splits, yp + p0 * n, n, n0);
          });
  return y;
}

at::Tensor amx_bf16_conv2d(const at::Tensor& x, int splits, const at::Tensor& packed, const uint16_t* table, int bits,
                           at::IntArrayRef weight_shape, at::IntArrayRef stride, at::IntArrayRef padding,
                           at::IntArrayRef dilation) {
  TORCH_CHECK(splits == 1 || splits == 3, "amx_bf16_conv2d: splits must be 1 or 3");
  const int64_t n = weight_shape[0], k = weight_shape[1] * weight_shape[2] * weight_shape[3], batch = x.size(0);
  const at::Tensor cols = at::im2col(x.to(at::kFloat).contiguous(), {weight_shape[2], weight_shape[3]}, dilation,
                                     padding, stride);  // (B, K, L)
  const int64_t out_hw[2] = {conv_out_size(x, weight_shape, stride, padding, dilation, 0),
                             conv_out_size(x, weight_shape, stride, padding, dilation, 1)};
  const int64_t l = out_hw[0] * out_hw[1], pixels = batch * l;
  at::Tensor out = at::empty({batch, n, out_hw[0], out_hw[1]}, at::TensorOptions().dtype(at::kFloat));
  if (pixels == 0 || n == 0) return out;
  const int64_t cb = round_up(col_block(), 16), kp = round_up(k, 32), mp = round_up(pixels, cb), np = kp / 2;
  uint32_t* xv = static_cast<uint32_t*>(workspace(kWsAmxB, mp * splits * np * 4));
  pack_cols_vnni(cols.data_ptr<float>(), batch, k, l, splits, kp, mp, cb, xv);
  float* op = out.data_ptr<float>();
  amx_run<at::BFloat16>(AmxProblem{xv, pixels, mp, cb, np, kp, k, n, splits}, tile_decoder<at::BFloat16>(packed, table, bits),
          [&](const float* yt, int64_t rows, int64_t ldc, int64_t chunk, int64_t n0, int64_t p0, int64_t count) {
            for (int64_t r = 0; r < rows; ++r) {
              const float* src = yt + r * ldc;
              for (int64_t j = 0; j < count;) {  // runs of pixels within one image
                const int64_t p = p0 + j, b = p / l, l0 = p % l, run = std::min(count - j, l - l0);
                float* dst = op + (b * n + n0 + r) * l + l0;
                for (int64_t q = 0; q < run; ++q) {
                  float v = src[j + q];
                  for (int sp = 1; sp < splits; ++sp) v += src[sp * chunk + j + q];
                  dst[q] = v;
                }
                j += run;
              }
            }
          });
  return out;
}

void amx_int8_columns(const int8_t* q, int64_t k, int64_t ml, const at::Tensor& packed, const int8_t* table8, int bits,
                      const Int32TileSink& sink) {
  const int64_t n = packed.size(0);
  if (ml == 0 || n == 0) return;
  const int64_t cb = round_up(col_block(), 16), kp = round_up(k, 64), mp = round_up(ml, cb), np = kp / 4;
  uint32_t* xv = static_cast<uint32_t*>(workspace(kWsAmxB, mp * np * 4));
  pack_q_vnni4(q, k, ml, kp, cb, xv);
  amx_run<int8_t>(AmxProblem{xv, ml, mp, cb, np, kp, k, n, 1}, tile_decoder<int8_t>(packed, table8, bits),
                  [&](const int32_t* yt, int64_t rows, int64_t ldc, int64_t, int64_t n0, int64_t p0, int64_t count) {
                    sink(n0, rows, yt, ldc, p0, count);
                  });
}

}  // namespace wfn

TORCH_LIBRARY_FRAGMENT(wfn_cpu, m) {
  // AMX tile path of the large-M products: -1 auto (on where oneDNN reports AMX-BF16), 0 off, 1 on;
  // returns the previous setting. amx_capability(): whether the path is usable now.
  m.def("set_amx(int mode) -> int", &wfn::set_amx_op);
  m.def("amx_capability() -> bool", []() { return wfn::amx_bf16_available(); });
  m.def("amx_status() -> str", []() {
    const std::string why = wfn::amx_off_reason();
    return why.empty() ? std::string(wfn::amx_int8_available() ? "on (bf16, int8)" : "on (bf16)") : "off: " + why;
  });
  // Force the smallest M of the AMX path for splits = 1 (bf16 mode) or 3 (float mode); -1: default.
  m.def("set_amx_min_m(int splits, int m) -> int", &wfn::set_amx_min_m_op);
  // Force the largest B*H'*W' of the AMX conv path (0: never, any K; -1: default); returns the previous.
  m.def("set_amx_conv_max_m(int m) -> int", &wfn::set_amx_conv_max_m_op);
  // Blocking of the AMX path (tuning and tests; bench/amx_blocking.py): weight rows per task, K per decoded
  // tile, activation columns and weight rows per brgemm call, bytes of a task's output tile.
  m.def("set_amx_blocking(int rows, int kblock, int cols, int subrows, int chunk_bytes) -> ()",
        &wfn::set_amx_blocking_op);
}
