// The C ABI: thin wrappers over the C++ core. Each entry point catches dsinfer::Error, std::exception and anything
// else, and turns it into a status plus this thread's message.
#include "dsinfer.h"

#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "dsinfer/chat.hpp"
#include "dsinfer/constraint.hpp"
#include "dsinfer/dsinfer.hpp"
#include "dsinfer/sampler.hpp"
#include "dsinfer/session.hpp"
#include "dsinfer/tokenizer.hpp"
#include "util/json_input.hpp"  // excerpt: refused values quoted at a bounded length

struct dsinfer_model {
  std::unique_ptr<dsinfer::Model> m;
};
struct dsinfer_tokenizer {
  std::unique_ptr<dsinfer::Tokenizer> t;
};
struct dsinfer_sampler {
  std::unique_ptr<dsinfer::Sampler> s;
};
struct dsinfer_constraint {
  std::shared_ptr<const dsinfer::Constraint> c;
};
struct dsinfer_detokenizer {
  dsinfer::Detokenizer d;
};
struct dsinfer_session {
  std::unique_ptr<dsinfer::Session> s;
  const dsinfer_model* model;
  const dsinfer_tokenizer* tok;
  dsinfer::ChatEvent current;  // the event whose strings the caller borrows
};

namespace {

thread_local std::string g_last_error;

dsinfer_status to_status(dsinfer::ErrorCode c) { return static_cast<dsinfer_status>(static_cast<int>(c)); }

template <class F>
dsinfer_status guarded(F&& f) {
  try {
    f();
    g_last_error.clear();
    return DSINFER_OK;
  } catch (const dsinfer::Error& e) {
    g_last_error = e.what();
    return to_status(e.code());
  } catch (const std::bad_alloc&) {
    g_last_error = "out of memory";
    return DSINFER_E_OUT_OF_MEMORY;
  } catch (const std::exception& e) {
    g_last_error = e.what();
    return DSINFER_E_INTERNAL;
  } catch (...) {
    g_last_error = "unknown exception";
    return DSINFER_E_INTERNAL;
  }
}

void require(bool ok, const char* what) {
  if (!ok) throw dsinfer::Error(dsinfer::ErrorCode::InvalidArgument, what);
}

char* dup_string(const std::string& s) {
  char* p = static_cast<char*>(std::malloc(s.size() + 1));
  if (!p) throw std::bad_alloc();
  std::memcpy(p, s.data(), s.size());
  p[s.size()] = '\0';
  return p;
}

// How much of a caller's struct to read: its struct_size rounded down to the end of the last member it covers whole.
// A size that ends inside a member (a caller's mistake) must not half-copy it: half a function pointer would be
// called.
#define DSINFER_MEMBER_END(T, m) (offsetof(T, m) + sizeof(static_cast<T*>(nullptr)->m))
template <size_t N>
size_t whole_members(size_t struct_size, const size_t (&ends)[N]) {
  size_t n = 0;
  for (const size_t e : ends)
    if (e <= struct_size && e > n) n = e;
  return n;
}
size_t readable(const dsinfer_model_params& p) {
  using T = dsinfer_model_params;
  const size_t ends[] = {DSINFER_MEMBER_END(T, struct_size), DSINFER_MEMBER_END(T, n_threads), DSINFER_MEMBER_END(T, backend),
                         DSINFER_MEMBER_END(T, kv_cache_tokens), DSINFER_MEMBER_END(T, progress),
                         DSINFER_MEMBER_END(T, progress_user_data), DSINFER_MEMBER_END(T, kv_cache_dtype),
                         DSINFER_MEMBER_END(T, kv_block_tokens), DSINFER_MEMBER_END(T, cpu_kernels),
                         DSINFER_MEMBER_END(T, cuda_device), DSINFER_MEMBER_END(T, cuda_small_m_max),
                         DSINFER_MEMBER_END(T, cuda_small_m_tensor_cores), DSINFER_MEMBER_END(T, cuda_cublaslt_fp8),
                         DSINFER_MEMBER_END(T, cuda_mla_kernel), DSINFER_MEMBER_END(T, cuda_indexer_kernel),
                         DSINFER_MEMBER_END(T, distributed), DSINFER_MEMBER_END(T, distributed_timeout_s)};
  return whole_members(p.struct_size, ends);
}
size_t readable(const dsinfer_session_params& p) {
  using T = dsinfer_session_params;
  const size_t ends[] = {DSINFER_MEMBER_END(T, struct_size), DSINFER_MEMBER_END(T, capacity), DSINFER_MEMBER_END(T, precision),
                         DSINFER_MEMBER_END(T, thinking), DSINFER_MEMBER_END(T, seed),
                         DSINFER_MEMBER_END(T, speculative_draft_tokens), DSINFER_MEMBER_END(T, speculative_adaptive)};
  return whole_members(p.struct_size, ends);
}
size_t readable(const dsinfer_generate_params& p) {
  using T = dsinfer_generate_params;
  const size_t ends[] = {DSINFER_MEMBER_END(T, struct_size), DSINFER_MEMBER_END(T, max_tokens),
                         DSINFER_MEMBER_END(T, stop_at_eos), DSINFER_MEMBER_END(T, constraint),
                         DSINFER_MEMBER_END(T, stop), DSINFER_MEMBER_END(T, n_stop)};
  return whole_members(p.struct_size, ends);
}
size_t readable(const dsinfer_sampler_iface& p) {
  using T = dsinfer_sampler_iface;
  const size_t ends[] = {DSINFER_MEMBER_END(T, struct_size), DSINFER_MEMBER_END(T, apply), DSINFER_MEMBER_END(T, accept),
                         DSINFER_MEMBER_END(T, free), DSINFER_MEMBER_END(T, name), DSINFER_MEMBER_END(T, clone),
                         DSINFER_MEMBER_END(T, reset)};
  return whole_members(p.struct_size, ends);
}

// A user sampler behind the C vtable.
class CSampler final : public dsinfer::Sampler {
 public:
  CSampler(const dsinfer_sampler_iface& iface, void* ud) : iface_(iface), ud_(ud) {}
  ~CSampler() override {
    if (iface_.free) iface_.free(ud_);
  }
  std::string name() const override { return iface_.name ? iface_.name : "custom"; }
  void apply(dsinfer::Candidates& c) override {
    dsinfer_candidates v{sizeof(dsinfer_candidates), c.ids.data(), c.logits.data(), c.size(), c.selected};
    // Called through its declared type (calling through another function type is undefined), then read as the int
    // a C function may have returned: its bytes are copied, never loaded as a C++ enum value outside the enum's range.
    static_assert(sizeof(dsinfer_status) == sizeof(int));
    const dsinfer_status returned = iface_.apply(ud_, &v);
    int st = 0;
    std::memcpy(&st, &returned, sizeof st);
    if (st != DSINFER_OK) {
      const bool known = (st >= DSINFER_E_INVALID_ARG && st <= DSINFER_E_CANCELLED) || st == DSINFER_E_INTERNAL;
      if (!known)
        throw dsinfer::Error(dsinfer::ErrorCode::InvalidArgument,
                             "returned " + std::to_string(st) + ", which is not a dsinfer_status");
      throw dsinfer::Error(static_cast<dsinfer::ErrorCode>(st),
                           std::string("returned status ") + dsinfer_status_name(dsinfer_status(st)));
    }
    if (v.n > c.size()) throw dsinfer::Error(dsinfer::ErrorCode::InvalidArgument, "a sampler may not grow the candidates");
    c.resize(v.n);  // the arrays were edited in place
    c.sorted = false;
    c.has_probs = false;
    c.selected = v.selected >= 0 && size_t(v.selected) < v.n ? v.selected : -1;
  }
  void accept(int32_t token) override {
    if (iface_.accept) iface_.accept(ud_, token);
  }
  void reset() override {
    if (iface_.reset) iface_.reset(ud_);
  }
  std::unique_ptr<dsinfer::Sampler> clone() const override {
    if (!iface_.clone)
      throw dsinfer::Error(dsinfer::ErrorCode::Unsupported,
                           "C sampler \"" + name() + "\" has no clone callback (dsinfer_sampler_iface.clone), so a "
                           "session holding it cannot be forked");
    void* copy = iface_.clone(ud_);
    if (!copy)
      throw dsinfer::Error(dsinfer::ErrorCode::InvalidArgument, "C sampler \"" + name() + "\": clone returned NULL");
    return std::make_unique<CSampler>(iface_, copy);
  }

