// The OpenAI protocol layer: request fields checked and named in errors, the prompt rendered as the chat encoder
// renders it, tool-call and malformed-DSML events turned into OpenAI's chunks and replies, LocalCompletion equal to
// the session run by hand.
#include <catch2/catch.hpp>
#include <fmt/format.h>

#include <filesystem>
#include <tuple>
#include <nlohmann/json.hpp>

#include "dsinfer/openai.hpp"

using namespace dsinfer;
using namespace dsinfer::openai;
using json = nlohmann::json;
namespace fs = std::filesystem;

namespace {
const std::string kModel = (fs::path(DSINFER_MODELS_DIR) / "v32-tiny").string();

struct Fixture {
  std::unique_ptr<Model> model = Model::load(kModel, ModelLoadParams{.n_threads = 2});
  std::unique_ptr<Tokenizer> tok = Tokenizer::load(kModel);
  Defaults d;
  Fixture() {
    d.model_id = "m";
    d.context = 1024;
    d.generation.do_sample = true;
    d.generation.temperature = 0.6f;
    d.generation.top_p = 0.95f;
  }
};

const char* kHello = R"("messages": [{"role": "user", "content": "Hello"}])";

ApiError refused(const Fixture& f, const std::string& body, Endpoint ep = Endpoint::ChatCompletions) {
  try {
    parse_request(ep, body, *f.tok, f.d);
  } catch (const ApiError& e) {
    return e;
  }
  FAIL("accepted: " << body);
  return ApiError(0, "", "", "");
}
}  // namespace

TEST_CASE("request fields: defaults, ranges, and 400s that name the field", "[openai]") {
  Fixture f;
  const Request r = parse_request(Endpoint::ChatCompletions, fmt::format("{{{}, \"unknown_field\": 1}}", kHello), *f.tok, f.d);
  CHECK(r.temperature == 0.6f);  // generation_config.json
  CHECK(r.top_p == 0.95f);
  CHECK(r.max_tokens == 1024 - int64_t(r.prompt.size()));
  CHECK(r.tool_choice == ToolChoice::None);
  ChatOptions o;
  CHECK(r.prompt == f.tok->encode(encode_chat(r.messages, o), false));
  const Request m = parse_request(Endpoint::ChatCompletions,
                                  fmt::format("{{{}, \"max_tokens\": 9, \"max_completion_tokens\": 7, \"n\": 2}}", kHello), *f.tok, f.d);
  CHECK(m.max_tokens == 7);
  CHECK(m.n == 2);
  for (const auto& [field, body] : std::vector<std::pair<std::string, std::string>>{
           {"temperature", R"("temperature": 2.5)"},
           {"temperature", R"("temperature": "hot")"},
           {"top_p", R"("top_p": 0)"},
           {"n", R"("n": 0)"},
           {"max_tokens", R"("max_tokens": -1)"},
           {"stop", R"("stop": [""])"},
           {"logit_bias", R"("logit_bias": {"abc": 1})"},
           {"logit_bias", R"("logit_bias": {"5": 101})"},
           {"seed", R"("seed": 1.5)"},
           {"top_logprobs", R"("top_logprobs": 2)"},
           {"tools", R"("tools": [{"type": "function"}])"},
           {"tools", R"("tools": [{"type": {"a": 1}, "function": {"name": "f"}}])"},
           {"tool_choice", R"("tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": {"type": 5})"},
           {"tool_choice", R"("tool_choice": "sometimes")"},
           {"response_format", R"("response_format": {"type": "yaml"})"},
           {"stream_options", R"("stream_options": {"include_usage": true})"},
           {"functions", R"("functions": [])"},
           {"chat_template_kwargs", R"("chat_template_kwargs": {"thinking": "yes"})"},
       }) {
    const ApiError e = refused(f, fmt::format("{{{}, {}}}", kHello, body));
    INFO(body << " -> " << e.what());
    CHECK(e.status() == 400);
    CHECK(e.param() == field);
    CHECK(json::parse(e.json())["error"]["param"] == field);
  }
  CHECK(refused(f, "{\"messages\": [").param().empty());
  CHECK(refused(f, "[1, 2]").status() == 400);
  CHECK(refused(f, R"({"messages": []})").param() == "messages");
  CHECK(refused(f, R"({"messages": [{"role": "wizard", "content": "x"}]})").param() == "messages");
  CHECK(refused(f, R"({"prompt": 5})", Endpoint::Completions).param() == "prompt");
  // The context holds prompt + completion: too long is a 400 with the token counts.
  const ApiError big = refused(f, fmt::format(R"({{"messages": [{{"role": "user", "content": "{}"}}]}})", std::string(12000, 'a')));
  CHECK(big.code() == "context_length_exceeded");
  CHECK(std::string(big.what()).find("maximum context length is 1024 tokens") != std::string::npos);
  const ApiError over = refused(f, fmt::format("{{{}, \"max_tokens\": 3000}}", kHello));
  CHECK(over.param() == "max_tokens");
  CHECK(std::string(over.what()).find("3000 in the completion") != std::string::npos);
  // Another model's name when the server insists on its own.
  f.d.any_model_name = false;
  CHECK(refused(f, fmt::format("{{{}, \"model\": \"other\"}}", kHello)).status() == 404);
  CHECK_NOTHROW(parse_request(Endpoint::ChatCompletions, fmt::format("{{{}, \"model\": \"m\"}}", kHello), *f.tok, f.d));
}

