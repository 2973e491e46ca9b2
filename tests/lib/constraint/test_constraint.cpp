// The constraint stage on the fixture tokenizer: what it allows and refuses token by token (random logits at T=1),
// clear errors for bad constraints, and constrained sessions on the small random-weight V3.2 model (JSON, DSML tool
// calls, thinking). The large property runs (hundreds of schemas validated with the jsonschema package, 1,000 tool
// call samplings) are in tests/python/test_constraint.py.
#include <catch2/catch.hpp>
#include <fmt/format.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <random>

#include "dsinfer/constraint.hpp"
#include "dsinfer/session.hpp"

using namespace dsinfer;
using json = nlohmann::ordered_json;
namespace fs = std::filesystem;

namespace {
const fs::path kTokenizer = fs::path(DSINFER_SOURCE_DIR) / "tests" / "fixtures" / "tokenizer";
const fs::path kModels = fs::path(DSINFER_MODELS_DIR);

const Tokenizer& fixture_tokenizer() {
  static auto tok = Tokenizer::load(kTokenizer.string());
  return *tok;
}

ConstraintSpec schema_spec(const std::string& schema) {
  ConstraintSpec s;
  s.kind = ConstraintSpec::Kind::JsonSchema;
  s.json_schema = schema;
  return s;
}

// Samples under the constraint from random logits at temperature 1; returns the token ids (without eos) and
// whether eos ended it. Checks at every step that some token is allowed.
struct Sampled {
  std::vector<int32_t> ids;
  bool ended = false;
};
Sampled sample_random(const Tokenizer& tok, std::shared_ptr<const Constraint> c, uint64_t seed, int max_tokens,
                      ThinkingMode thinking = ThinkingMode::Chat) {
  ConstraintSampler cs(std::move(c), thinking);
  SamplerChain chain;
  chain.add(cs.clone());
  chain.add(make_dist_sampler(seed));
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 2.0f);
  std::vector<float> logits(size_t(tok.size()));
  Sampled out;
  for (int i = 0; i < max_tokens; ++i) {
    for (auto& l : logits) l = normal(rng);
    const int32_t t = chain.sample(logits, int64_t(logits.size()));
    chain.accept(t);
    if (t == tok.eos_id()) {
      out.ended = true;
      break;
    }
    out.ids.push_back(t);
  }
  return out;
}

ErrorCode compile_error(const ConstraintSpec& spec) {
  try {
    Constraint::compile(fixture_tokenizer(), spec);
  } catch (const Error& e) {
    INFO(e.what());
    return e.code();
  }
  return ErrorCode::Ok;
}
}  // namespace

TEST_CASE("a JSON schema constraint gives output that parses and follows the schema", "[constraint]") {
  const Tokenizer& tok = fixture_tokenizer();
  const std::string schema = R"({"type": "object", "properties": {"name": {"type": "string", "maxLength": 12},
      "age": {"type": "integer", "minimum": 0, "maximum": 150}, "tags": {"type": "array", "items": {"enum": ["a", "b"]},
      "maxItems": 3}}, "required": ["name", "age"], "additionalProperties": false})";
  auto c = Constraint::compile(tok, schema_spec(schema));
  int ended = 0;
  for (uint64_t seed = 0; seed < 20; ++seed) {
    const Sampled s = sample_random(tok, c, seed, 400);
    if (!s.ended) continue;
    ++ended;
    const std::string text = tok.decode(s.ids);
    INFO(text);
    const json j = json::parse(text);
    REQUIRE(j.is_object());
    REQUIRE(j.contains("name"));
    REQUIRE(j["name"].is_string());
    REQUIRE(j["name"].get<std::string>().size() <= 12 * 4);
    REQUIRE(j["age"].is_number_integer());
    REQUIRE(j["age"].get<int64_t>() >= 0);
    REQUIRE(j["age"].get<int64_t>() <= 150);
    for (const auto& [k, v] : j.items()) REQUIRE((k == "name" || k == "age" || k == "tags"));
  }
  CHECK(ended >= 15);
}

