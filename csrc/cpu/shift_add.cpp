// CPU kernel of wfn::shift_add_linear (schema and reference in wfn_kernels/shift_add.py): int8
// activations times an order-0 power-of-two weight, with shifts and adds only, int32 accumulation.
//
// Weight format (4-bit codes, packing.py nibble layout; code c):
//   c & 7 == 0          -> weight 0
//   c & 7 == s (1..7)   -> magnitude 2^(s-1) (times the common scale 2^e_min), sign - if c & 8.
// y[m, n] = sum_k sign * (x[m, k] << (s - 1)), so y * 2^e_min == x @ W.T exactly (|y| < 2^31 is checked
// by the front end: K * 128 * 64 < 2^31).
//
// The dot kernels (wfn_shift_add_dot_*) contain no multiply instruction: the code selects a shift count
// through a 16-entry table (permute / shuffle), the count 0xFF of a zero code shifts everything out
// (vpsllvd yields 0 for counts > 31), and positive and negative terms go to two accumulators subtracted
// once at the end. tests/test_shift_add.py disassembles these symbols and asserts there is no mul.
// x is widened to int32 once and permuted into the same block/phase order as the 4-bit codebook GEMV
// (kernels.h), so each 64-byte (AVX-512) or 32-byte (AVX2) block of codes is used as loaded.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <immintrin.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "kernels.h"

namespace {

// Shift count for a positive (resp. negative) term of code c, 0xFF (shift out) otherwise.
constexpr uint8_t kShiftPos[16] = {255, 0, 1, 2, 3, 4, 5, 6, 255, 255, 255, 255, 255, 255, 255, 255};
constexpr uint8_t kShiftNeg[16] = {255, 255, 255, 255, 255, 255, 255, 255, 255, 0, 1, 2, 3, 4, 5, 6};

}  // namespace

// Scalar dot of one packed row (nbytes bytes, 2 codes each) with natural-order int32 x (2*nbytes,
// zero-padded). Unsigned arithmetic: left shifts of negative values are then well defined (two's
// complement wrap, identical to the SIMD lanes).
extern "C" __attribute__((noinline)) int32_t wfn_shift_add_dot_scalar(const uint8_t* row, int64_t nbytes,
                                                                      const int32_t* x) {
  uint32_t pos = 0, neg = 0;
  for (const uint8_t* end = row + nbytes; row != end; ++row, x += 2) {
    const unsigned lo = *row & 15u, hi = *row >> 4;
    if (lo & 7u) {
      const uint32_t t = uint32_t(x[0]) << ((lo & 7u) - 1u);
      if (lo & 8u) neg += t; else pos += t;
    }
    if (hi & 7u) {
      const uint32_t t = uint32_t(x[1]) << ((hi & 7u) - 1u);
      if (hi & 8u) neg += t; else pos += t;
    }
  }
  return int32_t(pos - neg);
}

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx2,bmi,bmi2")

// nfull 64-byte blocks then `tail` bytes (masked load); x permuted: 128 int32 per block, phase-major.
extern "C" __attribute__((noinline)) int32_t wfn_shift_add_dot_avx512(const uint8_t* row, int64_t nfull,
                                                                      int64_t tail, const int32_t* x) {
  const __m512i tp = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(kShiftPos)));
  const __m512i tn = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(kShiftNeg)));
  __m512i ap = _mm512_setzero_si512(), an = _mm512_setzero_si512();
  const __mmask64 tmask = _bzhi_u64(~0ULL, unsigned(tail));
  for (const uint8_t* end = row + 64 * nfull + (tail ? 64 : 0); row != end; row += 64, x += 128) {
    const __m512i v = row + 64 == end && tail ? _mm512_maskz_loadu_epi8(tmask, row) : _mm512_loadu_si512(row);
#pragma GCC unroll 8
    for (int p = 0; p < 8; ++p) {
      const __m512i c = p == 0 ? v : _mm512_srli_epi32(v, 4 * p);
      const __m512i xv = _mm512_loadu_si512(x + 16 * p);
      ap = _mm512_add_epi32(ap, _mm512_sllv_epi32(xv, _mm512_permutexvar_epi32(c, tp)));
      an = _mm512_add_epi32(an, _mm512_sllv_epi32(xv, _mm512_permutexvar_epi32(c, tn)));
    }
  }
  return _mm512_reduce_add_epi32(_mm512_sub_epi32(ap, an));
}

#pragma GCC pop_options
#pragma GCC push_options
#pragma GCC target("avx2,bmi,bmi2")

