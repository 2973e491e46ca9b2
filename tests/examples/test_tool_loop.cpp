// The example's tool-calling loop on the real small model, with the model's output scripted by a sampler that
// forces the tokens of a given completion: the loop must call the tool with the parsed arguments, feed the result
// back through the chat encoder into the same session, and end with the final answer.
#include <catch2/catch.hpp>

#include <deque>
#include <filesystem>

#include "tool_loop.hpp"

using namespace dsinfer;
namespace fs = std::filesystem;

namespace {
// Selects the scripted ids one after another (the model's logits are ignored).
struct ScriptedSampler : Sampler {
  std::shared_ptr<std::deque<int32_t>> script;
  explicit ScriptedSampler(std::shared_ptr<std::deque<int32_t>> s) : script(std::move(s)) {}
  std::string name() const override { return "scripted"; }
  void apply(Candidates& c) override {
    if (script->empty()) throw Error(ErrorCode::InvalidArgument, "script exhausted");
    const int32_t want = script->front();
    script->pop_front();
    for (size_t i = 0; i < c.size(); ++i)
      if (c.ids[i] == want) {
        c.selected = int64_t(i);
        return;
      }
    throw Error(ErrorCode::InvalidArgument, "scripted id not among the candidates");
  }
  std::unique_ptr<Sampler> clone() const override { return std::make_unique<ScriptedSampler>(script); }
};
}  // namespace

TEST_CASE("the tool-calling loop runs the tool and feeds the result back into the same session", "[tools][session]") {
  const std::string dir = (fs::path(DSINFER_MODELS_DIR) / "v32-tiny").string();
  auto model = Model::load(dir, ModelLoadParams{.n_threads = 2});
  auto tok = Tokenizer::load(dir);
  for (ThinkingMode mode : {ThinkingMode::Chat, ThinkingMode::Thinking}) {
    SessionParams sp;
    sp.capacity = 2048;
    sp.thinking = mode;
    sp.eval.precision = Precision::Reference;
    Session session(*model, *tok, sp);
    auto script = std::make_shared<std::deque<int32_t>>();
    const std::string think = mode == ThinkingMode::Thinking ? "I should look it up.</think>" : "";
    const std::string think2 = mode == ThinkingMode::Thinking ? "It says sunny.</think>" : "";
    for (const std::string& completion :
         {think + "\n\n<｜DSML｜function_calls>\n<｜DSML｜invoke name=\"get_weather\">\n"
                  "<｜DSML｜parameter name=\"city\" string=\"true\">杭州 \"West Lake\"</｜DSML｜parameter>\n"
                  "<｜DSML｜parameter name=\"days\" string=\"false\">2</｜DSML｜parameter>\n</｜DSML｜invoke>\n"
                  "</｜DSML｜function_calls><｜end▁of▁sentence｜>",
          think2 + "Sunny in Hangzhou for two days.<｜end▁of▁sentence｜>"}) {
      for (int32_t id : tok->encode(completion)) script->push_back(id);
    }
    auto chain = std::make_unique<SamplerChain>();
    chain->add(std::make_unique<ScriptedSampler>(script));
    session.set_sampler(std::move(chain));

    std::vector<ChatMessage> conversation(2);
    conversation[0].role = "system";
    conversation[0].content = "You help.";
    conversation[0].tools_json =
        R"([{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}])";
    conversation[1].role = "user";
    conversation[1].content = "Weather in Hangzhou?";
    std::string seen_args;
    std::map<std::string, example::ToolFn> tools = {{"get_weather", [&](const std::string& args) {
                                                       seen_args = args;
                                                       return std::string("{\"weather\": \"sunny\"}");
                                                     }}};
    int arg_deltas = 0;
    const ChatMessage reply = example::run_turn(session, *tok, conversation, tools, 4, [&](const ChatEvent& e) {
      arg_deltas += e.kind == ChatEvent::Kind::ToolArgsDelta;
      REQUIRE(e.kind != ChatEvent::Kind::Error);
    });
    CHECK(script->empty());
    CHECK(seen_args == R"({"city": "杭州 \"West Lake\"", "days": 2})");
    CHECK(arg_deltas >= 4);  // the arguments streamed in pieces, not in one block
    CHECK(reply.content.value_or("") == "Sunny in Hangzhou for two days.");
    REQUIRE(conversation.size() == 5);  // system, user, assistant (tool call), tool, assistant
    CHECK(conversation[3].role == "tool");
    if (mode == ThinkingMode::Thinking) CHECK(reply.reasoning_content.value_or("") == "It says sunny.");
    // The session's cache holds exactly the official rendering of the conversation so far (minus the final eos,
    // which is sampled but not evaluated).
    ChatOptions o;
    o.thinking = mode;
    const auto full = tok->encode(encode_chat(conversation, o));
    const auto& cached = session.tokens();
    REQUIRE(cached.size() + 1 == full.size());
    CHECK(std::equal(cached.begin(), cached.end(), full.begin()));
  }
}
