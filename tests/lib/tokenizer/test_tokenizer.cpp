// The tokenizer against the `tokenizers` library on a 10,000-line corpus (tests/reference/make_tokenizer_goldens.py),
// the streaming detokenizer, and bad input.
#include <catch2/catch.hpp>
#include <fmt/format.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "dsinfer/tokenizer.hpp"

#include <thread>

using namespace dsinfer;
using json = nlohmann::json;
namespace fs = std::filesystem;

namespace {
const fs::path kFixture = fs::path(DSINFER_SOURCE_DIR) / "tests" / "fixtures" / "tokenizer";
const fs::path kGolden = fs::path(DSINFER_SOURCE_DIR) / "tests" / "golden" / "tokenizer";

std::vector<json> read_jsonl(const fs::path& p) {
  std::ifstream f(p);
  REQUIRE(f.good());
  std::vector<json> out;
  std::string line;
  while (std::getline(f, line)) out.push_back(json::parse(line));
  return out;
}

const Tokenizer& fixture() {
  static const auto tok = Tokenizer::load(kFixture.string());
  return *tok;
}

struct TempFile {
  fs::path path;
  explicit TempFile(const std::string& text) {
    path = fs::temp_directory_path() / fmt::format("dsinfer-tok-{}.json", std::hash<std::string>()(text));
    std::ofstream(path) << text;
  }
  ~TempFile() { fs::remove(path); }
};

Error load_error(const std::string& text) {
  TempFile f(text);
  try {
    Tokenizer::load(f.path.string());
  } catch (const Error& e) {
    return e;
  }
  FAIL("loaded without an error");
  return Error(ErrorCode::Ok, "");
}
}  // namespace

TEST_CASE("encode and decode equal the tokenizers library on the 10,000-line corpus", "[tokenizer][golden]") {
  const Tokenizer& tok = fixture();
  const auto lines = read_jsonl(kGolden / "corpus.jsonl");
  REQUIRE(lines.size() >= 10000);
  size_t enc = 0, enc_sp = 0, dec = 0, dec_skip = 0, stream = 0;
  for (const auto& l : lines) {
    const std::string text = l.at("text");
    const auto want = l.at("ids").get<std::vector<int32_t>>();
    std::vector<int32_t> want_sp = {0};
    want_sp.insert(want_sp.end(), want.begin(), want.end());
    if (l.contains("ids_special")) want_sp = l.at("ids_special").get<std::vector<int32_t>>();
    const auto ids = tok.encode(text, false);
    enc += ids == want;
    if (ids != want) WARN("encode differs for " << json(text).dump());
    enc_sp += tok.encode(text, true) == want_sp;
    const std::string d = tok.decode(want);
    dec += d == l.value("decoded", text);
    dec_skip += tok.decode(want_sp, true) == l.value("decoded_skip", text);
    Detokenizer dt(tok);
    std::string pieces;
    for (int32_t id : want) {
      const std::string piece = dt.push(id);
      if (utf8_lossy(piece) != piece) WARN("a streamed piece is not valid UTF-8 in " << json(text).dump());
      pieces += piece;
    }
    pieces += dt.finish();
    stream += pieces == d;
  }
  WARN(fmt::format("{} lines: encode {} equal, encode+special {} equal, decode {} equal, decode(skip special) {} "
                   "equal, streaming == decode {}",
                   lines.size(), enc, enc_sp, dec, dec_skip, stream));
  CHECK(enc == lines.size());
  CHECK(enc_sp == lines.size());
  CHECK(dec == lines.size());
  CHECK(dec_skip == lines.size());
  CHECK(stream == lines.size());
}

