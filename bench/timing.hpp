// Timing for the bench programs: wall-clock seconds, and the shortest of several runs (the figure least disturbed
// by whatever else the machine does).
#pragma once
#include <algorithm>
#include <chrono>

namespace dsinfer::bench {

inline double wall_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// The shortest of `reps` runs of f, in seconds of `clock`.
template <class F, class Clock = double (*)()>
double best_of(int reps, F&& f, Clock clock = wall_seconds) {
  double best = 1e30;
  for (int r = 0; r < reps; ++r) {
    const double t0 = clock();
    f();
    best = std::min(best, clock() - t0);
  }
  return best;
}

}  // namespace dsinfer::bench
