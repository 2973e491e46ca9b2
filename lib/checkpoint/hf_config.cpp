#include "checkpoint/hf_config.hpp"

#include <fmt/format.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "dsinfer/error.hpp"
#include "util/json_input.hpp"

namespace dsinfer {

namespace {

using json = nlohmann::json;

class Reader {
 public:
  Reader(const json& j, const std::string& source) : j_(j), source_(source) {}

  [[noreturn]] void fail(const std::string& msg) const { throw Error(ErrorCode::Format, fmt::format("{}: {}", source_, msg)); }

  bool has(const char* key) const { return j_.contains(key) && !j_.at(key).is_null(); }

  int64_t integer(const char* key) const {
    if (!j_.contains(key)) fail(fmt::format("missing required key \"{}\"", key));
    return as_int(j_.at(key), key);
  }
  int64_t integer(const char* key, int64_t def) const { return has(key) ? as_int(j_.at(key), key) : def; }
  double number(const char* key, double def) const {
    if (!has(key)) return def;
    const json& v = j_.at(key);
    if (!v.is_number()) fail(fmt::format("key \"{}\" must be a number, found {}", key, json_excerpt(v)));
    return v.get<double>();
  }
  bool boolean(const char* key, bool def) const {
    if (!has(key)) return def;
    const json& v = j_.at(key);
    if (!v.is_boolean()) fail(fmt::format("key \"{}\" must be true or false, found {}", key, json_excerpt(v)));
    return v.get<bool>();
  }
  std::string string(const char* key, const std::string& def) const {
    if (!has(key)) return def;
    const json& v = j_.at(key);
    if (!v.is_string()) fail(fmt::format("key \"{}\" must be a string, found {}", key, json_excerpt(v)));
    return v.get<std::string>();
  }

