// The CPU reference backend: every op written simply and obviously right, with threads where they are free.
// Faster kernels (issue 7) will be tested against these.
#pragma once
#include "backend/backend.hpp"
#include "util/thread_pool.hpp"
#include "backend/cpu/buffer_cache.hpp"
#include "backend/cpu/dense_gemm.hpp"
#include "backend/cpu/fp8_gemm.hpp"
#include "backend/cpu/scratch_arena.hpp"

#include <optional>
#include <utility>
#include <vector>

namespace dsinfer {

class CpuBackend final : public Backend {
 public:
  explicit CpuBackend(const BackendOptions& opts);
  ~CpuBackend() override;
  void discard(void* p, size_t bytes) override;  // whole pages inside the range: MADV_DONTNEED
  void release_memory() override;                // the recycled activation buffers and the scratch arena
  // scratch_bytes: the ScratchArena; cached_activation_bytes: the BufferCache. Safe to call while ops run (the
  // figures are then a moment's).
  BackendMemoryStats memory_stats() const override;
  std::string_view name() const override { return "cpu"; }

  Buffer allocate(size_t bytes, bool zero = true) override;
  void fill_zero(Tensor2D x) override;
  void copy(Tensor2D dst, Tensor2D src) override;
  // Every feature: both packed cache dtypes, kv_b read as stored, the shared expert fused, the slot mode.
  bool supports(BackendFeature) const override { return true; }
  void round_to_bf16(Tensor2D x) override;
  void kv_pack(const KvPackArgs& a) override;
  void copy_bytes(void* dst, const void* src, size_t bytes) override;
  void bytes_to_host(void* dst, const void* src, size_t bytes) override;
  void bytes_from_host(void* dst, const void* src, size_t bytes) override;
  void to_host(float* dst, Tensor2D src) override;
  void from_host(Tensor2D dst, const float* src) override;
  Matrix dequantize(const Weight& w) override;
  // FP8 weights are repacked for the SIMD kernels (backend/cpu/fp8_gemm.hpp); others are used in place.
  void prepare_weight(const Weight& w) override;  // as WeightUse::Linear
  void prepare_weight(const Weight& w, WeightUse use) override;

  void embed(const Weight& table, std::span<const int32_t> ids, Tensor2D out) override;
  void add_rms_norm(Tensor2D residual, Tensor2D x, const Weight& w, float eps, Tensor2D out) override;
  void rms_norm(Tensor2D x, const Weight& w, float eps, Tensor2D out) override;
  void layer_norm(Tensor2D x, const Weight& w, const Weight& b, float eps, Tensor2D out) override;
  void linear(Tensor2D x, const Weight& w, Tensor2D out, const LinearQuant& q) override;
  void silu_mul(Tensor2D gate, Tensor2D up, Tensor2D out) override;
  void add(Tensor2D acc, Tensor2D x) override;
  void rope(const RopeArgs& a) override;
  void hadamard(Tensor2D x, int64_t n) override;
  void fp8_quantize(Tensor2D x, int64_t group, bool ue8m0, bool dequantize, Tensor2D out, Tensor2D scales) override;
  void indexer_topk(const IndexerTopkArgs& a) override;
  void mla_attention(const MlaArgs& a) override;
  void moe_route(const MoeRouteArgs& a) override;
  void moe_experts(const MoeExpertsArgs& a) override;
  void moe_combine(const MoeCombineArgs& a) override;
  void linear_many(Tensor2D x, std::span<const LinearOut> outs, const LinearQuant& q) override;

  ThreadPool& pool() { return pool_; }

 private:
  const PackedFp8Weight* packed_fp8(const Weight& w) const;  // the copy prepare_weight made, or null
  const PackedDenseWeight* packed_dense(const Weight& w) const;
  // (token, weight) pairs grouped by expert, token order within each: expert e's are entries[offset[e], offset[e+1]).
  // The arrays are scratch (ScratchSlot::Moe*).
  struct RoutedEntry {
    int32_t token;
    float weight;
  };
  struct RoutedTokens {
    int64_t* offset;       // [lists + 1]
    RoutedEntry* entries;  // [offset[lists]]
    int32_t* slot;         // slot mode: each entry's row in MoeExpertsArgs::slots (parallel to entries), else null
    int64_t count(int64_t e) const { return offset[size_t(e) + 1] - offset[size_t(e)]; }
    const RoutedEntry* of(int64_t e) const { return entries + offset[size_t(e)]; }
    const int32_t* slots_of(int64_t e) const { return slot + offset[size_t(e)]; }
  };
  bool moe_experts_fused(const MoeExpertsArgs& a, const RoutedTokens& routed);

  ThreadPool pool_;
  // Every op's working memory: worker 0's buffers serve the calling thread (outside loops, and chunk 0 inside them),
  // the others the pool's threads.
  ScratchArena scratch_;
  BufferCache* buffers_;  // recycled activation memory (one reference held here, one per live buffer)
  // The repacked linear weights, indexed by WeightHandle::index. Filled at load time only (prepare_weight), read
  // concurrently afterwards.
  struct PreparedWeight {
    const uint8_t* host = nullptr;  // the bytes, dtype and shape it was packed from (a stale handle differs)
    DType dtype = DType::F32;
    int64_t rows = 0, cols = 0;
    std::optional<PackedFp8Weight> fp8;
    std::optional<PackedDenseWeight> dense;
  };
  const PreparedWeight* prepared(const Weight& w) const;  // w's entry, or null (not prepared here, or stale)
  std::vector<PreparedWeight> prepared_;
};

// Shared scalar definitions used by the CPU ops and their tests.
// The activation quantization scale of one group: amax/448 with amax floored at 1e-4, rounded up to a power of
// two when ue8m0 (computed exactly with frexp, not through a floating log2).
float fp8_group_scale(float amax, bool ue8m0);
// Reads element range [c0, c0+n) of row r of a weight as fp32 (FP8: times its block scale).
void weight_row_f32(const Weight& w, int64_t r, int64_t c0, int64_t n, float* out);

}  // namespace dsinfer
