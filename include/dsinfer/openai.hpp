// dsinfer — OpenAI's chat completions and completions protocol over sessions: a request body parsed and checked,
// the sessions and sampler chains it asks for, and its reply or streamed chunks in OpenAI's exact shape. `dsinfer
// serve` and Python's dsinfer.Client both run requests through this, so the two give the same fields, replies and
// chunks. Built only on the public API (Session, Engine, samplers, the chat encoder and streaming DSML parser).
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "dsinfer/export.hpp"
#include "dsinfer/chat.hpp"
#include "dsinfer/constraint.hpp"
#include "dsinfer/model.hpp"
#include "dsinfer/sampler.hpp"
#include "dsinfer/session.hpp"
#include "dsinfer/tokenizer.hpp"

namespace dsinfer::openai {

// A request the protocol refuses: the HTTP status and OpenAI's error object.
class DSINFER_CXX_API ApiError : public std::runtime_error {
 public:
  ApiError(int status, std::string type, std::string param, const std::string& message, std::string code = {})
      : std::runtime_error(message), status_(status), type_(std::move(type)), param_(std::move(param)),
        code_(std::move(code)) {}
  int status() const { return status_; }
  const std::string& type() const { return type_; }    // invalid_request_error, authentication_error, ...
  const std::string& param() const { return param_; }  // the request field at fault ("" = none: JSON null)
  const std::string& code() const { return code_; }    // "" = null
  // {"error": {"message": ..., "type": ..., "param": ..., "code": ...}}
  std::string json() const;

 private:
  int status_;
  std::string type_, param_, code_;
};

// What the serving side knows: the defaults and limits requests are checked against.
struct DSINFER_CXX_API Defaults {
  std::string model_id = "dsinfer";  // the model name replies carry and /v1/models lists
  GenerationConfig generation;       // generation_config.json: sampling when a request does not say
  int64_t context = 4096;            // tokens one choice may hold: prompt + completion
  int max_n = 16;                    // choices per request
  // When false (a server started with other names allowed), a request's "model" must equal model_id (404 if not).
  bool any_model_name = false;
  // Speculative decoding with the checkpoint's MTP module for every choice (SpeculativeParams::draft_tokens; 0 = off).
  int64_t speculative_draft_tokens = 0;
};

enum class Endpoint { ChatCompletions, Completions };
enum class ToolChoice { Auto, None, Required, Function };

// A parsed, checked request: everything that decides its prompt, its sampling and the shape of its reply. Request
// parsing lives in parse_request only, which also compiles what response_format / tool_choice ask to be enforced.
struct DSINFER_CXX_API Request {
  Endpoint endpoint = Endpoint::ChatCompletions;
  std::string model;
  // The prompt.
  std::vector<ChatMessage> messages;      // chat: as rendered (top-level tools/response_format on the system message)
  ThinkingMode thinking = ThinkingMode::Chat;  // chat_template_kwargs {"thinking": true} (or "enable_thinking")
  std::vector<int32_t> prompt;            // the prompt's token ids, as the cache will hold them
  std::string prompt_text;                // completions: the prompt as text (for echo)
  std::string tools_json;                 // the tools rendered into the prompt ("" = none; tool_choice "none" hides them)
  ToolChoice tool_choice = ToolChoice::Auto;
  std::string tool_choice_function;       // ToolChoice::Function: the function's name
  bool parallel_tool_calls = true;
  std::string response_format_json;       // as rendered into the prompt ("" = none)
  // Constrained decoding (constraint.hpp), compiled for the tokenizer by parse_request: response_format json_object,
  // json_schema with "strict": true or regex; tool_choice "required" or a named function (a DSML call block of the
  // declared tools, one invocation when parallel_tool_calls is false); in thinking mode from </think> on, the
  // reasoning capped by max_reasoning_tokens (dsinfer's extension) when given. Every choice's generation runs it
  // (generate_params). nullptr: nothing is enforced.
  std::shared_ptr<const Constraint> constraint;
  // Generation.
  int n = 1;
  int64_t max_tokens = 0;                 // the default is what the context leaves
  std::vector<std::string> stop;
  bool ignore_eos = false;                // vLLM's extension
  // Sampling: temperature 0 (or do_sample false without a temperature) is greedy.
  float temperature = 1.0f, top_p = 1.0f, min_p = 0.0f;
  int64_t top_k = 0;
  std::optional<uint64_t> seed;           // choice i samples with seed + i; none: a random seed
  float frequency_penalty = 0.0f, presence_penalty = 0.0f, repetition_penalty = 1.0f;
  std::map<int32_t, float> logit_bias;
  // The reply.
  bool stream = false, include_usage = false;
  bool logprobs = false;                  // chat: logprobs; completions: logprobs given (an integer)
  int top_logprobs = 0;
  bool echo = false;                      // completions: the prompt text before the completion
  bool tokens_as_ids = false;             // vLLM's return_tokens_as_token_ids: logprob tokens as "token_id:N"

