// Hostile checkpoints (issue 20): deep JSON, absurd config values, overflowing shapes, duplicate or overlapping
// tensors, misaligned data. Each must be a Format error naming the file, or load correctly — never a crash,
// an overflow or a NaN model.
#include <catch2/catch.hpp>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "checkpoint/hf_config.hpp"
#include "checkpoint/safetensors_reader.hpp"
#include "dsinfer/error.hpp"

using namespace dsinfer;
using json = nlohmann::json;
namespace fs = std::filesystem;

namespace {

const fs::path kConfig = fs::path(DSINFER_MODELS_DIR) / "v32-tiny" / "config.json";

json tiny_config() {
  std::ifstream f(kConfig);
  REQUIRE(f);
  return json::parse(f);
}

// The error config.json text gives, or "" when it parses.
std::string config_error(const std::string& text) {
  try {
    parse_hf_config_text(text, "config.json");
  } catch (const Error& e) {
    CHECK(e.code() == ErrorCode::Format);
    return e.what();
  }
  return "";
}

std::string with(const std::function<void(json&)>& fn) {
  json c = tiny_config();
  fn(c);
  return c.dump();
}

struct TempFile {
  fs::path path;
  explicit TempFile(const std::string& bytes) {
    std::random_device rd;
    path = fs::temp_directory_path() / ("dsinfer-limits-" + std::to_string(rd()) + ".safetensors");
    std::ofstream(path, std::ios::binary).write(bytes.data(), std::streamsize(bytes.size()));
  }
  ~TempFile() { fs::remove(path); }
};

std::string safetensors(const std::string& header, const std::string& data) {
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[size_t(i)] = char((header.size() >> (8 * i)) & 0xff);
  return out + header + data;
}

std::string open_error(const std::string& bytes) {
  TempFile f(bytes);
  try {
    SafetensorsFile::open(f.path.string());
  } catch (const Error& e) {
    CHECK(e.code() == ErrorCode::Format);
    CHECK_THAT(e.what(), Catch::Contains(f.path.string()));
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("config.json nested 100k deep is a Format error, not a stack overflow", "[checkpoint][limits]") {
  const std::string deep = std::string(100000, '[') + std::string(100000, ']');
  CHECK_THAT(config_error(with([&](json& c) { c["vocab_size"] = 0; }).replace(0, 1, "{\"x\": " + deep + ",")),
             Catch::Contains("config.json: not valid JSON: arrays and objects nest deeper than 128 levels"));
}

TEST_CASE("config.json integers above INT64_MAX or above the size bounds are refused by key", "[checkpoint][limits]") {
  std::string t = with([](json& c) { c["num_hidden_layers"] = 1; });
  t.replace(t.find("\"num_hidden_layers\":1"), 21, "\"num_hidden_layers\":18446744073709551615");
  CHECK_THAT(config_error(t), Catch::Contains("\"num_hidden_layers\" is out of range, found 18446744073709551615"));
  CHECK_THAT(config_error(with([](json& c) { c["hidden_size"] = int64_t(1) << 40; })),
             Catch::Contains("\"hidden_size\" is 1099511627776, above the limit 1048576"));
  // Products of three bounded sizes cannot wrap: the shape math after this check is safe.
  CHECK_THAT(config_error(with([](json& c) { c["vocab_size"] = int64_t(1) << 21; })), Catch::Contains("\"vocab_size\""));
  CHECK_THAT(config_error(with([](json& c) { c["max_position_embeddings"] = -5; })),
             Catch::Contains("\"max_position_embeddings\" must be positive"));
  CHECK_THAT(config_error(with([](json& c) { c["eos_token_id"] = 1 << 20; })),
             Catch::Contains("eos_token_id 1048576 is outside the vocabulary"));
  CHECK(config_error(tiny_config().dump()).empty());
}

TEST_CASE("config.json values that would make every logit NaN are refused", "[checkpoint][limits]") {
  CHECK_THAT(config_error(with([](json& c) { c["rope_theta"] = 0; })), Catch::Contains("\"rope_theta\" is 0"));
  CHECK_THAT(config_error(with([](json& c) { c["rope_theta"] = -10000.0; })), Catch::Contains("\"rope_theta\""));
  CHECK_THAT(config_error(with([](json& c) { c["rms_norm_eps"] = -1e-6; })), Catch::Contains("\"rms_norm_eps\""));
  CHECK_THAT(config_error(with([](json& c) { c["routed_scaling_factor"] = 1e308; })),
             Catch::Contains("\"routed_scaling_factor\""));
  CHECK_THAT(config_error(with([](json& c) { c["rope_scaling"]["factor"] = 1e308; })),
             Catch::Contains("\"rope_scaling.factor\""));
  CHECK_THAT(config_error(with([](json& c) { c["rope_scaling"]["original_max_position_embeddings"] = -4096; })),
             Catch::Contains("\"rope_scaling.original_max_position_embeddings\" must be positive"));
}

TEST_CASE("wrong JSON types in config.json are quoted briefly", "[checkpoint][limits]") {
  const std::string msg = config_error(with([](json& c) { c["hidden_size"] = std::string(100000, 'x'); }));
  CHECK_THAT(msg, Catch::Contains("\"hidden_size\" must be an integer"));
  CHECK(msg.size() < 400);
}

TEST_CASE("a safetensors header nested 100k deep is a Format error", "[checkpoint][limits]") {
  const std::string deep = std::string(100000, '[') + std::string(100000, ']');
  CHECK_THAT(open_error(safetensors("{\"w\":{\"dtype\":\"F32\",\"shape\":" + deep + ",\"data_offsets\":[0,0]}}", "")),
             Catch::Contains("nest deeper than 128 levels"));
}

TEST_CASE("a safetensors shape whose element count overflows is refused", "[checkpoint][limits]") {
  // 2^62 x 4 elements x 4 bytes wraps to 0 bytes in 64 bits, which matched data_offsets [0, 0] before.
  CHECK_THAT(open_error(safetensors(R"({"w":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,0]}})", "")),
             Catch::Contains("is too large"));
  CHECK_THAT(open_error(safetensors(R"({"w":{"dtype":"F32","shape":[1000,1000],"data_offsets":[0,8]}})", std::string(8, '\0'))),
             Catch::Contains("holds more elements than the file has bytes (8)"));
  CHECK_THAT(open_error(safetensors(R"({"w":{"dtype":"F32","shape":[4294967296,4294967296,0],"data_offsets":[0,0]}})", "")),
             Catch::Contains("is too large"));  // numel() would overflow before multiplying by 0
  // An empty tensor may have large other dims in a small file.
  CHECK(open_error(safetensors(R"({"w":{"dtype":"F32","shape":[0,65536],"data_offsets":[0,0]}})", "")).empty());
}

TEST_CASE("a tensor named twice in a safetensors header is refused", "[checkpoint][limits]") {
  CHECK_THAT(open_error(safetensors(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                                    R"("w":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                                    std::string(8, '\0'))),
             Catch::Contains("tensor \"w\" appears twice in the header"));
}

TEST_CASE("overlapping tensors are refused even with an empty tensor sorted between them", "[checkpoint][limits]") {
  // a [0, 8), e [4, 4) (empty), b [4, 12): a and b overlap; comparing sorted neighbours only saw a/e and e/b.
  CHECK_THAT(open_error(safetensors(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                                    R"("e":{"dtype":"F32","shape":[0],"data_offsets":[4,4]},)"
                                    R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                                    std::string(12, '\0'))),
             Catch::Contains("overlap"));
  // Empty tensors anywhere, adjacent ranges: fine.
  CHECK(open_error(safetensors(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                               R"("e":{"dtype":"F32","shape":[0],"data_offsets":[4,4]},)"
                               R"("b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})",
                               std::string(12, '\0')))
            .empty());
}

TEST_CASE("a tensor at a misaligned offset is read through an aligned copy", "[checkpoint][limits]") {
  // One F8 byte first puts the F32 tensor at an odd offset; a header padded by one space shifts everything.
  const float values[2] = {1.5f, -2.25f};
  std::string data = "\x38";
  data.append(reinterpret_cast<const char*>(values), sizeof values);
  const std::string header = R"({"q":{"dtype":"F8_E4M3","shape":[1],"data_offsets":[0,1]},)"
                             R"("w":{"dtype":"F32","shape":[2],"data_offsets":[1,9]}} )";
  TempFile f(safetensors(header, data));
  const auto st = SafetensorsFile::open(f.path.string());
  const TensorInfo& w = st->tensors().at("w");
  CHECK(reinterpret_cast<uintptr_t>(w.data) % alignof(float) == 0);
  const float* p = reinterpret_cast<const float*>(w.data);
  CHECK(p[0] == 1.5f);
  CHECK(p[1] == -2.25f);
}
