// Backend interface v2 (issue 19): the model hands every op its index data — token ids, positions, block tables,
// RoPE frequencies, the indexer's top-k, the router's choices — in memory the backend allocated, never in host
// memory of its own, so that a GPU backend can chain the ops without a host round trip. A backend that fences its
// allocations (a CPU backend underneath, every allocation recorded, every index pointer checked against them) runs
// the forward passes that exercise each path — chunked prefill past index_topk, decode, a batch of two sequences,
// exact rows, the MTP module's cache rows and drafts — and must give bitwise the logits of the plain CPU backend.
#include <catch2/catch.hpp>
#include <fmt/format.h>

#include <cstring>
#include <filesystem>
#include <map>
#include <mutex>
#include <numeric>
#include <string>
#include <vector>

#include "backend/cpu/cpu_backend.hpp"
#include "checkpoint/hf_config.hpp"
#include "checkpoint/safetensors_reader.hpp"
#include "kv/kv_cache.hpp"
#include "model/deepseek_v32.hpp"
#include "model/deepseek_weights.hpp"

using namespace dsinfer;
namespace fs = std::filesystem;

namespace {

const fs::path kModels = fs::path(DSINFER_MODELS_DIR);

// Every live allocation of a FencedBackend, by start address. A Buffer's release callback is a plain function, so
// the registry is global; the inner backend's Buffer is kept here and freed when the fenced one is released.
struct Registry {
  std::mutex mutex;
  std::map<uintptr_t, Buffer> live;  // start -> the inner backend's buffer (its bytes() is the length)
};
Registry& registry() {
  static Registry r;
  return r;
}
void release_fenced(void* p) {
  std::lock_guard<std::mutex> lock(registry().mutex);
  registry().live.erase(reinterpret_cast<uintptr_t>(p));
}

class FencedBackend final : public Backend {
 public:
  FencedBackend() : inner_(BackendOptions{2}) {}
  std::string_view name() const override { return "fenced-cpu"; }
  bool supports(BackendFeature f) const override { return inner_.supports(f); }

  // Index data that is not inside one live allocation of this backend is a contract violation.
  void expect_backend(const void* p, int64_t count, size_t elem, const char* what) {
    ++checks_[what];
    if (!p || count <= 0) return;
    const uintptr_t a = reinterpret_cast<uintptr_t>(p), b = a + size_t(count) * elem;
    std::lock_guard<std::mutex> lock(registry().mutex);
    auto it = registry().live.upper_bound(a);
    if (it != registry().live.begin()) {
      --it;
      if (a >= it->first && b <= it->first + it->second.bytes()) return;
    }
    violations_.push_back(fmt::format("{}: {} bytes at {} are not backend memory", what, b - a, p));
  }
  const std::vector<std::string>& violations() const { return violations_; }
  int64_t checks(const char* what) const {
    auto it = checks_.find(what);
    return it == checks_.end() ? 0 : it->second;
  }

  Buffer allocate(size_t bytes, bool zero = true) override {
    Buffer b = inner_.allocate(bytes, zero);
    void* p = b.data();
    std::lock_guard<std::mutex> lock(registry().mutex);
    registry().live.emplace(reinterpret_cast<uintptr_t>(p), std::move(b));
    return Buffer(p, bytes, release_fenced);
  }
  void fill_zero(Tensor2D x) override { inner_.fill_zero(x); }
  void copy(Tensor2D dst, Tensor2D src) override { inner_.copy(dst, src); }
  void to_host(float* dst, Tensor2D src) override { inner_.to_host(dst, src); }
  void from_host(Tensor2D dst, const float* src) override { inner_.from_host(dst, src); }
  void kv_pack(const KvPackArgs& a) override { inner_.kv_pack(a); }
  void copy_bytes(void* dst, const void* src, size_t n) override { inner_.copy_bytes(dst, src, n); }
  void bytes_to_host(void* dst, const void* src, size_t n) override { inner_.bytes_to_host(dst, src, n); }
  void bytes_from_host(void* dst, const void* src, size_t n) override { inner_.bytes_from_host(dst, src, n); }
  void prepare_weight(const Weight& w, WeightUse use) override { inner_.prepare_weight(w, use); }
  Matrix dequantize(const Weight& w) override { return inner_.dequantize(w); }
  void round_to_bf16(Tensor2D x) override { inner_.round_to_bf16(x); }

