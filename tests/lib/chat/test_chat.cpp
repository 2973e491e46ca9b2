// The chat encoder and completion parser against DeepSeek's official encoding_dsv32.py, run by
// tests/reference/make_chat_goldens.py on the official test input, 150 generated and 20 handcrafted edge conversations
// (also split into context + tail), 369 assistant renderings and 3534 JSON texts for json.dumps.
#include <catch2/catch.hpp>
#include <fmt/format.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "dsinfer/chat.hpp"

using namespace dsinfer;
using ojson = nlohmann::ordered_json;
namespace fs = std::filesystem;

namespace {
const fs::path kDir = fs::path(DSINFER_SOURCE_DIR) / "tests" / "golden" / "chat";

std::string slurp(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  REQUIRE(f.good());
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

std::vector<ojson> read_jsonl(const fs::path& p) {
  std::ifstream f(p);
  REQUIRE(f.good());
  std::vector<ojson> out;
  std::string line;
  while (std::getline(f, line)) out.push_back(ojson::parse(line));
  return out;
}
}  // namespace

TEST_CASE("the official test conversation encodes byte for byte", "[chat][golden]") {
  const ojson in = ojson::parse(slurp(kDir / "official" / "test_input.json"));
  const auto messages = chat_messages_from_json(in.dump());
  ChatOptions o;
  o.thinking = ThinkingMode::Thinking;
  const std::string got = encode_chat(messages, o);
  const std::string want = slurp(kDir / "official" / "test_output.txt");
  CHECK(got.size() == want.size());
  CHECK(got == want);
}

TEST_CASE("generated conversations encode byte for byte, and are refused where the official encoder refuses",
          "[chat][golden]") {
  size_t equal = 0, refused_both = 0, n = 0, with_context = 0, context_equal = 0;
  const auto cases = read_jsonl(kDir / "cases.jsonl");
  for (const auto& c : cases) {
    ++n;
    ChatOptions o;
    o.thinking = c.at("thinking_mode") == "thinking" ? ThinkingMode::Thinking : ThinkingMode::Chat;
    o.drop_thinking = c.at("drop_thinking").get<bool>();
    // Edge cases carry their request as exact text (integers beyond 64 bits would not survive a parse here).
    const auto messages =
        chat_messages_from_json(c.contains("request_json") ? c.at("request_json").get<std::string>() : c.at("request").dump());
    INFO(c.at("name").get<std::string>());
    if (c.contains("context_output")) {
      // The same conversation as context (head) + messages (tail): what a session appends to its KV cache.
      const size_t k = c.at("context_len").get<size_t>();
      REQUIRE(k <= messages.size());
      const std::vector<ChatMessage> head(messages.begin(), messages.begin() + ptrdiff_t(k));
      const std::vector<ChatMessage> tail(messages.begin() + ptrdiff_t(k), messages.end());
      ++with_context;
      const std::string got = encode_chat(tail, o, head);
      CHECK(got == c.at("context_output").get<std::string>());
      context_equal += got == c.at("context_output").get<std::string>();
    }
    if (c.contains("output")) {
      const std::string got = encode_chat(messages, o);
      const std::string want = c.at("output").get<std::string>();
      if (got != want) {
        size_t k = 0;
        while (k < got.size() && k < want.size() && got[k] == want[k]) ++k;
        WARN("first difference at byte " << k << ": got " << ojson(got.substr(k, 60)).dump() << " want "
                                         << ojson(want.substr(k, 60)).dump());
      }
      equal += got == want;
    } else {
      try {
        encode_chat(messages, o);
      } catch (const Error& e) {
        refused_both += e.code() == ErrorCode::InvalidArgument;
      }
    }
  }
  const size_t refused =
      size_t(std::count_if(cases.begin(), cases.end(), [](const ojson& c) { return c.contains("error"); }));
  WARN(fmt::format("{} generated and edge conversations: {} encoded byte-for-byte equal, {} of {} refusals matched; "
                   "{} of {} split into context + tail equal",
                   n, equal, refused_both, refused, context_equal, with_context));
  CHECK(context_equal == with_context);
  CHECK(n >= 100);
  CHECK(equal + refused == n);
  CHECK(refused_both == refused);
}

TEST_CASE("parsing the official renderings of assistant messages gives the official parse and the message back",
          "[chat][golden][parse]") {
  size_t parsed = 0, rejected = 0, same_message = 0, n = 0;
  for (const auto& r : read_jsonl(kDir / "roundtrip.jsonl")) {
    ++n;
    const ThinkingMode mode = r.at("thinking_mode") == "thinking" ? ThinkingMode::Thinking : ThinkingMode::Chat;
    const std::string text = r.at("text");
    if (!r.contains("parsed")) {
      try {
        parse_completion(text, mode);
      } catch (const Error& e) {
        rejected += e.code() == ErrorCode::Format;
      }
      continue;
    }
    const ChatMessage m = parse_completion(text, mode);
    const ojson& want = r.at("parsed");
    bool ok = m.content.value_or("") == want.at("content").get<std::string>() &&
              m.reasoning_content.value_or("") == want.at("reasoning_content").get<std::string>() &&
              m.tool_calls.size() == want.at("tool_calls").size();
    for (size_t k = 0; ok && k < m.tool_calls.size(); ++k) {
      const auto& f = want.at("tool_calls")[k].at("function");
      ok = m.tool_calls[k].name == f.at("name").get<std::string>() &&
           m.tool_calls[k].arguments == f.at("arguments").get<std::string>();
    }
    INFO(text);
    CHECK(ok);
    parsed += ok;
    // And the original message: same content and calls (arguments compared as JSON values).
    const ojson& orig = r.at("message");
    bool same = m.content.value_or("") == orig.value("content", ojson("")).get<std::string>() ||
                (orig.contains("content") && orig["content"].is_null() && m.content.value_or("").empty());
    const auto orig_calls = orig.value("tool_calls", ojson::array());
    same = same && orig_calls.size() == m.tool_calls.size();
    for (size_t k = 0; same && k < m.tool_calls.size(); ++k)
      same = orig_calls[k]["function"]["name"] == m.tool_calls[k].name &&
             ojson::parse(orig_calls[k]["function"]["arguments"].get<std::string>()) == ojson::parse(m.tool_calls[k].arguments);
    if (mode == ThinkingMode::Thinking)
      same = same && m.reasoning_content.value_or("") == orig.value("reasoning_content", ojson("")).get<std::string>();
    same_message += same;
  }
  WARN(fmt::format("{} renderings: {} parse exactly as the official parser, {} rejected by both; {} give back the "
                   "original message",
                   n, parsed, rejected, same_message));
  CHECK(parsed + rejected == n);
  CHECK(same_message == parsed);
}

TEST_CASE("Python json.dumps formatting", "[chat][json]") {
  CHECK(python_json_dumps(R"({"a": [1, 2.5, -0.0, 1e-5, 2.5e20, 1e16, 100.0, 0.1, 12345.678, 1e-7, 3.141592653589793]})") ==
        R"({"a": [1, 2.5, -0.0, 1e-05, 2.5e+20, 1e+16, 100.0, 0.1, 12345.678, 1e-07, 3.141592653589793]})");
  CHECK(python_json_dumps(R"({"k":"caf\u00e9 \"q\" \\ \n\t\u0001 <x>","z":null,"b":[true,false,{}],"e":[]})") ==
        "{\"k\": \"café \\\"q\\\" \\\\ \\n\\t\\u0001 <x>\", \"z\": null, \"b\": [true, false, {}], \"e\": []}");
  CHECK(python_json_dumps("123456789012345678") == "123456789012345678");
  CHECK(python_json_dumps("1.5e300") == "1.5e+300");
}

