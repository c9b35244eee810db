// CPU emulation of the small part of the CUDA runtime and device model the wfn kernels use, so their index
// math, lookups, warp shuffles and reductions can run (slowly) on a machine without a GPU
// (tests/test_cuda_compile.py). Threads are fibers (see namespace emu), __syncthreads is a block barrier
// and the warp shuffles exchange through a per-warp slot array between two warp barriers. Not covered:
// memory-ordering subtleties and anything about speed. Build with -D__CUDA_ARCH__=800 so the tensor-core
// kernel bodies compile; WMMA itself is emulated in mma.h.
#pragma once

#include <ucontext.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static
#define __CUDA_ARCH__ 800  // device code paths for sm_80+ (WMMA is emulated in mma.h)
#define __align__(n) __attribute__((aligned(n)))

enum cudaError_t { cudaSuccess = 0, cudaErrorInvalidValue = 1 };
enum cudaDeviceAttr { cudaDevAttrComputeCapabilityMajor = 75 };
enum cudaMemcpyKind { cudaMemcpyHostToDevice = 1, cudaMemcpyDeviceToHost = 2 };
using cudaStream_t = void*;

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
  dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct uint2 { unsigned x, y; };
struct alignas(16) uint4 { unsigned x, y, z, w; };
struct float2 { float x, y; };
struct alignas(16) float4 { float x, y, z, w; };
inline uint4 make_uint4(unsigned a, unsigned b, unsigned c, unsigned d) { return {a, b, c, d}; }

namespace emu {
// Every CUDA thread of a block is a ucontext fiber on the calling OS thread; a scheduler runs each fiber
// until it reaches a barrier or finishes, then releases a barrier once every live thread of its scope
// (the warp, or the block) waits there. Blocks run one after another, so `__shared__` can be a
// function-local static. A barrier that can never be released (a real CUDA hang) aborts with a message.
struct Idx { unsigned x = 0, y = 0, z = 0; };
inline Idx threadIdx_, blockIdx_;
inline dim3 blockDim_, gridDim_;

enum class Wait { kNone, kBlock, kWarp };
struct Fiber {
  ucontext_t ctx;
  std::vector<char> stack;
  bool done = false;
  Wait wait = Wait::kNone;
};
inline ucontext_t scheduler;
inline std::vector<Fiber> fibers;
inline unsigned current = 0;
inline std::function<void()> body;
inline std::vector<float> warp_slots;

inline unsigned flat_thread() { return current; }

inline void entry() {
  body();
  fibers[current].done = true;  // uc_link returns to the scheduler
}

inline void wait_at(Wait w) {
  fibers[current].wait = w;
  swapcontext(&fibers[current].ctx, &scheduler);
}

inline bool release_barriers() {
  const unsigned n = static_cast<unsigned>(fibers.size());
  bool released = false;
  for (unsigned w0 = 0; w0 < n; w0 += 32) {  // a warp whose live lanes all wait at the warp barrier
    bool all = true, any = false;
    for (unsigned t = w0; t < std::min(n, w0 + 32); ++t) {
      if (fibers[t].done) continue;
      any = true;
      all = all && fibers[t].wait == Wait::kWarp;
    }
    if (any && all) {
      for (unsigned t = w0; t < std::min(n, w0 + 32); ++t) fibers[t].wait = Wait::kNone;
      released = true;
    }
  }
  if (released) return true;
  bool all = true, any = false;
  for (auto& f : fibers) {
    if (f.done) continue;
    any = true;
    all = all && f.wait == Wait::kBlock;
  }
  if (any && all) {
    for (auto& f : fibers) f.wait = Wait::kNone;
    return true;
  }
  return false;
}

inline void run_block(unsigned threads) {
  for (unsigned t = 0; t < threads; ++t) {
    Fiber& f = fibers[t];
    f.done = false;
    f.wait = Wait::kNone;
    getcontext(&f.ctx);
    f.ctx.uc_stack.ss_sp = f.stack.data();
    f.ctx.uc_stack.ss_size = f.stack.size();
    f.ctx.uc_link = &scheduler;
    makecontext(&f.ctx, entry, 0);
  }
  for (;;) {
    bool ran = false, live = false;
    for (unsigned t = 0; t < threads; ++t) {
      if (fibers[t].done) continue;
      live = true;
      if (fibers[t].wait != Wait::kNone) continue;
      current = t;
      threadIdx_ = {t % blockDim_.x, (t / blockDim_.x) % blockDim_.y, t / (blockDim_.x * blockDim_.y)};
      swapcontext(&scheduler, &fibers[t].ctx);
      ran = true;
    }
    if (!live) return;
    if (!ran && !release_barriers()) {
      std::fprintf(stderr, "emulated CUDA: barrier deadlock in block (%u, %u)\n", blockIdx_.x, blockIdx_.y);
      std::abort();
    }
  }
}

struct Launch {
  dim3 grid, block;
  Launch(dim3 g, dim3 b, size_t = 0, cudaStream_t = nullptr) : grid(g), block(b) {}
  template <typename F, typename... Args>
  void run(F* kernel, Args... args) {
    const unsigned threads = block.x * block.y * block.z;
    blockDim_ = block;
    gridDim_ = grid;
    body = [=] { kernel(args...); };
    fibers.resize(threads);
    for (auto& f : fibers) f.stack.resize(256 * 1024);
    warp_slots.assign(((threads + 31) / 32) * 32, 0.f);
    for (unsigned bz = 0; bz < grid.z; ++bz)
      for (unsigned by = 0; by < grid.y; ++by)
        for (unsigned bx = 0; bx < grid.x; ++bx) {
          blockIdx_ = {bx, by, bz};
          run_block(threads);
        }
  }
};
}  // namespace emu

