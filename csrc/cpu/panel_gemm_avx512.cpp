// Large-M int8 and bf16 products on AVX-512 dot-product instructions (VNNI vpdpbusd, AVX512_BF16
// vdpbf16ps), for CPUs without AMX: the codes of a block of weight rows are decoded once into the
// instructions' dword-interleaved operand layout and every activation row streams past them in registers.
//
// Operand layout ("panel"): 48 weight rows (three zmm of 16 output columns) by kdw dwords of K, a dword
// holding E = 4 int8 weights (as w + 128, vpdpbusd's unsigned operand) or E = 2 bf16 weights of one row:
// panel[s][c] = dword (row c, k elements E*s .. E*s + E - 1), 48 dwords per s. It is built by decoding 16
// rows at a time into a row-major scratch with the existing row decoders, then a 16 x 16 dword transpose.
//
// Micro-kernel: MR <= 8 activation rows x 48 columns = 24 accumulators; per dword step three panel loads,
// MR activation-dword broadcasts, 3 * MR dot-product instructions (vpdpbusd: 64 multiply-adds each).
// int8: y_int = sum (w + 128) * x - 128 * sum x (the accumulators start at -128 * xsum); exact in int32.
// bf16: fp32 accumulation, fp32 output (no output rounding).
//
// Blocking (Goto-style, weights are the operand packed on the fly): a thread takes a range of weight
// rows; for each block of NC rows and each K block of kdw dwords it packs NC / 48 panels (~NC * kdw * 4
// bytes, in L2), then for each panel runs every activation row block over it, accumulating into y (which
// is re-read per K block). Both sizes are tunable (set_panel_blocking) and measured by bench/panel_gemm.py.
// Default one panel (48 rows) by 1024 dwords: on a Zen 4 EPYC it beat the earlier 240 x 256 at every M
// measured (16, 64, 256) and 1 and 2 threads, taking 6-23 % (int8) and 2-19 % (bf16) off the time; a long K block
// means fewer re-reads of y (bench/results/panel_gemm_zen4.md).
#include <ATen/Parallel.h>
#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <optional>

#include "int_kernels.h"

#define WFN_INL inline __attribute__((always_inline))

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512vbmi,avx512vnni,avx512bf16,avx2,fma,bmi,bmi2")

