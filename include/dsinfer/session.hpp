// dsinfer — a conversation with a model: its KV cache, its sampler, streaming generation with tool-call events.
#pragma once
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "dsinfer/chat.hpp"
#include "dsinfer/model.hpp"
#include "dsinfer/sampler.hpp"
#include "dsinfer/tokenizer.hpp"

namespace dsinfer {

enum class FinishReason { None, Eos, StopString, MaxTokens };

class Constraint;  // constraint.hpp

struct SessionParams {
  int64_t capacity = 4096;          // tokens the KV cache holds
  EvalOptions eval;                 // precision, attention form
  ThinkingMode thinking = ThinkingMode::Chat;  // how set_messages renders and how replies are parsed
};

struct GenerateParams {
  int64_t max_tokens = 256;
  std::vector<std::string> stop;    // stop strings: generation ends before them, they are not emitted
  bool stop_at_eos = true;
  // Constrained decoding (constraint.hpp): when set, a ConstraintSampler for it runs before the session's sampler
  // chain on every step of this generation (in the session's thinking mode: the reasoning is free, the answer after
  // </think> follows the constraint), and the generation ends when the constrained output is complete and
  // end-of-sentence is sampled. Shared: one compiled constraint serves any number of generations and sessions.
  std::shared_ptr<const Constraint> constraint;
};

// One conversation. Borrows the model and the tokenizer (both must outlive it). Use from one thread at a time,
// except cancel(), which any thread may call.
class Session {
 public:
  Session(const Model& model, const Tokenizer& tokenizer, const SessionParams& params = {});
  ~Session();

  // Takes ownership of the chain. The default is greedy; the checkpoint's recommended sampling is
  // make_default_chain(load_generation_config(dir), seed).
  void set_sampler(std::unique_ptr<SamplerChain> chain);
  SamplerChain& sampler();

  // Appends ids to the cache. Errors as Model::eval (the session is left as it was).
  void prefill(std::span<const int32_t> ids);
  // Renders the whole conversation in DeepSeek-V3.2's format and evaluates only what differs from the cached
  // tokens: the cache is cut at the first differing token (in thinking mode an earlier turn re-renders when a new
  // user message arrives) and the rest is appended. Errors: as encode_chat and Model::eval.
  void set_messages(const std::vector<ChatMessage>& conversation);
  // Like set_messages, but the suffix is only queued: the next start() evaluates it, or an Engine evaluates it in
  // one forward together with other sessions' tokens.
  void queue_messages(const std::vector<ChatMessage>& conversation);
  int64_t last_prefill_tokens() const;  // how many tokens the last prefill/set_messages evaluated

  // Pull-style generation: start(), then next() until it returns false; finish_reason() tells why it ended.
  // next() throws Error(Cancelled) if cancel() was called, and passes on sampler and evaluation errors
  // (OutOfMemory when the cache is full); the generation then ends and the session stays usable.
  void start(const GenerateParams& params);
  bool next(ChatEvent& event);
  // Push-style: runs start()/next() and calls on_event for every event; returning false stops early.
  FinishReason generate(const GenerateParams& params, const std::function<bool(const ChatEvent&)>& on_event = {});
  void cancel();  // thread-safe; the running next() throws Cancelled

  FinishReason finish_reason() const;
  const std::vector<int32_t>& generated() const;  // ids of the current/last generation
  const std::string& generated_text() const;      // its text (stop strings excluded)
  const ChatMessage& reply() const;                // its parse: reasoning, content, tool calls

  const std::vector<int32_t>& tokens() const;      // every token in the cache, in order
  const std::vector<float>& last_logits() const;   // logits after the last cached token

  // A new session sharing nothing mutable with this one: a copy of the cache, tokens, logits and sampler state.
  std::unique_ptr<Session> fork() const;
  // Save to / restore from a file: versioned, checked against the model (Model::save_sequence) and the tokens.
  void save(const std::string& path) const;
  void restore(const std::string& path);

 private:
  friend class Engine;
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Steps many sessions together: each step samples one token for every session still generating and evaluates
// all of them in one forward (Model::eval_batch); the first step also carries the prompts queued with
// queue_messages, so prefill chunks and decode tokens share a forward. Every session gets exactly the tokens it
// would get alone. Borrows the model. The sessions share one precision.
class Engine {
 public:
  explicit Engine(const Model& model) : model_(model) {}
  // Runs until every session has finished; on_event(i, event) receives session i's events (may be empty).
  // Errors from any session (full cache, sampler failure, cancel) end the whole call; every session stays usable.
  void generate(std::span<Session* const> sessions, const GenerateParams& params,
                const std::function<void(size_t, const ChatEvent&)>& on_event = {});

 private:
  const Model& model_;
};

}  // namespace dsinfer
