// Strided batched SGEMM for the MLA absorb steps (see mla_absorb.cuh). Classic shared-memory tiling: a 64x64
// output tile per block, K in steps of 16, each of the 256 threads owning a 4x4 register block. The tile loads
// walk whichever operand dimension has unit stride so that global reads stay coalesced for both absorb shapes.
#include "mla_absorb.cuh"

namespace dsinfer::gpu::attn {

namespace {

constexpr int kBM = 64, kBN = 64, kBK = 16;

__global__ void __launch_bounds__(256) strided_batched_sgemm_kernel(StridedBatchedGemmParams p) {
  __shared__ float As[kBK][kBM + 4];  // [k][m]
  __shared__ float Bs[kBK][kBN + 4];  // [k][n]
  const int64_t b = blockIdx.z;
  const int64_t m0 = int64_t(blockIdx.y) * kBM, n0 = int64_t(blockIdx.x) * kBN;
  const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
  const float* A = p.A + b * p.a_b;
  const float* B = p.B + b * p.b_b;
  const bool a_k_major = p.a_k == 1;  // consecutive threads along k
  const bool b_n_major = p.b_n == 1 || p.b_k != 1;
  float acc[4][4] = {};
  for (int64_t k0 = 0; k0 < p.K; k0 += kBK) {
    for (int e = tid; e < kBM * kBK; e += 256) {
      int mi, ki;
      if (a_k_major) { mi = e / kBK; ki = e % kBK; } else { ki = e / kBM; mi = e % kBM; }
      const int64_t m = m0 + mi, k = k0 + ki;
      As[ki][mi] = (m < p.M && k < p.K) ? A[m * p.a_m + k * p.a_k] : 0.0f;
    }
    for (int e = tid; e < kBN * kBK; e += 256) {
      int ni, ki;
      if (b_n_major) { ki = e / kBN; ni = e % kBN; } else { ni = e / kBK; ki = e % kBK; }
      const int64_t n = n0 + ni, k = k0 + ki;
      Bs[ki][ni] = (n < p.N && k < p.K) ? B[k * p.b_k + n * p.b_n] : 0.0f;
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kBK; ++kk) {
      float a[4], bv[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) a[i] = As[kk][ty * 4 + i];
#pragma unroll
      for (int j = 0; j < 4; ++j) bv[j] = Bs[kk][tx * 4 + j];
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(a[i], bv[j], acc[i][j]);
    }
    __syncthreads();
  }
  float* C = p.C + b * p.c_b;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int64_t m = m0 + ty * 4 + i;
    if (m >= p.M) continue;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int64_t n = n0 + tx * 4 + j;
      if (n < p.N) C[m * p.c_m + n * p.c_n] = acc[i][j];
    }
  }
}

}  // namespace

cudaError_t launch_strided_batched_sgemm(const StridedBatchedGemmParams& p, cudaStream_t stream) {
  if (p.batch <= 0 || p.M <= 0 || p.N <= 0) return cudaSuccess;
  if (p.batch > 65535 || (p.M + kBM - 1) / kBM > 65535) return cudaErrorInvalidValue;
  const dim3 grid(unsigned((p.N + kBN - 1) / kBN), unsigned((p.M + kBM - 1) / kBM), unsigned(p.batch));
  strided_batched_sgemm_kernel<<<grid, 256, 0, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace dsinfer::gpu::attn
