// Many sessions stepped together in one forward give exactly the tokens and logits each gets alone; a ragged
// batch mixing prefill chunks and decode tokens equals the sequences evaluated one by one.
#include <catch2/catch.hpp>
#include <fmt/format.h>

#include <filesystem>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "dsinfer/session.hpp"

using namespace dsinfer;
namespace fs = std::filesystem;

namespace {
const std::string kModel = (fs::path(DSINFER_MODELS_DIR) / "v32-tiny").string();

std::vector<ChatMessage> user(const std::string& text) {
  ChatMessage m;
  m.role = "user";
  m.content = text;
  return {m};
}
// Argmax decoding: a session's default chain samples as the checkpoint's generation_config.json says.
std::unique_ptr<SamplerChain> greedy_chain() {
  auto chain = std::make_unique<SamplerChain>();
  chain->add(make_greedy_sampler());
  return chain;
}
}  // namespace

TEST_CASE("a ragged batch (prefill chunks + decode tokens) equals each sequence alone, bitwise", "[engine]") {
  auto model = Model::load(kModel, ModelLoadParams{.n_threads = 2});
  for (Precision prec : {Precision::Reference, Precision::Fp8}) {
    EvalOptions o;
    o.precision = prec;
    o.all_logits = true;
    std::vector<int32_t> a(30), b(12), c(3);
    for (size_t i = 0; i < a.size(); ++i) a[i] = int32_t(5 + 7 * i);
    for (size_t i = 0; i < b.size(); ++i) b[i] = int32_t(900 + 3 * i);
    for (size_t i = 0; i < c.size(); ++i) c[i] = int32_t(2000 + i);
    // Alone: a in one go, b as 11 + 1, c as 3.
    auto sa = model->new_sequence(64), sb = model->new_sequence(64), sc = model->new_sequence(64);
    const auto la = model->eval(*sa, a, o);
    model->eval(*sb, std::span(b).first(11), o);
    const auto lb = model->eval(*sb, std::span(b).last(1), o);
    const auto lc = model->eval(*sc, c, o);
    // Together: b's first 11 alone first, then one batch with a (prefill 30), b (decode 1) and c (prefill 3).
    auto ta = model->new_sequence(64), tb = model->new_sequence(64), tc = model->new_sequence(64);
    model->eval(*tb, std::span(b).first(11), o);
    std::vector<Model::BatchEntry> batch(3);
    batch[0].sequence = ta.get();
    batch[0].ids = a;
    batch[0].all_logits = true;
    batch[1].sequence = tb.get();
    batch[1].ids = std::span(b).last(1);
    batch[1].all_logits = true;
    batch[2].sequence = tc.get();
    batch[2].ids = c;
    batch[2].all_logits = true;
    model->eval_batch(batch, o);
    CHECK(batch[0].logits == la);
    CHECK(batch[1].logits == lb);
    CHECK(batch[2].logits == lc);
    CHECK(ta->size() == 30);
    CHECK(tb->size() == 12);
  }
}

TEST_CASE("1, 4 and 16 concurrent sessions give the same tokens as alone", "[engine][session]") {
  auto model = Model::load(kModel, ModelLoadParams{.n_threads = 2});
  auto tok = Tokenizer::load(kModel);
  for (int n : {1, 4, 16}) {
    GenerateParams g;
    g.max_tokens = 10;
    g.stop_at_eos = false;
    bool queue = false;
    auto make = [&](int i) {
      SessionParams sp;
      sp.capacity = 256;
      auto s = std::make_unique<Session>(*model, *tok, sp);
      auto chain = std::make_unique<SamplerChain>();
      chain->add(make_top_k_sampler(20)).add(make_dist_sampler(uint64_t(100 + i)));
      s->set_sampler(std::move(chain));
      // Half the sessions evaluate their prompt now; the other half queue it, so the engine's first forward mixes
      // their prefill chunks with the first decode tokens of the others.
      if (queue && i % 2) s->queue_messages(user(fmt::format("Question number {}: {}", i, std::string(size_t(i % 5), '?'))));
      else s->set_messages(user(fmt::format("Question number {}: {}", i, std::string(size_t(i % 5), '?'))));
      return s;
    };
    std::vector<std::vector<int32_t>> alone;
    std::vector<std::vector<float>> alone_logits;
    for (int i = 0; i < n; ++i) {
      auto s = make(i);
      s->generate(g);
      alone.push_back(s->generated());
      alone_logits.push_back(s->last_logits());
    }
    queue = true;
    std::vector<std::unique_ptr<Session>> owned;
    std::vector<Session*> sessions;
    for (int i = 0; i < n; ++i) {
      owned.push_back(make(i));
      sessions.push_back(owned.back().get());
    }
    std::vector<std::string> streamed(static_cast<size_t>(n));
    Engine engine(*model);
    engine.generate(sessions, g, [&](size_t i, const ChatEvent& e) {
      if (e.kind == ChatEvent::Kind::ContentDelta) streamed[i] += e.text;
    });
    for (int i = 0; i < n; ++i) {
      INFO(n << " sessions, session " << i);
      CHECK(sessions[size_t(i)]->generated() == alone[size_t(i)]);
      CHECK(sessions[size_t(i)]->last_logits() == alone_logits[size_t(i)]);
      CHECK(streamed[size_t(i)] == sessions[size_t(i)]->generated_text());
    }
  }
}

