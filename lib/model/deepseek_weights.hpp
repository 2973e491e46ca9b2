// The DeepSeek-V3-family weights of a checkpoint, bound by name and validated against the config before any compute.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "checkpoint/hf_config.hpp"
#include "checkpoint/safetensors_reader.hpp"
#include "backend/weight.hpp"

namespace dsinfer {

struct AttentionWeights {
  Weight q_a_proj;            // [q_lora_rank, hidden]                      (absent when q_lora_rank == 0)
  Weight q_a_layernorm;       // [q_lora_rank]                              (absent when q_lora_rank == 0)
  Weight q_b_proj;            // [heads*(nope+rope), q_lora_rank]           (absent when q_lora_rank == 0)
  Weight q_proj;              // [heads*(nope+rope), hidden]                (only when q_lora_rank == 0)
  Weight kv_a_proj_with_mqa;  // [kv_lora_rank + rope, hidden]
  Weight kv_a_layernorm;      // [kv_lora_rank]
  Weight kv_b_proj;           // [heads*(nope+v), kv_lora_rank]
  Weight o_proj;              // [hidden, heads*v]
};

struct IndexerWeights {       // V3.2 only
  Weight wq_b;                // [index_heads*index_head_dim, q_lora_rank]
  Weight wk;                  // [index_head_dim, hidden]
  Weight k_norm_weight;       // [index_head_dim]  LayerNorm
  Weight k_norm_bias;         // [index_head_dim]
  Weight weights_proj;        // [index_heads, hidden]
};

struct MlpWeights {           // SwiGLU: down(silu(gate·x) ⊙ up·x)
  Weight gate_proj;           // [inner, hidden]
  Weight up_proj;             // [inner, hidden]
  Weight down_proj;           // [hidden, inner]
};

struct MoeWeights {
  Weight gate;                       // [n_routed_experts, hidden]
  Weight e_score_correction_bias;    // [n_routed_experts] (noaux_tc only)
  std::vector<MlpWeights> experts;   // n_routed_experts, inner = moe_intermediate_size
  MlpWeights shared;                 // inner = moe_intermediate_size * n_shared_experts (absent if 0 shared)
};

struct LayerWeights {
  Weight input_layernorm;            // [hidden]
  Weight post_attention_layernorm;   // [hidden]
  AttentionWeights attn;
  IndexerWeights indexer;            // present iff config.has_indexer()
  bool is_moe = false;
  MlpWeights mlp;                    // dense layers
  MoeWeights moe;                    // MoE layers
};

// The multi-token-prediction module (spec §7), stored as layer num_hidden_layers. Its embedding and output head are
// the main model's (the checkpoint's copies under its prefix are not read).
struct MtpWeights {
  Weight enorm;                      // [hidden] RMSNorm of the next token's embedding
  Weight hnorm;                      // [hidden] RMSNorm of the main model's final hidden state
  Weight eh_proj;                    // [hidden, 2*hidden] over concat(enorm(e), hnorm(h)), embedding half first
  LayerWeights layer;                // a full decoder layer (MoE when is_moe_layer(num_hidden_layers))
  Weight shared_head_norm;           // [hidden] before the shared lm_head
};

struct ModelWeights {
  Weight embed_tokens;               // [vocab, hidden]
  Weight norm;                       // [hidden]
  Weight lm_head;                    // [vocab, hidden] (embed_tokens again when tie_word_embeddings)
  std::vector<LayerWeights> layers;  // num_hidden_layers
  std::optional<MtpWeights> mtp;     // when the config has num_nextn_predict_layers > 0 and the checkpoint stores it
};

// Binds and checks every tensor the config implies: present, shape, dtype, and for F8_E4M3 weights the sibling
// `<name>_scale_inv` with shape [ceil(out/block), ceil(in/block)] and dtype F32. Throws Error(Format) naming the
// tensor, the file, what was expected and what was found. Tensors the config does not imply are ignored. The MTP
// module is bound when the config announces one and the checkpoint has its eh_proj (converted checkpoints often
// drop layer num_hidden_layers: they load without it); once its eh_proj is there, every tensor of it must be.
ModelWeights bind_weights(const Checkpoint& ckpt, const ModelConfig& cfg);

}  // namespace dsinfer
