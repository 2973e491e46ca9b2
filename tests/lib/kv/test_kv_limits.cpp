// KV sizing at the edges of int64 (issue 20): a pool or a capacity whose arithmetic would wrap is refused before
// anything is allocated, and sessions with huge capacities work within the pool.
#include <catch2/catch.hpp>

#include <cstdint>
#include <filesystem>
#include <limits>

#include "dsinfer/session.hpp"

using namespace dsinfer;

namespace {
const std::string kTiny = (std::filesystem::path(DSINFER_MODELS_DIR) / "v32-tiny").string();

ErrorCode load_error(const ModelLoadParams& p) {
  try {
    Model::load(kTiny, p);
  } catch (const Error& e) {
    return e.code();
  }
  return ErrorCode::Ok;
}
}  // namespace

TEST_CASE("load parameters past their limits are refused before anything is allocated", "[kv][limits]") {
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  for (int64_t block : {int64_t(-1), int64_t(1) << 17, int64_t(1) << 62, kMax}) {
    ModelLoadParams p;
    p.n_threads = 1;
    p.kv_block_tokens = block;
    p.kv_cache_tokens = block > 0 ? block : 0;
    CHECK(load_error(p) == ErrorCode::InvalidArgument);
  }
  for (int64_t tokens : {int64_t(-1), int64_t(1) << 31, int64_t(1) << 62, kMax - 1, kMax}) {
    ModelLoadParams p;
    p.n_threads = 1;
    p.kv_cache_tokens = tokens;
    CHECK(load_error(p) == ErrorCode::InvalidArgument);
  }
  for (int n_threads : {-1, 1025, 100000, std::numeric_limits<int>::max()}) {
    ModelLoadParams p;
    p.n_threads = n_threads;
    CHECK(load_error(p) == ErrorCode::InvalidArgument);
  }
  // At the limits themselves: a block of 64Ki tokens loads.
  ModelLoadParams p;
  p.n_threads = 1;
  p.kv_block_tokens = int64_t(1) << 16;
  p.kv_cache_tokens = int64_t(1) << 16;
  CHECK(load_error(p) == ErrorCode::Ok);
}

TEST_CASE("ModelLoadParams::cuda is checked before anything is read, whatever the backend", "[limits][cuda_options]") {
  // A directory that does not exist: a load that got past the checks would fail with Io instead.
  const std::string missing = kTiny + "-does-not-exist";
  auto message = [&](const ModelLoadParams& p) -> std::string {
    try {
      Model::load(missing, p);
    } catch (const Error& e) {
      if (e.code() != ErrorCode::InvalidArgument) return std::string("not InvalidArgument: ") + e.what();
      return e.what();
    }
    return "loaded";
  };
  ModelLoadParams p;
  p.n_threads = 1;
  p.cuda.mla_kernel = "tc";
  CHECK(message(p) == "ModelLoadParams::cuda.mla_kernel must be cuda-core or tensor-core, not \"tc\"");
  p.cuda.mla_kernel = "tensor-core";
  p.cuda.indexer_kernel = "fp8";
  CHECK(message(p).find("ModelLoadParams::cuda.indexer_kernel") != std::string::npos);
  p.cuda.indexer_kernel = "cuda-core";
  p.cuda.small_m_max = 4097;
  CHECK(message(p).find("ModelLoadParams::cuda.small_m_max must be 0 to 4096") != std::string::npos);
  p.cuda.small_m_max = 0;
  p.cuda.device = -1;
  CHECK(message(p).find("ModelLoadParams::cuda.device") != std::string::npos);
  // Valid values other than the defaults: the CPU backend loads with them (it ignores them).
  p.cuda.device = 5;
  p.cuda.small_m_tensor_cores = false;
  p.cuda.cublaslt_fp8 = false;
  CHECK(load_error(p) == ErrorCode::Ok);
}

TEST_CASE("session capacities up to INT64_MAX work within the pool", "[kv][limits]") {
  ModelLoadParams lp;
  lp.n_threads = 1;
  lp.kv_cache_tokens = 256;
  lp.kv_block_tokens = 16;
  auto model = Model::load(kTiny, lp);
  auto tok = Tokenizer::load(kTiny);
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  for (int64_t cap : {int64_t(1) << 62, (int64_t(1) << 62) + 1, kMax - 16, kMax - 1, kMax}) {
    SessionParams sp;
    sp.capacity = cap;
    Session s(*model, *tok, sp);
    s.prefill(std::vector<int32_t>{1, 2, 3});
    GenerateParams g;
    g.max_tokens = 2;
    g.stop_at_eos = false;
    s.generate(g);
    CHECK(s.generated().size() == 2);
    auto f = s.fork();
    CHECK(f->tokens() == s.tokens());
  }
  for (int64_t cap : {int64_t(0), int64_t(-1), std::numeric_limits<int64_t>::min()}) {
    SessionParams sp;
    sp.capacity = cap;
    CHECK_THROWS_AS(Session(*model, *tok, sp), Error);
  }
  // Filling the pool is a clear error, whatever the capacity says.
  SessionParams sp;
  sp.capacity = kMax;
  Session s(*model, *tok, sp);
  std::vector<int32_t> ids(300, 5);
  try {
    s.prefill(ids);
    FAIL("300 tokens fit a 256-token pool");
  } catch (const Error& e) {
    CHECK(e.code() == ErrorCode::OutOfMemory);
  }
}
