// Time per token of the built-in sampler chains on a full vocabulary (DeepSeek-V3.2's 129,280 ids by default):
//   bench_sampling [--vocab N] [--tokens N] [--reps N]
// For each logit distribution and each chain it prints microseconds per sampled token (the best of --reps runs of
// --tokens samplings, each from fresh logits) and the ratio to one pass over the logits (their maximum in 8 lanes,
// which the compiler vectorizes: reading the floats, what any sampler must at least do). Distributions: "flat"
// (standard normal logits: a random-weight model, where top_p 0.95 keeps most of the vocabulary) and "peaked" (the
// same plus 20 on five ids: as from a trained model, a handful of ids hold almost all the probability).
#include <fmt/format.h>

#include <algorithm>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "bench_flags.hpp"
#include "dsinfer/sampler.hpp"
#include "timing.hpp"


int main(int argc, char** argv) {
  int64_t vocab = 129280, tokens = 200, reps = 3;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string f = argv[i];
    auto v = [&] { return dsinfer::bench::number_flag<int64_t>(f, argv[i + 1], 1, int64_t(1) << 24); };
    if (f == "--vocab") vocab = v();
    else if (f == "--tokens") tokens = v();
    else if (f == "--reps") reps = v();
    else {
      fmt::print(stderr, "unknown flag {}\n", f);
      return 2;
    }
  }
  if (vocab < 16 || tokens < 1 || reps < 1) {
    fmt::print(stderr, "--vocab >= 16, --tokens >= 1, --reps >= 1\n");
    return 2;
  }
  // A few distinct logit rows per distribution, cycled (fresh values each sampling, as from a model).
  const int rows = 8;
  std::mt19937_64 rng(1);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  auto make_rows = [&](bool peaked) {
    std::vector<std::vector<float>> out(rows, std::vector<float>(size_t(vocab)));
    for (auto& row : out) {
      for (auto& x : row) x = normal(rng);
      if (peaked)
        for (int k = 0; k < 5; ++k) row[size_t(rng() % uint64_t(vocab))] += 20.0f;
    }
    return out;
  };
  struct Chain {
    std::string name;
    std::function<std::unique_ptr<dsinfer::SamplerChain>()> make;
  };
  auto chain_of = [](std::vector<std::function<std::unique_ptr<dsinfer::Sampler>()>> parts) {
    return [parts] {
      auto c = std::make_unique<dsinfer::SamplerChain>();
      for (const auto& p : parts) c->add(p());
      return c;
    };
  };
  const std::vector<Chain> chains = {
      {"greedy", chain_of({[] { return dsinfer::make_greedy_sampler(); }})},
      {"temperature 1, top_p 0.95, dist (V3.2's generation_config)",
       chain_of({[] { return dsinfer::make_temperature_sampler(1.0f); },
                 [] { return dsinfer::make_top_p_sampler(0.95f); }, [] { return dsinfer::make_dist_sampler(7); }})},
      {"top_k 40, temperature 0.8, dist", chain_of({[] { return dsinfer::make_top_k_sampler(40); },
                                                   [] { return dsinfer::make_temperature_sampler(0.8f); },
                                                   [] { return dsinfer::make_dist_sampler(7); }})},
      {"min_p 0.05, dist",
       chain_of({[] { return dsinfer::make_min_p_sampler(0.05f); }, [] { return dsinfer::make_dist_sampler(7); }})},
      {"temperature 1, dist",
       chain_of({[] { return dsinfer::make_temperature_sampler(1.0f); }, [] { return dsinfer::make_dist_sampler(7); }})},
  };
  fmt::print("vocabulary {} ids, {} samplings per run, best of {} runs\n", vocab, tokens, reps);
  for (const bool peaked : {false, true}) {
    const auto logits = make_rows(peaked);
    // The floor: one pass over the floats (their maximum, 8 lanes wide), per token.
    double floor_us = 1e30;
    volatile int64_t sink = 0;
    for (int64_t r = 0; r < reps; ++r) {
      const double t0 = dsinfer::bench::wall_seconds();
      for (int64_t t = 0; t < tokens; ++t) {
        const auto& row = logits[size_t(t % rows)];
        float lane[8];
        std::fill(lane, lane + 8, row[0]);
        size_t i = 0;
        for (; i + 8 <= row.size(); i += 8)
          for (size_t j = 0; j < 8; ++j) lane[j] = std::max(lane[j], row[i + j]);
        for (; i < row.size(); ++i) lane[0] = std::max(lane[0], row[i]);
        sink = sink + int64_t(*std::max_element(lane, lane + 8));
      }
      floor_us = std::min(floor_us, (dsinfer::bench::wall_seconds() - t0) * 1e6 / double(tokens));
    }
    fmt::print("\n{} logits: one pass over them {:.1f} us\n", peaked ? "peaked" : "flat", floor_us);
    for (const auto& ch : chains) {
      double best = 1e30;
      for (int64_t r = 0; r < reps; ++r) {
        auto chain = ch.make();
        const double t0 = dsinfer::bench::wall_seconds();
        for (int64_t t = 0; t < tokens; ++t) sink = sink + chain->sample(logits[size_t(t % rows)], vocab);
        best = std::min(best, (dsinfer::bench::wall_seconds() - t0) * 1e6 / double(tokens));
      }
      fmt::print("  {:<60} {:9.1f} us/token  {:6.1f}x the pass\n", ch.name, best, best / floor_us);
    }
  }
  return 0;
}
