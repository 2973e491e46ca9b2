#include <catch2/catch.hpp>
#include <string>

#include "util/json_input.hpp"
#include "util/utf8.hpp"

using namespace dsinfer;

namespace {
std::string nested(size_t depth, char open = '[', char close = ']') {
  return std::string(depth, open) + std::string(depth, close);
}
}  // namespace

TEST_CASE("JSON input nested 100k deep is refused before it is built, with the limit in the message", "[json]") {
  // Parsed as is, this value overflows the stack when dumped, copied or destroyed recursively.
  CHECK_THROWS_MATCHES(parse_json_input(nested(100000)), JsonInputError,
                       Catch::Message("arrays and objects nest deeper than 128 levels (dsinfer's limit)"));
  CHECK_THROWS_AS(parse_json_input<nlohmann::ordered_json>("{\"a\":" + nested(200000, '{', '}') + "}"), JsonInputError);
  CHECK_THROWS_AS(check_json_depth(std::string(1 << 20, '[')), JsonInputError);  // unbalanced: still refused
}

TEST_CASE("JSON nesting up to the limit parses; brackets inside strings do not count", "[json]") {
  CHECK(parse_json_input(nested(kMaxJsonDepth)).is_array());
  CHECK_THROWS_AS(parse_json_input(nested(kMaxJsonDepth + 1)), JsonInputError);
  const std::string in_string = "[\"" + std::string(1000, '[') + "\\\"" + std::string(1000, '{') + "\"]";
  CHECK(parse_json_input(in_string).size() == 1);
  CHECK(json_nesting_depth("{\"a\": [1, {\"b\": []}]}") == 4);
}

TEST_CASE("every nlohmann error becomes a JsonInputError with a short reason", "[json]") {
  CHECK_THROWS_AS(parse_json_input("[1e400]"), JsonInputError);       // a number out of range: out_of_range, not parse_error
  CHECK_THROWS_AS(parse_json_input("[\"\xff\"]"), JsonInputError);    // invalid UTF-8
  CHECK_THROWS_AS(parse_json_input("{\"a\": }"), JsonInputError);
  try {
    parse_json_input("\"" + std::string(100000, 'x'));  // an unterminated string: nlohmann quotes all of it
    FAIL("no error");
  } catch (const JsonInputError& e) {
    CHECK(std::string(e.what()).size() <= kMaxQuotedChars + 3);
  }
}

TEST_CASE("excerpts cut at a character boundary and say they were cut", "[json]") {
  CHECK(excerpt("short") == "short");
  const std::string s = "a" + std::string(100, '\xc3') ;  // not UTF-8 at all: still cut, never overrun
  CHECK(excerpt(s, 10).size() <= 13);
  std::string e;
  for (int i = 0; i < 100; ++i) e += "\xc3\xa9";  // é x 100
  const std::string cut = excerpt(e, 5);
  CHECK(cut == "\xc3\xa9\xc3\xa9...");
  CHECK(json_excerpt(nlohmann::json(std::string(1000, 'y'))).size() <= kMaxQuotedChars + 3);
  CHECK(json_excerpt(nlohmann::json(std::string("\xff"))) == "\"\xef\xbf\xbd\"");  // dump would throw on invalid UTF-8
  // Bytes that are not UTF-8 (nlohmann's messages quote the bytes they refused) come out as U+FFFD: a message is text.
  CHECK(excerpt("a\xff\xc3(\xed\xa0\x80" "b") ==
        "a\xef\xbf\xbd\xef\xbf\xbd(\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd" "b");
  CHECK(find_invalid_utf8(excerpt(s, 10)) == std::string_view::npos);
}

TEST_CASE("find_invalid_utf8 finds the first ill-formed sequence", "[utf8]") {
  CHECK(find_invalid_utf8("plain ascii") == std::string_view::npos);
  CHECK(find_invalid_utf8("\xc3\xa9\xe4\xb8\xad\xf0\x9f\x98\x80") == std::string_view::npos);
  CHECK(find_invalid_utf8("ab\xff") == 2);
  CHECK(find_invalid_utf8("a\xc3") == 1);              // truncated
  CHECK(find_invalid_utf8("\xc0\xaf") == 0);           // overlong
  CHECK(find_invalid_utf8("\xed\xa0\x80") == 0);       // a surrogate
  CHECK(find_invalid_utf8("\xf4\x90\x80\x80") == 0);   // above U+10FFFF
  CHECK(find_invalid_utf8("x\xe4\xb8z") == 1);
}
