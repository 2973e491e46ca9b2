// The typed model configuration parsed from a Hugging Face config.json (DeepSeek-V3 family).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace dsinfer {

enum class ModelVariant {
  V32,  // DeepSeek-V3.2 / V3.2-Exp: MLA + DSA lightning indexer (index_* keys present)
  V3,   // DeepSeek-V3 / R1 / V3.1: plain MLA, no indexer
};

struct RopeScaling {        // YaRN; spec §2.3. When config.json has no rope_scaling, factor = 1 (plain RoPE).
  double factor = 1.0;
  int64_t original_max_position_embeddings = 4096;
  double beta_fast = 32.0;
  double beta_slow = 1.0;
  double mscale = 1.0;
  double mscale_all_dim = 0.0;
  bool present = false;
};

struct QuantizationConfig {  // config.json "quantization_config"
  bool fp8 = false;          // quant_method == "fp8"
  bool scale_ue8m0 = false;  // scale_fmt == "ue8m0": activation scales rounded up to powers of two
  int64_t block_n = 128, block_k = 128;  // weight_block_size
};

struct ModelConfig {
  ModelVariant variant = ModelVariant::V32;
  std::string model_type;  // "deepseek_v32", "deepseek_v3"
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;       // dense FFN inner
  int64_t moe_intermediate_size = 0;   // routed and shared expert inner (per shared expert)
  int64_t num_hidden_layers = 0;
  int64_t first_k_dense_replace = 0;
  int64_t moe_layer_freq = 1;
  int64_t num_nextn_predict_layers = 0;  // MTP modules stored after the decoder layers (spec §7); dsinfer uses the first
  int64_t num_attention_heads = 0;
  int64_t n_routed_experts = 0;
  int64_t n_shared_experts = 0;
  int64_t num_experts_per_tok = 0;
  int64_t n_group = 1;
  int64_t topk_group = 1;
  std::string scoring_func = "sigmoid";
  std::string topk_method = "noaux_tc";
  bool norm_topk_prob = true;
  double routed_scaling_factor = 1.0;
  int64_t q_lora_rank = 0;  // 0 = no q LoRA (V2-Lite style): q_proj used directly
  int64_t kv_lora_rank = 0;
  int64_t qk_nope_head_dim = 0;
  int64_t qk_rope_head_dim = 0;
  int64_t v_head_dim = 0;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  int64_t max_position_embeddings = 0;
  double rms_norm_eps = 1e-6;
  // Indexer (V32 only; zero otherwise).
  int64_t index_n_heads = 0;
  int64_t index_head_dim = 0;
  int64_t index_topk = 0;
  int64_t bos_token_id = 0;
  std::vector<int64_t> eos_token_ids;
  bool tie_word_embeddings = false;
  QuantizationConfig quant;

  int64_t qk_head_dim() const { return qk_nope_head_dim + qk_rope_head_dim; }
  bool has_indexer() const { return variant == ModelVariant::V32; }
  bool is_moe_layer(int64_t layer) const {
    return n_routed_experts > 0 && layer >= first_k_dense_replace && layer % moe_layer_freq == 0;
  }
};

// Upper bounds on config.json values (docs/errors.md): every size and count, and max_position_embeddings.
inline constexpr int64_t kMaxConfigDim = int64_t(1) << 20;
inline constexpr int64_t kMaxConfigPositions = int64_t(1) << 30;

// Parses config.json. Throws Error(Format) naming the file and key for missing required keys, wrong JSON types
// or inconsistent values; Error(Unsupported) for architectures outside the DeepSeek-V3 family.
ModelConfig parse_hf_config_file(const std::string& path);
ModelConfig parse_hf_config_text(const std::string& json_text, const std::string& source_name);

}  // namespace dsinfer
