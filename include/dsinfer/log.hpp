// dsinfer — the library's log: what it reports while it works (a load's stages and choices, overrides taken from the
// environment, fallbacks), delivered to a callback the application installs. Quiet by default.
#pragma once
#include <functional>
#include <string_view>

#include "dsinfer/export.hpp"

namespace dsinfer {

// Severity, lowest first. The numbers are those of the C API's DSINFER_LOG_* and Python's dsinfer.LogLevel.
enum class LogLevel { Debug = 0, Info = 1, Warn = 2, Error = 3, Off = 4 };

// Receives one message (no trailing newline) at or above the threshold. It may be called from any thread that calls
// into dsinfer (a load's thread, a generation's thread, an engine's), possibly from several at once: make it
// thread-safe. It must not call set_log_callback.
using LogCallback = std::function<void(LogLevel level, std::string_view message)>;

// Installs the process-wide log callback and its threshold (messages below min_level are not even formatted);
// an empty callback, or min_level Off, silences the log again. Default: no callback, nothing is logged.
// Override from the environment: DSINFER_LOG=debug|info|warn|error sets the threshold whatever min_level says, and
// without a callback sends the messages to stderr (a way to see what a program built on dsinfer does without
// changing it).
DSINFER_CXX_API void set_log_callback(LogCallback callback, LogLevel min_level = LogLevel::Info);

// "debug", "info", "warn", "error", "off".
DSINFER_CXX_API const char* log_level_name(LogLevel level);

}  // namespace dsinfer
