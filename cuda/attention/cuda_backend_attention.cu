// The CUDA backend's attention ops (issue 8): MLA attention (cuda/attention/) and the lightning indexer's scores +
// top-k (cuda/indexer/), with MlaArgs / IndexerTopkArgs semantics exactly as the CPU reference defines them.
//
// Positions, block tables and index lists arrive in device memory and the top-k is written there (interface v2), so
// neither op synchronizes: the indexer's output goes straight to the attention that reads it. (Only the debugging
// output IndexerTopkArgs::out_scores is host memory.) Both ops process the queries in chunks so that
// their device workspace stays bounded (a long prefill would otherwise need T·H·C floats twice for MLA and T·S
// floats for the index scores).
// MLA always runs the absorbed form, for prefill too (MlaMode is a CPU-side choice of algorithm; both forms compute
// the same attention, see cuda/attention/mla_attention.cuh), on the fp32 CUDA-core kernel: the interface's cache is
// fp32 and the CPU reference computes in fp32. CudaOptions::mla_kernel "tensor-core" selects the bf16
// tensor-core kernel instead (queries, k_pe and probabilities rounded to bf16), to measure what it changes end to end.
// With at most 32 queries and kv_b given as stored FP8 (MlaArgs::wkv_b_stored), the absorb products read the e4m3
// weight instead of the fp32 copy (cuda/attention/mla_absorb.cuh).
// The indexer scores run on fp32 CUDA cores; CudaOptions::indexer_kernel "tensor-core" selects the e4m3 kernel
// when the call is in fp8 mode (q and key scales given, so q and the keys hold e4m3 values).
// Packed caches (issue 19): an FP8 cache (MlaArgs::latent_packed, IndexerTopkArgs::k_packed, the layouts of
// lib/backend/kv_format.hpp) is read by the same kernels through LatentCacheView / IndexKeyCacheView, which decode
// e4m3 · scale and bf16 exactly as the CPU backend does, so the arithmetic after the load is the F32 path's.
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>

#include "attention/mla_attention.cuh"
#include "common/check.cuh"
#include "cuda_backend.hpp"
#include "dsinfer/error.hpp"
#include "indexer/indexer_scores.cuh"
#include "indexer/indexer_topk.cuh"