 private:
  dsinfer_sampler_iface iface_;
  void* ud_;
};

// A core event as the C view; its strings borrow from `e`.
dsinfer_event to_c_event(const dsinfer::ChatEvent& e) {
  using K = dsinfer::ChatEvent::Kind;
  dsinfer_event ev{};
  ev.struct_size = sizeof ev;
  ev.kind = e.kind == K::ContentDelta     ? DSINFER_EVENT_CONTENT
            : e.kind == K::ReasoningDelta ? DSINFER_EVENT_REASONING
            : e.kind == K::ToolCallBegin  ? DSINFER_EVENT_TOOL_CALL_BEGIN
            : e.kind == K::ToolArgsDelta  ? DSINFER_EVENT_TOOL_ARGS
            : e.kind == K::ToolCallEnd    ? DSINFER_EVENT_TOOL_CALL_END
                                          : DSINFER_EVENT_ERROR;
  ev.text = e.text.c_str();
  ev.text_len = e.text.size();
  ev.tool_index = e.tool_index;
  ev.name = e.name.c_str();
  ev.arguments = e.arguments.c_str();
  ev.offset = e.offset;
  return ev;
}

// The caller's params as far as its struct_size reaches, defaults for the rest.
dsinfer::GenerateParams to_generate_params(const dsinfer_generate_params* p) {
  dsinfer_generate_params gp{};
  dsinfer_generate_params_init(&gp, sizeof gp);
  if (p) std::memcpy(&gp, p, readable(*p));
  dsinfer::GenerateParams g;
  g.max_tokens = gp.max_tokens > 0 ? gp.max_tokens : 256;
  g.stop_at_eos = gp.stop_at_eos != 0;
  if (gp.constraint) g.constraint = gp.constraint->c;
  if (gp.n_stop > 0) {
    require(gp.stop != nullptr, "dsinfer_generate_params.stop is NULL but n_stop is not 0");
    for (size_t i = 0; i < gp.n_stop; ++i) {
      require(gp.stop[i] != nullptr && gp.stop[i][0] != '\0', "dsinfer_generate_params.stop: a NULL or empty string");
      g.stop.emplace_back(gp.stop[i]);
    }
  }
  return g;
}

// The caller's model params as the C++ load parameters (what dsinfer_model_load and dsinfer_model_run_worker both take).
dsinfer::ModelLoadParams to_load_params(const dsinfer_model_params* params) {
  // Read only the fields the caller's struct has (an older, smaller struct gets defaults for the rest).
  dsinfer_model_params p{};
  dsinfer_model_params_init(&p, sizeof p);
  if (params) std::memcpy(&p, params, readable(*params));
  dsinfer::ModelLoadParams lp;
  lp.n_threads = p.n_threads;
  if (p.backend) lp.backend = p.backend;
  lp.kv_cache_tokens = p.kv_cache_tokens;
  lp.kv_block_tokens = p.kv_block_tokens;
  if (p.cpu_kernels) lp.cpu_kernels = p.cpu_kernels;
  // The booleans must be 0 or 1 (anything else is more likely garbage than a request), checked here because
  // CudaOptions cannot hold anything else; Model::load checks the rest.
  if (p.cuda_small_m_tensor_cores != 0 && p.cuda_small_m_tensor_cores != 1)
    throw dsinfer::Error(dsinfer::ErrorCode::InvalidArgument, "cuda_small_m_tensor_cores must be 0 or 1, not " +
                                                                  std::to_string(p.cuda_small_m_tensor_cores));
  if (p.cuda_cublaslt_fp8 != 0 && p.cuda_cublaslt_fp8 != 1)
    throw dsinfer::Error(dsinfer::ErrorCode::InvalidArgument,
                         "cuda_cublaslt_fp8 must be 0 or 1, not " + std::to_string(p.cuda_cublaslt_fp8));
  lp.cuda.device = p.cuda_device;
  lp.cuda.small_m_max = p.cuda_small_m_max;
  lp.cuda.small_m_tensor_cores = p.cuda_small_m_tensor_cores == 1;
  lp.cuda.cublaslt_fp8 = p.cuda_cublaslt_fp8 == 1;
  if (p.cuda_mla_kernel) lp.cuda.mla_kernel = p.cuda_mla_kernel;
  if (p.cuda_indexer_kernel) lp.cuda.indexer_kernel = p.cuda_indexer_kernel;
  if (p.kv_cache_dtype && !dsinfer::kv_cache_dtype_from_name(p.kv_cache_dtype, &lp.kv_cache_dtype))
    throw dsinfer::Error(dsinfer::ErrorCode::InvalidArgument, "kv_cache_dtype must be auto, f32, bf16 or fp8, not \"" +
                                                                  dsinfer::excerpt(p.kv_cache_dtype) + "\"");
  if (p.progress) {
    auto cb = p.progress;
    void* ud = p.progress_user_data;
    lp.progress = [cb, ud](double f, std::string_view stage) { cb(f, std::string(stage).c_str(), ud); };
  }
  if (p.distributed != 0 && p.distributed != 1)
    throw dsinfer::Error(dsinfer::ErrorCode::InvalidArgument,
                         "distributed must be 0 or 1, not " + std::to_string(p.distributed));
  lp.distributed = p.distributed == 1;
  lp.distributed_timeout_s = p.distributed_timeout_s;
  return lp;
}

dsinfer_status make_sampler(dsinfer_sampler** out, const std::function<std::unique_ptr<dsinfer::Sampler>()>& f) {
  if (out) *out = nullptr;
  return guarded([&] {
    require(out != nullptr, "out must not be NULL");
    *out = new dsinfer_sampler{f()};
  });
}

}  // namespace