namespace wfn {

namespace {

constexpr int kPanel = 48;  // weight rows per panel: three zmm of int32 / fp32 columns

std::atomic<int64_t> g_nc{48};     // weight rows per packed block (multiple of 48)
std::atomic<int64_t> g_kdw{1024};  // dwords of K per block (multiple of 16)
std::atomic<bool> g_direct{true};  // 4-bit codes packed straight from the code bytes (Direct4)

bool direct_pack_enabled() { return g_direct.load(); }

// In-register transpose of a 16 x 16 dword matrix: r[i] = row i in, r[j] = column j out.
WFN_INL void transpose16(__m512i (&r)[16]) {
  __m512i t[16], u[16];
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
  }
  for (int i = 0; i < 4; ++i) {  // u[4i + j], 128-bit lane L: rows 4i .. 4i+3 of column 4L + j
    u[4 * i + 0] = _mm512_unpacklo_epi64(t[4 * i], t[4 * i + 2]);
    u[4 * i + 1] = _mm512_unpackhi_epi64(t[4 * i], t[4 * i + 2]);
    u[4 * i + 2] = _mm512_unpacklo_epi64(t[4 * i + 1], t[4 * i + 3]);
    u[4 * i + 3] = _mm512_unpackhi_epi64(t[4 * i + 1], t[4 * i + 3]);
  }
  for (int j = 0; j < 4; ++j) {
    const __m512i ab_lo = _mm512_shuffle_i32x4(u[j], u[4 + j], 0x44), ab_hi = _mm512_shuffle_i32x4(u[j], u[4 + j], 0xEE);
    const __m512i cd_lo = _mm512_shuffle_i32x4(u[8 + j], u[12 + j], 0x44),
                  cd_hi = _mm512_shuffle_i32x4(u[8 + j], u[12 + j], 0xEE);
    r[0 + j] = _mm512_shuffle_i32x4(ab_lo, cd_lo, 0x88);
    r[4 + j] = _mm512_shuffle_i32x4(ab_lo, cd_lo, 0xDD);
    r[8 + j] = _mm512_shuffle_i32x4(ab_hi, cd_hi, 0x88);
    r[12 + j] = _mm512_shuffle_i32x4(ab_hi, cd_hi, 0xDD);
  }
}

// Elements of K per dword and the decode of 16 weight rows into a row-major scratch (ld elements a row).
struct Int8Op {
  using Elem = int8_t;
  static constexpr int E = 4;
  // 4-bit direct pack: the nibble index of output byte 4n + t of s-group u (0, 1) within a code dword n.
  static constexpr int kGroupsPerDword = 2;
  static WFN_INL __m512i lookup(__m512i idx, __m512i lut) { return _mm512_permutexvar_epi8(idx, lut); }
  using Acc = __m512i;
  using Y = int32_t;
  static WFN_INL Acc start(const int32_t* xsum, int i) { return _mm512_set1_epi32(-128 * xsum[i]); }
  static WFN_INL Acc load(__mmask16 m, const Y* p) { return _mm512_maskz_loadu_epi32(m, p); }
  static WFN_INL void store(Y* p, __mmask16 m, Acc v) { _mm512_mask_storeu_epi32(p, m, v); }
  static constexpr uint32_t kPad = 0x80808080u;  // w = 0 (stored as w + 128)
  const int8_t* table;  // 256 entries of w ^ 0x80
  void decode(const uint8_t* packed, int64_t rb, int64_t k, int bits, int64_t r0, int64_t r1, int8_t* out,
              int64_t ld) const {
    int8_decode_rows_avx512(packed, rb, k, bits, table, r0, r1, out, ld);
  }
};

struct Bf16Op {
  using Elem = uint16_t;
  static constexpr int E = 2;
  static constexpr int kGroupsPerDword = 4;
  static WFN_INL __m512i lookup(__m512i idx, __m512i lut) { return _mm512_permutexvar_epi16(idx, lut); }
  using Acc = __m512;
  using Y = float;
  static WFN_INL Acc start(const int32_t*, int) { return _mm512_setzero_ps(); }
  static WFN_INL Acc load(__mmask16 m, const Y* p) { return _mm512_maskz_loadu_ps(m, p); }
  static WFN_INL void store(Y* p, __mmask16 m, Acc v) { _mm512_mask_storeu_ps(p, m, v); }
  static constexpr uint32_t kPad = 0u;  // +0.0: finite, so zero activations times it stay 0
  const uint16_t* table;
  void decode(const uint8_t* packed, int64_t rb, int64_t k, int bits, int64_t r0, int64_t r1, uint16_t* out,
              int64_t ld) const {
    u16_decode_rows_avx512(packed, rb, k, bits, table, r0, r1, out, ld);
  }
};

// 4-bit codes straight into the panel, 16 rows x 128 elements (64 code bytes a row) at a time: a 16 x 16
// dword transpose of the code bytes puts, in vector j, code bytes 4j .. 4j+3 of each row (dword n = row
// n), which hold the elements of G = 8 / E consecutive dword groups s; for each, one vpmultishiftqb moves
// every output element's nibble to the bottom of its byte (int8) or of its word's low byte (bf16), from the
// same qword, and one vpermb / vpermw looks it up in the 16-entry table replicated over the index bits
// the instruction reads (the junk above the nibble). Half the shuffles of decode-then-transpose and no
// scratch round trip. Pad rows and the K tail read zero codes: finite weights against zero activations.
template <class Op>
struct Direct4 {
  static constexpr int G = Op::kGroupsPerDword;
  __m512i ctrl[G];
  __m512i lut;
  explicit Direct4(const typename Op::Elem* table) {
    alignas(64) uint8_t c[G][64];
    for (int u = 0; u < G; ++u)
      for (int b = 0; b < 64; ++b) {
        const int n = b / 4, w = b % 4;  // output byte b = dword n, byte w
        int src_byte, nib;
        if (Op::E == 4) {  // byte w is element 4u' + w of the group: code byte 2u + w/2, nibble w%2
          src_byte = 4 * n + 2 * u + w / 2;
          nib = w % 2;
        } else {  // word w/2 is element w/2 of the pair in code byte u
          src_byte = 4 * n + u;
          nib = (w / 2) % 2;
        }
        c[u][b] = uint8_t(8 * (src_byte % 8) + 4 * nib);
      }
    for (int u = 0; u < G; ++u) ctrl[u] = _mm512_load_si512(c[u]);
    if (Op::E == 4) {
      alignas(64) int8_t t[64];
      for (int i = 0; i < 64; ++i) std::memcpy(t + i, reinterpret_cast<const int8_t*>(table) + (i & 15), 1);
      lut = _mm512_load_si512(t);
    } else {
      alignas(64) uint16_t t[32];
      for (int i = 0; i < 32; ++i) std::memcpy(t + i, reinterpret_cast<const uint16_t*>(table) + (i & 15), 2);
      lut = _mm512_load_si512(t);
    }
  }
  void pack(const PanelGemmArgs& a, int64_t r0, int64_t r1, int64_t k0, int64_t kc, int64_t kdw16,
            uint32_t* panel) const {
    const int64_t bytes = (kc + 1) / 2;  // code bytes of the block in a row
    const uint8_t* src = a.packed + k0 / 2;
    for (int g = 0; g < kPanel / 16; ++g) {
      const int64_t g0 = r0 + 16 * g, nv = std::max<int64_t>(0, std::min<int64_t>(16, r1 - g0));
      for (int64_t cb = 0; cb < bytes; cb += 64) {
        const __mmask64 m = _bzhi_u64(~0ULL, unsigned(std::min<int64_t>(64, bytes - cb)));
        __m512i r[16];
        for (int i = 0; i < 16; ++i)
          r[i] = i < nv ? _mm512_maskz_loadu_epi8(m, src + (g0 + i) * a.row_bytes + cb) : _mm512_setzero_si512();
        transpose16(r);
        const int64_t s0 = cb * 2 / Op::E;  // first dword group of this chunk
        for (int j = 0; j < 16; ++j)
          for (int u = 0; u < G; ++u) {
            const int64_t sg = s0 + int64_t(j) * G + u;
            if (sg >= kdw16) break;
            _mm512_store_si512(panel + sg * kPanel + 16 * g,
                               Op::lookup(_mm512_multishift_epi64_epi8(ctrl[u], r[j]), lut));
          }
      }
      // groups past the block's code bytes (kdw16 padding) are never read by the kernel: left as they are
    }
  }
};

// Pack rows [r0, r1) (<= 48) and K elements [k0, k0 + kc) into panel (kdw16 x 48 dwords).
template <class Op>
void pack_panel(const Op& op, const PanelGemmArgs& a, int64_t r0, int64_t r1, int64_t k0, int64_t kc, int64_t kdw16,
                uint32_t* panel, uint32_t* scratch) {
  using T = typename Op::Elem;
  const int64_t ld = kdw16 * Op::E;  // elements per scratch row
  const uint8_t* src = a.packed + k0 * a.bits / 8;
  for (int g = 0; g < kPanel / 16; ++g) {
    const int64_t g0 = r0 + 16 * g, nv = std::max<int64_t>(0, std::min<int64_t>(16, r1 - g0));
    T* s = reinterpret_cast<T*>(scratch);
    if (nv > 0) op.decode(src, a.row_bytes, kc, a.bits, g0, g0 + nv, s, ld);
    T pad;
    std::memcpy(&pad, &Op::kPad, sizeof(T));
    for (int64_t i = 0; i < 16; ++i)  // pad: the K tail of each row and the rows past r1
      std::fill(s + i * ld + (i < nv ? kc : 0), s + (i + 1) * ld, pad);
    for (int64_t c = 0; c < kdw16; c += 16) {
      __m512i r[16];
      for (int i = 0; i < 16; ++i) r[i] = _mm512_load_si512(scratch + i * kdw16 + c);
      transpose16(r);
      for (int j = 0; j < 16; ++j) _mm512_store_si512(panel + (c + j) * kPanel + 16 * g, r[j]);
    }
  }
}

// One activation dword broadcast into a temporary and its three dot products, in one asm statement: with
// intrinsics GCC hoists the MR broadcasts of a step into registers, which with 3 * MR accumulators exceeds
// the 32 zmm and spills accumulators to the stack on every step.
#define WFN_DOT3(INSN, A0, A1, A2, W0, W1, W2, P)                                                        \
  do {                                                                                                 \
    __m512i t_;                                                                                        \
    asm("vpbroadcastd %[m], %[t]\n\t" INSN " %[t], %[w0], %[a0]\n\t" INSN " %[t], %[w1], %[a1]\n\t" INSN \
        " %[t], %[w2], %[a2]"                                                                          \
        : [a0] "+v"(A0), [a1] "+v"(A1), [a2] "+v"(A2), [t] "=&v"(t_)                                   \
        : [w0] "v"(W0), [w1] "v"(W1), [w2] "v"(W2), [m] "m"(*reinterpret_cast<const int32_t*>(P)));    \
  } while (0)

// The accumulators are three arrays of MR vectors (not one [MR][3] array: GCC keeps an aggregate that
// large in memory, and every dot product then goes through the stack). Op supplies the accumulator type
// and its start / load / store (int8: start at -128 * xsum, int32 y; bf16: start at 0, fp32 y).
template <class Op, int MR>
__attribute__((noinline)) void kernel(const uint32_t* panel, int64_t kdw, const typename Op::Elem* x, int64_t xs,
                                      typename Op::Y* y, int64_t ldy, const int32_t* xsum, bool first,
                                      const __mmask16 (&cm)[3]) {
  typename Op::Acc a0[MR], a1[MR], a2[MR];
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) {
    if (first) {
      a0[i] = a1[i] = a2[i] = Op::start(xsum, i);
    } else {
      a0[i] = Op::load(cm[0], y + i * ldy);
      a1[i] = Op::load(cm[1], y + i * ldy + 16);
      a2[i] = Op::load(cm[2], y + i * ldy + 32);
    }
  }
  for (int64_t s = 0; s < kdw; ++s) {
    const uint32_t* w = panel + s * kPanel;
    const __m512i w0 = _mm512_load_si512(w), w1 = _mm512_load_si512(w + 16), w2 = _mm512_load_si512(w + 32);
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      if constexpr (Op::E == 4) WFN_DOT3("vpdpbusd", a0[i], a1[i], a2[i], w0, w1, w2, x + i * xs + 4 * s);
      else WFN_DOT3("vdpbf16ps", a0[i], a1[i], a2[i], w0, w1, w2, x + i * xs + 2 * s);
    }
  }
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) {
    Op::store(y + i * ldy, cm[0], a0[i]);
    Op::store(y + i * ldy + 16, cm[1], a1[i]);
    Op::store(y + i * ldy + 32, cm[2], a2[i]);
  }
}

