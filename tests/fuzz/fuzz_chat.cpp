// Chat messages JSON ({"messages": [...], "tools": [...]} or a list), as the CLI, the C ABI and Python pass it,
// rendered in both thinking modes.
#include "dsinfer/chat.hpp"
#include "dsinfer/error.hpp"
#include "fuzz_input.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace dsinfer;
  try {
    const std::vector<ChatMessage> msgs = chat_messages_from_json(fuzz::as_text(data, size));
    for (ThinkingMode mode : {ThinkingMode::Chat, ThinkingMode::Thinking}) {
      ChatOptions o;
      o.thinking = mode;
      try {
        (void)encode_chat(msgs, o);
      } catch (const Error&) {
      }
    }
  } catch (const Error&) {
  }
  return 0;
}
