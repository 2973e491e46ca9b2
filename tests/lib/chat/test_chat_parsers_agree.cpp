// The strict parser (parse_completion) and the streaming one (ChatStreamParser) accept the same completions, and
// give the same message for them: also where DeepSeek's parser accepts more than the format (the list at
// parse_completion in dsinfer/chat.hpp). The inputs below are the four differences fuzz_stream found
// (tests/fuzz/corpus/fuzz_stream/finding-*) and one found while reading the official patterns.
#include <catch2/catch.hpp>

#include <optional>

#include "dsinfer/chat.hpp"
#include "dsinfer/error.hpp"

using namespace dsinfer;
using Kind = ChatEvent::Kind;

namespace {

constexpr std::string_view kEos = "<｜end▁of▁sentence｜>";

struct Verdicts {
  std::optional<ChatMessage> strict;  // empty: parse_completion refused it
  std::string strict_error;
  bool stream_error = false;
  std::string stream_content;  // every ContentDelta (the raw text of a broken block included)
  ChatMessage streamed;
};

Verdicts parse_both(const std::string& text, size_t chunk) {
  Verdicts v;
  try {
    v.strict = parse_completion(text, ThinkingMode::Chat);
  } catch (const Error& e) {
    CHECK(e.code() == ErrorCode::Format);
    v.strict_error = e.what();
  }
  ChatStreamParser p(ThinkingMode::Chat);
  std::vector<ChatEvent> ev;
  for (size_t i = 0; i < text.size(); i += chunk) p.feed(std::string_view(text).substr(i, chunk), ev);
  p.finish(ev);
  for (const ChatEvent& e : ev) {
    v.stream_error |= e.kind == Kind::Error;
    if (e.kind == Kind::ContentDelta) v.stream_content += e.text;
  }
  v.streamed = p.message();
  return v;
}

// Both refuse `text`, the strict parser with a message containing `why`. The stream parser loses no text: a broken
// block comes back as content, raw; a value that is not JSON only gives an error event (the call still comes).
void both_refuse(const std::string& text, const std::string& why, bool block_as_content = true) {
  for (size_t chunk : {size_t(1), size_t(3), size_t(7), text.size()}) {
    INFO(text << "\nchunk " << chunk);
    const Verdicts v = parse_both(text, chunk);
    CHECK_FALSE(v.strict.has_value());
    CHECK_THAT(v.strict_error, Catch::Contains(why));
    CHECK(v.stream_error);
    CHECK(v.stream_content == (block_as_content ? text : text.substr(0, text.find("\n\n<｜DSML｜function_calls"))));
  }
}

// Both accept `text` with the same tool calls; returns the strict parse.
ChatMessage both_accept(const std::string& text) {
  std::optional<ChatMessage> first;
  for (size_t chunk : {size_t(1), size_t(3), size_t(7), text.size()}) {
    INFO(text << "\nchunk " << chunk);
    const Verdicts v = parse_both(text, chunk);
    REQUIRE(v.strict.has_value());
    REQUIRE_FALSE(v.stream_error);
    CHECK(v.stream_content == *v.strict->content);
    REQUIRE(v.streamed.tool_calls.size() == v.strict->tool_calls.size());
    for (size_t k = 0; k < v.strict->tool_calls.size(); ++k) {
      CHECK(v.streamed.tool_calls[k].name == v.strict->tool_calls[k].name);
      CHECK(v.streamed.tool_calls[k].arguments == v.strict->tool_calls[k].arguments);
    }
    first = v.strict;
  }
  return *first;
}

std::string call_block(const std::string& invoke_and_params, bool close = true) {
  return "ok\n\n<｜DSML｜function_calls>\n" + invoke_and_params +
         (close ? "</｜DSML｜function_calls>" + std::string(kEos) : "");
}

const std::string kParam = "<｜DSML｜parameter name=\"city\" string=\"true\">Paris</｜DSML｜parameter>\n";

}  // namespace

TEST_CASE("parsers agree: a string=\"false\" value must be JSON", "[chat][stream][parse]") {
  both_refuse(call_block("<｜DSML｜invoke name=\"f\">\n<｜DSML｜parameter name=\"n\" string=\"false\">[1, 2</｜DSML｜parameter>\n"
                         "</｜DSML｜invoke>\n"),
              "has string=\"false\" but its value is not JSON", false);
  // Python's json.loads takes NaN; the arguments are JSON text, which has no NaN.
  both_refuse(call_block("<｜DSML｜invoke name=\"f\">\n<｜DSML｜parameter name=\"n\" string=\"false\">NaN</｜DSML｜parameter>\n"
                         "</｜DSML｜invoke>\n"),
              "not JSON", false);
  const ChatMessage m = both_accept(call_block(
      "<｜DSML｜invoke name=\"f\">\n<｜DSML｜parameter name=\"n\" string=\"false\"> {\"a\": [1, 2.5e3]}\n</｜DSML｜parameter>\n"
      "</｜DSML｜invoke>\n"));
  CHECK(m.tool_calls.at(0).arguments == "{\"n\":  {\"a\": [1, 2.5e3]}\n}");  // as written: it is JSON
}

