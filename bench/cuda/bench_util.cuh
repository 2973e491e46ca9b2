// Shared pieces of the GPU benchmarks: the no-device skip, device fills, cudaEvent timing with warm-up and
// medians, and the device-to-device copy bandwidth that sets the weight-bytes floor.
#pragma once
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

namespace dsinfer::bench {

#define BENCH_CHECK(x)                                                                           \
  do {                                                                                           \
    const cudaError_t e_ = (x);                                                                  \
    if (e_ != cudaSuccess) {                                                                     \
      std::fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_));  \
      std::exit(1);                                                                              \
    }                                                                                            \
  } while (0)

inline int skip_without_device(const char* name) {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess || n == 0) {
    std::printf("SKIP: no CUDA device (%s): %s\n", name, e == cudaSuccess ? "device count is 0" : cudaGetErrorString(e));
    return 77;
  }
  return 0;
}

inline void print_device() {
  cudaDeviceProp p{};
  int dev = 0, drv = 0, rt = 0;
  BENCH_CHECK(cudaGetDevice(&dev));
  BENCH_CHECK(cudaGetDeviceProperties(&p, dev));
  cudaDriverGetVersion(&drv);
  cudaRuntimeGetVersion(&rt);
  std::printf("device: %s, sm_%d%d, %d SMs, %.1f GiB, driver API %d, runtime %d\n\n", p.name, p.major, p.minor,
              p.multiProcessorCount, double(p.totalGlobalMem) / (1 << 30), drv, rt);
}

// Fills device memory with pseudo-random bytes; `mask`/`fix` shape them into a valid element type
// (e.g. e4m3 without NaN codes, bf16 of moderate magnitude).
__global__ void fill_bytes_kernel(uint8_t* p, size_t n, uint64_t seed) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    uint64_t x = (i + 1) * 0x9E3779B97F4A7C15ull ^ seed;
    x ^= x >> 31; x *= 0xBF58476D1CE4E5B9ull; x ^= x >> 29;
    uint8_t b = uint8_t(x);
    if ((b & 0x7f) == 0x7f) b = 0x3c;  // no e4m3 NaN codes
    p[i] = b;
  }
}
__global__ void fill_bf16_kernel(uint16_t* p, size_t n, uint64_t seed) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    uint64_t x = (i + 1) * 0x9E3779B97F4A7C15ull ^ seed;
    x ^= x >> 31; x *= 0xBF58476D1CE4E5B9ull; x ^= x >> 29;
    p[i] = uint16_t(((x >> 63) << 15) | ((120 + (x >> 8) % 6) << 7) | (x & 0x7f));
  }
}
__global__ void fill_f32_kernel(float* p, size_t n, uint64_t seed, float lo, float hi) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    uint64_t x = (i + 1) * 0x9E3779B97F4A7C15ull ^ seed;
    x ^= x >> 31; x *= 0xBF58476D1CE4E5B9ull; x ^= x >> 29;
    p[i] = lo + (hi - lo) * float(x >> 40) / float(1 << 24);
  }
}

// Median time in microseconds of `fn` (which enqueues work on `s`), after warm-up.
template <class F>
double time_us(cudaStream_t s, F&& fn, int warmup = 3, int reps = 15) {
  cudaEvent_t a, b;
  BENCH_CHECK(cudaEventCreate(&a));
  BENCH_CHECK(cudaEventCreate(&b));
  for (int i = 0; i < warmup; ++i) fn();
  BENCH_CHECK(cudaStreamSynchronize(s));
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) {
    BENCH_CHECK(cudaEventRecord(a, s));
    fn();
    BENCH_CHECK(cudaEventRecord(b, s));
    BENCH_CHECK(cudaEventSynchronize(b));
    float ms = 0;
    BENCH_CHECK(cudaEventElapsedTime(&ms, a, b));
    t.push_back(double(ms) * 1e3);
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

// Device-to-device copy bandwidth in GB/s, counting read + write bytes (2 x size), on a 2 GiB buffer: the rate
// at which a kernel that only streams weights could at best read them.
inline double copy_bandwidth_gbs(cudaStream_t s) {
  const size_t bytes = size_t(2) << 30;
  void *src = nullptr, *dst = nullptr;
  BENCH_CHECK(cudaMalloc(&src, bytes));
  BENCH_CHECK(cudaMalloc(&dst, bytes));
  BENCH_CHECK(cudaMemsetAsync(src, 1, bytes, s));
  const double us = time_us(s, [&] { BENCH_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, s)); }, 2, 9);
  cudaFree(src);
  cudaFree(dst);
  return 2.0 * double(bytes) / (us * 1e-6) / 1e9;
}

inline unsigned fill_blocks(size_t n) { return unsigned(std::min<size_t>((n + 255) / 256, 65535)); }

}  // namespace dsinfer::bench
