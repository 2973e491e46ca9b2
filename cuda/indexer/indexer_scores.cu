// Indexer scores on CUDA cores (contract in indexer_scores.cuh).
//
// Block = one query token x a run of key tiles (kTilesPerBlock tiles of 64 keys); 256 threads. The query's H x D
// values and its folded head weights stay in shared memory for the whole run. Per tile the 64 keys are loaded
// (decoded from e4m3 when the cache is FP8) and every thread computes a 4-head x 4-key block of q·k over the full
// head dim: heads hq + 16i, keys kq + 16j, where hq is the low 4 lane bits. The ReLU-weighted sum over heads is then
// a 16-lane shuffle reduction, so no shared-memory reduction pass is needed. Rows of both operand tiles are
// padded to D + 4 floats: the 8 head rows a quarter-warp reads land in 8 different bank quads.
#include <cmath>

#include "indexer_scores.cuh"
#include "indexer_scores_fp8.cuh"

namespace dsinfer::gpu::attn {

namespace {

constexpr int kMaxHeads = 64;
constexpr int kMaxDim = 128;
constexpr int kKeys = 64;
constexpr int kTilesPerBlock = 4;
constexpr int kThreads = 256;

template <IndexKeyFormat kFormat>
__global__ void __launch_bounds__(kThreads) indexer_scores_kernel(IndexerScoresParams p) {
  extern __shared__ float4 smem4[];
  float* smem = reinterpret_cast<float*>(smem4);
  const int D = int(p.D), ld = D + 4;
  float* sQ = smem;                          // [64][ld]
  float* sK = sQ + kMaxHeads * ld;           // [64][ld]
  float* sW = sK + kKeys * ld;               // [64]
  int64_t* sRow = reinterpret_cast<int64_t*>(sW + kMaxHeads);  // [64]
  IndexKeyCacheView keys = p.keys;
  keys.format = kFormat;

  const int64_t t = blockIdx.y;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int64_t seq = p.query_seq ? p.query_seq[t] : 0;
  const int64_t n_keys = p.seq_len ? int64_t(p.seq_len[seq]) : p.n_keys;
  const int64_t visible = min(int64_t(p.positions[t]) + 1, n_keys);
  const int64_t first = int64_t(blockIdx.x) * kTilesPerBlock * kKeys;
  const int64_t last = min(first + kTilesPerBlock * kKeys, p.max_keys);
  float* out = p.scores + t * p.scores_t;

  // Masked columns first; a run that holds no visible key is done after that.
  for (int64_t s = max(first, visible) + tid; s < last; s += kThreads) out[s] = -INFINITY;
  if (first >= visible) return;

  const int d4 = D / 4;
  for (int e = tid; e < kMaxHeads * d4; e += kThreads) {
    const int h = e / d4, i = (e % d4) * 4;
    const float4 v = h < p.H ? *reinterpret_cast<const float4*>(p.q + t * p.q_t + int64_t(h) * D + i)
                             : make_float4(0.f, 0.f, 0.f, 0.f);
    *reinterpret_cast<float4*>(sQ + h * ld + i) = v;
  }
  if (tid < kMaxHeads) {
    // The CPU folds the weight as w · head_scale · q_scale, in that order.
    float wt = 0.0f;
    if (tid < p.H) wt = p.w[t * p.w_t + tid] * p.head_scale * (p.q_scale ? p.q_scale[t * p.qs_t + tid] : 1.0f);
    sW[tid] = wt;
  }

  const int hq = lane & 15, kq = warp * 2 + (lane >> 4);
  const int64_t stop = min(last, visible);
  for (int64_t s0 = first; s0 < stop; s0 += kKeys) {
    __syncthreads();  // previous tile consumed; first time: sQ/sW written
    if (tid < kKeys) {
      const int64_t s = s0 + tid;
      sRow[tid] = s < stop ? p.blocks.row(seq, s) : -1;
    }
    __syncthreads();
    for (int e = tid; e < kKeys * d4; e += kThreads) {
      const int j = e / d4, i = (e % d4) * 4;
      const int64_t row = sRow[j];
      const float4 v = row >= 0 ? load_index_key4(keys, row, i) : make_float4(0.f, 0.f, 0.f, 0.f);
      *reinterpret_cast<float4*>(sK + j * ld + i) = v;
    }
    __syncthreads();

    float acc[4][4] = {};
    for (int i = 0; i < D; i += 4) {
      float4 q[4], k[4];
#pragma unroll
      for (int a = 0; a < 4; ++a) q[a] = *reinterpret_cast<const float4*>(sQ + (hq + 16 * a) * ld + i);
#pragma unroll
      for (int b = 0; b < 4; ++b) k[b] = *reinterpret_cast<const float4*>(sK + (kq + 16 * b) * ld + i);
#pragma unroll
      for (int a = 0; a < 4; ++a)
#pragma unroll
        for (int b = 0; b < 4; ++b) {
          acc[a][b] = fmaf(q[a].x, k[b].x, acc[a][b]);
          acc[a][b] = fmaf(q[a].y, k[b].y, acc[a][b]);
          acc[a][b] = fmaf(q[a].z, k[b].z, acc[a][b]);
          acc[a][b] = fmaf(q[a].w, k[b].w, acc[a][b]);
        }
    }
#pragma unroll
    for (int b = 0; b < 4; ++b) {
      float v = 0.0f;
#pragma unroll
      for (int a = 0; a < 4; ++a) v = fmaf(sW[hq + 16 * a], fmaxf(acc[a][b], 0.0f), v);
      v += __shfl_xor_sync(0xffffffffu, v, 1);
      v += __shfl_xor_sync(0xffffffffu, v, 2);
      v += __shfl_xor_sync(0xffffffffu, v, 4);
      v += __shfl_xor_sync(0xffffffffu, v, 8);
      const int key = kq + 16 * b;
      if (hq == 0 && sRow[key] >= 0) out[s0 + key] = v * load_index_scale(keys, sRow[key]);
    }
  }
}

}  // namespace

IndexerKernel indexer_scores_kernel_for(const IndexerScoresParams& p) {
  const bool mma_ok = p.D % 32 == 0 && p.D <= 128 && p.H <= kMaxHeads;
  if (p.kernel == IndexerKernel::Fp8Mma && mma_ok) return IndexerKernel::Fp8Mma;
  if (p.kernel == IndexerKernel::Auto && mma_ok && p.keys.format == IndexKeyFormat::FP8) return IndexerKernel::Fp8Mma;
  return IndexerKernel::CudaCore;
}

cudaError_t launch_indexer_scores(const IndexerScoresParams& p, cudaStream_t stream) {
  if (p.T <= 0 || p.max_keys <= 0) return cudaSuccess;
  if (indexer_scores_kernel_for(p) == IndexerKernel::Fp8Mma) return launch_indexer_scores_fp8_mma(p, stream);
  if (p.H <= 0 || p.H > kMaxHeads || p.D <= 0 || p.D > kMaxDim || p.D % 4 || p.keys.D != p.D)
    return cudaErrorInvalidValue;
  if (p.keys.format == IndexKeyFormat::FP8 && p.keys.block_tokens <= 0) return cudaErrorInvalidValue;
  if (p.T > 65535) return cudaErrorInvalidValue;
  const int64_t per_block = int64_t(kTilesPerBlock) * kKeys;
  const dim3 grid(unsigned((p.max_keys + per_block - 1) / per_block), unsigned(p.T));
  const size_t smem = (size_t(kMaxHeads + kKeys) * size_t(p.D + 4) + kMaxHeads + 2 * kKeys) * sizeof(float);
  cudaError_t err;
  if (p.keys.format == IndexKeyFormat::F32) {
    err = cudaFuncSetAttribute(indexer_scores_kernel<IndexKeyFormat::F32>,
                               cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem));
    if (err == cudaSuccess) indexer_scores_kernel<IndexKeyFormat::F32><<<grid, kThreads, smem, stream>>>(p);
  } else {
    err = cudaFuncSetAttribute(indexer_scores_kernel<IndexKeyFormat::FP8>,
                               cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem));
    if (err == cudaSuccess) indexer_scores_kernel<IndexKeyFormat::FP8><<<grid, kThreads, smem, stream>>>(p);
  }
  if (err != cudaSuccess) return err;
  return cudaGetLastError();
}

}  // namespace dsinfer::gpu::attn
