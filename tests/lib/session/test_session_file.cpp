// Session files from elsewhere (issue 20): every size in the file is checked against the file's length and the
// model before anything is allocated, so a crafted file gives a FormatError quickly and the session keeps its state.
#include <catch2/catch.hpp>
#include <fmt/format.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <unistd.h>

#include "dsinfer/session.hpp"

using namespace dsinfer;
namespace fs = std::filesystem;

namespace {
const std::string kTiny = (fs::path(DSINFER_MODELS_DIR) / "v32-tiny").string();

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}
void write_file(const fs::path& p, const std::string& s) {
  std::ofstream(p, std::ios::binary | std::ios::trunc).write(s.data(), std::streamsize(s.size()));
}
uint64_t get_u64(const std::string& s, size_t at) {
  uint64_t v;
  std::memcpy(&v, s.data() + at, 8);
  return v;
}
void put_u64(std::string& s, size_t at, uint64_t v) { std::memcpy(s.data() + at, &v, 8); }

}  // namespace

TEST_CASE("session files with sizes that do not match the file or the model are refused", "[session][files]") {
  ModelLoadParams lp;
  lp.n_threads = 1;
  lp.kv_cache_tokens = 512;
  auto model = Model::load(kTiny, lp);
  auto tok = Tokenizer::load(kTiny);
  const int64_t V = model->info().vocab_size;
  SessionParams sp;
  sp.capacity = 256;
  Session s(*model, *tok, sp);
  const std::vector<int32_t> prompt{3, 14, 15, 92};
  s.prefill(prompt);
  const fs::path dir = fs::temp_directory_path() / fmt::format("dsinfer_session_file_{}", ::getpid());
  fs::create_directories(dir);
  const fs::path good = dir / "good.session";
  s.save(good.string());
  const std::string f = read_file(good);
  // The layout, from the end: pending (8 + 4), logits (8 + 4V), tokens (8 + 4n).
  const size_t n = prompt.size();
  const size_t pending_at = f.size() - 12;
  const size_t logits_at = pending_at - 8 - 4 * size_t(V);
  const size_t tokens_at = logits_at - 8 - 4 * n;
  const size_t n_at = 24 + size_t(get_u64(f, 16));
  REQUIRE(get_u64(f, n_at) == n);
  REQUIRE(get_u64(f, tokens_at) == 4 * n);
  REQUIRE(get_u64(f, logits_at) == 4 * uint64_t(V));
  REQUIRE(get_u64(f, pending_at) == 4);

  Session target(*model, *tok, sp);
  target.prefill(std::vector<int32_t>{7, 8});
  const auto before_tokens = target.tokens();
  const auto before_logits = target.last_logits();
  auto refused = [&](const std::string& name, const std::string& bytes, const std::string& says) {
    INFO(name);
    const fs::path p = dir / name;
    write_file(p, bytes);
    const auto t0 = std::chrono::steady_clock::now();
    try {
      target.restore(p.string());
      FAIL("restored");
    } catch (const Error& e) {
      CHECK(e.code() == ErrorCode::Format);
      CHECK_THAT(e.what(), Catch::Contains(says));
    }
    CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(2));  // nothing huge was allocated
    CHECK(target.tokens() == before_tokens);
    CHECK(target.last_logits() == before_logits);
  };
  auto with_u64 = [&](size_t at, uint64_t v) {
    std::string b = f;
    put_u64(b, at, v);
    return b;
  };
  // A short file that says it holds 2^40 tokens, or a count that is negative as int64.
  refused("many_tokens", with_u64(n_at, uint64_t(1) << 40), "corrupt");
  refused("pool_tokens", with_u64(n_at, uint64_t(1) << 30), "truncated");
  refused("negative_tokens", with_u64(n_at, ~uint64_t(0)), "corrupt");
  refused("int64_max_tokens", with_u64(n_at, uint64_t(INT64_MAX)), "corrupt");
  refused("cut_in_cache", f.substr(0, n_at + 8 + 100), "truncated");
  // Array lengths past what the model allows, before anything is allocated.
  refused("huge_token_list", with_u64(tokens_at, uint64_t(1) << 40), "token list");
  refused("huge_logits", with_u64(logits_at, uint64_t(1) << 40), "logits");
  refused("huge_pending", with_u64(pending_at, uint64_t(1) << 40), "pending");
  // Logits that are not the vocabulary's length (a crafted file used to restore and then always sample token 0).
  {
    std::string b = f.substr(0, logits_at);
    const uint64_t four = 4 * 4;
    b.append(reinterpret_cast<const char*>(&four), 8);
    b.append(f.substr(logits_at + 8, 16));
    b.append(f.substr(pending_at));
    refused("short_logits", b, "vocabulary");
  }
  // Ids outside the vocabulary.
  {
    std::string b = f;
    const int32_t bad = int32_t(V);
    std::memcpy(b.data() + tokens_at + 8, &bad, 4);
    refused("token_out_of_vocab", b, "not in the vocabulary");
    b = f;
    const int32_t neg = -5;
    std::memcpy(b.data() + tokens_at + 8 + 4, &neg, 4);
    refused("negative_token", b, "not in the vocabulary");
    b = f;
    std::memcpy(b.data() + pending_at + 8, &bad, 4);
    refused("pending_out_of_vocab", b, "not in the vocabulary");
  }
  refused("cut_in_logits", f.substr(0, logits_at + 20), "truncated");
  // The good file still restores, and to the saved state.
  target.restore(good.string());
  CHECK(target.tokens() == s.tokens());
  CHECK(target.last_logits() == s.last_logits());
  fs::remove_all(dir);
}
