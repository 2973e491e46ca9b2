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
  // ([n, vocab] when opts.all_logits, else [1, vocab]) into `logits`. Validates ids and capacity before touching
  // the cache, so a failed call leaves it as it was.
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
  struct Step;  // per-call state: positions, precision
  void attention(int64_t layer, Tensor2D x, const Step& step, Tensor2D out);
  void feed_forward(int64_t layer, Tensor2D x, const Step& step, Tensor2D out);
  void swiglu(const MlpWeights& mlp, Tensor2D x, const LinearQuant& q, Tensor2D out);

  ModelConfig cfg_;
  ModelWeights w_;
  Backend& be_;
  std::vector<float> inv_freq_;
  float softmax_scale_ = 0.0f;
  std::vector<Matrix> wkv_b_;  // per layer: kv_b_proj dequantized to fp32 once (spec §3.4), or only its shape when the backend reads it as stored
  std::vector<std::vector<ExpertWeights>> experts_;  // per MoE layer: routed experts as the backend takes them
};

}  // namespace dsinfer