TEST_CASE("parsers agree: a name with a quote, a line break or ｜DSML｜ is refused", "[chat][stream][parse]") {
  // fuzz finding 3823ae90: a mistyped parameter tag that DeepSeek's lazy name pattern reads into the tool's name.
  both_refuse(call_block("<｜DSML｜invoke name=\"get\">\n<｜DSML｜parameteke name=\"now\">\n</｜DSML｜invoke>\n"),
              "the invoke name \"get\">\n<｜DSML｜parameteke name=\"now\" contains a quote");
  both_refuse(call_block("<｜DSML｜invoke name=\"we\"ird\">\n\n</｜DSML｜invoke>\n"), "contains a quote");
  both_refuse(call_block("<｜DSML｜invoke name=\"two\nlines\">\n\n</｜DSML｜invoke>\n"), "contains a line break");
  both_refuse(call_block("<｜DSML｜invoke name=\"a<｜DSML｜function_calls\">\n\n</｜DSML｜invoke>\n"), "contains \"｜DSML｜\"");
  both_refuse(call_block("<｜DSML｜invoke name=\"f\">\n<｜DSML｜parameter name=\"c\"ity\" string=\"true\">x</｜DSML｜parameter>\n"
                         "</｜DSML｜invoke>\n"),
              "the parameter name \"c\"ity\" contains a quote");
  both_refuse(call_block("<｜DSML｜invoke name=\"f\">\n<｜DSML｜parameter name=\"c\nity\" string=\"true\">x</｜DSML｜parameter>\n"
                         "</｜DSML｜invoke>\n"),
              "contains a line break");
  both_refuse(call_block("<｜DSML｜invoke name=\"f\">\n<｜DSML｜parameter name=\"<｜DSML｜invoke\" string=\"true\">x</｜DSML｜parameter>\n"
                         "</｜DSML｜invoke>\n"),
              "contains \"｜DSML｜\"");
  // Quotes, markers and line breaks inside a value are text.
  const ChatMessage m = both_accept(call_block(
      "<｜DSML｜invoke name=\"get_weather\">\n<｜DSML｜parameter name=\"q\" string=\"true\">say \"<｜DSML｜invoke name=\"x\">\n\"</｜DSML｜parameter>\n"
      "</｜DSML｜invoke>\n"));
  CHECK(m.tool_calls.at(0).arguments == R"({"q": "say \"<｜DSML｜invoke name=\"x\">\n\""})");
}

TEST_CASE("parsers agree: a function-call block the text ends inside is refused", "[chat][stream][parse]") {
  // fuzz finding 96274222: the text ends after an invoke header; DeepSeek's loop stops with the end of the text and
  // returns the calls so far.
  const std::string invoke = "<｜DSML｜invoke name=\"get\">\n" + kParam + "</｜DSML｜invoke>\n";
  const std::string closed = call_block(invoke);
  for (const std::string& cut :
       {call_block(invoke + "<｜DSML｜invoke name=\"now\">\n", false), call_block(invoke, false),
        call_block("<｜DSML｜invoke name=\"get\">\n" + kParam, false),
        call_block("<｜DSML｜invoke name=\"get\">\n", false), std::string("ok\n\n<｜DSML｜function_calls")})
    both_refuse(cut, "not closed with </｜DSML｜function_calls>");
  // A closed block may leave out the end of sentence, as DeepSeek's parser allows; not leave half of it.
  CHECK(both_accept(closed.substr(0, closed.size() - kEos.size())).tool_calls.size() == 1);
  const Verdicts half = parse_both(closed.substr(0, closed.size() - 6), 5);
  CHECK_FALSE(half.strict.has_value());
  CHECK(half.stream_error);
  CHECK(both_accept(closed).tool_calls.at(0).arguments == R"({"city": "Paris"})");
}

TEST_CASE("parsers agree: ASCII whitespace, and only that, between invoke and name=", "[chat][stream][parse]") {
  // fuzz finding 1171f7cb: "invoke \n\nname=", which DeepSeek's \s* takes.
  for (const std::string space : {"", " ", "  ", " \n\n", "\t", "\r\n", "\f\v"}) {
    const ChatMessage m = both_accept(call_block("<｜DSML｜invoke" + space + "name=\"get\">\n" + kParam + "</｜DSML｜invoke>\n"));
    CHECK(m.tool_calls.at(0).name == "get");
  }
  for (const std::string space : {"\u3000", "\u00a0", " \u2028"})
    both_refuse(call_block("<｜DSML｜invoke" + space + "name=\"get\">\n" + kParam + "</｜DSML｜invoke>\n"),
                "malformed invoke name");
}

TEST_CASE("parsers agree: a parameter value ends right before </｜DSML｜parameter", "[chat][stream][parse]") {
  // DeepSeek's "(.*?)<$" also matches "<\n" before /｜DSML｜parameter and drops the newline.
  both_refuse(call_block("<｜DSML｜invoke name=\"f\">\n<｜DSML｜parameter name=\"a\" string=\"true\">v<\n/｜DSML｜parameter>\n"
                         "</｜DSML｜invoke>\n"),
              "malformed parameter");
  both_refuse(call_block("<｜DSML｜invoke name=\"f\">\n<｜DSML｜parameter name=\"a\" string=\"true\">v/｜DSML｜parameter>x<"
                         "/｜DSML｜parameter>\n</｜DSML｜invoke>\n"),
              "malformed parameter");
  const ChatMessage m = both_accept(call_block(
      "<｜DSML｜invoke name=\"f\">\n<｜DSML｜parameter name=\"a\" string=\"true\">v<\n</｜DSML｜parameter>\n</｜DSML｜invoke>\n"));
  CHECK(m.tool_calls.at(0).arguments == R"({"a": "v<\n"})");
}
