// Long prompts are evaluated in chunks (EvalOptions::max_chunk_tokens): the activation memory of a forward is bounded
// by the chunk while the logits do not depend on the chunking, bit for bit, and a failure part way leaves the
// sequence as it was.
#include <catch2/catch.hpp>
#include <fmt/format.h>

#include <chrono>
#include <filesystem>

#include "dsinfer/model.hpp"

using namespace dsinfer;
namespace fs = std::filesystem;

namespace {
std::unique_ptr<Model> load_model(const char* preset, int64_t pool_tokens) {
  ModelLoadParams p;
  p.n_threads = 2;
  p.kv_cache_tokens = pool_tokens;
  return Model::load((fs::path(DSINFER_MODELS_DIR) / preset).string(), p);
}
}  // namespace

TEST_CASE("a 20K-token prompt's last logits do not depend on the chunk size", "[model][long]") {
  // v32-micro: index_topk 8, so every chunk after the first runs DSA's sparse selection over up to 20K keys. The
  // smallest preset, since what is tested is the chunking: 10 s here against 37 s with v32-tiny (2 cores).
  const int64_t n = 20000;
  auto model = load_model("v32-micro", 4 * n);
  const int64_t V = model->info().vocab_size;
  std::vector<int32_t> ids(static_cast<size_t>(n));
  uint32_t state = 7;
  for (auto& id : ids) {
    state = state * 1664525u + 1013904223u;
    id = int32_t(3 + (state >> 8) % uint32_t(V - 3));
  }
  auto last_logits = [&](int64_t chunk, std::vector<int64_t> calls = {}) {
    EvalOptions o;
    o.max_chunk_tokens = chunk;
    auto seq = model->new_sequence(n);
    const auto t0 = std::chrono::steady_clock::now();
    std::vector<float> logits;
    if (calls.empty()) calls = {n};
    int64_t at = 0;
    for (int64_t k : calls) {  // the prompt as several eval() calls (a caller's own chunking) of k tokens each
      logits = model->eval(*seq, std::span(ids).subspan(size_t(at), size_t(k)), o);
      at += k;
    }
    REQUIRE(at == n);
    CHECK(seq->size() == n);
    WARN(fmt::format("{} tokens in chunks of {}{}: {:.1f} s", n, chunk, calls.size() > 1 ? " over several calls" : "",
                     std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count()));
    return logits;
  };
  // Two evaluations: one call in chunks of 8192, and three calls of 6001, 2 and 13997 tokens in chunks of 4096
  // (4096 + 1905, 2, 3 x 4096 + 1709): chunk sizes 8192, 3616 (the last), 4096, 1905, 2 and 1709 between them.
  const std::vector<float> ref = last_logits(8192);
  REQUIRE(int64_t(ref.size()) == V);
  CHECK(last_logits(4096, {6001, 2, 13997}) == ref);
}

TEST_CASE("chunking never leaves a 1-token chunk and a failing chunk leaves the sequence as it was", "[model][long]") {
  auto model = load_model("v32-tiny", 1024);
  const int64_t V = model->info().vocab_size;
  std::vector<int32_t> ids(41);
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = int32_t(5 + i * 7);
  EvalOptions whole, chunked;
  whole.all_logits = chunked.all_logits = true;
  chunked.max_chunk_tokens = 4;  // 41 = 9 chunks of 4, then 3 + 2 (not 4 + 1)
  auto a = model->new_sequence(64), b = model->new_sequence(64);
  const auto la = model->eval(*a, ids, whole);
  const auto lb = model->eval(*b, ids, chunked);
  CHECK(lb.size() == size_t(41 * V));
  CHECK(la == lb);  // every chunk takes the multi-token form the single pass takes
  std::vector<int32_t> bad(10, 9);
  bad.back() = int32_t(V);  // out of range in the third chunk
  CHECK_THROWS_AS(model->eval(*b, bad, chunked), Error);
  CHECK(b->size() == 41);
  const std::vector<int32_t> next = {12, 13};
  CHECK(model->eval(*a, next) == model->eval(*b, next));
}