TEST_CASE("tools, tool_choice and response_format are rendered as the official encoder renders them", "[openai]") {
  Fixture f;
  const std::string tools = R"([{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}])";
  const std::string rf = R"({"type": "json_object"})";
  const Request r = parse_request(Endpoint::ChatCompletions,
                                  fmt::format(R"({{{}, "tools": {}, "response_format": {}}})", kHello, tools, rf), *f.tok, f.d);
  CHECK(r.tool_choice == ToolChoice::Auto);
  REQUIRE(r.messages.size() == 2);  // an empty system message carries them
  CHECK(r.messages[0].tools_json == python_json_dumps(tools));
  CHECK(r.messages[0].response_format_json == python_json_dumps(rf));
  CHECK(r.response_format_json == python_json_dumps(rf));
  const Request none = parse_request(Endpoint::ChatCompletions,
                                     fmt::format(R"({{{}, "tools": {}, "tool_choice": "none"}})", kHello, tools), *f.tok, f.d);
  CHECK(none.tool_choice == ToolChoice::None);
  CHECK(none.prompt == parse_request(Endpoint::ChatCompletions, fmt::format("{{{}}}", kHello), *f.tok, f.d).prompt);
  // Without the tools the rest keeps its document order (a schema's properties as written, not sorted).
  const std::string schema_rf =
      R"({"type": "json_schema", "json_schema": {"name": "r", "schema": {"type": "object", "properties": {"zeta": {"type": "string"}, "alpha": {"type": "integer"}}}}})";
  const Request none_rf = parse_request(
      Endpoint::ChatCompletions,
      fmt::format(R"({{{}, "tools": {}, "tool_choice": "none", "response_format": {}}})", kHello, tools, schema_rf), *f.tok, f.d);
  REQUIRE_FALSE(none_rf.messages.empty());
  CHECK(none_rf.messages[0].response_format_json == python_json_dumps(schema_rf));
  const Request named = parse_request(
      Endpoint::ChatCompletions,
      fmt::format(R"({{{}, "tools": {}, "tool_choice": {{"type": "function", "function": {{"name": "get_weather"}}}}}})", kHello, tools),
      *f.tok, f.d);
  CHECK(named.tool_choice == ToolChoice::Function);
  CHECK(named.tool_choice_function == "get_weather");
}

