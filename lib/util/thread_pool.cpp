#include "util/thread_pool.hpp"

#include <algorithm>
#include <chrono>

#include <fmt/format.h>

#include "dsinfer/error.hpp"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define DSINFER_CPU_RELAX() _mm_pause()
#else
#define DSINFER_CPU_RELAX() ((void)0)
#endif

namespace dsinfer {

namespace {
// A decode step is a few hundred short parallel loops: waking a sleeping thread (a futex wake and a context switch)
// costs as much as a small loop, so a thread waiting for the next job, or for the others to finish, first spins
// kSpinRounds pause instructions, then keeps polling for kYieldWindow with sched_yield between polls, and only then
// blocks. Yielding keeps it awake when its core is otherwise idle but hands the core over at once when other
// threads want it: a plain 20000-round spin made the test suite 7x slower under ctest -j2 by taking CPU from the
// other processes.
constexpr int kSpinRounds = 1000;
constexpr auto kYieldWindow = std::chrono::microseconds(500);

template <class Ready>
bool spin_then_yield(const Ready& ready) {
  for (int spin = 0; spin < kSpinRounds; ++spin) {
    if (ready()) return true;
    DSINFER_CPU_RELAX();
  }
  const auto until = std::chrono::steady_clock::now() + kYieldWindow;
  while (std::chrono::steady_clock::now() < until) {
    if (ready()) return true;
    std::this_thread::yield();
  }
  return ready();
}
}  // namespace

ThreadPool::ThreadPool(int n_threads)
    : ThreadPool(n_threads, [](std::function<void()> body) { return std::thread(std::move(body)); }) {}

int ThreadPool::resolve_threads(int n_threads) {
  return n_threads > 0 ? n_threads : int(std::clamp<unsigned>(std::thread::hardware_concurrency(), 1, kMaxThreads));
}

ThreadPool::ThreadPool(int n_threads, const ThreadStarter& start_thread) {
  if (n_threads < 0 || n_threads > kMaxThreads)
    throw Error(ErrorCode::InvalidArgument,
                fmt::format("n_threads must be 0 (all hardware threads) to {}, got {}", kMaxThreads, n_threads));
  n_threads_ = resolve_threads(n_threads);
  workers_.reserve(size_t(n_threads_ - 1));
  // A thread that cannot be created (a memory or process limit) must not leave the ones already started waiting on
  // a condition variable that is being destroyed (that hung the process): stop and join them, then report.
  try {
    for (int i = 1; i < n_threads_; ++i) workers_.push_back(start_thread([this, i] { worker_loop(i); }));
  } catch (const std::exception& e) {
    const size_t started = workers_.size();
    stop_workers();
    throw Error(ErrorCode::OutOfMemory, fmt::format("cannot start thread {} of {} ({}); ask for fewer threads",
                                                    started + 2, n_threads_, e.what()));
  }
}

ThreadPool::~ThreadPool() { stop_workers(); }

void ThreadPool::stop_workers() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
    generation_.fetch_add(1, std::memory_order_release);
  }
  work_cv_.notify_all();
  for (auto& t : workers_) t.join();
  workers_.clear();
}

void ThreadPool::parallel_for(int64_t n, LoopBody fn, int64_t grain) {
  if (n <= 0) return;
  grain = std::max<int64_t>(1, grain);
  const int64_t max_chunks = std::max<int64_t>(1, n / grain);
  const int chunks = int(std::min<int64_t>(n_threads_, max_chunks));
  if (chunks <= 1) {
    fn(0, n, 0);
    return;
  }
  const int64_t chunk = (n + chunks - 1) / chunks;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    job_ = &fn;
    job_n_ = n;
    job_chunk_ = chunk;
    job_chunks_ = chunks;
    error_ = nullptr;
    pending_.store(n_threads_ - 1, std::memory_order_relaxed);  // every worker reports, with or without a chunk
    generation_.fetch_add(1, std::memory_order_release);
  }
  work_cv_.notify_all();
  // The caller runs chunk 0.
  std::exception_ptr mine;
  try {
    fn(0, std::min(n, chunk), 0);
  } catch (...) {
    mine = std::current_exception();
  }
  spin_then_yield([this] { return pending_.load(std::memory_order_acquire) == 0; });
  {
    std::unique_lock<std::mutex> lock(mutex_);
    done_cv_.wait(lock, [this] { return pending_.load(std::memory_order_acquire) == 0; });
    job_ = nullptr;
  }
  if (mine) std::rethrow_exception(mine);
  if (error_) std::rethrow_exception(error_);
}

void ThreadPool::worker_loop(int index) {
  uint64_t seen = 0;
  for (;;) {
    spin_then_yield([&] { return generation_.load(std::memory_order_acquire) != seen; });
    const LoopBody* job;
    int64_t begin, end;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      work_cv_.wait(lock, [&] { return stop_ || generation_.load(std::memory_order_acquire) != seen; });
      if (stop_) return;
      seen = generation_.load(std::memory_order_acquire);
      job = index < job_chunks_ ? job_ : nullptr;  // fewer chunks than threads this time
      begin = index * job_chunk_;
      end = std::min(job_n_, begin + job_chunk_);
    }
    std::exception_ptr err;
    if (job && begin < end) {
      try {
        (*job)(begin, end, index);
      } catch (...) {
        err = std::current_exception();
      }
    }
    std::lock_guard<std::mutex> lock(mutex_);
    if (err && !error_) error_ = err;
    if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) done_cv_.notify_one();
  }
}

}  // namespace dsinfer
