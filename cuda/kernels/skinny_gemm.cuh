// Skinny GEMM for few activation rows (decode, small expert batches): out[m, n] = Σ_k x(m, k) · W[n, k], reading
// the weight in its stored dtype (e4m3 with 128x128 block scales, bf16, f16, f32) straight from global memory.
// At M ≤ 64 the weight bytes dominate the traffic, so the kernel is built to stream them at copy bandwidth:
// 16-byte loads, one pass over the weight per 16 activation rows, split-K when N alone cannot fill the GPU.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace dsinfer::gpu {

enum class WeightKind : int { F32 = 0, BF16 = 1, F16 = 2, FP8 = 3 };

struct SkinnyGemmParams {
  // Weight W [N, K] row-major (y = x·Wᵀ).
  const void* w = nullptr;
  WeightKind w_kind = WeightKind::F32;
  int64_t N = 0, K = 0;
  // FP8 only: block scales, scale(n, k) = w_scale[(n / 128) * w_scale_ld + k / 128].
  const float* w_scale = nullptr;
  int64_t w_scale_ld = 0;
  // Activations, M rows: fp32 (x_f32), or e4m3 bytes (x_q8, FP8 weights only) with per-128 group scales
  // scale(m, g) = x_scale[m * xs_m + g * xs_g].
  int64_t M = 0;
  const float* x_f32 = nullptr;
  const uint8_t* x_q8 = nullptr;
  int64_t ldx = 0;
  const float* x_scale = nullptr;
  int64_t xs_m = 0, xs_g = 0;
  // Output [M, N], row stride ldo.
  float* out = nullptr;
  int64_t ldo = 0;
};

// Bytes of device workspace skinny_gemm needs for split-K partial sums (0 when it will not split).
size_t skinny_gemm_workspace(const SkinnyGemmParams& p, int num_sms);
// Launches on `stream`; `workspace` has at least skinny_gemm_workspace() bytes.
void skinny_gemm(const SkinnyGemmParams& p, void* workspace, int num_sms, cudaStream_t stream);

// Up to kSkinnyMaxBatch problems with the same N, K, weight kind and activation kind (e4m3 or fp32), each with its
// own weight, activations (any M) and output, in one launch (plus one split-K reduction): the MoE experts of a
// decode step, whose separate launches would cost more than their weight reads.
constexpr int kSkinnyMaxBatch = 16;
// use_mma: FP8 weights with e4m3 activations, M ≤ 64, K % 128 == 0, N % 16 == 0 (skinny_fp8_mma_eligible) run on
// the tensor cores (mma.sync m16n8k32 e4m3, fp32 accumulate, promoted with both scales per 128-wide K group)
// instead of the CUDA cores; otherwise the CUDA-core kernel. Pass the same flag to the workspace query.
constexpr int64_t kSkinnyMmaMaxM = 64;
bool skinny_fp8_mma_eligible(const SkinnyGemmParams* p, int n);
size_t skinny_gemm_batched_workspace(const SkinnyGemmParams* p, int n, int num_sms, bool use_mma = false);
void skinny_gemm_batched(const SkinnyGemmParams* p, int n, void* workspace, int num_sms, cudaStream_t stream,
                         bool use_mma = false);

}  // namespace dsinfer::gpu
