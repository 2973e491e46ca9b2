// The library's side of dsinfer/log.hpp: how code under lib/ writes a log message.
#pragma once
#include <fmt/format.h>

#include <string_view>
#include <utility>

#include "dsinfer/log.hpp"

namespace dsinfer {

// Whether a message at `level` would reach anyone: a relaxed atomic load, so disabled logging costs nothing more.
bool log_enabled(LogLevel level);
// Delivers a message to the callback (or stderr under DSINFER_LOG), when enabled.
void log_message(LogLevel level, std::string_view message);

// Formats only when enabled: log_fmt(LogLevel::Info, "loaded {} layers", n).
template <class... Args>
void log_fmt(LogLevel level, fmt::format_string<Args...> format, Args&&... args) {
  if (log_enabled(level)) log_message(level, fmt::format(format, std::forward<Args>(args)...));
}

}  // namespace dsinfer
