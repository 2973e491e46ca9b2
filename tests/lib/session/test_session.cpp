// Sessions on the small V3.2 checkpoint (with the fixture tokenizer): greedy equals the model's greedy and
// transformers', seeded sampling repeats, multi-turn suffix appending / fork / save-restore give the logits of a
// full re-prefill, and every failure (full cache, cancel, failing sampler) leaves a usable session.
#include <catch2/catch.hpp>
#include <fmt/format.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <thread>

#include "dsinfer/constraint.hpp"
#include "dsinfer/session.hpp"

using namespace dsinfer;
namespace fs = std::filesystem;

namespace {
const fs::path kModels = fs::path(DSINFER_MODELS_DIR);
const fs::path kGolden = fs::path(DSINFER_SOURCE_DIR) / "tests" / "golden";

struct Fixture {
  std::unique_ptr<Model> model;
  std::unique_ptr<Tokenizer> tok;
  explicit Fixture(const std::string& preset = "v32-tiny") {
    ModelLoadParams p;
    p.n_threads = 2;
    model = Model::load((kModels / preset).string(), p);
    tok = Tokenizer::load((kModels / preset).string());
  }
};

SessionParams reference_params(int64_t capacity = 512) {
  SessionParams p;
  p.capacity = capacity;
  p.eval.precision = Precision::Reference;
  return p;
}

double max_rel_diff(const std::vector<float>& a, const std::vector<float>& b) {
  REQUIRE(a.size() == b.size());
  double md = 0, mr = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    md = std::max(md, double(std::fabs(a[i] - b[i])));
    mr = std::max(mr, double(std::fabs(b[i])));
  }
  return md / mr;
}

// Argmax decoding: a session's default chain samples as the checkpoint's generation_config.json says.
std::unique_ptr<SamplerChain> greedy_chain() {
  auto chain = std::make_unique<SamplerChain>();
  chain->add(make_greedy_sampler());
  return chain;
}

std::vector<ChatMessage> user(const std::string& text) {
  ChatMessage m;
  m.role = "user";
  m.content = text;
  return {m};
}
}  // namespace

TEST_CASE("greedy generation through a session equals dsinfer generate and transformers", "[session]") {
  Fixture f;
  std::ifstream mf(kGolden / "v32-tiny" / "meta.json");
  const auto meta = nlohmann::json::parse(mf);
  const auto& p17 = meta.at("prompts")[1];
  const auto ids = p17.at("ids").get<std::vector<int32_t>>();
  const auto want = p17.at("greedy_ids").get<std::vector<int32_t>>();
  Session s(*f.model, *f.tok, reference_params());
  s.set_sampler(greedy_chain());
  s.prefill(ids);
  GenerateParams g;
  g.max_tokens = int64_t(want.size());
  g.stop_at_eos = false;
  s.generate(g);
  EvalOptions o;
  o.precision = Precision::Reference;
  // The session never picks ids the tokenizer does not have (>= its 4000 tokens; the embedding has 4096 rows).
  CHECK(s.generated() == f.model->generate_greedy(ids, int64_t(want.size()), o, false, f.tok->size()));
  // transformers' greedy takes the argmax over all 4096 rows: the two agree up to its first id >= 4000.
  size_t first_padded = 0;
  while (first_padded < want.size() && want[first_padded] < f.tok->size()) ++first_padded;
  WARN("transformers' greedy continuation stays inside the tokenizer for " << first_padded << " of " << want.size()
                                                                           << " tokens");
  REQUIRE(first_padded >= 4);
  CHECK(std::vector<int32_t>(s.generated().begin(), s.generated().begin() + first_padded) ==
        std::vector<int32_t>(want.begin(), want.begin() + first_padded));
  CHECK(s.finish_reason() == FinishReason::MaxTokens);
}

TEST_CASE("the same seed gives the same tokens", "[session]") {
  Fixture f;
  auto run = [&](uint64_t seed) {
    Session s(*f.model, *f.tok, reference_params());
    s.set_sampler(make_default_chain(load_generation_config((kModels / "v32-tiny").string()), seed));
    s.set_messages(user("Tell me a story."));
    GenerateParams g;
    g.max_tokens = 24;
    g.stop_at_eos = false;
    s.generate(g);
    return s.generated();
  };
  CHECK(run(7) == run(7));
  CHECK(run(7) != run(8));
}

