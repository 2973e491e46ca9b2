// The C ABI misused the ways an embedder can get wrong (issue 20): each call must fail with a status and a message,
// and never write past the caller's structs, call a NULL pointer or free something twice.
#include <catch2/catch.hpp>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "dsinfer.h"

namespace {

const std::string kModel = std::string(DSINFER_MODELS_DIR) + "/v32-tiny";

struct Loaded {
  dsinfer_model* m = nullptr;
  dsinfer_tokenizer* t = nullptr;
  Loaded() {
    dsinfer_model_params p;
    DSINFER_MODEL_PARAMS_INIT(&p);
    p.n_threads = 1;
    REQUIRE(dsinfer_model_load(kModel.c_str(), &p, &m) == DSINFER_OK);
    REQUIRE(dsinfer_tokenizer_load(kModel.c_str(), &t) == DSINFER_OK);
  }
  ~Loaded() {
    dsinfer_tokenizer_free(t);
    dsinfer_model_free(m);
  }
};

dsinfer_status apply_greedy(void*, dsinfer_candidates* c) {
  c->selected = 0;
  return DSINFER_OK;
}

}  // namespace

TEST_CASE("next_event writes only what an older, smaller caller struct holds, and keeps its struct_size",
          "[capi]") {
  Loaded l;
  dsinfer_session* s = nullptr;
  REQUIRE(dsinfer_session_create(l.m, l.t, nullptr, &s) == DSINFER_OK);
  const int32_t prompt[] = {1, 2, 3};
  REQUIRE(dsinfer_session_prefill(s, prompt, 3) == DSINFER_OK);
  dsinfer_generate_params g;
  DSINFER_GENERATE_PARAMS_INIT(&g);
  g.max_tokens = 3;
  g.stop_at_eos = 0;
  REQUIRE(dsinfer_session_generate_start(s, &g) == DSINFER_OK);
  // An "older" event struct: only struct_size, kind and text; the bytes after it belong to someone else.
  constexpr size_t old_size = offsetof(dsinfer_event, text) + sizeof(const char*);
  std::vector<unsigned char> buf(sizeof(dsinfer_event) + 64, 0xAB);
  const size_t caller = old_size;
  std::memcpy(buf.data(), &caller, sizeof caller);
  for (int call = 0; call < 5; ++call) {  // past the end of the generation too (DONE)
    REQUIRE(dsinfer_session_next_event(s, reinterpret_cast<dsinfer_event*>(buf.data())) == DSINFER_OK);
    size_t now = 0;
    std::memcpy(&now, buf.data(), sizeof now);
    CHECK(now == old_size);
    for (size_t i = old_size; i < buf.size(); ++i) REQUIRE(buf[i] == 0xAB);
  }
  // A struct_size that does not even cover `kind` is refused (it used to mean "the whole current struct").
  dsinfer_event ev{};
  ev.struct_size = 0;
  CHECK(dsinfer_session_next_event(s, &ev) == DSINFER_E_INVALID_ARG);
  CHECK(std::string(dsinfer_last_error()).find("struct_size") != std::string::npos);
  // A newer, larger caller struct: the library writes its own size and says so.
  struct Newer {
    dsinfer_event ev;
    uint64_t appended;
  } newer{};
  newer.ev.struct_size = sizeof newer;
  newer.appended = 77;
  REQUIRE(dsinfer_session_next_event(s, &newer.ev) == DSINFER_OK);
  CHECK(newer.ev.struct_size == sizeof(dsinfer_event));
  CHECK(newer.appended == 77);
  dsinfer_session_free(s);
}

