// The streaming DSML parser: the official renderings parse back to the official result in every chunking, and
// malformed output gives error events without losing text.
#include <catch2/catch.hpp>
#include <fmt/format.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "dsinfer/chat.hpp"

using namespace dsinfer;
using ojson = nlohmann::ordered_json;
namespace fs = std::filesystem;
using Kind = ChatEvent::Kind;

namespace {
const fs::path kDir = fs::path(DSINFER_SOURCE_DIR) / "tests" / "golden" / "chat";

struct Result {
  std::string reasoning, content;
  std::vector<std::string> names, args_streamed, args_final;
  int errors = 0;
  ChatMessage msg;
};

Result run(const std::string& text, ThinkingMode mode, size_t chunk) {
  ChatStreamParser p(mode);
  std::vector<ChatEvent> ev;
  for (size_t i = 0; i < text.size(); i += chunk) p.feed(std::string_view(text).substr(i, chunk), ev);
  p.finish(ev);
  Result r;
  for (const auto& e : ev) {
    switch (e.kind) {
      case Kind::ReasoningDelta: r.reasoning += e.text; break;
      case Kind::ContentDelta: r.content += e.text; break;
      case Kind::ToolCallBegin:
        REQUIRE(e.tool_index == int32_t(r.names.size()));
        r.names.push_back(e.name);
        r.args_streamed.emplace_back();
        break;
      case Kind::ToolArgsDelta: r.args_streamed.at(size_t(e.tool_index)) += e.text; break;
      case Kind::ToolCallEnd: r.args_final.push_back(e.arguments); break;
      case Kind::Error: ++r.errors; break;
    }
  }
  r.msg = p.message();
  return r;
}

std::vector<ojson> roundtrips() {
  std::ifstream f(kDir / "roundtrip.jsonl");
  REQUIRE(f.good());
  std::vector<ojson> out;
  std::string line;
  while (std::getline(f, line)) out.push_back(ojson::parse(line));
  return out;
}
}  // namespace

TEST_CASE("official renderings parse to the official result in every chunking from 1 byte to whole",
          "[chat][stream][golden]") {
  size_t texts = 0, runs = 0, with_calls = 0;
  for (const auto& r : roundtrips()) {
    if (!r.contains("parsed")) continue;
    const std::string text = r.at("text");
    const ThinkingMode mode = r.at("thinking_mode") == "thinking" ? ThinkingMode::Thinking : ThinkingMode::Chat;
    const ojson& want = r.at("parsed");
    ++texts;
    with_calls += !want.at("tool_calls").empty();
    for (size_t chunk = 1; chunk <= text.size(); ++chunk) {
      const Result got = run(text, mode, chunk);
      ++runs;
      INFO("chunk " << chunk << " of " << ojson(text).dump());
      REQUIRE(got.errors == 0);
      REQUIRE(got.reasoning == want.at("reasoning_content").get<std::string>());
      REQUIRE(got.content == want.at("content").get<std::string>());
      REQUIRE(got.names.size() == want.at("tool_calls").size());
      for (size_t k = 0; k < got.names.size(); ++k) {
        const auto& f = want.at("tool_calls")[k].at("function");
        REQUIRE(got.names[k] == f.at("name").get<std::string>());
        REQUIRE(got.args_final[k] == f.at("arguments").get<std::string>());
        REQUIRE(got.args_streamed[k] == got.args_final[k]);  // streamed pieces add up to the final arguments
        REQUIRE(got.msg.tool_calls[k].arguments == got.args_final[k]);
      }
    }
    const Result whole = run(text, mode, text.size());
    CHECK(whole.errors == 0);
  }
  WARN(fmt::format("{} official renderings ({} with tool calls), {} chunked runs, all equal to the official parse",
                   texts, with_calls, runs));
  CHECK(texts >= 200);
}