namespace dsinfer {

namespace {

// Scratch slots of this file (cuda_backend.hpp reserves 32..63 for the attention/indexer/KV code).
enum Slot : int {
  kSlotMlaWorkspace = 32,
  kSlotQ = 33,
  kSlotScores = 34,
};

constexpr size_t kMlaWorkspaceBudget = size_t(512) << 20;  // bytes per MLA chunk (q_abs + o_lat + split partials)
constexpr size_t kScoreBudget = size_t(256) << 20;         // bytes of index scores per indexer chunk

void require(bool ok, const char* what) {
  if (!ok) throw Error(ErrorCode::Internal, std::string("cuda backend: ") + what);
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

}  // namespace

void CudaBackend::indexer_topk(const IndexerTopkArgs& a) {
  const int64_t T = a.q.rows, S = a.n_keys, H = a.n_heads, D = a.head_dim;
  const bool packed = a.k_packed.packed();
  require(a.q.cols == H * D && a.w.cols == H && a.topk > 0, "indexer_topk shapes");
  require(packed ? a.k_packed.dim == D && a.k_packed.page_tokens > 0 : a.k.cols == D, "indexer_topk key shapes");
  require(a.block_table || packed || a.k.rows >= S, "indexer_topk: fewer key rows than keys");
  if (T == 0) return;
  if (packed && a.k_packed.dtype != KvDtype::FP8)
    throw Error(ErrorCode::Unsupported, "cuda backend: indexer_topk reads fp8 packed key caches only");
  if (H > 64 || D > 128 || D % 4 || (packed && D % 16) || a.q.ld % 4 || !aligned16(a.q.data) ||
      (!packed && (a.k.ld % 4 || !aligned16(a.k.data))))
    throw Error(ErrorCode::Unsupported,
                "cuda backend: indexer_topk supports up to 64 heads of up to 128 dims (multiples of 4, of 16 for an "
                "fp8 cache; 16-byte aligned rows); got " + std::to_string(H) + " x " + std::to_string(D));
  DSINFER_CUDA_REQUIRE(!a.block_table || a.block_tokens > 0, "indexer_topk: block_tokens");
  const int32_t* d_pos = a.positions;  // device memory, as are the block table and out_indices
  const int32_t* d_table = a.block_table;
  // fp8 mode: q holds e4m3 values (its scales given) and so do the keys (their scales given, or an FP8 cache).
  const bool mma = indexer_tensor_cores_ && a.q_scale.data && (a.k_scale.data || packed);
  const int64_t chunk = std::clamp<int64_t>(int64_t(kScoreBudget / (size_t(std::max<int64_t>(S, 1)) * 4)), 1, 65535);
  float* scores = static_cast<float*>(scratch(kSlotScores, size_t(std::min(chunk, T) * std::max<int64_t>(S, 1)) * 4));
  for (int64_t t0 = 0; t0 < T; t0 += chunk) {
    const int64_t n = std::min(chunk, T - t0);
    gpu::attn::IndexerScoresParams sp;
    sp.T = n, sp.H = H, sp.D = D;
    sp.q = a.q.data + t0 * a.q.ld, sp.q_t = a.q.ld;
    sp.w = a.w.data + t0 * a.w.ld, sp.w_t = a.w.ld;
    sp.q_scale = a.q_scale.data ? a.q_scale.data + t0 * a.q_scale.ld : nullptr, sp.qs_t = a.q_scale.ld;
    sp.head_scale = a.head_scale;
    sp.keys.D = D;
    if (packed) {
      sp.keys.format = gpu::attn::IndexKeyFormat::FP8;
      sp.keys.packed = a.k_packed.data, sp.keys.block_tokens = a.k_packed.page_tokens;
    } else {
      sp.keys.format = gpu::attn::IndexKeyFormat::F32, sp.keys.k = a.k.data, sp.keys.ld_k = a.k.ld;
      sp.keys.scale = a.k_scale.data, sp.keys.ld_scale = a.k_scale.ld;
    }
    sp.blocks = gpu::attn::BlockTable{d_table, 0, a.block_tokens};
    sp.n_keys = S, sp.positions = d_pos + t0;
    sp.max_keys = S, sp.scores = scores, sp.scores_t = S;
    sp.kernel = mma ? gpu::attn::IndexerKernel::Fp8Mma : gpu::attn::IndexerKernel::CudaCore;
    DSINFER_CUDA_CHECK(gpu::attn::launch_indexer_scores(sp, stream()));
    gpu::attn::TopkParams tp;
    tp.T = n, tp.scores = scores, tp.scores_t = S, tp.n_keys = S, tp.positions = d_pos + t0, tp.k = a.topk;
    tp.out = a.out_indices + t0 * a.topk, tp.out_t = a.topk;
    DSINFER_CUDA_CHECK(gpu::attn::launch_indexer_topk(tp, stream()));
    if (a.out_scores) {  // (debugging: the scores buffer is reused by the next chunk)
      DSINFER_CUDA_CHECK(cudaMemcpyAsync(a.out_scores + t0 * S, scores, size_t(n * S) * 4, cudaMemcpyDeviceToHost,
                                         stream()));
      synchronize();
    }
  }
}

void CudaBackend::mla_attention(const MlaArgs& a) {
  const int64_t T = a.q.rows, S = a.n_keys, H = a.n_heads;
  const int64_t dn = a.nope_dim, dr = a.rope_dim, dv = a.v_dim, C = a.latent.cols;
  const int64_t qk_head = dn + dr, kv_head = dn + dv;
  const PackedKv& lp = a.latent_packed;
  const bool packed = lp.packed();
  require(a.q.cols == H * qk_head && a.k_pe.cols == dr && a.k_pe.rows == a.latent.rows, "mla q/k_pe shapes");
  require(!packed || (lp.dim == C && lp.rope_dim == dr), "mla: packed cache shapes");
  require(a.block_table || a.latent.rows >= S, "mla: fewer cache rows than keys");
  if (packed && lp.dtype != KvDtype::FP8)
    throw Error(ErrorCode::Unsupported, "cuda backend: mla_attention reads fp8 packed latent caches only");
  require(a.wkv_b.rows == H * kv_head && a.wkv_b.cols == C && a.out.cols == H * dv, "mla wkv_b/out shapes");
  if (T == 0) return;
  // The positions are device memory: the longest causal row is taken as S (each position is < n_keys, and the
  // model's last row of a call is at S - 1).
  const int64_t max_vis = S;
  if (C > 512 || C % 4 || dr % 4 || dn % 4 || C + dr > 576 ||
      (!packed && (a.latent.ld % 4 || a.k_pe.ld % 4 || !aligned16(a.latent.data) || !aligned16(a.k_pe.data))))
    throw Error(ErrorCode::Unsupported,
                "cuda backend: mla_attention supports a latent of up to 512 and latent + rope up to 576 (multiples "
                "of 4, 16-byte aligned rows); got " + std::to_string(C) + " + " + std::to_string(dr));
  DSINFER_CUDA_REQUIRE(!a.block_table || a.block_tokens > 0, "mla: block_tokens");

  const int32_t* d_pos = a.positions;  // device memory, as are the block table and the index lists
  const int32_t* d_table = a.block_table;
  const int32_t* d_idx = a.indices;

  // q as the kernels want it: 16-byte aligned rows (copied when the view is not).
  const float* q = a.q.data;
  int64_t ld_q = a.q.ld;
  if (!aligned16(q) || ld_q % 4) {
    float* qc = static_cast<float*>(scratch(kSlotQ, size_t(T * a.q.cols) * 4));
    DSINFER_CUDA_CHECK(cudaMemcpy2DAsync(qc, size_t(a.q.cols) * 4, a.q.data, size_t(a.q.ld) * 4,
                                         size_t(a.q.cols) * 4, size_t(T), cudaMemcpyDeviceToDevice, stream()));
    q = qc;
    ld_q = a.q.cols;
  }

  gpu::attn::MlaAttentionParams p;
  p.H = H, p.dn = dn, p.dr = dr, p.dv = dv, p.C = C;
  p.ld_q = ld_q, p.wkv_b = a.wkv_b.data, p.ld_w = a.wkv_b.ld;
  // Decode-sized calls stream kv_b as stored (e4m3, a quarter of the fp32 copy's bytes, the same values).
  const Weight* ws = a.wkv_b_stored;
  if (ws && ws->present() && ws->dtype == DType::F8_E4M3 && ws->block == 128 && ws->rows() == H * kv_head &&
      ws->cols() == C && C % 16 == 0 && dn <= 128) {
    const gpu::DeviceTensorRef r = device_weight(*ws);
    p.wkv_b8.w8 = static_cast<const uint8_t*>(r.data);
    p.wkv_b8.scale = r.scale;
    p.wkv_b8.scale_ld = r.scale_ld;
  }
  p.cache.C = C, p.cache.R = dr;
  if (packed) {
    p.cache.format = gpu::attn::LatentFormat::FP8;
    p.cache.packed = lp.data;
  } else {
    p.cache.format = gpu::attn::LatentFormat::F32;
    p.cache.latent = a.latent.data, p.cache.ld_latent = a.latent.ld, p.cache.k_pe = a.k_pe.data,
    p.cache.ld_rope = a.k_pe.ld;
  }
  p.blocks = gpu::attn::BlockTable{d_table, 0, a.block_tokens};
  p.n_keys = S;
  p.n_indices = a.indices ? a.n_indices : 0;
  p.max_list = a.indices ? a.n_indices : max_vis;
  p.softmax_scale = a.softmax_scale;
  p.ld_out = a.out.ld;
  p.num_sms = num_sms();
  p.kernel = mla_tensor_cores_ ? gpu::attn::MlaKernel::TensorCore : gpu::attn::MlaKernel::CudaCore;
  // Queries per chunk: the workspace is about 2·T·H·C floats plus the split partials.
  const size_t per_query = size_t(H * C) * 4 * 3;
  const int64_t chunk = std::clamp<int64_t>(int64_t(kMlaWorkspaceBudget / std::max<size_t>(per_query, 1)), 1, 65535);
  for (int64_t t0 = 0; t0 < T; t0 += chunk) {
    const int64_t n = std::min(chunk, T - t0);
    p.T = n;
    p.q = q + t0 * ld_q;
    p.positions = d_pos + t0;
    p.indices = d_idx ? d_idx + t0 * a.n_indices : nullptr;
    p.out = a.out.data + t0 * a.out.ld;
    p.workspace = scratch(kSlotMlaWorkspace, gpu::attn::mla_attention_workspace_bytes(p));
    DSINFER_CUDA_CHECK(gpu::attn::launch_mla_attention(p, stream()));
  }
}

}  // namespace dsinfer
