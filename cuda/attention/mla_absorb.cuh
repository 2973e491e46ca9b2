// The two per-head projections around absorbed MLA (spec §3.4), as one strided batched fp32 GEMM:
//   q_abs[t,h,:] = q_nope[t,h,:] · W_UK[h]        ([T,dn] x [dn,C] per head)
//   out[t,h,:]   = o_lat[t,h,:] · W_UV[h]ᵀ        ([T,C] x [C,dv] per head)
// with W_UK[h] = wkv_b rows h·(dn+dv) + [0,dn) and W_UV[h] = rows h·(dn+dv) + dn + [0,dv). Both are views of the
// same [H·(dn+dv), C] matrix, so a GEMM that takes arbitrary element strides serves both without re-layout.
// CUDA cores, fp32 accumulate: the weights are fp32 in the current interface and these GEMMs are small next to
// the attention itself (decode: a GEMV over 2·H·128·512 weights per layer).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace dsinfer::gpu::attn {

// C[b][m][n] = Σ_k A[b][m][k] · B[b][k][n] for b < batch, all operands f32 with element strides.
struct StridedBatchedGemmParams {
  int64_t batch = 0, M = 0, N = 0, K = 0;
  const float* A = nullptr;   // element (b,m,k) at A[b*a_b + m*a_m + k*a_k]
  int64_t a_b = 0, a_m = 0, a_k = 0;
  const float* B = nullptr;   // element (b,k,n) at B[b*b_b + k*b_k + n*b_n]
  int64_t b_b = 0, b_k = 0, b_n = 0;
  float* C = nullptr;         // element (b,m,n) at C[b*c_b + m*c_m + n*c_n] (overwritten)
  int64_t c_b = 0, c_m = 0, c_n = 0;
};
cudaError_t launch_strided_batched_sgemm(const StridedBatchedGemmParams& p, cudaStream_t stream);

}  // namespace dsinfer::gpu::attn

namespace dsinfer::gpu::attn {

// The same two absorb products for few queries (decode), reading wkv_b as stored: e4m3 [H*(dn+dv), C] with fp32
// block scales, scale(r, c) = scale[(r/128)*scale_ld + c/128]. The fp32 values used are w8·scale, exactly the
// dequantized matrix's, at a quarter of its bytes: at decode the absorb steps are pure weight streaming.
struct Fp8AbsorbWeight {
  const uint8_t* w8 = nullptr;   // [H*(dn+dv), C] e4m3 device
  const float* scale = nullptr;  // [ceil(H*(dn+dv)/128), scale_ld] f32 device
  int64_t scale_ld = 0;
};
// q_abs[t,h,:] (row stride H*C, head stride C) = q_nope[t,h,:] · W_UK[h]; q_nope (t,h,d) at q[t*ld_q + h*(dn+dr) + d].
// C multiple of 4 and <= 512.
cudaError_t launch_absorb_q_fp8(const Fp8AbsorbWeight& w, const float* q, int64_t ld_q, int64_t T, int64_t H,
                                int64_t dn, int64_t dr, int64_t dv, int64_t C, float* q_abs, cudaStream_t stream);
// out[t, h*dv + e] (row stride ld_out) = o_lat[t,h,:] · W_UV[h][e,:]; o_lat [T, H, C] contiguous; C multiple of 16.
cudaError_t launch_absorb_out_fp8(const Fp8AbsorbWeight& w, const float* o_lat, int64_t T, int64_t H, int64_t dn,
                                  int64_t dv, int64_t C, float* out, int64_t ld_out, cudaStream_t stream);

}  // namespace dsinfer::gpu::attn