TEST_CASE("a custom sampler iface whose struct_size does not cover apply is refused", "[capi]") {
  dsinfer_sampler_iface iface{};
  iface.apply = apply_greedy;
  dsinfer_sampler* s = nullptr;
  for (size_t size : {size_t(0), sizeof(size_t), offsetof(dsinfer_sampler_iface, apply) + 1}) {
    iface.struct_size = size;
    CHECK(dsinfer_sampler_custom_create(&iface, nullptr, &s) == DSINFER_E_INVALID_ARG);
    CHECK(s == nullptr);
    CHECK(std::string(dsinfer_last_error()).find("struct_size") != std::string::npos);
  }
  CHECK(dsinfer_sampler_custom_create(nullptr, nullptr, &s) == DSINFER_E_INVALID_ARG);
  // Covering apply only (an iface from before accept/free/name existed) is enough: the rest are NULL.
  iface.struct_size = offsetof(dsinfer_sampler_iface, apply) + sizeof iface.apply;
  iface.accept = reinterpret_cast<void (*)(void*, int32_t)>(1);  // past the caller's size: must not be read
  REQUIRE(dsinfer_sampler_custom_create(&iface, nullptr, &s) == DSINFER_OK);
  Loaded l;
  dsinfer_session* sess = nullptr;
  REQUIRE(dsinfer_session_create(l.m, l.t, nullptr, &sess) == DSINFER_OK);
  REQUIRE(dsinfer_session_set_sampler(sess, s) == DSINFER_OK);
  const int32_t prompt[] = {5, 6};
  REQUIRE(dsinfer_session_prefill(sess, prompt, 2) == DSINFER_OK);
  dsinfer_generate_params g;
  DSINFER_GENERATE_PARAMS_INIT(&g);
  g.max_tokens = 2;
  g.stop_at_eos = 0;
  REQUIRE(dsinfer_session_generate_start(sess, &g) == DSINFER_OK);
  dsinfer_event ev;
  do {
    ev.struct_size = sizeof ev;
    REQUIRE(dsinfer_session_next_event(sess, &ev) == DSINFER_OK);
  } while (ev.kind != DSINFER_EVENT_DONE);
  size_t n = 0;
  REQUIRE(dsinfer_session_generated(sess, nullptr, 0, &n) == DSINFER_OK);
  CHECK(n == 2);
  dsinfer_session_free(sess);
  // An apply of NULL within the size is refused as before.
  iface.apply = nullptr;
  CHECK(dsinfer_sampler_custom_create(&iface, nullptr, &s) == DSINFER_E_INVALID_ARG);
}

TEST_CASE("a sampler chain cannot be added to itself", "[capi]") {
  dsinfer_sampler* chain = nullptr;
  REQUIRE(dsinfer_sampler_chain_create(&chain) == DSINFER_OK);
  CHECK(dsinfer_sampler_chain_add(chain, chain) == DSINFER_E_INVALID_ARG);
  CHECK(std::string(dsinfer_last_error()).find("itself") != std::string::npos);
  // The chain is still the caller's and still works.
  dsinfer_sampler* greedy = nullptr;
  REQUIRE(dsinfer_sampler_greedy_create(&greedy) == DSINFER_OK);
  CHECK(dsinfer_sampler_chain_add(chain, greedy) == DSINFER_OK);
  dsinfer_sampler_free(chain);
}

TEST_CASE("the params init functions write at most struct_size bytes, even below the size field's own",
          "[capi]") {  // found by fuzz_capi
  for (size_t size = 0; size <= sizeof(dsinfer_generate_params) + 8; ++size) {
    std::vector<unsigned char> a(64, 0xAB), b(64, 0xAB), c(64, 0xAB);
    dsinfer_model_params_init(reinterpret_cast<dsinfer_model_params*>(a.data()), size);
    dsinfer_session_params_init(reinterpret_cast<dsinfer_session_params*>(b.data()), size);
    dsinfer_generate_params_init(reinterpret_cast<dsinfer_generate_params*>(c.data()), size);
    for (size_t i = size; i < 64; ++i) {
      INFO("size " << size << ", byte " << i);
      REQUIRE(a[i] == 0xAB);
      REQUIRE(b[i] == 0xAB);
      REQUIRE(c[i] == 0xAB);
    }
  }
}

TEST_CASE("a precision that is not one of the enum's values is refused", "[capi]") {  // found by fuzz_capi
  Loaded l;
  for (int value : {2, -1, 1 << 20}) {
    dsinfer_session_params p;
    DSINFER_SESSION_PARAMS_INIT(&p);
    std::memcpy(&p.precision, &value, sizeof value);  // what a C caller can store in the field
    dsinfer_session* s = nullptr;
    CHECK(dsinfer_session_create(l.m, l.t, &p, &s) == DSINFER_E_INVALID_ARG);
    CHECK(s == nullptr);
    CHECK(std::string(dsinfer_last_error()).find("precision") != std::string::npos);
  }
}

TEST_CASE("a struct_size that ends inside a member leaves that member at its default", "[capi]") {  // fuzz_capi
  // Half a function pointer used to be copied and called when the sampler was freed.
  int freed = 0;
  dsinfer_sampler_iface iface{};
  iface.apply = apply_greedy;
  iface.free = [](void* ud) { ++*static_cast<int*>(ud); };
  iface.struct_size = offsetof(dsinfer_sampler_iface, free) + 4;
  dsinfer_sampler* s = nullptr;
  REQUIRE(dsinfer_sampler_custom_create(&iface, &freed, &s) == DSINFER_OK);
  dsinfer_sampler_free(s);
  CHECK(freed == 0);  // not covered whole: no free callback
  iface.struct_size = offsetof(dsinfer_sampler_iface, free) + sizeof iface.free;
  REQUIRE(dsinfer_sampler_custom_create(&iface, &freed, &s) == DSINFER_OK);
  dsinfer_sampler_free(s);
  CHECK(freed == 1);
  // The same for a params struct: half a constraint pointer must not be followed.
  Loaded l;
  dsinfer_session* sess = nullptr;
  REQUIRE(dsinfer_session_create(l.m, l.t, nullptr, &sess) == DSINFER_OK);
  const int32_t prompt[] = {1, 2};
  REQUIRE(dsinfer_session_prefill(sess, prompt, 2) == DSINFER_OK);
  dsinfer_generate_params g;
  DSINFER_GENERATE_PARAMS_INIT(&g);
  g.max_tokens = 1;
  std::memset(&g.constraint, 0x5A, sizeof g.constraint);  // garbage where the caller's struct has ended
  g.struct_size = offsetof(dsinfer_generate_params, constraint) + 3;
  REQUIRE(dsinfer_session_generate_start(sess, &g) == DSINFER_OK);
  dsinfer_event ev;
  do {
    ev.struct_size = sizeof ev;
    REQUIRE(dsinfer_session_next_event(sess, &ev) == DSINFER_OK);
  } while (ev.kind != DSINFER_EVENT_DONE);
  dsinfer_session_free(sess);
}