// Other settings the loader supports, each a copy of the fixture changed by make_tokenizer_goldens.py: "a b" merges,
// a Sequence post-processor, added tokens with lstrip/rstrip/single_word/normalized ("added"); Split behaviours
// MergedWithNext/MergedWithPrevious/Contiguous/Removed, String patterns and Digits ("splits"); ByteLevel with the
// GPT-2 regex and single digits, no post-processor ("gpt2").
TEST_CASE("tokenizer.json variants equal the tokenizers library", "[tokenizer][golden]") {
  for (const char* name : {"added", "splits", "gpt2"}) {
    INFO("variant " << name);
    const auto tok = Tokenizer::load((kGolden / fmt::format("variant_{}.json", name)).string());
    const auto lines = read_jsonl(kGolden / fmt::format("variant_{}.jsonl", name));
    REQUIRE(lines.size() >= 2000);
    size_t equal = 0;
    for (const auto& l : lines) {
      const std::string text = l.at("text");
      const auto ids = l.at("ids").get<std::vector<int32_t>>();
      const bool same = tok->encode(text) == ids && tok->encode(text, true) == l.at("ids_special").get<std::vector<int32_t>>() &&
                        tok->decode(ids) == l.at("decoded").get<std::string>();
      if (!same) WARN("differs for " << json(text).dump());
      equal += same;
    }
    WARN(fmt::format("variant {}: {}/{} lines equal", name, equal, lines.size()));
    CHECK(equal == lines.size());
  }
}

TEST_CASE("encode and decode are safe from several threads at once", "[tokenizer][threads]") {
  const Tokenizer& tok = fixture();
  const auto lines = read_jsonl(kGolden / "corpus.jsonl");
  std::vector<size_t> wrong(4, 0);
  std::vector<std::thread> threads;
  for (size_t w = 0; w < wrong.size(); ++w)
    threads.emplace_back([&, w] {
      for (size_t k = w; k < lines.size(); k += 2) {  // overlapping halves: the shared word cache is hit and filled
        const auto want = lines[k].at("ids").get<std::vector<int32_t>>();
        if (tok.encode(lines[k].at("text").get<std::string>()) != want) ++wrong[w];
        if (tok.decode(want) != lines[k].value("decoded", lines[k].at("text").get<std::string>())) ++wrong[w];
      }
    });
  for (auto& t : threads) t.join();
  for (size_t w : wrong) CHECK(w == 0);
}

TEST_CASE("decoding ids that form invalid UTF-8 matches the library, whole and streamed", "[tokenizer][golden]") {
  const Tokenizer& tok = fixture();
  for (const auto& l : read_jsonl(kGolden / "random_decode.jsonl")) {
    const auto ids = l.at("ids").get<std::vector<int32_t>>();
    REQUIRE(tok.decode(ids) == l.at("decoded").get<std::string>());
    REQUIRE(tok.decode(ids, true) == l.at("decoded_skip").get<std::string>());
    Detokenizer dt(tok), dts(tok, true);
    std::string a, b;
    for (int32_t id : ids) {
      const std::string piece = dt.push(id);
      // A piece is always valid UTF-8 on its own: never half a character.
      REQUIRE(utf8_lossy(piece) == piece);
      a += piece;
      b += dts.push(id);
    }
    a += dt.finish();
    b += dts.finish();
    REQUIRE(a == l.at("decoded").get<std::string>());
    REQUIRE(b == l.at("decoded_skip").get<std::string>());
  }
}

TEST_CASE("special tokens: matched whole, ids from the config, BOS from the post-processor", "[tokenizer]") {
  // The README-32 example's prompt, with the fixture's ids for the special tokens: they are matched whole wherever
  // they sit, the text between goes through BPE, and BOS is never doubled (add_bos_token is false).
  const Tokenizer& tok = fixture();
  CHECK(tok.size() == 4000);
  CHECK(tok.bos_id() == 0);
  CHECK(tok.eos_id() == 1);
  CHECK_FALSE(tok.add_bos_token());
  const int32_t user = tok.token_to_id("<｜User｜>"), asst = tok.token_to_id("<｜Assistant｜>");
  const int32_t think = tok.token_to_id("<think>");
  REQUIRE(user > 0);
  const auto ids = tok.encode("<｜begin▁of▁sentence｜><｜User｜>hello<｜Assistant｜><think>", false);
  REQUIRE(ids.size() >= 5);
  CHECK(ids.front() == 0);
  CHECK(ids[1] == user);
  CHECK(ids[ids.size() - 2] == asst);
  CHECK(ids.back() == think);
  CHECK(tok.is_special(user));
  CHECK(tok.decode(ids, true) == "hello");
  CHECK(tok.encode("x", true).front() == 0);

  const int32_t end_think = tok.token_to_id("</think>");
  const std::string prompt =
      "<｜begin▁of▁sentence｜><｜User｜>hello<｜Assistant｜></think>Hello! I am DeepSeek.<｜end▁of▁sentence｜>"
      "<｜User｜>1+1=?<｜Assistant｜><think>";
  const auto p = tok.encode(prompt, false);
  std::vector<int32_t> specials;
  for (int32_t id : p)
    if (tok.is_special(id)) specials.push_back(id);
  CHECK(specials == std::vector<int32_t>{0, user, asst, end_think, 1, user, asst, think});
  CHECK(p.front() == 0);
  CHECK(p.back() == think);
  CHECK(tok.decode(p) == prompt);
  CHECK(tok.decode(p, true) == "helloHello! I am DeepSeek.1+1=?");
  // "1+1=?" is text: digits split one run at a time by the first Split, "+"/"=?" by the punctuation alternative.
  const auto mid = tok.encode("1+1=?", false);
  CHECK(tok.decode(mid) == "1+1=?");
  CHECK(mid.size() >= 3);
  for (int32_t id : mid) CHECK_FALSE(tok.is_special(id));
}

