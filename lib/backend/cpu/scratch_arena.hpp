// The CPU backend's scratch memory: grow-only buffers owned by the backend, one set per thread of its pool, so that
// a warm decode step allocates nothing, the memory goes away with the backend (or on release_memory), and its size
// shows in the backend's memory stats. Thread-locals did the first but kept their memory on every thread that ever
// called an op, after the model was gone, where no stats could see it (issue 19).
#pragma once
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <type_traits>
#include <vector>

namespace dsinfer {

// One buffer per call site (and per worker): two sites share a slot only where they can never be live at once.
enum class ScratchSlot : uint8_t {
  LinearQuantized,     // linear / linear_many: the FP8-quantized input [T, K] f32
  LinearScales,        // ... and its group scales [T, K/128] f32
  LinearWeightRow,     // linear's FP8 reference path: one dequantized weight row [K] f32, per worker
  KvPackRow,           // kv_pack: one quantized row [C] f32
  NormGain,            // rms_norm / layer_norm: the gain vector [cols] f32
  NormBias,            // layer_norm: the bias vector [cols] f32
  RopeCos,             // rope: [rope_dim / 2] f32
  RopeSin,             // rope: [rope_dim / 2] f32
  IndexerScores,       // indexer_topk: a tile of score rows [tile, S] f32
  IndexerHeadWeights,  // indexer_topk: w · head_scale · q_scale [T, H] f32
  IndexerQueries,      // indexer_topk: a group's prepared queries (IndexerQuery storage), per worker
  IndexerKeys,         // the indexer kernels: a packed cache's keys decoded [64, D] f32, per worker
  IndexerKeysBf16,     // the Amx family's indexer kernel: 16 keys as bf16 [16, D] u16, per worker
  TopkRanked,          // indexer_topk: the ranked keys [S] u64 (per worker, or the caller's shared by a decode query)
  TopkOrder,           // indexer_topk: the chosen positions [topk] i32, per worker
  TopkPartKept,        // indexer_topk (decode): how many each part kept [threads] i64
  MlaKvB,              // mla_attention: kv_b dequantized from the stored weight [H*(dn+dv), C] f32
  MlaCacheRows,        // mla_attention (MHA form): the latent rows gathered in position order [S, C] f32
  MlaCacheRope,        // mla_attention (MHA form, packed cache): the rope keys [S, dr] f32
  MlaKeys,             // mla_attention: a query's key positions [<= S] i32, per worker
  MlaQAbs,             // the MLA kernels (per worker): absorbed queries [heads, C] f32
  MlaProbs,            // ... scores, then probabilities [heads, n] f32
  MlaOutLatent,        // ... the probabilities times the latent rows [heads, C] f32
  MlaRowPtrs,          // ... each key's latent row (absorbed) or expanded kv row (MHA) [n] const f32*
  MlaRopePtrs,         // ... each key's rope key [n] const f32*
  MlaValuePtrs,        // ... (MHA) each key's v part [n] const f32*
  MlaDecoded,          // ... a packed cache's rows decoded [n, C + dr] f32
  RouterLogits,        // moe_route: [T, E] f32
  RouterBias,          // moe_route: the selection bias [E] f32
  RouterRow,           // moe_route: one token's logits [E] f32
  RouterScores,        // moe_route: [E] f32
  RouterChoice,        // moe_route: scores + bias [E] f32
  RouterGroupScores,   // moe_route: [n_group] f32
  RouterOrder,         // moe_route: [max(E, n_group)] i32
  RouterKeep,          // moe_route: the kept groups [n_group] char
  MoeOffsets,          // moe_experts: where each expert's tokens start [lists + 1] i64
  MoeFill,             // moe_experts: the counting sort's cursors [lists] i64
  MoeEntries,          // moe_experts: (token, weight) by expert [T*top_k + T] RoutedEntry
  MoeEntrySlots,       // moe_experts (slot mode): each entry's slot row [T*top_k] i32
  MoeJobs,             // moe_experts (fused): the active experts [lists] Job
  MoeStacked,          // moe_experts (fused): stacked inputs, gate/up outputs and scales, f32
  kCount
};

class ScratchArena {
 public:
  // `workers` sets of buffers: one per thread of the pool whose loops use them (ThreadPool::size()).
  explicit ScratchArena(int workers);
  ~ScratchArena();
  ScratchArena(const ScratchArena&) = delete;
  ScratchArena& operator=(const ScratchArena&) = delete;

  // n elements of T for the exclusive use of `worker` (0: the thread calling the op; in a parallel_for body the
  // worker index it is given) at `slot`, 64-byte aligned. The same memory, contents kept, as the previous get of
  // this (worker, slot) unless it has to grow: then it is replaced by uninitialized memory of the next power of two
  // bytes (at least twice the old). Valid until the next get of this (worker, slot) with a larger n, or release().
  // Throws Error(OutOfMemory).
  template <class T>
  T* get(int worker, ScratchSlot slot, size_t n) {
    static_assert(std::is_trivially_copyable_v<T> && std::is_trivially_destructible_v<T>,
                  "scratch holds plain values: nothing is constructed or destroyed in it");
    Block& b = blocks_[size_t(worker) * size_t(ScratchSlot::kCount) + size_t(slot)];
    if (b.bytes < n * sizeof(T)) grow(b, n * sizeof(T));
    return static_cast<T*>(b.data);
  }
  int workers() const { return workers_; }
  // The bytes held (the sum of every buffer's size). Safe to call while ops run.
  size_t bytes() const { return bytes_.load(std::memory_order_relaxed); }
  // Frees every buffer. Not while an op that uses the arena runs.
  void release();

 private:
  struct Block {
    void* data = nullptr;
    size_t bytes = 0;
  };
  void grow(Block& b, size_t need);

  int workers_;
  std::vector<Block> blocks_;  // [worker][slot]
  std::atomic<size_t> bytes_{0};
};

// One worker's share of an arena: what a kernel that runs on one thread of a parallel loop is handed.
class WorkerScratch {
 public:
  WorkerScratch(ScratchArena& arena, int worker) : arena_(&arena), worker_(worker) {}
  template <class T>
  T* get(ScratchSlot slot, size_t n) const {
    return arena_->get<T>(worker_, slot, n);
  }

 private:
  ScratchArena* arena_;
  int worker_;
};

}  // namespace dsinfer
