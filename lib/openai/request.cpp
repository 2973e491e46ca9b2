// OpenAI request bodies -> openai::Request: every field checked, the prompt rendered with the official encoding and
// tokenized, the response_format / tool_choice constraint compiled. The one place where requests are read.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>

#include "dsinfer/openai.hpp"
#include "util/json_input.hpp"
#include "util/log.hpp"

namespace dsinfer::openai {

namespace {

using json = nlohmann::json;

ApiError bad(const std::string& param, const std::string& message) {
  return ApiError(400, "invalid_request_error", param, message);
}

json parse_body(std::string_view body) {
  json j;
  try {
    j = parse_json_input(body);
  } catch (const JsonInputError& e) {
    throw bad("", fmt::format("the request body is not valid JSON: {}", e.what()));
  }
  if (!j.is_object()) throw bad("", "the request body must be a JSON object");
  return j;
}

bool present(const json& j, const char* key) { return j.contains(key) && !j[key].is_null(); }

std::optional<double> number(const json& j, const char* key, double lo, double hi) {
  if (!present(j, key)) return std::nullopt;
  if (!j[key].is_number()) throw bad(key, fmt::format("\"{}\" must be a number, got {}", key, json_excerpt(j[key])));
  const double v = j[key].get<double>();
  if (!(v >= lo && v <= hi)) throw bad(key, fmt::format("\"{}\" must be in [{}, {}], got {}", key, lo, hi, json_excerpt(j[key])));
  return v;
}

std::optional<int64_t> integer(const json& j, const char* key, int64_t lo, int64_t hi) {
  if (!present(j, key)) return std::nullopt;
  const json& v = j[key];
  if (!v.is_number_integer()) throw bad(key, fmt::format("\"{}\" must be an integer, got {}", key, json_excerpt(v)));
  // nlohmann keeps non-negative integers unsigned: compare those as unsigned (they may exceed INT64_MAX).
  const bool out = v.is_number_unsigned() ? (v.get<uint64_t>() > uint64_t(hi) || (lo > 0 && v.get<uint64_t>() < uint64_t(lo)))
                                          : (v.get<int64_t>() < lo || v.get<int64_t>() > hi);
  if (out)
    throw bad(key, fmt::format("\"{}\" must be in [{}, {}], got {}", key, lo, hi, json_excerpt(v)));
  return v.get<int64_t>();
}

std::optional<bool> boolean(const json& j, const char* key) {
  if (!present(j, key)) return std::nullopt;
  if (!j[key].is_boolean()) throw bad(key, fmt::format("\"{}\" must be true or false, got {}", key, json_excerpt(j[key])));
  return j[key].get<bool>();
}

// Fields that would change the output and that this server does not implement: refused, naming the field, rather
// than silently ignored. `inert` says which values ask for nothing (then the field is accepted).
void refuse_unsupported(const json& j, Endpoint ep) {
  struct Field {
    const char* name;
    bool (*inert)(const json&);
  };
  static const Field fields[] = {
      {"functions", nullptr},
      {"function_call", nullptr},
      {"audio", nullptr},
      {"prediction", nullptr},
      {"web_search_options", nullptr},
      {"modalities", [](const json& v) { return v == json::array({"text"}); }},
      {"suffix", [](const json& v) { return v.is_string() && v.get<std::string>().empty(); }},
      {"min_tokens", [](const json& v) { return v == 0; }},
      {"stop_token_ids", [](const json& v) { return v.is_array() && v.empty(); }},
      {"use_beam_search", [](const json& v) { return v == false; }},
      {"prompt_logprobs", nullptr},
      {"guided_json", nullptr},
      {"guided_regex", nullptr},
      {"guided_choice", nullptr},
      {"guided_grammar", nullptr},
      {"structured_outputs", nullptr},
      {"continue_final_message", [](const json& v) { return v == false; }},
      {"add_generation_prompt", [](const json& v) { return v == true; }},
  };
  for (const Field& f : fields)
    if (present(j, f.name) && !(f.inert && f.inert(j[f.name])))
      throw bad(f.name, fmt::format("\"{}\" is not supported by this server", f.name));
  if (ep == Endpoint::ChatCompletions && present(j, "echo")) throw bad("echo", "\"echo\" is a completions field");
}

std::vector<std::string> stop_strings(const json& j) {
  std::vector<std::string> out;
  if (!present(j, "stop")) return out;
  const json& s = j["stop"];
  auto one = [&](const json& v) {
    if (!v.is_string() || v.get<std::string>().empty())
      throw bad("stop", fmt::format("\"stop\" must be a non-empty string or a list of them, got {}", json_excerpt(v)));
    out.push_back(v.get<std::string>());
  };
  if (s.is_array()) {
    if (s.size() > 16) throw bad("stop", fmt::format("\"stop\" may hold at most 16 strings, got {}", s.size()));
    for (const auto& v : s) one(v);
  } else {
    one(s);
  }
  return out;
}

std::map<int32_t, float> logit_bias(const json& j, const Tokenizer& tok) {
  std::map<int32_t, float> out;
  if (!present(j, "logit_bias")) return out;
  const json& b = j["logit_bias"];
  if (!b.is_object()) throw bad("logit_bias", "\"logit_bias\" must map token ids to numbers");
  for (const auto& [key, value] : b.items()) {
    size_t used = 0;
    long long id = -1;
    try {
      id = std::stoll(key, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != key.size() || id < 0 || id >= tok.size())
      throw bad("logit_bias", fmt::format("logit_bias key \"{}\" is not a token id in [0, {})", key, tok.size()));
    if (!value.is_number() || !(value.get<double>() >= -100 && value.get<double>() <= 100))
      throw bad("logit_bias", fmt::format("logit_bias for token {} must be a number in [-100, 100], got {}", key, json_excerpt(value)));
    out[int32_t(id)] = value.get<float>();
  }
  return out;
}

// The tools must be OpenAI function tools: the official encoder renders each one's "function" object.
std::vector<std::string> tool_names(const json& j) {
  std::vector<std::string> names;
  if (!present(j, "tools")) return names;
  const json& tools = j["tools"];
  if (!tools.is_array()) throw bad("tools", "\"tools\" must be a list");
  for (size_t i = 0; i < tools.size(); ++i) {
    const json& t = tools[i];
    if (!t.is_object() || (t.contains("type") && t["type"] != "function") || !t.contains("function") ||
        !t["function"].is_object() || !t["function"].contains("name") || !t["function"]["name"].is_string())
      throw bad("tools", fmt::format("tools[{}] must be {{\"type\": \"function\", \"function\": {{\"name\": ..., "
                                     "\"parameters\": ...}}}}", i));
    names.push_back(t["function"]["name"].get<std::string>());
  }
  return names;
}

void read_tool_choice(const json& j, const std::vector<std::string>& tools, Request& r) {
  if (!present(j, "tool_choice")) {
    r.tool_choice = tools.empty() ? ToolChoice::None : ToolChoice::Auto;
    return;
  }
  const json& c = j["tool_choice"];
  if (c == "none") r.tool_choice = ToolChoice::None;
  else if (c == "auto") r.tool_choice = ToolChoice::Auto;
  else if (c == "required") r.tool_choice = ToolChoice::Required;
  else if (c.is_object() && c.contains("type") && c["type"] == "function" && c.contains("function") &&
           c["function"].is_object() && c["function"].contains("name") && c["function"]["name"].is_string()) {
    r.tool_choice = ToolChoice::Function;
    r.tool_choice_function = c["function"]["name"].get<std::string>();
    if (std::find(tools.begin(), tools.end(), r.tool_choice_function) == tools.end())
      throw bad("tool_choice", fmt::format("tool_choice names the function \"{}\", which is not among the tools",
                                           r.tool_choice_function));
  } else {
    throw bad("tool_choice", fmt::format("\"tool_choice\" must be \"none\", \"auto\", \"required\" or {{\"type\": "
                                         "\"function\", \"function\": {{\"name\": ...}}}}, got {}", json_excerpt(c)));
  }
  if (tools.empty() && r.tool_choice != ToolChoice::None && r.tool_choice != ToolChoice::Auto)
    throw bad("tool_choice", "\"tool_choice\" asks for a tool call, but the request has no tools");
}

void read_response_format(const json& j, Request& r) {
  if (!present(j, "response_format")) return;
  const json& f = j["response_format"];
  const std::string type = f.is_object() && f.contains("type") && f["type"].is_string() ? f["type"].get<std::string>() : "";
  if (type != "text" && type != "json_object" && type != "json_schema" && type != "regex")
    throw bad("response_format", "\"response_format\" must be {\"type\": \"text\" | \"json_object\" | \"json_schema\" | "
                                 "\"regex\", ...}");
  if (type == "json_schema" && !(f.contains("json_schema") && f["json_schema"].is_object()))
    throw bad("response_format", "a json_schema response_format needs a \"json_schema\" object");
  if (type == "regex" && !(f.contains("regex") && f["regex"].is_string()))
    throw bad("response_format", "a regex response_format needs a \"regex\" string");
  if (type != "text") r.response_format_json = python_json_dumps(f.dump());
}

// What response_format and tool_choice ask to be enforced, compiled for the tokenizer here (on the HTTP thread,
// before the request is queued), so a schema that is invalid or cannot be enforced exactly is a 400 naming its field
// and nothing is generated. The response format is read alone first, so its errors name it; then the tools join
// unless tool_choice is "none". With tool_choice "auto" and no enforced format the model may answer in text or call,
// and a call it makes is held to the tools (ConstraintSpec::TextOrToolCalls); where those tools cannot be enforced
// exactly (a keyword the grammar engine cannot express), such a request is served unconstrained, as OpenAI serves
// non-strict tools, and the server log says so — the client asked for no guarantee.
void read_constraint(const json& j, const Tokenizer& tok, Request& r) {
  const bool chat = r.endpoint == Endpoint::ChatCompletions;
  const ThinkingMode thinking = chat ? r.thinking : ThinkingMode::Chat;
  // dsinfer's extension (as in Session.chat and request files): a cap on the reasoning, then only </think>.
  const int64_t max_reasoning = integer(j, "max_reasoning_tokens", 0, INT32_MAX).value_or(-1);
  auto spec_of = [&](const char* field, std::string_view tools, std::string_view choice) {
    try {
      return constraint_from_request(present(j, "response_format") ? j["response_format"].dump() : std::string(),
                                     tools, choice, r.parallel_tool_calls, thinking, max_reasoning);
    } catch (const Error& e) {
      throw bad(field, e.what());
    }
  };
  ConstraintSpec spec = spec_of("response_format", "", "");
  if (chat && present(j, "tools") && r.tool_choice != ToolChoice::None)
    spec = spec_of("tools", j["tools"].dump(), present(j, "tool_choice") ? j["tool_choice"].dump() : std::string());
  std::string tools_not_enforced;
  try {
    r.constraint = compile_request_constraint(tok, spec, &tools_not_enforced);
    if (!tools_not_enforced.empty())
      log_fmt(LogLevel::Warn, "tool calls of this request are not enforced: {}", tools_not_enforced);
  } catch (const Error& e) {
    std::string field = !spec.enforces() ? "max_reasoning_tokens"
                        : spec.kind == ConstraintSpec::Kind::ToolCalls ? "tools" : "response_format";
    if (spec.or_tool_calls) {  // the format or the tools: the one that fails alone is at fault
      ConstraintSpec format = spec;
      format.or_tool_calls = false;
      format.tools_json.clear();
      try {
        Constraint::compile(tok, format);
        field = "tools";
      } catch (const Error&) {
      }
    }
    throw bad(field, fmt::format("the {} cannot be enforced: {}", field, e.what()));
  }
}

std::vector<int32_t> token_list(const json& v, const Tokenizer& tok, const char* param) {
  std::vector<int32_t> ids;
  for (const auto& t : v) {
    if (!t.is_number_integer() || t.get<int64_t>() < 0 || t.get<int64_t>() >= tok.size())
      throw bad(param, fmt::format("\"{}\" holds {}, which is not a token id in [0, {})", param, json_excerpt(t), tok.size()));
    ids.push_back(int32_t(t.get<int64_t>()));
  }
  return ids;
}

// Chat: the messages (with top-level tools and response_format) rendered exactly as the official encoder does.
void read_chat_prompt(const json& j, std::string_view body, const Tokenizer& tok, Request& r) {
  if (!present(j, "messages") || !j["messages"].is_array() || j["messages"].empty())
    throw bad("messages", "\"messages\" must be a non-empty list");
  if (present(j, "chat_template_kwargs")) {
    const json& k = j["chat_template_kwargs"];
    if (!k.is_object()) throw bad("chat_template_kwargs", "\"chat_template_kwargs\" must be an object");
    for (const char* key : {"thinking", "enable_thinking"})
      if (k.contains(key)) {
        if (!k[key].is_boolean()) throw bad("chat_template_kwargs", fmt::format("chat_template_kwargs.{} must be true or false", key));
        if (k[key].get<bool>()) r.thinking = ThinkingMode::Thinking;
      }
  }
  try {
    // tool_choice "none": the model is not shown the tools (vLLM's exclude_tools_when_tool_choice_none), so it
    // answers in text; a tool call it writes anyway comes back as content (Completion).
    if (r.tool_choice == ToolChoice::None && present(j, "tools")) {
      // Ordered: the rest of the request reaches the prompt in document order, as without tool_choice (a sorted
      // copy would render a response_format schema's properties, or argument objects, alphabetically).
      auto without = parse_json_input<nlohmann::ordered_json>(body);
      without.erase("tools");
      r.messages = chat_messages_from_json(without.dump());
    } else {
      r.messages = chat_messages_from_json(body);
    }
  } catch (const Error& e) {
    throw bad("messages", e.what());
  }
  ChatOptions o;
  o.thinking = r.thinking;
  std::string text;
  try {
    text = encode_chat(r.messages, o);
  } catch (const Error& e) {
    throw bad("messages", e.what());
  }
  r.prompt = tok.encode(text, false);
}

void read_completion_prompt(const json& j, const Tokenizer& tok, Request& r) {
  if (!present(j, "prompt")) throw bad("prompt", "\"prompt\" is required");
  json p = j["prompt"];
  // A list holding one prompt is one prompt; batches of several are not supported.
  if (p.is_array() && p.size() == 1 && (p[0].is_string() || p[0].is_array())) p = json(p[0]);
  const bool add_special = boolean(j, "add_special_tokens").value_or(true);
  if (p.is_string()) {
    r.prompt_text = p.get<std::string>();
    r.prompt = tok.encode(r.prompt_text, add_special);
  } else if (p.is_array() && !p.empty() && p[0].is_number()) {
    r.prompt = token_list(p, tok, "prompt");
    r.prompt_text = tok.decode(r.prompt);
  } else if (p.is_array() && p.size() > 1) {
    throw bad("prompt", "a batch of several prompts is not supported: send one request per prompt");
  } else {
    throw bad("prompt", "\"prompt\" must be a string or a list of token ids");
  }
  if (r.prompt.empty()) throw bad("prompt", "the prompt is empty");
}

}  // namespace

std::string ApiError::json() const {
  nlohmann::ordered_json e;
  e["message"] = what();
  e["type"] = type_;
  e["param"] = param_.empty() ? nlohmann::ordered_json() : nlohmann::ordered_json(param_);
  e["code"] = code_.empty() ? nlohmann::ordered_json() : nlohmann::ordered_json(code_);
  nlohmann::ordered_json out;
  out["error"] = e;
  return out.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
}

namespace {
Request parse_checked(Endpoint endpoint, std::string_view body, const Tokenizer& tok, const Defaults& d);
}

Request parse_request(Endpoint endpoint, std::string_view body, const Tokenizer& tok, const Defaults& d) {
  try {
    return parse_checked(endpoint, body, tok, d);
  } catch (const Error& e) {
    // What the library refuses in a request (text the tokenizer rejects, ...) is the client's error.
    throw bad("", e.what());
  }
}

namespace {
Request parse_checked(Endpoint endpoint, std::string_view body, const Tokenizer& tok, const Defaults& d) {
  const json j = parse_body(body);
  Request r;
  r.endpoint = endpoint;
  const bool chat = endpoint == Endpoint::ChatCompletions;
  refuse_unsupported(j, endpoint);
  if (present(j, "model")) {
    if (!j["model"].is_string()) throw bad("model", "\"model\" must be a string");
    r.model = j["model"].get<std::string>();
    if (!d.any_model_name && r.model != d.model_id)
      throw ApiError(404, "invalid_request_error", "model", fmt::format("The model `{}` does not exist.", r.model),
                     "model_not_found");
  }
  // Generation and reply fields first: they are cheap to check, the prompt is not.
  r.n = int(integer(j, "n", 1, d.max_n).value_or(1));
  std::optional<int64_t> max_tokens = integer(j, "max_tokens", 1, INT32_MAX);
  if (auto m = integer(j, "max_completion_tokens", 1, INT32_MAX)) max_tokens = m;
  r.stop = stop_strings(j);
  r.ignore_eos = boolean(j, "ignore_eos").value_or(false);
  r.stream = boolean(j, "stream").value_or(false);
  if (present(j, "stream_options")) {
    const json& so = j["stream_options"];
    if (!so.is_object()) throw bad("stream_options", "\"stream_options\" must be an object");
    if (!r.stream) throw bad("stream_options", "\"stream_options\" is only allowed when \"stream\" is true");
    r.include_usage = boolean(so, "include_usage").value_or(false);
  }
  const GenerationConfig& g = d.generation;
  if (auto t = number(j, "temperature", 0.0, 2.0)) r.temperature = float(*t);
  else r.temperature = g.do_sample ? g.temperature : 0.0f;
  r.top_p = float(number(j, "top_p", 1e-9, 1.0).value_or(g.top_p));
  r.top_k = integer(j, "top_k", -1, INT32_MAX).value_or(g.top_k);
  if (r.top_k < 0) r.top_k = 0;
  r.min_p = float(number(j, "min_p", 0.0, 1.0).value_or(0.0));
  if (present(j, "seed")) {
    if (!j["seed"].is_number_integer()) throw bad("seed", fmt::format("\"seed\" must be an integer, got {}", json_excerpt(j["seed"])));
    r.seed = j["seed"].is_number_unsigned() ? j["seed"].get<uint64_t>() : uint64_t(j["seed"].get<int64_t>());
  }
  r.frequency_penalty = float(number(j, "frequency_penalty", -2.0, 2.0).value_or(0.0));
  r.presence_penalty = float(number(j, "presence_penalty", -2.0, 2.0).value_or(0.0));
  r.repetition_penalty = float(number(j, "repetition_penalty", 1.0, 2.0).value_or(1.0));
  r.logit_bias = logit_bias(j, tok);
  if (chat) {
    r.logprobs = boolean(j, "logprobs").value_or(false);
    r.top_logprobs = int(integer(j, "top_logprobs", 0, 20).value_or(0));
    if (present(j, "top_logprobs") && !r.logprobs)
      throw bad("top_logprobs", "\"top_logprobs\" requires \"logprobs\": true");
  } else if (present(j, "logprobs")) {
    r.logprobs = true;
    r.top_logprobs = int(integer(j, "logprobs", 0, 20).value_or(0));
  }
  r.tokens_as_ids = boolean(j, "return_tokens_as_token_ids").value_or(false);
  if (!chat) {
    r.echo = boolean(j, "echo").value_or(false);
    if (present(j, "best_of") && integer(j, "best_of", 1, d.max_n) != r.n)
      throw bad("best_of", "\"best_of\" other than n is not supported by this server");
  }
  read_response_format(j, r);
  if (chat) {
    const auto tools = tool_names(j);
    read_tool_choice(j, tools, r);
    if (present(j, "tools") && r.tool_choice != ToolChoice::None) r.tools_json = python_json_dumps(j["tools"].dump());
    r.parallel_tool_calls = boolean(j, "parallel_tool_calls").value_or(true);
    read_chat_prompt(j, body, tok, r);
  } else {
    read_completion_prompt(j, tok, r);
  }
  // The context holds the prompt and the completion (vLLM's rule and message).
  const int64_t p = int64_t(r.prompt.size());
  const char* what = chat ? "messages" : "prompt";
  if (p >= d.context)
    throw ApiError(400, "invalid_request_error", what,
                   fmt::format("This model's maximum context length is {} tokens. However, your {} resulted in {} "
                               "tokens. Please reduce the length of the {}.", d.context, what, p, what),
                   "context_length_exceeded");
  if (max_tokens && p + *max_tokens > d.context)
    throw ApiError(400, "invalid_request_error", "max_tokens",
                   fmt::format("This model's maximum context length is {} tokens. However, you requested {} tokens "
                               "({} in the {}, {} in the completion). Please reduce the length of the {} or "
                               "completion.", d.context, p + *max_tokens, p, what, *max_tokens, what),
                   "context_length_exceeded");
  r.max_tokens = max_tokens.value_or(d.context - p);
  read_constraint(j, tok, r);
  return r;
}
}  // namespace

std::string tokenize_reply(std::string_view body, const Tokenizer& tok, const Defaults& d) {
  const json j = parse_body(body);
  Request r;
  if (present(j, "messages")) {
    read_chat_prompt(j, body, tok, r);
  } else if (present(j, "prompt") && j["prompt"].is_string()) {
    r.prompt = tok.encode(j["prompt"].get<std::string>(), boolean(j, "add_special_tokens").value_or(true));
  } else {
    throw bad("prompt", "/tokenize needs \"prompt\" (a string) or \"messages\"");
  }
  nlohmann::ordered_json out;
  out["count"] = r.prompt.size();
  out["max_model_len"] = d.context;
  out["tokens"] = r.prompt;
  if (boolean(j, "return_token_strs").value_or(false)) {
    auto strs = nlohmann::ordered_json::array();
    for (int32_t id : r.prompt) strs.push_back(utf8_lossy(tok.token_bytes(id)));
    out["token_strs"] = strs;
  }
  return out.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
}

std::string detokenize_reply(std::string_view body, const Tokenizer& tok) {
  const json j = parse_body(body);
  if (!present(j, "tokens") || !j["tokens"].is_array()) throw bad("tokens", "/detokenize needs \"tokens\": a list of token ids");
  nlohmann::ordered_json out;
  out["prompt"] = tok.decode(token_list(j["tokens"], tok, "tokens"));
  return out.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
}

std::string models_reply(const Defaults& d, int64_t created) {
  nlohmann::ordered_json m;
  m["id"] = d.model_id;
  m["object"] = "model";
  m["created"] = created;
  m["owned_by"] = "dsinfer";
  m["max_model_len"] = d.context;
  nlohmann::ordered_json out;
  out["object"] = "list";
  out["data"] = nlohmann::ordered_json::array({m});
  return out.dump();
}

}  // namespace dsinfer::openai
