// Standalone check of the CUDA codebook kernels through their plain-pointer API (csrc/cuda/codebook_cuda.h),
// without torch. Built by tests/test_cuda_compile.py (compile + link everywhere, run only where a GPU is).
//
// Cases are exactly summable (power-of-two codebook, small-integer activations and bias), so every path
// (GEMV, WMMA GEMM, SIMT GEMM, decode) must match a host reference bit for bit. Prints one line per case
// and exits 0 only if all pass.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include "codebook_cuda.h"

using wfn::cuda::DType;

#define CHECK_CUDA(expr)                                                                  \
  do {                                                                                    \
    cudaError_t err_ = (expr);                                                            \
    if (err_ != cudaSuccess) {                                                            \
      std::fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #expr, cudaGetErrorString(err_)); \
      std::exit(2);                                                                       \
    }                                                                                     \
  } while (0)

namespace {

std::vector<uint8_t> pack(const std::vector<int>& codes, int64_t n, int64_t k, int bits) {
  const int64_t rb = (k * bits + 7) / 8;
  std::vector<uint8_t> out(n * rb, 0);
  for (int64_t r = 0; r < n; ++r)
    for (int64_t i = 0; i < k; ++i) out[r * rb + i * bits / 8] |= uint8_t(codes[r * k + i] << ((i * bits) % 8));
  return out;
}

// Host value -> device element bits, and back (16-bit types via the CUDA host conversions).
uint16_t to_bits(float v, DType dt) {
  if (dt == DType::kFloat16) {
    __half h = __float2half_rn(v);
    uint16_t b;
    std::memcpy(&b, &h, 2);
    return b;
  }
  __nv_bfloat16 h = __float2bfloat16_rn(v);
  uint16_t b;
  std::memcpy(&b, &h, 2);
  return b;
}

float from_bits(uint16_t b, DType dt) {
  if (dt == DType::kFloat16) {
    __half h;
    std::memcpy(&h, &b, 2);
    return __half2float(h);
  }
  __nv_bfloat16 h;
  std::memcpy(&h, &b, 2);
  return __bfloat162float(h);
}

// Odd M also pads x's rows (stride K + 4), exercising strided activations.
bool run_case(int64_t m, int64_t n, int64_t k, int bits, DType dt, std::mt19937& rng) {
  const int64_t ldx = k + (m % 2 ? 4 : 0);
  const int entries = bits == 2 ? 4 : bits == 4 ? 15 : 17;
  std::vector<float> cb(entries);
  for (int i = 0; i < entries; ++i) cb[i] = (i % 2 ? -1.f : 1.f) * std::ldexp(1.f, i / 2 - 4);
  std::sort(cb.begin(), cb.end());
  std::uniform_int_distribution<int> code_d(0, entries - 1), x_d(-3, 3);
  std::vector<int> codes(n * k);
  for (auto& c : codes) c = code_d(rng);
  std::vector<float> x(m * k), bias(n);
  for (auto& v : x) v = float(x_d(rng));
  for (auto& v : bias) v = float(x_d(rng));
  std::vector<uint8_t> packed = pack(codes, n, k, bits);
  std::vector<float> ref(m * n);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      float s = 0.f;
      for (int64_t t = 0; t < k; ++t) s += x[i * k + t] * cb[codes[j * k + t]];
      ref[i * n + j] = s + bias[j];
    }
  const size_t esize = dt == DType::kFloat32 ? 4 : 2;
  std::vector<uint8_t> xb(m * ldx * esize, 0);
  for (int64_t r = 0; r < m; ++r)
    for (int64_t c = 0; c < k; ++c) {
      const int64_t src = r * k + c, dst = r * ldx + c;
      if (dt == DType::kFloat32) std::memcpy(&xb[dst * 4], &x[src], 4);
      else { uint16_t b = to_bits(x[src], dt); std::memcpy(&xb[dst * 2], &b, 2); }
    }
  void *dx, *dy;
  uint8_t* dp;
  float *dcb, *dbias, *dw;
  CHECK_CUDA(cudaMalloc(&dx, xb.size() + 16));
  CHECK_CUDA(cudaMalloc(&dy, m * n * esize + 16));
  CHECK_CUDA(cudaMalloc(&dp, packed.size() + 16));
  CHECK_CUDA(cudaMalloc(&dcb, cb.size() * 4));
  CHECK_CUDA(cudaMalloc(&dbias, n * 4));
  CHECK_CUDA(cudaMalloc(&dw, n * k * 4 + 16));
  CHECK_CUDA(cudaMemcpy(dx, xb.data(), xb.size(), cudaMemcpyHostToDevice));
  CHECK_CUDA(cudaMemcpy(dp, packed.data(), packed.size(), cudaMemcpyHostToDevice));
  CHECK_CUDA(cudaMemcpy(dcb, cb.data(), cb.size() * 4, cudaMemcpyHostToDevice));
  CHECK_CUDA(cudaMemcpy(dbias, bias.data(), n * 4, cudaMemcpyHostToDevice));
  int dev = 0, major = 0;
  CHECK_CUDA(cudaGetDevice(&dev));
  CHECK_CUDA(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
  wfn::cuda::LinearArgs a;
  a.x = dx; a.stride_xm = ldx; a.packed = dp; a.codebook = dcb; a.num_entries = entries; a.bias = dbias;
  a.y = dy; a.M = m; a.N = n; a.K = k; a.bits = bits; a.dtype = dt; a.sm_major = major;
  CHECK_CUDA(wfn::cuda::codebook_linear_launch(a, nullptr));
  CHECK_CUDA(wfn::cuda::codebook_decode_launch(dp, n, k, bits, dcb, entries, dw, nullptr));
  CHECK_CUDA(cudaDeviceSynchronize());
  std::vector<uint8_t> yb(m * n * esize);
  std::vector<float> w(n * k);
  CHECK_CUDA(cudaMemcpy(yb.data(), dy, yb.size(), cudaMemcpyDeviceToHost));
  CHECK_CUDA(cudaMemcpy(w.data(), dw, w.size() * 4, cudaMemcpyDeviceToHost));
  int bad = 0;
  for (int64_t i = 0; i < m * n; ++i) {
    float got, want = ref[i];
    if (dt == DType::kFloat32) std::memcpy(&got, &yb[i * 4], 4);
    else {
      uint16_t b;
      std::memcpy(&b, &yb[i * 2], 2);
      got = from_bits(b, dt);
      want = from_bits(to_bits(want, dt), dt);
    }
    bad += got != want;
  }
  for (int64_t i = 0; i < n * k; ++i) bad += w[i] != cb[codes[i]];
  std::printf("%s bits=%d dtype=%d M=%lld N=%lld K=%lld ldx=%lld mismatches=%d\n", bad ? "FAIL" : "PASS", bits,
              int(dt), (long long)m, (long long)n, (long long)k, (long long)ldx, bad);
  cudaFree(dx); cudaFree(dy); cudaFree(dp); cudaFree(dcb); cudaFree(dbias); cudaFree(dw);
  return bad == 0;
}

}  // namespace

// K = 1024: whole 16-byte chunks only (vector path); 1023: chunks then a ragged tail at 2 and 4 bits;
// 1, 67, 130: odd rows, byte-wise path. M covers every GEMV register shape (1, 2, 4, 8 rows) and the GEMM.
// `--quick` (the CPU emulation in tests/test_cuda_compile.py) keeps one K per path and fewer M.
int main(int argc, char** argv) {
  const bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
  std::mt19937 rng(1234);
  int failures = 0;
  const std::vector<int64_t> ms = quick ? std::vector<int64_t>{1, 2, 4, 7, 19} : std::vector<int64_t>{1, 2, 3, 8, 16, 127};
  const std::vector<int64_t> ks = quick ? std::vector<int64_t>{67, 1023, 1024}
                                        : std::vector<int64_t>{1, 67, 130, 1023, 1024};
  for (int bits : {2, 4, 8})
    for (DType dt : {DType::kFloat32, DType::kBFloat16, DType::kFloat16})
      for (int64_t m : ms)
        for (int64_t k : ks) failures += !run_case(m, 37, k, bits, dt, rng);
  std::printf("%s: %d failing cases\n", failures ? "FAILED" : "ALL PASSED", failures);
  return failures ? 1 : 0;
}
