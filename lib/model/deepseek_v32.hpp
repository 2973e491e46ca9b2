// The DeepSeek-V3.2 forward pass (and V3's, which is the same without the indexer), written once against the
// Backend interface. Spec: ../shared/spec/dsv32-model.md §2–§6.
#pragma once
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "backend/backend.hpp"
#include "checkpoint/hf_config.hpp"
#include "dist/communicator.hpp"
#include "dsinfer/model.hpp"
#include "kv/kv_cache.hpp"
#include "model/deepseek_weights.hpp"

namespace dsinfer {

// YaRN-corrected inverse frequencies for the rope dims (spec §2.3), one per rotated pair.
std::vector<float> yarn_inv_freq(const ModelConfig& cfg);
// qk_head_dim^-1/2 · mscale² (spec §2.4).
float mla_softmax_scale(const ModelConfig& cfg);

// One sequence's state of the MTP module (spec §7) between forwards. Invariant: cache->size() + deferred() == main
// size - 1 (0 for an empty sequence), plus `draft_depth` rows of the current draft chain. The MTP row at position i
// reads the main model's final hidden state at i and the token at i + 1, so a forward of n new tokens runs n MTP
// rows: the last token's hidden state waits in `pending` for the token after it. A forward with
// EvalOptions::defer_mtp keeps its rows' inputs instead (up to kMaxDeferredMtpRows), and the next draft or
// non-deferring forward runs them in one batched pass: while speculation drafts nothing, decode skips the MTP layer.
// The most MTP rows a sequence defers: bounds the inputs kept (hidden_size floats a row) and the catch-up pass.
constexpr int64_t kMaxDeferredMtpRows = 64;

struct MtpState {
  std::unique_ptr<KvCache> cache;   // the MTP layer's own latent and indexer keys (a one-layer pool)
  std::vector<float> pending;       // [hidden] main final hidden state at main size - 1; zeros when not known
  std::vector<float> last_hidden;   // [last_n, hidden] the last forward's final hidden states, for rollback
  int64_t last_start = 0, last_n = 0;
  int64_t draft_depth = 0;          // draft rows written after the committed ones (rolled back before a forward)
  std::vector<float> draft_hidden;  // [hidden] the MTP output of the last draft row: the chain's next input
  std::vector<float> deferred_hidden;  // [deferred(), hidden] inputs of the rows not run yet (the main states)
  std::vector<int32_t> deferred_ids;   // [deferred()] their tokens; the rows sit at positions cache->size() on

  // Whether the forward in progress defers this sequence's new rows (decided once per forward, before the rows
  // are appended; kept here rather than in a per-call vector so that a warm decode step allocates nothing).
  bool defer_this_forward = false;

  int64_t deferred() const { return int64_t(deferred_ids.size()); }
  void clear_deferred() {
    deferred_hidden.clear();
    deferred_ids.clear();
  }

  // Forgets the draft chain: the cache holds the committed rows again.
  void drop_draft() {
    if (draft_depth > 0) cache->truncate(cache->size() - draft_depth);
    draft_depth = 0;
  }
  // After the main cache was cut to n tokens (n <= its size before): the MTP rows and pending state of n tokens.
  void truncate_main(int64_t n, int64_t hidden);
  std::unique_ptr<MtpState> fork(int64_t capacity) const;
};

// This process's part of a distributed run (docs/distributed.md). The default is the whole model in one process.
struct ModelShard {
  Communicator* comm = nullptr;  // set when world > 1
  int rank = 0, world = 1;
  // Expert parallelism: this rank owns the routed experts [expert_begin, expert_end) of every MoE layer (the others'
  // weights are not bound here) and adds their outputs to the running sum that the rank before it passes on.
  int64_t expert_begin = 0, expert_end = 0;
  // Attention split by heads (set by DeepseekV32 where the heads divide evenly and, for FP8 kv_b, a rank's rows
  // start on a 128-row block): this rank runs MLA for heads [head_begin, head_end) and the ranks' outputs are
  // gathered before o_proj; else every rank computes every head.
  bool split_heads = false;
  int64_t head_begin = 0, head_end = 0;
  // With split heads, q_b (q) split too: this rank computes its heads' queries only, from its rows of the weight
  // (where they start on an FP8 scale block).
  bool split_q = false;
  // o_proj split by rows: this rank computes hidden features [hidden_begin, hidden_end) of the attention's output
  // and the ranks' parts are gathered (where hidden divides evenly and, for FP8, a rank's rows start on a block).
  bool split_o = false;
  int64_t hidden_begin = 0, hidden_end = 0;
  // The vocab-parallel lm_head: this rank computes the logits of vocab rows [vocab_begin, vocab_end) (consecutive
  // ranges of ceil(vocab / world) rows) and rank 0 gathers them.
  int64_t vocab_begin = 0, vocab_end = 0;
  bool distributed() const { return world > 1; }
};
// Rank r of `world`'s experts (consecutive ranges, so that the ranks' sums in rank order are one sum in expert
// order) and lm_head rows.
ModelShard make_shard(Communicator* comm, const ModelConfig& cfg);
// The rows of `w` [begin, end) as a view into the same storage (BF16/F16/F32, or FP8 from a 128-row block on).
Weight weight_rows(const Weight& w, int64_t begin, int64_t end);

class DeepseekV32 {
 public:
  DeepseekV32(const ModelConfig& cfg, ModelWeights weights, Backend& backend, ModelShard shard = {});
  const ModelShard& shard() const { return shard_; }
  const Weight& lm_head_rows() const { return lm_head_rows_; }  // distributed: this rank's rows of lm_head
  // Distributed: the views of weight rows this rank reads (its rows of q_b, o_proj and lm_head), and whether a
  // weight of weights() is read only through such a view (its other rows are never read: not to be prepared).
  std::vector<const Weight*> row_views() const;
  bool read_as_rows(const Weight& w) const;

