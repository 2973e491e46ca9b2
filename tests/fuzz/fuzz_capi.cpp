// The C ABI's param structs and size fields as a caller may fill them: every struct_size and field value either
// works or gives a status, the library never writes past the caller's struct_size, never calls a NULL pointer and
// never frees twice. The input is read as a sequence of integers that fill the structs in turn; the model is the
// smallest generated checkpoint (DSINFER_MODELS_DIR/v32-micro: two layers, so the forward does not dominate each
// execution), loaded once.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "dsinfer.h"

namespace {

// Reads little-endian integers from the input; zeros once it runs out.
struct Reader {
  const uint8_t* p;
  size_t n;
  uint64_t u64() {
    uint64_t v = 0;
    const size_t k = n < 8 ? n : 8;
    std::memcpy(&v, p, k);
    p += k;
    n -= k;
    return v;
  }
  uint8_t u8() {
    if (n == 0) return 0;
    --n;
    return *p++;
  }
  // A size near the struct's: small values and the struct's own size are what callers get wrong.
  size_t size_near(size_t real) {
    const uint8_t k = u8();
    if (k < 64) return k;
    if (k < 128) return real;
    if (k < 192) return real + (k - 128);
    return size_t(u64());
  }
};

struct Loaded {
  dsinfer_model* m = nullptr;
  dsinfer_tokenizer* t = nullptr;
};
const Loaded& loaded() {
  static const Loaded l = [] {
    Loaded x;
    const std::string dir = std::string(DSINFER_MODELS_DIR) + "/v32-micro";
    dsinfer_model_params p;
    DSINFER_MODEL_PARAMS_INIT(&p);
    p.n_threads = 1;
    p.kv_cache_tokens = 4096;
    if (dsinfer_model_load(dir.c_str(), &p, &x.m) != DSINFER_OK || dsinfer_tokenizer_load(dir.c_str(), &x.t) != DSINFER_OK)
      std::abort();
    return x;
  }();
  return l;
}

constexpr unsigned char kGuard = 0xA5;
constexpr size_t kMaxStruct = 512;

// A caller buffer of `size` bytes (capped) followed by guard bytes that the library must not touch.
struct Guarded {
  std::vector<unsigned char> buf;
  size_t size;
  explicit Guarded(size_t s) : buf(kMaxStruct + 64, kGuard), size(s < kMaxStruct ? s : kMaxStruct) {}
  void* data() { return buf.data(); }
  void check_guard() const {
    for (size_t i = size; i < buf.size(); ++i)
      if (buf[i] != kGuard) __builtin_trap();  // written past the caller's struct_size
  }
};

dsinfer_status pick_first(void*, dsinfer_candidates* c) {
  c->selected = c->n > 0 ? 0 : -1;
  return DSINFER_OK;
}
dsinfer_status fail_apply(void*, dsinfer_candidates*) { return DSINFER_E_INVALID_ARG; }
void count_free(void* ud) { ++*static_cast<int*>(ud); }

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const Loaded& l = loaded();
  Reader r{data, size};

  // The *_params_init functions write at most struct_size bytes.
  {
    Guarded g(r.size_near(sizeof(dsinfer_model_params)));
    dsinfer_model_params_init(static_cast<dsinfer_model_params*>(g.data()), g.size);
    g.check_guard();
    Guarded h(r.size_near(sizeof(dsinfer_session_params)));
    dsinfer_session_params_init(static_cast<dsinfer_session_params*>(h.data()), h.size);
    h.check_guard();
    Guarded k(r.size_near(sizeof(dsinfer_generate_params)));
    dsinfer_generate_params_init(static_cast<dsinfer_generate_params*>(k.data()), k.size);
    k.check_guard();
  }