TEST_CASE("a session samples with the checkpoint's generation_config.json unless told otherwise", "[session]") {
  // v32-tiny's generation_config.json: do_sample, temperature 1.0, top_p 0.95. The default chain is that, seeded
  // by SessionParams::seed; the checkpoint's sampling is known from the model (ModelInfo::generation).
  Fixture f;
  const GenerationConfig& g = f.model->info().generation;
  CHECK(g.do_sample);
  CHECK(g.top_p == 0.95f);
  auto run = [&](std::unique_ptr<SamplerChain> chain, uint64_t seed) {
    SessionParams sp = reference_params();
    sp.seed = seed;
    Session s(*f.model, *f.tok, sp);
    if (chain) s.set_sampler(std::move(chain));
    s.set_messages(user("Tell me a story."));
    GenerateParams gp;
    gp.max_tokens = 24;
    gp.stop_at_eos = false;
    s.generate(gp);
    return s.generated();
  };
  const auto by_default = run(nullptr, 0);
  CHECK(by_default == run(make_default_chain(load_generation_config((kModels / "v32-tiny").string()), 0), 0));
  CHECK(by_default != run(greedy_chain(), 0));
  CHECK(by_default != run(nullptr, 1));  // SessionParams::seed seeds the default draw

  // Without generation_config.json the default is greedy (transformers' default).
  const fs::path bare = fs::temp_directory_path() / "dsinfer_test_no_generation_config";
  fs::remove_all(bare);
  fs::copy(kModels / "v32-tiny", bare);
  fs::remove(bare / "generation_config.json");
  auto model = Model::load(bare.string());
  CHECK_FALSE(model->info().generation.do_sample);
  fs::remove_all(bare);
}

TEST_CASE("a chain reproduces its draws from its reset point", "[session]") {
  // A session's chain keeps its RNG across generations (a conversation's turns draw fresh numbers);
  // sampler().reset() rewinds it, so the same cache and prompt give the same tokens again.
  Fixture f;
  Session s(*f.model, *f.tok, reference_params());
  s.set_messages(user("Tell me a story."));
  const auto start = s.fork();
  GenerateParams gp;
  gp.max_tokens = 16;
  gp.stop_at_eos = false;
  auto again = start->fork();
  again->generate(gp);
  const auto first = again->generated();
  // `again`'s chain has drawn: on the same cache, a copy of it draws on without a reset, and repeats after one.
  auto chain_of_again = [&] {
    return std::unique_ptr<SamplerChain>(static_cast<SamplerChain*>(again->sampler().clone().release()));
  };
  auto drawing_on = start->fork();
  drawing_on->set_sampler(chain_of_again());
  drawing_on->generate(gp);
  CHECK(drawing_on->generated() != first);
  auto from_reset = start->fork();
  from_reset->set_sampler(chain_of_again());
  from_reset->sampler().reset();
  from_reset->generate(gp);
  CHECK(from_reset->generated() == first);
}

TEST_CASE("a constrained generation goes on under a chain set after it started", "[session][constraint]") {
  // A server starts a forked choice's generation (Engine::add) and then gives it its own chain: the constraint
  // stage must run before the new chain, not the replaced one.
  Fixture f;
  ConstraintSpec spec;
  spec.kind = ConstraintSpec::Kind::Regex;
  spec.regex = "(yes|no|maybe)( [0-9]{1,3})?";
  GenerateParams g;
  g.max_tokens = 40;
  g.constraint = Constraint::compile(*f.tok, spec);
  for (uint64_t seed : {1, 2, 3}) {
    Session s(*f.model, *f.tok, reference_params());
    s.set_messages(user("Well?"));
    s.start(g);
    s.set_sampler(make_default_chain(load_generation_config((kModels / "v32-tiny").string()), seed));
    ChatEvent e;
    while (s.next(e)) {
    }
    CHECK(s.finish_reason() == FinishReason::Eos);
    CHECK(std::regex_match(s.generated_text(), std::regex(spec.regex)));
  }
}

TEST_CASE("streamed events add up to the reply and the text", "[session]") {
  Fixture f;
  Session s(*f.model, *f.tok, reference_params());
  s.set_messages(user("hello"));
  std::string content;
  GenerateParams g;
  g.max_tokens = 20;
  s.generate(g, [&](const ChatEvent& e) {
    if (e.kind == ChatEvent::Kind::ContentDelta) content += e.text;
    return true;
  });
  CHECK(content == s.reply().content.value_or(""));
  CHECK(content == s.generated_text());
  CHECK(f.tok->decode(s.generated()).find(content) == 0);
}

