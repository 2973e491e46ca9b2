// The public Model / Sequence API over the checkpoint, the backend and the forward pass.
#include <filesystem>
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <istream>
#include <mutex>
#include <optional>
#include <ostream>
#include <type_traits>
#include <unordered_map>

#include "backend/backend.hpp"
#include "backend/cpu/simd.hpp"
#include "backend/cuda_options.hpp"
#include "checkpoint/hf_config.hpp"
#include "checkpoint/safetensors_reader.hpp"
#include "dist/communicator.hpp"
#include "dsinfer/model.hpp"
#include "kv/kv_cache.hpp"
#include "model/deepseek_v32.hpp"
#include "model/deepseek_weights.hpp"
#include "util/chat_template_file.hpp"
#include "util/log.hpp"
#include "util/thread_pool.hpp"

namespace dsinfer {

namespace {

// --- Distributed runs (docs/distributed.md) ---------------------------------------------------------------------
// Rank 0 broadcasts every operation that changes a model's state (sequences made, evaluated, cut, copied, restored,
// dropped; MTP) before it runs it, under the model's mutex; each worker applies the same operations in the same order
// on its own Model through the same public methods. Everything they do is deterministic (the forward's values, the
// KV pools' block allocation), so every rank's caches hold the same blocks and rows, and the forward's collectives
// meet. Only rank 0 computes logits.
enum class Command : uint32_t {
  Shutdown = 1, NewSequence, DropSequence, Truncate, CopySequence, RestoreSequence, Eval, EvalBatch, EnableMtp,
  MtpDraft, ReleaseMemory, RestoreMtp
};

struct Message {
  explicit Message(Command c) { put(uint32_t(c)); }
  template <class T>
  void put(const T& v) {
    static_assert(std::is_trivially_copyable_v<T>);
    append(&v, sizeof(T));
  }
  template <class T>
  void put_span(std::span<const T> v) {
    put(uint64_t(v.size()));
    append(v.data(), v.size_bytes());
  }
  void append(const void* p, size_t n) {
    const size_t at = bytes.size();
    bytes.resize(at + n);
    if (n) std::memcpy(bytes.data() + at, p, n);
  }
  std::vector<uint8_t> bytes;
};

// Reads a Message (the same binary wrote it: a short read is a bug, not bad input).
struct MessageReader {
  const std::vector<uint8_t>& bytes;
  size_t at = 0;
  template <class T>
  T get() {
    T v;
    take(&v, sizeof(T));
    return v;
  }
  template <class T>
  std::vector<T> get_vector() {
    const uint64_t n = get<uint64_t>();
    if (n > (bytes.size() - at) / sizeof(T)) throw Error(ErrorCode::Internal, "distributed command is truncated");
    std::vector<T> v(static_cast<size_t>(n));
    take(v.data(), size_t(n) * sizeof(T));
    return v;
  }
  void take(void* dst, size_t n) {
    if (n > bytes.size() - at) throw Error(ErrorCode::Internal, "distributed command is truncated");
    std::memcpy(dst, bytes.data() + at, n);
    at += n;
  }
};

}  // namespace

// Rank 0's side: the communicator and the ids that name sequences on every rank.
struct DistLeader {
  std::shared_ptr<Communicator> comm;
  std::mutex& model_mutex;  // Model::Impl::mutex: held while a command is sent and applied here
  uint64_t next_id = 1;
  // The command, then `payload` (bulk bytes the command announces, e.g. a restored cache) without a copy.
  void send(const Message& m, std::span<uint8_t> payload = {}) {
    uint64_t n = m.bytes.size();
    comm->broadcast(&n, sizeof n, 0);
    comm->broadcast(const_cast<uint8_t*>(m.bytes.data()), m.bytes.size(), 0);
    if (!payload.empty()) comm->broadcast(payload.data(), payload.size(), 0);
  }
};

struct Sequence::Impl {
  const Model* owner = nullptr;
  std::unique_ptr<KvCache> cache;
  KvCacheDtype requested = KvCacheDtype::Auto;  // Auto: the cache's dtype follows the first evaluation's precision
  std::unique_ptr<MtpState> mtp;                 // with MTP enabled (Model::enable_mtp)
  DistLeader* leader = nullptr;                  // a distributed run's rank 0: changes are broadcast
  uint64_t id = 0;                               // the sequence's name on every rank
};

const char* kv_cache_dtype_name(KvCacheDtype d) {
  switch (d) {
    case KvCacheDtype::Auto: return "auto";
    case KvCacheDtype::F32: return "f32";
    case KvCacheDtype::Bf16: return "bf16";
    case KvCacheDtype::Fp8: return "fp8";
  }
  return "?";
}

bool kv_cache_dtype_from_name(std::string_view s, KvCacheDtype* out) {
  for (KvCacheDtype d : {KvCacheDtype::Auto, KvCacheDtype::F32, KvCacheDtype::Bf16, KvCacheDtype::Fp8})
    if (s == kv_cache_dtype_name(d)) {
      *out = d;
      return true;
    }
  return false;
}

namespace {
KvDtype to_kv_dtype(KvCacheDtype d) {
  return d == KvCacheDtype::Fp8 ? KvDtype::FP8 : d == KvCacheDtype::Bf16 ? KvDtype::BF16 : KvDtype::F32;
}
KvCacheDtype to_public(KvDtype d) {
  return d == KvDtype::FP8 ? KvCacheDtype::Fp8 : d == KvDtype::BF16 ? KvCacheDtype::Bf16 : KvCacheDtype::F32;
}
}  // namespace

Sequence::Sequence(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Sequence::~Sequence() {
  if (!impl_ || !impl_->leader) return;
  DistLeader& leader = *impl_->leader;
  std::lock_guard<std::mutex> lock(leader.model_mutex);
  try {
    if (!leader.comm->broken()) {
      Message m(Command::DropSequence);
      m.put(impl_->id);
      leader.send(m);
    }
  } catch (const Error& e) {
    log_fmt(LogLevel::Error, "dropping a sequence on the workers failed: {}", e.what());
  }
  impl_.reset();
}
int64_t Sequence::size() const { return impl_->cache->size(); }
int64_t Sequence::capacity() const { return impl_->cache->capacity(); }
KvCacheDtype Sequence::kv_cache_dtype() const {
  return impl_->requested == KvCacheDtype::Auto && impl_->cache->size() == 0 ? KvCacheDtype::Auto
                                                                             : to_public(impl_->cache->dtype());
}
void Sequence::truncate(int64_t n) {
  std::unique_lock<std::mutex> lock;
  if (impl_->leader) {
    lock = std::unique_lock<std::mutex>(impl_->leader->model_mutex);
    Message m(Command::Truncate);
    m.put(impl_->id);
    m.put(n);
    impl_->leader->send(m);
  }
  impl_->cache->truncate(n);
  if (impl_->mtp) impl_->mtp->truncate_main(n, impl_->owner->info().hidden_size);
}

struct Model::Impl {
  ModelConfig config;
  ModelInfo info;
  std::unique_ptr<Checkpoint> checkpoint;  // keeps the shards mapped: weights point into them
  std::unique_ptr<Backend> backend;
  std::unique_ptr<DeepseekV32> net;
  std::mutex mutex;  // one forward at a time per model (the backend's thread pool is not reentrant)
  int host_threads = 1;
  std::vector<DeepseekV32::BatchItem> batch_items;  // eval_batch's list, reused under `mutex` (no per-step allocation)
  std::string fingerprint;
  // One pool per cache dtype (indexed by KvDtype), made when a sequence first needs it.
  int64_t pool_blocks = 0, pool_block_tokens = 0;
  KvCacheDtype load_dtype = KvCacheDtype::Auto;
  KvDtype fp8_precision_dtype = KvDtype::F32;  // what Auto gives a sequence evaluated in fp8 precision
  std::mutex pool_mutex;
  std::shared_ptr<KvBlockPool> pools[3];
  std::shared_ptr<KvBlockPool> mtp_pools[3];  // the MTP layer's caches: one layer, as many blocks
  // Distributed runs: the communicator (every rank), and on rank 0 the leader that broadcasts state changes.
  std::shared_ptr<Communicator> comm;
  std::unique_ptr<DistLeader> leader;

  std::shared_ptr<KvBlockPool> pool(KvDtype d) {
    std::lock_guard<std::mutex> lock(pool_mutex);
    auto& p = pools[size_t(d)];
    if (!p) p = std::make_shared<KvBlockPool>(*backend, config, pool_blocks, pool_block_tokens, d);
    return p;
  }
  std::shared_ptr<KvBlockPool> mtp_pool(KvDtype d) {
    std::lock_guard<std::mutex> lock(pool_mutex);
    auto& p = mtp_pools[size_t(d)];
    if (!p) {
      ModelConfig one = config;
      one.num_hidden_layers = 1;
      p = std::make_shared<KvBlockPool>(*backend, one, pool_blocks, pool_block_tokens, d);
    }
    return p;
  }
  // The dtype a sequence asking for `d` gets when evaluated in `precision`.
  KvDtype resolve(KvCacheDtype d, Precision precision) const {
    if (d == KvCacheDtype::Auto) d = load_dtype;
    if (d == KvCacheDtype::Auto) return precision == Precision::Fp8 ? fp8_precision_dtype : KvDtype::F32;
    return to_kv_dtype(d);
  }
  // Before an evaluation: an empty Auto sequence moves to the pool its precision asks for.
  void bind(Sequence::Impl& s, Precision precision) {
    if (s.requested != KvCacheDtype::Auto || s.cache->size() != 0 || !s.cache->block_table().empty()) return;
    const KvDtype d = resolve(KvCacheDtype::Auto, precision);
    if (s.cache->dtype() != d) s.cache->set_pool(pool(d));
    if (s.mtp && s.mtp->cache->dtype() != d) s.mtp->cache->set_pool(mtp_pool(d));
  }
};

Model::Model(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Model::~Model() {
  if (!impl_ || !impl_->leader) return;
  std::lock_guard<std::mutex> lock(impl_->mutex);
  try {
    if (!impl_->comm->broken()) impl_->leader->send(Message(Command::Shutdown));
  } catch (const Error& e) {
    log_fmt(LogLevel::Error, "stopping the workers failed: {}", e.what());
  }
}

namespace {

int64_t stored_bytes(const Weight& w) { return w.present() ? w.numel() * int64_t(dtype_size(w.dtype)) : 0; }

void count_weight(const Weight& w, ModelInfo& info) {
  if (!w.present()) return;
  info.parameter_count += w.numel();
  info.weight_bytes += stored_bytes(w);
}

template <class F>
void for_each_layer_weight(const LayerWeights& l, F&& f) {
  using Use = Backend::WeightUse;
  auto mlp = [&](const MlpWeights& m) { f(m.gate_proj, Use::Linear); f(m.up_proj, Use::Linear); f(m.down_proj, Use::Linear); };
  {
    f(l.input_layernorm, Use::Other);
    f(l.post_attention_layernorm, Use::Other);
    const auto& a = l.attn;
    for (const Weight* w : {&a.q_a_proj, &a.q_b_proj, &a.q_proj, &a.kv_a_proj_with_mqa, &a.o_proj}) f(*w, Use::Linear);
    // kv_b is dequantized once by the model (MLA absorbs it); the norms are vectors.
    for (const Weight* w : {&a.q_a_layernorm, &a.kv_a_layernorm, &a.kv_b_proj}) f(*w, Use::Other);
    const auto& i = l.indexer;
    for (const Weight* w : {&i.wq_b, &i.wk, &i.weights_proj}) f(*w, Use::Linear);
    for (const Weight* w : {&i.k_norm_weight, &i.k_norm_bias}) f(*w, Use::Other);
    if (l.is_moe) {
      f(l.moe.gate, Use::Linear);  // the router's logits are an (unquantized) linear
      f(l.moe.e_score_correction_bias, Use::Other);
      for (const auto& e : l.moe.experts) mlp(e);
      mlp(l.moe.shared);
    } else {
      mlp(l.mlp);
    }
  }
}

template <class F>
void for_each_weight(const ModelWeights& mw, F&& f) {
  using Use = Backend::WeightUse;
  const bool tied = mw.lm_head.data == mw.embed_tokens.data;
  f(mw.embed_tokens, tied ? Use::Linear : Use::Other);  // rows looked up, unless it is the lm_head too
  f(mw.norm, Use::Other);
  if (!tied) f(mw.lm_head, Use::Linear);
  for (const auto& l : mw.layers) for_each_layer_weight(l, f);
}

// The MTP module's tensors (not the shared embedding and head).
template <class F>
void for_each_mtp_weight(const MtpWeights& m, F&& f) {
  using Use = Backend::WeightUse;
  f(m.enorm, Use::Other);
  f(m.hnorm, Use::Other);
  f(m.eh_proj, Use::Linear);
  f(m.shared_head_norm, Use::Other);
  for_each_layer_weight(m.layer, f);
}

// The stored bytes of a MoE block's routed experts, all of them and the top_k / n_routed share a decode row reads.
int64_t routed_expert_bytes(const MoeWeights& moe) {
  int64_t bytes = 0;
  for (const auto& e : moe.experts)
    for (const Weight* w : {&e.gate_proj, &e.up_proj, &e.down_proj}) bytes += stored_bytes(*w);
  return bytes;
}
int64_t routed_expert_bytes_read(const MoeWeights& moe, const ModelConfig& c) {
  return c.n_routed_experts > 0 ? routed_expert_bytes(moe) * c.num_experts_per_tok / c.n_routed_experts : 0;
}

// ModelInfo::decode_routed_expert_bytes.
int64_t decode_routed_expert_bytes(const ModelWeights& mw, const ModelConfig& c) {
  int64_t total = 0;
  for (const auto& l : mw.layers)
    if (l.is_moe) total += routed_expert_bytes_read(l.moe, c);
  return total;
}

// ModelInfo::decode_weight_bytes: every weight, one embedding row, the routed experts' share a row reads.
int64_t decode_weight_bytes(const ModelWeights& mw, const ModelConfig& c) {
  int64_t total = 0;
  for_each_weight(mw, [&](const Weight& w, Backend::WeightUse) { total += stored_bytes(w); });
  if (mw.lm_head.data != mw.embed_tokens.data && mw.embed_tokens.present()) {  // one row looked up, not the table
    const int64_t table = stored_bytes(mw.embed_tokens);
    total -= table - table / std::max<int64_t>(1, mw.embed_tokens.rows());
  }
  for (const auto& l : mw.layers)
    if (l.is_moe && c.n_routed_experts > 0) total -= routed_expert_bytes(l.moe) - routed_expert_bytes_read(l.moe, c);
  return total;
}

}  // namespace

Model::DistributedRank Model::distributed_rank() {
  DistributedRank r;
  mpi_world_place(&r.rank, &r.size);
  return r;
}

namespace {
// ModelLoadParams::distributed_timeout_s, checked whatever `distributed` says, before MPI is asked anything.
void check_dist_timeout(const ModelLoadParams& params) {
  if (!(params.distributed_timeout_s >= 0 && params.distributed_timeout_s <= 1e6))
    throw Error(ErrorCode::InvalidArgument, fmt::format("ModelLoadParams::distributed_timeout_s must be 0 (120 s) to "
                                                        "1e6 seconds, got {}", params.distributed_timeout_s));
}
}  // namespace

std::unique_ptr<Model> Model::load(const std::string& dir, const ModelLoadParams& params) {
  check_dist_timeout(params);
  if (params.distributed) {
    const DistributedRank r = distributed_rank();
    if (r.rank != 0)
      throw Error(ErrorCode::InvalidArgument, fmt::format("this process is rank {} of {}: in a distributed run rank 0 "
                                                          "calls Model::load and the others Model::run_worker",
                                                          r.rank, r.size));
  }
  return load_shard(dir, params, /*worker=*/false);
}

namespace {
// How long a distributed rank waits for its peers: DSINFER_DIST_TIMEOUT (seconds) over the parameter, else 120 s.
double dist_timeout(const ModelLoadParams& params) {
  check_dist_timeout(params);
  double t = params.distributed_timeout_s > 0 ? params.distributed_timeout_s : 120.0;
  if (const char* env = std::getenv("DSINFER_DIST_TIMEOUT"); env && *env) {
    char* end = nullptr;
    const double v = std::strtod(env, &end);
    if (end && *end == '\0' && v > 0 && v <= 1e6) {
      log_fmt(LogLevel::Warn, "DSINFER_DIST_TIMEOUT={} overrides the distributed timeout", v);
      t = v;
    } else {
      log_fmt(LogLevel::Warn, "DSINFER_DIST_TIMEOUT is not a number of seconds in (0, 1e6]: ignored");
    }
  }
  return t;
}

// After every rank's load: each rank's outcome and weight bytes, in rank order, on every rank.
struct LoadStatus {
  int32_t code = 0;  // ErrorCode, 0 = loaded
  int64_t weight_bytes = 0;
  uint64_t fingerprint_hash = 0;
  char message[480] = {};
};
}  // namespace

std::unique_ptr<Model> Model::load_shard(const std::string& dir, const ModelLoadParams& params, bool worker) {
  auto progress = [&](double f, std::string_view stage) {
    if (params.progress) params.progress(f, stage);
  };
  // The parameters first, before anything is read or allocated: each limit is documented in docs/errors.md.
  if (params.n_threads < 0 || params.n_threads > ThreadPool::kMaxThreads)
    throw Error(ErrorCode::InvalidArgument, fmt::format("ModelLoadParams::n_threads must be 0 (all hardware threads) "
                                                        "to {}, got {}", ThreadPool::kMaxThreads, params.n_threads));
  if (params.kv_block_tokens < 0 || params.kv_block_tokens > KvBlockPool::kMaxBlockTokens)
    throw Error(ErrorCode::InvalidArgument, fmt::format("ModelLoadParams::kv_block_tokens must be 0 (64) to {}, got {}",
                                                        KvBlockPool::kMaxBlockTokens, params.kv_block_tokens));
  if (params.kv_cache_tokens < 0 || params.kv_cache_tokens > KvBlockPool::kMaxPoolTokens)
    throw Error(ErrorCode::InvalidArgument, fmt::format("ModelLoadParams::kv_cache_tokens must be 0 (32768) to {}, got {}",
                                                        KvBlockPool::kMaxPoolTokens, params.kv_cache_tokens));
  check_cuda_options(params.cuda);  // whatever the backend: a bad value is the caller's mistake either way
  if (params.cpu_kernels != "auto") fix_cpu_kernel_isa(params.cpu_kernels);
  // A distributed run's communicator first: making it is collective, so every rank gets there whatever happens
  // next, and a rank's load error then reaches rank 0 through the status exchange below instead of leaving it
  // waiting.
  std::shared_ptr<Communicator> comm;
  if (params.distributed) {
    comm = mpi_world_communicator(dist_timeout(params));
    if (comm->size() == 1) comm.reset();  // one rank: an ordinary model
  }
  log_fmt(LogLevel::Info, "loading {} (backend {}, {} threads{})", dir, params.backend,
          params.n_threads == 0 ? std::string("all") : std::to_string(params.n_threads),
          comm ? fmt::format(", rank {} of {}", comm->rank(), comm->size()) : std::string());
  const auto load_start = std::chrono::steady_clock::now();
  auto impl = std::make_unique<Impl>();
  impl->comm = comm;
  LoadStatus mine;
  try {
    progress(0.0, "reading config.json");
    impl->config = parse_hf_config_file(dir + "/config.json");
    progress(0.05, "mapping safetensors shards");
    impl->checkpoint = Checkpoint::open(dir);
    progress(0.15, "checking tensors");
    ModelWeights weights = bind_weights(*impl->checkpoint, impl->config);
    BackendOptions bo;
    bo.n_threads = params.n_threads;
    bo.cuda = params.cuda;
    impl->backend = create_backend(params.backend, bo);
    impl->host_threads = ThreadPool::resolve_threads(params.n_threads);

    ModelInfo& info = impl->info;
    const ModelConfig& c = impl->config;
    info.model_type = c.model_type;
    info.has_indexer = c.has_indexer();
    info.fp8_weights = c.quant.fp8;
    info.vocab_size = c.vocab_size;
    info.hidden_size = c.hidden_size;
    info.num_layers = c.num_hidden_layers;
    info.index_topk = c.index_topk;
    info.bos_token_id = c.bos_token_id;
    info.eos_token_ids = c.eos_token_ids;
    if (std::filesystem::exists(std::filesystem::path(dir) / "generation_config.json"))
      info.generation = load_generation_config(dir);
    else {
      info.generation.do_sample = false;  // no recommendation: greedy, transformers' default
      log_fmt(LogLevel::Info, "{} has no generation_config.json: sampling defaults to greedy", dir);
    }
    info.chat_template = read_chat_template(dir);
    // The whole model's counts and fingerprint (the same on every rank of a distributed run); then the tensors this
    // process holds are prepared: all of them, or in a distributed run its share of the routed experts and the rest.
    for_each_weight(weights, [&](const Weight& w, Backend::WeightUse) { count_weight(w, info); });
    info.decode_weight_bytes = decode_weight_bytes(weights, c);
    info.decode_routed_expert_bytes = decode_routed_expert_bytes(weights, c);
    if (c.n_routed_experts > 0) {
      info.n_routed_experts = c.n_routed_experts;
      info.experts_per_token = c.num_experts_per_tok;
    }
    if (weights.mtp) {
      info.has_mtp = true;
      for_each_mtp_weight(*weights.mtp, [&](const Weight& w, Backend::WeightUse) {
        if (!w.present()) return;
        info.mtp_parameter_count += w.numel();
        info.mtp_weight_bytes += stored_bytes(w);
      });
      const MoeWeights& moe = weights.mtp->layer.moe;
      const int64_t unread =
          c.n_routed_experts > 0 ? routed_expert_bytes(moe) - routed_expert_bytes_read(moe, c) : 0;
      info.mtp_draft_weight_bytes = info.mtp_weight_bytes + stored_bytes(weights.lm_head) - unread;
    }
    for (const auto& l : weights.layers)
      info.indexer_query_bytes += stored_bytes(l.indexer.wq_b) + stored_bytes(l.indexer.weights_proj);
    // Fingerprint: what the config says plus FNV-1a over up to 64 KiB of the embedding and the lm_head, enough to
    // tell checkpoints apart when a saved sequence is restored.
    uint64_t h = 0xcbf29ce484222325ull;
    for (const Weight* w : {&weights.embed_tokens, &weights.lm_head}) {
      const size_t n = std::min<size_t>(65536, size_t(w->numel()) * dtype_size(w->dtype));
      for (size_t i = 0; i < n; ++i) h = (h ^ w->data[i]) * 0x100000001b3ull;
    }
    impl->fingerprint = fmt::format("{}:{}x{}x{}:{}:{}:{:016x}", c.model_type, c.vocab_size, c.hidden_size,
                                    c.num_hidden_layers, info.parameter_count, info.weight_bytes, h);

    const ModelShard shard = make_shard(impl->comm.get(), c);
    if (shard.distributed()) {  // the other ranks' experts: unbound, so never read (their pages stay on disk)
      auto drop = [&](LayerWeights& l) {
        if (!l.is_moe) return;
        for (int64_t e = 0; e < int64_t(l.moe.experts.size()); ++e)
          if (e < shard.expert_begin || e >= shard.expert_end) l.moe.experts[size_t(e)] = MlpWeights{};
      };
      for (auto& l : weights.layers) drop(l);
      if (weights.mtp) drop(weights.mtp->layer);
    }
    // The model first (it decides which weights a distributed rank reads only through views of its rows), then the
    // backend prepares what will be read: every weight, except that a distributed rank prepares its rows of q_b,
    // o_proj and lm_head (where they are split) instead of the whole tensors, whose other rows it never reads. A
    // lm_head tied to the embedding is prepared as the embedding it also is.
    progress(0.2, "building the model");
    impl->net = std::make_unique<DeepseekV32>(c, std::move(weights), *impl->backend, shard);
    const DeepseekV32& net = *impl->net;
    info.attention_split_by_heads = net.shard().split_heads;
    const ModelWeights& mw = net.weights();
    const bool lm_head_tied = mw.lm_head.data == mw.embed_tokens.data;
    int64_t n_weights = 0, done = 0, held_bytes = 0;
    for_each_weight(mw, [&](const Weight& w, Backend::WeightUse) { n_weights += w.present(); });
    auto prepare = [&](const Weight& w, Backend::WeightUse use) {
      held_bytes += stored_bytes(w);
      impl->backend->prepare_weight(w, use);
      if (++done % 64 == 0) progress(0.2 + 0.75 * double(done) / double(n_weights), "preparing weights");
    };
    for_each_weight(mw, [&](const Weight& w, Backend::WeightUse use) {
      if (!w.present() || net.read_as_rows(w)) return;
      if (shard.distributed() && lm_head_tied && &w == &mw.embed_tokens) use = Backend::WeightUse::Other;
      prepare(w, use);
    });
    if (mw.mtp)
      for_each_mtp_weight(*mw.mtp, [&](const Weight& w, Backend::WeightUse use) {
        if (w.present() && !net.read_as_rows(w)) prepare(w, use);
      });
    for (const Weight* v : net.row_views()) {
      if (v == &net.lm_head_rows() && lm_head_tied) {  // (its bytes are the embedding's, counted there)
        impl->backend->prepare_weight(*v, Backend::WeightUse::Linear);
        continue;
      }
      prepare(*v, Backend::WeightUse::Linear);
    }
    info.distributed_ranks = shard.world;
    info.rank_weight_bytes.assign(size_t(shard.world), 0);
    info.rank_weight_bytes[size_t(shard.rank)] = held_bytes;
    const int64_t block = params.kv_block_tokens > 0 ? params.kv_block_tokens : 64;
    const int64_t tokens = params.kv_cache_tokens > 0 ? params.kv_cache_tokens : 32768;
    impl->pool_blocks = tokens / block + (tokens % block != 0);  // no overflow near INT64_MAX
    impl->pool_block_tokens = block;
    impl->load_dtype = params.kv_cache_dtype;
    impl->fp8_precision_dtype = impl->backend->supports_kv_dtype(KvDtype::FP8) ? KvDtype::FP8 : KvDtype::F32;
    const KvDtype fp8_dtype = impl->resolve(KvCacheDtype::Auto, Precision::Fp8);
    info.kv_cache_dtype = to_public(fp8_dtype);
    info.kv_bytes_per_token_layer = KvBlockPool::bytes_per_token_layer(c, fp8_dtype);
    info.kv_bytes_per_token = info.kv_bytes_per_token_layer * c.num_hidden_layers;
    info.kv_index_bytes_per_token_layer = KvBlockPool::index_bytes_per_token_layer(c, fp8_dtype);
    impl->pool(fp8_dtype);  // the default pool now, so that a dtype the backend cannot hold fails the load
    progress(1.0, "ready");
    log_fmt(LogLevel::Info,
            "loaded {}: {}, {} layers, {} parameters, {:.1f} GB of weights, KV cache {} ({} bytes/token), {:.1f} s",
            dir, c.model_type, c.num_hidden_layers, info.parameter_count, double(info.weight_bytes) / 1e9,
            kv_cache_dtype_name(info.kv_cache_dtype), info.kv_bytes_per_token,
            std::chrono::duration<double>(std::chrono::steady_clock::now() - load_start).count());
  } catch (const Error& e) {
    if (!comm) throw;
    mine.code = int32_t(e.code());
    std::snprintf(mine.message, sizeof mine.message, "%s", e.what());
  } catch (const std::exception& e) {
    if (!comm) throw;
    mine.code = int32_t(ErrorCode::Internal);
    std::snprintf(mine.message, sizeof mine.message, "%s", e.what());
  }
  if (comm) {
    // Every rank learns how every rank's load went (no timeout: ranks may load at very different speeds).
    const int W = comm->size();
    if (mine.code == 0) {
      mine.weight_bytes = impl->info.rank_weight_bytes[size_t(comm->rank())];
      for (const char ch : impl->fingerprint) mine.fingerprint_hash = (mine.fingerprint_hash ^ uint8_t(ch)) * 0x100000001b3ull;
    }
    std::vector<LoadStatus> all(static_cast<size_t>(W));
    comm->all_gather(&mine, all.data(), sizeof mine, /*idle=*/true);
    for (int r = 0; r < W; ++r) {
      const LoadStatus& st = all[size_t(r)];
      if (st.code != 0) {
        if (r == comm->rank()) throw Error(ErrorCode(st.code), st.message);
        throw Error(worker ? ErrorCode::Device : ErrorCode(st.code),
                    fmt::format("rank {} of {} could not load {}: {}", r, W, dir, std::string(st.message)));
      }
      if (st.fingerprint_hash != all[0].fingerprint_hash)
        throw Error(ErrorCode::InvalidArgument, fmt::format("rank {} loaded a different checkpoint than rank 0 (every "
                                                            "rank must load the same one)", r));
      impl->info.rank_weight_bytes[size_t(r)] = st.weight_bytes;
    }
    if (!worker) impl->leader.reset(new DistLeader{comm, impl->mutex});
  }
  return std::unique_ptr<Model>(new Model(std::move(impl)));
}

const ModelInfo& Model::info() const { return impl_->info; }

std::unique_ptr<Sequence> Model::new_sequence(int64_t capacity, KvCacheDtype dtype) const {
  std::unique_lock<std::mutex> lock;
  uint64_t id = 0;
  if (impl_->leader) {
    lock = std::unique_lock<std::mutex>(impl_->mutex);
    id = impl_->leader->next_id++;
    Message m(Command::NewSequence);
    m.put(id);
    m.put(capacity);
    m.put(dtype);
    impl_->leader->send(m);
  }
  const KvDtype d = impl_->resolve(dtype, Precision::Fp8);
  auto s = std::make_unique<Sequence::Impl>(Sequence::Impl{this, std::make_unique<KvCache>(impl_->pool(d), capacity),
                                                           dtype == KvCacheDtype::Auto ? impl_->load_dtype : dtype});
  s->leader = impl_->leader.get();
  s->id = id;
  return std::unique_ptr<Sequence>(new Sequence(std::move(s)));
}

int64_t Model::kv_cache_bytes(int64_t tokens, KvCacheDtype dtype) const {
  if (tokens < 0) throw Error(ErrorCode::InvalidArgument, "kv_cache_bytes: negative token count");
  const KvDtype d = dtype == KvCacheDtype::Auto ? to_kv_dtype(impl_->info.kv_cache_dtype) : to_kv_dtype(dtype);
  const int64_t B = impl_->pool_block_tokens;
  return (tokens + B - 1) / B * B * KvBlockPool::bytes_per_token_layer(impl_->config, d) *
         impl_->config.num_hidden_layers;
}

Model::KvCacheStats Model::kv_cache_stats() const {
  KvCacheStats st;
  st.blocks_total = impl_->pool_blocks;
  st.block_tokens = impl_->pool_block_tokens;
  st.bytes_per_token = impl_->info.kv_bytes_per_token;
  st.bytes_per_block = st.bytes_per_token * st.block_tokens;
  std::lock_guard<std::mutex> lock(impl_->pool_mutex);
  for (const auto& p : impl_->pools)
    if (p) {
      st.blocks_used += p->used_blocks();
      st.bytes_used += p->used_blocks() * int64_t(p->bytes_per_block());
    }
  for (const auto& p : impl_->mtp_pools)  // the MTP layer's caches: bytes only (their blocks are another pool's)
    if (p) st.bytes_used += p->used_blocks() * int64_t(p->bytes_per_block());
  return st;
}

Model::BackendMemoryStats Model::backend_memory_stats() const {
  const dsinfer::BackendMemoryStats b = impl_->backend->memory_stats();
  return {int64_t(b.scratch_bytes), int64_t(b.cached_activation_bytes)};
}

void Model::release_memory() const {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  if (impl_->leader) impl_->leader->send(Message(Command::ReleaseMemory));
  {
    std::lock_guard<std::mutex> pools(impl_->pool_mutex);
    for (const auto& p : impl_->pools)
      if (p) p->discard_free_blocks();
    for (const auto& p : impl_->mtp_pools)
      if (p) p->discard_free_blocks();
  }
  impl_->backend->release_memory();
}

const std::string& Model::fingerprint() const { return impl_->fingerprint; }
int Model::host_threads() const { return impl_->host_threads; }

std::unique_ptr<Sequence> Model::copy_sequence(const Sequence& src, int64_t capacity) const {
  if (src.impl_->owner != this) throw Error(ErrorCode::InvalidArgument, "the sequence was created by a different model");
  std::lock_guard<std::mutex> lock(impl_->mutex);
  uint64_t id = 0;
  if (impl_->leader) {
    id = impl_->leader->next_id++;
    Message m(Command::CopySequence);
    m.put(src.impl_->id);
    m.put(id);
    m.put(capacity);
    impl_->leader->send(m);
  }
  const int64_t cap = capacity > 0 ? capacity : src.capacity();
  auto s = std::make_unique<Sequence::Impl>(Sequence::Impl{this, src.impl_->cache->fork(cap), src.impl_->requested});
  if (src.impl_->mtp) s->mtp = src.impl_->mtp->fork(cap + kMaxDraftTokens);
  s->leader = impl_->leader.get();
  s->id = id;
  return std::unique_ptr<Sequence>(new Sequence(std::move(s)));
}

void Model::enable_mtp(Sequence& seq, bool on, std::span<const int32_t> tokens, const EvalOptions& opts) const {
  if (seq.impl_->owner != this) throw Error(ErrorCode::InvalidArgument, "the sequence was created by a different model");
  std::lock_guard<std::mutex> lock(impl_->mutex);
  Sequence::Impl& s = *seq.impl_;
  if (impl_->leader) {
    Message m(Command::EnableMtp);
    m.put(s.id);
    m.put(on);
    m.put(opts);
    m.put_span(tokens);
    impl_->leader->send(m);
  }
  if (!on) {
    s.mtp.reset();
    return;
  }
  if (!impl_->net->has_mtp())
    throw Error(ErrorCode::Unsupported, "the checkpoint has no MTP module (num_nextn_predict_layers 0, or its layer "
                                        "is not stored)");
  if (s.mtp) return;
  if (int64_t(tokens.size()) != s.cache->size())
    throw Error(ErrorCode::InvalidArgument, fmt::format("enable_mtp: {} token ids given for a sequence of {} tokens",
                                                        tokens.size(), s.cache->size()));
  for (const int32_t t : tokens)
    if (t < 0 || t >= impl_->info.vocab_size)
      throw Error(ErrorCode::InvalidArgument, fmt::format("enable_mtp: token id {} is out of range", t));
  auto m = std::make_unique<MtpState>();
  m->cache = std::make_unique<KvCache>(impl_->mtp_pool(s.cache->dtype()), s.cache->capacity() + kMaxDraftTokens);
  if (!tokens.empty()) impl_->net->mtp_rebuild(*m, tokens, opts);
  s.mtp = std::move(m);
}

bool Model::mtp_enabled(const Sequence& seq) const { return seq.impl_->mtp != nullptr; }

void Model::mtp_draft(std::span<DraftEntry> entries, const EvalOptions& opts) const {
  std::vector<DeepseekV32::DraftItem> items;
  for (auto& e : entries) {
    if (!e.sequence || e.sequence->impl_->owner != this)
      throw Error(ErrorCode::InvalidArgument, "a draft entry's sequence is missing or belongs to a different model");
    MtpState* m = e.sequence->impl_->mtp.get();
    if (!m) throw Error(ErrorCode::InvalidArgument, "mtp_draft: MTP is not enabled on the sequence (Model::enable_mtp)");
    if (m->draft_depth >= kMaxDraftTokens)
      throw Error(ErrorCode::OutOfMemory, fmt::format("mtp_draft: at most {} chained drafts", kMaxDraftTokens));
    items.push_back({m, e.token, &e.logits});
  }
  std::lock_guard<std::mutex> lock(impl_->mutex);
  if (impl_->leader && !entries.empty()) {
    Message m(Command::MtpDraft);
    m.put(opts);
    m.put(uint64_t(entries.size()));
    for (const auto& e : entries) {
      m.put(e.sequence->impl_->id);
      m.put(e.token);
    }
    impl_->leader->send(m);
  }
  impl_->net->mtp_draft(items, opts);
}

namespace {
// Sequence files. Version 3: magic, fingerprint, token count, the cache dtype (KvDtype as u64), the cache bytes
// (KvCache::to_host's layout for that dtype), then the MTP module's state (MtpState): u64 1 when the sequence has
// one, else 0; when 1, its committed rows (u64 count, then their one-layer cache bytes in the same dtype), the main
// model's hidden state the next MTP row reads (u64 count, 0 or hidden_size, then f32s) and the deferred rows'
// inputs (u64 count, then their token ids as i32 and their hidden states as f32). Without it a restored speculating
// session rebuilt the MTP rows from the tokens with zero hidden states, and drafted worse until the context moved on.
// Version 2: the same without the MTP part; version 1 (before the packed dtypes): also without the dtype, an f32
// cache. Both are still read.
constexpr char kSeqMagic[8] = {'D', 'S', 'I', 'S', 'E', 'Q', '0', '3'};
constexpr char kSeqMagicV2[8] = {'D', 'S', 'I', 'S', 'E', 'Q', '0', '2'};
constexpr char kSeqMagicV1[8] = {'D', 'S', 'I', 'S', 'E', 'Q', '0', '1'};
void write_u64(std::ostream& o, uint64_t v) { o.write(reinterpret_cast<const char*>(&v), 8); }
// A restored sequence's cache: n tokens' rows, whose bytes (KvCache::to_host's layout) `fill` writes into the buffer
// it is given (from the file on rank 0, from rank 0's broadcast on a worker).
template <class Fill>
void restore_cache(KvCache& cache, int64_t n, Fill&& fill) {
  cache.prepare_append(n);
  cache.set_size(n);
  std::vector<uint8_t> host(cache.host_bytes());
  fill(host);
  cache.from_host(host.data(), host.size());
}
// The bytes from the read position to the end, where the stream can tell (a file can; a pipe cannot).
std::optional<uint64_t> stream_bytes_left(std::istream& in) {
  const std::streampos at = in.tellg();
  if (at == std::streampos(-1)) return std::nullopt;
  in.seekg(0, std::ios::end);
  const std::streampos end = in.tellg();
  in.seekg(at);
  if (end == std::streampos(-1) || !in) {
    in.clear();
    in.seekg(at);
    return std::nullopt;
  }
  return uint64_t(end - at);
}
uint64_t read_u64(std::istream& in) {
  uint64_t v = 0;
  in.read(reinterpret_cast<char*>(&v), 8);
  if (!in) throw Error(ErrorCode::Format, "sequence file is truncated");
  return v;
}
// n values of T, after checking that the stream (where it can tell) has their bytes: a crafted count must not
// allocate gigabytes before "truncated".
template <class T>
std::vector<T> read_array(std::istream& in, uint64_t n, const char* what) {
  if (const auto left = stream_bytes_left(in); left && *left / sizeof(T) < n)
    throw Error(ErrorCode::Format, fmt::format("sequence file is truncated in {}", what));
  std::vector<T> v(static_cast<size_t>(n));
  in.read(reinterpret_cast<char*>(v.data()), std::streamsize(n * sizeof(T)));
  if (!in) throw Error(ErrorCode::Format, fmt::format("sequence file is truncated in {}", what));
  return v;
}
template <class T>
void write_array(std::ostream& o, const std::vector<T>& v) {
  write_u64(o, v.size());
  o.write(reinterpret_cast<const char*>(v.data()), std::streamsize(v.size() * sizeof(T)));
}
}  // namespace

// A restored sequence's MTP state (the rows' bytes as KvCache::to_host wrote them), on rank 0 and on every worker.
void Model::install_mtp_state(Sequence& seq, int64_t rows, std::vector<uint8_t>& row_bytes, std::vector<float> pending,
                              std::vector<int32_t> deferred_ids, std::vector<float> deferred_hidden) const {
  Sequence::Impl& s = *seq.impl_;
  auto m = std::make_unique<MtpState>();
  m->cache = std::make_unique<KvCache>(impl_->mtp_pool(s.cache->dtype()), s.cache->capacity() + kMaxDraftTokens);
  restore_cache(*m->cache, rows, [&](std::vector<uint8_t>& host) {
    if (host.size() != row_bytes.size()) throw Error(ErrorCode::Format, "sequence file: the MTP cache has the wrong size");
    host.swap(row_bytes);
  });
  m->pending = std::move(pending);
  m->deferred_ids = std::move(deferred_ids);
  m->deferred_hidden = std::move(deferred_hidden);
  s.mtp = std::move(m);
}

void Model::save_sequence(const Sequence& seq, std::ostream& out) const {
  if (seq.impl_->owner != this) throw Error(ErrorCode::InvalidArgument, "the sequence was created by a different model");
  out.write(kSeqMagic, 8);
  write_u64(out, impl_->fingerprint.size());
  out.write(impl_->fingerprint.data(), std::streamsize(impl_->fingerprint.size()));
  write_u64(out, uint64_t(seq.size()));
  write_u64(out, uint64_t(seq.impl_->cache->dtype()));
  std::vector<uint8_t> host;
  seq.impl_->cache->to_host(host);
  out.write(reinterpret_cast<const char*>(host.data()), std::streamsize(host.size()));
  const MtpState* mtp = seq.impl_->mtp.get();
  write_u64(out, mtp ? 1 : 0);
  if (mtp) {
    // Only the committed rows: draft rows (written by mtp_draft, forgotten by the next evaluation) are not state.
    const int64_t rows = mtp->cache->size() - mtp->draft_depth;
    write_u64(out, uint64_t(rows));
    if (mtp->draft_depth > 0) {
      auto committed = mtp->cache->fork(mtp->cache->capacity());  // shares the blocks: allocates nothing
      committed->truncate(rows);
      committed->to_host(host);
    } else {
      mtp->cache->to_host(host);
    }
    out.write(reinterpret_cast<const char*>(host.data()), std::streamsize(host.size()));
    write_array(out, mtp->pending);
    write_array(out, mtp->deferred_ids);
    out.write(reinterpret_cast<const char*>(mtp->deferred_hidden.data()),
              std::streamsize(mtp->deferred_hidden.size() * sizeof(float)));
  }
  if (!out) throw Error(ErrorCode::Io, "writing the sequence failed");
}

std::unique_ptr<Sequence> Model::load_sequence(std::istream& in, int64_t capacity) const {
  char magic[8] = {};
  in.read(magic, 8);
  if (!in || std::string_view(magic, 6) != std::string_view(kSeqMagic, 6))
    throw Error(ErrorCode::Format, "not a dsinfer sequence file");
  const bool v1 = std::string_view(magic, 8) == std::string_view(kSeqMagicV1, 8);
  const bool v2 = std::string_view(magic, 8) == std::string_view(kSeqMagicV2, 8);
  if (!v1 && !v2 && std::string_view(magic, 8) != std::string_view(kSeqMagic, 8))
    throw Error(ErrorCode::Format, fmt::format("sequence file version {} is not supported (this build reads 01 to {})",
                                               std::string(magic + 6, 2), std::string(kSeqMagic + 6, 2)));
  const uint64_t flen = read_u64(in);
  if (flen > 4096) throw Error(ErrorCode::Format, "sequence file header is corrupt");
  std::string fp(flen, '\0');
  in.read(fp.data(), std::streamsize(flen));
  if (fp != impl_->fingerprint)
    throw Error(ErrorCode::InvalidArgument,
                fmt::format("the sequence was saved from a different model ({}), not this one ({})", fp, impl_->fingerprint));
  // Every size is checked against the model and the bytes the file has left before anything is allocated: a short
  // crafted file must not make this reserve or zero gigabytes before it says "truncated".
  const uint64_t n_saved = read_u64(in);
  if (n_saved > uint64_t(KvBlockPool::kMaxPoolTokens))
    throw Error(ErrorCode::Format, fmt::format("sequence file is corrupt: it says {} tokens", n_saved));
  const int64_t n = int64_t(n_saved);
  KvDtype dtype = KvDtype::F32;
  if (!v1) {
    const uint64_t d = read_u64(in);
    if (d > uint64_t(KvDtype::FP8)) throw Error(ErrorCode::Format, fmt::format("sequence file: unknown cache dtype {}", d));
    dtype = KvDtype(d);
  }
  const uint64_t token_bytes = uint64_t(KvBlockPool::bytes_per_token_layer(impl_->config, dtype)) *
                               uint64_t(impl_->config.num_hidden_layers);  // config dims <= 2^20: no overflow
  uint64_t cache_bytes = 0;
  if (__builtin_mul_overflow(uint64_t(n), token_bytes, &cache_bytes))
    throw Error(ErrorCode::Format, fmt::format("sequence file is corrupt: it says {} tokens", n));
  if (const auto left = stream_bytes_left(in); left && *left < cache_bytes)
    throw Error(ErrorCode::Format, fmt::format("sequence file is truncated: {} tokens need {} bytes of cache, {} are left",
                                               n, cache_bytes, *left));
  const int64_t pool_tokens = impl_->pool_blocks * impl_->pool_block_tokens;
  if (n > pool_tokens)
    throw Error(ErrorCode::OutOfMemory, fmt::format("the saved sequence has {} tokens; this model's KV pool holds {} "
                                                    "(ModelLoadParams::kv_cache_tokens)", n, pool_tokens));
  // The restored sequence keeps the saved dtype (the bytes are its cache as they were).
  auto seq = new_sequence(std::max<int64_t>(capacity > 0 ? capacity : n, std::max<int64_t>(n, 1)), to_public(dtype));
  if (n > seq->capacity()) throw Error(ErrorCode::InvalidArgument, "capacity below the saved sequence's length");
  restore_cache(*seq->impl_->cache, n, [&](std::vector<uint8_t>& host) {
    in.read(reinterpret_cast<char*>(host.data()), std::streamsize(host.size()));
    if (!in) throw Error(ErrorCode::Format, "sequence file is truncated");
    if (impl_->leader) {  // the workers get the rows as they are (they cannot read the caller's stream)
      std::lock_guard<std::mutex> lock(impl_->mutex);
      Message m(Command::RestoreSequence);
      m.put(seq->impl_->id);
      m.put(n);
      m.put(uint64_t(host.size()));
      impl_->leader->send(m, host);
    }
  });
  if (v1 || v2 || read_u64(in) == 0) return seq;
  // The MTP state, checked against the model and the main cache before anything is allocated for it.
  const int64_t hidden = impl_->info.hidden_size;
  if (!impl_->net->has_mtp()) throw Error(ErrorCode::Format, "sequence file holds MTP state; this model has no MTP module");
  const uint64_t rows = read_u64(in);
  if (rows > uint64_t(std::max<int64_t>(n - 1, 0)))
    throw Error(ErrorCode::Format, fmt::format("sequence file is corrupt: {} MTP rows for {} tokens", rows, n));
  const uint64_t row_bytes = uint64_t(KvBlockPool::bytes_per_token_layer(impl_->config, dtype)) * rows;
  std::vector<uint8_t> mtp_rows = read_array<uint8_t>(in, row_bytes, "the MTP cache");
  const uint64_t n_pending = read_u64(in);
  if (n_pending != 0 && n_pending != uint64_t(hidden))
    throw Error(ErrorCode::Format, fmt::format("sequence file is corrupt: an MTP hidden state of {} values", n_pending));
  std::vector<float> pending = read_array<float>(in, n_pending, "the MTP hidden state");
  const uint64_t n_deferred = read_u64(in);
  if (n_deferred > uint64_t(kMaxDeferredMtpRows) || rows + n_deferred != uint64_t(std::max<int64_t>(n - 1, 0)))
    throw Error(ErrorCode::Format, fmt::format("sequence file is corrupt: {} MTP rows and {} deferred ones for {} tokens",
                                               rows, n_deferred, n));
  std::vector<int32_t> deferred_ids = read_array<int32_t>(in, n_deferred, "the deferred MTP rows");
  for (const int32_t t : deferred_ids)
    if (t < 0 || t >= impl_->info.vocab_size)
      throw Error(ErrorCode::Format, fmt::format("sequence file: deferred MTP token id {} is not in the vocabulary", t));
  std::vector<float> deferred_hidden = read_array<float>(in, n_deferred * uint64_t(hidden), "the deferred MTP rows");
  std::lock_guard<std::mutex> lock(impl_->mutex);
  if (impl_->leader) {  // the workers get the same state (they cannot read the caller's stream)
    Message m(Command::RestoreMtp);
    m.put(seq->impl_->id);
    m.put(int64_t(rows));
    m.put_span(std::span<const float>(pending));
    m.put_span(std::span<const int32_t>(deferred_ids));
    m.put_span(std::span<const float>(deferred_hidden));
    m.put(uint64_t(mtp_rows.size()));
    impl_->leader->send(m, mtp_rows);
  }
  install_mtp_state(*seq, int64_t(rows), mtp_rows, std::move(pending), std::move(deferred_ids),
                    std::move(deferred_hidden));
  return seq;
}

namespace {
// EvalOptions::max_chunk_tokens's default: 512 with an indexer (on the benchmark model as fast as 2048 and 98 MB
// lighter at 4K tokens), 2048 without one, where every chunk's MHA form expands the whole cache through kv_b
// (rows past index_topk take the absorbed form instead), so smaller chunks would repeat that work more often.
int64_t default_chunk(const DeepseekV32& net) { return net.config().has_indexer() ? 512 : 2048; }

// The next chunk of a long prompt: at most `chunk` tokens, but never leaving exactly one behind (a 1-token forward
// takes the decode form, which rounds differently from the multi-token steps).
size_t next_chunk(size_t left, int64_t max_chunk, const DeepseekV32& net) {
  const size_t chunk = size_t(std::max<int64_t>(max_chunk > 0 ? max_chunk : default_chunk(net), 2));
  if (left <= chunk) return left;
  return left - chunk == 1 ? chunk - 1 : chunk;
}

// One sequence's tokens through forward() chunk by chunk. On error the sequence is cut back to where it was.
void forward_chunked(DeepseekV32& net, KvCache& cache, MtpState* mtp, std::span<const int32_t> ids,
                     const EvalOptions& opts, std::vector<float>& logits, std::vector<float>& part) {
  if (ids.size() <= next_chunk(ids.size(), opts.max_chunk_tokens, net) || ids.empty()) {
    net.forward(cache, ids, opts, logits, mtp);
    return;
  }
  const int64_t start = cache.size();
  if (start + int64_t(ids.size()) > cache.capacity())  // the whole prompt must fit before any chunk runs
    throw Error(ErrorCode::OutOfMemory, fmt::format("KV cache full: {} tokens cached + {} new > capacity {}", start,
                                                    ids.size(), cache.capacity()));
  std::vector<float> out;  // `logits` keeps its old contents until the whole prompt has run
  try {
    for (size_t at = 0; at < ids.size();) {
      const size_t n = next_chunk(ids.size() - at, opts.max_chunk_tokens, net);
      net.forward(cache, ids.subspan(at, n), opts, part, mtp);
      if (opts.all_logits || at + n == ids.size()) out.insert(out.end(), part.begin(), part.end());
      at += n;
    }
  } catch (...) {
    cache.truncate(start);
    if (mtp) mtp->truncate_main(start, net.config().hidden_size);
    throw;
  }
  logits = std::move(out);
}
}  // namespace

std::vector<float> Model::eval(Sequence& seq, std::span<const int32_t> ids, const EvalOptions& opts) const {
  if (seq.impl_->owner != this)
    throw Error(ErrorCode::InvalidArgument, "the sequence was created by a different model");
  std::vector<float> logits, part;
  std::lock_guard<std::mutex> lock(impl_->mutex);
  if (impl_->leader) {
    Message m(Command::Eval);
    m.put(seq.impl_->id);
    m.put(opts);
    m.put_span(ids);
    impl_->leader->send(m);
  }
  impl_->bind(*seq.impl_, opts.precision);
  forward_chunked(*impl_->net, *seq.impl_->cache, seq.impl_->mtp.get(), ids, opts, logits, part);
  return logits;
}

void Model::eval_batch(std::span<BatchEntry> entries, const EvalOptions& opts) const {
  for (const auto& e : entries)
    if (!e.sequence || e.sequence->impl_->owner != this)
      throw Error(ErrorCode::InvalidArgument, "a batch entry's sequence is missing or belongs to a different model");
  if (entries.empty()) return;
  std::lock_guard<std::mutex> lock(impl_->mutex);
  if (impl_->leader) {
    Message m(Command::EvalBatch);
    m.put(opts);
    m.put(uint64_t(entries.size()));
    for (const auto& e : entries) {
      m.put(e.sequence->impl_->id);
      m.put(e.all_logits);
      m.put(e.exact_rows);
      m.put(e.defer_mtp);
      m.put_span(e.ids);
    }
    impl_->leader->send(m);
  }
  // (Exact rows are never chunked: chunks would take the multi-token form the caller asked to avoid.)
  if (entries.size() == 1 && !entries[0].exact_rows &&
      entries[0].ids.size() > next_chunk(entries[0].ids.size(), opts.max_chunk_tokens, *impl_->net)) {
    // One long prompt (a session's prefill): chunked like eval(). A batch of several sequences is bounded by the
    // caller instead (Engine's max_step_prompt_tokens).
    BatchEntry& e = entries[0];
    impl_->bind(*e.sequence->impl_, opts.precision);
    EvalOptions o = opts;
    o.all_logits = e.all_logits;
    std::vector<float> part;
    forward_chunked(*impl_->net, *e.sequence->impl_->cache, e.sequence->impl_->mtp.get(), e.ids, o, e.logits, part);
    return;
  }
  auto& items = impl_->batch_items;
  items.clear();
  for (auto& e : entries) {
    impl_->bind(*e.sequence->impl_, opts.precision);
    items.push_back({e.sequence->impl_->cache.get(), e.ids, e.all_logits, &e.logits, e.exact_rows,
                     e.sequence->impl_->mtp.get(), e.defer_mtp});
  }
  impl_->net->forward_batch(items, opts);
}

std::vector<int32_t> Model::generate_greedy(std::span<const int32_t> prompt, int64_t n_new, const EvalOptions& opts,
                                            bool stop_at_eos, int64_t n_usable) const {
  if (n_new < 0) throw Error(ErrorCode::InvalidArgument, "n_new must be >= 0");
  auto seq = new_sequence(int64_t(prompt.size()) + std::max<int64_t>(n_new, 1));
  EvalOptions last = opts;
  last.all_logits = false;
  std::vector<float> logits = eval(*seq, prompt, last);
  std::vector<int32_t> out;
  const int64_t V = n_usable > 0 ? std::min(n_usable, impl_->info.vocab_size) : impl_->info.vocab_size;
  for (int64_t i = 0; i < n_new; ++i) {
    const int32_t next = int32_t(std::max_element(logits.begin(), logits.begin() + V) - logits.begin());
    out.push_back(next);
    const auto& eos = impl_->info.eos_token_ids;
    if (stop_at_eos && std::find(eos.begin(), eos.end(), next) != eos.end()) break;
    if (i + 1 < n_new) logits = eval(*seq, std::span<const int32_t>(&next, 1), last);
  }
  return out;
}

void Model::run_worker(const std::string& dir, const ModelLoadParams& params) {
  check_dist_timeout(params);
  if (!params.distributed)
    throw Error(ErrorCode::InvalidArgument, "Model::run_worker is for distributed runs (ModelLoadParams::distributed)");
  const DistributedRank place = distributed_rank();
  if (place.rank == 0)
    throw Error(ErrorCode::InvalidArgument, "rank 0 runs the application: it calls Model::load, not run_worker");
  const std::unique_ptr<Model> model = load_shard(dir, params, /*worker=*/true);
  if (!model->impl_->comm) return;  // one rank: nothing to serve
  Communicator& comm = *model->impl_->comm;
  std::unordered_map<uint64_t, std::unique_ptr<Sequence>> sequences;
  auto sequence = [&](uint64_t id) -> Sequence& {
    const auto it = sequences.find(id);
    // (A sequence rank 0 failed to make was not made here either, and what rank 0 then did with it failed there.)
    if (it == sequences.end()) throw Error(ErrorCode::InvalidArgument, fmt::format("no sequence {} on this rank", id));
    return *it->second;
  };
  std::vector<uint8_t> bytes;
  for (;;) {
    uint64_t n = 0;
    comm.broadcast(&n, sizeof n, 0, /*idle=*/true);
    bytes.resize(size_t(n));
    comm.broadcast(bytes.data(), bytes.size(), 0);
    MessageReader in{bytes};
    const auto command = Command(in.get<uint32_t>());
    if (command == Command::Shutdown) return;
    // The same call rank 0 made; it fails here exactly when it failed there (and rank 0 reported it).
    try {
      switch (command) {
        case Command::NewSequence: {
          const auto id = in.get<uint64_t>();
          const auto capacity = in.get<int64_t>();
          const auto dtype = in.get<KvCacheDtype>();
          sequences[id] = model->new_sequence(capacity, dtype);
          break;
        }
        case Command::DropSequence:
          sequences.erase(in.get<uint64_t>());
          break;
        case Command::Truncate: {
          Sequence& s = sequence(in.get<uint64_t>());
          s.truncate(in.get<int64_t>());
          break;
        }
        case Command::CopySequence: {
          const Sequence& src = sequence(in.get<uint64_t>());
          const auto id = in.get<uint64_t>();
          sequences[id] = model->copy_sequence(src, in.get<int64_t>());
          break;
        }
        case Command::RestoreSequence: {
          const auto id = in.get<uint64_t>();
          const auto n_tokens = in.get<int64_t>();
          // The rows follow as their own broadcast: taken before anything here can fail, so the ranks stay in step.
          std::vector<uint8_t> rows(static_cast<size_t>(in.get<uint64_t>()));
          if (!rows.empty()) comm.broadcast(rows.data(), rows.size(), 0);  // (DistLeader::send sends none when empty)
          restore_cache(*sequence(id).impl_->cache, n_tokens, [&](std::vector<uint8_t>& host) {
            if (host.size() != rows.size()) throw Error(ErrorCode::Internal, "restored cache size differs");
            host.swap(rows);
          });
          break;
        }
        case Command::Eval: {
          Sequence& s = sequence(in.get<uint64_t>());
          const auto opts = in.get<EvalOptions>();
          const std::vector<int32_t> ids = in.get_vector<int32_t>();
          model->eval(s, ids, opts);
          break;
        }
        case Command::EvalBatch: {
          const auto opts = in.get<EvalOptions>();
          const auto count = in.get<uint64_t>();
          std::vector<std::vector<int32_t>> ids;
          std::vector<BatchEntry> entries;
          for (uint64_t i = 0; i < count; ++i) {
            BatchEntry e;
            e.sequence = &sequence(in.get<uint64_t>());
            e.all_logits = in.get<bool>();
            e.exact_rows = in.get<bool>();
            e.defer_mtp = in.get<bool>();
            ids.push_back(in.get_vector<int32_t>());
            entries.push_back(std::move(e));
          }
          for (size_t i = 0; i < entries.size(); ++i) entries[i].ids = ids[i];
          model->eval_batch(entries, opts);
          break;
        }
        case Command::EnableMtp: {
          Sequence& s = sequence(in.get<uint64_t>());
          const auto on = in.get<bool>();
          const auto opts = in.get<EvalOptions>();
          const std::vector<int32_t> tokens = in.get_vector<int32_t>();
          model->enable_mtp(s, on, tokens, opts);
          break;
        }
        case Command::MtpDraft: {
          const auto opts = in.get<EvalOptions>();
          const auto count = in.get<uint64_t>();
          std::vector<DraftEntry> entries;
          for (uint64_t i = 0; i < count; ++i) {
            DraftEntry e;
            e.sequence = &sequence(in.get<uint64_t>());
            e.token = in.get<int32_t>();
            entries.push_back(std::move(e));
          }
          model->mtp_draft(entries, opts);
          break;
        }
        case Command::ReleaseMemory:
          model->release_memory();
          break;
        case Command::RestoreMtp: {
          Sequence& s = sequence(in.get<uint64_t>());
          const auto rows = in.get<int64_t>();
          auto pending = in.get_vector<float>();
          auto deferred_ids = in.get_vector<int32_t>();
          auto deferred_hidden = in.get_vector<float>();
          std::vector<uint8_t> bytes(static_cast<size_t>(in.get<uint64_t>()));
          if (!bytes.empty()) comm.broadcast(bytes.data(), bytes.size(), 0);
          model->install_mtp_state(s, rows, bytes, std::move(pending), std::move(deferred_ids),
                                   std::move(deferred_hidden));
          break;
        }
        default:
          throw Error(ErrorCode::Internal, fmt::format("unknown distributed command {}", uint32_t(command)));
      }
    } catch (const Error& e) {
      if (comm.broken() || e.code() == ErrorCode::Internal) throw;
      log_fmt(LogLevel::Debug, "rank {}: a command failed as it did on rank 0: {}", comm.rank(), e.what());
    }
  }
}

}  // namespace dsinfer