namespace {
// Runs a request whose first sampled token is forced to eos (logit_bias), feeding `events` to the completion
// before the session's end, as if the model had written them.
std::pair<std::vector<json>, json> run_with_events(Fixture& f, const std::string& extra, const std::vector<ChatEvent>& events) {
  const std::string body = fmt::format(R"({{{}, "stream": true, "stream_options": {{"include_usage": true}}, "logit_bias": {{"{}": 100}}{}}})",
                                       kHello, f.tok->eos_id(), extra);
  Completion c(parse_request(Endpoint::ChatCompletions, body, *f.tok, f.d), *f.model, *f.tok, f.d);
  std::vector<std::string> chunks;
  Engine engine(*f.model);
  Session& s = c.start(nullptr, chunks);
  engine.add(s, c.generate_params());
  bool fed = false;
  while (!c.done()) {
    auto r = engine.step([&](Session& x, const ChatEvent& e) { c.on_event(x, e, chunks); });
    for (Session* x : r.finished) {
      if (!fed)
        for (const auto& e : events) c.on_event(*x, e, chunks);
      fed = true;
      c.on_finished(*x, chunks);
    }
    REQUIRE(r.failed.empty());
  }
  c.finish_stream(chunks);
  std::vector<json> parsed;
  for (const auto& ch : chunks) parsed.push_back(json::parse(ch));
  return {parsed, json::parse(c.reply())};
}

ChatEvent ev(ChatEvent::Kind k, std::string text = {}, std::string name = {}, std::string args = {}) {
  ChatEvent e;
  e.kind = k;
  e.text = std::move(text);
  e.name = std::move(name);
  e.arguments = std::move(args);
  e.tool_index = 0;
  return e;
}
}  // namespace

TEST_CASE("tool calls stream as OpenAI delta.tool_calls fragments with an id; the reply carries them whole", "[openai]") {
  Fixture f;
  using K = ChatEvent::Kind;
  const auto [chunks, reply] = run_with_events(
      f, R"(, "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}])",
      {ev(K::ContentDelta, "Let me check."), ev(K::ToolCallBegin, "", "get_weather"), ev(K::ToolArgsDelta, "{\"city\": "),
       ev(K::ToolArgsDelta, "\"Hangzhou\"}"), ev(K::ToolCallEnd, "", "get_weather", "{\"city\": \"Hangzhou\"}")});
  REQUIRE(chunks.size() == 7);  // role, content, begin, 2 argument fragments, finish, usage
  CHECK(chunks[0]["choices"][0]["delta"] == json::parse(R"({"role": "assistant", "content": ""})"));
  CHECK(chunks[1]["choices"][0]["delta"]["content"] == "Let me check.");
  const json& begin = chunks[2]["choices"][0]["delta"]["tool_calls"][0];
  CHECK(begin["index"] == 0);
  CHECK(begin["type"] == "function");
  CHECK(begin["function"]["name"] == "get_weather");
  CHECK(begin["function"]["arguments"] == "");
  const std::string id = begin["id"];
  CHECK(id.rfind("call_", 0) == 0);
  CHECK(chunks[3]["choices"][0]["delta"]["tool_calls"][0] == json::parse(R"({"index": 0, "function": {"arguments": "{\"city\": "}})"));
  CHECK(chunks[4]["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"] == "\"Hangzhou\"}");
  CHECK(chunks[5]["choices"][0]["finish_reason"] == "tool_calls");
  CHECK(chunks[5]["choices"][0]["delta"] == json::object());
  CHECK(chunks[6]["choices"] == json::array());
  CHECK(chunks[6]["usage"]["completion_tokens"] == 1);
  for (const auto& c : chunks) {
    CHECK(c["object"] == "chat.completion.chunk");
    CHECK(c["id"] == chunks[0]["id"]);
  }
  const json& m = reply["choices"][0]["message"];
  CHECK(m["content"] == "Let me check.");
  CHECK(m["tool_calls"][0]["id"] == id);
  CHECK(m["tool_calls"][0]["function"]["arguments"] == "{\"city\": \"Hangzhou\"}");
  CHECK(reply["choices"][0]["finish_reason"] == "tool_calls");
}