// nfull 32-byte blocks then `tail` bytes; x permuted: 64 int32 per block, phase-major. The shift count
// comes from an 8-entry table on the low 3 code bits, the sign bit (bit 3) is moved to bit 31 and
// broadcast over the lane to route the term to the negative accumulator.
extern "C" __attribute__((noinline)) int32_t wfn_shift_add_dot_avx2(const uint8_t* row, int64_t nfull,
                                                                    int64_t tail, const int32_t* x) {
  const __m256i tab = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(kShiftPos)));
  __m256i ap = _mm256_setzero_si256(), an = _mm256_setzero_si256();
  alignas(32) uint8_t buf[32];
  for (const uint8_t* end = row + 32 * nfull + (tail ? 32 : 0); row != end; row += 32, x += 64) {
    const uint8_t* src = row;
    if (row + 32 == end && tail) {
      std::memset(buf, 0, 32);
      std::memcpy(buf, row, size_t(tail));
      src = buf;
    }
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src));
#pragma GCC unroll 8
    for (int p = 0; p < 8; ++p) {
      const __m256i c = p == 0 ? v : _mm256_srli_epi32(v, 4 * p);
      const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + 8 * p));
      const __m256i t = _mm256_sllv_epi32(xv, _mm256_permutevar8x32_epi32(tab, c));
      const __m256i ng = _mm256_srai_epi32(_mm256_slli_epi32(v, 28 - 4 * p), 31);
      ap = _mm256_add_epi32(ap, _mm256_andnot_si256(ng, t));
      an = _mm256_add_epi32(an, _mm256_and_si256(ng, t));
    }
  }
  const __m256i d = _mm256_sub_epi32(ap, an);
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(d), _mm256_extracti128_si256(d, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
  return _mm_cvtsi128_si32(s);
}

#pragma GCC pop_options

namespace wfn {
namespace {

// int32 copy of x in the order the level's dot reads (kernels.h): block of bb bytes = 2*bb codes,
// element j*8 + p of a block (word j, nibble p) at position p*(bb/4) + j; scalar: natural order.
at::Tensor permute_x_int(const at::Tensor& x, int64_t row_bytes, int64_t bb) {
  const int64_t m = x.size(0), k = x.size(1);
  const int64_t nblk = (row_bytes + bb - 1) / bb, eb = 2 * bb, d = bb / 4;
  at::Tensor xp = at::zeros({m, nblk * eb}, x.options().dtype(at::kInt));
  const int8_t* src = x.data_ptr<int8_t>();
  int32_t* dst = xp.data_ptr<int32_t>();
  for (int64_t i = 0; i < m; ++i)
    for (int64_t e = 0; e < k; ++e) {
      const int64_t blk = e / eb, w = e % eb;
      const int64_t pos = bb == 1 ? e : blk * eb + (w % 8) * d + w / 8;
      dst[i * nblk * eb + pos] = src[i * k + e];
    }
  return xp;
}

at::Tensor shift_add_linear_cpu(const at::Tensor& x, const at::Tensor& packed, int64_t k) {
  TORCH_CHECK(x.scalar_type() == at::kChar && x.dim() == 2, "x must be a 2-D int8 tensor (M, K), got ",
              x.scalar_type(), " of shape ", x.sizes());
  TORCH_CHECK(x.size(1) == k, "x has K=", x.size(1), " columns but the weight has in_features=", k);
  TORCH_CHECK(packed.scalar_type() == at::kByte && packed.dim() == 2 && packed.size(1) == (k + 1) / 2,
              "packed shift-add codes must be a 2-D uint8 tensor (N, ", (k + 1) / 2, "), got ",
              packed.scalar_type(), " of shape ", packed.sizes());
  TORCH_CHECK(k * 128 * 64 < (int64_t(1) << 31), "in_features=", k, " could overflow the int32 accumulator");
  const at::Tensor xc = x.contiguous(), pc = packed.contiguous();
  const int64_t m = x.size(0), n = packed.size(0), rb = packed.size(1);
  at::Tensor y = at::zeros({m, n}, x.options().dtype(at::kInt));
  if (m == 0 || n == 0 || k == 0) return y;
  const Isa isa = active_isa();
  const int64_t bb = isa == Isa::Avx512 ? 64 : isa == Isa::Avx2 ? 32 : 1;
  const at::Tensor xp = permute_x_int(xc, rb, bb);
  const int32_t* xd = xp.data_ptr<int32_t>();
  const int64_t xs = xp.size(1);
  const uint8_t* p = pc.data_ptr<uint8_t>();
  int32_t* yd = y.data_ptr<int32_t>();
  const int64_t chunk = std::max<int64_t>(1, (int64_t(64) << 10) / std::max<int64_t>(rb * m, 1));
  parallel_chunks(n, chunk, [&](int64_t lo, int64_t hi) {
    for (int64_t r = lo; r < hi; ++r) {
      const uint8_t* row = p + r * rb;
      for (int64_t i = 0; i < m; ++i) {
        const int32_t* xi = xd + i * xs;
        int32_t v;
        if (isa == Isa::Avx512) v = wfn_shift_add_dot_avx512(row, rb / 64, rb % 64, xi);
        else if (isa == Isa::Avx2) v = wfn_shift_add_dot_avx2(row, rb / 32, rb % 32, xi);
        else v = wfn_shift_add_dot_scalar(row, rb, xi);
        yd[i * n + r] = v;
      }
    }
  });
  return y;
}

}  // namespace
}  // namespace wfn

TORCH_LIBRARY_IMPL(wfn, CPU, m) { m.impl("shift_add_linear", &wfn::shift_add_linear_cpu); }
