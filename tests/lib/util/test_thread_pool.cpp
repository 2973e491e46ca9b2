// The thread pool's limits and its construction when a thread cannot be created (issue 20: model load hung).
#include <catch2/catch.hpp>

#include <atomic>
#include <cerrno>
#include <system_error>

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