TEST_CASE("malformed DSML comes back as content with finish_reason stop, nothing lost", "[openai]") {
  Fixture f;
  const std::string text =
      "Sure.\n\n<｜DSML｜function_calls>\n<｜DSML｜invoke name=\"get_weather\">\n"
      "<｜DSML｜parameter name=\"city\" string=\"true\">Hangzhou</｜DSML｜parameter>\n</｜DSML｜invok>\n";
  ChatStreamParser p(ThinkingMode::Chat);
  std::vector<ChatEvent> events;
  for (size_t i = 0; i < text.size(); i += 7) p.feed(std::string_view(text).substr(i, 7), events);
  p.finish(events);
  REQUIRE(p.had_error());
  const auto [chunks, reply] = run_with_events(
      f, R"(, "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}])", events);
  const json& m = reply["choices"][0]["message"];
  CHECK(m["content"] == text);
  CHECK(m["tool_calls"] == json::array());
  CHECK(reply["choices"][0]["finish_reason"] == "stop");
  std::string streamed;
  for (const auto& c : chunks)
    if (!c["choices"].empty() && c["choices"][0]["delta"].contains("content")) streamed += c["choices"][0]["delta"]["content"];
  CHECK(streamed == text);
}

TEST_CASE("LocalCompletion: greedy reply equals the session run alone; seeds reproduce; n choices fork", "[openai]") {
  Fixture f;
  const std::string body = fmt::format(R"({{{}, "temperature": 0, "max_tokens": 12, "logprobs": true, "top_logprobs": 2}})", kHello);
  LocalCompletion lc(parse_request(Endpoint::ChatCompletions, body, *f.tok, f.d), *f.model, *f.tok, f.d);
  const json reply = json::parse(lc.run());
  Session alone(*f.model, *f.tok, SessionParams{.capacity = 1024});
  auto greedy = std::make_unique<SamplerChain>();  // the request's temperature 0 (a session's default samples)
  greedy->add(make_greedy_sampler());
  alone.set_sampler(std::move(greedy));
  alone.set_messages(parse_request(Endpoint::ChatCompletions, body, *f.tok, f.d).messages);
  GenerateParams g;
  g.max_tokens = 12;
  alone.generate(g);
  CHECK(reply["choices"][0]["message"]["content"] == alone.reply().content.value_or(""));
  CHECK(reply["usage"]["completion_tokens"] == alone.generated().size());
  CHECK(reply["choices"][0]["logprobs"]["content"].size() == alone.generated().size());

  auto run = [&](const std::string& extra) {
    const std::string b = fmt::format(R"({{{}, "max_tokens": 8{}}})", kHello, extra);
    LocalCompletion c(parse_request(Endpoint::ChatCompletions, b, *f.tok, f.d), *f.model, *f.tok, f.d);
    return json::parse(c.run());
  };
  const json a = run(R"(, "seed": 5, "n": 3)"), b = run(R"(, "seed": 5, "n": 3)");
  REQUIRE(a["choices"].size() == 3);
  for (int i = 0; i < 3; ++i) {
    CHECK(a["choices"][i]["index"] == i);
    CHECK(a["choices"][i]["message"]["content"] == b["choices"][i]["message"]["content"]);
  }
  CHECK(a["choices"][0]["message"]["content"] != a["choices"][1]["message"]["content"]);
  // Choice i samples with seed + i: choice 1 of seed 5 is choice 0 of seed 6.
  CHECK(run(R"(, "seed": 6)")["choices"][0]["message"]["content"] == a["choices"][1]["message"]["content"]);
}