namespace {
// A user sampler that records the threads it runs on, then picks the argmax; says thread_compatible() as asked.
struct ThreadRecordingGreedy final : Sampler {
  explicit ThreadRecordingGreedy(bool compatible) : compatible(compatible) {}
  bool compatible;
  std::shared_ptr<std::set<std::thread::id>> threads = std::make_shared<std::set<std::thread::id>>();
  std::string name() const override { return "recording_greedy"; }
  void apply(Candidates& c) override {
    static std::mutex mu;  // the compatible ones run concurrently
    {
      std::lock_guard<std::mutex> lock(mu);
      threads->insert(std::this_thread::get_id());
    }
    make_greedy_sampler()->apply(c);
  }
  std::unique_ptr<Sampler> clone() const override { return std::make_unique<ThreadRecordingGreedy>(*this); }
  bool thread_compatible() const override { return compatible; }
};
}  // namespace

TEST_CASE("the engine samples thread-compatible chains on its workers, other samplers on the caller's thread",
          "[engine][session]") {
  // 9 sessions on a model of 2 threads, in three kinds: built-in samplers, a user sampler that is not
  // thread-compatible (the default: only ever called on the thread stepping the engine) and one that is (sampled
  // on the engine's workers too). Every session gets the tokens and streamed text it gets alone; events reach the
  // callback on the caller's thread.
  auto model = Model::load(kModel, ModelLoadParams{.n_threads = 2});
  REQUIRE(model->host_threads() == 2);
  auto tok = Tokenizer::load(kModel);
  GenerateParams g;
  g.max_tokens = 12;
  g.stop_at_eos = false;
  std::vector<std::shared_ptr<std::set<std::thread::id>>> serial_seen, parallel_seen;
  auto make = [&](int i) {
    SessionParams sp;
    sp.capacity = 256;
    auto s = std::make_unique<Session>(*model, *tok, sp);
    auto chain = std::make_unique<SamplerChain>();
    if (i % 3 == 0) {
      chain->add(make_temperature_sampler(1.0f)).add(make_top_p_sampler(0.9f)).add(make_dist_sampler(uint64_t(7 + i)));
      CHECK(chain->thread_compatible());
    } else {
      auto user_sampler = std::make_unique<ThreadRecordingGreedy>(i % 3 == 2);
      (i % 3 == 2 ? parallel_seen : serial_seen).push_back(user_sampler->threads);
      chain->add(std::move(user_sampler));
      CHECK(chain->thread_compatible() == (i % 3 == 2));
    }
    s->set_sampler(std::move(chain));
    s->set_messages(user(fmt::format("Session {} asks.", i)));
    return s;
  };
  const int n = 9;
  std::vector<std::vector<int32_t>> alone;
  std::vector<std::string> alone_text;
  for (int i = 0; i < n; ++i) {
    auto s = make(i);
    s->generate(g);
    alone.push_back(s->generated());
    alone_text.push_back(s->generated_text());
  }
  serial_seen.clear();
  parallel_seen.clear();
  std::vector<std::unique_ptr<Session>> owned;
  std::vector<Session*> sessions;
  for (int i = 0; i < n; ++i) {
    owned.push_back(make(i));
    sessions.push_back(owned.back().get());
  }
  const std::thread::id caller = std::this_thread::get_id();
  std::vector<std::string> streamed(static_cast<size_t>(n));
  bool events_elsewhere = false;
  Engine engine(*model);
  engine.generate(sessions, g, [&](size_t i, const ChatEvent& e) {
    events_elsewhere |= std::this_thread::get_id() != caller;
    if (e.kind == ChatEvent::Kind::ContentDelta) streamed[i] += e.text;
  });
  CHECK_FALSE(events_elsewhere);
  for (int i = 0; i < n; ++i) {
    CHECK(sessions[size_t(i)]->generated() == alone[size_t(i)]);
    CHECK(sessions[size_t(i)]->generated_text() == alone_text[size_t(i)]);
    CHECK(streamed[size_t(i)] == alone_text[size_t(i)]);
  }
  REQUIRE(serial_seen.size() == 3);
  for (const auto& threads : serial_seen) CHECK(*threads == std::set<std::thread::id>{caller});
  REQUIRE(parallel_seen.size() == 3);
  std::set<std::thread::id> all;
  for (const auto& threads : parallel_seen) all.insert(threads->begin(), threads->end());
  CHECK(all.size() == 2);  // the caller (the pool's thread 0) and the engine's one worker
}