TEST_CASE("end-of-sentence is allowed exactly when the output is complete", "[constraint]") {
  const Tokenizer& tok = fixture_tokenizer();
  ConstraintSpec spec;
  spec.kind = ConstraintSpec::Kind::Regex;
  spec.regex = "(yes|no)";
  ConstraintSampler cs(Constraint::compile(tok, spec));
  auto allowed = [&] {
    Candidates c;
    for (int32_t i = 0; i < int32_t(tok.size()); ++i) {
      c.ids.push_back(i);
      c.logits.push_back(0.0f);
    }
    cs.apply(c);
    return c.ids;
  };
  auto has = [](const std::vector<int32_t>& v, int32_t id) { return std::find(v.begin(), v.end(), id) != v.end(); };
  auto first = allowed();
  CHECK_FALSE(has(first, tok.eos_id()));
  for (int32_t id : first) {
    const std::string b = tok.token_bytes(id);
    INFO(b);
    CHECK((std::string("yes").rfind(b, 0) == 0 || std::string("no").rfind(b, 0) == 0));
  }
  for (int32_t id : tok.encode("yes")) cs.accept(id);
  CHECK(cs.complete());
  // fill_bitmask says what apply keeps.
  std::vector<uint32_t> bits;
  cs.fill_bitmask(bits);
  REQUIRE(bits.size() == size_t((tok.size() + 31) / 32));
  for (int32_t id = 0; id < int32_t(tok.size()); ++id)
    CHECK(bool((bits[size_t(id) / 32] >> (id % 32)) & 1u) == (id == tok.eos_id()));
  const auto last = allowed();
  CHECK(last == std::vector<int32_t>{tok.eos_id()});
  cs.accept(tok.eos_id());
  CHECK(cs.terminated());
}

TEST_CASE("a token spanning several grammar symbols and UTF-8 split across tokens", "[constraint]") {
  const Tokenizer& tok = fixture_tokenizer();
  // Every multi-byte character of the output arrives whole, whatever tokens carry its bytes.
  auto c = Constraint::compile(tok, schema_spec(R"({"type": "object", "properties": {"w": {"const": "é中"}},
      "required": ["w"], "additionalProperties": false})"));
  ConstraintSampler cs(c);
  const auto ids = tok.encode(R"({"w": "é中"})");
  for (int32_t id : ids) {
    Candidates cand;
    for (int32_t i = 0; i < int32_t(tok.size()); ++i) {
      cand.ids.push_back(i);
      cand.logits.push_back(0.0f);
    }
    cs.apply(cand);
    INFO(id);
    REQUIRE(std::find(cand.ids.begin(), cand.ids.end(), id) != cand.ids.end());
    cs.accept(id);
  }
  CHECK(cs.complete());
  // Never the UTF-8 encoding of a UTF-16 surrogate (ED A0..BF ..), which is not a character: after ED only 80..9F.
  auto byte_token = [&](unsigned char b) {
    for (int32_t id = 0; id < int32_t(tok.size()); ++id)
      if (tok.token_bytes(id) == std::string(1, char(b))) return id;
    return -1;
  };
  ConstraintSampler text(Constraint::compile(tok, schema_spec(R"({"type": "string"})")));
  text.accept(tok.encode("\"")[0]);
  text.accept(byte_token(0xED));
  std::vector<uint32_t> bits;
  text.fill_bitmask(bits);
  auto allowed = [&](int32_t id) { return bool((bits[size_t(id) / 32] >> (id % 32)) & 1u); };
  CHECK(allowed(byte_token(0x9F)));
  CHECK_FALSE(allowed(byte_token(0xA0)));
  CHECK_FALSE(allowed(byte_token(0xBF)));
  // A wrong token is refused with a clear error on the next step.
  ConstraintSampler bad(c);
  bad.accept(tok.encode("[")[0]);
  Candidates cand{{0, 1, 2}, {0, 0, 0}};
  CHECK_THROWS_WITH(bad.apply(cand), Catch::Contains("does not continue the constrained output"));
}

TEST_CASE("thinking: the reasoning is free, the constraint starts after </think>", "[constraint]") {
  const Tokenizer& tok = fixture_tokenizer();
  auto c = Constraint::compile(tok, schema_spec(R"({"type": "object", "properties": {"ok": {"type": "boolean"}},
      "required": ["ok"], "additionalProperties": false})"));
  for (uint64_t seed = 0; seed < 10; ++seed) {
    ConstraintSpec spec = c->spec();
    spec.thinking = ThinkingMode::Thinking;
    spec.max_reasoning_tokens = 30;
    auto ct = Constraint::compile(tok, spec);
    const Sampled s = sample_random(tok, ct, seed, 200, ThinkingMode::Thinking);
    REQUIRE(s.ended);
    std::string text = tok.decode(s.ids) + "<｜end▁of▁sentence｜>";
    INFO(text);
    const ChatMessage m = parse_completion(text, ThinkingMode::Thinking);
    REQUIRE(m.content.has_value());
    const json j = json::parse(*m.content);
    CHECK(j["ok"].is_boolean());
  }
}

