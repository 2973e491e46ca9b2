// dsinfer — constrained decoding: output that follows a JSON Schema, a regular expression or DeepSeek-V3.2's DSML
// tool-call format, enforced token by token as a stage of the sampler chain.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "dsinfer/export.hpp"
#include "dsinfer/chat.hpp"
#include "dsinfer/error.hpp"
#include "dsinfer/sampler.hpp"
#include "dsinfer/tokenizer.hpp"

namespace dsinfer {

// What a generation's answer must be. In thinking mode the reasoning (up to </think>) is not held to the answer's
// format: it is free text, except that it cannot end the message or contain a special token other than </think>, so
// the completion always parses; the constraint starts after </think>.
struct DSINFER_CXX_API ConstraintSpec {
  enum class Kind {
    None,        // nothing is enforced
    JsonSchema,  // `json_schema`: a JSON value that validates against it (the subset in docs/structured-output.md)
    JsonObject,  // any JSON object (OpenAI's json_object)
    Regex,       // `regex`: text that matches it as a whole (an ECMAScript subset)
    ToolCalls,   // a DSML function-call block invoking the tools of `tools_json`
    // Free text that may end with one DSML function-call block as ToolCalls describes (tool_choice "auto"): the text
    // is not constrained except that it holds no DSML tags; once it reaches "\n\n<｜DSML｜" the block must follow,
    // then the end. So a call, when the model makes one, always parses and names a declared tool.
    TextOrToolCalls,
  };
  Kind kind = Kind::None;
  std::string json_schema;  // JsonSchema
  std::string regex;        // Regex
  // ToolCalls, TextOrToolCalls: the OpenAI tool list ([{"type": "function", "function": {"name", "parameters"}}]).
  // Every invocation names a declared tool and passes its parameters as its schema says: string-typed ones as raw text
  // (string="true"), the others as JSON that validates against their schema (string="false"); required ones always,
  // in the schema's order.
  std::string tools_json;
  std::string tool_name;            // ToolCalls: only this tool may be called ("" = any declared tool)
  bool parallel_tool_calls = true;  // ToolCalls: several invocations in the block (else exactly one)
  // JsonSchema/JsonObject/Regex with tool_choice "auto" and tools: the answer may instead be a tool-call block.
  bool or_tool_calls = false;
  // Thinking: the output begins with reasoning, which ends at </think> (the prompt ended with <think>).
  ThinkingMode thinking = ThinkingMode::Chat;
  int64_t max_reasoning_tokens = -1;  // thinking: after this many reasoning tokens only </think> is allowed; -1: no cap

  bool enforces() const { return kind != Kind::None; }
};

// What an OpenAI-style request asks to be enforced, from its top-level fields (JSON texts; "" = absent):
//   response_format {"type": "json_object"} -> JsonObject; {"type": "json_schema", "json_schema": {"schema": S,
//   "strict": true}} -> JsonSchema(S) (without strict: true the schema is only shown to the model, as with OpenAI);
//   {"type": "regex", "regex": R} (dsinfer's extension) -> Regex; {"type": "text"} -> nothing.
//   tool_choice "required" -> ToolCalls; {"type": "function", "function": {"name": N}} -> ToolCalls of N;
//   "auto" (the default) with tools -> TextOrToolCalls (the model may answer in text or call; a call it makes is
//   held to the tools' schemas, as llama.cpp's lazy tool grammars do); "none" enforces nothing; with an enforced
//   response format, tools and tool_choice auto the answer may be either. A tool call takes precedence over the
//   response format.
// Errors: InvalidArgument naming the field (malformed JSON, unknown type, a named tool that is not declared,
// tool_choice required without tools), also for inputs over the limits of Constraint::compile.
// Threads: any number at once.
DSINFER_CXX_API
ConstraintSpec constraint_from_request(std::string_view response_format_json, std::string_view tools_json,
                                       std::string_view tool_choice_json, bool parallel_tool_calls = true,
                                       ThinkingMode thinking = ThinkingMode::Chat, int64_t max_reasoning_tokens = -1);
// The same from a whole request body ({"messages", "tools", "response_format", "tool_choice",
// "parallel_tool_calls", ...}; other keys are ignored), as the CLI's request files, the C ABI and Python pass it.
DSINFER_CXX_API
ConstraintSpec constraint_from_request_json(std::string_view request_json, ThinkingMode thinking = ThinkingMode::Chat);

// A compiled constraint: the spec turned into a grammar and indexed against one tokenizer's vocabulary. Immutable;
// any number of samplers and threads may share it. The grammar engine is xgrammar's C++ core (docs/architecture.md).
class DSINFER_CXX_API Constraint {
 public:
  // Validates and compiles. Nothing is generated, so a bad constraint fails here, before any token is sampled.
  // Errors: InvalidArgument (malformed schema, regex or tool list, naming where; a constraint no text can satisfy),
  // Unsupported (a JSON Schema keyword or construct that cannot be enforced exactly, named), and limits:
  // InvalidArgument for a schema, regex or tool list over 1 MiB or nested deeper than 64.
  // Threads: any number at once. The vocabulary index of a tokenizer is built on its first compile and kept (for the
  // last 4 tokenizers); the same spec compiled again for the same tokenizer comes from xgrammar's cache.
  static std::shared_ptr<const Constraint> compile(const Tokenizer& tokenizer, const ConstraintSpec& spec);
  ~Constraint();
  const ConstraintSpec& spec() const;
  double compile_ms() const;  // how long compile() took
  int64_t vocab_size() const;  // the tokenizer's size: ids at or beyond it are never allowed