TEST_CASE("Python json.dumps formatting agrees with the official to_json on thousands of texts", "[chat][json]") {
  size_t n = 0, equal = 0;
  for (const auto& c : read_jsonl(kDir / "json_dumps.jsonl")) {
    ++n;
    const std::string in = c.at("in"), want = c.at("out");
    std::string got;
    try {
      got = python_json_dumps(in);
    } catch (const Error& e) {
      got = std::string("error: ") + e.what();
    }
    INFO(in);
    CHECK(got == want);
    equal += got == want;
  }
  WARN(fmt::format("{} JSON texts: {} printed as json.dumps prints them", n, equal));
  CHECK(n > 3000);
}

TEST_CASE("bad conversations and completions give precise errors", "[chat][errors]") {
  auto err = [](auto&& fn) -> Error {
    try {
      fn();
    } catch (const Error& e) {
      return e;
    }
    FAIL("no error");
    return Error(ErrorCode::Ok, "");
  };
  Error e = err([] { encode_chat(chat_messages_from_json(R"([{"role": "wizard", "content": "x"}])")); });
  CHECK(e.code() == ErrorCode::InvalidArgument);
  CHECK_THAT(e.what(), Catch::Contains("message 0") && Catch::Contains("unknown role \"wizard\""));
  e = err([] {
    encode_chat(chat_messages_from_json(
        R"([{"role": "user", "content": "x"}, {"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": "{not json"}}]}])"));
  });
  CHECK(e.code() == ErrorCode::InvalidArgument);
  CHECK_THAT(e.what(), Catch::Contains("message 1") && Catch::Contains("tool call \"f\" are not JSON"));
  e = err([] { chat_messages_from_json("[{\"role\": 1}]"); });
  CHECK(e.code() == ErrorCode::Format);
  e = err([] { chat_messages_from_json("{\"messages\": [}"); });
  CHECK(e.code() == ErrorCode::Format);
  e = err([] { encode_chat(chat_messages_from_json(R"([{"role": "tool", "content": "r"}, {"role": "user", "content": "u"}])")); });
  CHECK_THAT(e.what(), Catch::Contains("tool"));
  e = err([] { parse_completion("reasoning without an end", ThinkingMode::Thinking); });
  CHECK(e.code() == ErrorCode::Format);
  CHECK_THAT(e.what(), Catch::Contains("</think>"));
  e = err([] { parse_completion("hi\n\n<｜DSML｜function_calls>\n<｜DSML｜invoke nam=\"f\">\n</｜DSML｜invoke>\n</｜DSML｜function_calls><｜end▁of▁sentence｜>", ThinkingMode::Chat); });
  CHECK_THAT(e.what(), Catch::Contains("byte") && Catch::Contains("invoke name"));
  // A well-formed completion with both kinds of parameters.
  const ChatMessage m = parse_completion(
      "ok\n\n<｜DSML｜function_calls>\n<｜DSML｜invoke name=\"f\">\n<｜DSML｜parameter name=\"a\" string=\"true\">x \"y\"</｜DSML｜parameter>\n"
      "<｜DSML｜parameter name=\"n\" string=\"false\">[1, 2]</｜DSML｜parameter>\n</｜DSML｜invoke>\n</｜DSML｜function_calls><｜end▁of▁sentence｜>",
      ThinkingMode::Chat);
  CHECK(*m.content == "ok");
  REQUIRE(m.tool_calls.size() == 1);
  CHECK(m.tool_calls[0].arguments == R"({"a": "x \"y\"", "n": [1, 2]})");
}