TEST_CASE("/tokenize, /detokenize and /v1/models bodies", "[openai]") {
  Fixture f;
  const json t = json::parse(tokenize_reply(R"({"prompt": "Hello world", "return_token_strs": true})", *f.tok, f.d));
  CHECK(t["tokens"] == f.tok->encode("Hello world", true));
  CHECK(t["count"] == t["tokens"].size());
  CHECK(t["max_model_len"] == 1024);
  CHECK(t["token_strs"].size() == t["tokens"].size());
  const json d = json::parse(detokenize_reply(json({{"tokens", t["tokens"]}}).dump(), *f.tok));
  CHECK(d["prompt"] == f.tok->decode(t["tokens"].get<std::vector<int32_t>>()));
  CHECK_THROWS_AS(detokenize_reply(R"({"tokens": [999999]})", *f.tok), ApiError);
  const json m = json::parse(models_reply(f.d, 1));
  CHECK(m["data"][0]["id"] == "m");
}

namespace {
const char* kRecordSchema =
    R"({"type": "object", "properties": {"ok": {"type": "boolean"}, "n": {"type": "integer", "minimum": 0, "maximum": 9}},
        "required": ["ok", "n"], "additionalProperties": false})";
const char* kCityTools =
    R"([{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object",
        "properties": {"city": {"type": "string", "maxLength": 12}}, "required": ["city"]}}},
        {"type": "function", "function": {"name": "noop", "parameters": {"type": "object", "properties": {}}}}])";

std::string strict_format(const std::string& schema) {
  return fmt::format(R"({{"type": "json_schema", "json_schema": {{"name": "r", "strict": true, "schema": {}}}}})", schema);
}
}  // namespace

