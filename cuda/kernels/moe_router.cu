// MoE router (see moe_router.cuh): one warp per token. The token's scores and biased choice values live in shared
// memory; groups are scored by one lane each, and both top-k selections are K rounds of a warp-wide arg-max with
// the reference's tie order. The weights are summed by lane 0 in selection order, as the CPU does.
#include <cfloat>

#include "common/check.cuh"
#include "kernels/moe_router.cuh"

namespace dsinfer::gpu {

namespace {

constexpr int kWarpsPerBlock = 4;

// (v, i) beats (bv, bi): higher value, or equal value and lower index. bi < 0 means "nothing yet".
__device__ __forceinline__ bool beats(float v, int i, float bv, int bi) {
  if (i < 0) return false;
  if (bi < 0) return true;
  return v > bv || (v == bv && i < bi);
}

__device__ __forceinline__ void warp_argmax(float& v, int& i) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, v, off);
    const int oi = __shfl_xor_sync(0xffffffffu, i, off);
    if (beats(ov, oi, v, i)) { v = ov; i = oi; }
  }
}

__global__ void moe_router_kernel(MoeRouterParams p) {
  extern __shared__ float smem[];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t t = int64_t(blockIdx.x) * kWarpsPerBlock + warp;
  const int E = p.E;
  float* score = smem + warp * 2 * E;
  float* choice = score + E;
  if (t >= p.T) return;
  const float* lg = p.logits + t * E;

  if (p.sigmoid) {
    for (int e = lane; e < E; e += 32) score[e] = 1.0f / (1.0f + expf(-lg[e]));
  } else {
    float mx = -FLT_MAX;
    for (int e = lane; e < E; e += 32) mx = fmaxf(mx, lg[e]);
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
    double sum = 0.0;  // the reference sums in double
    for (int e = lane; e < E; e += 32) {
      const float v = expf(lg[e] - mx);
      score[e] = v;
      sum += v;
    }
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, off);
    for (int e = lane; e < E; e += 32) score[e] = float(double(score[e]) / sum);
  }
  for (int e = lane; e < E; e += 32) choice[e] = score[e] + (p.bias ? p.bias[e] : 0.0f);
  __syncwarp();

  if (p.n_group > 1 && p.topk_group < p.n_group) {
    const int per = E / p.n_group;
    float gs = -FLT_MAX;
    int gi = -1;
    if (lane < p.n_group) {
      const float* c = choice + lane * per;
      if (p.bias) {  // noaux_tc: the sum of the group's two best
        float b1 = -INFINITY, b2 = -INFINITY;
        for (int i = 0; i < per; ++i) {
          if (c[i] > b1) { b2 = b1; b1 = c[i]; } else if (c[i] > b2) b2 = c[i];
        }
        gs = per >= 2 ? b1 + b2 : b1;
      } else {
        gs = c[0];
        for (int i = 1; i < per; ++i)
          if (c[i] > gs) gs = c[i];
      }
      gi = lane;
    }
    unsigned keep = 0;
    for (int round = 0; round < p.topk_group; ++round) {
      float bv = gs;
      int bi = (keep >> lane) & 1u ? -1 : gi;
      warp_argmax(bv, bi);
      if (bi >= 0) keep |= 1u << bi;
    }
    __syncwarp();
    for (int e = lane; e < E; e += 32)
      if (!((keep >> (e / per)) & 1u)) choice[e] = -INFINITY;
    __syncwarp();
  }

  // Top-k over the (masked) choice values. `taken` bits: a lane owns experts lane, lane+32, ... (≤ 32 of them).
  unsigned taken = 0;
  int chosen[32];
  for (int i = 0; i < p.top_k; ++i) {
    float bv = -INFINITY;
    int bi = -1;
    for (int j = 0, e = lane; e < E; ++j, e += 32)
      if (!((taken >> j) & 1u) && beats(choice[e], e, bv, bi)) { bv = choice[e]; bi = e; }
    warp_argmax(bv, bi);
    chosen[i] = bi;
    if (bi >= 0 && (bi % 32) == lane) taken |= 1u << (bi / 32);
  }
  if (lane == 0) {
    float denom = 0.0f;
    for (int i = 0; i < p.top_k; ++i) denom += score[chosen[i]];
    for (int i = 0; i < p.top_k; ++i) {
      float w = score[chosen[i]];
      if (p.normalize) w /= (denom + 1e-20f);
      p.out_ids[t * p.top_k + i] = chosen[i];
      p.out_weights[t * p.top_k + i] = w * p.routed_scale;
    }
  }
}

}  // namespace

void moe_router(const MoeRouterParams& p, cudaStream_t stream) {
  if (p.T == 0) return;
  DSINFER_CUDA_REQUIRE(p.E > 0 && p.E <= 1024 && p.n_group >= 1 && p.n_group <= 32 && p.E % p.n_group == 0 &&
                           p.top_k >= 1 && p.top_k <= 32 && p.top_k <= p.E && p.topk_group >= 1,
                       "moe_router: unsupported sizes (E <= 1024, n_group <= 32, top_k <= 32)");
  const size_t smem = size_t(kWarpsPerBlock) * 2 * p.E * sizeof(float);
  const unsigned blocks = unsigned((p.T + kWarpsPerBlock - 1) / kWarpsPerBlock);
  moe_router_kernel<<<blocks, kWarpsPerBlock * 32, smem, stream>>>(p);
  DSINFER_CUDA_CHECK_LAUNCH();
}

}  // namespace dsinfer::gpu
