// Command-line numbers, shared by the tools' flag parsers (dsinfer, dsinfer serve, --cuda, eval_chat): the whole
// string as one number in [lo, hi] (std::from_chars: no leading spaces or '+', nothing after it), else nullopt, so
// each caller reports the flag by name (std::stoll accepts "12abc" and reports only "stoll").
#pragma once
#include <charconv>
#include <optional>
#include <string_view>

namespace dsinfer::tools {

template <class T>
std::optional<T> parse_number(std::string_view s, T lo, T hi) {
  T v{};
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size() || !(v >= lo && v <= hi)) return std::nullopt;
  return v;
}

}  // namespace dsinfer::tools
