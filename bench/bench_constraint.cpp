// Constrained decoding cost, two measurements (bench/bench_constraint.py runs both and xgrammar beside them):
//
//   bench_constraint mask TOKENIZER_DIR SCHEMAS_JSON TRAJECTORIES_OUT [--steps N] [--runs R]
//     For each schema in SCHEMAS_JSON (a list; an entry {"request": {...}} is an OpenAI-style request body instead,
//     compiled as constraint_from_request_json does, e.g. tools with tool_choice "auto"): the compile time (the first compile also builds the vocabulary
//     index, reported apart), then R runs sampled from random logits under the constraint; every step times the
//     whole constraint stage on the full candidate list (xgrammar's mask for the state plus keeping the allowed
//     candidates), which is what a constrained step adds to sampling. Prints one JSON line per schema; writes the
//     sampled token ids to TRAJECTORIES_OUT so that xgrammar can replay exactly the same steps.
//
//   bench_constraint decode MODEL_DIR [--tokens N] [--reps R]
//     Decode throughput of a session on the checkpoint, unconstrained and under a JSON-schema constraint, the same
//     number of tokens from the same prompt, alternated R times; prints the medians.
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <numeric>
#include <random>
#include <sstream>

#include "bench_flags.hpp"
#include "dsinfer/constraint.hpp"
#include "dsinfer/session.hpp"

using namespace dsinfer;
using Clock = std::chrono::steady_clock;

namespace {

double us_since(Clock::time_point t0) { return std::chrono::duration<double, std::micro>(Clock::now() - t0).count(); }

double percentile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, size_t(q * double(v.size() - 1) + 0.5))];
}

std::string flag(int argc, char** argv, const char* name, const std::string& def) {
  for (int i = 0; i + 1 < argc; ++i)
    if (!std::strcmp(argv[i], name)) return argv[i + 1];
  return def;
}

int run_mask(int argc, char** argv) {
  auto tok = Tokenizer::load(argv[2]);
  std::ifstream f(argv[3]);
  const nlohmann::ordered_json schemas = nlohmann::ordered_json::parse(f);  // property order is part of a schema
  std::ofstream traj(argv[4]);
  const int max_steps = dsinfer::bench::number_flag("--steps", flag(argc, argv, "--steps", "256"), 1, 1 << 20);
  const int runs = dsinfer::bench::number_flag("--runs", flag(argc, argv, "--runs", "4"), 1, 1 << 20);
  const int64_t V = tok->size();

  // The unconstrained baseline of one sampling step's candidate handling: building the full candidate list, as
  // SamplerChain::sample does, and a greedy pick.
  std::vector<float> logits(static_cast<size_t>(V));
  std::mt19937_64 rng(7);
  std::normal_distribution<float> normal(0.0f, 2.0f);
  for (auto& l : logits) l = normal(rng);
  std::vector<double> base;
  for (int i = 0; i < 200; ++i) {
    const auto t0 = Clock::now();
    Candidates c;
    c.ids.resize(size_t(V));
    std::iota(c.ids.begin(), c.ids.end(), 0);
    c.logits.assign(logits.begin(), logits.end());
    volatile auto best = std::max_element(c.logits.begin(), c.logits.end()) - c.logits.begin();
    (void)best;
    base.push_back(us_since(t0));
  }
  fmt::print("{}\n", nlohmann::json{{"baseline_candidates_us", percentile(base, 0.5)}, {"vocab", V}}.dump());

  bool first = true;
  for (size_t si = 0; si < schemas.size(); ++si) {
    ConstraintSpec spec;
    if (schemas[si].is_object() && schemas[si].size() == 1 && schemas[si].contains("request")) {
      spec = constraint_from_request_json(schemas[si]["request"].dump());
    } else {
      spec.kind = ConstraintSpec::Kind::JsonSchema;
      spec.json_schema = schemas[si].dump();
    }
    const auto t0 = Clock::now();
    auto c = Constraint::compile(*tok, spec);
    const double compile_ms = us_since(t0) / 1000;
    std::vector<double> step_us, mask_us;
    std::vector<uint32_t> bits;
    int finished = 0;
    for (int r = 0; r < runs; ++r) {
      ConstraintSampler cs(c);
      std::mt19937_64 g(1000 * si + r);
      std::vector<int32_t> ids;
      for (int s = 0; s < max_steps; ++s) {
        for (auto& l : logits) l = normal(g);
        Candidates cand;
        cand.ids.resize(size_t(V));
        std::iota(cand.ids.begin(), cand.ids.end(), 0);
        cand.logits.assign(logits.begin(), logits.end());
        // The mask alone (xgrammar's FillNextTokenBitmask for the state, copied out).
        const auto tm = Clock::now();
        cs.fill_bitmask(bits);
        mask_us.push_back(us_since(tm));
        const auto ts = Clock::now();
        cs.apply(cand);
        step_us.push_back(us_since(ts));
        cand.softmax();
        std::discrete_distribution<size_t> pick(cand.probs.begin(), cand.probs.end());
        const int32_t t = cand.ids[pick(g)];
        cs.accept(t);
        ids.push_back(t);
        if (cs.terminated()) {
          ++finished;
          break;
        }
      }
      traj << nlohmann::json{{"schema", si}, {"ids", ids}}.dump() << "\n";
    }
    fmt::print("{}\n", nlohmann::json{{"schema", si},
                                      {"compile_ms", compile_ms},
                                      {"first_compile", first},
                                      {"steps", step_us.size()},
                                      {"finished_runs", finished},
                                      {"mask_us_median", percentile(mask_us, 0.5)},
                                      {"mask_us_p90", percentile(mask_us, 0.9)},
                                      {"step_us_median", percentile(step_us, 0.5)},
                                      {"step_us_p90", percentile(step_us, 0.9)},
                                      {"step_us_p99", percentile(step_us, 0.99)}}
                           .dump());
    first = false;
  }
  return 0;
}