  bool greedy() const { return temperature == 0.0f; }
};

// Parses and checks a request body for `endpoint`, renders and tokenizes its prompt and compiles its constraint (so
// nothing is queued or generated for a request whose format cannot be enforced). Unknown fields are ignored as
// OpenAI ignores them, except fields that would change the output and are not supported: those are refused.
// Errors: ApiError 400 naming the field (malformed JSON: no field), 404 for another model's name, 400 with code
// context_length_exceeded and the token counts when the prompt (plus max_tokens) does not fit the context, 400
// naming response_format or tools for a schema that is invalid or cannot be enforced exactly (the message says
// where, and which keyword).
// Threads: any number at once (the tokenizer is shared read-only).
DSINFER_CXX_API
Request parse_request(Endpoint endpoint, std::string_view body, const Tokenizer& tok, const Defaults& defaults);

// The sampler chain a request asks for, for choice `choice`: [logprob recorder] -> logit bias -> penalties ->
// temperature -> top-k -> top-p -> min-p -> dist(seed + choice), or greedy after the penalties. The request's
// constraint is not in it: the session runs it before the chain (generate_params), so the recorder's logprobs are
// those of the distribution over the tokens the constraint allows.
DSINFER_CXX_API std::unique_ptr<SamplerChain> make_sampler_chain(const Request& request, int choice);

// One request's generation: its choices' sessions and what turns their events into OpenAI replies. Whoever runs
// it owns an Engine: start() gives choice 0's session (its prompt queued) to add; once that session's prompt has
// been evaluated (prompt_ready), fork_choices() gives the other n-1 choices, which share the prompt's cache blocks;
// the engine's events and ends go to on_event / on_finished / on_failed, which return the chunks to stream (JSON
// texts for SSE "data:" lines) when the request streams. reply() is the non-streamed reply. LocalCompletion does
// all of it on a private engine. One thread at a time.
class DSINFER_CXX_API Completion {
 public:
  Completion(Request request, const Model& model, const Tokenizer& tok, const Defaults& defaults);
  ~Completion();
  Completion(const Completion&) = delete;
  Completion& operator=(const Completion&) = delete;

  const Request& request() const;
  const std::string& id() const;  // chatcmpl-... / cmpl-...
  SessionParams session_params() const;
  GenerateParams generate_params() const;  // with the request's constraint: pass it to every choice's generation

  // Choice 0's session with the prompt queued; forked from `prefix` (a cached conversation) when given, so its
  // matching tokens are reused (cached_tokens()). Returns the first chunks to stream (the role chunks).
  Session& start(const Session* prefix, std::vector<std::string>& chunks);
  int64_t cached_tokens() const;
  bool prompt_ready() const;  // choice 0's prompt has been evaluated: the other choices can fork
  bool needs_forks() const;   // n > 1 and fork_choices() not called yet
  std::vector<Session*> fork_choices();
  std::vector<std::string> fork_chunks();  // the forked choices' first chunks (their role chunks when streaming)
  std::vector<Session*> sessions();

  void on_event(const Session& session, const ChatEvent& event, std::vector<std::string>& chunks);
  void on_finished(const Session& session, std::vector<std::string>& chunks);
  // A choice failed (cancel, an error): the completion ends with this error (error_json()).
  void on_failed(const Session& session, const Error& error);
  bool done() const;  // every choice has ended
  bool failed() const;
  const Error* error() const;  // what failed it (nullptr when it did not fail)
  // The last streamed chunks once done(): the usage chunk when stream_options.include_usage asked for it.
  void finish_stream(std::vector<std::string>& chunks);
  std::string reply() const;       // chat.completion / text_completion JSON (done() and not failed())
  std::string error_json() const;  // the error object of a failed completion
  int64_t prompt_tokens() const;
  int64_t completion_tokens() const;  // over all choices
  // Takes choice 0's session (to keep it as a cached prefix) once done; take_sessions takes every choice's.
  std::unique_ptr<Session> take_session();
  std::vector<std::unique_ptr<Session>> take_sessions();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// A request run on a private engine, one step at a time: what Python's dsinfer.Client runs (no HTTP, the same
// replies and chunks as the server). Borrows the model and tokenizer. One thread at a time.
class DSINFER_CXX_API LocalCompletion {
 public:
  LocalCompletion(Request request, const Model& model, const Tokenizer& tok, const Defaults& defaults);
  ~LocalCompletion();
  // One engine step; appends the chunks to stream. Returns false once the request is done (the last chunks
  // appended). Errors: ApiError 500 when a choice fails.
  bool next(std::vector<std::string>& chunks);
  // Runs to the end: on_chunk receives every chunk when streaming. Returns the reply.
  std::string run(const std::function<void(const std::string&)>& on_chunk = {});
  const Completion& completion() const { return completion_; }

 private:
  Completion completion_;
  Engine engine_;
  bool started_ = false, finished_ = false;
  void add_forks();
};

// /tokenize and /detokenize bodies (vLLM's shape): {"prompt": ...} or {"messages": [...], ...} -> {"count",
// "max_model_len", "tokens"[, "token_strs"]}; {"tokens": [...]} -> {"prompt": ...}. Errors: ApiError 400.
DSINFER_CXX_API std::string tokenize_reply(std::string_view body, const Tokenizer& tok, const Defaults& defaults);
DSINFER_CXX_API std::string detokenize_reply(std::string_view body, const Tokenizer& tok);
// GET /v1/models.
DSINFER_CXX_API std::string models_reply(const Defaults& defaults, int64_t created);

}  // namespace dsinfer::openai
