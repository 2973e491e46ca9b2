// Example: extract a typed record with thinking on. The request's response_format (a strict JSON schema) is
// rendered into the prompt as DeepSeek's encoder does and enforced after </think>: the reasoning is free, the answer
// always parses and validates.
//   extract_record MODEL_DIR ["text to extract from"] [seed]
#include <cstdio>
#include <string>

#include "dsinfer/constraint.hpp"
#include "dsinfer/dsinfer.hpp"
#include "dsinfer/session.hpp"

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s MODEL_DIR [\"text\"] [seed]\n", argv[0]);
    return 2;
  }
  const std::string text = argc > 2 ? argv[2] : "Ada Lovelace, born 1815 in London, mathematician.";
  const uint64_t seed = argc > 3 ? std::stoull(argv[3]) : 0;
  // An OpenAI-style request: messages plus a strict json_schema response format. max_reasoning_tokens (dsinfer's
  // extension) caps the reasoning: after that many tokens only </think> may follow.
  const std::string request = R"({
    "max_reasoning_tokens": 256,
    "messages": [{"role": "user", "content": "Extract the person from: )" + text + R"("}],
    "response_format": {"type": "json_schema", "json_schema": {"name": "person", "strict": true, "schema": {
      "type": "object",
      "properties": {"name": {"type": "string", "maxLength": 40},
                     "birth_year": {"type": "integer", "minimum": 0, "maximum": 2100},
                     "occupation": {"enum": ["mathematician", "physicist", "writer", "other"]}},
      "required": ["name", "birth_year", "occupation"], "additionalProperties": false}}}
  })";
  try {
    auto model = dsinfer::Model::load(argv[1]);
    auto tok = dsinfer::Tokenizer::load(argv[1]);
    dsinfer::SessionParams sp;
    sp.thinking = dsinfer::ThinkingMode::Thinking;
    dsinfer::Session session(*model, *tok, sp);
    session.set_sampler(dsinfer::make_default_chain(dsinfer::load_generation_config(argv[1]), seed));
    // The prompt (response_format on the system message) and the constraint (a bad schema fails here).
    session.set_messages(dsinfer::chat_messages_from_json(request));
    dsinfer::GenerateParams g;
    g.max_tokens = 1024;
    g.constraint = dsinfer::Constraint::compile(*tok, dsinfer::constraint_from_request_json(request, sp.thinking));
    session.generate(g);
    const dsinfer::ChatMessage& reply = session.reply();
    std::printf("reasoning: %zu bytes\n", reply.reasoning_content.value_or("").size());
    std::printf("record: %s\n", reply.content.value_or("").c_str());
    return session.finish_reason() == dsinfer::FinishReason::Eos ? 0 : 1;
  } catch (const dsinfer::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
