#include "util/log.hpp"

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>

namespace dsinfer {
namespace {

// DSINFER_LOG's level, read once: -1 when unset (or not a level name).
int environment_threshold() {
  static const int level = [] {
    const char* e = std::getenv("DSINFER_LOG");
    if (!e) return -1;
    for (int l = int(LogLevel::Debug); l <= int(LogLevel::Off); ++l)
      if (std::strcmp(e, log_level_name(LogLevel(l))) == 0) return l;
    return -1;
  }();
  return level;
}

// The callback is swapped under the mutex and called through a shared_ptr copy, so a message being delivered while
// another thread replaces the callback still reaches a live function, and callbacks run without the lock held.
struct LogState {
  std::mutex mutex;
  std::shared_ptr<const LogCallback> callback;
  // The effective threshold: what log_enabled compares against. Off until a callback or DSINFER_LOG says otherwise.
  std::atomic<int> threshold{int(LogLevel::Off)};
  LogState() {
    if (environment_threshold() >= 0) threshold.store(environment_threshold(), std::memory_order_relaxed);
  }
};

LogState& state() {
  static LogState s;  // constructed on first use: safe from static initialisers in other libraries
  return s;
}

}  // namespace

const char* log_level_name(LogLevel level) {
  switch (level) {
    case LogLevel::Debug: return "debug";
    case LogLevel::Info: return "info";
    case LogLevel::Warn: return "warn";
    case LogLevel::Error: return "error";
    case LogLevel::Off: return "off";
  }
  return "?";
}

void set_log_callback(LogCallback callback, LogLevel min_level) {
  LogState& s = state();
  std::lock_guard lock(s.mutex);
  s.callback = callback ? std::make_shared<const LogCallback>(std::move(callback)) : nullptr;
  int threshold = s.callback ? int(min_level) : int(LogLevel::Off);
  if (environment_threshold() >= 0) threshold = environment_threshold();  // the environment overrides
  s.threshold.store(threshold, std::memory_order_relaxed);
}

bool log_enabled(LogLevel level) {
  return level != LogLevel::Off && int(level) >= state().threshold.load(std::memory_order_relaxed);
}

void log_message(LogLevel level, std::string_view message) {
  if (!log_enabled(level)) return;
  LogState& s = state();
  std::shared_ptr<const LogCallback> callback;
  {
    std::lock_guard lock(s.mutex);
    callback = s.callback;
  }
  if (callback) {
    // A throwing callback must not unwind through the library's code (it may be inside a destructor or noexcept).
    try {
      (*callback)(level, message);
    } catch (...) {
    }
    return;
  }
  // Only DSINFER_LOG enables logging without a callback: it asked for stderr.
  const std::string line = std::string("dsinfer ") + log_level_name(level) + ": " + std::string(message) + "\n";
  std::fwrite(line.data(), 1, line.size(), stderr);
}

}  // namespace dsinfer
