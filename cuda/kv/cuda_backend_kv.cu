// The CUDA backend's Backend::kv_pack (issue 19): new rows into a packed FP8 KV cache on the device, through the
// cache writers of kv_cache_write.cu. The bytes are the CPU backend's kv_pack bytes (lib/backend/cpu/cpu_backend.cpp,
// layouts in lib/backend/kv_format.hpp): the latent quantized per 128 channels with fp8_quantize's scale rule (the
// last group may be partial), the rope key as bf16, the indexer key stored as given (fp8 precision: e4m3 values and
// their scales) or quantized as one group with the given scale folded in. tests/cuda/test_mla_backend.cu compares
// the two backends' bytes.
//
// The default Backend::kv_pack refuses (it has no packed layout to offer); nothing here touches host memory.
#include <cstdint>
#include <string>

#include "common/check.cuh"
#include "cuda_backend.hpp"
#include "dsinfer/error.hpp"
#include "kv/kv_cache_formats.cuh"

namespace dsinfer {

namespace {

// Scratch slot of this file (cuda_backend.hpp reserves 32..63 for the attention/indexer/KV code; the attention
// file uses 32..38).
constexpr int kSlotKvPackSrc = 40;

void require(bool ok, const char* what) {
  if (!ok) throw Error(ErrorCode::Internal, std::string("cuda backend: ") + what);
}

}  // namespace

void CudaBackend::kv_pack(const KvPackArgs& a) {
  const PackedKv& d = a.dst;
  const int64_t n = a.src.rows, C = d.dim;
  require(d.packed() && a.src.cols == C, "kv_pack shapes");
  if (a.latent) require(a.extra.rows == n && a.extra.cols == d.rope_dim, "kv_pack rope shape");
  else require(!a.extra.data || (a.extra.rows == n && a.extra.cols == 1), "kv_pack scale shape");
  if (d.dtype != KvDtype::FP8)
    throw Error(ErrorCode::Unsupported, "cuda backend: kv_pack stores fp8 KV caches only (no bf16 yet)");
  if (n == 0) return;
  if (a.latent) {
    if (C % 4 || d.rope_dim % 4)
      throw Error(ErrorCode::Unsupported, "cuda backend: an fp8 KV cache needs kv_lora_rank and qk_rope_head_dim "
                                          "multiples of 4; got " + std::to_string(C) + " and " +
                                          std::to_string(d.rope_dim));
    gpu::attn::LatentWriteParams p;
    p.format = gpu::attn::LatentFormat::FP8;
    p.n = n, p.C = C, p.R = d.rope_dim;
    p.c_new = a.src.data, p.ld_c = a.src.ld;
    p.kpe_new = a.extra.data, p.ld_pe = a.extra.ld;
    p.row0 = a.row0;
    p.packed = d.data;
    p.ue8m0 = a.ue8m0;
    // The writer reads c as float4: a view whose rows are not 16-byte aligned is copied first.
    if (reinterpret_cast<uintptr_t>(a.src.data) % 16 || a.src.ld % 4) {
      float* c = static_cast<float*>(scratch(kSlotKvPackSrc, size_t(n * C) * 4));
      DSINFER_CUDA_CHECK(cudaMemcpy2DAsync(c, size_t(C) * 4, a.src.data, size_t(a.src.ld) * 4, size_t(C) * 4,
                                           size_t(n), cudaMemcpyDeviceToDevice, stream()));
      p.c_new = c, p.ld_c = C;
    }
    DSINFER_CUDA_CHECK(gpu::attn::launch_latent_cache_write(p, stream()));
    return;
  }
  if (C % 16 || d.page_tokens <= 0)
    throw Error(ErrorCode::Unsupported, "cuda backend: an fp8 indexer key cache needs index_head_dim a multiple of "
                                        "16; got " + std::to_string(C));
  gpu::attn::IndexKeyWriteParams p;
  p.format = gpu::attn::IndexKeyFormat::FP8;
  p.n = n, p.D = C;
  p.k_new = a.src.data, p.ld_new = a.src.ld;
  p.scale_new = a.extra.data, p.ld_scale_new = a.extra.ld;
  p.ue8m0 = a.ue8m0;
  p.key_is_e4m3 = a.key_is_e4m3;
  p.row0 = a.row0;
  p.packed = d.data;
  p.block_tokens = d.page_tokens;
  DSINFER_CUDA_CHECK(gpu::attn::launch_index_key_cache_write(p, stream()));
}

}  // namespace dsinfer
