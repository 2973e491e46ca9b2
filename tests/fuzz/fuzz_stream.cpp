// The streaming DSML parser, fed the completion in pieces whose sizes come from the first bytes. Its documented
// promise is checked too: a well-formed completion streams to the same reasoning, content and tool calls as the
// strict parser gives, with no error event. "Well-formed" is narrower than "the strict parser accepts it": the
// strict parser, like DeepSeek's, takes a string="false" value that is not JSON as written, and its lazy regexes
// let a tool or parameter name swallow a '">\n' and a following marker, and it accepts function calls cut off
// after an invoke header when the text ends there (no end of sentence), and its "\s*" takes any whitespace
// between "invoke" and "name=" where the stream parser wants one space; the stream parser reports all of these
// (open: docs/fuzzing.md).
#include <nlohmann/json.hpp>

#include "dsinfer/chat.hpp"
#include "dsinfer/error.hpp"
#include "fuzz_input.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace dsinfer;
  if (size < 2) return 0;
  const ThinkingMode mode = data[0] & 1 ? ThinkingMode::Thinking : ThinkingMode::Chat;
  const unsigned step_seed = data[1];
  const std::string_view text = fuzz::as_text(data + 2, size - 2);
  ChatStreamParser parser(mode);
  std::vector<ChatEvent> events;
  std::string streamed_content, streamed_reasoning;
  unsigned state = step_seed * 2654435761u + 1;
  for (size_t i = 0; i < text.size();) {
    state = state * 1103515245u + 12345u;
    const size_t n = std::min<size_t>(text.size() - i, 1 + (state >> 16) % 13);
    parser.feed(text.substr(i, n), events);
    i += n;
  }
  parser.finish(events);
  bool error = false;
  for (const ChatEvent& e : events) {
    if (e.kind == ChatEvent::Kind::Error) error = true;
    if (e.kind == ChatEvent::Kind::ContentDelta) streamed_content += e.text;
    if (e.kind == ChatEvent::Kind::ReasoningDelta) streamed_reasoning += e.text;
  }
  ChatMessage strict;
  try {
    strict = parse_completion(text, mode);
  } catch (const Error&) {
    return 0;
  }
  static constexpr std::string_view kEos = "<｜end▁of▁sentence｜>";
  if (text.size() < kEos.size() || text.substr(text.size() - kEos.size()) != kEos) return 0;
  static constexpr std::string_view kInvoke = "<｜DSML｜invoke";
  for (size_t p = text.find(kInvoke); p != std::string_view::npos; p = text.find(kInvoke, p + 1))
    if (text.substr(p + kInvoke.size(), 7) != " name=\"") return 0;
  auto plain = [](const std::string& name) { return name.find_first_of("\"<>\n") == std::string::npos; };
  for (const ToolCall& c : strict.tool_calls) {
    if (!plain(c.name)) return 0;
    const nlohmann::json args = nlohmann::json::parse(c.arguments, nullptr, false);
    if (!args.is_object()) return 0;
    for (const auto& [key, value] : args.items())
      if (!plain(key)) return 0;
  }
  const ChatMessage& got = parser.message();
  bool same = !error && got.tool_calls.size() == strict.tool_calls.size() &&
              streamed_content == strict.content.value_or("") &&
              streamed_reasoning == strict.reasoning_content.value_or("");
  for (size_t k = 0; same && k < strict.tool_calls.size(); ++k)
    same = got.tool_calls[k].name == strict.tool_calls[k].name &&
           got.tool_calls[k].arguments == strict.tool_calls[k].arguments;
  if (!same) __builtin_trap();
  return 0;
}
