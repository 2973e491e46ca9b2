// Constrained decoding over xgrammar's C++ core: request fields -> ConstraintSpec -> a compiled grammar indexed
// against the tokenizer's vocabulary -> the sampler stage that masks candidates.
//
// The vocabulary is given to xgrammar as raw bytes (Tokenizer::token_bytes), so tokens that span several grammar
// symbols and UTF-8 characters split across tokens are matched byte by byte; special tokens are given as empty
// strings, which xgrammar never allows inside the grammar, and end-of-sentence is its stop token (allowed exactly when
// the answer is complete). The reasoning of thinking mode is handled here, not by the grammar: it is free text up to
// </think> (only special tokens other than </think> are removed), and the grammar's matcher starts after it.
#include "dsinfer/constraint.hpp"

#include <dlpack/dlpack.h>
#include <fmt/format.h>
#include <xgrammar/xgrammar.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <list>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <thread>

#include "constraint/xgrammar_logging.hpp"
#include "util/json_input.hpp"

namespace dsinfer {

namespace {

using json = nlohmann::ordered_json;

constexpr size_t kMaxConstraintBytes = size_t(1) << 20;  // a schema, regex or tool list
constexpr int kMaxNesting = 64;                            // JSON nesting of a schema / tool list; regex groups
// Whitespace the grammar allows between JSON tokens, per run: about what llama.cpp's JSON grammars allow (enough for
// output pretty-printed 10 levels deep), and a bound, so that a sampler cannot wander through whitespace for ever.
constexpr int kMaxWhitespaceRun = 20;
// In tool-call arguments (string="false" values) runs of at most 2: DeepSeek's encoder writes them with json.dumps
// (", " and ": "), so that is the layout the model knows.
constexpr int kMaxWhitespaceRunInArguments = 2;

[[noreturn]] void invalid(const std::string& what) { throw Error(ErrorCode::InvalidArgument, what); }

void check_size(std::string_view text, const char* what) {
  if (text.size() > kMaxConstraintBytes)
    invalid(fmt::format("{} is {} bytes; the limit is {} bytes", what, text.size(), kMaxConstraintBytes));
}

json parse_limited(std::string_view text, const char* what) {
  check_size(text, what);
  if (json_nesting_depth(text, kMaxNesting) > kMaxNesting)
    invalid(fmt::format("{} is nested deeper than {} levels", what, kMaxNesting));
  try {
    return parse_json_input<json>(text);
  } catch (const JsonInputError& e) {
    invalid(fmt::format("{} is not valid JSON: {}", what, e.what()));
  }
}

// Regex nesting (groups) and size, before xgrammar parses it.
void check_regex_limits(std::string_view re, const char* what) {
  check_size(re, what);
  int depth = 0, max_depth = 0;
  bool in_class = false;
  for (size_t i = 0; i < re.size(); ++i) {
    const char ch = re[i];
    if (ch == '\\') {
      ++i;
    } else if (in_class) {
      if (ch == ']') in_class = false;
    } else if (ch == '[') {
      in_class = true;
    } else if (ch == '(') {
      max_depth = std::max(max_depth, ++depth);
    } else if (ch == ')') {
      --depth;
    }
  }
  if (max_depth > kMaxNesting) invalid(fmt::format("{} nests groups deeper than {} levels", what, kMaxNesting));
}

const json* find_tool(const json& tools, const std::string& name) {
  for (const auto& t : tools)
    if (t.contains("function") && t["function"].contains("name") && t["function"]["name"] == name) return &t;
  return nullptr;
}

// The tool list, checked: [{"type": "function", "function": {"name": string, "parameters": object?}}, ...].
json parse_tools(std::string_view tools_json) {
  json tools = parse_limited(tools_json, "\"tools\"");
  if (!tools.is_array()) invalid("\"tools\" must be a list of {\"type\": \"function\", \"function\": {...}}");
  std::set<std::string> names;
  for (size_t i = 0; i < tools.size(); ++i) {
    const json& t = tools[i];
    if (!t.is_object() || !t.contains("function") || !t["function"].is_object())
      invalid(fmt::format("tools[{}] must be {{\"type\": \"function\", \"function\": {{\"name\": ..., \"parameters\": "
                          "...}}}}", i));
    if (t.contains("type") && t["type"] != "function")
      invalid(fmt::format("tools[{}]: only \"function\" tools are supported", i));
    const json& f = t["function"];
    if (!f.contains("name") || !f["name"].is_string() || f["name"].get<std::string>().empty())
      invalid(fmt::format("tools[{}].function needs a non-empty \"name\" string", i));
    const std::string name = f["name"].get<std::string>();
    if (name.find_first_of("\"<>\n") != std::string::npos)
      invalid(fmt::format("tools[{}].function.name \"{}\" cannot be written in a DSML invoke tag", i, name));
    if (!names.insert(name).second) invalid(fmt::format("tools[{}]: the name \"{}\" is declared twice", i, name));
    if (f.contains("parameters") && !f["parameters"].is_null() && !f["parameters"].is_object() &&
        !f["parameters"].is_boolean())
      invalid(fmt::format("tools[{}].function.parameters must be a JSON Schema object", i));
  }
  return tools;
}

}  // namespace

ConstraintSpec constraint_from_request(std::string_view response_format_json, std::string_view tools_json,
                                       std::string_view tool_choice_json, bool parallel_tool_calls,
                                       ThinkingMode thinking, int64_t max_reasoning_tokens) {
  ConstraintSpec spec;
  spec.thinking = thinking;
  spec.max_reasoning_tokens = max_reasoning_tokens;
  spec.parallel_tool_calls = parallel_tool_calls;

  json tools = json::array();
  if (!tools_json.empty()) {
    json t = parse_tools(tools_json);
    if (!t.is_null()) tools = std::move(t);
  }

  // The response format.
  if (!response_format_json.empty()) {
    const json rf = parse_limited(response_format_json, "\"response_format\"");
    if (!rf.is_null()) {
      if (!rf.is_object() || !rf.contains("type") || !rf["type"].is_string())
        invalid("\"response_format\" must be {\"type\": \"text\" | \"json_object\" | \"json_schema\" | \"regex\", ...}");
      const std::string type = rf["type"].get<std::string>();
      if (type == "json_object") {
        spec.kind = ConstraintSpec::Kind::JsonObject;
      } else if (type == "json_schema") {
        if (!rf.contains("json_schema") || !rf["json_schema"].is_object())
          invalid("response_format: a json_schema response format needs a \"json_schema\" object");
        const json& js = rf["json_schema"];
        if (js.contains("strict") && !js["strict"].is_boolean() && !js["strict"].is_null())
          invalid("response_format.json_schema.strict must be a boolean");
        if (!js.contains("schema") || !(js["schema"].is_object() || js["schema"].is_boolean()))
          invalid("response_format.json_schema needs a \"schema\" (a JSON Schema object)");
        if (js.contains("strict") && js["strict"] == true) {  // (null: not strict)
          spec.kind = ConstraintSpec::Kind::JsonSchema;
          spec.json_schema = js["schema"].dump();
        }
      } else if (type == "regex") {
        if (!rf.contains("regex") || !rf["regex"].is_string())
          invalid("response_format: a regex response format needs a \"regex\" string");
        spec.kind = ConstraintSpec::Kind::Regex;
        spec.regex = rf["regex"].get<std::string>();
      } else if (type != "text") {
        invalid(fmt::format("response_format: unknown type \"{}\" (text, json_object, json_schema or regex)", type));
      }
    }
  }

  // tool_choice.
  std::string choice = "auto";
  std::string named;
  if (!tool_choice_json.empty()) {
    const json tc = parse_limited(tool_choice_json, "\"tool_choice\"");
    if (tc.is_string()) {
      choice = tc.get<std::string>();
      if (choice != "auto" && choice != "none" && choice != "required")
        invalid(fmt::format("tool_choice \"{}\" is not \"auto\", \"none\" or \"required\"", choice));
    } else if (tc.is_object() && tc.contains("type") && tc["type"] == "function" && tc.contains("function") &&
               tc["function"].is_object() && tc["function"].contains("name") && tc["function"]["name"].is_string()) {
      choice = "function";
      named = tc["function"]["name"].get<std::string>();
    } else if (!tc.is_null()) {
      invalid("tool_choice must be \"none\", \"auto\", \"required\" or {\"type\": \"function\", \"function\": "
              "{\"name\": ...}}");
    }
  }
  if ((choice == "required" || choice == "function") && tools.empty())
    invalid(fmt::format("tool_choice {} asks for a tool call, but there are no tools",
                        choice == "required" ? "\"required\"" : "names a function"));
  if (choice == "function" && !find_tool(tools, named))
    invalid(fmt::format("tool_choice names the function \"{}\", which is not among the tools", named));

  if (choice == "required" || choice == "function") {
    spec.kind = ConstraintSpec::Kind::ToolCalls;
    spec.json_schema.clear();
    spec.regex.clear();
    spec.tools_json = tools.dump();
    spec.tool_name = named;
  } else if (choice == "auto" && !tools.empty() && spec.enforces()) {
    spec.or_tool_calls = true;
    spec.tools_json = tools.dump();
  } else if (choice == "auto" && !tools.empty()) {
    spec.kind = ConstraintSpec::Kind::TextOrToolCalls;
    spec.tools_json = tools.dump();
  }
  return spec;
}

ConstraintSpec constraint_from_request_json(std::string_view request_json, ThinkingMode thinking) {
  check_size(request_json, "the request");
  // The messages may be long: only the fields read here are held to the constraint limits.
  json j;
  try {
    j = parse_json_input<json>(request_json);
  } catch (const JsonInputError& e) {
    invalid(fmt::format("the request is not valid JSON: {}", e.what()));
  }
  if (!j.is_object()) return constraint_from_request("", "", "", true, thinking);
  auto field = [&](const char* key) { return j.contains(key) && !j[key].is_null() ? j[key].dump() : std::string(); };
  bool parallel = true;
  if (j.contains("parallel_tool_calls") && !j["parallel_tool_calls"].is_null()) {
    if (!j["parallel_tool_calls"].is_boolean()) invalid("\"parallel_tool_calls\" must be a boolean");
    parallel = j["parallel_tool_calls"].get<bool>();
  }
  int64_t max_reasoning = -1;
  if (j.contains("max_reasoning_tokens") && !j["max_reasoning_tokens"].is_null()) {
    if (!j["max_reasoning_tokens"].is_number_integer() || j["max_reasoning_tokens"].get<int64_t>() < 0)
      invalid("\"max_reasoning_tokens\" must be an integer >= 0");
    max_reasoning = j["max_reasoning_tokens"].get<int64_t>();
  }
  return constraint_from_request(field("response_format"), field("tools"), field("tool_choice"), parallel, thinking,
                                 max_reasoning);
}

// ------------------------------------------------------------------------------------------- vocabulary index --

namespace {

// What compile needs from one tokenizer: xgrammar's view of its vocabulary, a compiler (with xgrammar's grammar
// cache) and the ids the reasoning may not use.
struct VocabIndex {
  uint64_t tokenizer_id = 0;
  int32_t vocab_size = 0;
  int32_t eos = -1;
  int32_t think_end = -1;                 // </think> as one token (-1: none)
  std::vector<uint8_t> reasoning_banned;  // per id: a special token other than </think>
  std::vector<int32_t> reasoning_mask;    // the same as an allowed-token bitmask (xgrammar's layout)
  std::optional<xgrammar::TokenizerInfo> info;
  std::optional<xgrammar::GrammarCompiler> compiler;
};

std::shared_ptr<VocabIndex> build_index(const Tokenizer& tok) {
  auto ix = std::make_shared<VocabIndex>();
  ix->tokenizer_id = tok.instance_id();
  ix->vocab_size = int32_t(tok.size());
  ix->eos = tok.eos_id();
  if (ix->eos < 0) invalid("constrained decoding needs a tokenizer with an end-of-sentence token");
  ix->think_end = tok.token_to_id("</think>");
  std::vector<std::string> vocab(size_t(ix->vocab_size));
  ix->reasoning_banned.assign(size_t(ix->vocab_size), 0);
  for (int32_t id = 0; id < ix->vocab_size; ++id) {
    if (tok.is_special(id)) {
      // Empty: xgrammar never allows it inside a grammar (the stop token is handled on its own).
      ix->reasoning_banned[size_t(id)] = id != ix->think_end;
    } else {
      vocab[size_t(id)] = tok.token_bytes(id);
      if (vocab[size_t(id)].empty()) ix->reasoning_banned[size_t(id)] = 1;
    }
  }
  ix->reasoning_mask.assign(size_t(xgrammar::GetBitmaskSize(ix->vocab_size)), 0);
  for (int32_t id = 0; id < ix->vocab_size; ++id)
    if (!ix->reasoning_banned[size_t(id)]) ix->reasoning_mask[size_t(id) >> 5] |= int32_t(1u << (id & 31));
  ix->info.emplace(vocab, xgrammar::VocabType::RAW, ix->vocab_size, std::vector<int32_t>{ix->eos}, false);
  const int threads = int(std::clamp<unsigned>(std::thread::hardware_concurrency(), 1, 8));
  ix->compiler.emplace(*ix->info, threads, /*cache_enabled=*/true, /*max_memory_bytes=*/int64_t(256) << 20);
  return ix;
}

// The indexes of the last few tokenizers, by Tokenizer::instance_id (an address could be reused by a new one).
std::shared_ptr<VocabIndex> index_for(const Tokenizer& tok) {
  static std::mutex mu;
  static std::list<std::shared_ptr<VocabIndex>> recent;
  std::lock_guard<std::mutex> lock(mu);
  for (auto it = recent.begin(); it != recent.end(); ++it)
    if ((*it)->tokenizer_id == tok.instance_id()) {
      recent.splice(recent.begin(), recent, it);
      return recent.front();
    }
  recent.push_front(build_index(tok));
  if (recent.size() > 4) recent.pop_back();
  return recent.front();
}

void check_full_schema(json& schema, const std::string& where);

json const_string(const std::string& v) { return {{"type", "const_string"}, {"value", v}}; }

// Resolves a "#/$defs/..." or "#/definitions/..." reference against the tool's parameters schema.
const json& resolve_param_ref(const json& root, const json& schema, int depth = 0) {
  if (!schema.is_object() || !schema.contains("$ref") || !schema["$ref"].is_string()) return schema;
  if (depth > kMaxNesting) invalid("tool parameter $refs refer to each other in a cycle");
  const std::string ref = schema["$ref"].get<std::string>();
  try {
    return resolve_param_ref(root, root.at(json::json_pointer(ref.substr(1))), depth + 1);
  } catch (const json::exception&) {
    invalid(fmt::format("$ref \"{}\" does not resolve inside the tool's parameters", ref));
  }
}

// Whether a parameter's value is always a JSON string (then DSML writes it as raw text, string="true"), never one
// (JSON, string="false"), or either (written as JSON: a quoted string is a valid string="false" value).
enum class ParamKind { Text, Json };
ParamKind param_kind(const json& schema) {
  if (!schema.is_object()) return ParamKind::Json;
  if (schema.contains("const")) return schema["const"].is_string() ? ParamKind::Text : ParamKind::Json;
  if (schema.contains("enum") && schema["enum"].is_array()) {
    for (const auto& v : schema["enum"])
      if (!v.is_string()) return ParamKind::Json;
    return ParamKind::Text;
  }
  if (schema.contains("type") && schema["type"] == "string" && !schema.contains("anyOf") && !schema.contains("oneOf") &&
      !schema.contains("allOf"))
    return ParamKind::Text;
  return ParamKind::Json;
}

// The raw text of a string="true" value: the schema's string constraints applied to the text as written.
json text_value_format(const json& schema, const std::string& where) {
  if (schema.contains("const")) return const_string(schema["const"].get<std::string>());
  if (schema.contains("enum")) {
    json options = json::array();
    for (const auto& v : schema["enum"]) options.push_back(const_string(v.get<std::string>()));
    return {{"type", "or"}, {"elements", options}};
  }
  if (schema.contains("format"))
    throw Error(ErrorCode::Unsupported, fmt::format("{}: \"format\" on a text (string=\"true\") tool parameter is not "
                                                    "supported", where));
  if (schema.contains("pattern")) return {{"type", "regex"}, {"pattern", schema["pattern"].get<std::string>()}};
  if (schema.contains("minLength") || schema.contains("maxLength")) {
    // Length-bounded text leaves out '<' (which could begin the closing tag) and control characters but newlines.
    const int64_t lo = schema.value("minLength", int64_t(0));
    const std::string hi = schema.contains("maxLength") ? std::to_string(schema["maxLength"].get<int64_t>()) : "";
    // A grammar, not a regex: its character classes match whole UTF-8 characters, so the text cannot end inside one
    // and the bound counts characters, as JSON Schema's maxLength does.
    return {{"type", "grammar"}, {"grammar", fmt::format("root ::= [^<\\0-\\t\\x0b-\\x1f]{{{},{}}}", lo, hi)}};
  }
  return {{"type", "any_text"}, {"excludes", json::array({"/｜DSML｜parameter", "<｜DSML｜"})}};
}

// One invocation's parameters in DSML, exactly as DeepSeek's encoder writes them: for each parameter of the
// schema, in its order, <｜DSML｜parameter name="k" string="true|false">value</｜DSML｜parameter> followed by "\n";
// required ones always, the others optionally. Only declared parameters are written.
json parameters_format(const json& params, const std::string& where) {
  json elements = json::array();
  if (!params.is_object() || !params.contains("properties")) return {{"type", "sequence"}, {"elements", elements}};
  if (params.contains("type") && params["type"] != "object")
    invalid(fmt::format("{}: a tool's parameters must be an object schema", where));
  std::set<std::string> required;
  if (params.contains("required")) {
    if (!params["required"].is_array()) invalid(fmt::format("{}/required must be a list of names", where));
    for (const auto& r : params["required"]) {
      if (!r.is_string()) invalid(fmt::format("{}/required must be a list of names", where));
      if (!params["properties"].contains(r.get<std::string>()))
        throw Error(ErrorCode::Unsupported, fmt::format("{}: the required parameter \"{}\" has no schema under "
                                                        "properties", where, r.get<std::string>()));
      required.insert(r.get<std::string>());
    }
  }
  for (const auto& [key, sub] : params["properties"].items()) {
    const std::string pwhere = where + "/properties/" + key;
    if (key.find_first_of("\"<>") != std::string::npos)
      invalid(fmt::format("{}: the parameter name cannot be written in a DSML parameter tag", pwhere));
    const json& resolved = resolve_param_ref(params, sub);
    json value;
    std::string attr;
    if (param_kind(resolved) == ParamKind::Text) {
      attr = "true";
      value = text_value_format(resolved, pwhere);
    } else {
      attr = "false";
      // The value as JSON, with the parameters' definitions beside it so that its $refs resolve.
      json schema = sub.is_object() || sub.is_boolean() ? sub : json::object();
      if (schema.is_object())
        for (const char* defs : {"$defs", "definitions"})
          if (params.contains(defs) && !schema.contains(defs)) schema[defs] = params[defs];
      value = {{"type", "json_schema"}, {"json_schema", schema}, {"max_whitespace_cnt", kMaxWhitespaceRunInArguments}};
    }
    json param = {{"type", "sequence"},
                  {"elements", json::array({const_string("<｜DSML｜parameter name=\"" + key + "\" string=\"" + attr + "\">"),
                                            value, const_string("</｜DSML｜parameter>\n")})}};
    elements.push_back(required.count(key) ? param : json{{"type", "optional"}, {"content", param}});
  }
  const json sequence = {{"type", "sequence"}, {"elements", elements}};
  if (!required.empty() || elements.empty()) return sequence;
  // No parameter is required: a call that passes none is written as the encoder writes an empty argument list, an
  // empty line between the invoke tags. (The invoke tags without that line, an empty sequence, stay allowed too and
  // parse as the same call: to exclude them, each parameter would need its own copy of the ones after it.)
  return {{"type", "or"}, {"elements", json::array({const_string("\n"), sequence})}};
}

// A DSML function-call block (spec §10.1) is "\n\n<｜DSML｜function_calls>\n", one or more invocations of the
// allowed tools, each <｜DSML｜invoke name="N">\n + parameters + </｜DSML｜invoke>\n, then </｜DSML｜function_calls>.
// A tool without parameters is written <｜DSML｜invoke name="N">\n\n</｜DSML｜invoke>, as the official encoder joins
// an empty parameter list.
constexpr const char* kCallsBegin = "\n\n<｜DSML｜function_calls>\n";
constexpr const char* kCallsEnd = "</｜DSML｜function_calls>";
// Free text that may be followed by a block: the block begins where the trigger appears (xgrammar needs a trigger
// that begins the block's opening), and the text may not hold the DSML tags anywhere else. (Not "<｜DSML｜" itself:
// xgrammar rejects a trigger that ends with an excluded string.)
constexpr const char* kCallsTrigger = "\n\n<｜DSML｜";
const char* const kDsmlTags[] = {"<｜DSML｜function_calls", "<｜DSML｜invoke", "<｜DSML｜parameter", "</｜DSML｜"};

// One parameter of a tool whose schema declares none but allows any ({"type": "object"} without "properties"):
// any name that fits the tag, its value raw text (string="true") or any JSON value (string="false").
json open_parameter_format() {
  const std::string open = "<｜DSML｜parameter name=\"", close = "</｜DSML｜parameter>\n";
  const json text = {{"type", "sequence"},
                     {"elements", json::array({const_string("\" string=\"true\">"),
                                               {{"type", "any_text"},
                                                {"excludes", json::array({"/｜DSML｜parameter", "<｜DSML｜"})}},
                                               const_string(close)})}};
  const json value = {{"type", "sequence"},
                      {"elements", json::array({const_string("\" string=\"false\">"),
                                                {{"type", "json_schema"}, {"json_schema", json::object()},
                                                 {"max_whitespace_cnt", kMaxWhitespaceRunInArguments}},
                                                const_string(close)})}};
  return {{"type", "sequence"},
          {"elements", json::array({const_string(open), {{"type", "regex"}, {"pattern", "[^\"<>\\n]{1,64}"}},
                                    {{"type", "or"}, {"elements", json::array({text, value})}}})}};
}

// The invocations inside a block, as an xgrammar structural-tag format.
json invocations_format(const ConstraintSpec& spec) {
  json tools = parse_tools(spec.tools_json);
  for (size_t i = 0; i < tools.size(); ++i) {
    json& f = tools[i]["function"];
    if (f.contains("parameters") && f["parameters"].is_object())
      check_full_schema(f["parameters"], fmt::format("tools[{}].function.parameters", i));
  }
  json invokes = json::array();
  for (size_t i = 0; i < tools.size(); ++i) {
    const json& f = tools[i]["function"];
    const std::string name = f["name"].get<std::string>();
    if (!spec.tool_name.empty() && name != spec.tool_name) continue;
    const json params = f.contains("parameters") && f["parameters"].is_object() ? f["parameters"] : json::object();
    // No "parameters" (OpenAI: an empty parameter list), or "properties": {} -> no parameters; an object schema
    // without "properties" that does not forbid additional ones ({"type": "object"}) -> any parameters.
    const bool open = f.contains("parameters") && params.is_object() && !params.contains("properties") &&
                      !(params.contains("additionalProperties") && params["additionalProperties"] == false);
    const bool none = !open && (!params.contains("properties") || !params["properties"].is_object() ||
                                params["properties"].empty());
    json elements = json::array({const_string("<｜DSML｜invoke name=\"" + name + "\">\n" + (none ? "\n" : ""))});
    if (open)
      elements.push_back({{"type", "or"},
                          {"elements", json::array({const_string("\n"),
                                                    {{"type", "plus"}, {"content", open_parameter_format()}}})}});
    else if (!none)
      elements.push_back(parameters_format(params, fmt::format("tools[{}].function.parameters", i)));
    elements.push_back(const_string("</｜DSML｜invoke>\n"));
    invokes.push_back({{"type", "sequence"}, {"elements", elements}});
  }
  if (invokes.empty()) invalid(fmt::format("no declared tool is named \"{}\"", spec.tool_name));
  const json one = invokes.size() == 1 ? invokes[0] : json{{"type", "or"}, {"elements", invokes}};
  return spec.parallel_tool_calls ? json{{"type", "plus"}, {"content", one}} : one;
}

// A whole block.
json tool_calls_format(const ConstraintSpec& spec) {
  return {{"type", "sequence"},
          {"elements", json::array({const_string(kCallsBegin), invocations_format(spec), const_string(kCallsEnd)})}};
}

// Free text (no DSML tags in it) that may end with one block: what tool_choice "auto" allows. The text part is
// not constrained at all; once the text reaches "\n\n<｜DSML｜" the block must follow, and after it only the end.
json text_or_tool_calls_format(const ConstraintSpec& spec) {
  const json tag = {{"type", "tag"}, {"begin", kCallsBegin}, {"content", invocations_format(spec)}, {"end", kCallsEnd}};
  return {{"type", "triggered_tags"}, {"triggers", json::array({kCallsTrigger})}, {"tags", json::array({tag})},
          {"excludes", kDsmlTags}, {"at_least_one", false}, {"stop_after_first", true}};
}

// xgrammar's warnings name what it would not enforce; each one makes the constraint unsupported.
void refuse_warnings(const char* what) {
  auto& w = constraint_detail::xgrammar_warnings();
  if (w.empty()) return;
  std::string msg = w.front();
  w.clear();
  throw Error(ErrorCode::Unsupported, fmt::format("{} cannot be enforced exactly: {}", what, msg));
}

// Pre-checks a JSON Schema before xgrammar sees it: limits, and the constructs it would silently treat more loosely
// than the schema says. Walks every subschema (iteratively bounded by the nesting check before parsing).
void check_schema(const json& schema, const std::string& where) {
  if (schema.is_boolean()) return;
  if (!schema.is_object()) invalid(fmt::format("{}: a schema must be an object or a boolean", where));
  static const std::set<std::string> kUnsupported = {
      "not", "if", "then", "else", "dependentSchemas", "dependentRequired", "dependencies", "contains",
      "minContains", "maxContains", "uniqueItems", "unevaluatedProperties", "unevaluatedItems", "$dynamicRef",
      "$recursiveRef"};
  for (const auto& [key, value] : schema.items()) {
    if (kUnsupported.count(key)) throw Error(ErrorCode::Unsupported, fmt::format("{}: the keyword \"{}\" is not supported", where, key));
  }
  auto each = [&](const char* key) {
    if (!schema.contains(key)) return;
    const json& v = schema[key];
    if (v.is_array()) {
      for (size_t i = 0; i < v.size(); ++i) check_schema(v[i], fmt::format("{}/{}/{}", where, key, i));
    } else if (!v.is_object() && !v.is_boolean()) {
      invalid(fmt::format("{}/{} must be a list of schemas", where, key));
    }
  };
  auto map = [&](const char* key) {
    if (!schema.contains(key)) return;
    const json& v = schema[key];
    if (!v.is_object()) invalid(fmt::format("{}/{} must be an object of schemas", where, key));
    for (const auto& [k, sub] : v.items()) check_schema(sub, fmt::format("{}/{}/{}", where, key, k));
  };
  map("properties");
  map("$defs");
  map("definitions");
  map("patternProperties");
  each("anyOf");
  each("oneOf");
  each("allOf");
  each("prefixItems");
  for (const char* key : {"items", "additionalProperties", "propertyNames"})
    if (schema.contains(key) && schema[key].is_object()) check_schema(schema[key], where + "/" + key);
  for (const char* key : {"anyOf", "oneOf", "allOf", "enum"})
    if (schema.contains(key) && (!schema[key].is_array() || schema[key].empty()))
      invalid(fmt::format("{}/{} must be a non-empty list", where, key));
  for (const char* key : {"minLength", "maxLength", "minItems", "maxItems", "minProperties", "maxProperties"})
    if (schema.contains(key) && (!schema[key].is_number_integer() || schema[key].get<int64_t>() < 0 ||
                                 schema[key].get<int64_t>() > 1000000))
      invalid(fmt::format("{}/{} must be an integer in [0, 1000000]", where, key));
  for (const char* key : {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"})
    if (schema.contains(key) && !schema[key].is_number()) invalid(fmt::format("{}/{} must be a number", where, key));
  if (schema.contains("pattern")) {
    if (!schema["pattern"].is_string()) invalid(fmt::format("{}/pattern must be a string", where));
    check_regex_limits(schema["pattern"].get<std::string>(), "a pattern");
  }
  if (schema.contains("minLength") && schema.contains("maxLength") && schema["minLength"] > schema["maxLength"])
    invalid(fmt::format("{}: minLength is above maxLength: no string can match", where));
  if (schema.contains("minItems") && schema.contains("maxItems") && schema["minItems"] > schema["maxItems"])
    invalid(fmt::format("{}: minItems is above maxItems: no array can match", where));
  if (schema.contains("minimum") && schema.contains("maximum") && schema["minimum"].is_number() &&
      schema["maximum"].is_number() && schema["minimum"].get<double>() > schema["maximum"].get<double>())
    invalid(fmt::format("{}: minimum is above maximum: no number can match", where));
  if (schema.contains("type")) {
    static const std::set<std::string> kTypes = {"object", "array", "string", "number", "integer", "boolean", "null"};
    const json& t = schema["type"];
    auto known = [&](const json& x) { return x.is_string() && kTypes.count(x.get<std::string>()); };
    bool ok = known(t);
    if (t.is_array()) {
      ok = !t.empty();
      for (const auto& x : t) ok = ok && known(x);
    }
    if (!ok) invalid(fmt::format("{}/type must be one of object, array, string, number, integer, boolean, null", where));
  }
  if (schema.contains("$ref")) {
    if (!schema["$ref"].is_string()) invalid(fmt::format("{}/$ref must be a string", where));
    const std::string ref = schema["$ref"].get<std::string>();
    if (ref != "#" && ref.rfind("#/", 0) != 0)
      throw Error(ErrorCode::Unsupported, fmt::format("{}/$ref \"{}\": only references inside the schema (\"#/...\") "
                                                      "are supported", where, ref));
  }
}

// Refs must resolve inside the document.
void check_refs(const json& root, const json& node, const std::string& where) {
  if (node.is_object()) {
    if (node.contains("$ref") && node["$ref"].is_string()) {
      const std::string ref = node["$ref"].get<std::string>();
      if (ref != "#") {
        try {
          (void)root.at(json::json_pointer(ref.substr(1)));
        } catch (const std::exception&) {
          invalid(fmt::format("{}/$ref \"{}\" does not resolve inside the schema", where, ref));
        }
      }
    }
    for (const auto& [k, v] : node.items()) check_refs(root, v, where + "/" + k);
  } else if (node.is_array()) {
    for (size_t i = 0; i < node.size(); ++i) check_refs(root, node[i], fmt::format("{}/{}", where, i));
  }
}

// JSON Schema's defaults made explicit where xgrammar (in its strict mode) would read them more narrowly: an array
// schema without "items" allows any items, but xgrammar would allow none beyond "prefixItems" (so {"type": "array",
// "minItems": 2} could never be satisfied).
void fill_defaults(json& schema) {
  if (!schema.is_object()) return;
  const bool array = schema.contains("type") &&
                     (schema["type"] == "array" ||
                      (schema["type"].is_array() && std::find(schema["type"].begin(), schema["type"].end(), "array") !=
                                                        schema["type"].end()));
  if (array && !schema.contains("items")) schema["items"] = json::object();
  for (const char* key : {"properties", "$defs", "definitions", "patternProperties"})
    if (schema.contains(key) && schema[key].is_object())
      for (auto& [k, sub] : schema[key].items()) fill_defaults(sub);
  for (const char* key : {"anyOf", "oneOf", "allOf", "prefixItems"})
    if (schema.contains(key) && schema[key].is_array())
      for (auto& sub : schema[key]) fill_defaults(sub);
  for (const char* key : {"items", "additionalProperties", "propertyNames"})
    if (schema.contains(key)) fill_defaults(schema[key]);
}

void check_full_schema(json& schema, const std::string& where) {
  check_schema(schema, where);
  check_refs(schema, schema, where);
  fill_defaults(schema);
}

}  // namespace

// -------------------------------------------------------------------------------------------------- Constraint --

struct Constraint::Impl {
  ConstraintSpec spec;
  std::shared_ptr<VocabIndex> index;
  std::optional<xgrammar::CompiledGrammar> grammar;  // none when nothing is enforced
  double compile_ms = 0;
};

Constraint::Constraint(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Constraint::~Constraint() = default;
const ConstraintSpec& Constraint::spec() const { return impl_->spec; }
double Constraint::compile_ms() const { return impl_->compile_ms; }
int64_t Constraint::vocab_size() const { return impl_->index->vocab_size; }

std::shared_ptr<const Constraint> Constraint::compile(const Tokenizer& tokenizer, const ConstraintSpec& spec) {
  const auto t0 = std::chrono::steady_clock::now();
  if (spec.max_reasoning_tokens < -1) invalid("max_reasoning_tokens must be >= 0 (or -1 for no cap)");
  auto impl = std::make_unique<Impl>();
  impl->spec = spec;
  impl->index = index_for(tokenizer);
  if (spec.thinking == ThinkingMode::Thinking && impl->index->think_end < 0)
    invalid("thinking mode needs a tokenizer with a </think> token");

  // The answer's format as an xgrammar structural-tag format (also when it is used alone: one code path).
  json answer;
  const char* what = "the constraint";
  switch (spec.kind) {
    case ConstraintSpec::Kind::None:
      break;
    case ConstraintSpec::Kind::JsonSchema: {
      what = "the JSON schema";
      json schema = parse_limited(spec.json_schema, "the JSON schema");
      check_full_schema(schema, "#");
      answer = {{"type", "json_schema"}, {"json_schema", schema}, {"max_whitespace_cnt", kMaxWhitespaceRun}};
      break;
    }
    case ConstraintSpec::Kind::JsonObject:
      what = "json_object";
      answer = {{"type", "json_schema"}, {"json_schema", {{"type", "object"}}}, {"max_whitespace_cnt", kMaxWhitespaceRun}};
      break;
    case ConstraintSpec::Kind::Regex:
      what = "the regex";
      check_regex_limits(spec.regex, "the regex");
      if (spec.regex.empty()) invalid("the regex is empty");
      answer = {{"type", "regex"}, {"pattern", spec.regex}};
      break;
    case ConstraintSpec::Kind::ToolCalls:
      what = "the tool schemas";
      answer = tool_calls_format(spec);
      break;
    case ConstraintSpec::Kind::TextOrToolCalls:
      what = "the tool schemas";
      answer = text_or_tool_calls_format(spec);
      break;
  }
  if (spec.or_tool_calls && spec.kind != ConstraintSpec::Kind::ToolCalls &&
      spec.kind != ConstraintSpec::Kind::TextOrToolCalls && spec.enforces()) {
    ConstraintSpec calls = spec;
    calls.tool_name.clear();
    answer = {{"type", "or"}, {"elements", json::array({answer, tool_calls_format(calls)})}};
  }

  if (spec.enforces()) {
    auto& warnings = constraint_detail::xgrammar_warnings();
    warnings.clear();
    const json tag = {{"type", "structural_tag"}, {"format", answer}};
    try {
      impl->grammar.emplace(impl->index->compiler->CompileStructuralTag(tag.dump()));
    } catch (const Error&) {
      throw;
    } catch (const std::exception& e) {
      warnings.clear();
      std::string msg = e.what();
      const auto invalid_code = msg.find("not supported") != std::string::npos ||
                                        msg.find("Unsupported") != std::string::npos
                                    ? ErrorCode::Unsupported
                                    : ErrorCode::InvalidArgument;
      throw Error(invalid_code, fmt::format("{} is not valid: {}", what, msg));
    }
    refuse_warnings(what);
    // A constraint no text can satisfy: its first mask allows nothing.
    xgrammar::GrammarMatcher m(*impl->grammar);
    std::vector<int32_t> mask(size_t(xgrammar::GetBitmaskSize(impl->index->vocab_size)));
    int64_t shape[1] = {int64_t(mask.size())};
    DLTensor t{mask.data(), DLDevice{kDLCPU, 0}, 1, xgrammar::GetBitmaskDLType(), shape, nullptr, 0};
    m.FillNextTokenBitmask(&t);
    warnings.clear();
    if (std::all_of(mask.begin(), mask.end(), [](int32_t w) { return w == 0; }))
      invalid(fmt::format("{} cannot be satisfied: no text matches it", what));
  }
  impl->compile_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  return std::make_shared<const Constraint>(std::move(impl));
}

// ------------------------------------------------------------------------------------------ ConstraintSampler --

struct ConstraintSampler::State {
  std::shared_ptr<const Constraint> c;
  ThinkingMode thinking = ThinkingMode::Chat;
  bool reasoning = false;
  int64_t reasoning_tokens = 0;
  std::string reasoning_tail;  // the last bytes of the reasoning: "</think>" may also be spelled by ordinary tokens
  std::optional<xgrammar::GrammarMatcher> matcher;
  bool terminated = false;
  std::string broken;  // why accept() failed ("" = fine)
  std::vector<int32_t> mask;

  const VocabIndex& ix() const { return *c->impl().index; }
  void start() {
    reasoning = thinking == ThinkingMode::Thinking;
    reasoning_tokens = 0;
    reasoning_tail.clear();
    terminated = false;
    broken.clear();
    matcher.reset();
    if (!reasoning) start_answer();
  }
  void start_answer() {
    reasoning = false;
    if (c->impl().grammar) matcher.emplace(*c->impl().grammar);
  }
};

ConstraintSampler::ConstraintSampler(std::shared_ptr<const Constraint> constraint, std::optional<ThinkingMode> thinking)
    : st_(std::make_unique<State>()) {
  if (!constraint) throw Error(ErrorCode::InvalidArgument, "a constraint sampler needs a compiled constraint");
  st_->c = std::move(constraint);
  st_->thinking = thinking.value_or(st_->c->spec().thinking);
  if (st_->thinking == ThinkingMode::Thinking && st_->ix().think_end < 0)
    throw Error(ErrorCode::InvalidArgument, "thinking mode needs a tokenizer with a </think> token");
  st_->mask.resize(size_t(xgrammar::GetBitmaskSize(st_->ix().vocab_size)));
  st_->start();
}

ConstraintSampler::ConstraintSampler(const ConstraintSampler& other) : st_(std::make_unique<State>(*other.st_)) {
  if (other.st_->matcher) st_->matcher.emplace(other.st_->matcher->Fork());
}

ConstraintSampler::~ConstraintSampler() = default;

namespace {

// Whether ids[i] == i for every i (the full candidate list SamplerChain::sample builds): xor-accumulated in blocks,
// which the compiler vectorizes.
bool ids_are_positions(const std::vector<int32_t>& ids) {
  const size_t n = ids.size();
  for (size_t b = 0; b < n; b += 4096) {
    const size_t e = std::min(n, b + 4096);
    uint32_t acc = 0;
    for (size_t i = b; i < e; ++i) acc |= uint32_t(ids[i]) ^ uint32_t(i);
    if (acc) return false;
  }
  return true;
}

bool allowed_bit(const std::vector<int32_t>& mask, size_t id) { return (uint32_t(mask[id >> 5]) >> (id & 31)) & 1u; }

void move_candidate(Candidates& c, size_t from, size_t to) {
  c.ids[to] = c.ids[from];
  c.logits[to] = c.logits[from];
  if (c.has_probs) c.probs[to] = c.probs[from];
}

// Keeps the candidates whose bit is set in `mask` (xgrammar's layout: bit i%32 of word i/32). When the candidates
// are every id in order (as SamplerChain::sample makes them), positions are ids, so the work follows the mask a word
// at a time: with most ids allowed (free text, JSON strings) each removed entry is filled from the end of the list,
// so only as many entries move as are removed; with few allowed, the allowed ones are gathered to the front. Either
// way the kept set is exact; the order then no longer follows ids (nothing relies on it: `sorted` was false).
// Other candidate lists are filtered in order, entry by entry.
void keep_allowed(Candidates& c, const std::vector<int32_t>& mask, int64_t vocab) {
  const size_t n = c.size();
  size_t out = 0;
  if (int64_t(n) <= vocab && !c.sorted && ids_are_positions(c.ids)) {
    const size_t words = (n + 31) / 32;
    auto word = [&](size_t w) {
      uint32_t bits = uint32_t(mask[w]);
      if (w == words - 1 && n % 32) bits &= (1u << (n % 32)) - 1;
      return bits;
    };
    size_t allowed = 0;
    for (size_t w = 0; w < words; ++w) allowed += size_t(__builtin_popcount(word(w)));
    if (2 * allowed >= n) {
      size_t hi = n;  // entries at [hi, n) have been dealt with
      for (size_t w = 0; w < words; ++w) {
        for (uint32_t removed = ~word(w) & (w == words - 1 && n % 32 ? (1u << (n % 32)) - 1 : ~0u); removed;
             removed &= removed - 1) {
          const size_t r = w * 32 + size_t(__builtin_ctz(removed));
          if (r >= allowed) goto done;  // every slot below `allowed` now holds a kept entry
          do --hi;
          while (!allowed_bit(mask, hi));
          move_candidate(c, hi, r);
        }
      }
    done:
      out = allowed;
    } else {
      for (size_t w = 0; w < words; ++w)
        for (uint32_t bits = word(w); bits; bits &= bits - 1) move_candidate(c, w * 32 + size_t(__builtin_ctz(bits)), out++);
    }
  } else {
    for (size_t i = 0; i < n; ++i) {
      const int32_t id = c.ids[i];
      if (id < 0 || id >= vocab || !allowed_bit(mask, size_t(id))) continue;
      move_candidate(c, i, out++);
    }
  }
  const bool had_probs = c.has_probs;
  const bool sorted = c.sorted;
  c.resize(out);
  c.has_probs = had_probs && out == n;  // probabilities no longer sum to 1 once tokens are removed
  c.sorted = sorted;
  c.selected = -1;
}

}  // namespace

// Fills st_->mask for the current state; false when nothing is enforced (every candidate stays).
bool ConstraintSampler::fill_state_mask() {
  State& s = *st_;
  if (!s.broken.empty()) throw Error(ErrorCode::InvalidArgument, s.broken);
  const VocabIndex& ix = s.ix();
  if (s.terminated) {
    std::fill(s.mask.begin(), s.mask.end(), 0);
    s.mask[size_t(ix.eos) >> 5] |= int32_t(1u << (ix.eos & 31));
  } else if (s.reasoning) {
    if (s.c->spec().max_reasoning_tokens >= 0 && s.reasoning_tokens >= s.c->spec().max_reasoning_tokens) {
      std::fill(s.mask.begin(), s.mask.end(), 0);
      s.mask[size_t(ix.think_end) >> 5] |= int32_t(1u << (ix.think_end & 31));
    } else {
      std::copy(ix.reasoning_mask.begin(), ix.reasoning_mask.end(), s.mask.begin());
    }
  } else if (s.matcher) {
    int64_t shape[1] = {int64_t(s.mask.size())};
    DLTensor t{s.mask.data(), DLDevice{kDLCPU, 0}, 1, xgrammar::GetBitmaskDLType(), shape, nullptr, 0};
    s.matcher->FillNextTokenBitmask(&t);
  } else {
    return false;
  }
  return true;
}

void ConstraintSampler::fill_bitmask(std::vector<uint32_t>& mask) {
  const size_t words = st_->mask.size();
  mask.resize(words);
  if (!fill_state_mask()) {
    std::fill(mask.begin(), mask.end(), ~0u);
    const int64_t v = st_->ix().vocab_size;
    if (v % 32) mask.back() = (1u << (v % 32)) - 1;
    return;
  }
  std::memcpy(mask.data(), st_->mask.data(), words * sizeof(uint32_t));
}

void ConstraintSampler::apply(Candidates& c) {
  if (!fill_state_mask()) return;  // nothing enforced
  const size_t before = c.size();
  keep_allowed(c, st_->mask, st_->ix().vocab_size);
  if (c.size() == 0)
    throw Error(ErrorCode::InvalidArgument,
                fmt::format("none of the {} candidates can continue the constrained output (a sampler before the "
                            "constraint removed every allowed token)", before));
}

void ConstraintSampler::accept(int32_t token) {
  State& s = *st_;
  if (!s.broken.empty()) return;
  const VocabIndex& ix = s.ix();
  if (s.terminated) {
    if (token != ix.eos) s.broken = fmt::format("token {} was accepted after the constrained output ended", token);
    return;
  }
  if (s.reasoning) {
    if (token < 0 || token >= ix.vocab_size || ix.reasoning_banned[size_t(token)] ||
        (s.c->spec().max_reasoning_tokens >= 0 && s.reasoning_tokens >= s.c->spec().max_reasoning_tokens &&
         token != ix.think_end)) {
      s.broken = fmt::format("token {} is not allowed in the reasoning", token);
      return;
    }
    ++s.reasoning_tokens;
    if (token == ix.think_end) {
      s.start_answer();
      return;
    }
    // "</think>" written with ordinary tokens also ends the reasoning (the chat parser works on text).
    s.reasoning_tail += s.c->impl().index->info->GetDecodedVocab()[size_t(token)];
    if (s.reasoning_tail.size() > 64) s.reasoning_tail.erase(0, s.reasoning_tail.size() - 16);
    const size_t p = s.reasoning_tail.find("</think>");
    if (p != std::string::npos) {
      const std::string rest = s.reasoning_tail.substr(p + 8);
      s.start_answer();
      if (!rest.empty() && s.matcher && !s.matcher->AcceptString(rest))
        s.broken = fmt::format("token {} ends the reasoning with text the constraint does not allow", token);
    }
    return;
  }
  if (!s.matcher) return;
  if (!s.matcher->AcceptToken(token)) {
    constraint_detail::xgrammar_warnings().clear();
    s.broken = fmt::format("token {} does not continue the constrained output", token);
    return;
  }
  if (s.matcher->IsTerminated()) s.terminated = true;
}

void ConstraintSampler::reset() { st_->start(); }

std::unique_ptr<Sampler> ConstraintSampler::clone() const { return std::make_unique<ConstraintSampler>(*this); }

bool ConstraintSampler::complete() const {
  const State& s = *st_;
  if (s.terminated) return true;
  if (s.reasoning) return false;
  return !s.matcher || s.matcher->IsCompleted();
}
bool ConstraintSampler::terminated() const { return st_->terminated; }
bool ConstraintSampler::in_reasoning() const { return st_->reasoning; }
const Constraint& ConstraintSampler::constraint() const { return *st_->c; }

std::shared_ptr<const Constraint> compile_request_constraint(const Tokenizer& tokenizer, ConstraintSpec spec,
                                                             std::string* tools_not_enforced) {
  if (tools_not_enforced) tools_not_enforced->clear();
  const bool capped = spec.thinking == ThinkingMode::Thinking && spec.max_reasoning_tokens >= 0;
  if (!spec.enforces() && !capped) return nullptr;
  try {
    return Constraint::compile(tokenizer, spec);
  } catch (const Error& e) {
    if (spec.kind != ConstraintSpec::Kind::TextOrToolCalls || !tools_not_enforced) throw;
    *tools_not_enforced = e.what();
  }
  if (!capped) return nullptr;
  spec.kind = ConstraintSpec::Kind::None;
  spec.tools_json.clear();
  return Constraint::compile(tokenizer, spec);
}

std::unique_ptr<ConstraintSampler> make_constraint_sampler(const Tokenizer& tokenizer, std::string_view request_json,
                                                           ThinkingMode thinking) {
  const ConstraintSpec spec = constraint_from_request_json(request_json, thinking);
  if (!spec.enforces()) return nullptr;
  return std::make_unique<ConstraintSampler>(Constraint::compile(tokenizer, spec));
}

}  // namespace dsinfer