TEST_CASE("compile_request_constraint: unenforceable tools under tool_choice auto are left out, with the reason",
          "[constraint]") {
  const Tokenizer& tok = fixture_tokenizer();
  const std::string unenforceable = R"([{"type": "function", "function": {"name": "f", "parameters": {"type": "object",
      "properties": {"x": {"not": {"type": "string"}}}}}}])";
  const std::string fine = R"([{"type": "function", "function": {"name": "f", "parameters": {"type": "object",
      "properties": {"x": {"type": "integer"}}}}}])";
  std::string why = "stale";
  // Nothing to enforce: no constraint, no reason.
  CHECK(compile_request_constraint(tok, ConstraintSpec{}, &why) == nullptr);
  CHECK(why.empty());
  // Enforceable tools under auto: compiled.
  auto c = compile_request_constraint(tok, constraint_from_request("", fine, ""), &why);
  REQUIRE(c != nullptr);
  CHECK(c->spec().kind == ConstraintSpec::Kind::TextOrToolCalls);
  CHECK(why.empty());
  // Unenforceable under auto: left out, the reason names the keyword; strict when no reason is asked for.
  const ConstraintSpec auto_spec = constraint_from_request("", unenforceable, "");
  CHECK(compile_request_constraint(tok, auto_spec, &why) == nullptr);
  CHECK_THAT(why, Catch::Contains("not"));
  CHECK_THROWS_AS(compile_request_constraint(tok, auto_spec), Error);
  // With a reasoning cap in thinking mode, the cap is still enforced.
  const ConstraintSpec capped =
      constraint_from_request("", unenforceable, "", true, ThinkingMode::Thinking, /*max_reasoning_tokens=*/5);
  auto cap_only = compile_request_constraint(tok, capped, &why);
  REQUIRE(cap_only != nullptr);
  CHECK(cap_only->spec().kind == ConstraintSpec::Kind::None);
  CHECK(cap_only->spec().max_reasoning_tokens == 5);
  CHECK_FALSE(why.empty());
  // Asked for (required): never left out.
  CHECK_THROWS_AS(compile_request_constraint(tok, constraint_from_request("", unenforceable, R"("required")"), &why),
                  Error);
}

TEST_CASE("requests map to constraints as OpenAI's fields say", "[constraint]") {
  const std::string tools = R"([{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object",
      "properties": {"city": {"type": "string"}}, "required": ["city"]}}}])";
  CHECK(constraint_from_request("", "", "").kind == ConstraintSpec::Kind::None);
  CHECK(constraint_from_request(R"({"type": "text"})", "", "").kind == ConstraintSpec::Kind::None);
  CHECK(constraint_from_request(R"({"type": "json_object"})", "", "").kind == ConstraintSpec::Kind::JsonObject);
  CHECK(constraint_from_request(R"({"type": "json_schema", "json_schema": {"name": "x", "schema": {}}})", "", "").kind ==
        ConstraintSpec::Kind::None);  // not strict: shown to the model only
  auto s = constraint_from_request(R"({"type": "json_schema", "json_schema": {"name": "x", "strict": true,
      "schema": {"type": "integer"}}})", "", "");
  CHECK(s.kind == ConstraintSpec::Kind::JsonSchema);
  CHECK(json::parse(s.json_schema) == json{{"type", "integer"}});
  CHECK(constraint_from_request("", tools, R"("required")").kind == ConstraintSpec::Kind::ToolCalls);
  CHECK(constraint_from_request("", tools, R"("auto")").kind == ConstraintSpec::Kind::TextOrToolCalls);
  auto named = constraint_from_request("", tools, R"({"type": "function", "function": {"name": "get_weather"}})");
  CHECK(named.tool_name == "get_weather");
  CHECK(constraint_from_request(R"({"type": "json_object"})", tools, "").or_tool_calls);
  CHECK_THROWS_WITH(constraint_from_request("", tools, R"({"type": "function", "function": {"name": "nope"}})"),
                    Catch::Contains("\"nope\", which is not among the tools"));
  CHECK_THROWS_WITH(constraint_from_request("", "", R"("required")"), Catch::Contains("there are no tools"));
  CHECK_THROWS_WITH(constraint_from_request(R"({"type": "xml"})", "", ""), Catch::Contains("unknown type \"xml\""));
  CHECK_THROWS_WITH(constraint_from_request("{", "", ""), Catch::Contains("not valid JSON"));
  auto r = constraint_from_request_json(R"({"messages": [], "tools": )" + tools +
                                        R"(, "tool_choice": "required", "parallel_tool_calls": false})");
  CHECK(r.kind == ConstraintSpec::Kind::ToolCalls);
  CHECK_FALSE(r.parallel_tool_calls);
}

