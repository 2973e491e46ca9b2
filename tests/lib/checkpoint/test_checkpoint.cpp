// Checkpoint loading: config.json parsing, safetensors validation, weight binding — and every bad input the
// issue lists, each made by corrupting a copy of the repo's small checkpoint and checked for a precise error.
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <random>

#include "checkpoint/hf_config.hpp"
#include "checkpoint/safetensors_reader.hpp"
#include "dsinfer/error.hpp"
#include "dsinfer/model.hpp"
#include "model/deepseek_weights.hpp"

using namespace dsinfer;
using json = nlohmann::json;
namespace fs = std::filesystem;

namespace {

const fs::path kModel = fs::path(DSINFER_MODELS_DIR) / "v32-tiny";
const std::string kShard1 = "model-00001-of-00002.safetensors";
const std::string kShard2 = "model-00002-of-00002.safetensors";

// A private copy of the small checkpoint in a temporary directory, removed afterwards.
struct TempCheckpoint {
  fs::path dir;
  TempCheckpoint() {
    REQUIRE(fs::exists(kModel / "config.json"));
    std::random_device rd;
    dir = fs::temp_directory_path() / ("dsinfer-ckpt-" + std::to_string(rd()));
    fs::create_directories(dir);
    for (const auto& e : fs::directory_iterator(kModel)) fs::copy_file(e.path(), dir / e.path().filename());
  }
  ~TempCheckpoint() { fs::remove_all(dir); }
  std::string path() const { return dir.string(); }

  std::string read(const std::string& name) const {
    std::ifstream f(dir / name, std::ios::binary);
    return {std::istreambuf_iterator<char>(f), {}};
  }
  void write(const std::string& name, const std::string& bytes) const {
    std::ofstream f(dir / name, std::ios::binary | std::ios::trunc);
    f.write(bytes.data(), std::streamsize(bytes.size()));
  }
  // Rewrites a shard's JSON header (tensor data kept byte for byte).
  void edit_header(const std::string& shard, const std::function<void(json&)>& fn) const {
    const std::string bytes = read(shard);
    uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = (n << 8) | uint8_t(bytes[size_t(i)]);
    json h = json::parse(bytes.substr(8, n));
    fn(h);
    std::string hs = h.dump();
    std::string out(8, '\0');
    for (int i = 0; i < 8; ++i) out[size_t(i)] = char((hs.size() >> (8 * i)) & 0xff);
    write(shard, out + hs + bytes.substr(8 + n));
  }
  void edit_config(const std::function<void(json&)>& fn) const {
    json c = json::parse(read("config.json"));
    fn(c);
    write("config.json", c.dump(2));
  }
  // The shard that holds `tensor`.
  std::string shard_of(const std::string& tensor) const {
    return json::parse(read("model.safetensors.index.json")).at("weight_map").at(tensor);
  }
};

// Loads the checkpoint as Model::load does up to binding; returns the error.
Error load_error(const TempCheckpoint& t) {
  try {
    Model::load(t.path(), ModelLoadParams{.n_threads = 1});
  } catch (const Error& e) {
    return e;
  }
  FAIL("the checkpoint loaded without an error");
  return Error(ErrorCode::Ok, "");
}

const std::string kW = "model.layers.1.self_attn.kv_b_proj.weight";  // an FP8 weight with a scale

}  // namespace