 private:
  int64_t as_int(const json& v, const char* key) const {
    if (!v.is_number_integer()) fail(fmt::format("key \"{}\" must be an integer, found {}", key, json_excerpt(v)));
    // Above INT64_MAX nlohmann keeps an unsigned value that get<int64_t>() would wrap to a negative one.
    if (v.is_number_unsigned() && v.get<uint64_t>() > uint64_t(INT64_MAX))
      fail(fmt::format("key \"{}\" is out of range, found {}", key, json_excerpt(v)));
    return v.get<int64_t>();
  }
  const json& j_;
  const std::string& source_;
};

}  // namespace

ModelConfig parse_hf_config_text(const std::string& text, const std::string& source) {
  json j;
  try {
    j = parse_json_input(text);
  } catch (const JsonInputError& e) {
    throw Error(ErrorCode::Format, fmt::format("{}: not valid JSON: {}", source, e.what()));
  }
  if (!j.is_object()) throw Error(ErrorCode::Format, fmt::format("{}: the top level must be a JSON object", source));
  Reader r(j, source);
  ModelConfig c;
  c.model_type = r.string("model_type", "");
  static const char* kFamily[] = {"deepseek_v32", "deepseek_v3", "deepseek_v2"};
  bool known = c.model_type.empty();
  for (const char* t : kFamily) known |= c.model_type == t;
  if (!known)
    throw Error(ErrorCode::Unsupported,
                fmt::format("{}: model_type \"{}\" is not in the DeepSeek-V3 family (deepseek_v32, deepseek_v3, "
                            "deepseek_v2)", source, c.model_type));
  const bool indexer_keys = r.has("index_n_heads") || r.has("index_head_dim") || r.has("index_topk");
  c.variant = indexer_keys || c.model_type == "deepseek_v32" ? ModelVariant::V32 : ModelVariant::V3;
  if (c.model_type.empty()) c.model_type = c.variant == ModelVariant::V32 ? "deepseek_v32" : "deepseek_v3";

  c.vocab_size = r.integer("vocab_size");
  c.hidden_size = r.integer("hidden_size");
  c.intermediate_size = r.integer("intermediate_size");
  c.num_hidden_layers = r.integer("num_hidden_layers");
  c.num_attention_heads = r.integer("num_attention_heads");
  c.kv_lora_rank = r.integer("kv_lora_rank");
  c.qk_nope_head_dim = r.integer("qk_nope_head_dim");
  c.qk_rope_head_dim = r.integer("qk_rope_head_dim");
  c.v_head_dim = r.integer("v_head_dim");
  c.q_lora_rank = r.integer("q_lora_rank", 0);  // null in V2-Lite-style configs
  c.n_routed_experts = r.integer("n_routed_experts", 0);
  c.first_k_dense_replace = r.integer("first_k_dense_replace", 0);
  c.moe_layer_freq = r.integer("moe_layer_freq", 1);
  c.num_nextn_predict_layers = r.integer("num_nextn_predict_layers", 0);
  if (c.n_routed_experts > 0) {
    c.moe_intermediate_size = r.integer("moe_intermediate_size");
    c.num_experts_per_tok = r.integer("num_experts_per_tok");
    c.n_shared_experts = r.integer("n_shared_experts", 0);
  }
  c.n_group = r.integer("n_group", 1);
  c.topk_group = r.integer("topk_group", 1);
  c.scoring_func = r.string("scoring_func", "softmax");
  c.topk_method = r.string("topk_method", "greedy");
  c.norm_topk_prob = r.boolean("norm_topk_prob", false);
  c.routed_scaling_factor = r.number("routed_scaling_factor", 1.0);
  c.rope_theta = r.number("rope_theta", 10000.0);
  c.max_position_embeddings = r.integer("max_position_embeddings", 4096);
  c.rms_norm_eps = r.number("rms_norm_eps", 1e-6);
  c.tie_word_embeddings = r.boolean("tie_word_embeddings", false);
  c.bos_token_id = r.integer("bos_token_id", 0);
  if (r.has("eos_token_id")) {
    const json& e = j.at("eos_token_id");
    auto eos_id = [&](const json& v) {
      if (!v.is_number_integer() || (v.is_number_unsigned() && v.get<uint64_t>() > uint64_t(INT64_MAX)))
        r.fail(fmt::format("key \"eos_token_id\" must hold token ids, found {}", json_excerpt(e)));
      return v.get<int64_t>();
    };
    if (e.is_number_integer()) c.eos_token_ids = {eos_id(e)};
    else if (e.is_array()) {
      for (const auto& v : e) c.eos_token_ids.push_back(eos_id(v));
    } else {
      r.fail(fmt::format("key \"eos_token_id\" must be an integer or a list, found {}", json_excerpt(e)));
    }
  }
  if (c.variant == ModelVariant::V32) {
    c.index_n_heads = r.integer("index_n_heads");
    c.index_head_dim = r.integer("index_head_dim");
    c.index_topk = r.integer("index_topk");
  }

  // RoPE scaling: "rope_scaling" as DeepSeek's config.json writes it, or "rope_parameters" as transformers 5 does.
  const char* rope_key = r.has("rope_scaling") ? "rope_scaling" : r.has("rope_parameters") ? "rope_parameters" : nullptr;
  if (rope_key) {
    const json& rs = j.at(rope_key);
    if (!rs.is_object()) r.fail(fmt::format("key \"{}\" must be an object", rope_key));
    const std::string where = fmt::format("{} (\"{}\")", source, rope_key);
    Reader rr(rs, where);
    const std::string type = rr.string("type", rr.string("rope_type", "default"));
    if (type == "yarn") {
      c.rope_scaling.present = true;
      c.rope_scaling.factor = rr.number("factor", 1.0);
      c.rope_scaling.original_max_position_embeddings = rr.integer("original_max_position_embeddings", 4096);
      c.rope_scaling.beta_fast = rr.number("beta_fast", 32.0);
      c.rope_scaling.beta_slow = rr.number("beta_slow", 1.0);
      c.rope_scaling.mscale = rr.number("mscale", 1.0);
      c.rope_scaling.mscale_all_dim = rr.number("mscale_all_dim", 0.0);
      if (rs.contains("rope_theta")) c.rope_theta = rr.number("rope_theta", c.rope_theta);
    } else if (type == "default") {
      if (rs.contains("rope_theta")) c.rope_theta = rr.number("rope_theta", c.rope_theta);
    } else {
      throw Error(ErrorCode::Unsupported, fmt::format("{}: rope scaling type \"{}\" is not supported (yarn only)", where, type));
    }
  }

  if (r.has("quantization_config")) {
    const json& q = j.at("quantization_config");
    if (!q.is_object()) r.fail("key \"quantization_config\" must be an object");
    const std::string where = fmt::format("{} (\"quantization_config\")", source);
    Reader qr(q, where);
    const std::string method = qr.string("quant_method", "");
    if (method != "fp8")
      throw Error(ErrorCode::Unsupported, fmt::format("{}: quant_method \"{}\" is not supported (fp8 only)", where, method));
    c.quant.fp8 = true;
    c.quant.scale_ue8m0 = qr.string("scale_fmt", "") == "ue8m0";
    if (q.contains("weight_block_size")) {
      const json& b = q.at("weight_block_size");
      if (!b.is_array() || b.size() != 2 || !b[0].is_number_integer() || !b[1].is_number_integer())
        qr.fail("\"weight_block_size\" must be two integers");
      c.quant.block_n = b[0].get<int64_t>();
      c.quant.block_k = b[1].get<int64_t>();
      if (c.quant.block_n != 128 || c.quant.block_k != 128)
        throw Error(ErrorCode::Unsupported, fmt::format("{}: weight_block_size [{}, {}] is not supported ([128, 128] only)",
                                                        where, c.quant.block_n, c.quant.block_k));
    }
  }

  // Consistency: what the forward pass relies on.
  auto positive = [&](const char* key, int64_t v) {
    if (v <= 0) r.fail(fmt::format("key \"{}\" must be positive, found {}", key, v));
  };
  positive("vocab_size", c.vocab_size);
  positive("hidden_size", c.hidden_size);
  positive("intermediate_size", c.intermediate_size);
  positive("num_hidden_layers", c.num_hidden_layers);
  positive("num_attention_heads", c.num_attention_heads);
  positive("kv_lora_rank", c.kv_lora_rank);
  positive("qk_nope_head_dim", c.qk_nope_head_dim);
  positive("qk_rope_head_dim", c.qk_rope_head_dim);
  positive("v_head_dim", c.v_head_dim);
  positive("moe_layer_freq", c.moe_layer_freq);
  if (c.q_lora_rank < 0) r.fail("key \"q_lora_rank\" must not be negative");
  // Bounds before any shape is computed from these values: a product of three sizes stays far below 2^63, so
  // shape arithmetic cannot overflow (the largest DeepSeek value, vocab_size 129280, is well inside).
  auto at_most = [&](const char* key, int64_t v, int64_t limit) {
    if (v > limit) r.fail(fmt::format("key \"{}\" is {}, above the limit {} (docs/errors.md)", key, v, limit));
  };
  for (const auto& [key, v] : {std::pair<const char*, int64_t>{"vocab_size", c.vocab_size}, {"hidden_size", c.hidden_size},
                               {"intermediate_size", c.intermediate_size}, {"num_hidden_layers", c.num_hidden_layers},
                               {"num_attention_heads", c.num_attention_heads}, {"kv_lora_rank", c.kv_lora_rank},
                               {"qk_nope_head_dim", c.qk_nope_head_dim}, {"qk_rope_head_dim", c.qk_rope_head_dim},
                               {"v_head_dim", c.v_head_dim}, {"q_lora_rank", c.q_lora_rank},
                               {"n_routed_experts", c.n_routed_experts}, {"n_shared_experts", c.n_shared_experts},
                               {"moe_intermediate_size", c.moe_intermediate_size},
                               {"num_experts_per_tok", c.num_experts_per_tok}, {"n_group", c.n_group},
                               {"topk_group", c.topk_group}, {"moe_layer_freq", c.moe_layer_freq},
                               {"first_k_dense_replace", c.first_k_dense_replace}, {"index_n_heads", c.index_n_heads},
                               {"index_head_dim", c.index_head_dim}, {"index_topk", c.index_topk}})
    at_most(key, v, kMaxConfigDim);
  if (c.n_shared_experts < 0) r.fail("key \"n_shared_experts\" must not be negative");
  if (c.n_routed_experts < 0) r.fail("key \"n_routed_experts\" must not be negative");
  if (c.first_k_dense_replace < 0) r.fail("key \"first_k_dense_replace\" must not be negative");
  if (c.num_nextn_predict_layers < 0 || c.num_nextn_predict_layers > 64)
    r.fail("key \"num_nextn_predict_layers\" must be 0 to 64");
  positive("max_position_embeddings", c.max_position_embeddings);
  at_most("max_position_embeddings", c.max_position_embeddings, kMaxConfigPositions);
  for (int64_t id : c.eos_token_ids)
    if (id < 0 || id >= c.vocab_size) r.fail(fmt::format("eos_token_id {} is outside the vocabulary [0, {})", id, c.vocab_size));
  if (c.bos_token_id < 0 || c.bos_token_id >= c.vocab_size)
    r.fail(fmt::format("bos_token_id {} is outside the vocabulary [0, {})", c.bos_token_id, c.vocab_size));
  // Values that load but make every logit NaN or infinite.
  auto in_range = [&](const char* key, double v, double lo, double hi, bool lo_open) {
    if (!std::isfinite(v) || (lo_open ? v <= lo : v < lo) || v > hi)
      r.fail(fmt::format("key \"{}\" is {}, outside {}{}, {}]", key, v, lo_open ? "(" : "[", lo, hi));
  };
  in_range("rope_theta", c.rope_theta, 1.0, 1e12, true);
  in_range("rms_norm_eps", c.rms_norm_eps, 0.0, 1.0, true);
  in_range("routed_scaling_factor", c.routed_scaling_factor, 0.0, 1e4, true);
  if (c.rope_scaling.present) {
    in_range("rope_scaling.factor", c.rope_scaling.factor, 0.0, 1e4, true);
    in_range("rope_scaling.beta_fast", c.rope_scaling.beta_fast, -1e6, 1e6, false);
    in_range("rope_scaling.beta_slow", c.rope_scaling.beta_slow, -1e6, 1e6, false);
    in_range("rope_scaling.mscale", c.rope_scaling.mscale, -1e6, 1e6, false);
    in_range("rope_scaling.mscale_all_dim", c.rope_scaling.mscale_all_dim, -1e6, 1e6, false);
    positive("rope_scaling.original_max_position_embeddings", c.rope_scaling.original_max_position_embeddings);
    at_most("rope_scaling.original_max_position_embeddings", c.rope_scaling.original_max_position_embeddings,
            kMaxConfigPositions);
  }
  if (c.qk_rope_head_dim % 2) r.fail(fmt::format("key \"qk_rope_head_dim\" must be even, found {}", c.qk_rope_head_dim));
  if (c.n_routed_experts > 0) {
    positive("moe_intermediate_size", c.moe_intermediate_size);
    positive("num_experts_per_tok", c.num_experts_per_tok);
    positive("n_group", c.n_group);
    if (c.n_routed_experts % c.n_group)
      r.fail(fmt::format("n_routed_experts ({}) is not a multiple of n_group ({})", c.n_routed_experts, c.n_group));
    if (c.topk_group < 1 || c.topk_group > c.n_group)
      r.fail(fmt::format("topk_group ({}) must be in [1, n_group = {}]", c.topk_group, c.n_group));
    if (c.num_experts_per_tok > c.n_routed_experts)
      r.fail(fmt::format("num_experts_per_tok ({}) exceeds n_routed_experts ({})", c.num_experts_per_tok, c.n_routed_experts));
    if (c.num_experts_per_tok > c.topk_group * (c.n_routed_experts / c.n_group))
      r.fail(fmt::format("num_experts_per_tok ({}) exceeds the experts in topk_group groups", c.num_experts_per_tok));
    if (c.scoring_func != "sigmoid" && c.scoring_func != "softmax")
      throw Error(ErrorCode::Unsupported, fmt::format("{}: scoring_func \"{}\" is not supported", source, c.scoring_func));
  }
  if (c.variant == ModelVariant::V32) {
    positive("index_n_heads", c.index_n_heads);
    positive("index_head_dim", c.index_head_dim);
    positive("index_topk", c.index_topk);
    if (c.index_head_dim & (c.index_head_dim - 1))
      r.fail(fmt::format("index_head_dim ({}) must be a power of two (the indexer's Hadamard transform)", c.index_head_dim));
    if (c.index_head_dim < c.qk_rope_head_dim)
      r.fail(fmt::format("index_head_dim ({}) is smaller than qk_rope_head_dim ({})", c.index_head_dim, c.qk_rope_head_dim));
    if (c.q_lora_rank == 0) r.fail("the V3.2 indexer needs q_lora_rank (its queries read the q LoRA output)");
  }
  return c;
}

ModelConfig parse_hf_config_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error(ErrorCode::Io, fmt::format("cannot open {}", path));
  std::ostringstream ss;
  ss << f.rdbuf();
  return parse_hf_config_text(ss.str(), path);
}

}  // namespace dsinfer
