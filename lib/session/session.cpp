// Session: the cache, sampler and generation loop of one conversation.
#include "dsinfer/session.hpp"
#include "dsinfer/constraint.hpp"
#include "session/speculation_policy.hpp"
#include "util/thread_pool.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <deque>
#include <filesystem>
#include <unordered_map>
#include <fstream>

namespace dsinfer {

namespace {

constexpr char kSessionMagic[8] = {'D', 'S', 'I', 'S', 'E', 'S', '0', '1'};

void write_vec(std::ostream& o, const void* p, uint64_t n_bytes) {
  o.write(reinterpret_cast<const char*>(&n_bytes), 8);
  o.write(static_cast<const char*>(p), std::streamsize(n_bytes));
}
// A length-prefixed array of at most max_elems elements: the length is checked before anything is allocated.
template <class T>
std::vector<T> read_vec(std::istream& in, uint64_t max_elems, const char* what) {
  uint64_t n = 0;
  in.read(reinterpret_cast<char*>(&n), 8);
  if (!in) throw Error(ErrorCode::Format, "session file is truncated");
  if (n % sizeof(T) || n / sizeof(T) > max_elems)
    throw Error(ErrorCode::Format, fmt::format("session file is corrupt: {} is {} bytes, expected at most {} {}-byte values",
                                               what, n, max_elems, sizeof(T)));
  std::vector<T> v(n / sizeof(T));
  in.read(reinterpret_cast<char*>(v.data()), std::streamsize(n));
  if (!in) throw Error(ErrorCode::Format, "session file is truncated");
  return v;
}

// Longest suffix of s that is a proper prefix of one of the stop strings.
size_t stop_holdback(const std::string& s, const std::vector<std::string>& stops) {
  size_t keep = 0;
  for (const auto& st : stops)
    for (size_t n = std::min(s.size(), st.size() - 1); n > keep; --n)
      if (s.compare(s.size() - n, n, st, 0, n) == 0) {
        keep = n;
        break;
      }
  return keep;
}

}  // namespace

// A sampler owned elsewhere, run as a stage of a chain built for one generation.
struct BorrowedSampler final : Sampler {
  explicit BorrowedSampler(Sampler& s) : s(s) {}
  Sampler& s;
  std::string name() const override { return s.name(); }
  void apply(Candidates& c) override { s.apply(c); }
  std::unique_ptr<Sampler> clone() const override { return std::make_unique<BorrowedSampler>(s); }
  bool thread_compatible() const override { return s.thread_compatible(); }
};

struct Session::Impl {
  const Model& model;
  const Tokenizer& tok;
  SessionParams params;
  std::unique_ptr<Sequence> seq;
  std::unique_ptr<SamplerChain> sampler;
  std::vector<int32_t> tokens;        // exactly what the cache holds
  std::vector<float> logits;          // after tokens.back()
  std::optional<int32_t> pending;     // sampled at the end of a generation, not yet evaluated
  std::vector<int32_t> queued;        // a conversation suffix queued by queue_messages, not yet evaluated
  int64_t last_prefill = 0;
  std::atomic<bool> cancelled{false};
  // the current generation
  GenerateParams gen;
  bool running = false;
  FinishReason reason = FinishReason::None;
  std::vector<int32_t> generated;
  std::string text, unsent;
  std::optional<Detokenizer> detok;
  std::optional<ChatStreamParser> parser;
  ChatMessage reply;
  std::deque<ChatEvent> queue;
  // Constrained decoding of the current generation: the constraint's stage, then the session's chain.
  std::unique_ptr<ConstraintSampler> constraint;
  std::unique_ptr<SamplerChain> constrained_chain;
  // Speculative decoding: a token sampled (and emitted) at the end of a verification, not yet evaluated; the next
  // step evaluates it instead of sampling.
  std::optional<int32_t> carried;
  SpeculativeStats spec_stats;
  SpeculationPolicy policy;  // adaptive speculation's drafts per step (SpeculativeParams::adaptive)
  std::vector<int32_t> draft_ids;  // [next, d1..dk] of the current verification (storage reused)
  std::vector<float> verify_logits;
  std::vector<Model::DraftEntry> draft_entry;

  Impl(const Model& m, const Tokenizer& t, const SessionParams& p)
      : model(m), tok(t), params(p), policy(p.speculative.draft_tokens, modelled_draft_cost(m.info())) {
    check_speculative(model, p);
    seq = model.new_sequence(p.capacity);
    if (uses_mtp()) model.enable_mtp(*seq, true, {}, p.eval);
  }

  static void check_speculative(const Model& model, const SessionParams& p) {
    const int64_t k = p.speculative.draft_tokens;
    if (k < 0 || k > Model::kMaxDraftTokens)
      throw Error(ErrorCode::InvalidArgument, fmt::format("SpeculativeParams::draft_tokens must be 0 (off) to {}, got {}",
                                                          Model::kMaxDraftTokens, k));
    if (k > 0 && !p.speculative.drafter && !model.info().has_mtp)
      throw Error(ErrorCode::Unsupported, "speculative decoding needs the checkpoint's MTP module, and this checkpoint "
                                          "has none (config.json num_nextn_predict_layers 0, or the layer is not stored)");
  }
  bool speculating() const { return params.speculative.draft_tokens > 0; }
  // The MTP state is kept while drafts may come from it: not with a drafter, nor once adaptive speculation stood down.
  bool uses_mtp() const { return speculating() && !params.speculative.drafter && !policy.stood_down(); }
  // A draft row's cost in plain steps, by the bytes it reads (decode is memory bound) — SpeculationPolicy's model.
  static double modelled_draft_cost(const ModelInfo& info) {
    return info.decode_weight_bytes > 0 ? double(info.mtp_draft_weight_bytes) / double(info.decode_weight_bytes) : 0.1;
  }

