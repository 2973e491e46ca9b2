// The log (include/dsinfer/log.hpp, lib/util/log.hpp): quiet until a callback is installed, a threshold that also
// skips formatting, a throwing callback contained, and a callback replaced while other threads log.
#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "util/log.hpp"

using namespace dsinfer;

namespace {
// Counts how often it is formatted: log_fmt must not format a message nobody receives.
struct CountsFormatting {
  int* n;
};
}  // namespace

template <>
struct fmt::formatter<CountsFormatting> : fmt::formatter<int> {
  auto format(const CountsFormatting& c, format_context& ctx) const {
    return fmt::formatter<int>::format(++*c.n, ctx);
  }
};

TEST_CASE("log: quiet by default, a callback gets what is at or above its level", "[log]") {
  set_log_callback(nullptr);
  CHECK_FALSE(log_enabled(LogLevel::Error));
  int formatted = 0;
  log_fmt(LogLevel::Error, "{}", CountsFormatting{&formatted});
  CHECK(formatted == 0);

  std::vector<std::pair<LogLevel, std::string>> got;
  set_log_callback([&](LogLevel l, std::string_view m) { got.emplace_back(l, std::string(m)); }, LogLevel::Warn);
  log_fmt(LogLevel::Info, "info {}", CountsFormatting{&formatted});
  log_fmt(LogLevel::Warn, "warn {}", 7);
  log_fmt(LogLevel::Error, "error {}", CountsFormatting{&formatted});
  log_message(LogLevel::Off, "never");  // Off is a threshold, not a level to log at
  REQUIRE(got.size() == 2);
  CHECK(got[0] == std::pair<LogLevel, std::string>(LogLevel::Warn, "warn 7"));
  CHECK(got[1] == std::pair<LogLevel, std::string>(LogLevel::Error, "error 1"));
  CHECK(formatted == 1);  // the info message was never formatted

  set_log_callback([&](LogLevel, std::string_view) { got.clear(); }, LogLevel::Off);
  log_message(LogLevel::Error, "silenced");
  CHECK(got.size() == 2);
  set_log_callback(nullptr);
  CHECK(std::string(log_level_name(LogLevel::Debug)) == "debug");
  CHECK(std::string(log_level_name(LogLevel::Warn)) == "warn");
}

TEST_CASE("log: a throwing callback does not unwind into the library", "[log]") {
  set_log_callback([](LogLevel, std::string_view) { throw std::runtime_error("callback failed"); }, LogLevel::Debug);
  CHECK_NOTHROW(log_message(LogLevel::Info, "x"));
  set_log_callback(nullptr);
}

TEST_CASE("log: replacing the callback while other threads log", "[log]") {
  std::atomic<int> a{0}, b{0};
  std::atomic<bool> stop{false};
  set_log_callback([&](LogLevel, std::string_view) { ++a; }, LogLevel::Debug);
  std::vector<std::thread> threads;
  for (int t = 0; t < 2; ++t)
    threads.emplace_back([&] {
      while (!stop) log_fmt(LogLevel::Debug, "step {}", 1);
    });
  for (int i = 0; i < 200; ++i) {
    if (i % 2) set_log_callback([&](LogLevel, std::string_view) { ++a; }, LogLevel::Debug);
    else set_log_callback([&](LogLevel, std::string_view) { ++b; }, LogLevel::Debug);
  }
  // On a loaded machine the loggers may not have run yet: give them up to 10 s to reach a callback.
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (a + b == 0 && std::chrono::steady_clock::now() < until) std::this_thread::yield();
  stop = true;
  for (auto& t : threads) t.join();
  set_log_callback(nullptr);
  CHECK(a + b > 0);
}