TEST_CASE("multi-turn appends only the new suffix and matches a full re-prefill", "[session]") {
  Fixture f;
  for (ThinkingMode mode : {ThinkingMode::Chat, ThinkingMode::Thinking}) {
    SessionParams sp = reference_params();
    sp.thinking = mode;
    Session s(*f.model, *f.tok, sp);
    std::vector<ChatMessage> conv = user("What is 2+2?");
    s.set_messages(conv);
    const int64_t first = s.last_prefill_tokens();
    GenerateParams g;
    g.max_tokens = 12;
    s.generate(g);
    ChatMessage a;
    a.role = "assistant";
    a.content = "It is 4.";
    a.reasoning_content = "simple arithmetic";
    conv.push_back(a);
    conv.push_back(user("And 3+3?")[0]);
    s.set_messages(conv);
    const int64_t appended = s.last_prefill_tokens();
    Session fresh(*f.model, *f.tok, sp);
    fresh.set_messages(conv);
    INFO((mode == ThinkingMode::Thinking ? "thinking" : "chat") << ": first turn " << first << " tokens, appended "
                                                                  << appended << " of " << fresh.tokens().size());
    CHECK(s.tokens() == fresh.tokens());
    CHECK(appended < int64_t(fresh.tokens().size()));
    const double d = max_rel_diff(s.last_logits(), fresh.last_logits());
    WARN(fmt::format("{} mode: appended {} of {} tokens; logits vs full re-prefill: {:.3g}",
                     mode == ThinkingMode::Thinking ? "thinking" : "chat", appended, fresh.tokens().size(), d));
    CHECK(d <= 1e-5);
  }
}

TEST_CASE("fork and save/restore continue exactly like the original", "[session]") {
  Fixture f;
  Session s(*f.model, *f.tok, reference_params());
  s.set_messages(user("Fork me"));
  auto child = s.fork();
  CHECK(child->tokens() == s.tokens());
  CHECK(child->last_logits() == s.last_logits());
  const fs::path file = fs::temp_directory_path() / "dsinfer-session-test.bin";
  s.save(file.string());
  GenerateParams g;
  g.max_tokens = 10;
  g.stop_at_eos = false;
  s.generate(g);
  child->generate(g);
  CHECK(child->generated() == s.generated());
  CHECK(child->last_logits() == s.last_logits());  // bitwise: the same cache contents, the same computation
  Session restored(*f.model, *f.tok, reference_params());
  restored.restore(file.string());
  {
    // What was restored equals re-prefilling the same tokens from scratch.
    Session fresh(*f.model, *f.tok, reference_params());
    fresh.prefill(restored.tokens());
    CHECK(fresh.last_logits() == restored.last_logits());
    auto fork_of_restored = restored.fork();
    CHECK(fork_of_restored->last_logits() == fresh.last_logits());
  }
  restored.generate(g);
  CHECK(restored.generated() == s.generated());
  CHECK(restored.last_logits() == s.last_logits());
  // A session file belongs to its model.
  Fixture other("v3-tiny");
  Session wrong(*other.model, *other.tok, reference_params());
  try {
    wrong.restore(file.string());
    FAIL("no error");
  } catch (const Error& e) {
    CHECK(e.code() == ErrorCode::InvalidArgument);
    CHECK_THAT(e.what(), Catch::Contains("different model"));
  }
  std::ofstream(file, std::ios::binary) << "garbage";
  CHECK_THROWS_AS(restored.restore(file.string()), Error);
  fs::remove(file);
}

TEST_CASE("cancel from another thread stops a running generation", "[session][errors]") {
  Fixture f;
  Session s(*f.model, *f.tok, reference_params(4096));
  s.set_messages(user("a long answer please"));
  GenerateParams g;
  g.max_tokens = 3000;
  g.stop_at_eos = false;
  std::atomic<int> seen{0};
  std::thread canceller([&] {
    while (seen.load() < 5) std::this_thread::yield();
    s.cancel();
  });
  try {
    s.generate(g, [&](const ChatEvent&) {
      ++seen;
      return true;
    });
    FAIL("no error");
  } catch (const Error& e) {
    CHECK(e.code() == ErrorCode::Cancelled);
  }
  canceller.join();
  CHECK(s.generated().size() < 3000);
  g.max_tokens = 2;
  CHECK(s.generate(g) == FinishReason::MaxTokens);
}