TEST_CASE("bad input gives precise errors", "[tokenizer][errors]") {
  const Tokenizer& tok = fixture();
  try {
    tok.encode(std::string("ok \xC3\x28 bad"));
    FAIL("no error");
  } catch (const Error& e) {
    CHECK(e.code() == ErrorCode::InvalidArgument);
    CHECK_THAT(e.what(), Catch::Contains("offset 3"));
  }
  const std::vector<int32_t> bad = {5, 4000};
  try {
    tok.decode(bad);
    FAIL("no error");
  } catch (const Error& e) {
    CHECK(e.code() == ErrorCode::InvalidArgument);
    CHECK_THAT(e.what(), Catch::Contains("token id 4000") && Catch::Contains("4000 tokens"));
  }
  Detokenizer dt(tok);
  CHECK_THROWS_AS(dt.push(-1), Error);
  CHECK(load_error("{ nope").code() == ErrorCode::Format);
  CHECK_THAT(load_error("{\"version\": \"1.0\"}").what(), Catch::Contains("\"model\""));
  CHECK_THAT(load_error(R"({"model": {"type": "BPE", "vocab": []}})").what(), Catch::Contains("model.vocab"));
  Error e = load_error(R"({"model": {"type": "WordPiece", "vocab": {}}})");
  CHECK(e.code() == ErrorCode::Unsupported);
  CHECK_THAT(e.what(), Catch::Contains("WordPiece"));
  e = load_error(R"({"model": {"type": "BPE", "vocab": {"a": 0}}, "pre_tokenizer": {"type": "Metaspace"}})");
  CHECK(e.code() == ErrorCode::Unsupported);
  CHECK_THAT(e.what(), Catch::Contains("Metaspace"));
  e = load_error(R"({"model": {"type": "BPE", "vocab": {"a": 0}}, "normalizer": {"type": "NFKC"}})");
  CHECK(e.code() == ErrorCode::Unsupported);
  CHECK_THAT(e.what(), Catch::Contains("NFKC"));
  e = load_error(R"({"model": {"type": "BPE", "vocab": {"a": 0}}, "decoder": {"type": "WordPiece"}})");
  CHECK(e.code() == ErrorCode::Unsupported);
  CHECK_THAT(e.what(), Catch::Contains("decoder type \"WordPiece\""));
  e = load_error(R"({"model": {"type": "BPE", "vocab": {"a": 0}}, "pre_tokenizer": {"type": "Split", "pattern": {"Regex": "(a"}}})");
  CHECK(e.code() == ErrorCode::Format);
  CHECK_THAT(e.what(), Catch::Contains("(a") && Catch::Contains("does not compile"));
  CHECK_THAT(load_error("[1, 2]").what(), Catch::Contains("dsinfer-tok-") && Catch::Contains("top level"));
  e = load_error(R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": ["a b"]}})");
  CHECK_THAT(e.what(), Catch::Contains("missing from the vocabulary"));
  CHECK(load_error("").code() == ErrorCode::Format);
  CHECK_THROWS_AS(Tokenizer::load("/nonexistent/dir"), Error);
}