// One micro-kernel call for mr (1..8) activation rows.
template <class Op>
void run_kernel(int64_t mr, const uint32_t* p, int64_t kdw, const typename Op::Elem* x, int64_t xs,
                typename Op::Y* y, int64_t ldy, const int32_t* xsum, bool first, const __mmask16 (&cm)[3]) {
  switch (mr) {
    case 1: kernel<Op, 1>(p, kdw, x, xs, y, ldy, xsum, first, cm); break;
    case 2: kernel<Op, 2>(p, kdw, x, xs, y, ldy, xsum, first, cm); break;
    case 3: kernel<Op, 3>(p, kdw, x, xs, y, ldy, xsum, first, cm); break;
    case 4: kernel<Op, 4>(p, kdw, x, xs, y, ldy, xsum, first, cm); break;
    case 5: kernel<Op, 5>(p, kdw, x, xs, y, ldy, xsum, first, cm); break;
    case 6: kernel<Op, 6>(p, kdw, x, xs, y, ldy, xsum, first, cm); break;
    case 7: kernel<Op, 7>(p, kdw, x, xs, y, ldy, xsum, first, cm); break;
    default: kernel<Op, 8>(p, kdw, x, xs, y, ldy, xsum, first, cm); break;
  }
}

template <class Op>
void panel_gemm(const Op& op, const PanelGemmArgs& a, int64_t n0, int64_t n1) {
  using T = typename Op::Elem;
  using Y = typename Op::Y;
  const int64_t nc_max = std::max<int64_t>(kPanel, g_nc.load() / kPanel * kPanel);
  const int64_t kdw_max = std::max<int64_t>(16, g_kdw.load() / 16 * 16);
  const int64_t kc_max = kdw_max * Op::E;
  // Per-thread buffers: packed panels (counted as weight workspace) and the 16-row decode scratch.
  uint32_t* panels = static_cast<uint32_t*>(workspace(kWsPanel, nc_max / kPanel * kdw_max * kPanel * 4 + 16 * kdw_max * 4));
  uint32_t* scratch = panels + nc_max / kPanel * kdw_max * kPanel;
  const T* x = static_cast<const T*>(a.x);
  Y* y = static_cast<Y*>(a.y);
  std::optional<Direct4<Op>> d4;
  if (a.bits == 4 && direct_pack_enabled()) d4.emplace(op.table);
  const Direct4<Op>* direct = d4 ? &*d4 : nullptr;
  for (int64_t jc = n0; jc < n1; jc += nc_max) {
    const int64_t nc = std::min(nc_max, n1 - jc), np = (nc + kPanel - 1) / kPanel;
    for (int64_t k0 = 0; k0 < a.k; k0 += kc_max) {
      const int64_t kc = std::min(kc_max, a.k - k0), kdw = (kc + Op::E - 1) / Op::E, kdw16 = (kdw + 15) / 16 * 16;
      for (int64_t p = 0; p < np; ++p) {
        const int64_t lo = jc + p * kPanel, hi = std::min(jc + nc, jc + (p + 1) * kPanel);
        uint32_t* dst = panels + p * kdw16 * kPanel;
        if (direct != nullptr) direct->pack(a, lo, hi, k0, kc, kdw16, dst);
        else pack_panel(op, a, lo, hi, k0, kc, kdw16, dst, scratch);
      }
      for (int64_t p = 0; p < np; ++p) {
        const int64_t c0 = jc + p * kPanel, cols = std::min<int64_t>(kPanel, jc + nc - c0);
        __mmask16 cm[3];
        for (int j = 0; j < 3; ++j) {
          const int64_t v = std::max<int64_t>(0, std::min<int64_t>(16, cols - 16 * j));
          cm[j] = __mmask16((1u << v) - 1u);
        }
        const uint32_t* pp = panels + p * kdw16 * kPanel;
        for (int64_t m0 = 0; m0 < a.m; m0 += 8) {
          const T* xm = x + m0 * a.xstride + k0;
          Y* ym = y + m0 * a.ldy + c0;
          const int32_t* xsum = a.xsum != nullptr ? a.xsum + m0 : nullptr;
          run_kernel<Op>(std::min<int64_t>(8, a.m - m0), pp, kdw, xm, a.xstride, ym, a.ldy, xsum, k0 == 0, cm);
        }
      }
    }
  }
}

