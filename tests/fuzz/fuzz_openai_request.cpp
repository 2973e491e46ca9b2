// OpenAI request bodies as `dsinfer serve` receives them: /v1/chat/completions, /v1/completions, /tokenize and
// /detokenize, against the test tokenizer (tests/fixtures/tokenizer). The first byte picks the endpoint. Every
// input is a Request or an ApiError (a 4xx reply), never another exception.
#include "dsinfer/error.hpp"
#include "dsinfer/openai.hpp"
#include "dsinfer/tokenizer.hpp"
#include "fuzz_input.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace dsinfer;
  static const std::unique_ptr<Tokenizer> tok = Tokenizer::load(DSINFER_SOURCE_DIR "/tests/fixtures/tokenizer");
  static const openai::Defaults defaults;
  if (size < 1) return 0;
  const std::string_view body = fuzz::as_text(data + 1, size - 1);
  try {
    switch (data[0] % 4) {
      case 0: (void)openai::parse_request(openai::Endpoint::ChatCompletions, body, *tok, defaults); break;
      case 1: (void)openai::parse_request(openai::Endpoint::Completions, body, *tok, defaults); break;
      case 2: (void)openai::tokenize_reply(body, *tok, defaults); break;
      default: (void)openai::detokenize_reply(body, *tok); break;
    }
  } catch (const openai::ApiError& e) {
    if (e.status() >= 500) __builtin_trap();  // an input is the client's error, never the server's
  }
  return 0;
}