  void embed(const Weight& table, std::span<const int32_t> ids, Tensor2D out) override {
    expect_backend(ids.data(), int64_t(ids.size()), 4, "embed ids");
    inner_.embed(table, ids, out);
  }
  void add_rms_norm(Tensor2D r, Tensor2D x, const Weight& w, float eps, Tensor2D out) override {
    inner_.add_rms_norm(r, x, w, eps, out);
  }
  void rms_norm(Tensor2D x, const Weight& w, float eps, Tensor2D out) override { inner_.rms_norm(x, w, eps, out); }
  void layer_norm(Tensor2D x, const Weight& w, const Weight& b, float eps, Tensor2D out) override {
    inner_.layer_norm(x, w, b, eps, out);
  }
  void linear(Tensor2D x, const Weight& w, Tensor2D out, const LinearQuant& q) override { inner_.linear(x, w, out, q); }
  void linear_many(Tensor2D x, std::span<const LinearOut> outs, const LinearQuant& q) override {
    inner_.linear_many(x, outs, q);
  }
  void silu_mul(Tensor2D g, Tensor2D u, Tensor2D out) override { inner_.silu_mul(g, u, out); }
  void add(Tensor2D acc, Tensor2D x) override { inner_.add(acc, x); }
  void rope(const RopeArgs& a) override {
    expect_backend(a.positions, a.x.rows, 4, "rope positions");
    expect_backend(a.inv_freq, a.rope_dim / 2, 4, "rope inv_freq");
    inner_.rope(a);
  }
  void hadamard(Tensor2D x, int64_t n) override { inner_.hadamard(x, n); }
  void fp8_quantize(Tensor2D x, int64_t g, bool ue8m0, bool deq, Tensor2D out, Tensor2D s) override {
    inner_.fp8_quantize(x, g, ue8m0, deq, out, s);
  }
  void indexer_topk(const IndexerTopkArgs& a) override {
    expect_backend(a.positions, a.q.rows, 4, "indexer positions");
    if (a.block_table)
      expect_backend(a.block_table, (a.n_keys + a.block_tokens - 1) / a.block_tokens, 4, "indexer block table");
    expect_backend(a.out_indices, a.q.rows * a.topk, 4, "indexer out_indices");
    inner_.indexer_topk(a);
  }
  void mla_attention(const MlaArgs& a) override {
    expect_backend(a.positions, a.q.rows, 4, "mla positions");
    if (a.block_table) expect_backend(a.block_table, (a.n_keys + a.block_tokens - 1) / a.block_tokens, 4, "mla block table");
    if (a.indices) expect_backend(a.indices, a.q.rows * a.n_indices, 4, "mla indices");
    inner_.mla_attention(a);
  }
  void moe_route(const MoeRouteArgs& a) override {
    expect_backend(a.out_experts, a.x.rows * a.top_k, 4, "route out_experts");
    expect_backend(a.out_weights, a.x.rows * a.top_k, 4, "route out_weights");
    inner_.moe_route(a);
  }
  void moe_experts(const MoeExpertsArgs& a) override {
    expect_backend(a.expert_ids, a.x.rows * a.top_k, 4, "experts ids");
    expect_backend(a.weights, a.x.rows * a.top_k, 4, "experts weights");
    inner_.moe_experts(a);
  }
  void moe_combine(const MoeCombineArgs& a) override {
    expect_backend(a.expert_ids, a.out.rows * a.top_k, 4, "combine ids");
    inner_.moe_combine(a);
  }

 private:
  CpuBackend inner_;
  std::map<std::string, int64_t> checks_;
  std::vector<std::string> violations_;
};

// One model on one backend, with what a test needs to run sequences through it.
struct Net {
  ModelConfig cfg;
  std::unique_ptr<Checkpoint> ckpt;
  std::unique_ptr<DeepseekV32> net;
  std::shared_ptr<KvBlockPool> pool, mtp_pool;

