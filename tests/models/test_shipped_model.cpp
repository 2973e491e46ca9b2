// The shipped model (models/dsinfer-v32-mini) against the code that trained it: dsinfer's reference-precision
// logits on held-out text equal training/model.py's fp32 forward within 1e-4 (max|Δ|/max|ref| per position). The
// golden rows come from training/parity.py, which also checks the training code against transformers.
#include <catch2/catch.hpp>
#include <fmt/format.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "dsinfer/chat.hpp"
#include "dsinfer/model.hpp"
#include "dsinfer/session.hpp"
#include "dsinfer/tokenizer.hpp"
#include "golden_files.hpp"

using namespace dsinfer;
using json = nlohmann::json;
namespace fs = std::filesystem;
using dsinfer::test::read_f32;
using dsinfer::test::read_json;

namespace {

const fs::path kModel = fs::path(DSINFER_SOURCE_DIR) / "models" / "dsinfer-v32-mini";
const fs::path kGolden = fs::path(DSINFER_SOURCE_DIR) / "tests" / "golden" / "dsinfer-v32-mini";

// Worst over rows of max|Δ| / max|ref|; `got` holds every position, `ref` only `positions`.
double worst_relative_error(const std::vector<float>& got, const std::vector<float>& ref,
                            const std::vector<int64_t>& positions, int64_t vocab) {
  REQUIRE(ref.size() == positions.size() * size_t(vocab));
  double worst = 0;
  for (size_t r = 0; r < positions.size(); ++r) {
    const float* g = got.data() + positions[r] * vocab;
    const float* e = ref.data() + r * vocab;
    double md = 0, mr = 0;
    for (int64_t v = 0; v < vocab; ++v) {
      md = std::max(md, double(std::fabs(g[v] - e[v])));
      mr = std::max(mr, double(std::fabs(e[v])));
    }
    worst = std::max(worst, md / mr);
  }
  return worst;
}

}  // namespace

TEST_CASE("the shipped model's reference logits equal the training code's", "[model][shipped]") {
  REQUIRE(fs::exists(kModel / "config.json"));
  const json meta = read_json(kGolden / "meta.json");
  ModelLoadParams lp;
  lp.n_threads = 2;
  auto model = Model::load(kModel.string(), lp);
  const int64_t V = model->info().vocab_size;
  REQUIRE(V == meta.at("vocab").get<int64_t>());
  for (const auto& p : meta.at("prompts")) {
    const auto ids = p.at("ids").get<std::vector<int32_t>>();
    const auto positions = p.at("positions").get<std::vector<int64_t>>();
    EvalOptions o;
    o.precision = Precision::Reference;
    o.all_logits = true;
    auto seq = model->new_sequence(int64_t(ids.size()));
    const auto got = model->eval(*seq, ids, o);
    REQUIRE(got.size() == ids.size() * size_t(V));
    const double err =
        worst_relative_error(got, read_f32(kGolden / p.at("logits_file").get<std::string>()), positions, V);
    const std::string what = fmt::format("{} ({} tokens): worst max|Δ|/max|ref| = {:.3g}",
                                         p.at("name").get<std::string>(), ids.size(), err);
    INFO(what);
    WARN(what);
    CHECK(err <= 1e-4);
  }
}

TEST_CASE("the shipped tokenizer encodes held-out conversations as the tokenizers library does", "[model][shipped]") {
  const json meta = read_json(kGolden / "meta.json");
  auto tok = Tokenizer::load((kModel / "tokenizer.json").string());
  REQUIRE(meta.at("tokenizer_check").size() >= 8);
  for (const auto& c : meta.at("tokenizer_check")) {
    const std::string text = c.at("text");
    INFO(text.substr(0, 200));
    CHECK(tok->encode(text) == c.at("ids").get<std::vector<int32_t>>());
  }
}

// Issue 18 on a trained MTP module: greedy decoding with MTP drafts is token for token plain greedy decoding, and
// the drafts are accepted often enough to matter (the random test checkpoints accept none). The prompt is a real
// request: a tool list and a question, in chat and in thinking mode; each reply is generated to its end.
TEST_CASE("greedy MTP speculation on the shipped model is plain greedy, and its drafts are accepted",
          "[model][shipped][speculative]") {
  ModelLoadParams lp;
  lp.n_threads = 2;
  auto model = Model::load(kModel.string(), lp);
  auto tok = Tokenizer::load(kModel.string());
  REQUIRE(model->info().has_mtp);
  auto conversation = chat_messages_from_json(R"([{"role": "system", "content": ""},
      {"role": "user", "content": "What's the weather like in Paris?"}])");
  conversation[0].tools_json = R"([{"type": "function", "function": {"name": "get_weather", "description":
      "Get the current weather for a city.", "parameters": {"type": "object", "properties": {"city": {"type":
      "string", "description": "The city name, e.g. Paris."}}, "required": ["city"]}}}])";
  for (ThinkingMode mode : {ThinkingMode::Chat, ThinkingMode::Thinking}) {
    auto run = [&](int64_t k, SpeculativeStats* stats) {
      SessionParams sp;
      sp.capacity = 2048;
      sp.thinking = mode;
      sp.speculative.draft_tokens = k;
      sp.speculative.adaptive = false;
      Session s(*model, *tok, sp);
      auto chain = std::make_unique<SamplerChain>();
      chain->add(make_greedy_sampler());
      s.set_sampler(std::move(chain));
      s.set_messages(conversation);
      GenerateParams g;
      g.max_tokens = 160;
      s.generate(g);
      if (stats) *stats = s.speculative_stats();
      return s.generated();
    };
    const auto plain = run(0, nullptr);
    REQUIRE(plain.size() >= 16);
    for (int64_t k : {int64_t(1), int64_t(2)}) {
      SpeculativeStats st;
      INFO("thinking " << int(mode) << ", k " << k);
      CHECK(run(k, &st) == plain);
      WARN(fmt::format("thinking {}, k {}: {} tokens, {} of {} drafts accepted ({:.1f} %)", int(mode), k,
                       plain.size(), st.accepted, st.drafted, 100 * st.acceptance()));
      CHECK(st.drafted > 0);
      CHECK(st.acceptance() >= 0.5);
    }
  }
}