TEST_CASE("invalid UTF-8 in prompt text, messages, tools and completions is an error status with a readable message",
          "[capi][utf8]") {
  // The message must itself be valid UTF-8: bindings turn it into a string (Python's str) and would fail on it.
  auto readable = [](const std::string& s) {
    for (size_t i = 0; i < s.size();) {
      const auto c = static_cast<unsigned char>(s[i]);
      const size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
      if (n == 0 || i + n > s.size()) return false;
      for (size_t k = 1; k < n; ++k)
        if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return false;
      i += n;
    }
    return true;
  };
  // Bytes that are not UTF-8: a lone continuation byte, 0xFF, a cut-off sequence, an overlong '/', a surrogate.
  const std::vector<std::pair<std::string, int>> bad = {
      {"\x80", 6}, {"\xff", 6}, {"caf\xc3", 9}, {"\xc0\xaf", 6}, {"\xed\xa0\x80", 6}};  // bytes, offset in text
  Loaded l;
  dsinfer_session* s = nullptr;
  REQUIRE(dsinfer_session_create(l.m, l.t, nullptr, &s) == DSINFER_OK);
  for (const auto& [b, at] : bad) {
    INFO("bytes " << b.size());
    const std::string text = "Hello " + b + " world";
    const std::string at_byte = "byte " + std::to_string(at), at_offset = "offset " + std::to_string(at);
    size_t n_ids = 7;
    CHECK(dsinfer_tokenizer_encode(l.t, text.data(), text.size(), 1, nullptr, 0, &n_ids) == DSINFER_E_INVALID_ARG);
    CHECK_THAT(dsinfer_last_error(), Catch::Contains("UTF-8") && Catch::Contains(at_offset));
    CHECK(readable(dsinfer_last_error()));

    char* out = reinterpret_cast<char*>(1);
    CHECK(dsinfer_chat_parse_completion((text + "<｜end▁of▁sentence｜>").c_str(), 0, &out) == DSINFER_E_INVALID_ARG);
    CHECK(out == nullptr);
    CHECK_THAT(dsinfer_last_error(), Catch::Contains("UTF-8") && Catch::Contains(at_byte));
    CHECK(readable(dsinfer_last_error()));

    // The same bytes inside JSON strings: message content, a tool's description, a tool call's arguments (JSON in a
    // JSON string), and as a \u escape of a lone surrogate, which is valid JSON syntax but not text.
    const std::vector<std::string> requests = {
        R"({"messages": [{"role": "user", "content": ")" + text + R"("}]})",
        R"({"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "q"}], "tools": [{"type": "function", "function": {"name": "f", "description": ")" +
            text + R"(", "parameters": {"type": "object"}}}]})",
        R"({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "", "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": "{\"a\": \")" +
            text + R"(\"}"}}]}]})",
        R"({"messages": [{"role": "user", "content": "x \ud800 y"}]})",
        R"({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "", "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": "{\"a\": \"\\udc00\"}"}}]}]})",
    };
    for (const std::string& req : requests) {
      INFO(req.size());
      out = reinterpret_cast<char*>(1);
      const dsinfer_status st = dsinfer_chat_encode(req.c_str(), 1, &out);
      CHECK((st == DSINFER_E_FORMAT || st == DSINFER_E_INVALID_ARG));
      CHECK(out == nullptr);
      CHECK(readable(dsinfer_last_error()));
      const dsinfer_status st2 = dsinfer_session_set_messages(s, req.c_str());
      CHECK(st2 == st);
      CHECK(readable(dsinfer_last_error()));
    }
  }
  // The session is still usable after the refusals.
  REQUIRE(dsinfer_session_set_messages(s, R"({"messages": [{"role": "user", "content": "héllo"}]})") == DSINFER_OK);
  dsinfer_session_free(s);
}
