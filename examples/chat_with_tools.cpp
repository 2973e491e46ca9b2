// Example: a conversation with tools, as an application runs one. The model may call the tools; the program runs
// them (real code: examples/demo_tools.hpp), feeds the results back and the model answers. Then a plain chat turn.
//   example_chat_with_tools MODEL_DIR ["question"] [--thinking] [--greedy]
// With the shipped model (models/dsinfer-v32-mini) this is the README's main job (scripts/demo.sh). Sampling follows
// the checkpoint's generation_config.json (DeepSeek's temperature 1.0, top_p 0.95) with a fixed seed, or greedy.
#include <cstdio>
#include <cstring>

#include "demo_tools.hpp"
#include "dsinfer/dsinfer.hpp"
#include "tool_loop.hpp"

namespace {

void print_event(const dsinfer::ChatEvent& e) {
  using K = dsinfer::ChatEvent::Kind;
  static K last = K::ContentDelta;
  if (e.kind == K::ReasoningDelta && last != K::ReasoningDelta) std::fputs("\n  (thinking) ", stdout);
  if (e.kind == K::ContentDelta && last != K::ContentDelta) std::fputs("\n  ", stdout);
  if (e.kind == K::ReasoningDelta || e.kind == K::ContentDelta) std::fputs(e.text.c_str(), stdout);
  if (e.kind == K::ToolCallEnd) std::printf("\n  [calls %s %s]", e.name.c_str(), e.arguments.c_str());
  if (e.kind == K::Error) std::fprintf(stderr, "\n  [malformed output at byte %zu: %s]\n", e.offset, e.text.c_str());
  last = e.kind;
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  const char* model_dir = nullptr;
  std::string question = "What's the weather like in Paris?";
  bool thinking = false, greedy = false, have_question = false;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--thinking")) thinking = true;
    else if (!std::strcmp(argv[i], "--greedy")) greedy = true;
    else if (!model_dir) model_dir = argv[i];
    else if (!have_question) question = argv[i], have_question = true;
  }
  if (!model_dir) {
    std::fprintf(stderr, "usage: %s MODEL_DIR [\"question\"] [--thinking] [--greedy]\n", argv[0]);
    return 2;
  }
  try {
    auto model = dsinfer::Model::load(model_dir);
    auto tok = dsinfer::Tokenizer::load(model_dir);
    dsinfer::SessionParams params;
    params.capacity = 4096;
    params.thinking = thinking ? dsinfer::ThinkingMode::Thinking : dsinfer::ThinkingMode::Chat;
    dsinfer::Session session(*model, *tok, params);
    // A session samples as the checkpoint's generation_config.json says (model->info().generation); this example
    // seeds it with 7, or asks for greedy decoding.
    const dsinfer::GenerationConfig& gen = model->info().generation;
    if (greedy) {
      auto chain = std::make_unique<dsinfer::SamplerChain>();
      chain->add(dsinfer::make_greedy_sampler());
      session.set_sampler(std::move(chain));
    } else {
      session.set_sampler(dsinfer::make_default_chain(gen, /*seed=*/7));
    }
    std::printf("model %s; %s mode; sampling: %s\n", model_dir, thinking ? "thinking" : "chat",
                greedy ? "greedy"
                       : ("temperature " + std::to_string(gen.temperature).substr(0, 4) + ", top_p " +
                          std::to_string(gen.top_p).substr(0, 4) + " (generation_config.json), seed 7").c_str());

    std::map<std::string, example::ToolFn> tools;
    const example::ToolFn weather = example::weather_tool(DSINFER_EXAMPLES_DATA "/weather.json");
    auto traced = [](std::string name, example::ToolFn fn) {
      return [name, fn](const std::string& args) {
        const std::string result = fn(args);
        std::printf("\n  [%s returns %s]", name.c_str(), result.c_str());
        return result;
      };
    };
    tools["get_weather"] = traced("get_weather", weather);
    tools["calculate"] = traced("calculate", example::calculate);

    std::vector<dsinfer::ChatMessage> conversation(1);
    conversation[0].role = "system";
    conversation[0].content = "You are a helpful assistant.";
    conversation[0].tools_json = example::kDemoToolsJson;
    for (const std::string& q : {question, std::string("What is the capital of Japan?")}) {
      dsinfer::ChatMessage user;
      user.role = "user";
      user.content = q;
      conversation.push_back(user);
      std::printf("\nuser: %s\nassistant:", q.c_str());
      example::run_turn(session, *tok, conversation, tools, 4, print_event);
      std::printf("\n");
    }
    std::printf("\n--- %zu messages in the conversation\n", conversation.size());
  } catch (const dsinfer::Error& e) {
    std::fprintf(stderr, "error (%s): %s\n", dsinfer::error_code_name(e.code()), e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
