// The paged KV cache: block layout does not change results, forks share their prefix blocks (copy on write), a
// shared long prefix is stored once (memory measured against private copies), and an exhausted pool is a clear
// error that leaves every session usable.
#include <catch2/catch.hpp>
#include <fmt/format.h>

#include <filesystem>
#include <sstream>

#include "dsinfer/session.hpp"

using namespace dsinfer;
namespace fs = std::filesystem;

namespace {
const std::string kModel = (fs::path(DSINFER_MODELS_DIR) / "v32-tiny").string();

std::unique_ptr<Model> load(int64_t pool_tokens, int64_t block_tokens, KvCacheDtype dtype = KvCacheDtype::Auto) {
  ModelLoadParams p;
  p.n_threads = 2;
  p.kv_cache_tokens = pool_tokens;
  p.kv_block_tokens = block_tokens;
  p.kv_cache_dtype = dtype;
  return Model::load(kModel, p);
}

ChatMessage msg(const std::string& role, const std::string& text) {
  ChatMessage m;
  m.role = role;
  m.content = text;
  return m;
}
}  // namespace

TEST_CASE("the block size does not change the logits", "[kv]") {
  std::vector<int32_t> ids(90);
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = int32_t(3 + (i * 37) % 3990);
  EvalOptions o;
  o.all_logits = true;
  std::vector<float> ref;
  // Every cache dtype, in fp8 precision, gives the same logits (the FP8 and BF16 rows hold exactly the values the
  // f32 cache holds there); the packed indexer pages follow the block size too.
  for (KvCacheDtype dtype : {KvCacheDtype::Fp8, KvCacheDtype::F32, KvCacheDtype::Bf16})
  for (int64_t block : {64, 16, 7, 1}) {
    if (dtype != KvCacheDtype::Fp8 && (block == 64 || block == 1)) continue;
    auto m = load(4096, block);
    auto seq = m->new_sequence(128, dtype);
    // 50 tokens at once, then 40 one by one: writes cross block boundaries both ways.
    auto logits = m->eval(*seq, std::span(ids).first(50), o);
    for (size_t i = 50; i < ids.size(); ++i) {
      const auto l = m->eval(*seq, std::span(ids).subspan(i, 1), o);
      logits.insert(logits.end(), l.begin(), l.end());
    }
    if (ref.empty()) ref = logits;
    INFO("block of " << block << " tokens, cache " << kv_cache_dtype_name(dtype));
    CHECK(seq->kv_cache_dtype() == dtype);
    CHECK(logits == ref);
  }
}

TEST_CASE("forks share prefix blocks and copy a shared block only when they write into it", "[kv]") {
  for (KvCacheDtype dtype : {KvCacheDtype::Auto, KvCacheDtype::F32}) {
  INFO("cache " << kv_cache_dtype_name(dtype));
  auto m = load(4096, 16, dtype);
  auto tok = Tokenizer::load(kModel);
  std::vector<int32_t> prefix(40), a = {100, 101, 102}, b = {200, 201};
  for (size_t i = 0; i < prefix.size(); ++i) prefix[i] = int32_t(10 + i);
  auto base = m->new_sequence(256);
  m->eval(*base, prefix);
  const int64_t used_base = m->kv_cache_stats().blocks_used;
  CHECK(used_base == 3);  // 40 tokens in blocks of 16
  auto fa = m->copy_sequence(*base), fb = m->copy_sequence(*base);
  CHECK(m->kv_cache_stats().blocks_used == used_base);  // forks take no blocks
  const auto la = m->eval(*fa, a);
  const auto lb = m->eval(*fb, b);
  // Each fork copied the shared, partly filled third block before writing into it.
  CHECK(m->kv_cache_stats().blocks_used == used_base + 2);
  // And each sees exactly its own tokens: the logits equal a fresh sequence fed the whole text.
  auto check = [&](const std::vector<int32_t>& tail, const std::vector<float>& got) {
    std::vector<int32_t> all = prefix;
    all.insert(all.end(), tail.begin(), tail.end());
    auto fresh = m->new_sequence(256);
    m->eval(*fresh, std::span(all).first(prefix.size()));
    CHECK(m->eval(*fresh, std::span(all).subspan(prefix.size())) == got);
  };
  check(a, la);
  check(b, lb);
  // The base continues unaffected.
  auto base_again = m->eval(*base, a);
  CHECK(base_again == la);
  fa.reset();
  fb.reset();
  base.reset();
  CHECK(m->kv_cache_stats().blocks_used == 0);  // every block returned to the pool
  }
}