TEST_CASE("bad constraints are clear errors before generation", "[constraint]") {
  CHECK(compile_error(schema_spec(R"({"type": "object", "properties": {"a": {"not": {"type": "string"}}}})")) ==
        ErrorCode::Unsupported);
  CHECK(compile_error(schema_spec(R"({"type": "array", "uniqueItems": true})")) == ErrorCode::Unsupported);
  CHECK(compile_error(schema_spec(R"({"type": "strin"})")) == ErrorCode::InvalidArgument);
  CHECK(compile_error(schema_spec(R"({"type": "string", "minLength": 5, "maxLength": 2})")) == ErrorCode::InvalidArgument);
  CHECK(compile_error(schema_spec(R"({"$ref": "#/$defs/missing"})")) == ErrorCode::InvalidArgument);
  CHECK(compile_error(schema_spec(R"({"$ref": "http://example.com/s.json"})")) == ErrorCode::Unsupported);
  CHECK(compile_error(schema_spec("{\"type\": ")) == ErrorCode::InvalidArgument);
  std::string deep;
  for (int i = 0; i < 100; ++i) deep += R"({"type": "array", "items": )";
  deep += "{}";
  for (int i = 0; i < 100; ++i) deep += "}";
  CHECK(compile_error(schema_spec(deep)) == ErrorCode::InvalidArgument);
  CHECK(compile_error(schema_spec(std::string(2 << 20, ' '))) == ErrorCode::InvalidArgument);
  ConstraintSpec re;
  re.kind = ConstraintSpec::Kind::Regex;
  re.regex = "[a-";
  CHECK(compile_error(re) == ErrorCode::InvalidArgument);
  re.regex = "[^\\s\\S]";
  CHECK(compile_error(re) == ErrorCode::InvalidArgument);
  re.regex = std::string(100, '(') + "a" + std::string(100, ')');
  CHECK(compile_error(re) == ErrorCode::InvalidArgument);
  ConstraintSpec tools;
  tools.kind = ConstraintSpec::Kind::ToolCalls;
  tools.tools_json = R"([{"type": "function", "function": {"name": "f", "parameters": {"type": "object",
      "properties": {"x": {"type": "integer", "minimum": 10, "maximum": 1}}}}}])";
  CHECK(compile_error(tools) == ErrorCode::InvalidArgument);
  tools.tools_json = R"([{"type": "function", "function": {"name": "a\"b"}}])";
  CHECK(compile_error(tools) == ErrorCode::InvalidArgument);
  // Request fields of the wrong JSON type are errors naming them, never a JSON library exception.
  auto request_error = [](const std::string& body) {
    try {
      constraint_from_request_json(body);
    } catch (const Error& e) {
      INFO(e.what());
      return e.code();
    }
    return ErrorCode::Ok;
  };
  const std::string f = R"("tools": [{"type": "function", "function": {"name": "f"}}])";
  CHECK(request_error("{" + f + R"(, "tool_choice": {"type": 5}})") == ErrorCode::InvalidArgument);
  CHECK(request_error("{" + f + R"(, "tool_choice": {"type": "function", "function": []}})") ==
        ErrorCode::InvalidArgument);
  CHECK(request_error(R"({"response_format": {"type": "json_schema", "json_schema": {"strict": null,
      "schema": {}}}})") == ErrorCode::Ok);
}

