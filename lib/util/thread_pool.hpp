// A persistent pool of worker threads for data-parallel loops (created once per backend, not per op).
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <type_traits>
#include <vector>

namespace dsinfer {

// A non-owning reference to a callable fn(begin, end) or fn(begin, end, worker): what parallel_for takes. A
// std::function would copy the loop's lambda onto the heap whenever it captures more than two references (most ops'
// loops), once per op call; this only points at it. It must not outlive the callable: pass the lambda straight to
// parallel_for.
class LoopBody {
 public:
  template <class F, class = std::enable_if_t<!std::is_same_v<std::remove_cvref_t<F>, LoopBody>>>
  LoopBody(F&& fn) noexcept  // NOLINT(google-explicit-constructor): lambdas convert implicitly
      : fn_(const_cast<void*>(static_cast<const void*>(std::addressof(fn)))),
        call_([](void* f, int64_t begin, int64_t end, int worker) {
          auto& body = *static_cast<std::remove_reference_t<F>*>(f);
          if constexpr (std::is_invocable_v<decltype(body), int64_t, int64_t, int>) body(begin, end, worker);
          else body(begin, end);
        }) {}
  void operator()(int64_t begin, int64_t end, int worker) const { call_(fn_, begin, end, worker); }

 private:
  void* fn_;
  void (*call_)(void*, int64_t, int64_t, int);
};

class ThreadPool {
 public:
  // The most threads a pool takes: far above any CPU's useful count, low enough that a typo cannot ask for millions.
  static constexpr int kMaxThreads = 1024;

  // The thread count n_threads asks for: itself, or for 0 std::thread::hardware_concurrency() (1 to kMaxThreads).
  static int resolve_threads(int n_threads);

  // n_threads 0 means std::thread::hardware_concurrency() (at most kMaxThreads). The calling thread also works, so
  // n_threads - 1 workers are started. Throws Error(InvalidArgument) for n_threads < 0 or > kMaxThreads, and
  // Error(OutOfMemory) when a worker cannot be started (the ones already started are stopped first).
  explicit ThreadPool(int n_threads = 0);
  // The same, starting each worker with start_thread(body) instead of std::thread(body): lets a test make thread
  // creation fail part-way through.
  using ThreadStarter = std::function<std::thread(std::function<void()> body)>;
  ThreadPool(int n_threads, const ThreadStarter& start_thread);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return n_threads_; }

  // Calls fn(begin, end) over a split of [0, n) into contiguous chunks, at most one per thread, and returns when
  // all are done. Chunks are at least `grain` long. Not reentrant: fn must not call parallel_for on this pool.
  // An exception thrown by fn is rethrown here (the first one).
  // fn may take a third argument, `int worker`: the index in [0, size()) of the thread running the chunk, 0 being
  // the thread that called parallel_for. No two chunks of one loop share an index, so per-worker scratch indexed by
  // it (the CPU backend's ScratchArena) is the chunk's own.
  void parallel_for(int64_t n, LoopBody fn, int64_t grain = 1);

 private:
  void worker_loop(int index);
  void stop_workers();

  int n_threads_;
  std::vector<std::thread> workers_;
  std::mutex mutex_;
  std::condition_variable work_cv_, done_cv_;
  const LoopBody* job_ = nullptr;
  int64_t job_n_ = 0, job_chunk_ = 0;
  int job_chunks_ = 0;
  std::atomic<uint64_t> generation_{0};  // bumped (under mutex_) for every job
  std::atomic<int> pending_{0};          // workers that have not reported on the current job
  std::exception_ptr error_;
  bool stop_ = false;
};

}  // namespace dsinfer
