// The CPU GEMM for unquantized weights (BF16, F16, F32): y[t, n] = Σ_k x[t, k]·w[n, k] in fp32.
//
// As with the FP8 GEMM (fp8_gemm.hpp), the summation order is fixed so results do not depend on the number of
// tokens in a step, the thread count or the CPU: per output, s = fma(x[k], w[k], s) for k = 0, 1, ..., K-1 from
// s = +0 (one rounding per term). The fast kernels follow it lane by lane over 16-row panels packed at load time;
// `dense_gemm_reference` states it in scalar code (std::fma), and the tests compare them bit for bit.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "backend/weight.hpp"

namespace dsinfer {

class ThreadPool;

// A BF16/F16/F32 weight [N, K] repacked as ceil(N/16) panels of K runs of 16 elements (its own dtype; rows past N
// zero).
struct PackedDenseWeight {
  DType dtype = DType::F32;
  int64_t n = 0, k = 0, panels = 0;
  std::unique_ptr<uint8_t, void (*)(void*)> bytes{nullptr, [](void*) {}};

  size_t elem() const { return dtype == DType::F32 ? 4 : 2; }
  const uint8_t* panel(int64_t p) const { return bytes.get() + size_t(p * k * 16) * elem(); }
};

bool dense_gemm_supports(const Weight& w);  // 2-D BF16, F16 or F32
PackedDenseWeight pack_dense_weight(const Weight& w);
// An fp32 packed weight [n, k] whose rows come from row(i, out) (e.g. an FP8 weight dequantized row by row).
PackedDenseWeight pack_dense_rows_f32(int64_t n, int64_t k, const std::function<void(int64_t, float*)>& row,
                                      const std::string& name);

enum class DenseKernel { Best, Avx2, Scalar };  // Avx2/Scalar cap the choice (tests compare them all)
// y[T, N] (stride ldy, overwritten) = x[T, K] (stride ldx) · Wᵀ over the packed weight, split by panels over the
// pool's threads.
void dense_gemm(const float* x, int64_t ldx, int64_t T, const PackedDenseWeight& w, float* y, int64_t ldy,
                ThreadPool& pool, DenseKernel kernel = DenseKernel::Best);
// Panels [p0, p1) only (output columns [16·p0, min(N, 16·p1))), on the calling thread: for callers that spread
// several GEMMs over the threads themselves (the fused MoE).
void dense_gemm_panels(const float* x, int64_t ldx, int64_t T, const PackedDenseWeight& w, int64_t p0, int64_t p1,
                       float* y, int64_t ldy, DenseKernel kernel = DenseKernel::Best);
void dense_gemm_reference(const float* x, int64_t ldx, int64_t T, const Weight& w, float* y, int64_t ldy);

}  // namespace dsinfer
