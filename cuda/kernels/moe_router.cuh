// The MoE router after the logits (spec §5.2): scores (sigmoid or softmax over fp32 logits), the selection-only
// bias, group-limited top-k (group score = sum of the top-2 biased scores with a bias, else the max), normalized
// weights times routed_scale. Ties break exactly as the CPU reference: higher value first, equal values -> lower
// index.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace dsinfer::gpu {

struct MoeRouterParams {
  const float* logits = nullptr;  // [T, E] fp32
  const float* bias = nullptr;    // [E] fp32, may be null
  int64_t T = 0;
  int E = 0, n_group = 1, topk_group = 1, top_k = 0;
  bool sigmoid = true, normalize = true;
  float routed_scale = 1.0f;
  int32_t* out_ids = nullptr;     // [T, top_k] device
  float* out_weights = nullptr;   // [T, top_k] device
};

// E ≤ 1024, n_group ≤ 32, top_k ≤ 32.
void moe_router(const MoeRouterParams& p, cudaStream_t stream);

}  // namespace dsinfer::gpu
