#include "util/json_input.hpp"

#include <fmt/format.h>

#include "util/utf8.hpp"

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
  // What is quoted may be the bytes that were refused for not being UTF-8 (nlohmann's messages repeat them): the
  // message itself must be text, since bindings turn it into a string (Python's str would fail to decode it), so
  // each byte that does not start a well-formed sequence becomes U+FFFD. Cut at a character, after max_chars bytes
  // of output at most.
  static constexpr std::string_view kReplacement = "\uFFFD";
  std::string out;
  size_t i = 0;
  while (i < s.size()) {
    const size_t len = utf8_sequence(s, i);
    const std::string_view piece = len ? s.substr(i, len) : kReplacement;
    if (out.size() + piece.size() > max_chars) break;
    out += piece;
    i += len ? len : 1;
  }
  if (i < s.size()) out += "...";
  return out;
}

std::string json_error_reason(const std::exception& e) { return excerpt(e.what()); }

}  // namespace dsinfer