TEST_CASE("KV memory is known before allocation: bytes per token and per context", "[kv]") {
  // v32-tiny: 4 layers, kv_lora_rank 128, rope 32, indexer head 64. FP8: 128 e4m3 + 1 scale + 32 bf16 = 196 bytes
  // of latent row, 64 e4m3 + 1 scale = 68 bytes of indexer key; f32: (128 + 32 + 64 + 1) · 4 = 900.
  auto m = load(4096, 16);
  const ModelInfo& info = m->info();
  CHECK(info.kv_cache_dtype == KvCacheDtype::Fp8);
  CHECK(info.kv_bytes_per_token_layer == 196 + 68);
  CHECK(info.kv_bytes_per_token == 4 * (196 + 68));
  CHECK(info.kv_index_bytes_per_token_layer == 68);
  CHECK(m->kv_cache_bytes(1) == 16 * 4 * 264);  // one whole block
  CHECK(m->kv_cache_bytes(20000) == 20000 * 4 * 264);
  CHECK(m->kv_cache_bytes(20000, KvCacheDtype::F32) == 20000 * 4 * 900);
  CHECK(m->kv_cache_bytes(20000, KvCacheDtype::Bf16) == 20000 * 4 * (2 * (128 + 32) + 2 * 64 + 4));
  const auto st = m->kv_cache_stats();
  CHECK(st.bytes_per_token == info.kv_bytes_per_token);
  CHECK(st.bytes_per_block == 16 * info.kv_bytes_per_token);
  auto seq = m->new_sequence(64);
  CHECK(seq->kv_cache_dtype() == KvCacheDtype::Auto);
  const std::vector<int32_t> ids(20, 7);
  m->eval(*seq, ids);
  CHECK(seq->kv_cache_dtype() == KvCacheDtype::Fp8);
  CHECK(m->kv_cache_stats().bytes_used == m->kv_cache_bytes(20));
  // An Auto sequence first evaluated in reference precision takes the f32 cache (transformers parity).
  auto ref = m->new_sequence(64);
  EvalOptions o;
  o.precision = Precision::Reference;
  m->eval(*ref, ids, o);
  CHECK(ref->kv_cache_dtype() == KvCacheDtype::F32);
  CHECK(m->kv_cache_stats().bytes_used == m->kv_cache_bytes(20) + m->kv_cache_bytes(20, KvCacheDtype::F32));
  // And an f32 model reports f32.
  CHECK(load(4096, 16, KvCacheDtype::F32)->info().kv_bytes_per_token_layer == 900);
  CHECK(load(4096, 16, KvCacheDtype::F32)->info().kv_index_bytes_per_token_layer == 65 * 4);
}

TEST_CASE("save and restore keep each cache dtype bit for bit; version-1 and -2 files still load", "[kv][save]") {
  auto m = load(4096, 16);
  std::vector<int32_t> ids(37);
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = int32_t(5 + (i * 53) % 3000);
  const std::vector<int32_t> next = {11, 12, 13};
  std::string f32_file;
  for (KvCacheDtype dtype : {KvCacheDtype::Fp8, KvCacheDtype::Bf16, KvCacheDtype::F32}) {
    INFO("cache " << kv_cache_dtype_name(dtype));
    auto seq = m->new_sequence(64, dtype);
    m->eval(*seq, ids);
    std::stringstream file;
    m->save_sequence(*seq, file);
    const std::string bytes = file.str();
    CHECK(bytes.substr(0, 8) == "DSISEQ03");
    auto restored = m->load_sequence(file, 64);
    CHECK(restored->size() == int64_t(ids.size()));
    CHECK(restored->kv_cache_dtype() == dtype);
    CHECK(m->eval(*restored, next) == m->eval(*seq, next));
    if (dtype == KvCacheDtype::F32) f32_file = bytes;
  }
  // Version 1 (an f32 cache, no dtype field) is read into an f32 sequence.
  const size_t header = 8 + 8 + m->fingerprint().size() + 8;
  std::string v1 = "DSISEQ01" + f32_file.substr(8, header - 8) + f32_file.substr(header + 8);
  std::stringstream in(v1);
  auto old = m->load_sequence(in, 64);
  CHECK(old->kv_cache_dtype() == KvCacheDtype::F32);
  auto fresh = m->new_sequence(64, KvCacheDtype::F32);
  m->eval(*fresh, ids);
  CHECK(m->eval(*old, next) == m->eval(*fresh, next));
  // Version 2 is version 3 without the MTP part (here its flag, 0).
  std::stringstream v2("DSISEQ02" + f32_file.substr(8, f32_file.size() - 16));
  auto old2 = m->load_sequence(v2, 64);
  auto fresh2 = m->new_sequence(64, KvCacheDtype::F32);
  m->eval(*fresh2, ids);
  CHECK(m->eval(*old2, next) == m->eval(*fresh2, next));
  // Another version is a clear error.
  std::stringstream v9("DSISEQ09" + f32_file.substr(8));
  CHECK_THROWS_WITH(m->load_sequence(v9), Catch::Contains("version 09 is not supported"));
}

