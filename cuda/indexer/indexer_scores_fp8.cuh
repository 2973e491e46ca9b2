// FP8 tensor-core variant of the indexer scores (indexer_scores.cuh has the contract): q·k as e4m3 x e4m3
// mma.sync (m16n8k32) with fp32 accumulation, as DeepGEMM's fp8_mqa_logits does with wgmma. Exact only when q and
// the keys hold e4m3 values (fp8 mode: post-Hadamard, quantized, unscaled) - which the 132-byte FP8 cache does by
// construction. Products of e4m3 values are exact; the tensor cores' fp32 accumulation may round differently from
// a sequential fp32 sum (Hopper keeps fewer bits in FP8 MMA accumulation), so scores can differ from the CUDA-core
// kernel by ~1e-4 relative. Head dims up to 128 in multiples of 32; up to 64 heads.
#pragma once
#include <cuda_runtime.h>

#include "indexer_scores.cuh"

namespace dsinfer::gpu::attn {

cudaError_t launch_indexer_scores_fp8_mma(const IndexerScoresParams& p, cudaStream_t stream);

}  // namespace dsinfer::gpu::attn