TEST_CASE("renderings the official parser rejects give an error event", "[chat][stream][golden]") {
  size_t n = 0, flagged = 0;
  for (const auto& r : roundtrips()) {
    if (r.contains("parsed")) continue;
    ++n;
    const ThinkingMode mode = r.at("thinking_mode") == "thinking" ? ThinkingMode::Thinking : ThinkingMode::Chat;
    flagged += run(r.at("text"), mode, 7).errors > 0;
  }
  WARN(fmt::format("{} rejected renderings, {} flagged by the stream parser", n, flagged));
  CHECK(flagged == n);
}

TEST_CASE("malformed tool calls: error events with offsets, and the raw text is still delivered", "[chat][stream]") {
  const std::string good =
      "Sure.\n\n<｜DSML｜function_calls>\n<｜DSML｜invoke name=\"get_weather\">\n"
      "<｜DSML｜parameter name=\"city\" string=\"true\">Hang\"zhou\"\n<x></｜DSML｜parameter>\n"
      "<｜DSML｜parameter name=\"days\" string=\"false\">[1, 2]</｜DSML｜parameter>\n</｜DSML｜invoke>\n"
      "</｜DSML｜function_calls><｜end▁of▁sentence｜>";
  const Result ok = run(good, ThinkingMode::Chat, 3);
  REQUIRE(ok.errors == 0);
  REQUIRE(ok.args_final.size() == 1);
  CHECK(ok.args_final[0] == R"({"city": "Hang\"zhou\"\n<x>", "days": [1, 2]})");
  CHECK(ok.content == "Sure.");
  const size_t block = good.find("\n\n<｜DSML｜function_calls");

  std::mt19937 rng(5);
  // Truncated anywhere inside the block (once its opening marker is complete: before that it is just text): an
  // error at finish, and content = "Sure." + the raw block so far.
  for (size_t cut = block + std::string("\n\n<｜DSML｜function_calls").size(); cut < good.size() - std::string("</｜DSML｜function_calls><｜end▁of▁sentence｜>").size(); cut += 1 + rng() % 7) {
    const std::string t = good.substr(0, cut);
    const Result r = run(t, ThinkingMode::Chat, 1 + rng() % 9);
    INFO("cut at " << cut);
    REQUIRE(r.errors >= 1);
    REQUIRE(r.content == t.substr(0, block) + t.substr(block));
  }
  // An unknown attribute, a bad string= value, a broken closing tag: error, raw block kept as content.
  for (const auto& [from, to] : std::vector<std::pair<std::string, std::string>>{
           {"name=\"get_weather\">", "name=\"get_weather\" strict=\"yes\">"},
           {"string=\"false\"", "string=\"maybe\""},
           {"</｜DSML｜invoke>", "</｜DSML｜invok>"},
           {"<｜DSML｜parameter name=\"city\"", "<｜DSML｜param name=\"city\""}}) {
    std::string t = good;
    t.replace(t.find(from), from.size(), to);
    for (size_t chunk : {size_t(1), size_t(5), t.size()}) {
      const Result r = run(t, ThinkingMode::Chat, chunk);
      INFO(to << " chunk " << chunk);
      REQUIRE(r.errors >= 1);
      REQUIRE(r.content == t);  // "Sure." + the whole raw block (and what followed it)
    }
  }
  // Non-JSON in string="false": an error event; the call still comes through with the raw value.
  std::string t = good;
  t.replace(t.find("[1, 2]"), 6, "[1, 2");
  const Result r = run(t, ThinkingMode::Chat, 4);
  CHECK(r.errors == 1);
  REQUIRE(r.args_final.size() == 1);
  CHECK(r.args_final[0] == R"({"city": "Hang\"zhou\"\n<x>", "days": [1, 2})");
}

TEST_CASE("thinking mode streams reasoning, then content; unclosed reasoning is reported", "[chat][stream]") {
  const Result r = run("Let me think</think>The answer is 4.<｜end▁of▁sentence｜>", ThinkingMode::Thinking, 2);
  CHECK(r.errors == 0);
  CHECK(r.reasoning == "Let me think");
  CHECK(r.content == "The answer is 4.");
  const Result cut = run("Still thinking </thi", ThinkingMode::Thinking, 3);
  CHECK(cut.errors == 1);
  CHECK(cut.reasoning == "Still thinking </thi");  // nothing lost
}