TEST_CASE("DSML tool calls from the random-weight model parse and name only declared tools", "[constraint]") {
  ModelLoadParams lp;
  lp.n_threads = 2;
  auto model = Model::load((kModels / "v32-tiny").string(), lp);
  auto tok = Tokenizer::load((kModels / "v32-tiny").string());
  const std::string tools = R"([{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object",
      "properties": {"city": {"type": "string", "maxLength": 10}, "days": {"type": "integer", "minimum": 1, "maximum": 7}},
      "required": ["city", "days"]}}}, {"type": "function", "function": {"name": "noop", "parameters": {"type": "object",
      "properties": {}}}}])";
  const std::string request = R"({"messages": [{"role": "user", "content": "Weather in Paris?"}], "tools": )" + tools +
                              R"(, "tool_choice": "required"})";
  for (ThinkingMode mode : {ThinkingMode::Chat, ThinkingMode::Thinking}) {
    SessionParams sp;
    sp.capacity = 4096;
    sp.thinking = mode;
    Session s(*model, *tok, sp);
    s.set_messages(chat_messages_from_json(request));
    ConstraintSpec spec = constraint_from_request_json(request, mode);
    spec.max_reasoning_tokens = 40;
    GenerateParams g;
    g.max_tokens = 3000;
    g.constraint = Constraint::compile(*tok, spec);
    for (uint64_t seed = 0; seed < 4; ++seed) {
      s.set_sampler(make_default_chain(GenerationConfig{}, seed));
      s.set_messages(chat_messages_from_json(request));
      const FinishReason why = s.generate(g);
      INFO(s.generated_text());
      REQUIRE(why == FinishReason::Eos);
      const ChatMessage m = s.reply();
      REQUIRE_FALSE(m.tool_calls.empty());
      for (const auto& call : m.tool_calls) {
        REQUIRE((call.name == "get_weather" || call.name == "noop"));
        const json args = json::parse(call.arguments);
        if (call.name == "get_weather") {
          CHECK(args["city"].is_string());
          CHECK(args["days"].get<int64_t>() >= 1);
          CHECK(args["days"].get<int64_t>() <= 7);
        }
      }
      // The parser of the official format agrees.
      const ChatMessage strict = parse_completion(s.generated_text() + "<｜end▁of▁sentence｜>", mode);
      CHECK(strict.tool_calls.size() == m.tool_calls.size());
    }
  }
}

TEST_CASE("tool_choice auto with an enforced format: the answer is either", "[constraint]") {
  const Tokenizer& tok = fixture_tokenizer();
  const std::string tools = R"([{"type": "function", "function": {"name": "ping", "parameters": {"type": "object",
      "properties": {"n": {"type": "integer", "minimum": 0, "maximum": 3}}, "required": ["n"]}}}])";
  const ConstraintSpec spec = constraint_from_request(R"({"type": "json_schema", "json_schema": {"name": "x",
      "strict": true, "schema": {"type": "object", "properties": {"x": {"type": "integer", "minimum": 0,
      "maximum": 9}}, "required": ["x"], "additionalProperties": false}}})", tools, R"("auto")");
  REQUIRE(spec.or_tool_calls);
  auto c = Constraint::compile(tok, spec);
  int calls = 0, objects = 0;
  for (uint64_t seed = 0; seed < 40; ++seed) {
    const Sampled s = sample_random(tok, c, seed, 600);
    if (!s.ended) continue;
    const std::string text = tok.decode(s.ids);
    INFO(text);
    const ChatMessage m = parse_completion(text + "<｜end▁of▁sentence｜>", ThinkingMode::Chat);
    if (!m.tool_calls.empty()) {
      ++calls;
      CHECK(m.tool_calls[0].name == "ping");
      CHECK(json::parse(m.tool_calls[0].arguments)["n"].get<int>() <= 3);
    } else {
      ++objects;
      CHECK(json::parse(text)["x"].get<int>() <= 9);
    }
  }
  CHECK(calls + objects >= 30);
  CHECK(objects > 0);
}

