// The strict DSML parser (parse_completion). The first byte's low bit picks the thinking mode.
#include "dsinfer/chat.hpp"
#include "dsinfer/error.hpp"
#include "fuzz_input.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace dsinfer;
  if (size < 1) return 0;
  const ThinkingMode mode = data[0] & 1 ? ThinkingMode::Thinking : ThinkingMode::Chat;
  try {
    const ChatMessage m = parse_completion(fuzz::as_text(data + 1, size - 1), mode);
    for (const auto& c : m.tool_calls)
      if (c.arguments.empty() || c.arguments.front() != '{' || c.arguments.back() != '}') __builtin_trap();
  } catch (const Error&) {
  }
  return 0;
}
