// The small memory-bound ops of the backend: weight row decoding (embed, dequantize), RMSNorm (with the fused
// residual add), LayerNorm, SwiGLU, add, RoPE, the Walsh-Hadamard transform and the fp32 -> bf16 activation cast
// for cuBLASLt. Each follows the CPU reference's arithmetic (same operation order, no FMA contraction where the
// CPU has none) so results agree to the last bit or within an ulp of the transcendental functions.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/skinny_gemm.cuh"  // WeightKind

namespace dsinfer::gpu {

// A weight in device memory, in its stored dtype. FP8: value(r, c) = e4m3(data[r, c]) · scale[(r/block)·scale_ld +
// c/block].
struct DeviceTensorRef {
  const void* data = nullptr;
  WeightKind kind = WeightKind::F32;
  int64_t rows = 0, cols = 0;
  const float* scale = nullptr;
  int64_t scale_ld = 0;
  int64_t block = 128;
};

// out[i, :] = row ids[i] of w as fp32 (ids null: row i), for i < n.
void decode_rows(const DeviceTensorRef& w, const int32_t* ids, int64_t n, float* out, int64_t ldo, cudaStream_t s);

// With add: res += add; then out = RMSNorm(res) · gamma. Without: out = RMSNorm(res) · gamma (res unchanged).
void rms_norm_rows(float* res, int64_t ldr, const float* add, int64_t lda, const DeviceTensorRef& gamma, float eps,
                   float* out, int64_t ldo, int64_t rows, int64_t cols, cudaStream_t s);
void layer_norm_rows(const float* x, int64_t ldx, const DeviceTensorRef& gamma, const DeviceTensorRef& beta,
                     float eps, float* out, int64_t ldo, int64_t rows, int64_t cols, cudaStream_t s);
// out = silu(gate) ⊙ up
void silu_mul_rows(const float* gate, int64_t ldg, const float* up, int64_t ldu, float* out, int64_t ldo,
                   int64_t rows, int64_t cols, cudaStream_t s);
// acc += x
void add_rows(float* acc, int64_t lda, const float* x, int64_t ldx, int64_t rows, int64_t cols, cudaStream_t s);

struct RopeParams {
  float* x = nullptr;
  int64_t ldx = 0, rows = 0, n_heads = 1, head_dim = 0, rope_offset = 0, rope_dim = 0;
  const float* inv_freq = nullptr;  // device [rope_dim/2]
  const int32_t* positions = nullptr;  // device [rows]
  bool interleaved = true;
};
void rope_rows(const RopeParams& p, cudaStream_t s);

// In place, every contiguous run of n (power of two, ≤ 8192) elements of each row: v = n^-1/2 · H_n · v.
void hadamard_rows(float* x, int64_t ldx, int64_t rows, int64_t cols, int64_t n, cudaStream_t s);

// dst (bf16 bits, round to nearest even) = src
void f32_to_bf16_rows(const float* src, int64_t lds, uint16_t* dst, int64_t ldd, int64_t rows, int64_t cols,
                      cudaStream_t s);

}  // namespace dsinfer::gpu