namespace {
// Whether the constraint takes `text` token by token (the fixture tokenizer's encoding) and whether it is then
// complete (end-of-sentence allowed).
struct Fed {
  bool taken = true;
  bool complete = false;
};
Fed feed(const Tokenizer& tok, std::shared_ptr<const Constraint> c, const std::string& text) {
  ConstraintSampler cs(std::move(c));
  std::vector<uint32_t> bits;
  Fed out;
  for (int32_t id : tok.encode(text)) {
    cs.fill_bitmask(bits);
    if (!((bits[size_t(id) / 32] >> (id % 32)) & 1u)) {
      out.taken = false;
      return out;
    }
    cs.accept(id);
  }
  out.complete = cs.complete();
  return out;
}
}  // namespace

TEST_CASE("tool_choice auto: free text, or text and then a call that parses and names a declared tool",
          "[constraint]") {
  const Tokenizer& tok = fixture_tokenizer();
  const std::string tools = R"([{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object",
      "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 1, "maximum": 7}},
      "required": ["city"]}}}, {"type": "function", "function": {"name": "noop", "parameters": {"type": "object",
      "properties": {}}}}])";
  const ConstraintSpec spec = constraint_from_request("", tools, R"("auto")");
  REQUIRE(spec.kind == ConstraintSpec::Kind::TextOrToolCalls);
  CHECK(constraint_from_request("", tools, "").kind == ConstraintSpec::Kind::TextOrToolCalls);  // auto is the default
  CHECK(constraint_from_request("", tools, R"("none")").kind == ConstraintSpec::Kind::None);
  auto c = Constraint::compile(tok, spec);

  const std::string call = "\n\n<｜DSML｜function_calls>\n<｜DSML｜invoke name=\"get_weather\">\n"
                           "<｜DSML｜parameter name=\"city\" string=\"true\">Paris</｜DSML｜parameter>\n"
                           "<｜DSML｜parameter name=\"days\" string=\"false\">3</｜DSML｜parameter>\n"
                           "</｜DSML｜invoke>\n</｜DSML｜function_calls>";
  // Text alone, with blank lines and markup-like text in it: taken and complete.
  for (const std::string text : {"It is sunny in Paris.", "Two lines.\n\nAnd <b>more</b> < 3 | x", ""}) {
    INFO(text);
    const Fed f = feed(tok, c, text);
    CHECK(f.taken);
    CHECK(f.complete);
  }
  // A call, with or without text before it.
  for (const std::string& text : {call, "Let me look that up." + call}) {
    INFO(text);
    const Fed f = feed(tok, c, text);
    CHECK(f.taken);
    CHECK(f.complete);
  }
  // Inside a call it is not complete; after it nothing but the end.
  CHECK_FALSE(feed(tok, c, call.substr(0, call.size() - 10)).complete);
  CHECK_FALSE(feed(tok, c, call + "Done.").taken);
  // Calls the tools do not allow: an undeclared tool or parameter, a value against the schema, a missing required
  // parameter, DSML markup outside a block, a block that does not begin as DeepSeek's encoder writes it.
  std::string undeclared = call;
  undeclared.replace(undeclared.find("get_weather"), 11, "get_weathers");
  std::string bad_param = call;
  bad_param.replace(bad_param.find("\"days\""), 6, "\"week\"");
  std::string out_of_range = call;
  out_of_range.replace(out_of_range.find(">3<"), 3, ">9<");
  const std::string missing = "\n\n<｜DSML｜function_calls>\n<｜DSML｜invoke name=\"get_weather\">\n</｜DSML｜invoke>";
  for (const std::string& text : {undeclared, bad_param, out_of_range, missing,
                                  std::string("Sure <｜DSML｜invoke name=\"noop\">"),
                                  std::string("Done.</｜DSML｜function_calls>"),
                                  std::string("\n<｜DSML｜function_calls>\n"),
                                  std::string("\n\n<｜DSML｜invoke name=\"noop\">")}) {
    INFO(text);
    CHECK_FALSE(feed(tok, c, text).taken);
  }
  // A tool whose schema declares no parameters but allows any ({"type": "object"}) takes any, as text or JSON; one
  // with "properties": {} (or no "parameters" at all) takes none.
  const std::string open_tools = R"([{"type": "function", "function": {"name": "anything", "parameters": {"type":
      "object"}}}, {"type": "function", "function": {"name": "nothing", "parameters": {"type": "object",
      "properties": {}}}}, {"type": "function", "function": {"name": "bare"}}])";
  auto open = Constraint::compile(tok, constraint_from_request("", open_tools, R"("auto")"));
  const std::string any_args = "\n\n<｜DSML｜function_calls>\n<｜DSML｜invoke name=\"anything\">\n"
                               "<｜DSML｜parameter name=\"city\" string=\"true\">Paris, \"old town\"</｜DSML｜parameter>\n"
                               "<｜DSML｜parameter name=\"days\" string=\"false\">[1, {\"a\": null}]</｜DSML｜parameter>\n"
                               "</｜DSML｜invoke>\n</｜DSML｜function_calls>";
  CHECK(feed(tok, open, any_args).complete);
  for (const std::string name : {"anything", "nothing", "bare"}) {
    INFO(name);
    CHECK(feed(tok, open, "\n\n<｜DSML｜function_calls>\n<｜DSML｜invoke name=\"" + name +
                              "\">\n\n</｜DSML｜invoke>\n</｜DSML｜function_calls>").complete);
  }
  std::string to_nothing = any_args;
  to_nothing.replace(to_nothing.find("anything"), 8, "nothing");
  CHECK_FALSE(feed(tok, open, to_nothing).taken);
  std::string bad_json = any_args;
  bad_json.replace(bad_json.find("[1, "), 4, "[1,, ");
  CHECK_FALSE(feed(tok, open, bad_json).taken);
  // parallel_tool_calls false: one invocation.
  auto one = Constraint::compile(tok, constraint_from_request("", tools, R"("auto")", /*parallel_tool_calls=*/false));
  const std::string two = call.substr(0, call.find("</｜DSML｜function_calls>")) +
                          "<｜DSML｜invoke name=\"noop\">\n\n</｜DSML｜invoke>\n</｜DSML｜function_calls>";
  CHECK(feed(tok, c, two).complete);
  CHECK_FALSE(feed(tok, one, two).taken);
}

