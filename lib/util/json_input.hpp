// JSON that comes from outside (files, requests, model output) parsed within fixed bounds, one way everywhere.
//
// nlohmann's parser itself is iterative, but dumping, copying and comparing a value recurse once per nesting
// level, and so do our own walkers (chat encoder, schema converters): a 100k-deep "[[[[..." would overflow the
// stack long after parsing succeeded. So nesting is bounded before anything is built, and every nlohmann error
// (syntax, a number out of range such as 1e400, invalid UTF-8, a wrong type) becomes a JsonInputError whose text
// is short enough to quote in a message.
#pragma once
#include <cstddef>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <string_view>

namespace dsinfer {

// The deepest nesting of arrays and objects accepted in any JSON input (docs/errors.md). Real inputs stay under
// 20 (a tool schema inside a request inside a message list); 128 leaves room while keeping every recursive walk
// of a value far from the stack's end.
inline constexpr int kMaxJsonDepth = 128;
// The longest excerpt of a value or of a parser's message quoted in an error message.
inline constexpr std::size_t kMaxQuotedChars = 200;

// Why a JSON input was refused; what() is the reason only ("not valid JSON: ...", "... nested deeper than ...").
// Callers catch it and throw dsinfer::Error with their own code and the name of the file, field or request.
class JsonInputError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The deepest nesting of arrays/objects in `text`, counting stops once past `stop_above`. One linear pass over
// the bytes that skips string contents; it does not validate (the parser does), so it is safe on any input.
int json_nesting_depth(std::string_view text, int stop_above = kMaxJsonDepth);
// Throws JsonInputError when arrays/objects in `text` nest deeper than kMaxJsonDepth.
void check_json_depth(std::string_view text);

// `s` cut to kMaxQuotedChars bytes (at a UTF-8 character boundary) with "..." appended when cut.
std::string excerpt(std::string_view s, std::size_t max_chars = kMaxQuotedChars);

// The reason text of a nlohmann exception, cut for quoting.
std::string json_error_reason(const std::exception& e);

// A value as compact JSON for an error message: cut to kMaxQuotedChars, invalid UTF-8 replaced (dump would throw).
template <class Json>
std::string json_excerpt(const Json& v) {
  return excerpt(v.dump(-1, ' ', false, Json::error_handler_t::replace));
}

// Parses JSON input within the bounds above. Errors: JsonInputError.
template <class Json = nlohmann::json>
Json parse_json_input(std::string_view text) {
  check_json_depth(text);
  try {
    return Json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw JsonInputError(json_error_reason(e));
  }
}

}  // namespace dsinfer
