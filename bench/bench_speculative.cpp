// Decode speed with and without speculative decoding (issue 18), greedy.
//   bench_speculative --model DIR [--threads N,...] [--prompt N | --prompt-file FILE] [--decode N] [--k 0,1,2,3]
//                     [--adaptive 0|1] [--draft mtp|oracle:P] [--precision fp8|reference] [--reps N] [--batch B,...]
//                     [--backend cpu|cuda] [--waves N]
// For each thread count in --threads (the model loaded once per count), each batch size in --batch and each K in
// --k (0 = plain decoding) it prefills the prompt, then times --decode greedy tokens (the best of --reps runs, which
// go round the Ks in turn: K = 0, 1, ..., then again) and prints tokens/s, the speed-up over K = 0, the acceptance
// (overall and by draft position) and how many steps drafted; also tokens per CPU second (use --threads 1 on a
// shared machine). Every run's tokens are checked against the plain run's (speculation must not change them).
// --batch B > 1: B sessions decode together in an Engine (each speculating for itself; session i's prompt is the
// prompt with its last token replaced, so the B continuations differ); tokens/s counts all sessions' tokens.
// --waves N > 1: N batches of B new sessions, one after another, through one Engine (as a server's requests arrive;
// with --adaptive 1 later sessions start from what earlier ones measured: SpeculationRecord); tokens/s counts every
// wave's.
// --draft mtp (the default) drafts with the checkpoint's MTP module. --draft oracle:P needs no MTP module: the
// drafts are the plain run's own continuation, each replaced by a wrong token with probability 1 - P (seeded), so
// the verification's gain can be measured at a chosen acceptance on any checkpoint; it leaves out the cost of
// drafting (the MTP rows: ModelInfo::mtp_draft_weight_bytes per draft, printed for reference).
// --prompt-file: a text file tokenized with the checkpoint's tokenizer (a realistic prompt for a trained model);
// else --prompt N ids from a fixed LCG.
// "bound xB" (a session alone): the speed-up the run's own steps allow where a step's time is the time to read its
// weights: its tokens over the bytes its plain steps, verifications (every weight once, but the union of the rows'
// routed experts, for balanced and independent routing) and MTP drafts read, in plain steps (docs/speculative.md).
#include <fmt/format.h>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "bench_flags.hpp"
#include "dsinfer/error.hpp"
#include "dsinfer/session.hpp"

namespace {
double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}
// User + system CPU seconds of the process: on a shared machine the wall clock also counts other programs' time;
// with --threads 1 (no pool threads spinning) CPU time is the work itself.
double cpu_seconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return double(u.ru_utime.tv_sec + u.ru_stime.tv_sec) + 1e-6 * double(u.ru_utime.tv_usec + u.ru_stime.tv_usec);
}

// The bandwidth bound above: one plain step reads 1 (ModelInfo::decode_weight_bytes); a verification with d drafts
// 1 + routed · (n·(1 - (1 - top/n)^(d + 1)) / top - 1), routed the routed experts' share of a step, d the run's mean
// drafts per verification; an MTP draft mtp_draft_weight_bytes / decode_weight_bytes (drafts from a drafter: 0).
double bound_speedup(const dsinfer::ModelInfo& info, const dsinfer::SpeculativeStats& st, int64_t tokens, bool mtp) {
  const double step = double(info.decode_weight_bytes);
  const double routed = double(info.decode_routed_expert_bytes) / step;
  const double n = double(info.n_routed_experts), top = double(info.experts_per_token);
  const double drafts = double(st.drafted) / double(st.steps);
  const double distinct = n > 0 ? n * (1 - std::pow(1 - top / n, drafts + 1)) : 0;
  const double verification = 1 + (n > 0 ? routed * (distinct / top - 1) : 0);
  const double draft = mtp ? double(info.mtp_draft_weight_bytes) / step : 0;
  return double(tokens) / (double(st.plain_steps) + double(st.steps) * verification + double(st.drafted) * draft);
}

