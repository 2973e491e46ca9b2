// Hostile chat inputs (issue 20): deep JSON in messages, tools and arguments; numbers out of range; completions
// that are not UTF-8; completions big enough to expose quadratic parsing.
#include <catch2/catch.hpp>

#include <ctime>
#include <string>

#include "dsinfer/chat.hpp"
#include "dsinfer/error.hpp"

using namespace dsinfer;

namespace {

std::string nested(size_t depth) { return std::string(depth, '[') + std::string(depth, ']'); }

Error error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e;
  }
  FAIL("no error");
  return Error(ErrorCode::Ok, "");
}

const std::string kDsml = "｜DSML｜";

}  // namespace

TEST_CASE("chat JSON nested 100k deep is an error, not a stack overflow", "[chat][limits]") {
  const std::string deep = nested(100000);
  Error e = error_of([&] { chat_messages_from_json(deep); });
  CHECK(e.code() == ErrorCode::Format);
  CHECK_THAT(e.what(), Catch::Contains("nest deeper than 128 levels"));
  e = error_of([&] { chat_messages_from_json(R"({"messages": [{"role": "user", "content": "x"}], "tools": )" + deep + "}"); });
  CHECK_THAT(e.what(), Catch::Contains("nest deeper than 128 levels"));
  // Built in C++ (not parsed from one JSON text): the fields are parsed when the prompt is rendered.
  ChatMessage sys;
  sys.role = "system";
  sys.content = "";
  sys.tools_json = "[{\"type\": \"function\", \"function\": {\"name\": \"f\", \"parameters\": " + deep + "}}]";
  e = error_of([&] { encode_chat({sys}); });
  CHECK(e.code() == ErrorCode::InvalidArgument);
  CHECK_THAT(e.what(), Catch::Contains("message 0: tools is not valid JSON") && Catch::Contains("128 levels"));
  ChatMessage a;
  a.role = "assistant";
  a.content = "";
  a.tool_calls.push_back({"id", "f", "{\"x\": " + deep + "}"});
  ChatMessage u;
  u.role = "user";
  u.content = "hi";
  e = error_of([&] { encode_chat({u, a}); });
  CHECK_THAT(e.what(), Catch::Contains("tool call \"f\" are not JSON") && Catch::Contains("128 levels"));
  CHECK_THROWS_AS(python_json_dumps(deep), Error);
}

TEST_CASE("numbers out of range and invalid UTF-8 in chat JSON are errors, not nlohmann exceptions", "[chat][limits]") {
  Error e = error_of([] { chat_messages_from_json(R"([{"role": "user", "content": "x", "n": 1e400}])"); });
  CHECK(e.code() == ErrorCode::Format);
  CHECK_THAT(e.what(), Catch::Contains("messages are not valid JSON"));
  ChatMessage a;
  a.role = "assistant";
  a.content = "";
  a.tool_calls.push_back({"id", "f", "{\"x\": 1e400}"});
  ChatMessage u;
  u.role = "user";
  u.content = "hi";
  CHECK(error_of([&] { encode_chat({u, a}); }).code() == ErrorCode::InvalidArgument);
  CHECK(error_of([] { chat_messages_from_json("[{\"role\": \"user\", \"content\": \"\xff\"}]"); }).code() ==
        ErrorCode::Format);
}

TEST_CASE("parse_completion refuses text that is not UTF-8", "[chat][limits]") {
  const Error e = error_of([] { parse_completion("ok \xc3\x28<｜end▁of▁sentence｜>", ThinkingMode::Chat); });
  CHECK(e.code() == ErrorCode::InvalidArgument);
  CHECK_THAT(e.what(), Catch::Contains("not valid UTF-8 at byte 3"));
}

TEST_CASE("parse_completion is linear: 40k parameters in one invoke", "[chat][limits]") {
  // Before: each parameter rescanned to the end of the text for the invoke close, and compared its name with
  // every earlier one (75 s for 2.5 MB).
  std::string text = "\n\n<" + kDsml + "function_calls>\n<" + kDsml + "invoke name=\"f\">\n";
  const int n = 40000;
  for (int k = 0; k < n; ++k)
    text += "<" + kDsml + "parameter name=\"p" + std::to_string(k) + "\" string=\"true\">" + std::string(20, 'v') +
            "</" + kDsml + "parameter>\n";
  text += "</" + kDsml + "invoke>\n</" + kDsml + "function_calls><｜end▁of▁sentence｜>";
  // CPU time, not wall time: on a loaded machine (CI neighbours, a shared box) the wall clock measures the others.
  const std::clock_t t0 = std::clock();
  const ChatMessage m = parse_completion(text, ThinkingMode::Chat);
  const double s = double(std::clock() - t0) / CLOCKS_PER_SEC;
  REQUIRE(m.tool_calls.size() == 1);
  CHECK(m.tool_calls[0].arguments.size() > size_t(n) * 20);
  CHECK(s < 5.0);
  // Duplicates are still found, with the set.
  std::string dup = text;
  dup.replace(dup.find("name=\"p1\""), 9, "name=\"p0\"");
  CHECK_THAT(error_of([&] { parse_completion(dup, ThinkingMode::Chat); }).what(), Catch::Contains("duplicate parameter \"p0\""));
}
