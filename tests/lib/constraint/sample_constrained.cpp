// Seeded constrained samplings from a checkpoint, printed as JSON lines for tests/python/test_constraint.py, which
// parses them with the project's DSML parser and validates them with the jsonschema package:
//   sample_constrained MODEL_DIR REQUEST_JSON_FILE N [--thinking] [--seed0 S] [--max-tokens N (3000)]
//                      [--threads T (2)]
// Each line: {"seed": s, "finish": "eos"|"length"|..., "text": the completion, "ids": its token ids}. The N
// samplings run 16 at a time in one Engine (one forward per step for all of them), each forked from one evaluated
// prompt, sampling at temperature 1.0 with its own seed.
#include <fmt/format.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "dsinfer/constraint.hpp"
#include "dsinfer/session.hpp"

using namespace dsinfer;

int main(int argc, char** argv) {
  if (argc < 4) {
    std::fprintf(stderr,
                 "usage: %s MODEL_DIR REQUEST_JSON_FILE N [--thinking] [--seed0 S] [--max-tokens N] [--threads T]\n",
                 argv[0]);
    return 2;
  }
  bool thinking = false;
  uint64_t seed0 = 0;
  int64_t max_tokens = 3000;
  int threads = 2;
  for (int i = 4; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--thinking")) thinking = true;
    else if (!std::strcmp(argv[i], "--max-tokens") && i + 1 < argc) max_tokens = std::stoll(argv[++i]);
    else if (!std::strcmp(argv[i], "--seed0") && i + 1 < argc) seed0 = std::stoull(argv[++i]);
    else if (!std::strcmp(argv[i], "--threads") && i + 1 < argc) threads = std::stoi(argv[++i]);
  }
  try {
    std::ifstream f(argv[2]);
    std::stringstream ss;
    ss << f.rdbuf();
    const std::string request = ss.str();
    const int n = std::stoi(argv[3]);
    ModelLoadParams lp;
    lp.n_threads = threads;
    lp.kv_cache_tokens = 16 * 8192;
    auto model = Model::load(argv[1], lp);
    auto tok = Tokenizer::load(argv[1]);
    SessionParams sp;
    sp.capacity = 8192;
    sp.thinking = thinking ? ThinkingMode::Thinking : ThinkingMode::Chat;
    Session base(*model, *tok, sp);
    base.set_messages(chat_messages_from_json(request));
    GenerateParams g;
    g.max_tokens = max_tokens;
    g.constraint = Constraint::compile(*tok, constraint_from_request_json(request, sp.thinking));
    Engine engine(*model);
    for (int start = 0; start < n; start += 16) {
      std::vector<std::unique_ptr<Session>> group;
      std::vector<Session*> ptrs;
      for (int k = start; k < std::min(n, start + 16); ++k) {
        group.push_back(base.fork());
        group.back()->set_sampler(make_default_chain(GenerationConfig{true, 1.0f, 1.0f, 0}, seed0 + uint64_t(k)));
        ptrs.push_back(group.back().get());
      }
      engine.generate(ptrs, g);
      for (size_t k = 0; k < group.size(); ++k) {
        const FinishReason r = group[k]->finish_reason();
        nlohmann::json line = {{"seed", seed0 + uint64_t(start) + k},
                               {"finish", r == FinishReason::Eos         ? "eos"
                                          : r == FinishReason::MaxTokens ? "length"
                                                                         : "other"},
                               {"text", group[k]->generated_text()},
                               {"ids", group[k]->generated()}};
        std::printf("%s\n", line.dump().c_str());
      }
      std::fflush(stdout);
    }
    return 0;
  } catch (const Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