  int64_t usable_vocab() const { return std::min<int64_t>(tok.size(), model.info().vocab_size); }

  void eval(std::span<const int32_t> ids, bool defer_mtp = false) {
    EvalOptions o = params.eval;
    o.all_logits = false;
    o.defer_mtp = defer_mtp;
    // Through eval_batch with the session's own logits vector, so a decode step reuses its storage; an error
    // leaves the cache and the previous logits as they were.
    Model::BatchEntry e;
    e.sequence = seq.get();
    e.ids = ids;
    e.logits = std::move(logits);
    try {
      model.eval_batch(std::span<Model::BatchEntry>(&e, 1), o);
    } catch (...) {
      logits = std::move(e.logits);
      throw;
    }
    logits = std::move(e.logits);
    tokens.insert(tokens.end(), ids.begin(), ids.end());
    last_prefill = int64_t(ids.size());
  }

  void prefill(std::span<const int32_t> ids) {
    std::vector<int32_t> all;
    if (pending) all.push_back(*pending);
    all.insert(all.end(), queued.begin(), queued.end());
    all.insert(all.end(), ids.begin(), ids.end());
    if (all.empty()) return;
    eval(all);
    pending.reset();
    queued.clear();
  }

  // The tokens that must be evaluated before the next sample: a sampled-but-unevaluated token and a queued suffix.
  std::vector<int32_t> take_unevaluated() {
    std::vector<int32_t> ids;
    if (pending) ids.push_back(*pending);
    ids.insert(ids.end(), queued.begin(), queued.end());
    pending.reset();
    queued.clear();
    return ids;
  }

  void set_messages(const std::vector<ChatMessage>& conversation, bool defer = false) {
    // A V3-family checkpoint prompted in V3.2's format would answer garbage without any error: refuse instead.
    check_chat_format(detect_chat_format(model.info().model_type, model.info().chat_template));
    ChatOptions o;
    o.thinking = params.thinking;
    const std::vector<int32_t> full = tok.encode(encode_chat(conversation, o), false);
    if (full.empty()) throw Error(ErrorCode::InvalidArgument, "the conversation renders to no tokens");
    set_tokens(full, defer);
  }

  // Makes the cache hold `full`: keeps the matching prefix, cuts the rest and evaluates (or queues) what follows.
  // Returns how many tokens of `full` were kept from the cache.
  int64_t set_tokens(std::span<const int32_t> full, bool defer, size_t min_new = 0) {
    size_t common = 0;
    while (common < tokens.size() && common < full.size() && tokens[common] == full[common]) ++common;
    if (min_new > 0) common = std::min(common, full.size() - std::min(full.size(), min_new));
    // Logits are needed after the last token, so at least one token is always evaluated.
    if (common == full.size()) {
      if (common == tokens.size() && !logits.empty()) {
        pending.reset();
        queued.clear();
        last_prefill = 0;
        return int64_t(common);
      }
      --common;
    }
    seq->truncate(int64_t(common));
    tokens.resize(common);
    pending.reset();
    if (defer) {
      queued.assign(full.begin() + int64_t(common), full.end());
      logits.clear();  // stale until the queued tokens are evaluated
      return int64_t(common);
    }
    queued.clear();
    eval(full.subspan(common));
    return int64_t(common);
  }

  // The text the caller sees: through the DSML parser, or as plain content in raw-text mode.
  void emit(const std::string& piece, std::vector<ChatEvent>& ev) {
    if (parser) {
      parser->feed(piece, ev);
    } else if (!piece.empty()) {
      ChatEvent e;
      e.kind = ChatEvent::Kind::ContentDelta;
      e.text = piece;
      ev.push_back(std::move(e));
    }
  }

  void start(const GenerateParams& g, bool evaluate_queued = true) {
    carried.reset();
    if (evaluate_queued && (pending || !queued.empty())) {
      const auto ids = take_unevaluated();
      eval(ids);
    }
    if (logits.empty() && evaluate_queued) throw Error(ErrorCode::InvalidArgument, "nothing to continue: prefill the session first");
    gen = g;
    running = true;
    reason = FinishReason::None;
    generated.clear();
    text.clear();
    unsent.clear();
    queue.clear();
    detok.emplace(tok, false);
    if (params.raw_text) parser.reset();
    else parser.emplace(params.thinking);
    reply = ChatMessage{};
    cancelled = false;
    constraint.reset();
    constrained_chain.reset();
    if (g.constraint) {
      constraint = std::make_unique<ConstraintSampler>(g.constraint, params.thinking);
      chain_constraint();
    }
  }

  // The constraint's stage, then the session's chain (borrowed: rebuilt whenever set_sampler replaces it).
  void chain_constraint() {
    constrained_chain = std::make_unique<SamplerChain>();
    constrained_chain->add(std::make_unique<BorrowedSampler>(*constraint));
    constrained_chain->add(std::make_unique<BorrowedSampler>(*sampler));
  }

