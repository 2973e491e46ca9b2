// Example: load a DeepSeek-V3.2 checkpoint, encode a chat in its own format, and stream a greedy reply.
//   generate_text MODEL_DIR "your question" [max_new_tokens]
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "dsinfer/chat.hpp"
#include "dsinfer/dsinfer.hpp"
#include "dsinfer/tokenizer.hpp"

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s MODEL_DIR \"question\" [max_new_tokens]\n", argv[0]);
    return 2;
  }
  int max_new = 32;
  if (argc > 3) {
    char* end = nullptr;
    const long n = std::strtol(argv[3], &end, 10);
    if (end == argv[3] || *end != '\0' || n < 1 || n > 1000000) {
      std::fprintf(stderr, "max_new_tokens must be a whole number from 1 to 1000000, got \"%s\"\n", argv[3]);
      return 2;
    }
    max_new = int(n);
  }
  try {
    dsinfer::ModelLoadParams params;
    params.progress = [](double f, std::string_view stage) {
      std::fprintf(stderr, "\rloading: %3.0f%% %-30.*s", f * 100, int(stage.size()), stage.data());
      if (f >= 1.0) std::fprintf(stderr, "\n");
    };
    auto model = dsinfer::Model::load(argv[1], params);
    auto tok = dsinfer::Tokenizer::load(argv[1]);

    std::vector<dsinfer::ChatMessage> messages(1);
    messages[0].role = "user";
    messages[0].content = argv[2];
    const std::string prompt = dsinfer::encode_chat(messages);  // chat mode: "<bos><｜User｜>…<｜Assistant｜></think>"
    const std::vector<int32_t> ids = tok->encode(prompt);

    auto seq = model->new_sequence(int64_t(ids.size()) + max_new);
    std::vector<float> logits = model->eval(*seq, ids);
    dsinfer::Detokenizer detok(*tok);
    const int64_t usable = std::min<int64_t>(tok->size(), model->info().vocab_size);
    for (int i = 0; i < max_new; ++i) {
      const int32_t next = int32_t(std::max_element(logits.begin(), logits.begin() + usable) - logits.begin());
      if (next == tok->eos_id()) break;
      std::fputs(detok.push(next).c_str(), stdout);
      std::fflush(stdout);
      logits = model->eval(*seq, std::span<const int32_t>(&next, 1));
    }
    std::printf("%s\n", detok.finish().c_str());
  } catch (const dsinfer::Error& e) {
    std::fprintf(stderr, "error (%s): %s\n", dsinfer::error_code_name(e.code()), e.what());
    return 1;
  }
  return 0;
}