int run_decode(int argc, char** argv) {
  const int tokens = dsinfer::bench::number_flag("--tokens", flag(argc, argv, "--tokens", "128"), 1, 1 << 20);
  const int reps = dsinfer::bench::number_flag("--reps", flag(argc, argv, "--reps", "5"), 1, 1 << 20);
  ModelLoadParams lp;
  auto model = Model::load(argv[2], lp);
  auto tok = Tokenizer::load(argv[2]);
  // An answer that cannot be complete within `tokens`: every step is constrained.
  const std::string request = R"({"messages": [{"role": "user", "content": "List many numbers."}],
    "response_format": {"type": "json_schema", "json_schema": {"name": "numbers", "strict": true, "schema":
      {"type": "object", "properties": {"numbers": {"type": "array", "items": {"type": "integer"}, "minItems": 100000}},
       "required": ["numbers"], "additionalProperties": false}}}})";
  auto constraint = Constraint::compile(*tok, constraint_from_request_json(request));
  SessionParams sp;
  sp.capacity = 2048;
  Session base(*model, *tok, sp);
  base.set_messages(chat_messages_from_json(request));
  std::vector<double> plain_ms, constrained_ms;
  for (int r = 0; r < reps; ++r) {
    for (int constrained = 0; constrained < 2; ++constrained) {
      auto s = base.fork();
      s->set_sampler(make_default_chain(GenerationConfig{true, 1.0f, 1.0f, 0}, uint64_t(r)));
      GenerateParams g;
      g.max_tokens = tokens;
      g.stop_at_eos = false;
      if (constrained) g.constraint = constraint;
      const auto t0 = Clock::now();
      s->generate(g);
      const double ms = us_since(t0) / 1000;
      if (int(s->generated().size()) != tokens) throw Error(ErrorCode::Internal, "generation ended early");
      (constrained ? constrained_ms : plain_ms).push_back(ms);
    }
  }
  const double p = percentile(plain_ms, 0.5), c = percentile(constrained_ms, 0.5);
  fmt::print("{}\n", nlohmann::json{{"model", argv[2]},
                                    {"vocab", tok->size()},
                                    {"tokens", tokens},
                                    {"unconstrained_tok_s", tokens / p * 1000},
                                    {"constrained_tok_s", tokens / c * 1000},
                                    {"constrained_over_unconstrained", p / c}}
                         .dump());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    if (argc >= 5 && !std::strcmp(argv[1], "mask")) return run_mask(argc, argv);
    if (argc >= 3 && !std::strcmp(argv[1], "decode")) return run_decode(argc, argv);
    std::fprintf(stderr,
                 "usage: %s mask TOKENIZER_DIR SCHEMAS_JSON TRAJECTORIES_OUT [--steps N] [--runs R]\n"
                 "       %s decode MODEL_DIR [--tokens N] [--reps R]\n",
                 argv[0], argv[0]);
    return 2;
  } catch (const Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
