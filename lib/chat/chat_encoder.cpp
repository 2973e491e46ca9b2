// DeepSeek-V3.2 prompt encoding, byte for byte what the official encoding_dsv32.encode_messages produces
// (checked against its outputs by tests/lib/chat). The official code's quirks are kept on purpose, with a comment
// where they show: a prompt that differs by one byte changes what the model does.
#include <fmt/format.h>

#include <algorithm>

#include "chat/dsml_grammar.hpp"
#include "chat/py_json.hpp"
#include "dsinfer/chat.hpp"
#include "util/json_input.hpp"

namespace dsinfer {

namespace {

using namespace dsml;

constexpr std::string_view kToolsTemplateHead =
    "## Tools\n\n"
    "You have access to a set of tools you can use to answer the user's question.\n"
    "You can invoke functions by writing a \"<｜DSML｜function_calls>\" block like the following as part of your "
    "reply to the user:\n"
    "<｜DSML｜function_calls>\n"
    "<｜DSML｜invoke name=\"$FUNCTION_NAME\">\n"
    "<｜DSML｜parameter name=\"$PARAMETER_NAME\" string=\"true|false\">$PARAMETER_VALUE</｜DSML｜parameter>\n"
    "...\n"
    "</｜DSML｜invoke>\n"
    "<｜DSML｜invoke name=\"$FUNCTION_NAME2\">\n"
    "...\n"
    "</｜DSML｜invoke>\n"
    "</｜DSML｜function_calls>\n\n"
    "String and scalar parameters should be specified as is without any escaping or quotes, while lists and objects "
    "should use JSON format. The \"string\" attribute should be set to \"true\" for string type parameters and "
    "\"false\" for other types (numbers, booleans, arrays, objects).\n\n"
    "If the thinking_mode is enabled, then after function results you should strongly consider outputting a "
    "thinking block. Here is an example:\n\n"
    "<｜DSML｜function_calls>\n"
    "...\n"
    "</｜DSML｜function_calls>\n\n"
    "<function_results>\n"
    "...\n"
    "</function_results>\n\n"
    "<think>...thinking about results</think>\n\n"
    "Here are the functions available in JSONSchema format:\n"
    "<functions>\n";
constexpr std::string_view kToolsTemplateTail = "\n</functions>\n";
constexpr std::string_view kResponseFormatHead =
    "## Response Format:\n\nYou MUST strictly adhere to the following schema to reply:\n";

[[noreturn]] void refuse(size_t index, const std::string& why) {
  throw Error(ErrorCode::InvalidArgument, fmt::format("message {}: {}", index, why));
}

ojson parse_field(const std::string& text, size_t index, const char* field) {
  try {
    return py_parse(text);
  } catch (const JsonInputError& e) {
    throw Error(ErrorCode::InvalidArgument, fmt::format("message {}: {} is not valid JSON: {}", index, field, e.what()));
  }
}

// Python's str() of the content as the official template's str.format inserts it: None prints as "None".
std::string py_str(const std::optional<std::string>& s) { return s ? *s : "None"; }

std::string render_tools(const ojson& tools, size_t index) {
  std::string out(kToolsTemplateHead);
  bool first = true;
  for (const auto& t : tools) {
    if (!t.is_object() || !t.contains("function"))
      refuse(index, fmt::format("tool {} is not in OpenAI form {{\"type\": \"function\", \"function\": {{...}}}}", excerpt(py_dumps(t))));
    if (!first) out += "\n";
    first = false;
    out += py_dumps(t["function"]);
  }
  out += kToolsTemplateTail;
  return out;
}

std::string encode_arguments(const ToolCall& call, size_t index) {
  ojson args;
  try {
    args = py_parse(call.arguments);
  } catch (const JsonInputError& e) {
    throw Error(ErrorCode::InvalidArgument, fmt::format("message {}: the arguments of tool call \"{}\" are not JSON: {}",
                                                        index, call.name, e.what()));
  }
  if (!args.is_object())
    throw Error(ErrorCode::InvalidArgument,
                fmt::format("message {}: the arguments of tool call \"{}\" must be a JSON object, found {}", index,
                            call.name, excerpt(call.arguments)));
  std::string out;
  bool first = true;
  for (const auto& [k, v] : args.items()) {
    if (!first) out += "\n";
    first = false;
    const bool is_str = v.is_string();
    out += fmt::format("<{}parameter name=\"{}\" string=\"{}\">{}</{}parameter>", kDsml, k, is_str ? "true" : "false",
                       is_str ? v.get<std::string>() : py_dumps(v), kDsml);
  }
  return out;
}

int64_t last_user_index(const std::vector<const ChatMessage*>& msgs) {
  for (int64_t i = int64_t(msgs.size()) - 1; i >= 0; --i)
    if (msgs[size_t(i)]->role == "user" || msgs[size_t(i)]->role == "developer") return i;
  return -1;
}

std::string render_message(size_t index, const std::vector<const ChatMessage*>& msgs, bool thinking) {
  // The official render asserts 0 <= index < len(messages); after reasoning dropping removed a message (see
  // encode_chat) an index can run past the end.
  if (index >= msgs.size())
    refuse(index, "out of range after dropping earlier messages (the official encoder refuses this conversation)");
  const ChatMessage& m = *msgs[index];
  const int64_t last_user = last_user_index(msgs);
  std::string p;
  const ojson tools = m.tools_json.empty() ? ojson() : parse_field(m.tools_json, index, "tools");
  const ojson rf = m.response_format_json.empty() ? ojson() : parse_field(m.response_format_json, index, "response_format");
  if (py_truthy(tools) && !tools.is_array()) refuse(index, "tools must be a list");
  const bool is_last_user = int64_t(index) == last_user;

  if (m.role == "system") {
    p += m.content.value_or("");
    if (py_truthy(tools)) p += "\n\n" + render_tools(tools, index);
    if (py_truthy(rf)) p += "\n\n" + std::string(kResponseFormatHead) + py_dumps(rf);
  } else if (m.role == "developer") {
    if (!m.content || m.content->empty()) refuse(index, "a developer message needs content");
    std::string c;
    if (py_truthy(tools)) c += "\n\n" + render_tools(tools, index);
    if (py_truthy(rf)) c += "\n\n" + std::string(kResponseFormatHead) + py_dumps(rf);
    c += "\n\n# The user's message is: " + *m.content;
    p += std::string(kUser) + c + std::string(kAssistant);
    p += is_last_user && thinking ? kThinkStart : kThinkEnd;
  } else if (m.role == "user") {
    p += std::string(kUser) + py_str(m.content) + std::string(kAssistant);
    p += is_last_user && thinking ? kThinkStart : kThinkEnd;
  } else if (m.role == "tool") {
    // Tool results map by order onto the tool calls of the assistant message before the run of tool messages.
    int64_t prev = int64_t(index) - 1;
    const ChatMessage* assistant = msgs[size_t(prev < 0 ? int64_t(msgs.size()) + prev : prev)];  // Python's m[-1]
    while (prev >= 0 && assistant->role == "tool") {
      --prev;
      assistant = msgs[size_t(prev < 0 ? int64_t(msgs.size()) + prev : prev)];
    }
    if (!(index == 0 || (prev >= 0 && assistant->role == "assistant")))
      refuse(index, "a tool result must follow an assistant message with tool calls");
    const size_t order = size_t(int64_t(index) - prev);
    if (assistant->tool_calls.empty() || assistant->tool_calls.size() < order)
      refuse(index, "a tool result without a matching tool call");
    if (order == 1) p += "\n\n" + std::string(kFunctionResultsBegin);
    p += "\n<result>" + py_str(m.content) + "</result>";
    if (order == assistant->tool_calls.size()) {
      p += "\n" + std::string(kFunctionResultsEnd);
      p += "\n\n" + std::string(int64_t(index) >= last_user && thinking ? kThinkStart : kThinkEnd);
    }
  } else if (m.role == "assistant") {
    std::string calls;
    if (!m.tool_calls.empty()) {
      std::string invokes;
      for (size_t i = 0; i < m.tool_calls.size(); ++i) {
        if (i) invokes += "\n";
        invokes += fmt::format("<{}invoke name=\"{}\">\n{}\n</{}invoke>", kDsml, m.tool_calls[i].name,
                               encode_arguments(m.tool_calls[i], index), kDsml);
      }
      calls = fmt::format("\n\n<{}function_calls>\n{}\n</{}function_calls>", kDsml, invokes, kDsml);
    }
    std::string thinking_part;
    const bool has_reasoning = m.reasoning_content && !m.reasoning_content->empty();
    if (thinking && int64_t(index) > last_user) {
      if (!has_reasoning && m.tool_calls.empty())
        refuse(index, "in thinking mode an assistant message after the last user message needs reasoning_content or "
                      "tool_calls");
      thinking_part = m.reasoning_content.value_or("") + std::string(kThinkEnd);
    }
    p += thinking_part + m.content.value_or("") + calls + std::string(kEos);
  } else {
    refuse(index, fmt::format("unknown role \"{}\" (system, user, assistant, tool, developer)", m.role));
  }
  return p;
}

}  // namespace

std::string encode_chat(const std::vector<ChatMessage>& messages, const ChatOptions& options,
                        const std::vector<ChatMessage>& context) {
  const bool thinking = options.thinking == ThinkingMode::Thinking;
  std::vector<const ChatMessage*> full;
  for (const auto& m : context) full.push_back(&m);
  for (const auto& m : messages) full.push_back(&m);
  std::string prompt = options.add_bos && context.empty() ? std::string(kBos) : std::string();

  // Reasoning retention (spec §10): in thinking mode, assistant messages before the last user/developer message
  // lose their reasoning. As in the official code, messages of any other role before it (developer, unknown) are
  // dropped altogether, and rendering still walks the original indices over the shortened list.
  std::vector<ChatMessage> stripped;
  stripped.reserve(full.size());
  if (thinking && options.drop_thinking) {
    const int64_t last_user = last_user_index(full);
    std::vector<const ChatMessage*> kept;
    for (size_t i = 0; i < full.size(); ++i) {
      const std::string& role = full[i]->role;
      if (role == "user" || role == "system" || role == "tool" || int64_t(i) >= last_user) {
        kept.push_back(full[i]);
      } else if (role == "assistant") {
        stripped.push_back(*full[i]);
        stripped.back().reasoning_content.reset();
        kept.push_back(&stripped.back());
      }
    }
    full.swap(kept);
  }
  for (size_t i = 0; i < messages.size(); ++i) prompt += render_message(i + context.size(), full, thinking);
  return prompt;
}

namespace {

std::optional<std::string> opt_string(const ojson& m, const char* key, size_t index) {
  if (!m.contains(key) || m[key].is_null()) return std::nullopt;
  if (!m[key].is_string())
    throw Error(ErrorCode::Format, fmt::format("message {}: \"{}\" must be a string, found {}", index, key, excerpt(py_dumps(m[key]))));
  return m[key].get<std::string>();
}

// OpenAI's "content": a string, null, or a list of parts of which only text parts are accepted; their texts are
// joined with "\n" (as vLLM joins them).
std::optional<std::string> content_text(const ojson& m, size_t index) {
  if (!m.contains("content") || !m["content"].is_array()) return opt_string(m, "content", index);
  std::string text;
  const ojson& parts = m["content"];
  for (size_t k = 0; k < parts.size(); ++k) {
    const ojson& part = parts[k];
    if (!part.is_object() || !part.contains("type") || part["type"] != "text" || !part.contains("text") ||
        !part["text"].is_string())
      throw Error(ErrorCode::Format, fmt::format("message {}: content part {} is not a text part ({{\"type\": \"text\", "
                                                 "\"text\": ...}}; other kinds are not supported)", index, k));
    if (k) text += "\n";
    text += part["text"].get<std::string>();
  }
  return text;
}

// A response_format that asks for something: OpenAI's default {"type": "text"} asks for nothing.
bool asks_for_format(const ojson& rf) {
  return !rf.is_null() && !(rf.is_object() && rf.size() == 1 && rf.contains("type") && rf["type"] == "text");
}

}  // namespace

std::vector<ChatMessage> chat_messages_from_json(std::string_view text) {
  ojson j;
  try {
    j = py_parse(text);
  } catch (const JsonInputError& e) {
    throw Error(ErrorCode::Format, fmt::format("messages are not valid JSON: {}", e.what()));
  }
  const ojson* list = &j;
  ojson tools, response_format;
  if (j.is_object()) {
    if (!j.contains("messages") || !j["messages"].is_array())
      throw Error(ErrorCode::Format, "expected {\"messages\": [...], \"tools\": [...]} or a list of messages");
    list = &j["messages"];
    if (j.contains("tools") && !j["tools"].is_null()) {
      tools = j["tools"];
      if (!tools.is_array()) throw Error(ErrorCode::Format, "\"tools\" must be a list");
    }
    if (j.contains("response_format") && asks_for_format(j["response_format"])) {
      response_format = j["response_format"];
      if (!response_format.is_object()) throw Error(ErrorCode::Format, "\"response_format\" must be an object");
    }
  } else if (!j.is_array()) {
    throw Error(ErrorCode::Format, "expected {\"messages\": [...], \"tools\": [...]} or a list of messages");
  }
  std::vector<ChatMessage> out;
  for (size_t i = 0; i < list->size(); ++i) {
    const ojson& m = (*list)[i];
    if (!m.is_object()) throw Error(ErrorCode::Format, fmt::format("message {} is not a JSON object", i));
    ChatMessage c;
    if (!m.contains("role") || !m["role"].is_string())
      throw Error(ErrorCode::Format, fmt::format("message {} has no \"role\" string", i));
    c.role = m["role"].get<std::string>();
    c.content = content_text(m, i);
    c.reasoning_content = opt_string(m, "reasoning_content", i);
    c.tool_call_id = opt_string(m, "tool_call_id", i).value_or("");
    if (m.contains("tools") && !m["tools"].is_null()) c.tools_json = py_dumps(m["tools"]);
    if (m.contains("response_format") && asks_for_format(m["response_format"])) c.response_format_json = py_dumps(m["response_format"]);
    if (m.contains("tool_calls") && !m["tool_calls"].is_null()) {
      if (!m["tool_calls"].is_array()) throw Error(ErrorCode::Format, fmt::format("message {}: \"tool_calls\" must be a list", i));
      for (const auto& tc : m["tool_calls"]) {
        const ojson& fn = tc.is_object() && tc.contains("function") ? tc["function"] : ojson();
        if (!fn.is_object() || !fn.contains("name") || !fn["name"].is_string() || !fn.contains("arguments"))
          throw Error(ErrorCode::Format,
                      fmt::format("message {}: tool call {} needs {{\"function\": {{\"name\", \"arguments\"}}}}", i, excerpt(py_dumps(tc))));
        ToolCall call;
        call.id = tc.contains("id") && tc["id"].is_string() ? tc["id"].get<std::string>() : "";
        call.name = fn["name"].get<std::string>();
        // OpenAI sends arguments as a JSON string; an object is accepted and kept in document order.
        call.arguments = fn["arguments"].is_string() ? fn["arguments"].get<std::string>() : py_dumps(fn["arguments"]);
        c.tool_calls.push_back(std::move(call));
      }
    }
    out.push_back(std::move(c));
  }
  const bool attach_tools = !tools.is_null() && !tools.empty();
  if (attach_tools || !response_format.is_null()) {
    // The official test attaches tools to messages[0], the system message; without one we put an empty system
    // message first (the prompt then starts "<bos>\n\n## Tools"). A top-level response_format goes to the same
    // message, where the official encoder renders it after the tools.
    if (out.empty() || out[0].role != "system") {
      ChatMessage sys;
      sys.role = "system";
      sys.content = "";
      out.insert(out.begin(), sys);
    }
    if (attach_tools) out[0].tools_json = py_dumps(tools);
    if (!response_format.is_null()) out[0].response_format_json = py_dumps(response_format);
  }
  return out;
}

std::string python_json_dumps(std::string_view json_text) {
  try {
    return py_dumps(py_parse(json_text));
  } catch (const JsonInputError& e) {
    throw Error(ErrorCode::Format, fmt::format("not valid JSON: {}", e.what()));
  }
}

}  // namespace dsinfer