TEST_CASE("the small checkpoint loads: shards, index, dtypes, values", "[checkpoint]") {
  auto ckpt = Checkpoint::open(kModel.string());
  const TensorInfo* w = ckpt->find(kW);
  REQUIRE(w);
  CHECK(w->dtype == DType::F8_E4M3);
  CHECK(w->shape == std::vector<int64_t>{512, 128});
  const TensorInfo* s = ckpt->find(kW + "_scale_inv");
  REQUIRE(s);
  CHECK(s->dtype == DType::F32);
  CHECK(s->shape == std::vector<int64_t>{4, 1});
  CHECK(ckpt->find("model.layers.1.mlp.gate.e_score_correction_bias")->dtype == DType::F32);
  CHECK(ckpt->find("model.embed_tokens.weight")->dtype == DType::BF16);
  // Block scales of an FP8 weight with a partial edge block: kv_a out = 128 + 32 = 160 rows -> 2 row blocks.
  CHECK(ckpt->find("model.layers.0.self_attn.kv_a_proj_with_mqa.weight_scale_inv")->shape == std::vector<int64_t>{2, 2});
  // Norm weights were generated in [0.8, 1.2].
  const TensorInfo* n = ckpt->find("model.norm.weight");
  const auto* bf = reinterpret_cast<const uint16_t*>(n->data);
  for (int64_t i = 0; i < n->numel(); ++i) {
    REQUIRE(bf16_to_f32(bf[i]) >= 0.79f);
    REQUIRE(bf16_to_f32(bf[i]) <= 1.21f);
  }
  const ModelConfig cfg = parse_hf_config_file((kModel / "config.json").string());
  const ModelWeights mw = bind_weights(*ckpt, cfg);
  CHECK(mw.layers.size() == 4);
  CHECK_FALSE(mw.layers[0].is_moe);
  CHECK(mw.layers[1].moe.experts.size() == 16);
  CHECK(mw.layers[1].indexer.wq_b.scale_inv != nullptr);
}

TEST_CASE("a single model.safetensors without an index also loads", "[checkpoint]") {
  TempCheckpoint t;
  // Merge: use shard 1 alone as model.safetensors after dropping the index; binding then misses shard-2 tensors,
  // which proves the single-file path reads the file and the binder names what is missing.
  fs::remove(t.dir / "model.safetensors.index.json");
  fs::rename(t.dir / kShard1, t.dir / "model.safetensors");
  fs::remove(t.dir / kShard2);
  auto ckpt = Checkpoint::open(t.path());
  CHECK(!ckpt->tensors().empty());
  const Error e = load_error(t);
  CHECK(e.code() == ErrorCode::Format);
  CHECK_THAT(e.what(), Catch::Contains("has no tensor"));
}

TEST_CASE("missing shard", "[checkpoint][errors]") {
  TempCheckpoint t;
  fs::remove(t.dir / kShard2);
  const Error e = load_error(t);
  CHECK(e.code() == ErrorCode::Io);
  CHECK_THAT(e.what(), Catch::Contains("missing shard") && Catch::Contains(kShard2));
}

TEST_CASE("truncated shard", "[checkpoint][errors]") {
  TempCheckpoint t;
  const std::string b = t.read(kShard1);
  t.write(kShard1, b.substr(0, b.size() - 1000));
  const Error e = load_error(t);
  CHECK(e.code() == ErrorCode::Format);
  CHECK_THAT(e.what(), Catch::Contains(kShard1) && Catch::Contains("past the end of the file"));
  t.write(kShard1, b.substr(0, 5));
  CHECK_THAT(load_error(t).what(), Catch::Contains("truncated"));
  t.write(kShard1, b.substr(0, 100));  // header cut in the middle
  CHECK_THAT(load_error(t).what(), Catch::Contains("truncated or corrupt"));
}

TEST_CASE("header offsets past the end of the file", "[checkpoint][errors]") {
  TempCheckpoint t;
  const std::string shard = t.shard_of(kW);
  t.edit_header(shard, [](json& h) { h[kW]["data_offsets"][1] = h[kW]["data_offsets"][1].get<uint64_t>() + (1u << 30); });
  const Error e = load_error(t);
  CHECK(e.code() == ErrorCode::Format);
  CHECK_THAT(e.what(), Catch::Contains(kW) && Catch::Contains("past the end of the file"));
}