  const ModelConfig& config() const { return cfg_; }
  const ModelWeights& weights() const { return w_; }

  // Runs `ids` at positions [cache.size(), cache.size() + n), appends their keys to the cache and writes logits
  // ([n, vocab] when opts.all_logits, else [1, vocab]) into `logits` (resized; its storage is reused when it is
  // large enough). Validates ids and capacity before touching the cache, so a failed call leaves it as it was.
  // Calls must not overlap (Model serializes them): they share the per-call scratch below, which is what lets a
  // warm decode step run without heap allocations.
  void forward(KvCache& cache, std::span<const int32_t> ids, const EvalOptions& opts, std::vector<float>& logits,
               MtpState* mtp = nullptr);

  // A ragged batch: several sequences' tokens in one forward (prefill chunks and decode tokens may mix). Each
  // sequence gets exactly the logits it would get alone.
  struct BatchItem {
    KvCache* cache;
    std::span<const int32_t> ids;
    bool all_logits;
    std::vector<float>* logits;  // out: [n or 1, vocab]
    // Each new token computed exactly (bitwise) as a one-token forward would compute it (the decode form, keys
    // and queries ranked per row): what verifying drafted tokens needs for greedy identity.
    bool exact_rows = false;
    MtpState* mtp = nullptr;     // the sequence's MTP state: the MTP module consumes the new rows (has_mtp() only)
    bool defer_mtp = false;      // EvalOptions::defer_mtp for this sequence alone
  };
  void forward_batch(std::span<BatchItem> items, const EvalOptions& opts);

  bool has_mtp() const { return w_.mtp.has_value(); }
  // Drafting: for each item, one MTP row at position mtp->cache->size() from the chain's input (the pending main
  // hidden state first, then the previous draft row's output) and `token`; its logits [vocab] go to *logits.
  // The rows stay in the MTP cache as the draft chain (MtpState::drop_draft forgets them).
  struct DraftItem {
    MtpState* mtp;
    int32_t token;
    std::vector<float>* logits;  // out: [vocab]
  };
  void mtp_draft(std::span<DraftItem> items, const EvalOptions& opts);
  // Makes `m` the MTP state of a sequence holding `tokens` whose main hidden states are not known (a restored or
  // copied sequence that had none): the MTP rows are computed with zero hidden states (drafts are weaker until the
  // context moves on; what is decoded is unaffected).
  void mtp_rebuild(MtpState& m, std::span<const int32_t> tokens, const EvalOptions& opts);

