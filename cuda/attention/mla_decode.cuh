// MLA attention in the absorbed (MQA) form over a paged latent cache (spec §3.4, §4.6):
//   score[t,h,s] = (q_abs[t,h,:]·c_s + q_pe[t,h,:]·k_pe_s) · softmax_scale      (C+R = 576 wide at V3.2 dims)
//   o_lat[t,h,:] = Σ_s softmax_s(score[t,h,·]) · c_s                            (C = 512 wide)
// over the keys of query t: dense causal s ∈ [0, min(pos[t], seq_len-1)], or, with `indices`, the listed positions
// (−1 and positions outside that causal range skipped: exactly what MlaArgs means). All heads of a token read the
// same latent rows, so a block serves 16 heads of one token and loads each key tile once for all of them.
// Long key lists are split over blocks (split-K, online softmax inside a split) and merged by a combine kernel
// through per-split log-sum-exps. The same kernel is the prefill path (T > 1, each query with its causal range).
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "../kv/kv_cache_formats.cuh"

namespace dsinfer::gpu::attn {

// Which attention kernel: fp32 CUDA cores (any dims, matches the CPU to fp32 rounding), or bf16 tensor cores
// (mla_decode_tc.cuh: V3.2 dims only; queries and probabilities rounded to bf16). Auto takes the tensor cores for
// the BF16 and FP8 caches at V3.2 dims, whose values are bf16-exact anyway, and CUDA cores otherwise.
enum class MlaKernel : int { Auto = 0, CudaCore = 1, TensorCore = 2 };

struct MlaDecodeParams {
  int64_t T = 0, H = 0;             // query tokens, heads
  const float* q_abs = nullptr;     // [T, H, C] f32: element (t,h,i) at q_abs[t*qabs_t + h*qabs_h + i]
  int64_t qabs_t = 0, qabs_h = 0;
  const float* q_pe = nullptr;      // [T, H, R] f32 rotated rope query: (t,h,i) at q_pe[t*qpe_t + h*qpe_h + i]
  int64_t qpe_t = 0, qpe_h = 0;
  LatentCacheView cache;            // C, R: C+R <= 576, both multiples of 4
  BlockTable blocks;                // logical -> physical rows, per sequence
  const int32_t* query_seq = nullptr;  // [T] i32 device: sequence of each query (row of the block table); null = 0
  const int32_t* seq_len = nullptr;    // [n_seqs] i32 device: keys cached per sequence; null = n_keys for all
  int64_t n_keys = 0;
  const int32_t* positions = nullptr;  // [T] i32 device: absolute position of each query
  const int32_t* indices = nullptr;    // [T, n_indices] i32 device, −1 = unused; null = dense causal
  int64_t n_indices = 0;
  int64_t max_list = 0;             // upper bound of any query's key-list length (dense: max visible keys)
  float softmax_scale = 0.0f;
  float* o_lat = nullptr;           // [T, H, C] f32 out, contiguous
  int num_splits = 0;               // 0 = choose (mla_decode_num_splits)
  float* workspace = nullptr;       // mla_decode_workspace_bytes(...) bytes when num_splits > 1
  int num_sms = 132;                // used when choosing splits
  MlaKernel kernel = MlaKernel::Auto;
};

// The kernel launch_mla_decode runs for these parameters (never Auto).
MlaKernel mla_decode_kernel_for(const MlaDecodeParams& p);

// Splits the launcher uses for these parameters (1 = no combine step).
int mla_decode_num_splits(const MlaDecodeParams& p);
// Workspace for `splits` splits: partial outputs and log-sum-exps.
size_t mla_decode_workspace_bytes(int64_t T, int64_t H, int64_t C, int splits);
cudaError_t launch_mla_decode(const MlaDecodeParams& p, cudaStream_t stream);

}  // namespace dsinfer::gpu::attn
