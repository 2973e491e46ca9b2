// Aggregate decode throughput of the Engine with 1, 4 and 16 concurrent sessions (one forward per step for all).
//   bench_engine --model DIR [--threads N] [--tokens N] [--precision fp8|reference]
#include <fmt/format.h>

#include <chrono>
#include <string>
#include <vector>

#include "bench_flags.hpp"
#include "dsinfer/session.hpp"

int main(int argc, char** argv) {
  std::string dir;
  int threads = 2, tokens = 32;
  dsinfer::Precision prec = dsinfer::Precision::Fp8;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string f = argv[i], v = argv[i + 1];
    if (f == "--model") dir = v;
    else if (f == "--threads") threads = dsinfer::bench::number_flag(f, v, 1, 1024);
    else if (f == "--tokens") tokens = dsinfer::bench::number_flag(f, v, 1, 1 << 20);
    else if (f == "--precision") prec = v == "reference" ? dsinfer::Precision::Reference : dsinfer::Precision::Fp8;
  }
  if (dir.empty()) {
    fmt::print(stderr, "usage: bench_engine --model DIR [--threads N] [--tokens N] [--precision fp8|reference]\n");
    return 2;
  }
  try {
    auto model = dsinfer::Model::load(dir, dsinfer::ModelLoadParams{.n_threads = threads});
    auto tok = dsinfer::Tokenizer::load(dir);
    dsinfer::GenerateParams g;
    g.max_tokens = tokens;
    g.stop_at_eos = false;
    for (int n : {1, 4, 16}) {
      std::vector<std::unique_ptr<dsinfer::Session>> owned;
      std::vector<dsinfer::Session*> sessions;
      for (int i = 0; i < n; ++i) {
        dsinfer::SessionParams sp;
        sp.capacity = 512;
        sp.eval.precision = prec;
        owned.push_back(std::make_unique<dsinfer::Session>(*model, *tok, sp));
        dsinfer::ChatMessage m;
        m.role = "user";
        m.content = fmt::format("Session {} asks a question of moderate length about sparse attention.", i);
        owned.back()->set_messages({m});
        sessions.push_back(owned.back().get());
      }
      dsinfer::Engine engine(*model);
      const auto t0 = std::chrono::steady_clock::now();
      engine.generate(sessions, g);
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      size_t total = 0;
      for (auto* x : sessions) total += x->generated().size();
      fmt::print("{:2} sessions: {:5} tokens in {:.3f} s = {:8.1f} tok/s aggregate ({:.1f} per session)\n", n, total, s,
                 total / s, total / s / n);
    }
  } catch (const dsinfer::Error& e) {
    fmt::print(stderr, "bench_engine: {}\n", e.what());
    return 1;
  }
  return 0;
}
