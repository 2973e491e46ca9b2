// The CPU lightning indexer alone (CpuBackend::indexer_topk over an FP8 key cache in DeepSeek's 132-byte layout)
// against this machine's fused multiply-add rate, measured in the same run.
//   bench_cpu_indexer [--threads N] [--heads H] [--dim D] [--topk K] [--depths 4096,16384,65536] [--queries T]
//                     [--reps N] [--cold MB] [--pages shuffled|ordered]
// At each depth S: one op scoring T queries against S cached keys (T = 1: a decode step's scan; larger T: a prefill
// chunk's: queries at the last T positions, each seeing the keys up to its own), then the top K per query. Reports
// ms per op, (query, visible key) pairs scored per second, and GFMA/s counted as H·D per pair (the q·k products;
// the per-key relu, weights and selection are extra work not counted) next to the FMA rate of a register-resident
// loop on as many threads: the share says how far the scan is from the arithmetic limit. Op times are the best of
// --reps runs, the FMA loop's the best of 3. Defaults: the v32-bench model's indexer (16 heads x 64, top 256).
// --cold MB reads MB megabytes of other memory on every thread before each run (untimed), as a decode step's weight
// reads do between two layers' scans, so that the keys come from memory instead of the caches the previous run left
// them in (without it, depths whose keys fit in the caches measure the kernel on cached keys).
// --pages: the key cache's pages in shuffled order (the default: a pool whose blocks were freed and taken again,
// as by forks and ended sessions) or in order (a fresh pool hands its blocks out in order, as in bench_model).
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "bench_flags.hpp"
#include "timing.hpp"
#include "backend/cpu/buffer_cache.hpp"
#include "backend/cpu/cpu_backend.hpp"
#include "backend/cpu/simd.hpp"
#include "backend/kv_format.hpp"
#include "util/thread_pool.hpp"

using namespace dsinfer;

namespace {

#ifdef DSINFER_HAVE_AVX2_KERNELS
// 12 independent chains of 8-lane FMAs (enough to cover the latency of two FMA units); returns the lanes' sum so
// the loop is not optimized away.
DSINFER_AVX2_FN float fma_loop_avx2(int64_t iters) {
  __m256 acc[12];
  for (int i = 0; i < 12; ++i) acc[i] = _mm256_set1_ps(float(i));
  const __m256 a = _mm256_set1_ps(0.999f), b = _mm256_set1_ps(1e-7f);
  for (int64_t n = 0; n < iters; ++n)
    for (int i = 0; i < 12; ++i) acc[i] = _mm256_fmadd_ps(acc[i], a, b);
  __m256 s = acc[0];
  for (int i = 1; i < 12; ++i) s = _mm256_add_ps(s, acc[i]);
  float out[8];
  _mm256_storeu_ps(out, s);
  return std::accumulate(out, out + 8, 0.0f);
}

__attribute__((target("avx512f"))) float fma_loop_avx512(int64_t iters) {
  __m512 acc[12];
  for (int i = 0; i < 12; ++i) acc[i] = _mm512_set1_ps(float(i));
  const __m512 a = _mm512_set1_ps(0.999f), b = _mm512_set1_ps(1e-7f);
  for (int64_t n = 0; n < iters; ++n)
    for (int i = 0; i < 12; ++i) acc[i] = _mm512_fmadd_ps(acc[i], a, b);
  __m512 s = acc[0];
  for (int i = 1; i < 12; ++i) s = _mm512_add_ps(s, acc[i]);
  float out[16];
  _mm512_storeu_ps(out, s);
  return std::accumulate(out, out + 16, 0.0f);
}
#endif

// Fused multiply-adds per second on `threads` threads at the vector width the kernels use (0 without vector kernels).
double fma_rate(int threads, int reps) {
#ifdef DSINFER_HAVE_AVX2_KERNELS
  const bool wide = cpu_vector_isa() == CpuIsa::Avx512;
  if (cpu_kernel_isa() == CpuIsa::Scalar) return 0;
  const int64_t iters = 20'000'000;
  ThreadPool pool(threads);
  std::vector<float> sink(static_cast<size_t>(threads));
  const double t = bench::best_of(reps, [&] {
    pool.parallel_for(threads, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) sink[size_t(i)] = wide ? fma_loop_avx512(iters) : fma_loop_avx2(iters);
    });
  });
  return double(threads) * double(iters) * 12 * (wide ? 16 : 8) / t;