// All of y over the thread pool: tasks of whole panels, about four per thread, at most one block each.
template <class F>
void run_parallel(const PanelGemmArgs& a, int64_t n, F&& f) {
  const int64_t panels = (n + kPanel - 1) / kPanel, per_block = std::max<int64_t>(1, g_nc.load() / kPanel);
  const int64_t tasks = 4 * std::max<int64_t>(1, at::get_num_threads());
  const int64_t per_task = std::min(per_block, std::max<int64_t>(1, (panels + tasks - 1) / tasks));
  parallel_chunks(n, per_task * kPanel, [&](int64_t lo, int64_t hi) { f(a, lo, hi); });
}

}  // namespace

bool set_panel_direct_pack(bool on) { return g_direct.exchange(on); }

int64_t set_panel_blocking(int64_t nc, int64_t kdw) {
  if (nc > 0) g_nc.store(nc);
  if (kdw > 0) g_kdw.store(kdw);
  return g_nc.load() * 100000 + g_kdw.load();
}

namespace {
void int8_panel_rows(const PanelGemmArgs& a, int64_t n0, int64_t n1) {
  alignas(64) int8_t t[256];
  for (int e = 0; e < 256; ++e) t[e] = int8_t(static_cast<const int8_t*>(a.table)[e] ^ 0x80);
  const Int8Op op{t};
  panel_gemm(op, a, n0, n1);
}

void bf16_panel_rows(const PanelGemmArgs& a, int64_t n0, int64_t n1) {
  const Bf16Op op{static_cast<const uint16_t*>(a.table)};
  panel_gemm(op, a, n0, n1);
}
}  // namespace


void int8_panel_gemm_avx512(const PanelGemmArgs& a, int64_t n) { run_parallel(a, n, int8_panel_rows); }
void bf16_panel_gemm_avx512(const PanelGemmArgs& a, int64_t n) { run_parallel(a, n, bf16_panel_rows); }

}  // namespace wfn

#pragma GCC pop_options
