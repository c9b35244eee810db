// Internal interface between the CPU op entry points (codebook_linear.cpp, shift_add.cpp) and the
// SIMD kernels (kernels_{scalar,avx2,avx512}.cpp), chosen at run time (dispatch.cpp).
//
// Packed layout (wfn_kernels/packing.py): uint8 (N, row_bytes), row_bytes = ceil(K*bits/8); element k
// of a row sits at bit (k*bits)%8 of byte (k*bits)/8 (little-endian within a byte).
//
// GEMV layout trick (why x is permuted): the SIMD kernels read a row in blocks of `block_bytes` bytes
// (64 for AVX-512, 32 for AVX2) viewed as D = block_bytes/4 little-endian 32-bit words. Word j holds
// E = 32/bits consecutive codes: element j*E + p at bit p*bits. Shifting all D words right by p*bits
// puts "phase p" codes (elements j*E + p, j = 0..D-1) in the low bits of every lane, where a
// permutexvar / gather table lookup reads them, with no masking or re-interleaving of weights. So
// instead of reordering the (large) weight stream we reorder the (small) activation once per call:
// xperm[blk*EB + p*D + j] = x[blk*EB + j*E + p], EB = block_bytes*8/bits elements per block, zero-padded
// to whole blocks (padding codes are zero and the padded x is zero, so they add 0).
#pragma once
#include <ATen/ATen.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <vector>

