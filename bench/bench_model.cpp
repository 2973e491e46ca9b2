// Prefill and decode throughput of a checkpoint on the CPU backend (the speed work of issue 7).
//   bench_model --model DIR [--threads N] [--prompt N] [--decode N] [--reps N] [--precision fp8|reference]
//               [--kv-cache-dtype auto|f32|bf16|fp8] [--index-topk N] [--decode-index-topk N] [--chunk N]
//               [--attention auto|mha|absorbed] [--no-empty-decode]
// Long contexts (issue 19): the KV pool is sized to the prompt plus the decoded tokens; --index-topk larger than the
// prompt makes attention dense (the indexer off: what DSA saves), --decode-index-topk does so for the decode steps
// only (dense decode at a depth whose dense prefill would take too long: what the cache holds does not change a
// step's cost); --chunk sets EvalOptions::max_chunk_tokens; --no-empty-decode skips the decode from an empty cache.
// The KV cache's bytes per token are printed with the model, and with each fp8 decode figure the cache bytes a step
// reads (every indexer key once the sequence sees more than index_topk, and the selected latent rows) and the rate
// of weights and cache together: at depth, the read bandwidth bounds that sum.
// Decode is measured twice, because attention's share of a step grows with the cache: N greedy steps right after
// the prompt (positions P .. P+N-1, like llama-bench's `-d P` tests) and N steps from an empty cache (positions
// 0 .. N-1, like llama-bench's plain tgN). Each decode figure also comes as the weight bytes it streams per second
// (ModelInfo::decode_weight_bytes × tok/s, less the indexer's query weights on steps that see at most index_topk
// keys and so skip them).
// Under `mpirun -np N` (a build with DSINFER_MPI) the model is distributed (docs/distributed.md): rank 0 runs the
// benchmark, the other ranks serve it; every rank prints its peak resident memory at the end.
//   bench_model --read-bandwidth [--threads N]
// prints only the memory read bandwidth of N threads (the bound for those figures), without loading a model, so
// that a caller measuring peak RSS can measure it in a separate process.
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <string>
#include <vector>

#include "bench_flags.hpp"
#include "dsinfer/model.hpp"
#include "mpi_launch.hpp"
#include "read_bandwidth.hpp"

#include <sys/resource.h>

namespace {
double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// This process's peak resident set (mapped weight pages it touched included), in MB.
double peak_rss_mb() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return double(u.ru_maxrss) / 1024.0;
}
}  // namespace