  void end(FinishReason r) {
    if (carried) {  // sampled and emitted, not evaluated: part of the conversation, evaluated when it continues
      pending = carried;
      carried.reset();
    }
    std::vector<ChatEvent> ev;
    if (!unsent.empty()) {
      emit(unsent, ev);
      text += unsent;
      unsent.clear();
    }
    const std::string tail = detok->finish();
    if (!tail.empty() && r != FinishReason::StopString) {
      emit(tail, ev);
      text += tail;
    }
    if (parser) {
      parser->finish(ev);
      reply = parser->message();
    } else {
      reply = ChatMessage{};
      reply.role = "assistant";
      reply.content = text;
    }
    for (auto& e : ev) queue.push_back(std::move(e));
    reason = r;
    running = false;
  }

  // Samples the next token and emits its text. Returns it when it must be evaluated (the generation goes on), or
  // nullopt when the generation ended with it.
  std::optional<int32_t> sample_step() {
    if (cancelled.exchange(false)) {
      end(FinishReason::None);
      throw Error(ErrorCode::Cancelled, fmt::format("generation cancelled after {} tokens", generated.size()));
    }
    if (int64_t(generated.size()) >= gen.max_tokens) {
      end(FinishReason::MaxTokens);
      return std::nullopt;
    }
    int32_t next;
    try {
      next = (constrained_chain ? *constrained_chain : *sampler).sample(logits, usable_vocab());
    } catch (...) {
      end(FinishReason::None);
      throw;
    }
    try {
      sampler->accept(next);
      if (constraint) constraint->accept(next);
    } catch (...) {  // a user sampler's accept failed: the generation ends, the session stays usable
      end(FinishReason::None);
      throw;
    }
    generated.push_back(next);
    if ((gen.stop_at_eos || (constraint && constraint->terminated())) && next == tok.eos_id()) {
      pending = next;  // part of the conversation; evaluated when the session continues
      end(FinishReason::Eos);
      return std::nullopt;
    }
    unsent += detok->push(next);
    std::vector<ChatEvent> ev;
    for (const auto& s : gen.stop) {
      const size_t p = unsent.find(s);
      if (p != std::string::npos) {
        unsent.resize(p);
        pending = next;
        end(FinishReason::StopString);
        return std::nullopt;
      }
    }
    const size_t keep = stop_holdback(unsent, gen.stop);
    const std::string out = unsent.substr(0, unsent.size() - keep);
    unsent.erase(0, unsent.size() - keep);
    text += out;
    emit(out, ev);
    for (auto& e : ev) queue.push_back(std::move(e));
    if (int64_t(generated.size()) >= gen.max_tokens) {
      pending = next;
      end(FinishReason::MaxTokens);
      return std::nullopt;
    }
    return next;
  }

  // The sampled token's evaluation failed: the generation ends, the cache is as before it.
  void abort_step() {
    pending.reset();
    end(FinishReason::None);
  }

  // Whether take_next may run on an Engine's worker thread: its samplers (the chain, a constraint) touch only their
  // own state. The rest of a sampling step is this session's alone (detokenizer, parser, stop strings, queue).
  bool samples_concurrently() const {
    return constrained_chain ? constrained_chain->thread_compatible() : sampler->thread_compatible();
  }

  // The token this step evaluates: the one a verification carried over (already sampled and emitted), else a new
  // sample. nullopt when the generation ended.
  std::optional<int32_t> take_next() {
    if (!carried) return sample_step();
    const int32_t t = *carried;
    carried.reset();
    if (cancelled.exchange(false)) {
      pending = t;
      end(FinishReason::None);
      throw Error(ErrorCode::Cancelled, fmt::format("generation cancelled after {} tokens", generated.size()));
    }
    return t;
  }