#else
  (void)threads, (void)reps;
  return 0;
#endif
}

}  // namespace

int main(int argc, char** argv) {
  int64_t threads = 2, H = 16, D = 64, topk = 256, T = 1, reps = 5, cold_mb = 0;
  bool shuffled_pages = true;
  std::vector<int64_t> depths = {4096, 16384, 65536};
  for (int i = 1; i < argc; i += 2) {
    const std::string f = argv[i];
    if (i + 1 >= argc) {
      fmt::print(stderr, "flag {} needs a value\n", f);
      return 2;
    }
    const std::string v = argv[i + 1];
    if (f == "--threads") threads = bench::number_flag<int64_t>(f, v, 1, 1024);
    else if (f == "--heads") H = bench::number_flag<int64_t>(f, v, 1, 64);
    else if (f == "--dim") D = bench::number_flag<int64_t>(f, v, 1, 1024);
    else if (f == "--topk") topk = bench::number_flag<int64_t>(f, v, 1, 1 << 20);
    else if (f == "--queries") T = bench::number_flag<int64_t>(f, v, 1, 4096);
    else if (f == "--reps") reps = bench::number_flag<int64_t>(f, v, 1, 1000);
    else if (f == "--cold") cold_mb = bench::number_flag<int64_t>(f, v, 0, 1 << 16);
    else if (f == "--depths") depths = bench::number_list_flag<int64_t>(f, v, 1, int64_t(1) << 24);
    else if (f == "--pages") {
      if (v != "shuffled" && v != "ordered") {
        fmt::print(stderr, "--pages takes shuffled or ordered, not {}\n", v);
        return 2;
      }
      shuffled_pages = v == "shuffled";
    }
    else {
      fmt::print(stderr, "unknown flag {}\n", f);
      return 2;
    }
  }
  const int64_t S_max = *std::max_element(depths.begin(), depths.end());
  if (T > S_max) {
    fmt::print(stderr, "--queries {} exceeds the deepest depth {}\n", T, S_max);
    return 2;
  }

  // The FP8 key cache in pages of 64 tokens (the KV pool's block), in the order --pages says; random e4m3 codes
  // without the NaN codes, random positive scales.
  std::mt19937 gen(1);
  const int64_t P = 64, pages = (S_max + P - 1) / P;
  PackedKv cache;
  cache.dtype = KvDtype::FP8;
  cache.dim = D;
  cache.page_tokens = P;
  // From the CPU backend's block allocator, as the KV pool's tensors: 64-byte aligned (a vector's data may start
  // anywhere: every key row would then span two cache lines) and, from 2 MB, in transparent huge pages.
  const size_t cache_bytes = size_t(pages * P * kvfmt::index_key_bytes(KvDtype::FP8, D));
  BufferCache* blocks = BufferCache::create();
  std::unique_ptr<uint8_t, void (*)(void*)> bytes(static_cast<uint8_t*>(blocks->take(cache_bytes, false)),
                                                  BufferCache::free_block);
  blocks->release_ref();  // the block keeps the cache alive
  if (!bytes) {
    fmt::print(stderr, "no memory for {} bytes of keys\n", cache_bytes);
    return 1;
  }
  for (size_t i = 0; i < cache_bytes; ++i) do bytes.get()[i] = uint8_t(gen()); while ((bytes.get()[i] & 0x7f) == 0x7f);
  cache.data = bytes.get();
  for (int64_t row = 0; row < pages * P; ++row) {
    const float scale = 0.5f + float(gen() % 1000) / 1000.0f;
    std::memcpy(kvfmt::index_key_scale(cache, row), &scale, 4);
  }
  std::vector<int32_t> table(static_cast<size_t>(pages));
  std::iota(table.begin(), table.end(), 0);
  if (shuffled_pages) std::shuffle(table.begin(), table.end(), gen);
  // Queries as fp8 precision gives them: e4m3 values (unscaled; their scales are in the head weights).
  std::normal_distribution<float> normal;
  std::vector<float> q(size_t(T * H * D)), w(size_t(T * H));
  for (auto& x : q) {
    uint8_t b;
    do b = uint8_t(gen()); while ((b & 0x7f) == 0x7f);
    x = e4m3_table()[b];
  }
  for (auto& x : w) x = normal(gen);
  std::vector<int32_t> positions(static_cast<size_t>(T)), indices(static_cast<size_t>(T * topk));

  // The memory --cold reads: each thread sums its part (the sum is kept so the reads are not optimized away).
  std::vector<uint64_t> other(size_t(cold_mb) << 17, 1);
  // (Its own pool, made only for --cold: an idle pool's workers would take time from the op's.)
  std::unique_ptr<ThreadPool> evict_pool = cold_mb ? std::make_unique<ThreadPool>(int(threads)) : nullptr;
  std::vector<uint64_t> other_sums(static_cast<size_t>(threads));
  auto evict = [&] {
    evict_pool->parallel_for(int64_t(threads), [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) {
        const size_t n = other.size() / size_t(threads), b = size_t(i) * n;
        other_sums[size_t(i)] += std::accumulate(other.begin() + long(b), other.begin() + long(b + n), uint64_t(0));
      }
    });
  };
  CpuBackend be({int(threads)});
  const double peak = fma_rate(int(threads), 3);
  const std::string cold = cold_mb ? fmt::format(", {} MB read before each op", cold_mb) : "";
  fmt::print("CPU indexer: {} kernels, {} threads, {} heads x {}, top {}, {} quer{} per op, pages {}{}; FMA loop "
             "{:.1f} GFMA/s\n", cpu_isa_name(cpu_kernel_isa()), threads, H, D, topk, T, T == 1 ? "y" : "ies",
             shuffled_pages ? "shuffled" : "ordered", cold, peak / 1e9);
  fmt::print("| depth | ms per op | (query, key) pairs per s | GFMA/s (q·k) | share of the FMA loop |\n");
  fmt::print("|---|---|---|---|---|\n");
  for (const int64_t S : depths) {
    if (S < T) continue;
    for (int64_t t = 0; t < T; ++t) positions[size_t(t)] = int32_t(S - T + t);  // the chunk ends at the depth
    IndexerTopkArgs a;
    a.q = Tensor2D{q.data(), T, H * D, H * D};
    a.w = Tensor2D{w.data(), T, H, H};
    a.head_scale = 1.0f / std::sqrt(float(H * D));
    a.k = Tensor2D{nullptr, pages * P, D, D};
    a.k_packed = cache;
    a.n_keys = S;
    a.block_table = table.data();
    a.block_tokens = P;
    a.n_heads = H;
    a.head_dim = D;
    a.positions = positions.data();
    a.topk = topk;
    a.out_indices = indices.data();
    be.indexer_topk(a);  // warm: scratch allocated, pages touched
    double t = 1e30;
    for (int64_t r = 0; r < reps; ++r) {
      if (cold_mb) {
        evict();
        // The reading pool's worker goes to sleep (its yielding would take time from the op), and the backend's is
        // woken by a small op, as a decode step's previous ops keep it.
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
        IndexerTopkArgs small = a;
        small.n_keys = std::min<int64_t>(S, 64);
        for (int64_t i = 0; i < T; ++i) positions[size_t(i)] = int32_t(small.n_keys - 1);
        be.indexer_topk(small);
        for (int64_t i = 0; i < T; ++i) positions[size_t(i)] = int32_t(S - T + i);
      }
      t = std::min(t, bench::best_of(1, [&] { be.indexer_topk(a); }));
    }
    double pairs = 0;  // (query, visible key) pairs
    for (int64_t i = 0; i < T; ++i) pairs += double(positions[size_t(i)] + 1);
    const double fmas = pairs * double(H * D);
    fmt::print("| {} | {:.3f} | {:.3g} | {:.1f} | {:.2f} |\n", S, 1e3 * t, pairs / t, fmas / t / 1e9,
               peak > 0 ? fmas / t / peak : 0.0);
  }
  return 0;
}