int run(int argc, char** argv) {
  std::string dir, prompt_file, draft = "mtp", precision = "fp8", backend = "cpu";
  int prompt_len = 64, decode = 64, reps = 2, waves = 1;
  bool adaptive = false;
  std::vector<int64_t> ks = {0, 1, 2, 3}, thread_counts = {2}, batches = {1};
  for (int i = 1; i < argc; i += 2) {
    const std::string f = argv[i];
    if (i + 1 >= argc) {
      fmt::print(stderr, "flag {} needs a value\n", f);
      return 2;
    }
    const std::string v = argv[i + 1];
    if (f == "--model") dir = v;
    else if (f == "--threads") thread_counts = dsinfer::bench::number_list_flag<int64_t>(f, v, 1, 1024);
    else if (f == "--prompt") prompt_len = dsinfer::bench::number_flag(f, v, 1, 1 << 24);
    else if (f == "--prompt-file") prompt_file = v;
    else if (f == "--decode") decode = dsinfer::bench::number_flag(f, v, 1, 1 << 24);
    else if (f == "--reps") reps = dsinfer::bench::number_flag(f, v, 1, 1 << 20);
    else if (f == "--batch") batches = dsinfer::bench::number_list_flag<int64_t>(f, v, 1, 256);
    else if (f == "--k") ks = dsinfer::bench::number_list_flag<int64_t>(f, v, 0, 16);
    else if (f == "--adaptive") adaptive = v == "1";
    else if (f == "--draft") draft = v;
    else if (f == "--precision") precision = v;
    else if (f == "--backend") backend = v;
    else if (f == "--waves") waves = dsinfer::bench::number_flag(f, v, 1, 64);
    else {
      fmt::print(stderr, "unknown flag {}\n", f);
      return 2;
    }
  }
  if (dir.empty()) {
    fmt::print(stderr, "usage: bench_speculative --model DIR [flags] (see the source's header)\n");
    return 2;
  }
  double oracle_p = -1;
  if (draft.rfind("oracle:", 0) == 0)
    oracle_p = dsinfer::bench::number_flag("--draft oracle:P", std::string_view(draft).substr(7), 0.0, 1.0);
  else if (draft != "mtp") {
    fmt::print(stderr, "--draft expects mtp or oracle:P\n");
    return 2;
  }
  if (std::find(ks.begin(), ks.end(), 0) == ks.end()) ks.insert(ks.begin(), 0);  // the baseline and the truth
  std::sort(ks.begin(), ks.end());

  for (const int64_t threads : thread_counts) {
    dsinfer::ModelLoadParams lp;
    lp.n_threads = int(threads);
    lp.backend = backend;
    auto model = dsinfer::Model::load(dir, lp);
    auto tok = dsinfer::Tokenizer::load(dir);
    const dsinfer::ModelInfo& info = model->info();
    std::vector<int32_t> prompt;
    if (!prompt_file.empty()) {
      std::ifstream f(prompt_file, std::ios::binary);
      std::stringstream ss;
      ss << f.rdbuf();
      prompt = tok->encode(ss.str(), true);
    } else {
      uint64_t s = 1000;
      const int64_t usable = std::min<int64_t>(tok->size(), info.vocab_size);
      for (int i = 0; i < prompt_len; ++i) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        prompt.push_back(int32_t(3 + (s >> 33) % uint64_t(usable - 3)));
      }
    }
    fmt::print("model {}: {} layers, mtp module {}, decode reads {:.1f} MB per step, a draft {:.1f} MB\n", dir,
               info.num_layers, info.has_mtp ? "yes" : "no", double(info.decode_weight_bytes) / 1e6,
               double(info.mtp_draft_weight_bytes) / 1e6);
    const int64_t usable_vocab = std::min<int64_t>(tok->size(), info.vocab_size);
    auto prompt_of = [&](int b) {  // session b's prompt: the last token varied
      std::vector<int32_t> p = prompt;
      if (b > 0) p.back() = int32_t(3 + (int64_t(p.back()) - 3 + 17 * b) % (usable_vocab - 3));
      return p;
    };

    for (const int64_t batch_wanted : batches) {
      const int batch = int(batch_wanted);
      fmt::print("{} backend, {} threads, {} precision, prompt {} tokens, {} decoded, drafts: {}, adaptive {}, "
                 "batch {}{}\n", backend, threads, precision, prompt.size(), decode, draft, adaptive ? "on" : "off",
                 batch, waves > 1 ? fmt::format(" x {} waves", waves) : "");
      std::vector<std::vector<int32_t>> truth(static_cast<size_t>(batch));
      struct Result {
        double best = 1e30, best_cpu = 1e30;
        dsinfer::SpeculativeStats stats;
        std::vector<std::vector<int32_t>> out;
        bool same = true;
      };
      // One timed generation of every session with k drafts (rep r seeds the oracle drafter).
      auto run = [&](int64_t k, int r, Result& res) {
        dsinfer::SessionParams sp;
        sp.capacity = int64_t(prompt.size()) + decode + 32;
        sp.eval.precision = precision == "reference" ? dsinfer::Precision::Reference : dsinfer::Precision::Fp8;
        sp.raw_text = true;
        sp.speculative.draft_tokens = k;
        sp.speculative.adaptive = adaptive;
        std::vector<std::unique_ptr<dsinfer::Session>> sessions;  // wave w's session b at w * batch + b
        for (int i = 0; i < batch * waves; ++i) {
          const int b = i % batch;
          if (k > 0 && oracle_p >= 0) {
            auto rng = std::make_shared<std::mt19937_64>(uint64_t(r) * 7919 + uint64_t(k) + 104729 * uint64_t(b));
            const size_t plen = prompt.size();
            const std::vector<int32_t>* want = &truth[size_t(b)];
            sp.speculative.drafter = [want, plen, oracle_p, rng, usable_vocab](std::span<const int32_t> ctx, int32_t,
                                                                               int64_t max, std::vector<int32_t>& o) {
              std::uniform_real_distribution<double> u(0.0, 1.0);
              for (int64_t i = 0; i < max; ++i) {
                const size_t j = ctx.size() + 1 - plen + size_t(i);
                if (j >= want->size()) break;
                o.push_back(u(*rng) < oracle_p ? (*want)[j] : int32_t(((*want)[j] + 1) % usable_vocab));
              }
            };
          }
          auto session = std::make_unique<dsinfer::Session>(*model, *tok, sp);
          auto chain = std::make_unique<dsinfer::SamplerChain>();
          chain->add(dsinfer::make_greedy_sampler());
          session->set_sampler(std::move(chain));
          session->prefill(prompt_of(b));  // outside the timed part, as for one session
          sessions.push_back(std::move(session));
        }
        dsinfer::GenerateParams gp;
        gp.max_tokens = decode;
        gp.stop_at_eos = false;
        const auto t0 = std::chrono::steady_clock::now();
        const double c0 = cpu_seconds();
        if (batch == 1 && waves == 1) {
          sessions[0]->generate(gp);
        } else {
          dsinfer::Engine engine(*model);
          for (int w = 0; w < waves; ++w) {
            std::vector<dsinfer::Session*> ptrs;
            for (int b = 0; b < batch; ++b) ptrs.push_back(sessions[size_t(w * batch + b)].get());
            engine.generate(ptrs, gp);
          }
        }
        res.best = std::min(res.best, seconds_since(t0));
        res.best_cpu = std::min(res.best_cpu, cpu_seconds() - c0);
        res.stats = dsinfer::SpeculativeStats{};
        res.out.assign(sessions.size(), {});
        for (size_t b = 0; b < sessions.size(); ++b) {
          const auto& st = sessions[b]->speculative_stats();
          res.stats.steps += st.steps;
          res.stats.drafted += st.drafted;
          res.stats.accepted += st.accepted;
          res.stats.plain_steps += st.plain_steps;
          res.stats.drafted_at.resize(std::max(res.stats.drafted_at.size(), st.drafted_at.size()), 0);
          res.stats.accepted_at.resize(res.stats.drafted_at.size(), 0);
          for (size_t i = 0; i < st.drafted_at.size(); ++i) {
            res.stats.drafted_at[i] += st.drafted_at[i];
            res.stats.accepted_at[i] += st.accepted_at[i];
          }
          res.out[b] = sessions[b]->generated();
        }
        if (k == 0 && r == 0) truth.assign(res.out.begin(), res.out.begin() + batch);  // k = 0 runs first (sorted)
        for (size_t b = 0; b < res.out.size(); ++b) res.same = res.same && res.out[b] == truth[b % size_t(batch)];
      };
      // The reps go round every k in turn, so a drift of the machine's speed over the run reaches every k alike.
      std::vector<Result> results(ks.size());
      for (int r = 0; r < reps; ++r)
        for (size_t i = 0; i < ks.size(); ++i) run(ks[i], r, results[i]);
      double base_tps = 0, base_cpu_tps = 0;
      for (size_t i = 0; i < ks.size(); ++i) {
        const int64_t k = ks[i];
        const Result& res = results[i];
        size_t n_tokens = 0;
        for (const auto& o : res.out) n_tokens += o.size();
        const double tps = double(n_tokens) / res.best, cpu_tps = double(n_tokens) / res.best_cpu;
        if (k == 0) {
          base_tps = tps;
          base_cpu_tps = cpu_tps;
        }
        std::string by;
        for (size_t j = 0; j < res.stats.drafted_at.size(); ++j)
          by += fmt::format("{}{:.0f}%", j ? " " : "",
                            res.stats.drafted_at[j]
                                ? 100.0 * double(res.stats.accepted_at[j]) / double(res.stats.drafted_at[j])
                                : 0.0);
        // The bandwidth bound of this run's own steps, for a session alone (bound_speedup).
        const std::string bound =
            batch == 1 && waves == 1 && k > 0 && res.stats.steps > 0
                ? fmt::format(" | bound x{:.2f}", bound_speedup(info, res.stats, int64_t(n_tokens), oracle_p < 0))
                : "";
        fmt::print("k={:<2} {:7.2f} tok/s x{:.2f} | {:7.2f} tok/cpu-s x{:.2f} | acceptance {:5.1f}% (by position: {}) "
                   "| {} verifications, {} plain steps{}{}\n", k, tps, tps / base_tps, cpu_tps, cpu_tps / base_cpu_tps,
                   100.0 * res.stats.acceptance(), by.empty() ? "-" : by, res.stats.steps, res.stats.plain_steps, bound,
                   res.same ? "" : "  TOKENS DIFFER FROM PLAIN DECODING");
        if (!res.same) return 1;
      }
    }
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const dsinfer::Error& e) {  // a model that does not load, a backend that is missing: said, not aborted
    fmt::print(stderr, "bench_speculative: {}\n", e.what());
    return 1;
  }
}