  // Session params as the caller filled them (the struct_size says how much the library may read).
  dsinfer_session_params sp;
  std::memset(&sp, 0, sizeof sp);
  sp.struct_size = r.size_near(sizeof sp) % (sizeof sp + 1);
  sp.capacity = int64_t(r.u64() % 3 == 0 ? r.u64() : r.u64() % 512);
  sp.precision = static_cast<dsinfer_precision>(r.u8() % 3);
  sp.thinking = r.u8() & 1;
  dsinfer_session* s = nullptr;
  if (dsinfer_session_create(l.m, l.t, &sp, &s) != DSINFER_OK) return 0;

  // A sampler: built-in, custom with a fuzzed iface size, or a chain (also added to itself).
  int freed = 0;
  dsinfer_sampler* sampler = nullptr;
  switch (r.u8() % 4) {
    case 0:
      dsinfer_sampler_greedy_create(&sampler);
      break;
    case 1: {
      dsinfer_sampler_iface iface;
      std::memset(&iface, 0, sizeof iface);
      iface.struct_size = r.size_near(sizeof iface) % (sizeof iface + 1);
      iface.apply = (r.u8() & 3) ? pick_first : (r.u8() & 1 ? fail_apply : nullptr);
      iface.free = count_free;
      if (dsinfer_sampler_custom_create(&iface, &freed, &sampler) != DSINFER_OK && sampler) __builtin_trap();
      break;
    }
    default: {
      dsinfer_sampler_chain_create(&sampler);
      if (dsinfer_sampler_chain_add(sampler, sampler) == DSINFER_OK) __builtin_trap();  // a chain cannot own itself
      dsinfer_sampler* k = nullptr;
      dsinfer_sampler_top_k_create(int64_t(r.u64()), &k);
      if (k && dsinfer_sampler_chain_add(sampler, k) != DSINFER_OK) dsinfer_sampler_free(k);
      dsinfer_sampler* g = nullptr;
      dsinfer_sampler_greedy_create(&g);
      if (g && dsinfer_sampler_chain_add(sampler, g) != DSINFER_OK) dsinfer_sampler_free(g);
      break;
    }
  }
  if (sampler && dsinfer_session_set_sampler(s, sampler) != DSINFER_OK) dsinfer_sampler_free(sampler);

  int32_t prompt[4];
  for (auto& id : prompt) id = int32_t(r.u8()) * 13;
  if (dsinfer_session_prefill(s, prompt, 1 + r.u8() % 4) == DSINFER_OK) {
    dsinfer_generate_params gp;
    std::memset(&gp, 0, sizeof gp);
    gp.struct_size = r.size_near(sizeof gp) % (sizeof gp + 1);
    gp.max_tokens = int64_t(r.u64() % 4);
    gp.stop_at_eos = r.u8() & 1;
    if (dsinfer_session_generate_start(s, &gp) == DSINFER_OK) {
      // Events into a caller struct of a fuzzed size: nothing past it may change, and struct_size says what was
      // written.
      const size_t ev_size = r.size_near(sizeof(dsinfer_event));
      for (int step = 0; step < 8; ++step) {
        Guarded ev(ev_size);
        std::memcpy(ev.data(), &ev.size, sizeof(size_t) <= ev.size ? sizeof(size_t) : ev.size);
        if (ev.size < sizeof(size_t)) break;  // the struct cannot even hold its size field
        const dsinfer_status st = dsinfer_session_next_event(s, static_cast<dsinfer_event*>(ev.data()));
        ev.check_guard();
        if (st != DSINFER_OK) break;
        size_t written;
        std::memcpy(&written, ev.data(), sizeof written);
        if (written > ev.size) __builtin_trap();
        dsinfer_event full;
        std::memset(&full, 0, sizeof full);
        std::memcpy(&full, ev.data(), written < sizeof full ? written : sizeof full);
        if (written >= offsetof(dsinfer_event, kind) + sizeof full.kind && full.kind == DSINFER_EVENT_DONE) break;
      }
    }
  }
  dsinfer_session_free(s);
  if (freed > 1) __builtin_trap();  // a custom sampler's free ran twice
  return 0;
}