TEST_CASE("continuous batching: sessions that join and leave between steps get the tokens they get alone",
          "[engine][session]") {
  auto model = Model::load(kModel, ModelLoadParams{.n_threads = 2});
  auto tok = Tokenizer::load(kModel);
  const int n = 6;
  auto make = [&](int i) {
    SessionParams sp;
    sp.capacity = 256;
    sp.raw_text = i % 3 == 2;  // some are raw-text completions
    auto s = std::make_unique<Session>(*model, *tok, sp);
    auto chain = std::make_unique<SamplerChain>();
    chain->add(make_top_k_sampler(20)).add(make_dist_sampler(uint64_t(7 + i)));
    s->set_sampler(std::move(chain));
    return s;
  };
  auto prompt = [&](int i) { return tok->encode(fmt::format("Request {} {}", i, std::string(size_t(3 * i), 'x')), true); };
  auto params = [](int i) {
    GenerateParams g;
    g.max_tokens = 4 + 3 * i;  // different lengths: sessions leave at different steps
    g.stop_at_eos = false;
    return g;
  };
  std::vector<std::vector<int32_t>> alone;
  std::vector<std::string> alone_text;
  for (int i = 0; i < n; ++i) {
    auto s = make(i);
    s->queue_tokens(prompt(i));
    s->generate(params(i));
    alone.push_back(s->generated());
    alone_text.push_back(s->generated_text());
  }
  // Session i joins at step 2*i; session 4 is removed after 3 steps in the engine (its client went away).
  std::vector<std::unique_ptr<Session>> sessions;
  std::vector<std::string> streamed(n);
  for (int i = 0; i < n; ++i) sessions.push_back(make(i));
  Engine engine(*model);
  std::set<int> finished;
  int step = 0;
  size_t max_batch = 0;
  while (finished.size() < size_t(n)) {
    for (int i = 0; i < n; ++i)
      if (step == 2 * i) {
        CHECK(sessions[size_t(i)]->queue_tokens(prompt(i)) == 0);
        engine.add(*sessions[size_t(i)], params(i));
      }
    if (step == 2 * 4 + 3) {
      engine.remove(*sessions[4]);
      finished.insert(4);
    }
    auto r = engine.step([&](Session& s, const ChatEvent& e) {
      for (int i = 0; i < n; ++i)
        if (&s == sessions[size_t(i)].get()) {
          CHECK(e.kind == ChatEvent::Kind::ContentDelta);
          streamed[size_t(i)] += e.text;
        }
    });
    CHECK(r.failed.empty());
    max_batch = std::max(max_batch, size_t(r.batch_sessions));
    for (Session* s : r.finished)
      for (int i = 0; i < n; ++i)
        if (s == sessions[size_t(i)].get()) finished.insert(i);
    ++step;
    REQUIRE(step < 200);
  }
  CHECK(engine.size() == 0);
  CHECK(max_batch >= 3);
  for (int i = 0; i < n; ++i) {
    INFO("session " << i);
    if (i == 4) {
      CHECK(sessions[4]->finish_reason() == FinishReason::None);
      CHECK(sessions[4]->generated().size() < alone[4].size());
      CHECK(std::equal(sessions[4]->generated().begin(), sessions[4]->generated().end(), alone[4].begin()));
      continue;
    }
    CHECK(sessions[size_t(i)]->generated() == alone[size_t(i)]);
    CHECK(sessions[size_t(i)]->finish_reason() == FinishReason::MaxTokens);
    CHECK(streamed[size_t(i)] == alone_text[size_t(i)]);
    if (i % 3 == 2) CHECK(sessions[size_t(i)]->reply().content.value_or("") == alone_text[size_t(i)]);
  }
}