int main(int argc, char** argv) {
  std::string dir;
  int threads = 2, prompt = 128, decode = 32, reps = 3;
  std::vector<std::string> precisions = {"fp8", "reference"};
  bool read_bandwidth = false, empty_decode = true;
  int64_t index_topk = 0, decode_index_topk = -1, chunk = 0;
  dsinfer::AttentionForm attention = dsinfer::AttentionForm::Auto;
  dsinfer::KvCacheDtype kv_dtype = dsinfer::KvCacheDtype::Auto;
  for (int i = 1; i < argc; i += 2) {
    const std::string f = argv[i];
    if (f == "--read-bandwidth" || f == "--no-empty-decode") {  // flags without a value
      if (f == "--read-bandwidth") read_bandwidth = true;
      else empty_decode = false;
      --i;
      continue;
    }
    if (i + 1 >= argc) {
      fmt::print(stderr, "flag {} needs a value\n", f);
      return 2;
    }
    const std::string v = argv[i + 1];
    if (f == "--model") dir = v;
    else if (f == "--threads") threads = dsinfer::bench::number_flag(f, v, 1, 1024);
    else if (f == "--prompt") prompt = dsinfer::bench::number_flag(f, v, 1, 1 << 24);
    else if (f == "--decode") decode = dsinfer::bench::number_flag(f, v, 0, 1 << 24);
    else if (f == "--reps") reps = dsinfer::bench::number_flag(f, v, 1, 1 << 20);
    else if (f == "--precision") precisions = {v};
    else if (f == "--index-topk") index_topk = dsinfer::bench::number_flag<int64_t>(f, v, 1, int64_t(1) << 40);
    else if (f == "--decode-index-topk")
      decode_index_topk = dsinfer::bench::number_flag<int64_t>(f, v, 1, int64_t(1) << 40);
    else if (f == "--chunk") chunk = dsinfer::bench::number_flag<int64_t>(f, v, 1, int64_t(1) << 24);
    else if (f == "--attention") {
      if (v != "auto" && v != "mha" && v != "absorbed") {
        fmt::print(stderr, "--attention: auto, mha or absorbed, not {}\n", v);
        return 2;
      }
      attention = v == "mha" ? dsinfer::AttentionForm::Mha
                  : v == "absorbed" ? dsinfer::AttentionForm::Absorbed : dsinfer::AttentionForm::Auto;
    }
    else if (f == "--kv-cache-dtype") {
      if (!dsinfer::kv_cache_dtype_from_name(v, &kv_dtype)) {
        fmt::print(stderr, "--kv-cache-dtype: auto, f32, bf16 or fp8, not {}\n", v);
        return 2;
      }
    }
    else {
      fmt::print(stderr, "unknown flag {}\n", f);
      return 2;
    }
  }
  if (read_bandwidth) {
    fmt::print("read bandwidth, {} threads: {:.1f} GB/s\n", threads, dsinfer::bench::read_bandwidth_gbs(threads));
    return 0;
  }
  if (dir.empty()) {
    fmt::print(stderr, "usage: bench_model --model DIR [--threads N] [--prompt N] [--decode N] [--reps N] "
                       "[--precision fp8|reference] [--kv-cache-dtype D] [--index-topk N] [--decode-index-topk N] "
                       "[--chunk N] [--attention auto|mha|absorbed] "
                       "[--no-empty-decode] | --read-bandwidth [--threads N]\n");
    return 2;
  }
  try {
    dsinfer::ModelLoadParams lp;
    lp.n_threads = threads;
    lp.kv_cache_dtype = kv_dtype;
    lp.kv_cache_tokens = std::max<int64_t>(32768, int64_t(prompt) + decode);
    try {
      dsinfer::tools::join_distributed_run(dir, lp);
    } catch (const dsinfer::tools::WorkerDone&) {
      fmt::print("rank {}: peak RSS {:.0f} MB\n", dsinfer::Model::distributed_rank().rank, peak_rss_mb());
      return 0;
    }
    const auto t_load = std::chrono::steady_clock::now();
    auto model = dsinfer::Model::load(dir, lp);
    const double load_s = seconds_since(t_load);
    const auto& info = model->info();
    fmt::print("model {}: {} params, {:.1f} MB of weights ({:.1f} MB read per decoded token", dir, info.parameter_count,
               double(info.weight_bytes) / 1e6, double(info.decode_weight_bytes) / 1e6);
    if (info.indexer_query_bytes > 0)
      fmt::print("; {:.1f} MB while the sequence sees at most index_topk = {} keys",
                 double(info.decode_weight_bytes - info.indexer_query_bytes) / 1e6, info.index_topk);
    fmt::print("), load {:.2f} s, {} threads\n", load_s, threads);
    fmt::print("KV cache {}: {} bytes per token ({} per layer); {:.1f} MB for the prompt and decoded tokens\n",
               dsinfer::kv_cache_dtype_name(info.kv_cache_dtype), info.kv_bytes_per_token,
               info.kv_bytes_per_token_layer, double(model->kv_cache_bytes(int64_t(prompt) + decode)) / 1e6);
    if (info.distributed_ranks > 1) {
      fmt::print("distributed over {} ranks ({} threads each); weight MB held per rank:", info.distributed_ranks,
                 threads);
      for (const int64_t b : info.rank_weight_bytes) fmt::print(" {:.1f}", double(b) / 1e6);
      fmt::print("\n");
    }
    // Mean bytes per step over decode steps that see start+1 .. start+n keys.
    auto step_gb = [&](int64_t start, int64_t n) {
      const int64_t light = info.indexer_query_bytes > 0
                                ? std::clamp<int64_t>(info.index_topk - start, 0, n) : 0;  // steps that skip ranking
      return (double(info.decode_weight_bytes) - double(info.indexer_query_bytes) * double(light) / double(n)) / 1e9;
    };
    // Mean KV cache bytes per step over the same steps (fp8 precision's cache dtype), with `topk` the decode steps'
    // index_topk: a step that sees S > topk keys scans every indexer key and reads topk latent rows, else all S rows.
    auto step_cache_gb = [&](int64_t start, int64_t n, int64_t topk) {
      const double key = double(info.kv_index_bytes_per_token_layer);
      const double row = double(info.kv_bytes_per_token_layer) - key;
      double bytes = 0;
      for (int64_t s = start + 1; s <= start + n; ++s)
        bytes += info.has_indexer && s > topk ? double(s) * key + double(topk) * row : double(s) * row;
      return bytes * double(info.num_layers) / double(n) / 1e9;
    };
    std::vector<int32_t> ids(static_cast<size_t>(prompt));
    for (int i = 0; i < prompt; ++i) ids[size_t(i)] = int32_t(3 + (i * 7919) % std::max<int64_t>(1, info.vocab_size - 3));
    for (const auto& prec : precisions) {
      dsinfer::EvalOptions o;
      o.precision = prec == "fp8" ? dsinfer::Precision::Fp8 : dsinfer::Precision::Reference;
      o.index_topk = index_topk;
      o.max_chunk_tokens = chunk;
      o.attention = attention;
      dsinfer::EvalOptions od = o;  // the decode steps'
      if (decode_index_topk >= 0) od.index_topk = decode_index_topk;
      std::vector<double> pf, dc, d0;
      for (int r = 0; r < reps; ++r) {
        auto seq = model->new_sequence(prompt + decode);
        auto t0 = std::chrono::steady_clock::now();
        auto logits = model->eval(*seq, ids, o);
        pf.push_back(prompt / seconds_since(t0));
        t0 = std::chrono::steady_clock::now();
        for (int i = 0; i < decode; ++i) {
          const int32_t next = int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin());
          logits = model->eval(*seq, std::span<const int32_t>(&next, 1), od);
        }
        dc.push_back(decode / seconds_since(t0));
        seq.reset();  // (its cache is released before the next repetition)
        if (!empty_decode) {
          d0.push_back(0.0);
          continue;
        }
        auto empty = model->new_sequence(decode);
        int32_t next = ids[0];
        t0 = std::chrono::steady_clock::now();
        for (int i = 0; i < decode; ++i) {
          logits = model->eval(*empty, std::span<const int32_t>(&next, 1), od);
          next = int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin());
        }
        d0.push_back(decode / seconds_since(t0));
      }
      std::sort(pf.begin(), pf.end());
      std::sort(dc.begin(), dc.end());
      std::sort(d0.begin(), d0.end());
      fmt::print("{:>9}: prefill {:8.1f} tok/s ({}-token prompt)  decode {:8.1f} tok/s ({} tokens after the prompt)  "
                 "decode {:8.1f} tok/s ({} tokens from an empty cache)  [median of {}]\n",
                 prec, pf[pf.size() / 2], prompt, dc[dc.size() / 2], decode, d0[d0.size() / 2], decode, reps);
      fmt::print("{:>9}  decode streams weights at {:.1f} GB/s after the prompt, {:.1f} GB/s from an empty cache\n",
                 "", dc[dc.size() / 2] * step_gb(prompt, decode), d0[d0.size() / 2] * step_gb(0, decode));
      if (prec == "fp8") {  // what the cache adds to a step (the bound on flatness at depth: weights and cache)
        const int64_t topk = od.index_topk > 0 ? od.index_topk : info.index_topk;
        const double cache = step_cache_gb(prompt, decode, topk);
        fmt::print("{:>9}  and reads {:.1f} MB of KV cache a step after the prompt: weights and cache at {:.1f} GB/s\n",
                   "", cache * 1e3, dc[dc.size() / 2] * (step_gb(prompt, decode) + cache));
      }
    }
    model.reset();  // (a distributed run's workers finish here)
  } catch (const dsinfer::Error& e) {
    fmt::print(stderr, "bench_model: {}\n", e.what());
    return 1;
  }
  fmt::print("rank 0: peak RSS {:.0f} MB\n", peak_rss_mb());
  return 0;
}
