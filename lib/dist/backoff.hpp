// How a rank waits for its peers (the MPI and NCCL communicators): a short spin, since a reply usually comes within
// microseconds, then sleeps in steps growing to 1 ms (10 ms when idle, a worker waiting for its next command).
// Ranks often share cores (tests run four on two, a GPU rank's host threads share the CPU with the others), and a
// busy-waiting rank would take the compute time of the rank it waits for.
#pragma once
#include <algorithm>
#include <chrono>
#include <thread>

namespace dsinfer {

class Backoff {
 public:
  explicit Backoff(bool idle) : max_pause_(idle ? 10000 : 1000) {}
  // Seconds since the wait began.
  double waited_s() const { return std::chrono::duration<double>(clock::now() - start_).count(); }
  void pause() {
    if (clock::now() - start_ < std::chrono::microseconds(200)) {
      std::this_thread::yield();
      return;
    }
    pause_ = std::min(max_pause_, pause_ + std::chrono::microseconds(20));
    std::this_thread::sleep_for(pause_);
  }

 private:
  using clock = std::chrono::steady_clock;
  clock::time_point start_ = clock::now();
  std::chrono::microseconds pause_{0};
  std::chrono::microseconds max_pause_;
};

}  // namespace dsinfer
