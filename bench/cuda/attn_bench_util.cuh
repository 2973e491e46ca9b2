// Helpers shared by the attention benchmarks (bench_mla.cu, bench_indexer.cu): CUDA_OK, the median of timed runs
// with cudaEvents, and a device fill with small pseudo-random floats (values matter only for not being
// denormal/NaN).
#pragma once
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <vector>

#include "bench_util.cuh"  // the no-device skip and the device line

#define CUDA_OK(expr)                                                                          \
  do {                                                                                         \
    cudaError_t e_ = (expr);                                                                   \
    if (e_ != cudaSuccess) {                                                                   \
      std::printf("FATAL %s:%d: %s: %s\n", __FILE__, __LINE__, #expr, cudaGetErrorString(e_)); \
      std::exit(1);                                                                            \
    }                                                                                          \
  } while (0)

namespace dsinfer::attn_bench {

inline double median_ms(const std::function<void()>& run, int warmup = 2, int iters = 10) {
  cudaEvent_t a, b;
  CUDA_OK(cudaEventCreate(&a));
  CUDA_OK(cudaEventCreate(&b));
  for (int i = 0; i < warmup; ++i) run();
  CUDA_OK(cudaDeviceSynchronize());
  // Long runs (the fp32 kernels at 64K contexts) get 3 timed runs instead of 10: the script's time budget is shared.
  CUDA_OK(cudaEventRecord(a));
  run();
  CUDA_OK(cudaEventRecord(b));
  CUDA_OK(cudaEventSynchronize(b));
  float first;
  CUDA_OK(cudaEventElapsedTime(&first, a, b));
  if (first > 50.0f) iters = 3;
  std::vector<float> ms;
  for (int i = 0; i < iters; ++i) {
    CUDA_OK(cudaEventRecord(a));
    run();
    CUDA_OK(cudaEventRecord(b));
    CUDA_OK(cudaEventSynchronize(b));
    float m;
    CUDA_OK(cudaEventElapsedTime(&m, a, b));
    ms.push_back(m);
  }
  std::sort(ms.begin(), ms.end());
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  return ms[ms.size() / 2];
}

__global__ void fill_kernel(float* p, size_t n, uint32_t seed, float scale) {
  for (size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    uint32_t x = uint32_t(i) * 2654435761u ^ seed;
    x ^= x >> 13, x *= 0x5bd1e995u, x ^= x >> 15;
    p[i] = (float(x & 0xffff) / 65536.0f - 0.5f) * scale;
  }
}
inline void fill(float* p, size_t n, uint32_t seed, float scale = 1.0f) {
  fill_kernel<<<1024, 256>>>(p, n, seed, scale);
  CUDA_OK(cudaGetLastError());
}

}  // namespace dsinfer::attn_bench