TEST_CASE("a request's top-level response_format renders as the official encoder renders it on the system message",
          "[chat][golden]") {
  // Every golden case whose system message (messages[0]) carries a response_format, with the response_format moved
  // to the top level of the request (where OpenAI clients send it): the prompt must not change.
  size_t checked = 0;
  for (const auto& c : read_jsonl(kDir / "cases.jsonl")) {
    if (c.contains("request_json") || !c.contains("output")) continue;
    ojson req = c.at("request");
    ojson& msgs = req.at("messages");
    if (msgs.empty() || msgs[0].value("role", "") != "system" || !msgs[0].contains("response_format")) continue;
    if (msgs[0]["response_format"].is_null()) continue;
    const ojson rf = msgs[0]["response_format"];
    msgs[0].erase("response_format");
    req["response_format"] = rf;  // (may move `msgs`: an ordered_json object is a vector)
    ChatOptions o;
    o.thinking = c.at("thinking_mode") == "thinking" ? ThinkingMode::Thinking : ThinkingMode::Chat;
    o.drop_thinking = c.at("drop_thinking").get<bool>();
    INFO(c.at("name").get<std::string>());
    CHECK(encode_chat(chat_messages_from_json(req.dump()), o) == c.at("output").get<std::string>());
    ++checked;
  }
  CHECK(checked >= 5);
  // Without a system message one is put first, as for tools; OpenAI's default {"type": "text"} asks for nothing.
  const auto m = chat_messages_from_json(
      R"({"messages": [{"role": "user", "content": "hi"}], "response_format": {"type": "json_object"}})");
  REQUIRE(m.size() == 2);
  CHECK(m[0].role == "system");
  CHECK(m[0].response_format_json == R"({"type": "json_object"})");
  CHECK(chat_messages_from_json(R"({"messages": [{"role": "user", "content": "hi"}], "response_format": {"type": "text"}})").size() == 1);
}

TEST_CASE("OpenAI content parts: text parts are joined, other kinds are refused naming the message", "[chat]") {
  const auto m = chat_messages_from_json(
      R"([{"role": "user", "content": [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}]}])");
  REQUIRE(m.size() == 1);
  CHECK(m[0].content == "one\ntwo");
  try {
    chat_messages_from_json(R"([{"role": "user", "content": "a"}, {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}])");
    FAIL("no error");
  } catch (const Error& e) {
    CHECK(e.code() == ErrorCode::Format);
    CHECK_THAT(e.what(), Catch::Contains("message 1: content part 0 is not a text part"));
  }
}