  Net(const fs::path& dir, Backend& be) {
    cfg = parse_hf_config_file((dir / "config.json").string());
    ckpt = Checkpoint::open(dir.string());
    net = std::make_unique<DeepseekV32>(cfg, bind_weights(*ckpt, cfg), be);
    pool = std::make_shared<KvBlockPool>(be, cfg, 64, 16, KvDtype::FP8);
    ModelConfig one = cfg;
    one.num_hidden_layers = 1;
    mtp_pool = std::make_shared<KvBlockPool>(be, one, 64, 16, KvDtype::FP8);
  }
  std::unique_ptr<KvCache> cache() const { return std::make_unique<KvCache>(pool, 256); }
  std::unique_ptr<MtpState> mtp() const {
    auto m = std::make_unique<MtpState>();
    m->cache = std::make_unique<KvCache>(mtp_pool, 256);
    return m;
  }
};

std::vector<int32_t> ids(int64_t n, int32_t seed, int64_t vocab) {
  std::vector<int32_t> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[size_t(i)] = int32_t((seed * 7919 + i * 104729) % vocab);
  return v;
}

// Every logits vector the scenario produces, in order.
std::vector<std::vector<float>> run_scenario(Net& m) {
  std::vector<std::vector<float>> out;
  const int64_t V = m.cfg.vocab_size;
  EvalOptions opts;  // fp8 precision
  std::vector<float> logits;
  // Sequence a: a 40-token prompt in chunks of 24 and 16 (past index_topk = 16: the indexer selects), then decode.
  auto a = m.cache();
  auto ma = m.net->has_mtp() ? m.mtp() : nullptr;
  const auto pa = ids(40, 1, V);
  m.net->forward(*a, std::span(pa).subspan(0, 24), opts, logits, ma.get());
  out.push_back(logits);
  m.net->forward(*a, std::span(pa).subspan(24), opts, logits, ma.get());
  out.push_back(logits);
  for (int i = 0; i < 3; ++i) {
    const int32_t t = int32_t((i * 31 + 5) % V);
    m.net->forward(*a, std::span(&t, 1), opts, logits, ma.get());
    out.push_back(logits);
  }
  // A batch: a decode token of a, and a new sequence b's 20-token prompt with every row exact (speculation's
  // verification form), all logits.
  auto b = m.cache();
  auto mb = m.net->has_mtp() ? m.mtp() : nullptr;
  const auto pb = ids(20, 2, V);
  const int32_t ta = 9;
  std::vector<float> la, lb;
  DeepseekV32::BatchItem items[2] = {{a.get(), std::span(&ta, 1), false, &la, false, ma.get()},
                                     {b.get(), std::span(pb), true, &lb, true, mb.get()}};
  m.net->forward_batch(items, opts);
  out.push_back(la);
  out.push_back(lb);
  // Drafts from the MTP module, two deep, for both sequences.
  if (m.net->has_mtp()) {
    for (int depth = 0; depth < 2; ++depth) {
      std::vector<float> da, db;
      DeepseekV32::DraftItem d[2] = {{ma.get(), int32_t(11 + depth), &da}, {mb.get(), int32_t(12 + depth), &db}};
      m.net->mtp_draft(d, opts);
      out.push_back(da);
      out.push_back(db);
    }
  }
  return out;
}

void check_model(const fs::path& dir) {
  INFO("small checkpoint " << dir << " (made by scripts/make_small_checkpoint.py; ctest runs it first)");
  REQUIRE(fs::exists(dir / "config.json"));
  CpuBackend plain(BackendOptions{2});
  FencedBackend fenced;
  Net ref(dir, plain), got(dir, fenced);
  const auto want = run_scenario(ref), have = run_scenario(got);
  for (const std::string& v : fenced.violations()) FAIL_CHECK(v);
  CHECK(fenced.violations().empty());
  // Every kind of index data was checked at least once (the scenario reaches every path that passes one).
  for (const char* what : {"embed ids", "rope positions", "rope inv_freq", "indexer positions", "indexer block table",
                           "indexer out_indices", "mla positions", "mla block table", "mla indices",
                           "route out_experts", "route out_weights", "experts ids", "experts weights"}) {
    INFO(what);
    CHECK(fenced.checks(what) > 0);
  }
  REQUIRE(have.size() == want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    INFO("logits " << i);
    REQUIRE(have[i].size() == want[i].size());
    CHECK(std::memcmp(have[i].data(), want[i].data(), want[i].size() * sizeof(float)) == 0);
  }
}

}  // namespace

TEST_CASE("every op gets its index data in backend memory, and the logits are bitwise the plain backend's") {
  check_model(kModels / "v32-tiny");
}

TEST_CASE("the same with the MTP module's cache rows and drafts") { check_model(kModels / "v32-tiny-mtp"); }
