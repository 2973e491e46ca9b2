// Example: a chat where the model may call a tool; the program runs it and feeds the result back.
//   chat_with_tools MODEL_DIR "question"
// (With the repo's small random-weight model the model will rarely produce a well-formed tool call; the loop and
// its events are the point. tests/examples/test_tool_loop.cpp drives the same loop with scripted output.)
#include <cstdio>

#include "tool_loop.hpp"

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s MODEL_DIR \"question\"\n", argv[0]);
    return 2;
  }
  try {
    auto model = dsinfer::Model::load(argv[1]);
    auto tok = dsinfer::Tokenizer::load(argv[1]);
    dsinfer::SessionParams params;
    params.capacity = 4096;
    dsinfer::Session session(*model, *tok, params);

    std::vector<dsinfer::ChatMessage> conversation(2);
    conversation[0].role = "system";
    conversation[0].content = "You are a helpful assistant.";
    conversation[0].tools_json = R"([{"type": "function", "function": {"name": "get_weather",
      "description": "Weather for a city", "parameters": {"type": "object",
      "properties": {"city": {"type": "string"}}, "required": ["city"]}}}])";
    conversation[1].role = "user";
    conversation[1].content = argv[2];

    std::map<std::string, example::ToolFn> tools = {
        {"get_weather", [](const std::string& args) { return "{\"weather\": \"sunny\", \"args\": " + args + "}"; }}};
    const auto reply = example::run_turn(session, conversation, tools, 4, [](const dsinfer::ChatEvent& e) {
      using K = dsinfer::ChatEvent::Kind;
      if (e.kind == K::ContentDelta) std::fputs(e.text.c_str(), stdout);
      if (e.kind == K::ToolCallBegin) std::printf("\n[calling %s]", e.name.c_str());
      if (e.kind == K::ToolCallEnd) std::printf("[arguments %s]\n", e.arguments.c_str());
      if (e.kind == K::Error) std::fprintf(stderr, "\n[malformed output at byte %zu: %s]\n", e.offset, e.text.c_str());
      std::fflush(stdout);
    });
    std::printf("\n--- %zu messages in the conversation; final answer has %zu bytes\n", conversation.size(),
                reply.content.value_or("").size());
  } catch (const dsinfer::Error& e) {
    std::fprintf(stderr, "error (%s): %s\n", dsinfer::error_code_name(e.code()), e.what());
    return 1;
  }
  return 0;
}
