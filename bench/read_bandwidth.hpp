// The machine's memory read bandwidth, measured by the benchmarks in the same run as the figures they set against
// it (a decode step that streams its weights cannot beat it). x86-64 only, as the CPU kernels' benchmarks are.
#pragma once
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define DSINFER_BENCH_X86 1
#endif

namespace dsinfer::bench {

#ifdef DSINFER_BENCH_X86

// Sum of 64-bit words: a read that the core can issue as fast as memory delivers. 64-byte loads where the CPU has
// AVX-512 (about 10 % faster than 32-byte ones here: the bound must not be understated), else AVX2.
// `prefetch` > 0 also prefetches that many bytes ahead.
__attribute__((target("avx512f"))) inline uint64_t read_sum_avx512(const uint8_t* p, int64_t bytes, int64_t prefetch) {
  __m512i a0 = _mm512_setzero_si512(), a1 = a0;
  for (int64_t i = 0; i + 128 <= bytes; i += 128) {
    if (prefetch) {
      _mm_prefetch(reinterpret_cast<const char*>(p + i + prefetch), _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(p + i + prefetch + 64), _MM_HINT_T0);
    }
    a0 = _mm512_add_epi64(a0, _mm512_load_si512(p + i));
    a1 = _mm512_add_epi64(a1, _mm512_load_si512(p + i + 64));
  }
  alignas(64) uint64_t lanes[8];  // (a store, not _mm512_reduce_add_epi64, which GCC 12 warns about)
  _mm512_store_si512(lanes, _mm512_add_epi64(a0, a1));
  uint64_t sum = 0;
  for (uint64_t v : lanes) sum += v;
  return sum;
}

__attribute__((target("avx2"))) inline uint64_t read_sum_avx2(const uint8_t* p, int64_t bytes, int64_t prefetch) {
  __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
  for (int64_t i = 0; i + 128 <= bytes; i += 128) {
    if (prefetch) {
      _mm_prefetch(reinterpret_cast<const char*>(p + i + prefetch), _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(p + i + prefetch + 64), _MM_HINT_T0);
    }
    a0 = _mm256_add_epi64(a0, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i)));
    a1 = _mm256_add_epi64(a1, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i + 32)));
    a2 = _mm256_add_epi64(a2, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i + 64)));
    a3 = _mm256_add_epi64(a3, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i + 96)));
  }
  const __m256i s = _mm256_add_epi64(_mm256_add_epi64(a0, a1), _mm256_add_epi64(a2, a3));
  return uint64_t(_mm256_extract_epi64(s, 0) + _mm256_extract_epi64(s, 1) + _mm256_extract_epi64(s, 2) +
                  _mm256_extract_epi64(s, 3));
}

inline uint64_t read_sum(const uint8_t* p, int64_t bytes, int64_t prefetch = 0) {
  static const bool avx512 = __builtin_cpu_supports("avx512f");
  return avx512 ? read_sum_avx512(p, bytes, prefetch) : read_sum_avx2(p, bytes, prefetch);
}
#else
inline uint64_t read_sum(const uint8_t* p, int64_t bytes, int64_t /*prefetch*/ = 0) {
  uint64_t a0 = 0, a1 = 0, a2 = 0, a3 = 0, w[4];
  for (int64_t i = 0; i + 32 <= bytes; i += 32) {
    std::memcpy(w, p + i, 32);
    a0 += w[0], a1 += w[1], a2 += w[2], a3 += w[3];
  }
  return a0 + a1 + a2 + a3;
}
#endif

// GB/s of `threads` threads each summing its own slice of a fresh buffer of `bytes` (far larger than the caches),
// best of `reps` passes. The buffer is freed before returning.
inline double read_bandwidth_gbs(int threads, int64_t bytes = int64_t(1) << 30, int reps = 3) {
  const int64_t slice = bytes / threads / 4096 * 4096;
  auto* buf = static_cast<uint8_t*>(std::aligned_alloc(4096, size_t(slice * threads)));
  if (!buf) return 0.0;
  std::memset(buf, 1, size_t(slice * threads));
  std::vector<uint64_t> sums(static_cast<size_t>(threads));
  double best = 1e30;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t)
      pool.emplace_back([&, t] { sums[size_t(t)] += read_sum(buf + int64_t(t) * slice, slice); });
    for (auto& th : pool) th.join();
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::free(buf);
  return double(slice * threads) / best / 1e9;
}

}  // namespace dsinfer::bench
