#include "util/json_input.hpp"

#include <fmt/format.h>

namespace dsinfer {

int json_nesting_depth(std::string_view text, int stop_above) {
  int depth = 0, deepest = 0;
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\') ++i;  // the escaped byte cannot end the string
      else if (c == '"') in_string = false;
      continue;
    }
    switch (c) {
      case '"': in_string = true; break;
      case '[':
      case '{':
        if (++depth > deepest && (deepest = depth) > stop_above) return deepest;
        break;
      case ']':
      case '}': --depth; break;  // unbalanced text is the parser's to report
      default: break;
    }
  }
  return deepest;
}

void check_json_depth(std::string_view text) {
  if (json_nesting_depth(text) > kMaxJsonDepth)
    throw JsonInputError(fmt::format("arrays and objects nest deeper than {} levels (dsinfer's limit)", kMaxJsonDepth));
}

std::string excerpt(std::string_view s, std::size_t max_chars) {
  if (s.size() <= max_chars) return std::string(s);
  size_t n = max_chars;
  while (n > 0 && (static_cast<unsigned char>(s[n]) & 0xC0) == 0x80) --n;  // not inside a UTF-8 sequence
  return std::string(s.substr(0, n)) + "...";
}

std::string json_error_reason(const std::exception& e) { return excerpt(e.what()); }

}  // namespace dsinfer