extern "C" {

uint32_t dsinfer_abi_version(void) { return DSINFER_ABI_VERSION; }
const char* dsinfer_version_string(void) { return DSINFER_VERSION_STRING; }
const char* dsinfer_last_error(void) { return g_last_error.c_str(); }
const char* dsinfer_status_name(dsinfer_status s) { return dsinfer::error_code_name(static_cast<dsinfer::ErrorCode>(s)); }
void dsinfer_string_free(char* s) { std::free(s); }

void dsinfer_model_params_init(dsinfer_model_params* p, size_t struct_size) {
  if (!p) return;
  dsinfer_model_params d{};
  d.struct_size = sizeof(dsinfer_model_params);
  // The CUDA members whose default is not zero: the C++ defaults (dsinfer::CudaOptions).
  const dsinfer::CudaOptions cuda;
  d.cuda_device = cuda.device;
  d.cuda_small_m_max = cuda.small_m_max;
  d.cuda_small_m_tensor_cores = cuda.small_m_tensor_cores;
  d.cuda_cublaslt_fp8 = cuda.cublaslt_fp8;
  std::memcpy(p, &d, std::min(struct_size, sizeof d));
  if (struct_size >= sizeof p->struct_size) p->struct_size = std::min(struct_size, sizeof d);  // never past the caller's size
}

dsinfer_status dsinfer_model_load(const char* dir, const dsinfer_model_params* params, dsinfer_model** out) {
  if (out) *out = nullptr;
  return guarded([&] {
    require(dir && out, "dir and out must not be NULL");
    const dsinfer::ModelLoadParams lp = to_load_params(params);
    *out = new dsinfer_model{dsinfer::Model::load(dir, lp)};
  });
}

dsinfer_status dsinfer_model_run_worker(const char* dir, const dsinfer_model_params* params) {
  return guarded([&] {
    require(dir != nullptr, "dir must not be NULL");
    dsinfer::Model::run_worker(dir, to_load_params(params));
  });
}

dsinfer_status dsinfer_distributed_rank(int32_t* rank, int32_t* size) {
  if (rank) *rank = -1;
  if (size) *size = 0;
  return guarded([&] {
    require(rank && size, "rank and size must not be NULL");
    const dsinfer::Model::DistributedRank place = dsinfer::Model::distributed_rank();
    *rank = place.rank;
    *size = place.size;
  });
}

void dsinfer_model_free(dsinfer_model* m) { delete m; }

void dsinfer_set_log_callback(dsinfer_log_callback callback, dsinfer_log_level min_level, void* user_data) {
  if (!callback || min_level < DSINFER_LOG_DEBUG || min_level >= DSINFER_LOG_OFF) {
    dsinfer::set_log_callback(nullptr, dsinfer::LogLevel::Off);
    return;
  }
  dsinfer::set_log_callback(
      [callback, user_data](dsinfer::LogLevel level, std::string_view message) {
        const std::string text(message);  // the C side gets a NUL-terminated copy
        callback(dsinfer_log_level(int(level)), text.c_str(), user_data);
      },
      dsinfer::LogLevel(int(min_level)));
}
int64_t dsinfer_model_vocab_size(const dsinfer_model* m) { return m ? m->m->info().vocab_size : 0; }
int dsinfer_model_has_mtp(const dsinfer_model* m) { return m && m->m->info().has_mtp ? 1 : 0; }
int64_t dsinfer_model_kv_bytes_per_token(const dsinfer_model* m) { return m ? m->m->info().kv_bytes_per_token : 0; }
int64_t dsinfer_model_kv_index_bytes_per_token(const dsinfer_model* m) {
  return m ? m->m->info().kv_index_bytes_per_token_layer * m->m->info().num_layers : 0;
}
int64_t dsinfer_model_kv_cache_bytes(const dsinfer_model* m, int64_t tokens) {
  return m && tokens >= 0 ? m->m->kv_cache_bytes(tokens) : 0;
}
int64_t dsinfer_model_scratch_bytes(const dsinfer_model* m) {
  return m ? m->m->backend_memory_stats().scratch_bytes : 0;
}
int64_t dsinfer_model_cached_activation_bytes(const dsinfer_model* m) {
  return m ? m->m->backend_memory_stats().cached_activation_bytes : 0;
}
dsinfer_status dsinfer_model_release_memory(const dsinfer_model* m) {
  return guarded([&] {
    require(m, "model must not be NULL");
    m->m->release_memory();
  });
}
int32_t dsinfer_model_distributed_ranks(const dsinfer_model* m) { return m ? m->m->info().distributed_ranks : 0; }
int32_t dsinfer_model_attention_split_by_heads(const dsinfer_model* m) {
  return m && m->m->info().attention_split_by_heads ? 1 : 0;
}
int64_t dsinfer_model_rank_weight_bytes(const dsinfer_model* m, int32_t rank) {
  if (!m || rank < 0) return 0;
  const std::vector<int64_t>& bytes = m->m->info().rank_weight_bytes;
  return size_t(rank) < bytes.size() ? bytes[size_t(rank)] : 0;
}

dsinfer_status dsinfer_tokenizer_load(const char* path, dsinfer_tokenizer** out) {
  if (out) *out = nullptr;
  return guarded([&] {
    require(path && out, "path and out must not be NULL");
    *out = new dsinfer_tokenizer{dsinfer::Tokenizer::load(path)};
  });
}
void dsinfer_tokenizer_free(dsinfer_tokenizer* t) { delete t; }
int64_t dsinfer_tokenizer_size(const dsinfer_tokenizer* t) { return t ? t->t->size() : 0; }
int32_t dsinfer_tokenizer_eos_id(const dsinfer_tokenizer* t) { return t ? t->t->eos_id() : -1; }

dsinfer_status dsinfer_tokenizer_encode(const dsinfer_tokenizer* t, const char* text, size_t text_len,
                                        int add_special_tokens, int32_t* ids, size_t capacity, size_t* n_ids) {
  return guarded([&] {
    require(t && (text || text_len == 0) && n_ids, "tokenizer, text and n_ids must not be NULL");
    const auto v = t->t->encode(std::string_view(text ? text : "", text_len), add_special_tokens != 0);
    *n_ids = v.size();
    if (ids) std::memcpy(ids, v.data(), std::min(capacity, v.size()) * sizeof(int32_t));
  });
}

dsinfer_status dsinfer_tokenizer_decode(const dsinfer_tokenizer* t, const int32_t* ids, size_t n_ids,
                                        int skip_special_tokens, char** out) {
  if (out) *out = nullptr;
  return guarded([&] {
    require(t && out && (ids || n_ids == 0), "tokenizer, ids and out must not be NULL");
    *out = dup_string(t->t->decode(std::span<const int32_t>(ids, n_ids), skip_special_tokens != 0));
  });
}

int32_t dsinfer_tokenizer_token_to_id(const dsinfer_tokenizer* t, const char* token) {
  return t && token ? t->t->token_to_id(token) : -1;
}
int32_t dsinfer_tokenizer_bos_id(const dsinfer_tokenizer* t) { return t ? t->t->bos_id() : -1; }
int dsinfer_tokenizer_is_special(const dsinfer_tokenizer* t, int32_t id) {
  return t && id >= 0 && id < t->t->size() && t->t->is_special(id) ? 1 : 0;
}
dsinfer_status dsinfer_tokenizer_id_to_token(const dsinfer_tokenizer* t, int32_t id, char** out) {
  if (out) *out = nullptr;
  return guarded([&] {
    require(t && out, "tokenizer and out must not be NULL");
    *out = dup_string(t->t->id_to_token(id));
  });
}

dsinfer_status dsinfer_detokenizer_create(const dsinfer_tokenizer* t, int skip_special_tokens, dsinfer_detokenizer** out) {
  if (out) *out = nullptr;
  return guarded([&] {
    require(t && out, "tokenizer and out must not be NULL");
    *out = new dsinfer_detokenizer{dsinfer::Detokenizer(*t->t, skip_special_tokens != 0)};
  });
}
void dsinfer_detokenizer_free(dsinfer_detokenizer* d) { delete d; }
dsinfer_status dsinfer_detokenizer_push(dsinfer_detokenizer* d, int32_t id, char** out) {
  if (out) *out = nullptr;
  return guarded([&] {
    require(d && out, "detokenizer and out must not be NULL");
    *out = dup_string(d->d.push(id));
  });
}
dsinfer_status dsinfer_detokenizer_finish(dsinfer_detokenizer* d, char** out) {
  if (out) *out = nullptr;
  return guarded([&] {
    require(d && out, "detokenizer and out must not be NULL");
    *out = dup_string(d->d.finish());
  });
}

dsinfer_status dsinfer_chat_encode(const char* messages_json, int thinking, char** out) {
  if (out) *out = nullptr;
  return guarded([&] {
    require(messages_json && out, "messages_json and out must not be NULL");
    dsinfer::ChatOptions o;
    o.thinking = thinking ? dsinfer::ThinkingMode::Thinking : dsinfer::ThinkingMode::Chat;
    *out = dup_string(dsinfer::encode_chat(dsinfer::chat_messages_from_json(messages_json), o));
  });
}

dsinfer_status dsinfer_chat_parse_completion(const char* text, int thinking, char** out) {
  if (out) *out = nullptr;
  return guarded([&] {
    require(text && out, "text and out must not be NULL");
    const auto m = dsinfer::parse_completion(text, thinking ? dsinfer::ThinkingMode::Thinking : dsinfer::ThinkingMode::Chat);
    nlohmann::ordered_json j;
    j["role"] = "assistant";
    j["content"] = m.content.value_or("");
    j["reasoning_content"] = m.reasoning_content.value_or("");
    j["tool_calls"] = nlohmann::ordered_json::array();
    for (const auto& c : m.tool_calls)
      j["tool_calls"].push_back({{"type", "function"}, {"function", {{"name", c.name}, {"arguments", c.arguments}}}});
    *out = dup_string(j.dump());
  });
}

dsinfer_status dsinfer_sampler_chain_create(dsinfer_sampler** out) {
  return make_sampler(out, [] { return std::make_unique<dsinfer::SamplerChain>(); });
}
dsinfer_status dsinfer_sampler_greedy_create(dsinfer_sampler** out) { return make_sampler(out, dsinfer::make_greedy_sampler); }
dsinfer_status dsinfer_sampler_dist_create(uint64_t seed, dsinfer_sampler** out) {
  return make_sampler(out, [&] { return dsinfer::make_dist_sampler(seed); });
}
dsinfer_status dsinfer_sampler_temperature_create(float t, dsinfer_sampler** out) {
  return make_sampler(out, [&] { return dsinfer::make_temperature_sampler(t); });
}
dsinfer_status dsinfer_sampler_top_k_create(int64_t k, dsinfer_sampler** out) {
  return make_sampler(out, [&] { return dsinfer::make_top_k_sampler(k); });
}
dsinfer_status dsinfer_sampler_top_p_create(float p, dsinfer_sampler** out) {
  return make_sampler(out, [&] { return dsinfer::make_top_p_sampler(p); });
}
dsinfer_status dsinfer_sampler_min_p_create(float p, dsinfer_sampler** out) {
  return make_sampler(out, [&] { return dsinfer::make_min_p_sampler(p); });
}
dsinfer_status dsinfer_sampler_penalties_create(int64_t last_n, float repeat, float frequency, float presence,
                                                dsinfer_sampler** out) {
  return make_sampler(out, [&] { return dsinfer::make_penalties_sampler(last_n, repeat, frequency, presence); });
}
dsinfer_status dsinfer_sampler_typical_create(float p, dsinfer_sampler** out) {
  return make_sampler(out, [&] { return dsinfer::make_typical_sampler(p); });
}
dsinfer_status dsinfer_sampler_logit_bias_create(const int32_t* ids, const float* biases, size_t n, dsinfer_sampler** out) {
  return make_sampler(out, [&] {
    require((ids && biases) || n == 0, "ids and biases must not be NULL");
    std::map<int32_t, float> bias;
    for (size_t i = 0; i < n; ++i) bias[ids[i]] = biases[i];
    return dsinfer::make_logit_bias_sampler(std::move(bias));
  });
}
dsinfer_status dsinfer_sampler_custom_create(const dsinfer_sampler_iface* iface, void* user_data, dsinfer_sampler** out) {
  return make_sampler(out, [&] {
    require(iface != nullptr, "a custom sampler needs an iface");
    // The size must cover every required member (apply), else the copy below would leave it NULL and the first
    // sampling step would call through it; members past the caller's size get their defaults (NULL).
    constexpr size_t required = offsetof(dsinfer_sampler_iface, apply) + sizeof(iface->apply);
    if (iface->struct_size < required)
      throw dsinfer::Error(dsinfer::ErrorCode::InvalidArgument,
                           "dsinfer_sampler_iface.struct_size is " + std::to_string(iface->struct_size) +
                               ", less than the " + std::to_string(required) +
                               " bytes its required members take (set it to sizeof(dsinfer_sampler_iface))");
    dsinfer_sampler_iface copy{};
    std::memcpy(&copy, iface, readable(*iface));
    require(copy.apply != nullptr, "a custom sampler needs an apply function");
    return std::make_unique<CSampler>(copy, user_data);
  });
}

dsinfer_status dsinfer_constraint_compile(const dsinfer_tokenizer* t, const char* request_json, int thinking,
                                          dsinfer_constraint** out) {
  if (out) *out = nullptr;
  return guarded([&] {
    require(t && request_json && out, "tokenizer, request_json and out must not be NULL");
    const auto spec = dsinfer::constraint_from_request_json(
        request_json, thinking ? dsinfer::ThinkingMode::Thinking : dsinfer::ThinkingMode::Chat);
    *out = new dsinfer_constraint{dsinfer::Constraint::compile(*t->t, spec)};
  });
}
void dsinfer_constraint_free(dsinfer_constraint* c) { delete c; }
int dsinfer_constraint_enforces(const dsinfer_constraint* c) { return c && c->c->spec().enforces() ? 1 : 0; }
dsinfer_status dsinfer_sampler_constraint_create(const dsinfer_constraint* c, dsinfer_sampler** out) {
  return make_sampler(out, [&]() -> std::unique_ptr<dsinfer::Sampler> {
    require(c != nullptr, "constraint must not be NULL");
    return std::make_unique<dsinfer::ConstraintSampler>(c->c);
  });
}

dsinfer_status dsinfer_sampler_chain_add(dsinfer_sampler* chain, dsinfer_sampler* s) {
  return guarded([&] {
    require(chain && s, "chain and sampler must not be NULL");
    // A chain that owned itself would be freed from inside its own destructor (use after free).
    require(chain != s, "a sampler chain cannot be added to itself");
    auto* c = dynamic_cast<dsinfer::SamplerChain*>(chain->s.get());
    require(c != nullptr, "the first argument is not a sampler chain");
    c->add(std::move(s->s));
    delete s;  // ownership taken: the wrapper is released, the sampler lives in the chain
  });
}
void dsinfer_sampler_free(dsinfer_sampler* s) { delete s; }
dsinfer_status dsinfer_sampler_clone(const dsinfer_sampler* s, dsinfer_sampler** out) {
  return make_sampler(out, [&] {
    require(s != nullptr, "sampler must not be NULL");
    return s->s->clone();
  });
}
void dsinfer_sampler_reset(dsinfer_sampler* s) {
  if (s) s->s->reset();
}

void dsinfer_session_params_init(dsinfer_session_params* p, size_t struct_size) {
  if (!p) return;
  dsinfer_session_params d{};
  d.struct_size = sizeof d;
  d.capacity = 4096;
  d.precision = DSINFER_PRECISION_FP8;
  d.speculative_adaptive = 1;
  std::memcpy(p, &d, std::min(struct_size, sizeof d));
  if (struct_size >= sizeof p->struct_size) p->struct_size = std::min(struct_size, sizeof d);  // never past the caller's size
}

void dsinfer_generate_params_init(dsinfer_generate_params* p, size_t struct_size) {
  if (!p) return;
  dsinfer_generate_params d{};
  d.struct_size = sizeof d;
  d.max_tokens = 256;
  d.stop_at_eos = 1;
  std::memcpy(p, &d, std::min(struct_size, sizeof d));
  if (struct_size >= sizeof p->struct_size) p->struct_size = std::min(struct_size, sizeof d);  // never past the caller's size
}

dsinfer_status dsinfer_session_create(const dsinfer_model* m, const dsinfer_tokenizer* t, const dsinfer_session_params* p,
                                      dsinfer_session** out) {
  if (out) *out = nullptr;
  return guarded([&] {
    require(m && t && out, "model, tokenizer and out must not be NULL");
    dsinfer_session_params sp{};
    dsinfer_session_params_init(&sp, sizeof sp);
    if (p) std::memcpy(&sp, p, readable(*p));
    dsinfer::SessionParams params;
    params.capacity = sp.capacity > 0 ? sp.capacity : 4096;
    // A C caller may store any int in the enum field; read it as an int (a C++ enum load past the enum's values is
    // undefined) and refuse what is not a precision rather than read it as fp8.
    int precision = 0;
    static_assert(sizeof precision == sizeof sp.precision);
    std::memcpy(&precision, &sp.precision, sizeof precision);
    if (precision != DSINFER_PRECISION_FP8 && precision != DSINFER_PRECISION_REFERENCE)
      throw dsinfer::Error(dsinfer::ErrorCode::InvalidArgument,
                           "dsinfer_session_params.precision must be DSINFER_PRECISION_FP8 (0) or "
                           "DSINFER_PRECISION_REFERENCE (1), got " + std::to_string(precision));
    params.eval.precision = precision == DSINFER_PRECISION_REFERENCE ? dsinfer::Precision::Reference : dsinfer::Precision::Fp8;
    params.thinking = sp.thinking ? dsinfer::ThinkingMode::Thinking : dsinfer::ThinkingMode::Chat;
    params.seed = sp.seed;
    params.speculative.draft_tokens = sp.speculative_draft_tokens;  // range-checked by the Session
    params.speculative.adaptive = sp.speculative_adaptive != 0;
    *out = new dsinfer_session{std::make_unique<dsinfer::Session>(*m->m, *t->t, params), m, t, {}};
  });
}
void dsinfer_session_free(dsinfer_session* s) { delete s; }

dsinfer_status dsinfer_session_set_sampler(dsinfer_session* s, dsinfer_sampler* sampler) {
  return guarded([&] {
    require(s && sampler, "session and sampler must not be NULL");
    std::unique_ptr<dsinfer::SamplerChain> chain;
    if (auto* c = dynamic_cast<dsinfer::SamplerChain*>(sampler->s.get())) {
      sampler->s.release();
      chain.reset(c);
    } else {
      chain = std::make_unique<dsinfer::SamplerChain>();
      chain->add(std::move(sampler->s));
    }
    s->s->set_sampler(std::move(chain));
    delete sampler;
  });
}

dsinfer_status dsinfer_session_prefill(dsinfer_session* s, const int32_t* ids, size_t n_ids) {
  return guarded([&] {
    require(s && (ids || n_ids == 0), "session and ids must not be NULL");
    s->s->prefill(std::span<const int32_t>(ids, n_ids));
  });
}

dsinfer_status dsinfer_session_set_messages(dsinfer_session* s, const char* messages_json) {
  return guarded([&] {
    require(s && messages_json, "session and messages_json must not be NULL");
    s->s->set_messages(dsinfer::chat_messages_from_json(messages_json));
  });
}

dsinfer_status dsinfer_session_generate_start(dsinfer_session* s, const dsinfer_generate_params* p) {
  return guarded([&] {
    require(s != nullptr, "session must not be NULL");
    const dsinfer::GenerateParams g = to_generate_params(p);
    s->s->start(g);
  });
}

dsinfer_status dsinfer_session_next_event(dsinfer_session* s, dsinfer_event* ev) {
  return guarded([&] {
    require(s && ev, "session and event must not be NULL");
    // The caller's struct may be older (smaller) than this library's: write only what its struct_size covers, and
    // say in struct_size how much was written, so that a later call never writes past the caller's struct.
    constexpr size_t min_size = offsetof(dsinfer_event, kind) + sizeof(ev->kind);
    const size_t caller_size = ev->struct_size;
    if (caller_size < min_size)
      throw dsinfer::Error(dsinfer::ErrorCode::InvalidArgument,
                           "dsinfer_event.struct_size is " + std::to_string(caller_size) +
                               ": set it to sizeof(dsinfer_event) before dsinfer_session_next_event");
    dsinfer_event out;
    if (!s->s->next(s->current)) {
      s->current = dsinfer::ChatEvent{};
      out = to_c_event(s->current);
      out.kind = DSINFER_EVENT_DONE;
    } else {
      out = to_c_event(s->current);
    }
    out.struct_size = std::min(caller_size, sizeof out);
    std::memcpy(ev, &out, out.struct_size);
  });
}

dsinfer_finish_reason dsinfer_session_finish_reason(const dsinfer_session* s) {
  if (!s) return DSINFER_FINISH_NONE;
  switch (s->s->finish_reason()) {
    case dsinfer::FinishReason::Eos: return DSINFER_FINISH_EOS;
    case dsinfer::FinishReason::StopString: return DSINFER_FINISH_STOP;
    case dsinfer::FinishReason::MaxTokens: return DSINFER_FINISH_LENGTH;
    default: return DSINFER_FINISH_NONE;
  }
}
int64_t dsinfer_session_n_tokens(const dsinfer_session* s) { return s ? int64_t(s->s->tokens().size()) : 0; }
int64_t dsinfer_session_last_prefill_tokens(const dsinfer_session* s) { return s ? s->s->last_prefill_tokens() : 0; }

void dsinfer_session_cancel(dsinfer_session* s) {
  if (s) s->s->cancel();
}

dsinfer_status dsinfer_session_speculative_stats(const dsinfer_session* s, dsinfer_speculative_stats* out) {
  return guarded([&] {
    require(s && out, "session and out must not be NULL");
    const size_t caller_size = out->struct_size;
    require(caller_size >= sizeof out->struct_size, "dsinfer_speculative_stats.struct_size must be set (sizeof *out)");
    static_assert(DSINFER_MAX_DRAFT_TOKENS == dsinfer::Model::kMaxDraftTokens);
    const dsinfer::SpeculativeStats& st = s->s->speculative_stats();
    dsinfer_speculative_stats r{};
    r.steps = st.steps;
    r.drafted = st.drafted;
    r.accepted = st.accepted;
    r.plain_steps = st.plain_steps;
    for (size_t i = 0; i < st.drafted_at.size() && i < DSINFER_MAX_DRAFT_TOKENS; ++i) {
      r.drafted_at[i] = st.drafted_at[i];
      r.accepted_at[i] = st.accepted_at[i];
    }
    // An older (smaller) struct gets the fields it has; struct_size says how much was written.
    r.struct_size = std::min(caller_size, sizeof r);
    std::memcpy(out, &r, r.struct_size);
  });
}

dsinfer_status dsinfer_session_generated(const dsinfer_session* s, int32_t* ids, size_t capacity, size_t* n) {
  return guarded([&] {
    require(s && n, "session and n must not be NULL");
    const auto& g = s->s->generated();
    *n = g.size();
    if (ids) std::memcpy(ids, g.data(), std::min(capacity, g.size()) * sizeof(int32_t));
  });
}

dsinfer_status dsinfer_session_fork(const dsinfer_session* s, dsinfer_session** out) {
  if (out) *out = nullptr;
  return guarded([&] {
    require(s && out, "session and out must not be NULL");
    *out = new dsinfer_session{s->s->fork(), s->model, s->tok, {}};
  });
}

dsinfer_status dsinfer_session_save(const dsinfer_session* s, const char* path) {
  return guarded([&] {
    require(s && path, "session and path must not be NULL");
    s->s->save(path);
  });
}

dsinfer_status dsinfer_session_restore(dsinfer_session* s, const char* path) {
  return guarded([&] {
    require(s && path, "session and path must not be NULL");
    s->s->restore(path);
  });
}

dsinfer_status dsinfer_engine_generate(const dsinfer_model* m, dsinfer_session* const* sessions, size_t n_sessions,
                                       const dsinfer_generate_params* p,
                                       void (*on_event)(size_t, const dsinfer_event*, void*), void* user_data) {
  return guarded([&] {
    require(m && (sessions || n_sessions == 0), "model and sessions must not be NULL");
    const dsinfer::GenerateParams g = to_generate_params(p);
    std::vector<dsinfer::Session*> ss;
    for (size_t i = 0; i < n_sessions; ++i) {
      require(sessions[i] != nullptr && sessions[i]->model == m, "every session must be non-NULL and use this model");
      ss.push_back(sessions[i]->s.get());
    }
    dsinfer::Engine engine(*m->m);
    engine.generate(ss, g, [&](size_t i, const dsinfer::ChatEvent& e) {
      if (!on_event) return;
      const dsinfer_event ev = to_c_event(e);
      on_event(i, &ev, user_data);
    });
  });
}

}  // extern "C"
