// The DeepSeek-V3.2 forward pass (and V3's, which is the same without the indexer), written once against the
// Backend interface. Spec: ../shared/spec/dsv32-model.md §2–§6.
#pragma once
#include <cstdint>
#include <span>
#include <vector>

#include "backend/backend.hpp"
#include "checkpoint/hf_config.hpp"
#include "dsinfer/model.hpp"
#include "kv/kv_cache.hpp"
#include "model/deepseek_weights.hpp"

namespace dsinfer {

// YaRN-corrected inverse frequencies for the rope dims (spec §2.3), one per rotated pair.
std::vector<float> yarn_inv_freq(const ModelConfig& cfg);
// qk_head_dim^-1/2 · mscale² (spec §2.4).
float mla_softmax_scale(const ModelConfig& cfg);

class DeepseekV32 {
 public:
  DeepseekV32(const ModelConfig& cfg, ModelWeights weights, Backend& backend);

  const ModelConfig& config() const { return cfg_; }
  const ModelWeights& weights() const { return w_; }

  // Runs `ids` at positions [cache.size(), cache.size() + n), appends their keys to the cache and writes logits
  // ([n, vocab] when opts.all_logits, else [1, vocab]) into `logits` (resized; its storage is reused when it is
  // large enough). Validates ids and capacity before touching the cache, so a failed call leaves it as it was.
  // Calls must not overlap (Model serializes them): they share the per-call scratch below, which is what lets a
  // warm decode step run without heap allocations.
  void forward(KvCache& cache, std::span<const int32_t> ids, const EvalOptions& opts, std::vector<float>& logits);

  // A ragged batch: several sequences' tokens in one forward (prefill chunks and decode tokens may mix). Each
  // sequence gets exactly the logits it would get alone.
  struct BatchItem {
    KvCache* cache;
    std::span<const int32_t> ids;
    bool all_logits;
    std::vector<float>* logits;  // out: [n or 1, vocab]
  };
  void forward_batch(std::span<BatchItem> items, const EvalOptions& opts);

 private:
  // Per-call state. One instance lives in the model and is refilled by every call, so that its vectors keep their
  // storage from one decode step to the next.
  struct Step {
    struct Segment {  // one sequence's tokens: rows [row0, row0 + n) of the step, cache positions [start, start + n)
      KvCache* cache;
      int64_t row0, n, start;
    };
    int64_t n = 0;  // rows (tokens) in the step, all sequences together
    std::vector<Segment> segments;
    std::vector<int32_t> ids;        // [n] every sequence's new tokens, in row order
    std::vector<int32_t> positions;  // [n] absolute position of each row in its own sequence
    Precision precision = Precision::Fp8;
    LinearQuant quant;  // for FP8 linears
    bool ue8m0 = true;  // scale rule for the simulated-FP8 latent and the indexer
    int64_t index_topk = 0;
    AttentionForm attention = AttentionForm::Auto;
    // Host scratch of the layers, reused layer after layer: the indexer's top-k positions of one segment, the
    // unit key scales of reference precision, the router's choices.
    std::vector<int32_t> indices, experts;
    std::vector<float> ones, expert_weights;
  };
  void attention(int64_t layer, Tensor2D x, Step& step, Tensor2D out);
  void feed_forward(int64_t layer, Tensor2D x, Step& step, Tensor2D out);
  void swiglu(const MlpWeights& mlp, Tensor2D x, const LinearQuant& q, Tensor2D out);

  ModelConfig cfg_;
  ModelWeights w_;
  Backend& be_;
  std::vector<float> inv_freq_;
  float softmax_scale_ = 0.0f;
  std::vector<Matrix> wkv_b_;  // per layer: kv_b_proj dequantized to fp32 once (spec §3.4), or only its shape when the backend reads it as stored
  std::vector<std::vector<ExpertWeights>> experts_;  // per MoE layer: routed experts as the backend takes them
  Step step_;  // the current call's state (calls do not overlap)
};

}  // namespace dsinfer