TEST_CASE("a tool-call block is allowed exactly as the chat encoder writes it, arguments or none", "[constraint]") {
  // The grammar must allow what the model was trained on: the official encoder's rendering of a call. A tool whose
  // parameters are all optional, called with none, is written with an empty line between the invoke tags.
  const Tokenizer& tok = fixture_tokenizer();
  const std::string tools = R"([{"type": "function", "function": {"name": "search", "parameters": {"type": "object",
      "properties": {"query": {"type": "string"}, "limit": {"type": "integer"}}}}},
      {"type": "function", "function": {"name": "noop", "parameters": {"type": "object", "properties": {}}}},
      {"type": "function", "function": {"name": "find", "parameters": {"type": "object",
      "properties": {"a": {"type": "string"}, "b": {"type": "integer"}}, "required": ["b"]}}}])";
  ConstraintSpec spec;
  spec.kind = ConstraintSpec::Kind::ToolCalls;
  spec.tools_json = tools;
  auto constraint = Constraint::compile(tok, spec);
  const std::vector<std::pair<std::string, std::string>> calls = {
      {"search", "{}"},         {"search", R"({"query": "x"})"},  {"search", R"({"limit": 3})"},
      {"search", R"({"query": "x", "limit": 3})"}, {"noop", "{}"}, {"find", R"({"b": 1})"},
      {"find", R"({"a": "y", "b": 2})"}};
  for (const auto& [name, arguments] : calls) {
    const std::string request = R"({"messages": [{"role": "user", "content": "Go."}, {"role": "assistant",
        "content": "", "tool_calls": [{"type": "function", "function": {"name": ")" + name + R"(", "arguments": )" +
                                json(arguments).dump() + R"(}}]}]})";
    const std::string prompt = encode_chat(chat_messages_from_json(request));
    const size_t begin = prompt.find("\n\n<｜DSML｜function_calls>");
    const std::string end_tag = "</｜DSML｜function_calls>";
    const size_t end = prompt.find(end_tag);
    REQUIRE(begin != std::string::npos);
    REQUIRE(end != std::string::npos);
    const std::string block = prompt.substr(begin, end + end_tag.size() - begin);
    INFO(block);
    ConstraintSampler cs(constraint);
    std::vector<uint32_t> mask;
    bool allowed = true;
    for (int32_t id : tok.encode(block)) {
      cs.fill_bitmask(mask);
      allowed = (mask[size_t(id) / 32] >> (id % 32)) & 1u;
      if (!allowed) break;
      cs.accept(id);
    }
    CHECK(allowed);
    CHECK(cs.complete());
  }
}