namespace wfn {

enum class Isa : int { Scalar = 0, Avx2 = 1, Avx512 = 2 };

// The level in use (hardware support, lowered by WFN_CPU_DISPATCH or set_isa).
Isa active_isa();
// Highest level this CPU supports.
Isa hardware_isa();
// Force a level (tests); raises if the CPU lacks it. Returns the level now in use.
Isa set_isa(Isa isa);
const char* isa_name(Isa isa);
// Which SIMD level the kernels use: "avx512", "avx2" or "scalar".
const char* cpu_capability();

// Arguments of a GEMV over a range of weight rows, for all M activation rows.
struct GemvArgs {
  const float* x;        // (M, xstride) floats, permuted per level (see above; scalar: natural order)
  int64_t m;             // activation rows
  int64_t xstride;       // floats per activation row (padded K)
  const uint8_t* packed; // (N, row_bytes)
  int64_t row_bytes;
  int64_t k;             // in_features
  int bits;              // 2, 4 or 8
  const float* table;    // 256 floats: codebook padded with zeros (out-of-range codes read 0)
  float* y;              // (M, ldy)
  int64_t ldy;
  // AVX2 only: the first 2^bits entries as bf16 when every one is bf16-exact (2/4-bit codes), else null.
  // Set, the kernel decodes through bf16 byte tables and reads x in the order avx2_bf16_element gives.
  const uint16_t* table16 = nullptr;
};

// Element (within a block) that fp32 vector g, lane l of the AVX2 bf16-byte decode holds (kernels_avx2.cpp).
inline int64_t avx2_bf16_element(int bits, int64_t g, int64_t l) {
  const int64_t q = g / 4, u = (g / 2) % 2, s = g % 2;  // code vector, unpack lo/hi, word lo/hi
  const int64_t t = 8 * u + 2 * (l % 4) + s;           // byte within the 128-bit lane
  const int64_t j = 4 * (l / 4) + t / 4, b = t % 4;    // 32-bit word of the block, byte within it
  return j * (32 / bits) + b * (8 / bits) + q;
}

// y[:, r0:r1] for rows r0..r1 of the weight. One function per level.
void gemv_rows_scalar(const GemvArgs& a, int64_t r0, int64_t r1);
void gemv_rows_avx2(const GemvArgs& a, int64_t r0, int64_t r1);
void gemv_rows_avx512(const GemvArgs& a, int64_t r0, int64_t r1);

// Decode rows r0..r1 into natural-order floats out[(r - r0) * k + i] (for the GEMM / conv paths).
void decode_rows_scalar(const uint8_t* packed, int64_t row_bytes, int64_t k, int bits, const float* table,
                        int64_t r0, int64_t r1, float* out);
// AVX2 only: with scale, every weight times its channel's scale as it is decoded, for a [O/block][K][block]
// layout (slab = block * K) with block a multiple of 8 and k of block (onednn_layout.cpp).
void decode_rows_avx2(const uint8_t* packed, int64_t row_bytes, int64_t k, int bits, const float* table,
                      int64_t r0, int64_t r1, float* out, const float* scale = nullptr, int64_t block = 0,
                      int64_t slab = 0);
void decode_rows_avx512(const uint8_t* packed, int64_t row_bytes, int64_t k, int bits, const float* table,
                        int64_t r0, int64_t r1, float* out);

// out[e] *= scale[(e / slab) * block + e % block] for e in [e0, e1), e0 and e1 multiples of block: per-channel
// scaling of decoded weights in a [O/block][K][block] layout (slab = block * K). AVX2 where the CPU has it
// (every AVX-512 CPU does), else scalar.
void scale_channel_blocks(Isa isa, float* out, int64_t e0, int64_t e1, const float* scale, int64_t block,
                          int64_t slab);

// A contiguous float32 codebook (at most 256 entries) as the 256-float table the kernels read, zero-padded.
std::vector<float> padded_table(const at::Tensor& codebook);

// decode_rows_<level> for a level (single-threaded over rows r0..r1).
void decode_rows(Isa isa, const uint8_t* packed, int64_t row_bytes, int64_t k, int bits, const float* table,
                 int64_t r0, int64_t r1, float* out);

// Runs fn(lo, hi) over [0, n) in chunks of `chunk`, claimed dynamically by torch's intra-op threads
// (or inter-op helpers with WFN_CPU_PARALLEL=launch; linear.cpp says when each wins).
void parallel_chunks(int64_t n, int64_t chunk, std::function<void(int64_t, int64_t)> fn);
// Decode rows [r0, r1) of packed (R, row_bytes) codes into out (row-major, k floats each) with level isa,
// parallel over row chunks; table holds 256 floats (codebook zero-padded).
void decode_parallel(Isa isa, const at::Tensor& packed, int64_t k, int bits, const float* table, int64_t r0,
                     int64_t r1, float* out);

// Per-thread reusable scratch buffers (64-byte aligned, grown to the largest request, never shrunk), one
// per slot: 0 fp32 decode (linear.cpp), 1-2 int8 tiles (int_linear.cpp), 3 bf16 decode (bf16_linear.cpp),
// 4-6 the AMX path's weight tile, output tile and packed activations (amx_gemm.cpp), 7 the packed weight
// panels of the AVX-512 panel GEMM (panel_gemm_avx512.cpp).
// workspace_bytes() is what all threads hold since the last reset_workspaces() (which drops every
// buffer: a thread frees its stale one at its next request), so benchmarks can count them.
enum WorkspaceSlot : int {
  kWsFloat = 0, kWsInt8Lo = 1, kWsInt8Hi = 2, kWsBf16 = 3, kWsAmxA = 4, kWsAmxC = 5, kWsAmxB = 6, kWsPanel = 7,
  kWsSlots = 8
};
void* workspace(int slot, int64_t bytes);
int64_t workspace_bytes();
// The part of workspace_bytes() in slot kWsAmxB: activations (packed for the AMX tiles), not weights.
int64_t activation_workspace_bytes();
void reset_workspaces();

// Block geometry of the GEMV kernels at a level: bytes per block (1 for scalar: natural order).
int64_t gemv_block_bytes(Isa isa, int bits);
// Whether the AVX-512 8-bit GEMV uses the byte-plane (vpermt2b) decode, which wants its own x order.
bool avx512_u8_byteplanes();

// y (M, N) float32 = x (M, K) float32 contiguous @ decode(packed).T
at::Tensor linear_dispatch(const at::Tensor& x, const at::Tensor& packed, const at::Tensor& codebook,
                           int64_t bits, int64_t k);

// Software prefetch for a GEMV tile streaming R code rows, called once per 64-byte block b of those rows.
// Two streams: block b + near of the rows in use (prefetcht0), and block b of the row group `tiles` tiles
// ahead (`next` is the first row after the tile) with locality `hint` (__builtin_prefetch's 3 = prefetcht0,
// 2 = t1, 1 = t2, 0 = nta). Rows are often exactly one page (K = 8192 at 4 bits) and the hardware streamer
// stops at page boundaries, so each new row group would otherwise start cold. A tile's row group (R *
// row_bytes = 57 KB at R = 8, K = 14336) is larger than L1, hence a hint that keeps it out of the inner
// caches. Prefetches never fault, so reading ahead past the last row is harmless. Default near 8, 1 tile,
// prefetcht1. Set by wfn_cpu::set_gemv_prefetch (dispatch.cpp) and measured by bench/gemv_prefetch.py: on a
// Zen 4 EPYC (bench/results/gemv_prefetch_zen4.md) near 4 or 8, 1 or 2 tiles and hint t1 or t2 differ by
// no more than the run-to-run noise (-7 % to +7 %, inconsistent in sign) once the timing order is shuffled.
struct GemvPrefetch {
  int near, tiles, hint;
};
GemvPrefetch gemv_prefetch();
template <int R>
inline __attribute__((always_inline)) void prefetch_tile_rows(const uint8_t* const* rows, const uint8_t* next,
                                                              int64_t row_bytes, int64_t b, const GemvPrefetch& pf) {
  for (int j = 0; j < R; ++j) __builtin_prefetch(rows[j] + 64 * (b + pf.near), 0, 3);
  if (pf.tiles <= 0) return;
  const uint8_t* ahead = next + (pf.tiles - 1) * R * row_bytes + 64 * b;
  switch (pf.hint) {  // the hint must be a compile-time constant
    case 3: for (int j = 0; j < R; ++j) __builtin_prefetch(ahead + j * row_bytes, 0, 3); break;
    case 2: for (int j = 0; j < R; ++j) __builtin_prefetch(ahead + j * row_bytes, 0, 2); break;
    case 0: for (int j = 0; j < R; ++j) __builtin_prefetch(ahead + j * row_bytes, 0, 0); break;
    default: for (int j = 0; j < R; ++j) __builtin_prefetch(ahead + j * row_bytes, 0, 1); break;
  }
}

// Output height (dim 0) or width (dim 1) of a conv of x (B, C, H, W) with an (O, C, kh, kw) weight.
inline int64_t conv_out_size(const at::Tensor& x, at::IntArrayRef weight_shape, at::IntArrayRef stride,
                             at::IntArrayRef padding, at::IntArrayRef dilation, int dim) {
  return (x.size(2 + dim) + 2 * padding[dim] - dilation[dim] * (weight_shape[2 + dim] - 1) - 1) / stride[dim] + 1;
}

at::Tensor conv2d_dispatch(const at::Tensor& x, const at::Tensor& packed, const at::Tensor& codebook,
                           int64_t bits, at::IntArrayRef weight_shape, const std::optional<at::Tensor>& bias,
                           at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                           int64_t groups);

// codebook[codes] as float32 (N, K), decoded with the active level, parallel over rows.
at::Tensor decode_weight_cpu(const at::Tensor& packed, const at::Tensor& codebook, int64_t bits, int64_t k);

}  // namespace wfn
