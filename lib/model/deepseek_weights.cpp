#include "model/deepseek_weights.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <initializer_list>

#include "dsinfer/error.hpp"

namespace dsinfer {

namespace {

enum class Kind {
  Projection,  // a Linear weight: FP8 (+ scale) in FP8 checkpoints, or BF16/F16/F32
  Dense,       // always a high-precision tensor: norms, embeddings, lm_head, gate, weights_proj
  Bias,        // e_score_correction_bias: F32 (or BF16)
};

class Binder {
 public:
  Binder(const Checkpoint& ckpt, const ModelConfig& cfg) : ckpt_(ckpt), cfg_(cfg) {}

  Weight get(const std::string& name, std::vector<int64_t> shape, Kind kind) const {
    const TensorInfo* t = ckpt_.find(name);
    if (!t)
      throw Error(ErrorCode::Format, fmt::format("{}: the checkpoint has no tensor \"{}\" (expected shape [{}])",
                                                 ckpt_.dir(), name, fmt::join(shape, ", ")));
    if (t->shape != shape)
      throw Error(ErrorCode::Format, fmt::format("{}: tensor \"{}\" has shape [{}], expected [{}]", *t->file, name,
                                                 fmt::join(t->shape, ", "), fmt::join(shape, ", ")));
    const bool fp8_ok = kind == Kind::Projection && cfg_.quant.fp8;
    const bool ok = t->dtype == DType::BF16 || t->dtype == DType::F32 ||
                    (t->dtype == DType::F16 && kind != Kind::Bias) || (t->dtype == DType::F8_E4M3 && fp8_ok);
    if (!ok)
      throw Error(ErrorCode::Format,
                  fmt::format("{}: tensor \"{}\" has dtype {}, expected {}", *t->file, name, dtype_name(t->dtype),
                              kind == Kind::Projection ? (cfg_.quant.fp8 ? "F8_E4M3, BF16, F16 or F32"
                                                                         : "BF16, F16 or F32 (the config has no fp8 "
                                                                           "quantization_config)")
                              : kind == Kind::Bias ? "F32 or BF16"
                                                   : "BF16, F16 or F32"));
    Weight w;
    w.name = name;
    w.dtype = t->dtype;
    w.shape = t->shape;
    w.data = t->data;
    w.block = cfg_.quant.block_n;
    if (t->dtype == DType::F8_E4M3) {
      // HF names the scale "<weight>_scale_inv"; the value is multiplied in despite the name (spec §6).
      const std::string sname = name + "_scale_inv";
      const TensorInfo* s = ckpt_.find(sname);
      const std::vector<int64_t> sshape = {(shape[0] + w.block - 1) / w.block, (shape[1] + w.block - 1) / w.block};
      if (!s)
        throw Error(ErrorCode::Format, fmt::format("{}: FP8 weight \"{}\" has no \"{}\" (its 128x128 block scales, "
                                                   "shape [{}])", *t->file, name, sname, fmt::join(sshape, ", ")));
      if (s->shape != sshape)
        throw Error(ErrorCode::Format, fmt::format("{}: tensor \"{}\" has shape [{}], expected [{}]", *s->file, sname,
                                                   fmt::join(s->shape, ", "), fmt::join(sshape, ", ")));
      if (s->dtype != DType::F32)
        throw Error(ErrorCode::Format, fmt::format("{}: tensor \"{}\" has dtype {}, expected F32", *s->file, sname,
                                                   dtype_name(s->dtype)));
      w.scale_inv = reinterpret_cast<const float*>(s->data);
    }
    return w;
  }

  MlpWeights mlp(const std::string& prefix, int64_t inner) const {
    const int64_t D = cfg_.hidden_size;
    return {get(prefix + "gate_proj.weight", {inner, D}, Kind::Projection),
            get(prefix + "up_proj.weight", {inner, D}, Kind::Projection),
            get(prefix + "down_proj.weight", {D, inner}, Kind::Projection)};
  }