TEST_CASE("N sessions sharing a long system prompt store it once", "[kv][session]") {
  auto m = load(32768, 16);
  auto tok = Tokenizer::load(kModel);
  std::string system = "You are the assistant of a research group. ";
  for (int i = 0; i < 20; ++i) system += fmt::format("Rule {}: answer precisely and cite the measured figures. ", i);
  const std::vector<ChatMessage> prefix = {msg("system", system)};
  const int N = 8;
  GenerateParams g;
  g.max_tokens = 8;
  g.stop_at_eos = false;
  SessionParams sp;
  sp.capacity = 2048;

  // Shared: one session holds the system prompt; the others fork from it.
  Session base(*m, *tok, sp);
  base.set_messages(prefix);
  const int64_t prefix_tokens = int64_t(base.tokens().size());
  std::vector<std::unique_ptr<Session>> shared;
  std::vector<std::vector<int32_t>> shared_out;
  for (int i = 0; i < N; ++i) {
    shared.push_back(base.fork());
    auto conv = prefix;
    conv.push_back(msg("user", fmt::format("Question {}?", i)));
    shared.back()->set_messages(conv);
    shared.back()->generate(g);
    shared_out.push_back(shared.back()->generated());
  }
  const int64_t shared_blocks = m->kv_cache_stats().blocks_used;
  shared.clear();

  // Private: every session renders and evaluates the whole prompt itself.
  const int64_t base_blocks = m->kv_cache_stats().blocks_used;
  std::vector<std::unique_ptr<Session>> priv;
  for (int i = 0; i < N; ++i) {
    priv.push_back(std::make_unique<Session>(*m, *tok, sp));
    auto conv = prefix;
    conv.push_back(msg("user", fmt::format("Question {}?", i)));
    priv.back()->set_messages(conv);
    priv.back()->generate(g);
    CHECK(priv.back()->generated() == shared_out[size_t(i)]);  // sharing changes nothing in the results
  }
  const int64_t private_blocks = m->kv_cache_stats().blocks_used - base_blocks;
  const auto st = m->kv_cache_stats();
  const double mb_shared = double(shared_blocks * st.bytes_per_block) / 1e6;
  const double mb_private = double(private_blocks * st.bytes_per_block) / 1e6;
  WARN(fmt::format("{} sessions with a {}-token shared prompt: {} blocks ({:.2f} MB) shared vs {} blocks ({:.2f} MB) "
                   "as private copies: {:.1f}x less", N, prefix_tokens, shared_blocks, mb_shared, private_blocks,
                   mb_private, double(private_blocks) / double(shared_blocks)));
  CHECK(shared_blocks * 3 < private_blocks);
}

TEST_CASE("an exhausted pool is a clear error and every session stays usable", "[kv][errors]") {
  auto m = load(128, 16);  // 8 blocks
  auto tok = Tokenizer::load(kModel);
  SessionParams sp;
  sp.capacity = 1024;
  Session a(*m, *tok, sp), b(*m, *tok, sp);
  const std::vector<int32_t> ids(80, 42);  // 5 blocks of 16
  a.prefill(ids);
  try {
    b.prefill(ids);  // 5 more blocks; 3 are left
    FAIL("no error");
  } catch (const Error& e) {
    CHECK(e.code() == ErrorCode::OutOfMemory);
    CHECK_THAT(e.what(), Catch::Contains("blocks of 16 tokens of the pool are in use"));
  }
  CHECK(m->kv_cache_stats().blocks_used == 5);  // b's partial allocation was given back
  CHECK(b.tokens().empty());
  GenerateParams g;
  g.max_tokens = 4;
  g.stop_at_eos = false;
  CHECK(a.generate(g) == FinishReason::MaxTokens);  // a is unaffected
  a.set_messages({msg("user", "hi")});              // a shrinks, freeing blocks
  b.set_messages({msg("user", "hello")});           // now b fits
  CHECK(b.generate(g) == FinishReason::MaxTokens);
}
