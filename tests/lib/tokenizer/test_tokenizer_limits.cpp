// Hostile tokenizer files and inputs (issue 20): ids that would size the id table to gigabytes, ids truncated to
// 32 bits, wrong JSON types, deep pre/post-tokenizer nesting, and words long enough to make BPE quadratic.
#include <catch2/catch.hpp>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "dsinfer/error.hpp"
#include "dsinfer/tokenizer.hpp"

using namespace dsinfer;
using json = nlohmann::json;
namespace fs = std::filesystem;

namespace {

const fs::path kFixture = fs::path(DSINFER_SOURCE_DIR) / "tests" / "fixtures" / "tokenizer";

// A directory with tokenizer.json (and tokenizer_config.json when given), removed afterwards.
struct TempTokenizer {
  fs::path dir;
  TempTokenizer(const std::string& tokenizer_json, const std::string& config_json = "") {
    std::random_device rd;
    dir = fs::temp_directory_path() / ("dsinfer-toklim-" + std::to_string(rd()));
    fs::create_directories(dir);
    std::ofstream(dir / "tokenizer.json", std::ios::binary) << tokenizer_json;
    if (!config_json.empty()) std::ofstream(dir / "tokenizer_config.json", std::ios::binary) << config_json;
  }
  ~TempTokenizer() { fs::remove_all(dir); }
};

Error load_error(const std::string& tokenizer_json, const std::string& config_json = "") {
  TempTokenizer t(tokenizer_json, config_json);
  try {
    Tokenizer::load(t.dir.string());
  } catch (const Error& e) {
    CHECK_THAT(e.what(), Catch::Contains(t.dir.string()));  // names the file
    return e;
  }
  FAIL("loaded without an error");
  return Error(ErrorCode::Ok, "");
}

json minimal() {
  return json::parse(R"({"model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b"]},
                         "added_tokens": [{"id": 3, "content": "<s>", "special": true}]})");
}

}  // namespace

TEST_CASE("token ids are bounded by the number of entries", "[tokenizer][limits]") {
  json j = minimal();
  j["model"]["vocab"]["c"] = 100000000;  // one entry with id 10^8 used to allocate a 10^8-entry table (3.4 GB RSS)
  Error e = load_error(j.dump());
  CHECK(e.code() == ErrorCode::Format);
  CHECK_THAT(e.what(), Catch::Contains("\"model.vocab\" entry \"c\" has id 100000000, outside [0, 5)"));
  j = minimal();
  j["model"]["vocab"]["c"] = INT32_MAX;
  CHECK(load_error(j.dump()).code() == ErrorCode::Format);
  j = minimal();
  j["added_tokens"][0]["id"] = (uint64_t(1) << 32) + 1;  // was truncated to id 1, silently replacing "b"
  CHECK_THAT(load_error(j.dump()).what(), Catch::Contains("has id 4294967297"));
  j = minimal();
  j["post_processor"] = json::parse(R"({"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>"}}],
                                        "special_tokens": {"<s>": {"ids": [70000]}}})");
  CHECK_THAT(load_error(j.dump()).what(), Catch::Contains("post_processor special token \"<s>\" has id 70000"));
  TempTokenizer ok(minimal().dump());
  CHECK(Tokenizer::load(ok.dir.string())->size() == 4);
}

TEST_CASE("wrong JSON types are Format errors naming the key", "[tokenizer][limits]") {
  json j = minimal();
  j["model"]["ignore_merges"] = "yes";
  CHECK_THAT(load_error(j.dump()).what(), Catch::Contains("\"ignore_merges\" must be true or false"));
  j = minimal();
  j["model"]["type"] = 7;
  CHECK_THAT(load_error(j.dump()).what(), Catch::Contains("\"type\" must be a string"));
  j = minimal();
  j["added_tokens"][0]["special"] = 1;
  CHECK_THAT(load_error(j.dump()).what(), Catch::Contains("\"special\" must be true or false"));
  j = minimal();
  j["pre_tokenizer"] = json::parse(R"({"type": "Split", "pattern": {"String": " "}, "behavior": 3})");
  CHECK_THAT(load_error(j.dump()).what(), Catch::Contains("\"behavior\" must be a string"));
  j = minimal();
  j["pre_tokenizer"] = json::parse(R"({"type": "ByteLevel", "use_regex": "no"})");
  CHECK_THAT(load_error(j.dump()).what(), Catch::Contains("\"use_regex\" must be true or false"));
  Error e = load_error(minimal().dump(), R"({"bos_token": {"content": 5}})");
  CHECK(e.code() == ErrorCode::Format);
  CHECK_THAT(e.what(), Catch::Contains("\"content\" must be a string"));
  CHECK_THAT(load_error(minimal().dump(), R"({"add_bos_token": 1})").what(),
             Catch::Contains("\"add_bos_token\" must be true or false"));
}

TEST_CASE("pre- and post-tokenizer Sequences nested 100k deep are Format errors", "[tokenizer][limits]") {
  std::string pre;
  for (int i = 0; i < 100000; ++i) pre += R"({"type": "Sequence", "pretokenizers": [)";
  pre += R"({"type": "ByteLevel"})";
  for (int i = 0; i < 100000; ++i) pre += "]}";
  std::string text = minimal().dump();
  text.insert(1, "\"pre_tokenizer\": " + pre + ", ");
  CHECK_THAT(load_error(text).what(), Catch::Contains("nest deeper than 128 levels"));
  std::string post;
  for (int i = 0; i < 100000; ++i) post += R"({"type": "Sequence", "processors": [)";
  for (int i = 0; i < 100000; ++i) post += "]}";
  text = minimal().dump();
  text.insert(1, "\"post_processor\": " + post + ", ");
  CHECK_THAT(load_error(text).what(), Catch::Contains("nest deeper than 128 levels"));
}

TEST_CASE("BPE on one very long word is not quadratic", "[tokenizer][limits]") {
  // A 1 MB word of letters: the old merge loop rescanned the word once per distinct merge applied (about a
  // thousand here: 10^9 lookups); the heap-based merge is O(n log n) (0.3 s in a Release build, more under ASan).
  const auto tok = Tokenizer::load(kFixture.string());
  std::mt19937 rng(7);
  std::string word;
  for (int i = 0; i < 1000000; ++i) word += char('a' + rng() % 26);
  const auto t0 = std::chrono::steady_clock::now();
  const auto ids = tok->encode(word, false);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  CHECK(tok->decode(ids) == word);
  CHECK(ids.size() < word.size());  // merges were applied
  CHECK(s < 8.0);
}