  struct Impl;
  const Impl& impl() const { return *impl_; }
  explicit Constraint(std::unique_ptr<Impl> impl);

 private:
  std::unique_ptr<Impl> impl_;
};

// The constraint stage of a sampler chain. apply() removes every candidate that cannot continue a valid output (the
// end-of-sentence token stays only once the output is complete; after it, only end-of-sentence); accept() advances
// it by the committed token. Put it first in the chain, so that top-k/top-p/temperature and selectors work on valid
// tokens only; samplers before it may only remove candidates. One generation per sampler (reset() starts over);
// clone() copies its state. `thinking` overrides the spec's (a Session passes its own mode).
// Errors from apply(): InvalidArgument when none of the candidates is allowed (a sampler before it removed every
// valid one) or after accept() was given a token the constraint did not allow (named).
class DSINFER_CXX_API ConstraintSampler : public Sampler {
 public:
  explicit ConstraintSampler(std::shared_ptr<const Constraint> constraint,
                             std::optional<ThinkingMode> thinking = std::nullopt);
  ConstraintSampler(const ConstraintSampler& other);
  ~ConstraintSampler() override;
  std::string name() const override { return "constraint"; }
  void apply(Candidates& c) override;
  void accept(int32_t token) override;
  void reset() override;
  std::unique_ptr<Sampler> clone() const override;
  // Its matcher is its own; the compiled grammar it reads is shared and immutable.
  bool thread_compatible() const override { return true; }

  // The tokens apply() would keep, as a bitmask: bit id%32 of word id/32, (vocab_size()+31)/32 words, resized to fit.
  // For callers that mask logits themselves (a batch on a device, another runtime's sampler).
  void fill_bitmask(std::vector<uint32_t>& mask);

  bool complete() const;      // the output so far is a complete valid answer (end-of-sentence is allowed now)
  bool terminated() const;    // the end-of-sentence token was accepted after a complete answer
  bool in_reasoning() const;  // thinking mode, before </think>
  const Constraint& constraint() const;

 private:
  struct State;
  std::unique_ptr<State> st_;
  bool fill_state_mask();
};

// How dsinfer's front doors compile a request's constraint (the server, the CLI's request files, Python's
// Session.chat): nullptr when the spec enforces nothing and caps no reasoning. Tools under tool_choice "auto"
// (Kind::TextOrToolCalls: the client asked for no guarantee, as OpenAI serves non-strict tools) that cannot be
// enforced exactly are left out when `tools_not_enforced` is given: it receives the reason, and what else the spec
// asks (a reasoning cap) is still compiled. Every other failure throws as Constraint::compile does (also those tools
// when `tools_not_enforced` is null). Threads: any number at once.
DSINFER_CXX_API
std::shared_ptr<const Constraint> compile_request_constraint(const Tokenizer& tokenizer, ConstraintSpec spec,
                                                             std::string* tools_not_enforced = nullptr);

// The factory an application or server calls: compiles the request's constraint for `tokenizer` and returns its
// sampler stage, or nullptr when the request enforces nothing. Errors: as constraint_from_request and compile.
DSINFER_CXX_API
std::unique_ptr<ConstraintSampler> make_constraint_sampler(const Tokenizer& tokenizer, std::string_view request_json,
                                                           ThinkingMode thinking = ThinkingMode::Chat);

}  // namespace dsinfer
