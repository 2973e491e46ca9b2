// Many sessions stepped together in one forward give exactly the tokens and logits each gets alone; a ragged
// batch mixing prefill chunks and decode tokens equals the sequences evaluated one by one.
#include <catch2/catch.hpp>
#include <fmt/format.h>

#include <filesystem>

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