 private:
  const Checkpoint& ckpt_;
  const ModelConfig& cfg_;
};

LayerWeights bind_layer(const Binder& b, const ModelConfig& c, int64_t l) {
  const int64_t D = c.hidden_size, H = c.num_attention_heads;
  const std::string p = fmt::format("model.layers.{}.", l);
  LayerWeights lw;
  lw.input_layernorm = b.get(p + "input_layernorm.weight", {D}, Kind::Dense);
  lw.post_attention_layernorm = b.get(p + "post_attention_layernorm.weight", {D}, Kind::Dense);
  const std::string a = p + "self_attn.";
  AttentionWeights& at = lw.attn;
  const int64_t qk = c.qk_nope_head_dim + c.qk_rope_head_dim;
  if (c.q_lora_rank > 0) {
    at.q_a_proj = b.get(a + "q_a_proj.weight", {c.q_lora_rank, D}, Kind::Projection);
    at.q_a_layernorm = b.get(a + "q_a_layernorm.weight", {c.q_lora_rank}, Kind::Dense);
    at.q_b_proj = b.get(a + "q_b_proj.weight", {H * qk, c.q_lora_rank}, Kind::Projection);
  } else {
    at.q_proj = b.get(a + "q_proj.weight", {H * qk, D}, Kind::Projection);
  }
  at.kv_a_proj_with_mqa = b.get(a + "kv_a_proj_with_mqa.weight", {c.kv_lora_rank + c.qk_rope_head_dim, D}, Kind::Projection);
  at.kv_a_layernorm = b.get(a + "kv_a_layernorm.weight", {c.kv_lora_rank}, Kind::Dense);
  at.kv_b_proj = b.get(a + "kv_b_proj.weight", {H * (c.qk_nope_head_dim + c.v_head_dim), c.kv_lora_rank}, Kind::Projection);
  at.o_proj = b.get(a + "o_proj.weight", {D, H * c.v_head_dim}, Kind::Projection);
  if (c.has_indexer()) {
    const std::string ip = a + "indexer.";
    IndexerWeights& iw = lw.indexer;
    iw.wq_b = b.get(ip + "wq_b.weight", {c.index_n_heads * c.index_head_dim, c.q_lora_rank}, Kind::Projection);
    iw.wk = b.get(ip + "wk.weight", {c.index_head_dim, D}, Kind::Projection);
    iw.k_norm_weight = b.get(ip + "k_norm.weight", {c.index_head_dim}, Kind::Dense);
    iw.k_norm_bias = b.get(ip + "k_norm.bias", {c.index_head_dim}, Kind::Dense);
    iw.weights_proj = b.get(ip + "weights_proj.weight", {c.index_n_heads, D}, Kind::Dense);
  }
  lw.is_moe = c.is_moe_layer(l);
  if (lw.is_moe) {
    const std::string m = p + "mlp.";
    lw.moe.gate = b.get(m + "gate.weight", {c.n_routed_experts, D}, Kind::Dense);
    if (c.topk_method == "noaux_tc")
      lw.moe.e_score_correction_bias = b.get(m + "gate.e_score_correction_bias", {c.n_routed_experts}, Kind::Bias);
    for (int64_t e = 0; e < c.n_routed_experts; ++e)
      lw.moe.experts.push_back(b.mlp(fmt::format("{}experts.{}.", m, e), c.moe_intermediate_size));
    if (c.n_shared_experts > 0)
      lw.moe.shared = b.mlp(m + "shared_experts.", c.moe_intermediate_size * c.n_shared_experts);
  } else {
    lw.mlp = b.mlp(p + "mlp.", c.intermediate_size);
  }
  return lw;
}

}  // namespace

ModelWeights bind_weights(const Checkpoint& ckpt, const ModelConfig& c) {
  const Binder b(ckpt, c);
  const int64_t D = c.hidden_size;
  ModelWeights mw;
  mw.embed_tokens = b.get("model.embed_tokens.weight", {c.vocab_size, D}, Kind::Dense);
  mw.norm = b.get("model.norm.weight", {D}, Kind::Dense);
  mw.lm_head = c.tie_word_embeddings ? mw.embed_tokens : b.get("lm_head.weight", {c.vocab_size, D}, Kind::Dense);
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) mw.layers.push_back(bind_layer(b, c, l));
  const std::string mp = fmt::format("model.layers.{}.", c.num_hidden_layers);
  if (c.num_nextn_predict_layers > 0 && ckpt.find(mp + "eh_proj.weight")) {
    MtpWeights m;
    m.enorm = b.get(mp + "enorm.weight", {D}, Kind::Dense);
    m.hnorm = b.get(mp + "hnorm.weight", {D}, Kind::Dense);
    m.eh_proj = b.get(mp + "eh_proj.weight", {D, 2 * D}, Kind::Projection);
    m.layer = bind_layer(b, c, c.num_hidden_layers);
    m.shared_head_norm = b.get(mp + "shared_head.norm.weight", {D}, Kind::Dense);
    mw.mtp = std::move(m);
  }
  return mw;
}

}  // namespace dsinfer