TEST_CASE("a full cache, a cancel and a failing sampler end with clear errors; the session stays usable",
          "[session][errors]") {
  Fixture f;
  GenerateParams g;
  g.max_tokens = 1000;
  g.stop_at_eos = false;
  {
    Session s(*f.model, *f.tok, reference_params(40));
    s.set_messages(user("fill the cache"));
    const size_t before = s.tokens().size();
    try {
      s.generate(g);
      FAIL("no error");
    } catch (const Error& e) {
      CHECK(e.code() == ErrorCode::OutOfMemory);
      CHECK_THAT(e.what(), Catch::Contains("KV cache full"));
    }
    CHECK(s.tokens().size() == 40);
    CHECK(s.generated().size() == 40 - before + 1);
    s.set_messages(user("short"));  // reuse: the cache is cut back and refilled
    g.max_tokens = 3;
    CHECK(s.generate(g) == FinishReason::MaxTokens);
  }
  {
    struct CancelAfter : Sampler {
      Session* s;
      int n = 0;
      explicit CancelAfter(Session* s) : s(s) {}
      std::string name() const override { return "cancel_after_3"; }
      void apply(Candidates&) override {
        if (++n == 3) s->cancel();  // as another thread would
      }
      std::unique_ptr<Sampler> clone() const override { return std::make_unique<CancelAfter>(s); }
    };
    Session s(*f.model, *f.tok, reference_params());
    auto chain = std::make_unique<SamplerChain>();
    chain->add(std::make_unique<CancelAfter>(&s)).add(make_greedy_sampler());
    s.set_sampler(std::move(chain));
    s.set_messages(user("cancel me"));
    g.max_tokens = 50;
    try {
      s.generate(g);
      FAIL("no error");
    } catch (const Error& e) {
      CHECK(e.code() == ErrorCode::Cancelled);
    }
    CHECK(s.generated().size() == 3);
    g.max_tokens = 2;
    CHECK(s.generate(g) == FinishReason::MaxTokens);  // usable again
  }
  {
    struct Fails : Sampler {
      std::string name() const override { return "flaky"; }
      void apply(Candidates&) override { throw Error(ErrorCode::InvalidArgument, "no luck"); }
      std::unique_ptr<Sampler> clone() const override { return std::make_unique<Fails>(); }
    };
    Session s(*f.model, *f.tok, reference_params());
    s.set_messages(user("fail"));
    auto chain = std::make_unique<SamplerChain>();
    chain->add(std::make_unique<Fails>()).add(make_greedy_sampler());
    s.set_sampler(std::move(chain));
    const auto tokens = s.tokens();
    try {
      s.generate(g);
      FAIL("no error");
    } catch (const Error& e) {
      CHECK_THAT(e.what(), Catch::Contains("sampler \"flaky\" failed: no luck"));
    }
    CHECK(s.tokens() == tokens);
    auto greedy = std::make_unique<SamplerChain>();
    greedy->add(make_greedy_sampler());
    s.set_sampler(std::move(greedy));
    CHECK(s.generate(g) == FinishReason::MaxTokens);
  }
}

TEST_CASE("a V3-family checkpoint is never prompted in V3.2's chat format", "[session][chat_format]") {
  Fixture v3("v3-tiny");  // model_type deepseek_v3
  Session s(*v3.model, *v3.tok, reference_params());
  try {
    s.set_messages(user("Hi"));
    FAIL("a V3-family checkpoint took a V3.2-format prompt");
  } catch (const Error& e) {
    CHECK(e.code() == ErrorCode::Unsupported);
    CHECK_THAT(e.what(), Catch::Contains("deepseek-v3"));
  }
  CHECK(s.tokens().empty());
  // Token ids still work: the caller renders the prompt in the checkpoint's own format.
  s.prefill(std::vector<int32_t>{0, 100, 200});
  CHECK(s.tokens().size() == 3);
  Fixture v32;
  Session ok(*v32.model, *v32.tok, reference_params());
  CHECK_NOTHROW(ok.set_messages(user("Hi")));
}
