// The thread pool's limits and its construction when a thread cannot be created (issue 20: model load hung).
#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <system_error>
#include <thread>
#include <vector>

#include "dsinfer/error.hpp"
#include "util/thread_pool.hpp"

using namespace dsinfer;

TEST_CASE("a worker that cannot be started fails the construction with an error and stops the others",
          "[thread_pool]") {
  for (int fail_at : {0, 1, 5}) {
    int started = 0;
    std::atomic<int> exited{0};
    auto start = [&](std::function<void()> body) {
      if (started == fail_at) throw std::system_error(EAGAIN, std::generic_category(), "pthread_create");
      ++started;
      return std::thread([&exited, body = std::move(body)] {
        body();
        ++exited;
      });
    };
    try {
      ThreadPool pool(8, start);
      FAIL("the pool was constructed");
    } catch (const Error& e) {
      CHECK(e.code() == ErrorCode::OutOfMemory);
      CHECK(std::string(e.what()).find("cannot start thread") != std::string::npos);
    }
    CHECK(exited == started);  // every worker that started has been joined
  }
}

TEST_CASE("n_threads is 0 (all) to kMaxThreads", "[thread_pool]") {
  CHECK_THROWS_AS(ThreadPool(-1), Error);
  CHECK_THROWS_AS(ThreadPool(ThreadPool::kMaxThreads + 1), Error);
  ThreadPool all(0);
  CHECK(all.size() >= 1);
  CHECK(all.size() <= ThreadPool::kMaxThreads);
  ThreadPool three(3);
  std::atomic<int64_t> sum{0};
  three.parallel_for(100, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) sum += i;
  });
  CHECK(sum == 4950);
}

TEST_CASE("a loop body may take its worker index: 0 on the calling thread, one chunk per index", "[thread_pool]") {
  ThreadPool pool(4);
  for (int64_t n : {1, 3, 4, 100}) {
    std::vector<std::atomic<int>> chunks(4);
    std::vector<std::thread::id> threads(4);
    std::atomic<int> out_of_range{0};
    std::atomic<int64_t> covered{0};
    pool.parallel_for(n, [&](int64_t b, int64_t e, int worker) {
      if (worker < 0 || worker >= pool.size()) {
        ++out_of_range;
        return;
      }
      ++chunks[size_t(worker)];
      threads[size_t(worker)] = std::this_thread::get_id();
      covered += e - b;
    });
    INFO("n " << n);
    CHECK(out_of_range == 0);
    CHECK(covered == n);
    CHECK(chunks[0] == 1);  // chunk 0 always runs on the caller
    CHECK(threads[0] == std::this_thread::get_id());
    int used = 0;
    for (int w = 0; w < 4; ++w) {
      CHECK(chunks[size_t(w)] <= 1);
      used += chunks[size_t(w)];
      if (w > 0 && chunks[size_t(w)]) CHECK(threads[size_t(w)] != std::this_thread::get_id());
    }
    CHECK(used == std::min<int64_t>(n, 4));
  }
}
