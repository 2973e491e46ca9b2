// The bench programs' numeric flags: the whole value as one number in [lo, hi] (tools/parse_number.hpp), else the
// program stops with exit status 2 and a message naming the flag (std::stoi accepted "12abc" and reported only
// "stoi", or ended the program with an uncaught exception).
#pragma once
#include <fmt/format.h>

#include <cstdlib>
#include <string_view>
#include <vector>

#include "parse_number.hpp"

namespace dsinfer::bench {

template <class T>
T number_flag(std::string_view flag, std::string_view value, T lo, T hi) {
  if (const auto v = tools::parse_number<T>(value, lo, hi)) return *v;
  fmt::print(stderr, "{}: a number in [{}, {}], not '{}'\n", flag, lo, hi, value);
  std::exit(2);
}

// "1,2,4": each item as number_flag reads it; at least one.
template <class T>
std::vector<T> number_list_flag(std::string_view flag, std::string_view value, T lo, T hi) {
  std::vector<T> out;
  for (size_t i = 0;;) {
    const size_t j = std::min(value.find(',', i), value.size());
    const auto v = tools::parse_number<T>(value.substr(i, j - i), lo, hi);
    if (!v) {
      fmt::print(stderr, "{}: comma-separated numbers in [{}, {}], not '{}'\n", flag, lo, hi, value);
      std::exit(2);
    }
    out.push_back(*v);
    if (j == value.size()) return out;
    i = j + 1;
  }
}

}  // namespace dsinfer::bench