TEST_CASE("overlapping tensors", "[checkpoint][errors]") {
  TempCheckpoint t;
  const std::string shard = t.shard_of(kW);
  // Point the scale's bytes into the middle of the weight's range (same length, so only the overlap is wrong).
  t.edit_header(shard, [](json& h) {
    const uint64_t b = h[kW]["data_offsets"][0].get<uint64_t>() + 8;
    const auto& s = h[kW + "_scale_inv"]["data_offsets"];
    const uint64_t len = s[1].get<uint64_t>() - s[0].get<uint64_t>();
    h[kW + "_scale_inv"]["data_offsets"] = {b, b + len};
  });
  const Error e = load_error(t);
  CHECK(e.code() == ErrorCode::Format);
  CHECK_THAT(e.what(), Catch::Contains("overlap") && Catch::Contains(kW));
}

TEST_CASE("shape and byte range disagree; malformed header; unknown dtype", "[checkpoint][errors]") {
  TempCheckpoint t;
  const std::string shard = t.shard_of(kW);
  t.edit_header(shard, [](json& h) { h[kW]["shape"] = {512, 64}; });
  CHECK_THAT(load_error(t).what(), Catch::Contains(kW) && Catch::Contains("needs 32768 bytes"));
  TempCheckpoint t2;
  t2.edit_header(shard, [](json& h) { h[kW]["dtype"] = "F8_E5M2"; });
  const Error e2 = load_error(t2);
  CHECK(e2.code() == ErrorCode::Unsupported);
  CHECK_THAT(e2.what(), Catch::Contains("F8_E5M2"));
  TempCheckpoint t3;
  std::string b = t3.read(shard);
  b[9] = '!';  // break the JSON right after its opening brace
  t3.write(shard, b);
  CHECK_THAT(load_error(t3).what(), Catch::Contains("not valid JSON"));
}

TEST_CASE("wrong shape", "[checkpoint][errors]") {
  TempCheckpoint t;
  // [512, 128] -> [128, 512]: the same bytes, so the file is valid; the model's expectation is not met.
  t.edit_header(t.shard_of(kW), [](json& h) { h[kW]["shape"] = {128, 512}; });
  const Error e = load_error(t);
  CHECK(e.code() == ErrorCode::Format);
  CHECK_THAT(e.what(), Catch::Contains(kW) && Catch::Contains("has shape [128, 512], expected [512, 128]"));
}

TEST_CASE("wrong dtype", "[checkpoint][errors]") {
  TempCheckpoint t;
  const std::string bias = "model.layers.2.mlp.gate.e_score_correction_bias";
  t.edit_header(t.shard_of(bias), [&](json& h) { h[bias]["dtype"] = "I32"; });  // same 4 bytes per element
  const Error e = load_error(t);
  CHECK(e.code() == ErrorCode::Format);
  CHECK_THAT(e.what(), Catch::Contains(bias) && Catch::Contains("has dtype I32, expected F32 or BF16"));
}

TEST_CASE("FP8 weight without its scale", "[checkpoint][errors]") {
  TempCheckpoint t;
  const std::string scale = kW + "_scale_inv";
  t.edit_header(t.shard_of(scale), [&](json& h) { h.erase(scale); });
  json idx = json::parse(t.read("model.safetensors.index.json"));
  idx["weight_map"].erase(scale);
  t.write("model.safetensors.index.json", idx.dump());
  const Error e = load_error(t);
  CHECK(e.code() == ErrorCode::Format);
  CHECK_THAT(e.what(), Catch::Contains("FP8 weight \"" + kW + "\" has no \"" + scale + "\""));
}

TEST_CASE("tensor listed in the index but absent from its shard", "[checkpoint][errors]") {
  TempCheckpoint t;
  t.edit_header(t.shard_of(kW), [](json& h) { h.erase(kW); });
  const Error e = load_error(t);
  CHECK(e.code() == ErrorCode::Format);
  CHECK_THAT(e.what(), Catch::Contains(kW) && Catch::Contains("not in the shard"));
}

