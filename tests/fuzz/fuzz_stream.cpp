// The streaming DSML parser, fed the completion in pieces whose sizes come from the first bytes. Its documented
// promise is checked both ways against the strict parser (include/dsinfer/chat.hpp): a completion streams without
// an Error event exactly when parse_completion accepts it (or accepts it with an end of sentence appended: a stream
// may stop before one), and then with the same reasoning, content and tool calls, the streamed argument pieces
// adding up to the final arguments. Only valid UTF-8 is compared: the stream parser reads detokenized text, which
// is, while parse_completion checks its input.
#include <optional>

#include "dsinfer/chat.hpp"
#include "dsinfer/error.hpp"
#include "fuzz_input.hpp"
#include "util/utf8.hpp"

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
  std::vector<std::string> streamed_args;
  for (const ChatEvent& e : events) {
    if (e.kind == ChatEvent::Kind::Error) error = true;
    if (e.kind == ChatEvent::Kind::ContentDelta) streamed_content += e.text;
    if (e.kind == ChatEvent::Kind::ReasoningDelta) streamed_reasoning += e.text;
    if (e.kind == ChatEvent::Kind::ToolArgsDelta) {
      if (e.tool_index < 0 || size_t(e.tool_index) > streamed_args.size()) __builtin_trap();
      if (size_t(e.tool_index) == streamed_args.size()) streamed_args.emplace_back();
      streamed_args[size_t(e.tool_index)] += e.text;
    }
  }
  if (find_invalid_utf8(text) != std::string_view::npos) return 0;
  std::optional<ChatMessage> strict;
  for (const std::string& candidate : {std::string(text), std::string(text) + "<｜end▁of▁sentence｜>"}) {
    try {
      strict = parse_completion(candidate, mode);
      break;
    } catch (const Error&) {
    }
  }
  if (!strict) {
    if (!error) __builtin_trap();  // the stream parser took what the strict one refuses
    return 0;
  }
  const ChatMessage& got = parser.message();
  bool same = !error && got.tool_calls.size() == strict->tool_calls.size() &&
              streamed_args.size() == strict->tool_calls.size() &&
              streamed_content == strict->content.value_or("") &&
              streamed_reasoning == strict->reasoning_content.value_or("");
  for (size_t k = 0; same && k < strict->tool_calls.size(); ++k)
    same = got.tool_calls[k].name == strict->tool_calls[k].name &&
           got.tool_calls[k].arguments == strict->tool_calls[k].arguments && streamed_args[k] == got.tool_calls[k].arguments;
  if (!same) __builtin_trap();
  return 0;
}
