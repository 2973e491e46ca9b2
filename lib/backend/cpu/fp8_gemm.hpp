// The CPU FP8 block-scaled GEMM (spec §6): y[t, n] = Σ_g (Σ_{k in block g} xq[t, k]·w[n, k]) · (xs[t, g]·ws[n/128, g])
// with xq the e4m3-quantized activations (as floats), xs their 1x128 scales, w the e4m3 weight and ws its
// 128x128 block scales.
//
// The summation order is part of the contract, so that a token's logits do not depend on how many tokens share a
// step, on the thread count or on the CPU: per output, each block's products are added one after another in k
// order into an fp32 sum starting at +0, and the block sums, each multiplied by its scale product, are added to an
// fp32 total in block order. Every product of two e4m3 values is exact in fp32, so a fused multiply-add and a
// multiply-then-add give the same sums. `fp8_gemm_reference` states that order in plain scalar code; the fast
// kernels follow it lane by lane, which is why they vectorize over outputs (n), not over k, and why the weight is
// repacked at load time into panels of 16 rows that are read 16 bytes per k.
#pragma once
#include <cstdint>
#include <memory>
#include <string>

#include "backend/weight.hpp"

namespace dsinfer {

class ThreadPool;

constexpr int64_t kFp8PanelRows = 16;

// An F8_E4M3 weight [N, K] (block 128) repacked as ceil(N/16) panels; panel p holds rows 16p..16p+15 as K runs of
// 16 bytes (row-interleaved per k), rows past N zero.
struct PackedFp8Weight {
  int64_t n = 0, k = 0;
  int64_t panels = 0;
  std::unique_ptr<uint8_t, void (*)(void*)> bytes{nullptr, [](void*) {}};
  const float* scale_inv = nullptr;  // the checkpoint's [ceil(N/128), ceil(K/128)] block scales (not copied)

  const uint8_t* panel(int64_t p) const { return bytes.get() + p * k * kFp8PanelRows; }
};

// Repacks `w`. Throws Error(Format) naming the weight and the element if it holds an e4m3 NaN (0x7f/0xff): the
// kernels would read it as a number.
PackedFp8Weight pack_fp8_weight(const Weight& w);

// y[T, N] = the FP8 GEMM above over the packed weight. xq [T, K] (row stride ldx) holds e4m3 values as floats,
// xs [T, ceil(K/128)] (stride ldxs) their scales; y (stride ldy) is overwritten. Uses the pool's threads, split
// by panels. `kernel` forces a lesser kernel than the machine's best (tests compare them all).
enum class Fp8Kernel { Best, Avx2, Scalar };
void fp8_gemm(const float* xq, int64_t ldx, const float* xs, int64_t ldxs, int64_t T, const PackedFp8Weight& w,
              float* y, int64_t ldy, ThreadPool& pool, Fp8Kernel kernel = Fp8Kernel::Best);

// Panels [p0, p1) only (output columns [16·p0, min(N, 16·p1))), on the calling thread: for callers that spread
// several GEMMs over the threads themselves (the fused MoE).
void fp8_gemm_panels(const float* xq, int64_t ldx, const float* xs, int64_t ldxs, int64_t T,
                     const PackedFp8Weight& w, int64_t p0, int64_t p1, float* y, int64_t ldy,
                     Fp8Kernel kernel = Fp8Kernel::Best);

// The same sums in plain scalar code over the unpacked checkpoint weight: the definition the kernels are tested
// against (bitwise).
void fp8_gemm_reference(const float* xq, int64_t ldx, const float* xs, int64_t ldxs, int64_t T, const Weight& w,
                        float* y, int64_t ldy);

// Which kernel fp8_gemm runs on this machine ("avx512", "avx2" or "scalar"); ModelLoadParams::cpu_kernels (or
// DSINFER_CPU_KERNELS) caps the choice.
const char* fp8_gemm_isa();

}  // namespace dsinfer
