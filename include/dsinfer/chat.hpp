// dsinfer — DeepSeek-V3.2's chat encoding (its own DSML format; there is no Jinja template) and its inverse.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "dsinfer/export.hpp"
#include "dsinfer/error.hpp"

namespace dsinfer {

struct DSINFER_CXX_API ToolCall {
  std::string id;         // may be empty (the model does not produce ids)
  std::string name;
  std::string arguments;  // a JSON object as text, as in OpenAI's API
};

// One message in OpenAI form. JSON-valued fields are carried as JSON text so that this header needs no JSON library.
struct DSINFER_CXX_API ChatMessage {
  std::string role;                              // system, user, assistant, tool, developer
  std::optional<std::string> content;            // nullopt = JSON null / absent
  std::optional<std::string> reasoning_content;  // assistant thinking
  std::vector<ToolCall> tool_calls;              // assistant
  std::string tool_call_id;                      // tool
  std::string tools_json;                        // system/developer: JSON list of OpenAI tools, "" = none
  std::string response_format_json;              // system/developer: JSON schema object, "" = none
};

enum class ThinkingMode { Chat, Thinking };

struct DSINFER_CXX_API ChatOptions {
  ThinkingMode thinking = ThinkingMode::Chat;
  bool drop_thinking = true;  // drop reasoning of assistant turns before the last user turn (thinking mode)
  bool add_bos = true;        // begin with <｜begin▁of▁sentence｜> (only when there is no context)
};

// The chat format a checkpoint was trained on, told from its config.json model_type and its tokenizer_config.json
// chat_template. encode_chat writes DeepSeek-V3.2's format only; the V3 family (V3, V3.1, R1: model_type
// deepseek_v3, each with its own chat_template) and DeepSeek-V3.2-Exp (model_type deepseek_v32 like V3.2, but
// prompted through a V3.1-style chat_template with the legacy tool-call tokens, where V3.2 ships no template and
// writes tool calls in DSML) have other special tokens and tool-call syntax, so a chat for one of them is refused
// (check_chat_format) rather than prompted wrong. Raw token ids and raw text work for every model.
enum class ChatFormat {
  DeepseekV32,  // model_type deepseek_v32: DeepSeek's encoding_dsv32 (what encode_chat writes)
  DeepseekV32Exp,  // model_type deepseek_v32 with a chat_template that does not write DSML (DeepSeek-V3.2-Exp)
  DeepseekV3,   // model_type deepseek_v3, a template without thinking (DeepSeek-V3, V3-0324), or none at all
  DeepseekV31,  // model_type deepseek_v3, a template with a `thinking` switch (DeepSeek-V3.1, V3.1-Terminus)
  DeepseekR1,   // model_type deepseek_v3, a template that strips reasoning up to </think> (DeepSeek-R1, R1-0528)
  Unknown,      // another model_type
};
// "deepseek-v3.2", "deepseek-v3.2-exp", "deepseek-v3", "deepseek-v3.1", "deepseek-r1", "unknown".
DSINFER_CXX_API const char* chat_format_name(ChatFormat format);
// From the two texts (chat_template may be empty: absent). Threads: any.
DSINFER_CXX_API ChatFormat detect_chat_format(std::string_view model_type, std::string_view chat_template);
// The same from a checkpoint directory's config.json and tokenizer_config.json, without loading the model (what the
// CLI's prompt command uses). Errors: Io (no config.json), Format (malformed JSON).
DSINFER_CXX_API ChatFormat checkpoint_chat_format(const std::string& dir);
// Throws Error(Unsupported) naming the family unless `format` is DeepseekV32 (Unknown passes too: a test or
// converted checkpoint of another model_type is the caller's responsibility). What every chat front door calls
// before encode_chat for a model (Session::set_messages, the OpenAI layer's chat completions, the CLI's chat/prompt).
DSINFER_CXX_API void check_chat_format(ChatFormat format);

// The prompt text for `messages` (after `context`, which is not rendered but decides indices and reasoning
// dropping), byte for byte what DeepSeek's encoding_dsv32.encode_messages returns: with a context the result is the
// suffix a session appends to its cache (no bos). The official code's quirks are kept: a null user or tool content
// prints as "None", tool results map by order onto the previous assistant's tool calls, reasoning is rendered only
// after the last user/developer message. JSON (tools, response_format, non-string arguments) is printed as Python's
// json.dumps(..., ensure_ascii=False) prints it, integers beyond 64 bits included.
// Ownership: returns a new string; nothing is kept.
// Errors: InvalidArgument, naming the message index, for a conversation the official encoder refuses (unknown role,
// tool result without a tool call, tool call arguments that are not JSON or not an object, naming the tool, a
// developer message without content, an assistant turn in thinking mode without reasoning or tool calls after the
// last user message, ...). Where Python's json.loads is laxer than JSON (NaN, Infinity, 1e400) this refuses too.
// Threads: any number of threads at once.
DSINFER_CXX_API
std::string encode_chat(const std::vector<ChatMessage>& messages, const ChatOptions& options = {},
                        const std::vector<ChatMessage>& context = {});

// Messages from OpenAI-style JSON, as the CLI and the C API pass them: {"messages": [...], "tools": [...],
// "response_format": {...}} (an OpenAI request body: other top-level keys are ignored) or a bare list of messages.
// Per message: role, content (a string, null, or a list of text parts {"type": "text", "text": ...}, joined with
// "\n" as vLLM joins them), reasoning_content, tool_calls ({"id", "function": {"name", "arguments"}}; arguments as a
// JSON string or, leniently, an object), tool_call_id, tools, response_format; other keys (name, ...) are ignored,
// as the official encoder ignores them. Top-level tools go where the official test puts them, on messages[0] when
// it is a system message (replacing any tools it had); without a system message an empty one is put first, so the
// prompt starts "<bos>\n\n## Tools" (dsinfer's choice; spec §10.1). A top-level response_format goes to the same
// system message, where the official encoder renders it; {"type": "text"} (OpenAI's default) asks for nothing and
// is left out.
// Ownership: returns new messages; `json` is not kept.
// Errors: Format for malformed JSON or fields of the wrong type (content parts other than text parts), naming the
// message index.
// Threads: any number of threads at once.
DSINFER_CXX_API std::vector<ChatMessage> chat_messages_from_json(std::string_view json);

// The inverse for a completion: reasoning (thinking mode, up to </think>), content and DSML tool calls, as
// DeepSeek's parse_message_from_completion_text does it (which does not repair malformed output). Tool call
// arguments come back as JSON text: string="true" values JSON-quoted, string="false" values as written; ids are empty.
// `text` ends with <｜end▁of▁sentence｜>, which may be left out after a tool-call block (as DeepSeek's parser allows).
// For streaming and malformed output see ChatStreamParser.
// Where DeepSeek's parser accepts more than the format, artefacts of its regexes and loop, this one (and
// ChatStreamParser) refuses it, so that the two parsers accept the same completions:
// - a string="false" value that is not JSON (DeepSeek inserts it as written, and the arguments are not JSON);
// - a tool or parameter name with a quote, a line break or ｜DSML｜ in it (DSML does not escape names; DeepSeek's
//   lazy pattern lets a name run over '">\n' and the markers that follow it);
// - a function-call block that the text ends inside, before </｜DSML｜function_calls> (DeepSeek returns the calls
//   read so far; a cut-off block may lack parameters and calls);
// - whitespace other than ASCII (space, \t, \n, \r, \f, \v) between "<｜DSML｜invoke" and "name=" (DeepSeek: any \s);
// - a line break between a parameter's value and "/｜DSML｜parameter" (DeepSeek's "<$" drops it from the value).
// The encoder still writes any name as DeepSeek's does; one with a quote or a line break does not parse back.
// Ownership: returns a new message; `text` is not kept.
// Errors: Format with the byte offset where the text stops following the format (no </think> in thinking mode,
// malformed invoke or parameter, one of the cases above, text after the calls, special tokens inside content or
// reasoning); InvalidArgument if `text` is not valid UTF-8.
// Threads: any number of threads at once.
DSINFER_CXX_API ChatMessage parse_completion(std::string_view text, ThinkingMode thinking);

// What the streaming parser reports while a completion is generated.
struct DSINFER_CXX_API ChatEvent {
  enum class Kind {
    ReasoningDelta,  // text: more reasoning (thinking mode, before </think>)
    ContentDelta,    // text: more visible content (also the raw text of a malformed tool-call block)
    ToolCallBegin,   // tool_index, name
    ToolArgsDelta,   // tool_index, text: the next piece of the arguments JSON (concatenated: the full object)
    ToolCallEnd,     // tool_index, name, arguments: the complete arguments JSON
    Error,           // text: what is wrong; offset: byte offset in the completion. Parsing goes on tolerantly.
  };
  Kind kind = Kind::ContentDelta;
  std::string text;
  int32_t tool_index = -1;
  std::string name;
  std::string arguments;
  size_t offset = 0;
};

// Incremental DSML parser, fed the detokenized text as it is generated. Streams reasoning, content and tool-call
// arguments (not buffered until the end of an invocation); holds back only a few bytes that might begin a marker.
// On malformed output it emits an Error event with the offset and delivers the raw text of the broken tool-call
// block as content, then treats everything after as content: no text is lost. Well-formed completions give the
// same reasoning, content and tool calls (arguments byte for byte) as parse_completion, and the two agree on what is
// well-formed: a completion streams without an Error event exactly when parse_completion accepts it (or, where the
// generation stopped before <｜end▁of▁sentence｜> in the content, accepts it with one appended), given valid UTF-8
// (the detokenizer's output is). One thread at a time.
class DSINFER_CXX_API ChatStreamParser {
 public:
  explicit ChatStreamParser(ThinkingMode thinking);
  ~ChatStreamParser();
  ChatStreamParser(ChatStreamParser&&) noexcept;
  void feed(std::string_view piece, std::vector<ChatEvent>& events);
  void finish(std::vector<ChatEvent>& events);  // the generation ended (eos, stop string, max tokens)
  const ChatMessage& message() const;           // what has been parsed so far (complete tool calls only)
  bool had_error() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Serializes a value the way Python's json.dumps(json.loads(json_text), ensure_ascii=False) does (", " and ": "
// separators, non-ASCII kept, only '"', '\\' and control characters escaped, Python's float repr, integers of any
// size, duplicate keys: first position, last value). Ownership: returns a new string.
// Errors: Format if `json_text` is not JSON. Threads: any number of threads at once.
DSINFER_CXX_API std::string python_json_dumps(std::string_view json_text);

}  // namespace dsinfer