 private:
  // Per-call state. One instance lives in the model and is refilled by every call, so that its vectors keep their
  // storage from one decode step to the next.
  struct Step {
    struct Segment {  // one sequence's tokens: rows [row0, row0 + n) of the step, cache positions [start, start + n)
      KvCache* cache;
      int64_t row0, n, start;
      bool exact_rows = false;  // attention row by row, as n one-token steps would compute it
      const int32_t* block_table = nullptr;  // the cache's block table in backend memory (set by begin_step)
    };
    int64_t n = 0;  // rows (tokens) in the step, all sequences together
    // Starts a step of `rows` rows (the segments, ids and positions are then filled; their storage is reused).
    void clear_rows(int64_t rows) {
      n = rows;
      segments.clear();
      ids.clear();
      positions.clear();
    }
    std::vector<Segment> segments;
    std::vector<int32_t> ids;        // [n] every sequence's new tokens, in row order
    std::vector<int32_t> positions;  // [n] absolute position of each row in its own sequence
    Precision precision = Precision::Fp8;
    LinearQuant quant;  // for FP8 linears
    bool ue8m0 = true;  // scale rule for the simulated-FP8 latent and the indexer
    int64_t index_topk = 0;
    AttentionForm attention = AttentionForm::Auto;
    // MTP rows of committed tokens only fill the MTP cache (a draft starts after them, from the main model's state):
    // their layer runs up to the cache writes — latent, rope key, indexer key — and stops (mtp_layer, attention).
    bool cache_only = false;
    // The step's index data in backend memory (backend interface v2, lib/backend/backend.hpp): begin_step uploads
    // what the host knows (ids, positions, each segment's block table) in one copy and keeps room for what the ops
    // write and the next op reads (the indexer's top-k of one attention call, the router's choices), so no op's
    // result goes through the host. Grow-only: a warm decode step allocates nothing.
    Buffer index_mem;
    std::vector<int32_t> index_host;  // the uploaded part, staged on the host
    const int32_t* ids_dev = nullptr;
    const int32_t* positions_dev = nullptr;
    int32_t* indices_dev = nullptr;          // [max segment rows, index_topk]
    int32_t* experts_dev = nullptr;          // [n, num_experts_per_tok]
    float* expert_weights_dev = nullptr;     // [n, num_experts_per_tok]
    int32_t* own_experts_dev = nullptr;      // expert parallelism: experts_dev with other ranks' experts as -1
    // Expert parallelism: the router's choices on the host, with other ranks' experts as -1, and the running sum.
    std::vector<int32_t> experts, own_experts;
    std::vector<float> partial;
    // all_gather_columns' host buffers: this rank's part, every rank's, the assembled whole.
    std::vector<float> gather_mine, gather_all, gather_full;
  };
  // layer: 0 .. num_hidden_layers - 1, or num_hidden_layers for the MTP module's decoder layer (its cache layer 0).
  const LayerWeights& layer_weights(int64_t layer) const {
    return layer < cfg_.num_hidden_layers ? w_.layers[size_t(layer)] : w_.mtp->layer;
  }
  void attention(int64_t layer, Tensor2D x, Step& step, Tensor2D out);
  // Every rank's `mine` [T, w], in rank order, side by side into every rank's `full` [T, world·w].
  void all_gather_columns(Tensor2D mine, Tensor2D full, Step& step);
  const Weight& query_weight(int64_t layer) const;  // q_b_proj, or q_proj without a low-rank query
  void feed_forward(int64_t layer, Tensor2D x, Step& step, Tensor2D out);
  // Completes `step` once its segments, ids and positions are filled and their caches prepared for the new rows:
  // the options, and the step's index data uploaded to the backend.
  void begin_step(Step& step, const EvalOptions& opts);
  // The MTP module over step's rows: `hidden` [n, D] the main model's final hidden states, step.ids the next tokens.
  // Writes the MTP cache rows and leaves shared_head.norm's output (the pre-lm_head state) in `out` [n, D]; with
  // step.cache_only it stops after the cache writes and leaves `out` alone (it may be empty).
  void mtp_layer(Tensor2D hidden, Step& step, Tensor2D out);
  // Runs the deferred MTP rows of these states in one pass (each state's draft chain dropped first).
  void run_deferred_mtp(std::span<MtpState* const> states, const EvalOptions& opts);
  void swiglu(const MlpWeights& mlp, Tensor2D x, const LinearQuant& q, Tensor2D out);
  // out [rows, vocab] = x · lm_headᵀ: on every rank its vocab rows, gathered into rank 0's out (the only one read).
  void lm_head(Tensor2D x, Tensor2D out);
  // The routed and shared experts of a MoE layer across the ranks (step.experts / expert_weights routed already).
  void moe_expert_parallel(int64_t layer, Tensor2D x, Step& step, Tensor2D out);

  ModelConfig cfg_;
  ModelWeights w_;
  Backend& be_;
  std::vector<float> inv_freq_;
  Buffer inv_freq_mem_;  // inv_freq_ in backend memory (RopeArgs::inv_freq)
  const float* inv_freq_dev() const { return static_cast<const float*>(inv_freq_mem_.data()); }
  Matrix ones_;  // [rows, 1] of 1.0f: the indexer keys' scales in reference precision (grown by begin_step)
  float softmax_scale_ = 0.0f;
  Weight lm_head_rows_;  // distributed: this rank's rows of lm_head (a view; what Model prepared for the backend)
  // Vocab-parallel lm_head scratch: this rank's logits (padded to ceil(vocab / world) columns), rank 0's gathered.
  std::vector<float> logits_mine_, logits_all_;
  std::vector<Weight> kv_b_heads_;  // split heads: per layer, the rows of this rank's heads of kv_b_proj (a view)
  std::vector<Weight> q_heads_;     // split q: per layer, the rows of this rank's heads of q_b_proj (q_proj)
  std::vector<Weight> o_rows_;      // split o: per layer, this rank's rows of o_proj
  std::vector<Matrix> wkv_b_;  // per layer: kv_b_proj dequantized to fp32 once (spec §3.4), or only its shape when the backend reads it as stored
  std::vector<std::vector<ExpertWeights>> experts_;  // per MoE layer: routed experts as the backend takes them
  ModelShard shard_;
  Step step_;      // the current call's state (calls do not overlap)
  Step mtp_step_;  // the MTP module's rows of the current call
};

}  // namespace dsinfer