  void step() {
    const std::optional<int32_t> next = take_next();
    if (!next) return;
    const int64_t k = speculating() ? draft_count() : 0;
    const bool adaptive = speculating() && params.speculative.adaptive;
    const auto t0 = std::chrono::steady_clock::now();
    if (k > 0) {
      speculate(*next, k, t0);
      return;
    }
    if (speculating()) spec_stats.plain_steps += 1;
    try {
      // Adaptive speculation that drafts nothing this step leaves the MTP row for the next draft to run, batched.
      eval(std::span<const int32_t>(&*next, 1), adaptive);
      last_prefill = 0;
    } catch (...) {
      abort_step();
      throw;
    }
    if (adaptive) policy.plain_step(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }

  // Whether an Engine's SpeculationRecord takes this session's measurements and hands it others': adaptive, with
  // the MTP module's drafts (a drafter's costs are its own).
  bool records_speculation() const {
    return speculating() && params.speculative.adaptive && !params.speculative.drafter;
  }
  // In an Engine: a session that would measure from nothing (nothing timed yet), joining `batch` sessions, starts
  // from a stand-down another session of the engine measured (and drops the MTP state it would not use), else from
  // the measurements a session left without a verdict. Asked when it joins and at its decode steps until it has
  // measured (the batch may grow after it joins).
  void take_measurements(SpeculationRecord& record, int64_t batch) {
    if (!records_speculation() || policy.stood_down() || policy.measured()) return;
    if (const SpeculationPolicy* p = record.hand_over(params.speculative.draft_tokens, batch)) {
      policy = *p;
      if (policy.stood_down() && model.mtp_enabled(*seq)) model.enable_mtp(*seq, false, {}, params.eval);
    }
  }
  // Leaving an Engine of `batch` sessions: measurements without a verdict stay for the sessions that join later.
  void leave_measurements(SpeculationRecord& record, int64_t batch) const {
    if (records_speculation() && !policy.stood_down() && policy.measured())
      record.record_leaving(policy, params.speculative.draft_tokens, batch);
  }

  // How many tokens to draft this step: all that fit (draft_tokens, less where the cache or max_tokens leaves less
  // room), or as many as pay (SpeculationPolicy) when adaptive. When the policy stands down the MTP state goes: its
  // rows would cost a little in every forward for drafts that can no longer come.
  int64_t draft_count(bool timed = true) {
    const int64_t kmax = params.speculative.draft_tokens;
    int64_t room = params.capacity - int64_t(tokens.size()) - 1;  // verify writes next + k tokens
    // The sample that reaches max_tokens ends the generation: the drafts after it would never be checked.
    room = std::min<int64_t>(room, gen.max_tokens - int64_t(generated.size()) - 1);
    const int64_t limit = std::min(kmax, room);
    if (limit <= 0) return 0;
    if (!params.speculative.adaptive) return limit;
    const int64_t k = policy.draft_count(limit, timed);
    if (policy.stood_down() && model.mtp_enabled(*seq)) model.enable_mtp(*seq, false, {}, params.eval);
    return k;
  }

  // One speculative step: `next` (sampled from the current logits) and k MTP drafts after it go through the main
  // model in one forward whose every row is computed as a one-token step would compute it (exact rows); then the
  // session's chain samples from those rows one by one, as plain decoding would, while the samples equal the drafts.
  // The main cache is cut after the last accepted token (its MTP state rolls back with it); the last sample is
  // carried to the next step.
  // Fills draft_ids with [next, d1..dk] (k at most `k`; fewer when the drafter proposes fewer or the MTP cache is
  // full). A drafter's failure ends the generation (abort_step) and is passed on.
  void draft(int32_t next, int64_t k) {
    const int64_t V = model.info().vocab_size, usable = usable_vocab();
    draft_ids.assign(1, next);
    if (params.speculative.drafter) {
      std::vector<int32_t> out;
      try {
        params.speculative.drafter(tokens, next, k, out);
        for (const int32_t t : out)
          if (t < 0 || t >= V)
            throw Error(ErrorCode::InvalidArgument, fmt::format("the drafter proposed token id {}, outside [0, {})", t, V));
      } catch (...) {
        abort_step();
        throw;
      }
      if (int64_t(out.size()) > k) out.resize(size_t(k));
      k = int64_t(out.size());
      draft_ids.insert(draft_ids.end(), out.begin(), out.end());
    } else try {
      draft_entry.resize(1);
      Model::DraftEntry& d = draft_entry[0];
      d.sequence = seq.get();
      d.token = next;
      for (int64_t i = 0; i < k; ++i) {
        model.mtp_draft(std::span<Model::DraftEntry>(&d, 1), params.eval);
        d.token = int32_t(std::max_element(d.logits.begin(), d.logits.begin() + usable) - d.logits.begin());
        draft_ids.push_back(d.token);
      }
    } catch (const Error&) {
      k = 0;  // no drafts (the MTP cache is full): a plain step
      draft_ids.resize(1);
    }
  }

  void speculate(int32_t next, int64_t k, std::chrono::steady_clock::time_point t0) {
    draft(next, k);
    const int64_t S = int64_t(tokens.size());
    {
      EvalOptions o = params.eval;
      Model::BatchEntry e;
      e.sequence = seq.get();
      e.ids = draft_ids;
      e.all_logits = true;
      e.exact_rows = true;
      e.logits = std::move(verify_logits);
      try {
        model.eval_batch(std::span<Model::BatchEntry>(&e, 1), o);
      } catch (...) {
        verify_logits = std::move(e.logits);
        abort_step();
        throw;
      }
      verify_logits = std::move(e.logits);
    }
    const int64_t drafted = int64_t(draft_ids.size()) - 1;
    if (params.speculative.adaptive && drafted > 0) {
      policy.verify_step(drafted, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    accept_verified(S);
  }

  // After the forward over draft_ids (its [k + 1, vocab] logits in verify_logits, the cache grown from S tokens):
  // the chain samples row by row as plain decoding would while the samples equal the drafts; the cache is cut after
  // the last accepted token and the last sample is carried to the next step.
  void accept_verified(int64_t S) {
    const int64_t V = model.info().vocab_size;
    const int64_t k = int64_t(draft_ids.size()) - 1;
    const int32_t next = draft_ids[0];
    last_prefill = 0;
    tokens.push_back(next);
    if (k > 0) spec_stats.steps += 1;
    if (int64_t(spec_stats.drafted_at.size()) < k) {
      spec_stats.drafted_at.resize(size_t(k), 0);
      spec_stats.accepted_at.resize(size_t(k), 0);
    }
    for (int64_t r = 0; r <= k; ++r) {
      logits.assign(verify_logits.begin() + r * V, verify_logits.begin() + (r + 1) * V);
      std::optional<int32_t> t;
      try {
        t = sample_step();
      } catch (...) {
        seq->truncate(S + r + 1);
        throw;
      }
      if (!t) {  // the generation ended (its last token, if any, is pending)
        seq->truncate(S + r + 1);
        return;
      }
      if (r < k) {
        spec_stats.drafted += 1;
        spec_stats.drafted_at[size_t(r)] += 1;
        const bool ok = *t == draft_ids[size_t(r + 1)];
        if (params.speculative.adaptive) policy.checked(ok);
        if (ok) {
          spec_stats.accepted += 1;
          spec_stats.accepted_at[size_t(r)] += 1;
          tokens.push_back(*t);
          continue;
        }
      }
      seq->truncate(S + r + 1);
      carried = t;
      return;
    }
  }

  bool next(ChatEvent& e) {
    while (queue.empty() && running) step();
    if (queue.empty()) return false;
    e = std::move(queue.front());
    queue.pop_front();
    return true;
  }
};

Session::Session(const Model& model, const Tokenizer& tokenizer, const SessionParams& params)
    : impl_(std::make_unique<Impl>(model, tokenizer, params)) {
  // The checkpoint's recommended sampling (generation_config.json, read at load), seeded: what every front door
  // does unless told otherwise.
  impl_->sampler = make_default_chain(model.info().generation, params.seed);
}
Session::~Session() = default;

void Session::set_sampler(std::unique_ptr<SamplerChain> chain) {
  if (!chain) throw Error(ErrorCode::InvalidArgument, "set_sampler needs a chain");
  impl_->sampler = std::move(chain);
  // A running constrained generation goes on with the new chain after its constraint (a server sets a forked
  // choice's own chain after Engine::add started its generation).
  if (impl_->constraint) impl_->chain_constraint();
}
SamplerChain& Session::sampler() { return *impl_->sampler; }
void Session::prefill(std::span<const int32_t> ids) { impl_->prefill(ids); }
void Session::set_messages(const std::vector<ChatMessage>& conversation) { impl_->set_messages(conversation); }
void Session::queue_messages(const std::vector<ChatMessage>& conversation) { impl_->set_messages(conversation, true); }
int64_t Session::queue_tokens(std::span<const int32_t> ids, int64_t min_new) {
  if (ids.empty()) throw Error(ErrorCode::InvalidArgument, "queue_tokens needs at least one token");
  if (min_new < 0) throw Error(ErrorCode::InvalidArgument, fmt::format("queue_tokens: min_new {} < 0", min_new));
  return impl_->set_tokens(ids, true, size_t(min_new));
}
int64_t Session::last_prefill_tokens() const { return impl_->last_prefill; }
void Session::start(const GenerateParams& params) { impl_->start(params); }
bool Session::next(ChatEvent& event) { return impl_->next(event); }
void Session::cancel() { impl_->cancelled = true; }
FinishReason Session::finish_reason() const { return impl_->reason; }
const std::vector<int32_t>& Session::generated() const { return impl_->generated; }
const std::string& Session::generated_text() const { return impl_->text; }
const ChatMessage& Session::reply() const { return impl_->reply; }
const std::vector<int32_t>& Session::tokens() const { return impl_->tokens; }
const std::vector<float>& Session::last_logits() const { return impl_->logits; }
const SpeculativeStats& Session::speculative_stats() const { return impl_->spec_stats; }
void Session::reset_speculative_stats() { impl_->spec_stats = SpeculativeStats{}; }

FinishReason Session::generate(const GenerateParams& params, const std::function<bool(const ChatEvent&)>& on_event) {
  start(params);
  ChatEvent e;
  while (next(e))
    if (on_event && !on_event(e)) {
      impl_->end(FinishReason::None);
      break;
    }
  return impl_->reason;
}

std::unique_ptr<Session> Session::fork() const { return fork(impl_->params); }

std::unique_ptr<Session> Session::fork(const SessionParams& params) const {
  if (params.capacity < impl_->seq->size())
    throw Error(ErrorCode::InvalidArgument, fmt::format("fork: capacity {} is less than the {} cached tokens",
                                                        params.capacity, impl_->seq->size()));
  auto s = std::make_unique<Session>(impl_->model, impl_->tok, params);
  s->impl_->seq = impl_->model.copy_sequence(*impl_->seq, params.capacity);
  // A fork that speculates as its parent does starts from the parent's measurements (same model, same machine): a
  // parent that stood down has no MTP state, and its fork should not rebuild one only to stand down again.
  const SpeculativeParams &mine = impl_->params.speculative, &theirs = params.speculative;
  if (mine.draft_tokens == theirs.draft_tokens && mine.adaptive && theirs.adaptive &&
      bool(mine.drafter) == bool(theirs.drafter))
    s->impl_->policy = impl_->policy;
  // The copy keeps the MTP state of a speculating parent; a session that does not speculate drops it (it costs a
  // little in every forward), and one that does without a parent state rebuilds it from the tokens.
  impl_->model.enable_mtp(*s->impl_->seq, s->impl_->uses_mtp(), impl_->tokens, params.eval);
  s->impl_->tokens = impl_->tokens;
  s->impl_->logits = impl_->logits;
  s->impl_->pending = impl_->pending;
  s->impl_->sampler.reset(static_cast<SamplerChain*>(impl_->sampler->clone().release()));
  return s;
}

void Engine::generate(std::span<Session* const> sessions, const GenerateParams& params,
                       const std::function<void(size_t, const ChatEvent&)>& on_event) {
  if (!active_.empty()) throw Error(ErrorCode::InvalidArgument, "Engine::generate: the engine holds sessions added with add()");
  for (size_t i = 0; i < sessions.size(); ++i)
    if (!sessions[i]) throw Error(ErrorCode::InvalidArgument, "Engine::generate: a session is null");
  std::unordered_map<const Session*, size_t> index;
  try {
    for (size_t i = 0; i < sessions.size(); ++i) {
      if (sessions[i]->impl_->logits.empty() && !sessions[i]->impl_->pending && sessions[i]->impl_->queued.empty())
        throw Error(ErrorCode::InvalidArgument, fmt::format("Engine::generate: session {} holds no prompt", i));
      add(*sessions[i], params);
      index[sessions[i]] = i;
    }
    while (!active_.empty()) {
      StepResult r = step([&](Session& s, const ChatEvent& e) {
        if (on_event) on_event(index.at(&s), e);
      });
      if (!r.failed.empty()) throw r.failed.front().error;
    }
  } catch (...) {
    while (!active_.empty()) remove(*active_.back().session);
    throw;
  }
}

void Engine::add(Session& session, const GenerateParams& params) {
  Session::Impl& s = *session.impl_;
  if (&s.model != &model_) throw Error(ErrorCode::InvalidArgument, "Engine: the session uses another model");
  for (const Active& a : active_) {
    if (a.session == &session) throw Error(ErrorCode::InvalidArgument, "Engine::add: the session is already in the engine");
    const EvalOptions &x = a.session->impl_->params.eval, &y = s.params.eval;
    if (x.precision != y.precision || x.index_topk != y.index_topk || x.attention != y.attention)
      throw Error(ErrorCode::InvalidArgument, "Engine::add: the sessions of one engine share one precision");
  }
  // Tokens queued by queue_messages / queue_tokens (or left pending) are evaluated in the session's first step, in
  // the same forward as the other sessions' decode tokens: prefill chunks and decode tokens in one ragged batch.
  Active a{&session, s.take_unevaluated()};
  if (a.prompt.empty() && s.logits.empty())
    throw Error(ErrorCode::InvalidArgument, "Engine::add: nothing to continue from (queue a prompt first)");
  s.start(params, /*evaluate_queued=*/false);
  s.take_measurements(speculation_->record, int64_t(active_.size()) + 1);
  active_.push_back(std::move(a));
}

void Engine::remove(Session& session) {
  for (size_t i = 0; i < active_.size(); ++i) {
    if (active_[i].session != &session) continue;
    Session::Impl& s = *session.impl_;
    Active& a = active_[i];
    if (a.prompt_done < a.prompt.size())  // the part never evaluated is queued again
      s.queued.assign(a.prompt.begin() + int64_t(a.prompt_done), a.prompt.end());
    if (s.running) s.end(FinishReason::None);
    s.queue.clear();
    s.leave_measurements(speculation_->record, int64_t(active_.size()));
    active_.erase(active_.begin() + int64_t(i));
    return;
  }
}

struct Engine::SamplingWorkers {
  explicit SamplingWorkers(int n) : pool(n) {}
  ThreadPool pool;
};

Engine::Engine(const Model& model, int64_t max_step_prompt_tokens)
    : model_(model), max_step_prompt_tokens_(max_step_prompt_tokens),
      speculation_(std::make_unique<EngineSpeculation>()) {}
Engine::~Engine() = default;

Engine::StepResult Engine::step(const std::function<void(Session&, const ChatEvent&)>& on_event) {
  StepResult r;
  std::vector<Model::BatchEntry> batch;
  std::vector<size_t> who;  // index into active_ of each batch entry
  std::vector<bool> leaves(active_.size(), false);
  auto drain = [&](Session& session) {
    auto& q = session.impl_->queue;
    while (!q.empty()) {
      if (on_event) on_event(session, q.front());
      q.pop_front();
    }
  };
  // The budget only matters while some session decodes (it is what a long prefill would stall); with none, whole
  // prompts go in one forward (fewer passes over the weights).
  const bool decoding = std::any_of(active_.begin(), active_.end(), [](const Active& a) { return a.prompt.empty(); });
  // Adaptive speculation times the steps that only decode (a prompt chunk would be most of a step's time): what a
  // session's rows cost the step (StepCostFit).
  const bool timed = std::all_of(active_.begin(), active_.end(), [](const Active& a) { return a.prompt.empty(); });
  int64_t prompt_budget = max_step_prompt_tokens_ > 0 && decoding ? std::max<int64_t>(2, max_step_prompt_tokens_) : INT64_MAX;
  bool first_prompt = true;
  // The decoding sessions' next tokens: sampled first, in parallel on the engine's workers for the sessions whose
  // samplers allow it (the sampler chain over a whole vocabulary, a constraint's mask: ~1 ms a session at V3.2's
  // 129,280 ids). A session's sampling touches only that session; its events wait in its queue and are drained
  // below, in session order, as when sampled one after another.
  struct Sampled {
    bool done = false;
    std::optional<int32_t> token;
    std::exception_ptr error;
  };
  std::vector<Sampled> sampled(active_.size());
  std::vector<size_t> in_parallel;
  for (size_t i = 0; i < active_.size(); ++i)
    if (active_[i].prompt.empty() && active_[i].session->impl_->samples_concurrently()) in_parallel.push_back(i);
  const int threads = std::min<int>(model_.host_threads(), int(in_parallel.size()));
  if (threads >= 2) {
    if (!workers_ || workers_->pool.size() < threads) workers_ = std::make_unique<SamplingWorkers>(threads);
    workers_->pool.parallel_for(int64_t(in_parallel.size()), [&](int64_t begin, int64_t end) {
      for (int64_t j = begin; j < end; ++j) {
        Sampled& out = sampled[in_parallel[size_t(j)]];
        try {
          out.token = active_[in_parallel[size_t(j)]].session->impl_->take_next();
        } catch (...) {
          out.error = std::current_exception();
        }
        out.done = true;
      }
    });
  }
  for (size_t i = 0; i < active_.size(); ++i) {
    Active& a = active_[i];
    Session::Impl& s = *a.session->impl_;
    Model::BatchEntry e;
    e.sequence = s.seq.get();
    if (!a.prompt.empty()) {
      // The session's first step(s): its prompt, or the next chunk of it within the step's budget. A chunk is at
      // least 2 tokens and never leaves 1 behind (one token would take the absorbed attention form).
      const int64_t left = int64_t(a.prompt.size() - a.prompt_done);
      int64_t n = std::min(left, prompt_budget);
      if (n < left) {
        n = std::min(n, left - 2);
        if (n < 2) {
          if (!first_prompt) continue;  // this step's budget is spent: the chunk waits for the next step
          n = left <= 3 ? left : 2;
        }
      }
      first_prompt = false;
      prompt_budget -= n;
      e.logits = std::move(s.logits);  // reused storage; given back below
      e.ids = std::span<const int32_t>(a.prompt).subspan(a.prompt_done, size_t(n));
    } else {
      std::optional<int32_t> t;
      try {
        if (!sampled[i].done) t = s.take_next();
        else if (sampled[i].error) std::rethrow_exception(sampled[i].error);
        else t = sampled[i].token;
      } catch (const Error& err) {
        drain(*a.session);
        r.failed.push_back({a.session, err});
        leaves[i] = true;
        continue;
      }
      drain(*a.session);
      if (!t) {
        r.finished.push_back(a.session);
        leaves[i] = true;
        continue;
      }
      a.next = *t;
      s.take_measurements(speculation_->record, int64_t(active_.size()));  // (the batch may have grown since add)
      // A speculating session sends its drafts with the token (each session of the batch drafts for itself); the
      // rows are verified in this step's shared forward.
      const bool was_down = s.policy.stood_down();
      const int64_t k = s.speculating() ? s.draft_count(timed) : 0;
      // A stand-down this session measured (not one handed to it) is kept for the sessions that join later.
      if (!was_down && s.policy.stood_down() && s.records_speculation())
        speculation_->record.record_stand_down(s.policy, s.params.speculative.draft_tokens, int64_t(active_.size()));
      if (k > 0) {
        try {
          const auto t0 = std::chrono::steady_clock::now();
          s.draft(a.next, k);
          a.draft_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        } catch (const Error& err) {
          drain(*a.session);
          r.failed.push_back({a.session, err});
          leaves[i] = true;
          continue;
        }
        a.verify_from = int64_t(s.tokens.size());
        e.ids = s.draft_ids;
        e.all_logits = true;
        e.exact_rows = true;
        e.logits = std::move(s.verify_logits);
      } else {
        if (s.speculating()) s.spec_stats.plain_steps += 1;
        // As a session alone: a step without drafts leaves its MTP row for the next draft to run, batched.
        e.defer_mtp = s.speculating() && s.params.speculative.adaptive;
        e.ids = std::span<const int32_t>(&a.next, 1);
        e.logits = std::move(s.logits);  // reused storage; given back below
      }
    }
    batch.push_back(std::move(e));
    who.push_back(i);
  }
  double forward_seconds = 0;  // when the step is timed and evaluated in one forward
  int64_t step_rows = 0;
  for (const Model::BatchEntry& e : batch) step_rows += int64_t(e.ids.size());
  auto commit = [&](size_t k) {
    Active& a = active_[who[k]];
    Session::Impl& s = *a.session->impl_;
    if (forward_seconds > 0 && s.speculating() && s.params.speculative.adaptive) {
      const int64_t drafted = int64_t(batch[k].ids.size()) - 1;
      if (a.verify_from < 0) {
        s.policy.plain_step(speculation_->cost.plain_seconds(step_rows, forward_seconds));
      } else if (drafted > 0) {
        const double cost = speculation_->cost.verify_seconds(step_rows, forward_seconds, drafted, a.draft_seconds);
        if (cost > 0) s.policy.verify_step(drafted, cost);
      }
    }
    if (a.verify_from >= 0) {  // the session samples its verified rows (events, accept, stop checks) and rolls back
      const int64_t from = a.verify_from;
      a.verify_from = -1;
      s.verify_logits = std::move(batch[k].logits);
      r.batch_sessions += 1;
      r.batch_tokens += int64_t(batch[k].ids.size());
      try {
        s.accept_verified(from);
      } catch (const Error& err) {
        drain(*a.session);
        r.failed.push_back({a.session, err});
        leaves[who[k]] = true;
        return;
      }
      drain(*a.session);
      if (!s.running) {
        r.finished.push_back(a.session);
        leaves[who[k]] = true;
      }
      return;
    }
    s.tokens.insert(s.tokens.end(), batch[k].ids.begin(), batch[k].ids.end());
    s.logits = std::move(batch[k].logits);
    s.last_prefill = int64_t(batch[k].ids.size());
    r.batch_sessions += 1;
    r.batch_tokens += int64_t(batch[k].ids.size());
  };
  // The evaluation failed for this entry: the cache is as before it and the generation ends with the error.
  auto fail = [&](size_t k, const Error& err) {
    Active& a = active_[who[k]];
    Session::Impl& s = *a.session->impl_;
    if (a.verify_from >= 0) {
      s.verify_logits = std::move(batch[k].logits);
      a.verify_from = -1;
    } else {
      s.logits = std::move(batch[k].logits);
    }
    if (!a.prompt.empty()) {
      s.queued.assign(a.prompt.begin() + int64_t(a.prompt_done), a.prompt.end());  // what was not evaluated
      s.logits.clear();
      s.end(FinishReason::None);
    } else {
      s.abort_step();
    }
    drain(*a.session);
    r.failed.push_back({a.session, err});
    leaves[who[k]] = true;
  };
  if (!batch.empty()) {
    const EvalOptions& opts = active_[who[0]].session->impl_->params.eval;
    bool together = true;
    try {
      const auto t0 = std::chrono::steady_clock::now();
      model_.eval_batch(batch, opts);
      if (timed) {
        forward_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        speculation_->cost.add(step_rows, forward_seconds);
      }
    } catch (const std::exception&) {
      together = false;  // nothing changed; find out which entries fail by evaluating each alone
    }
    for (size_t k = 0; k < batch.size(); ++k) {
      if (!together) {
        try {
          model_.eval_batch(std::span<Model::BatchEntry>(&batch[k], 1), opts);
        } catch (const Error& err) {
          fail(k, err);
          continue;
        } catch (const std::bad_alloc&) {
          fail(k, Error(ErrorCode::OutOfMemory, "out of memory evaluating the step"));
          continue;
        } catch (const std::exception& ex) {
          fail(k, Error(ErrorCode::Internal, ex.what()));
          continue;
        }
      }
      commit(k);
      Active& a = active_[who[k]];
      if (!a.prompt.empty()) {
        a.prompt_done += batch[k].ids.size();
        if (a.prompt_done == a.prompt.size()) {
          a.prompt.clear();
          a.prompt_done = 0;
        }
      }
    }
  }
  size_t kept = 0;
  for (size_t i = 0; i < active_.size(); ++i)
    if (leaves[i]) active_[i].session->impl_->leave_measurements(speculation_->record, int64_t(active_.size()));
  for (size_t i = 0; i < active_.size(); ++i)
    if (!leaves[i]) {
      if (kept != i) active_[kept] = std::move(active_[i]);  // (a self-move would empty a queued prompt)
      ++kept;
    }
  active_.resize(kept);
  return r;
}

void Session::save(const std::string& path) const {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) throw Error(ErrorCode::Io, fmt::format("cannot open {} for writing", path));
  out.write(kSessionMagic, 8);
  impl_->model.save_sequence(*impl_->seq, out);
  write_vec(out, impl_->tokens.data(), impl_->tokens.size() * 4);
  write_vec(out, impl_->logits.data(), impl_->logits.size() * 4);
  const int32_t pend = impl_->pending ? *impl_->pending : -1;
  write_vec(out, &pend, 4);
  if (!out) throw Error(ErrorCode::Io, fmt::format("writing {} failed", path));
}

void Session::restore(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(ErrorCode::Io, fmt::format("cannot open {}", path));
  char magic[8] = {};
  in.read(magic, 8);
  if (!in || std::string_view(magic, 8) != std::string_view(kSessionMagic, 8))
    throw Error(ErrorCode::Format, fmt::format("{} is not a dsinfer session file (version 01)", path));
  auto seq = impl_->model.load_sequence(in, impl_->params.capacity);
  // Sizes against the cache just read and the model: the token list is the cache's, the logits are the last
  // token's over the whole vocabulary (or none), one pending id; ids are the model's.
  const int64_t vocab = impl_->model.info().vocab_size;
  auto tokens = read_vec<int32_t>(in, uint64_t(seq->size()), "the token list");
  auto logits = read_vec<float>(in, uint64_t(vocab), "the logits");
  const auto pend = read_vec<int32_t>(in, 1, "the pending token");
  if (int64_t(tokens.size()) != seq->size() || pend.size() != 1)
    throw Error(ErrorCode::Format, fmt::format("{}: the token list does not match the saved cache", path));
  if (!logits.empty() && int64_t(logits.size()) != vocab)
    throw Error(ErrorCode::Format, fmt::format("{}: {} logits saved, the model's vocabulary has {}", path, logits.size(), vocab));
  for (const int32_t t : tokens)
    if (t < 0 || t >= vocab) throw Error(ErrorCode::Format, fmt::format("{}: saved token id {} is not in the vocabulary", path, t));
  if (pend[0] < -1 || pend[0] >= vocab)
    throw Error(ErrorCode::Format, fmt::format("{}: the saved pending token id {} is not in the vocabulary", path, pend[0]));
  // A file with the MTP state (version 3) keeps it for a speculating session; otherwise a speculating session
  // rebuilds it from the tokens (weaker drafts at first), and one that does not speculate drops it.
  if (impl_->uses_mtp()) impl_->model.enable_mtp(*seq, true, tokens, impl_->params.eval);
  else if (impl_->model.mtp_enabled(*seq)) impl_->model.enable_mtp(*seq, false, {}, impl_->params.eval);
  impl_->seq = std::move(seq);
  impl_->tokens = std::move(tokens);
  impl_->logits = std::move(logits);
  impl_->pending = pend[0] >= 0 ? std::optional<int32_t>(pend[0]) : std::nullopt;
}

}  // namespace dsinfer
