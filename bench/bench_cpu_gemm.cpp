// The CPU GEMM kernels alone (lib/backend/cpu/fp8_gemm.cpp, dense_gemm.cpp) against this machine's memory read
// bandwidth, measured in the same run.
//   bench_cpu_gemm [--threads N] [--mb MB] [--reps N] [--clock wall|cpu]
// Decode (T = 1, 2) streams a set of distinct weights larger than the caches, as a decode step does, and reports
// weight GB/s next to a plain read of the same bytes; prefill shapes report GFLOP/s. Every figure is the best of
// --reps runs.
#include <fmt/format.h>

#include <algorithm>
#include <ctime>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include <immintrin.h>

#include "bench_flags.hpp"
#include "read_bandwidth.hpp"
#include "timing.hpp"
#include "backend/cpu/cpu_backend.hpp"
#include "backend/cpu/dense_gemm.hpp"
#include "backend/cpu/fp8_gemm.hpp"
#include "util/thread_pool.hpp"

using namespace dsinfer;

namespace {
bool g_cpu_clock = false;
int64_t g_prefetch = 0;  // --prefetch BYTES: the read loop also prefetches this far ahead  // --clock cpu: process CPU time (tuning on a busy machine, 1 thread only)
double now() {
  if (g_cpu_clock) {
    timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
  }
  return bench::wall_seconds();
}

template <class F>
double best_of(int reps, F&& f) {
  return bench::best_of(reps, f, now);
}
}  // namespace

int main(int argc, char** argv) {
  int threads = 1, reps = 5;
  int64_t mb = 512;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string f = argv[i];
    if (f == "--threads") threads = bench::number_flag(f, argv[i + 1], 1, 1024);
    else if (f == "--mb") mb = bench::number_flag<int64_t>(f, argv[i + 1], 1, 1 << 20);
    else if (f == "--reps") reps = bench::number_flag(f, argv[i + 1], 1, 1 << 20);
    else if (f == "--clock") g_cpu_clock = std::string(argv[i + 1]) == "cpu";
    else if (f == "--prefetch") g_prefetch = bench::number_flag<int64_t>(f, argv[i + 1], 0, 1 << 20);
    else { fmt::print(stderr, "unknown flag {}\n", f); return 2; }
  }
  ThreadPool pool(threads);
  CpuBackend be({threads});
  std::mt19937 gen(1);
  const int64_t N = 512, K = 1024, G = K / 128;  // a routed expert's gate/up projection at hidden 1024
  const int64_t n_weights = std::max<int64_t>(1, mb * 1000000 / (N * K));
  std::vector<uint8_t> raw(size_t(N * K));
  for (auto& b : raw) do b = uint8_t(gen()); while ((b & 0x7f) == 0x7f);
  std::vector<float> scale(size_t(N / 128 * G), 0.01f);
  Weight w{"w", DType::F8_E4M3, {N, K}, raw.data(), scale.data()};
  std::vector<PackedFp8Weight> packed;
  for (int64_t i = 0; i < n_weights; ++i) packed.push_back(pack_fp8_weight(w));
  std::vector<uint16_t> raw16(size_t(N * K), 0x3c00);
  Weight wb{"wb", DType::BF16, {N, K}, reinterpret_cast<const uint8_t*>(raw16.data()), nullptr};
  std::vector<PackedDenseWeight> packed16;
  for (int64_t i = 0; i < n_weights / 2; ++i) packed16.push_back(pack_dense_weight(wb));

  fmt::print("CPU GEMM kernels: best FP8 kernel {}, {} threads, {} distinct {}x{} weights ({:.0f} MB FP8)\n",
             fp8_gemm_isa(), threads, n_weights, N, K, double(n_weights * N * K) / 1e6);
  // Read bandwidth over the same packed bytes, split over the same threads.
  std::vector<uint64_t> partial(static_cast<size_t>(threads));
  const double t_read = best_of(reps, [&] {
    pool.parallel_for(n_weights, [&](int64_t a, int64_t b) {
      uint64_t s = 0;
      for (int64_t i = a; i < b; ++i) s += bench::read_sum(packed[size_t(i)].bytes.get(), N * K, g_prefetch);
      partial[size_t(a * threads / n_weights)] += s;
    });
  });
  const double gb = double(n_weights * N * K) / 1e9;
  fmt::print("memory read (sum of the same bytes): {:.1f} GB/s\n", gb / t_read);
  fmt::print("| kernel | T | weight GB/s | share of read bandwidth | GFLOP/s |\n|---|---|---|---|---|\n");
  for (auto kernel : {Fp8Kernel::Best, Fp8Kernel::Avx2}) {
    for (int64_t T : {1, 2, 3, 4, 8}) {
      std::vector<float> xq(size_t(T * K), 1.0f), xs(size_t(T * G), 1.0f), y(size_t(T * N));
      const double t = best_of(reps, [&] {
        for (int64_t i = 0; i < n_weights; ++i) fp8_gemm(xq.data(), K, xs.data(), G, T, packed[size_t(i)], y.data(), N, pool, kernel);
      });
      fmt::print("| fp8 {} | {} | {:.1f} | {:.2f} | {:.1f} |\n", kernel == Fp8Kernel::Best ? fp8_gemm_isa() : "avx2", T,
                 gb / t, t_read / t, 2.0 * double(T) * double(n_weights * N * K) / t / 1e9);
    }
  }
  {
    const int64_t T = 1, nw = int64_t(packed16.size());
    std::vector<float> x(static_cast<size_t>(K), 1.0f), y(static_cast<size_t>(N));
    const double t = best_of(reps, [&] {
      for (int64_t i = 0; i < nw; ++i) dense_gemm(x.data(), K, T, packed16[size_t(i)], y.data(), N, pool);
    });
    fmt::print("| bf16 | 1 | {:.1f} | {:.2f} | {:.1f} |\n", 2.0 * double(nw * N * K) / 1e9 / t,
               (2.0 * double(nw * N * K) / 1e9 / t) / (gb / t_read), 2.0 * double(nw * N * K) / t / 1e9);
  }
  // Prefill: one weight, many tokens (compute bound).
  for (int64_t T : {64, 512}) {
    std::vector<float> xq(size_t(T * K), 1.0f), xs(size_t(T * G), 1.0f), y(size_t(T * N));
    for (auto kernel : {Fp8Kernel::Best, Fp8Kernel::Avx2}) {
      const double t = best_of(reps, [&] {
        for (int i = 0; i < 8; ++i) fp8_gemm(xq.data(), K, xs.data(), G, T, packed[size_t(i % n_weights)], y.data(), N, pool, kernel);
      });
      fmt::print("| fp8 {} | {} | - | - | {:.1f} |\n", kernel == Fp8Kernel::Best ? fp8_gemm_isa() : "avx2", T,
                 8 * 2.0 * double(T * N * K) / t / 1e9);
    }
  }
  return 0;
}