TEST_CASE("response_format and tool_choice compile into the request's constraint; bad ones are 400s naming the field",
          "[openai][constraint]") {
  Fixture f;
  auto req = [&](const std::string& extra, Endpoint ep = Endpoint::ChatCompletions) {
    const std::string body = ep == Endpoint::ChatCompletions ? fmt::format("{{{}{}}}", kHello, extra)
                                                             : fmt::format(R"({{"prompt": "x"{}}})", extra);
    return parse_request(ep, body, *f.tok, f.d);
  };
  using K = ConstraintSpec::Kind;
  CHECK(req("").constraint == nullptr);
  CHECK(req(R"(, "response_format": {"type": "text"})").constraint == nullptr);
  // Without "strict": true the schema is only shown to the model (OpenAI's rule).
  CHECK(req(fmt::format(R"(, "response_format": {{"type": "json_schema", "json_schema": {{"name": "r", "schema": {}}}}})",
                        kRecordSchema)).constraint == nullptr);
  CHECK(req(fmt::format(R"(, "response_format": {{"type": "json_schema", "json_schema": {{"name": "r", "strict": null,
                        "schema": {}}}}})", kRecordSchema)).constraint == nullptr);  // null: not strict
  const Request strict = req(fmt::format(R"(, "response_format": {})", strict_format(kRecordSchema)));
  REQUIRE(strict.constraint);
  CHECK(strict.constraint->spec().kind == K::JsonSchema);
  CHECK(strict.constraint->spec().thinking == ThinkingMode::Chat);
  CHECK(Completion(strict, *f.model, *f.tok, f.d).generate_params().constraint == strict.constraint);
  CHECK(req(R"(, "response_format": {"type": "json_object"})").constraint->spec().kind == K::JsonObject);
  CHECK(req(R"x(, "response_format": {"type": "regex", "regex": "(yes|no)"})x").constraint->spec().kind == K::Regex);
  CHECK(req(R"(, "response_format": {"type": "json_object"})", Endpoint::Completions).constraint->spec().kind == K::JsonObject);
  // tool_choice: auto (the default) allows text or a call block that follows the tools; none enforces nothing;
  // required and a named function enforce a call block.
  const Request automatic = req(fmt::format(R"(, "tools": {})", kCityTools));
  REQUIRE(automatic.constraint);
  CHECK(automatic.constraint->spec().kind == K::TextOrToolCalls);
  CHECK(req(fmt::format(R"(, "tools": {}, "tool_choice": "auto")", kCityTools)).constraint->spec().kind ==
        K::TextOrToolCalls);
  CHECK(req(fmt::format(R"(, "tools": {}, "tool_choice": "none")", kCityTools)).constraint == nullptr);
  // Tools the grammar engine cannot hold a call to: with auto the request is served unconstrained (the client
  // asked for no guarantee); asking for a call makes it a 400 naming the tools.
  const std::string unenforceable = R"([{"type": "function", "function": {"name": "f", "parameters": {"type": "object",
      "properties": {"x": {"not": {"type": "string"}}}}}}])";
  CHECK(req(fmt::format(R"(, "tools": {})", unenforceable)).constraint == nullptr);
  try {
    req(fmt::format(R"(, "tools": {}, "tool_choice": "required")", unenforceable));
    FAIL("expected a 400");
  } catch (const ApiError& e) {
    CHECK(e.param() == "tools");
  }
  const Request required = req(fmt::format(R"(, "tools": {}, "tool_choice": "required")", kCityTools));
  REQUIRE(required.constraint);
  CHECK(required.constraint->spec().kind == K::ToolCalls);
  CHECK(required.constraint->spec().tool_name.empty());
  CHECK(required.constraint->spec().parallel_tool_calls);
  const Request named = req(fmt::format(
      R"(, "tools": {}, "tool_choice": {{"type": "function", "function": {{"name": "get_weather"}}}}, "parallel_tool_calls": false)",
      kCityTools));
  CHECK(named.constraint->spec().tool_name == "get_weather");
  CHECK_FALSE(named.constraint->spec().parallel_tool_calls);
  // An enforced format with tools and tool_choice auto: the answer may be either; with none, only the format.
  const Request either = req(fmt::format(R"(, "tools": {}, "response_format": {{"type": "json_object"}})", kCityTools));
  CHECK(either.constraint->spec().kind == K::JsonObject);
  CHECK(either.constraint->spec().or_tool_calls);
  CHECK_FALSE(req(fmt::format(R"(, "tools": {}, "tool_choice": "none", "response_format": {{"type": "json_object"}})",
                              kCityTools)).constraint->spec().or_tool_calls);
  // Thinking: the constraint starts after </think>; max_reasoning_tokens caps the reasoning, alone too.
  const Request thinking = req(fmt::format(R"(, "response_format": {}, "chat_template_kwargs": {{"thinking": true}},
                                              "max_reasoning_tokens": 5)", strict_format(kRecordSchema)));
  CHECK(thinking.constraint->spec().thinking == ThinkingMode::Thinking);
  CHECK(thinking.constraint->spec().max_reasoning_tokens == 5);
  const Request capped = req(R"(, "chat_template_kwargs": {"thinking": true}, "max_reasoning_tokens": 3)");
  REQUIRE(capped.constraint);
  CHECK(capped.constraint->spec().kind == K::None);
  CHECK(req(R"(, "max_reasoning_tokens": 3)").constraint == nullptr);  // no reasoning to cap

  const std::string bad_tools =
      R"([{"type": "function", "function": {"name": "f", "parameters": {"type": "object",
          "properties": {"xs": {"type": "array", "uniqueItems": true}}, "required": ["xs"]}}}])";
  for (const auto& [field, extra, says] : std::vector<std::tuple<std::string, std::string, std::string>>{
           {"response_format", fmt::format(R"("response_format": {})", strict_format(R"({"not": {"type": "string"}})")), "not"},
           {"response_format", fmt::format(R"("response_format": {})", strict_format(R"({"type": "array", "minItems": 3, "maxItems": 1})")), "maxItems"},
           {"response_format", fmt::format(R"("response_format": {})", strict_format(R"({"type": "bogus"})")), "type must be one of"},
           {"response_format", R"("response_format": {"type": "json_schema", "json_schema": {"name": "r", "strict": "yes", "schema": {}}})", "strict"},
           {"response_format", R"("response_format": {"type": "regex", "regex": "(unclosed"})", "regex"},
           {"tools", fmt::format(R"("tools": {}, "tool_choice": "required")", bad_tools), "uniqueItems"},
           {"tools", fmt::format(R"("tools": {}, "response_format": {{"type": "json_object"}})", bad_tools), "uniqueItems"},
           {"tools", fmt::format(R"("tools": {}, "tool_choice": "required")",
                                 R"([{"type": "function", "function": {"name": "f"}}, {"type": "function", "function": {"name": "f"}}])"),
            "twice"},
           {"max_reasoning_tokens", R"("max_reasoning_tokens": -1)", "max_reasoning_tokens"},
       }) {
    const ApiError e = refused(f, fmt::format("{{{}, {}}}", kHello, extra));
    INFO(extra << " -> " << e.what());
    CHECK(e.status() == 400);
    CHECK(e.param() == field);
    CHECK(std::string(e.what()).find(says) != std::string::npos);
  }
  // The same tools are not read for a constraint when nothing is enforced: tool_choice auto accepts them as before.
  CHECK(req(fmt::format(R"(, "tools": {})", bad_tools)).constraint == nullptr);
}