TEST_CASE("queue_tokens keeps the matching cached prefix; a fork with other params reuses it", "[engine][session]") {
  auto model = Model::load(kModel, ModelLoadParams{.n_threads = 2});
  auto tok = Tokenizer::load(kModel);
  GenerateParams g;
  g.max_tokens = 6;
  g.stop_at_eos = false;
  const auto a = tok->encode("A shared system prompt, then question one", true);
  const auto b = tok->encode("A shared system prompt, then a different question", true);
  size_t common = 0;
  while (a[common] == b[common]) ++common;
  REQUIRE(common > 3);
  // Greedy: `second` (forked after `first` generated) and `alone` must pick the same tokens from the same logits.
  Session first(*model, *tok);
  first.set_sampler(greedy_chain());
  CHECK(first.queue_tokens(a) == 0);
  first.generate(g);
  // A session forked from the first (chat parsing off, a new capacity) keeps the common prefix and evaluates the rest.
  SessionParams raw;
  raw.raw_text = true;
  raw.capacity = 128;
  auto second = first.fork(raw);
  CHECK(second->queue_tokens(b) == int64_t(common));
  second->generate(g);
  Session alone(*model, *tok, raw);
  alone.set_sampler(greedy_chain());
  alone.queue_tokens(b);
  alone.generate(g);
  CHECK(second->generated() == alone.generated());
  CHECK(second->last_logits() == alone.last_logits());
  // The same prompt again: everything but the last token is reused (its logits are needed to sample).
  auto again = first.fork();
  CHECK(again->queue_tokens(a) == int64_t(a.size()) - 1);
  CHECK_THROWS_AS(first.fork(SessionParams{.capacity = 2}), Error);
  CHECK_THROWS_AS(first.queue_tokens({}), Error);
}

TEST_CASE("continuous batching: a failing session leaves alone, the others go on", "[engine][errors]") {
  auto model = Model::load(kModel, ModelLoadParams{.n_threads = 2});
  auto tok = Tokenizer::load(kModel);
  GenerateParams g;
  g.max_tokens = 8;
  g.stop_at_eos = false;
  const auto p = tok->encode("Hello there", true);
  SessionParams small;
  small.capacity = int64_t(p.size()) + 3;  // fills up after a few tokens
  Session full(*model, *tok, small), ok(*model, *tok), cancelled(*model, *tok);
  full.queue_tokens(p);
  ok.queue_tokens(p);
  cancelled.queue_tokens(p);
  Engine engine(*model);
  engine.add(full, g);
  engine.add(ok, g);
  engine.add(cancelled, g);
  cancelled.cancel();
  std::map<Session*, ErrorCode> failed;
  std::set<Session*> finished;
  for (int step = 0; engine.size() && step < 50; ++step) {
    auto r = engine.step();
    for (auto& f : r.failed) failed.emplace(f.session, f.error.code());
    for (Session* s : r.finished) finished.insert(s);
  }
  CHECK(failed.at(&full) == ErrorCode::OutOfMemory);
  CHECK(failed.at(&cancelled) == ErrorCode::Cancelled);
  CHECK(finished.count(&ok) == 1);
  CHECK(ok.generated().size() == 8);
  CHECK(int64_t(full.tokens().size()) <= small.capacity);
  // Both stay usable.
  full.queue_tokens(p);
  g.max_tokens = 2;
  full.generate(g);
  CHECK(full.generated().size() == 2);
}

