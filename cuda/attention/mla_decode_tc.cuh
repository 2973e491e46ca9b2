// Tensor-core variant of the absorbed MLA attention (mla_decode.cuh has the contract), for the V3.2 shape only
// (latent 512 + rope 64). Scores and P·V run as bf16 mma.sync with fp32 accumulation, as FlashMLA does for its
// BF16 and FP8 caches: the BF16 and FP8 cache rows convert to bf16 exactly (e4m3 times a power-of-two scale fits
// bf16), the queries and the probabilities are rounded to bf16. Called by launch_mla_decode; the split partials
// and their combine are shared with the CUDA-core kernel.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "mla_decode.cuh"

namespace dsinfer::gpu::attn {

constexpr int kMlaTcHeads = 64;  // heads per block
constexpr int kMlaTcTile = 64;   // keys per tile

// Enqueues the attention kernel only: `chunk` keys of the list per split (a multiple of kMlaTcTile), `splits`
// splits (1: o_lat is written directly; otherwise p.workspace receives partials and log-sum-exps).
cudaError_t launch_mla_decode_tc_kernel(const MlaDecodeParams& p, int64_t chunk, int splits, cudaStream_t stream);

}  // namespace dsinfer::gpu::attn