TEST_CASE("every choice of a constrained request follows it (random weights, T = 1)", "[openai][constraint]") {
  Fixture f;
  f.d.context = 2048;  // the tools' prompt is 829 tokens of the fixture tokenizer
  auto run = [&](const std::string& extra) {
    const std::string body = fmt::format(R"({{{}, "temperature": 1, "top_p": 1, "seed": 11, "n": 3, "max_tokens": 600{}}})", kHello, extra);
    LocalCompletion c(parse_request(Endpoint::ChatCompletions, body, *f.tok, f.d), *f.model, *f.tok, f.d);
    return json::parse(c.run());
  };
  const json record = run(fmt::format(R"(, "response_format": {})", strict_format(kRecordSchema)));
  REQUIRE(record["choices"].size() == 3);
  for (const json& c : record["choices"]) {
    INFO(c.dump());
    CHECK(c["finish_reason"] == "stop");
    const json v = json::parse(c["message"]["content"].get<std::string>());
    CHECK(v["ok"].is_boolean());
    CHECK((v["n"].is_number_integer() && v["n"] >= 0 && v["n"] <= 9));
    CHECK(v.size() == 2);
  }
  const json calls = run(fmt::format(R"(, "tools": {}, "tool_choice": "required", "parallel_tool_calls": false)", kCityTools));
  for (const json& c : calls["choices"]) {
    INFO(c.dump());
    CHECK(c["finish_reason"] == "tool_calls");
    REQUIRE(c["message"]["tool_calls"].size() == 1);
    const json& fn = c["message"]["tool_calls"][0]["function"];
    const json args = json::parse(fn["arguments"].get<std::string>());
    if (fn["name"] == "get_weather") CHECK((args["city"].is_string() && args["city"].get<std::string>().size() <= 12 * 4));
    else CHECK(fn["name"] == "noop");
  }
}

TEST_CASE("request bodies nested 100k deep are a 400 that says so, on every endpoint", "[openai][limits]") {
  Fixture f;
  const std::string deep = std::string(100000, '[') + std::string(100000, ']');
  for (const std::string& body : {deep, fmt::format("{{{}, \"tools\": {}}}", kHello, deep),
                                  fmt::format("{{{}, \"response_format\": {{\"type\": \"json_schema\", \"json_schema\": "
                                              "{{\"name\": \"x\", \"schema\": {}}}}}}}", kHello, deep)}) {
    const ApiError e = refused(f, body);
    CHECK(e.status() == 400);
    CHECK_THAT(e.what(), Catch::Contains("nest deeper than 128 levels"));
  }
  CHECK(refused(f, deep, Endpoint::Completions).status() == 400);
  CHECK_THROWS_AS(tokenize_reply(deep, *f.tok, f.d), ApiError);
  CHECK_THROWS_AS(detokenize_reply(deep, *f.tok), ApiError);
  // 1e400 is out of nlohmann's range: a 400 as well, not a 500.
  CHECK(refused(f, fmt::format("{{{}, \"temperature\": 1e400}}", kHello)).status() == 400);
}
