// MlaArgs semantics on the GPU (backend.hpp, spec §3.4): the absorbed form end to end,
//   q_abs = q_nope · W_UK[h]   ->   attention over the latent cache (mla_decode)   ->   out = o_lat · W_UV[h]ᵀ.
// The same path serves decode (one query per sequence) and prefill (each query with its causal range): the MHA
// form would need fewer FLOPs for long dense prefills, but the absorbed one is exactly equivalent and is the one
// FlashMLA uses for sparse prefill, where V3.2 spends its long contexts.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "../kv/kv_cache_formats.cuh"
#include "mla_absorb.cuh"
#include "mla_decode.cuh"

namespace dsinfer::gpu::attn {

struct MlaAttentionParams {
  int64_t T = 0, H = 0, dn = 0, dr = 0, dv = 0, C = 0;  // C = kv_lora_rank; dr must equal cache.R
  const float* q = nullptr;          // [T, H*(dn+dr)] f32 device (row stride ld_q), per head [nope | rope]
  int64_t ld_q = 0;
  const float* wkv_b = nullptr;      // [H*(dn+dv), C] f32 device (row stride ld_w)
  int64_t ld_w = 0;
  // The same weight as stored (e4m3 + 128x128 scales), may be null: with at most fp8_absorb_max_t queries the
  // absorb products stream it instead of the fp32 copy (same values, a quarter of the bytes).
  Fp8AbsorbWeight wkv_b8;
  int64_t fp8_absorb_max_t = 32;
  LatentCacheView cache;
  BlockTable blocks;
  const int32_t* query_seq = nullptr;  // [T] device, null = sequence 0
  const int32_t* seq_len = nullptr;    // [n_seqs] device, null = n_keys
  int64_t n_keys = 0;
  const int32_t* positions = nullptr;  // [T] device
  const int32_t* indices = nullptr;    // [T, n_indices] device, −1 = none; null = dense causal
  int64_t n_indices = 0;
  int64_t max_list = 0;              // dense: the largest visible key count of any query; sparse: n_indices
  float softmax_scale = 0.0f;
  float* out = nullptr;              // [T, H*dv] f32 device (row stride ld_out)
  int64_t ld_out = 0;
  void* workspace = nullptr;         // mla_attention_workspace_bytes(*this) bytes, 16-byte aligned
  int num_sms = 132;
  int num_splits = 0;                // 0 = automatic
  MlaKernel kernel = MlaKernel::Auto;
};

size_t mla_attention_workspace_bytes(const MlaAttentionParams& p);
cudaError_t launch_mla_attention(const MlaAttentionParams& p, cudaStream_t stream);

}  // namespace dsinfer::gpu::attn