TEST_CASE("missing config key, bad config values", "[checkpoint][config][errors]") {
  TempCheckpoint t;
  t.edit_config([](json& c) { c.erase("kv_lora_rank"); });
  Error e = load_error(t);
  CHECK(e.code() == ErrorCode::Format);
  CHECK_THAT(e.what(), Catch::Contains("config.json") && Catch::Contains("missing required key \"kv_lora_rank\""));
  t.edit_config([](json& c) { c["kv_lora_rank"] = "128"; });
  CHECK_THAT(load_error(t).what(), Catch::Contains("\"kv_lora_rank\" must be an integer"));
  t.edit_config([](json& c) { c["kv_lora_rank"] = 128; c["topk_group"] = 9; });
  CHECK_THAT(load_error(t).what(), Catch::Contains("topk_group (9)"));
  t.edit_config([](json& c) { c["topk_group"] = 2; c["model_type"] = "llama"; });
  CHECK(load_error(t).code() == ErrorCode::Unsupported);
  t.write("config.json", "{ not json");
  CHECK_THAT(load_error(t).what(), Catch::Contains("not valid JSON"));
  fs::remove(t.dir / "config.json");
  CHECK(load_error(t).code() == ErrorCode::Io);
}

TEST_CASE("the 671B DeepSeek-V3.2 config.json parses to the spec's values; without index_* keys it is V3",
          "[checkpoint][config]") {
  // The keys and values of DeepSeek-V3.2's config.json as listed in ../shared/spec/dsv32-model.md §1.
  json c = {
      {"architectures", {"DeepseekV32ForCausalLM"}}, {"model_type", "deepseek_v32"}, {"vocab_size", 129280},
      {"hidden_size", 7168}, {"intermediate_size", 18432}, {"moe_intermediate_size", 2048},
      {"num_hidden_layers", 61}, {"first_k_dense_replace", 3}, {"moe_layer_freq", 1},
      {"num_attention_heads", 128}, {"num_key_value_heads", 128}, {"n_routed_experts", 256},
      {"n_shared_experts", 1}, {"num_experts_per_tok", 8}, {"n_group", 8}, {"topk_group", 4},
      {"scoring_func", "sigmoid"}, {"topk_method", "noaux_tc"}, {"norm_topk_prob", true},
      {"routed_scaling_factor", 2.5}, {"q_lora_rank", 1536}, {"kv_lora_rank", 512}, {"qk_nope_head_dim", 128},
      {"qk_rope_head_dim", 64}, {"v_head_dim", 128}, {"rope_theta", 10000},
      {"rope_scaling", {{"type", "yarn"}, {"factor", 40}, {"original_max_position_embeddings", 4096},
                        {"beta_fast", 32}, {"beta_slow", 1}, {"mscale", 1.0}, {"mscale_all_dim", 1.0}}},
      {"max_position_embeddings", 163840}, {"index_n_heads", 64}, {"index_head_dim", 128}, {"index_topk", 2048},
      {"num_nextn_predict_layers", 1}, {"rms_norm_eps", 1e-6}, {"hidden_act", "silu"}, {"attention_bias", false},
      {"tie_word_embeddings", false}, {"bos_token_id", 0}, {"eos_token_id", 1}, {"torch_dtype", "bfloat16"},
      {"quantization_config", {{"quant_method", "fp8"}, {"fmt", "e4m3"}, {"activation_scheme", "dynamic"},
                               {"scale_fmt", "ue8m0"}, {"weight_block_size", {128, 128}}}}};
  ModelConfig m = parse_hf_config_text(c.dump(), "config.json");
  CHECK(m.variant == ModelVariant::V32);
  CHECK(m.has_indexer());
  CHECK(m.index_topk == 2048);
  CHECK(m.quant.fp8);
  CHECK(m.quant.scale_ue8m0);
  CHECK(m.rope_scaling.present);
  CHECK(m.rope_scaling.factor == 40);
  CHECK(m.qk_head_dim() == 192);
  CHECK_FALSE(m.is_moe_layer(2));
  CHECK(m.is_moe_layer(3));
  CHECK(m.eos_token_ids == std::vector<int64_t>{1});
  for (const char* k : {"index_n_heads", "index_head_dim", "index_topk"}) c.erase(k);
  c["model_type"] = "deepseek_v3";
  m = parse_hf_config_text(c.dump(), "config.json");
  CHECK(m.variant == ModelVariant::V3);
  CHECK_FALSE(m.has_indexer());
}
