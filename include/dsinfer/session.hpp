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

#include "dsinfer/export.hpp"
#include "dsinfer/chat.hpp"
#include "dsinfer/model.hpp"
#include "dsinfer/sampler.hpp"
#include "dsinfer/tokenizer.hpp"

namespace dsinfer {

enum class FinishReason { None, Eos, StopString, MaxTokens };

class Constraint;          // constraint.hpp
struct EngineSpeculation;  // internal (lib/session/speculation_policy.hpp)

// Speculative decoding with the checkpoint's MTP module (docs/speculative.md): each step the MTP module drafts up
// to `draft_tokens` tokens (one module chained), the main model checks them in one forward, and the session's own
// sampler chain picks every token from the main model's logits exactly as without speculation; a draft is kept only
// when it equals that token. The output is token for token what decoding without speculation gives (same seed,
// same sampler chain, user samplers and constraints included); only the speed changes.
struct DSINFER_CXX_API SpeculativeParams {
  int64_t draft_tokens = 0;  // 0 = off; 1 .. Model::kMaxDraftTokens drafts per step at most
  // Back off when drafts do not pay: the number of drafts per step follows the measured acceptance and the timed
  // cost of a verification against a plain step (in an Engine, what the session's rows add to the batch's forward;
  // none while drafting does not pay, with a one-draft probe every 16 plain steps until three were timed, then
  // after 32, 64, then every 128; those plain steps skip the MTP layer). Where the session's timings show that even
  // every draft accepted would gain under 10 %, it stops speculating for good and drops its MTP state. In an Engine
  // a new session with the same draft_tokens starts from that verdict (up to 15 of them, then one measures again),
  // or else from the measurements of the last session that left without one (docs/speculative.md). false = always
  // draft_tokens.
  bool adaptive = true;
  // Another source of drafts instead of the MTP module (prompt lookup, a test's oracle): called with the tokens in
  // the cache, the token about to be evaluated after them and the most drafts wanted; appends up to that many ids to
  // `out` (ids outside the vocabulary fail the step with InvalidArgument). With a drafter the checkpoint needs no
  // MTP module. Empty = the MTP module.
  std::function<void(std::span<const int32_t> context, int32_t next, int64_t max_drafts, std::vector<int32_t>& out)>
      drafter;
};

// What speculation did in a session (every generation since the session was made or reset_speculative_stats()).
struct DSINFER_CXX_API SpeculativeStats {
  int64_t steps = 0;         // verifications (main-model forwards over drafts)
  int64_t drafted = 0;       // drafted tokens that were checked
  int64_t accepted = 0;      // of which accepted
  std::vector<int64_t> drafted_at, accepted_at;  // by draft position (0 = the first draft of a step)
  int64_t plain_steps = 0;   // decode steps without drafts (back-off, or no room in the cache)
  double acceptance() const { return drafted ? double(accepted) / double(drafted) : 0.0; }
};

struct DSINFER_CXX_API SessionParams {
  int64_t capacity = 4096;          // tokens the KV cache holds
  EvalOptions eval;                 // precision, attention form
  ThinkingMode thinking = ThinkingMode::Chat;  // how set_messages renders and how replies are parsed
  // The reply is plain text, not a chat turn (a raw prompt's continuation): every piece of text is a ContentDelta
  // event, nothing is parsed as DSML, and reply().content is the whole text.
  bool raw_text = false;
  // The seed of the default sampler chain's draw (see Session::set_sampler).
  uint64_t seed = 0;
  // Off by default; needs a checkpoint with an MTP module (ModelInfo::has_mtp), else the Session constructor throws
  // Error(Unsupported).
  SpeculativeParams speculative;
};

struct DSINFER_CXX_API GenerateParams {
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
class DSINFER_CXX_API Session {
 public:
  Session(const Model& model, const Tokenizer& tokenizer, const SessionParams& params = {});
  ~Session();

  // Takes ownership of the chain. The default is the checkpoint's sampling, make_default_chain(
  // model.info().generation, params.seed): generation_config.json's temperature, top_k and top_p, then a seeded
  // draw; greedy when the checkpoint has no generation_config.json or says do_sample false. Set a greedy chain
  // (make_greedy_sampler) for deterministic argmax decoding.
  // Reproducibility: a chain keeps its state (the draw's RNG, penalties' history) across generations, so a
  // conversation's turns draw fresh numbers. sampler().reset() is the reset point: from it (or from a new session),
  // the same seed, cache and prompt give the same tokens.
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
  // Like queue_messages, for a prompt already rendered to token ids (the whole sequence the cache should hold): the
  // cached tokens that match the beginning of `ids` are kept, the cache is cut after them and the rest is queued.
  // The next sample needs the logits after the last token: unless the cache holds exactly `ids` and those logits, at
  // least the last token is queued. Returns how many tokens of `ids` were kept from the cache (a prefix cache hit).
  // min_new > 0 queues at least that many of the last tokens even when the cache holds them: a server passes 2 so
  // that the prompt's last tokens are evaluated as a multi-token chunk (the MHA form) exactly as they are without
  // a cache hit, keeping greedy outputs bitwise independent of the prefix cache (a single token would take the
  // absorbed form, equal only to ~1e-6).
  // Errors: InvalidArgument for empty ids or a negative min_new.
  int64_t queue_tokens(std::span<const int32_t> ids, int64_t min_new = 0);
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
  // The same with other parameters (thinking mode, raw text, precision, capacity >= the cached tokens): how a
  // server reuses a cached conversation prefix for a request of another kind. The sampler is cloned as above.
  std::unique_ptr<Session> fork(const SessionParams& params) const;
  // Save to / restore from a file: versioned, checked against the model (Model::save_sequence) and the tokens.
  // The MTP module's cache is not saved: a restored speculating session rebuilds it from the tokens (its drafts
  // are weaker for a while; the output is unaffected).
  void save(const std::string& path) const;
  void restore(const std::string& path);