#define threadIdx (emu::threadIdx_)
#define blockIdx (emu::blockIdx_)
#define blockDim (emu::blockDim_)
#define gridDim (emu::gridDim_)

inline void __syncthreads() { emu::wait_at(emu::Wait::kBlock); }

inline float __shfl_sync(unsigned, float v, int src) {
  const unsigned t = emu::flat_thread(), warp = t / 32;
  emu::warp_slots[t] = v;
  emu::wait_at(emu::Wait::kWarp);
  const float r = emu::warp_slots[warp * 32 + (src & 31)];
  emu::wait_at(emu::Wait::kWarp);
  return r;
}
inline float __shfl_xor_sync(unsigned mask, float v, int lane_mask) {
  return __shfl_sync(mask, v, static_cast<int>(emu::flat_thread() % 32) ^ lane_mask);
}
template <typename T>
inline T __ldg(const T* p) { return *p; }

// Host-side runtime: "device" memory is host memory.
inline cudaError_t cudaMalloc(void** p, size_t n) { *p = std::aligned_alloc(256, (n + 255) / 256 * 256); return cudaSuccess; }
template <typename T>
inline cudaError_t cudaMalloc(T** p, size_t n) { return cudaMalloc(reinterpret_cast<void**>(p), n); }
inline cudaError_t cudaFree(void* p) { std::free(p); return cudaSuccess; }
inline cudaError_t cudaMemcpy(void* d, const void* s, size_t n, cudaMemcpyKind) { std::memcpy(d, s, n); return cudaSuccess; }
inline cudaError_t cudaDeviceSynchronize() { return cudaSuccess; }
inline cudaError_t cudaGetLastError() { return cudaSuccess; }
inline cudaError_t cudaGetDevice(int* d) { *d = 0; return cudaSuccess; }
// Compute capability from $WFN_EMU_SM_MAJOR (default 8): 8 sends 16-bit GEMMs to the (emulated) WMMA
// kernel, 7 to the SIMT one.
inline cudaError_t cudaDeviceGetAttribute(int* v, cudaDeviceAttr, int) {
  const char* env = std::getenv("WFN_EMU_SM_MAJOR");
  *v = env ? std::atoi(env) : 8;
  return cudaSuccess;
}
inline const char* cudaGetErrorString(cudaError_t e) { return e == cudaSuccess ? "no error" : "invalid value"; }
