// DSA lightning-indexer scores (spec §4.2, backend.hpp IndexerTopkArgs):
//   I[t,s] = k_scale[s] · Σ_h w[t,h]·head_scale·q_scale[t,h] · ReLU(q[t,h,:]·k[s,:])      for s < visible(t)
// with visible(t) = min(pos[t] + 1, keys cached for t's sequence): causal ranges for prefill, the whole paged
// cache for decode. Keys come from the F32 cache of the backend interface or the 132-byte FP8 paged cache
// (e4m3 values are decoded exactly, so both formats give the same scores). Scores for s in [visible, max_keys)
// are written as −inf so a row can be handed to the top-k kernel or copied out as is.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "../kv/kv_cache_formats.cuh"

namespace dsinfer::gpu::attn {

// Which kernel: fp32 CUDA cores (any e4m3-or-not values, fp32 sums in a fixed order), or e4m3 tensor cores
// (indexer_scores_fp8.cuh: q and keys must hold e4m3 values; head dim a multiple of 32). Auto takes the tensor
// cores for the FP8 key cache, whose values are e4m3 by construction, and CUDA cores for the F32 cache.
enum class IndexerKernel : int { Auto = 0, CudaCore = 1, Fp8Mma = 2 };

struct IndexerScoresParams {
  int64_t T = 0, H = 0, D = 0;         // queries, heads (<= 64), head dim (<= 128, multiple of 4)
  const float* q = nullptr;            // [T, H*D] f32 (row stride q_t): post-RoPE (fp8 mode: e4m3 values, unscaled)
  int64_t q_t = 0;
  const float* w = nullptr;            // [T, H] f32 head weights (row stride w_t)
  int64_t w_t = 0;
  const float* q_scale = nullptr;      // [T, H] f32 (row stride qs_t), may be null (= 1)
  int64_t qs_t = 0;
  float head_scale = 1.0f;
  IndexKeyCacheView keys;              // D must equal keys.D
  BlockTable blocks;
  const int32_t* query_seq = nullptr;  // [T] i32 device, null = sequence 0
  const int32_t* seq_len = nullptr;    // [n_seqs] i32 device, null = n_keys
  int64_t n_keys = 0;
  const int32_t* positions = nullptr;  // [T] i32 device
  int64_t max_keys = 0;                // columns written per row (>= every visible(t))
  float* scores = nullptr;             // [T, scores_t] f32 out
  int64_t scores_t = 0;
  IndexerKernel kernel = IndexerKernel::Auto;
};

// The kernel launch_indexer_scores runs for these parameters (never Auto).
IndexerKernel indexer_scores_kernel_for(const IndexerScoresParams& p);
cudaError_t launch_indexer_scores(const IndexerScoresParams& p, cudaStream_t stream);

}  // namespace dsinfer::gpu::attn