  const SpeculativeStats& speculative_stats() const;
  void reset_speculative_stats();

 private:
  friend class Engine;
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Steps many sessions together: each step samples one token for every session still generating and evaluates
// all of them in one forward (Model::eval_batch); a session's queued prompt (queue_messages / queue_tokens) is
// evaluated in the first step it takes part in, so prefill chunks and decode tokens share a forward. Every session
// gets exactly the tokens it would get alone. A speculating session (SessionParams::speculative) sends its drafted
// tokens along in the same forward and may take several tokens in one step. Borrows the model and the sessions it holds. The sessions share one
// precision. Use from one thread at a time. Sessions whose samplers are all thread-compatible (the built-ins and
// constraints: Sampler::thread_compatible) are sampled at the start of a step in parallel on the engine's own
// worker threads (Model::host_threads, started at the first step that has two such sessions); the others, and
// every event callback, run on the calling thread in session order.
class DSINFER_CXX_API Engine {
 public:
  // max_step_prompt_tokens > 0 bounds the prompt tokens one step evaluates while other sessions decode (chunked
  // prefill): a longer queued prompt, or several arriving together, are evaluated over several steps (FIFO) while
  // the decoding sessions go on, so no step stalls them for a whole long prompt. With no session decoding, whole
  // prompts go in one step. Chunks are at least 2 tokens (the multi-token
  // attention form), which keeps every session's results bitwise those it gets alone. 0 = a whole prompt per step.
  explicit Engine(const Model& model, int64_t max_step_prompt_tokens = 0);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;
  // Runs until every session has finished; on_event(i, event) receives session i's events (may be empty).
  // Errors from any session (full cache, sampler failure, cancel) end the whole call; every session stays usable.
  // The engine must hold no sessions added with add().
  void generate(std::span<Session* const> sessions, const GenerateParams& params,
                const std::function<void(size_t, const ChatEvent&)>& on_event = {});

  // Continuous batching, what a server runs: sessions join with add() and leave when their generation ends, between
  // steps. add() starts the session's next generation; it joins the next step (its queued prompt evaluated in that
  // step's forward). Errors: InvalidArgument (a session of another model or precision, one already in the engine,
  // one with nothing to continue from).
  void add(Session& session, const GenerateParams& params);
  // Takes a session out at once (its client went away, ...): its generation ends with FinishReason::None, its cache
  // keeps what was evaluated. No-op for a session the engine does not hold.
  void remove(Session& session);
  struct Failure {
    Session* session;
    Error error;
  };
  struct StepResult {
    std::vector<Session*> finished;  // left this step: eos, stop string or max tokens (see finish_reason())
    std::vector<Failure> failed;     // left this step with an error: cancel(), sampler failure, full cache
    int64_t batch_sessions = 0;      // sequences in this step's forward
    int64_t batch_tokens = 0;        // tokens evaluated in it (prompts and decode tokens)
  };
  // One step over every session the engine holds: samples (events go to on_event), evaluates, and lets finished and
  // failed sessions leave. A failing session never fails the others: when the shared forward fails, each session is
  // evaluated alone and only those that fail alone are failed (the cache of each is left as it was).
  StepResult step(const std::function<void(Session&, const ChatEvent&)>& on_event = {});
  size_t size() const { return active_.size(); }  // sessions in the engine

 private:
  struct Active {
    Session* session;
    std::vector<int32_t> prompt;  // queued tokens, evaluated in the session's first step(s)
    size_t prompt_done = 0;       // of which evaluated (chunked prefill)
    int32_t next = -1;
    int64_t verify_from = -1;     // this step verifies drafts (speculative decoding): the session's size before it
    double draft_seconds = 0;     // the time its drafts took (adaptive speculation)
  };
  struct SamplingWorkers;  // a thread pool, started when first needed
  const Model& model_;
  int64_t max_step_prompt_tokens_ = 0;
  std::vector<Active> active_;
  std::unique_ptr<SamplingWorkers> workers_;
  // Adaptive speculation: the forward's time by its rows, and the last stand-down for sessions that join later.
  std::unique_ptr<EngineSpeculation> speculation_;
};

}  // namespace dsinfer