TEST_CASE("Model::release_memory gives free KV pages and cached buffers back without changing results", "[engine]") {
  auto model = Model::load(kModel, ModelLoadParams{.n_threads = 2});
  auto tok = Tokenizer::load(kModel);
  GenerateParams g;
  g.max_tokens = 24;
  g.stop_at_eos = false;
  auto run = [&] {
    Session s(*model, *tok);
    s.set_messages(user("Tell me about paged KV caches."));
    s.generate(g);
    return s.generated();
  };
  const auto first = run();  // its blocks are free again once the session is gone
  CHECK(model->kv_cache_stats().blocks_used == 0);
  CHECK(model->backend_memory_stats().scratch_bytes > 0);  // the ops' scratch, kept between steps
  model->release_memory();
  CHECK(model->backend_memory_stats().scratch_bytes == 0);
  CHECK(model->backend_memory_stats().cached_activation_bytes == 0);
  CHECK(run() == first);
  Session held(*model, *tok);
  held.set_messages(user("A session alive across the release keeps its cache."));
  model->release_memory();
  held.generate(g);
  Session again(*model, *tok);
  again.set_messages(user("A session alive across the release keeps its cache."));
  again.generate(g);
  CHECK(held.generated() == again.generated());
}

TEST_CASE("chunked prefill: a step budget spreads prompts over steps, results bitwise those alone", "[engine]") {
  auto model = Model::load(kModel, ModelLoadParams{.n_threads = 2});
  auto tok = Tokenizer::load(kModel);
  GenerateParams g;
  g.max_tokens = 12;
  g.stop_at_eos = false;
  std::vector<std::vector<int32_t>> alone;
  const std::vector<std::string> texts = {"A long first prompt about the paged KV cache and how blocks are shared.",
                                          "Short one.", "A third prompt, of middling length, about samplers."};
  for (const auto& t : texts) {
    Session s(*model, *tok);
    s.set_messages(user(t));
    s.generate(g);
    alone.push_back(s.generated());
  }
  std::vector<int64_t> prompt_len;
  for (const auto& t : texts) {
    Session s(*model, *tok);
    s.set_messages(user(t));
    prompt_len.push_back(int64_t(s.tokens().size()));
  }
  for (int64_t budget : {2, 5, 16}) {
    Engine engine(*model, budget);
    std::vector<std::unique_ptr<Session>> sessions;
    for (const auto& t : texts) {
      sessions.push_back(std::make_unique<Session>(*model, *tok));
      sessions.back()->queue_messages(user(t));
    }
    // The first session's prompt goes in whole (nobody decodes yet); the others arrive while it decodes.
    engine.add(*sessions[0], g);
    const auto first = engine.step();
    CHECK(first.batch_tokens == int64_t(sessions[0]->tokens().size()));
    engine.add(*sessions[1], g);
    engine.add(*sessions[2], g);
    int64_t max_prompt = 0;
    while (engine.size() > 0) {
      // Sessions past their prompt and still generating decode one token this step; the rest of the step's tokens
      // are prompt chunks, bounded by the budget while anyone decodes.
      int64_t decoding = 0;
      for (size_t i = 0; i < texts.size(); ++i)
        if (int64_t(sessions[i]->tokens().size()) >= prompt_len[i] && sessions[i]->generated().size() < 12) ++decoding;
      const auto r = engine.step();
      if (!r.failed.empty()) FAIL(r.failed[0].error.what());
      if (decoding > 0) max_prompt = std::max(max_prompt, r.batch_tokens - decoding);
    }
    INFO("budget " << budget);
    CHECK(max_prompt <= std::max<int64_t>(budget, 3));
    CHECK(max_prompt >= 2);
    for (size_t i = 0; i < texts.size(); ++i) CHECK(sessions[i]->generated() == alone[i]);
  }
}

TEST_CASE("Engine::generate refuses sessions of different precisions (issue 20)", "[engine][errors]") {
  auto model = Model::load(kModel, ModelLoadParams{.n_threads = 1});
  auto tok = Tokenizer::load(kModel);
  SessionParams fp8, ref;
  fp8.capacity = ref.capacity = 64;
  fp8.eval.precision = Precision::Fp8;
  ref.eval.precision = Precision::Reference;
  Session a(*model, *tok, fp8), b(*model, *tok, ref);
  a.queue_messages(user("hi"));
  b.queue_messages(user("hi"));
  GenerateParams g;
  g.max_tokens = 2;
  Engine engine(*model);
  std::vector<Session*> both = {&a, &b};
  try {
    engine.generate(both, g);
    FAIL("mixed precisions accepted");
  } catch (const Error& e) {
    CHECK(e.code() == ErrorCode::InvalidArgument);
    CHECK_THAT(e.what(), Catch::Contains("share one precision"));
  }
  std::vector<Session*> one = {&a};
  CHECK_NOTHROW(engine.generate(one, g));  // both stay usable
}
