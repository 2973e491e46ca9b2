// One OpenAI request's generation: its choices' sessions, their sampler chains (with the logprob recorder), and
// the reply / streamed chunks in OpenAI's shape.
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>
#include <random>

#include "dsinfer/openai.hpp"

namespace dsinfer::openai {

namespace {

using ojson = nlohmann::ordered_json;

std::string dump(const ojson& j) { return j.dump(-1, ' ', false, ojson::error_handler_t::replace); }

// Random ids for completions and tool calls (OpenAI's look: a prefix and letters/digits).
std::string random_id(const char* prefix, size_t n) {
  static const char alphabet[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
  thread_local std::mt19937_64 rng(std::random_device{}() ^ uint64_t(std::chrono::steady_clock::now().time_since_epoch().count()));
  std::string id = prefix;
  for (size_t i = 0; i < n; ++i) id += alphabet[rng() % (sizeof(alphabet) - 1)];
  return id;
}

// What the model's distribution said about one generated token.
struct LogprobEntry {
  int32_t id = 0;
  float logprob = 0;
  std::vector<std::pair<int32_t, float>> top;  // the most likely tokens, best first
};

// The first sampler of a chain when logprobs are asked for: it sees the model's logits before any other sampler
// (vLLM's default, the raw distribution), and records the chosen token's log-probability when it is accepted.
class LogprobRecorder final : public Sampler {
 public:
  explicit LogprobRecorder(int top_n) : top_n_(top_n) {}
  std::string name() const override { return "logprobs"; }
  void apply(Candidates& c) override {
    double mx = -std::numeric_limits<double>::infinity();
    for (float l : c.logits) mx = std::max(mx, double(l));
    double sum = 0;
    for (float l : c.logits) sum += std::exp(double(l) - mx);
    lse_ = mx + std::log(sum);
    int32_t max_id = 0;
    for (int32_t id : c.ids) max_id = std::max(max_id, id);
    by_id_.assign(size_t(max_id) + 1, -std::numeric_limits<float>::infinity());
    for (size_t i = 0; i < c.size(); ++i) by_id_[size_t(c.ids[i])] = c.logits[i];
    top_.clear();
    if (top_n_ > 0) {
      std::vector<size_t> order(c.size());
      for (size_t i = 0; i < order.size(); ++i) order[i] = i;
      const size_t k = std::min(order.size(), size_t(top_n_));
      std::partial_sort(order.begin(), order.begin() + ptrdiff_t(k), order.end(), [&](size_t a, size_t b) {
        return c.logits[a] > c.logits[b] || (c.logits[a] == c.logits[b] && c.ids[a] < c.ids[b]);
      });
      for (size_t i = 0; i < k; ++i) top_.emplace_back(c.ids[order[i]], float(double(c.logits[order[i]]) - lse_));
    }
  }
  void accept(int32_t token) override {
    LogprobEntry e;
    e.id = token;
    e.logprob = size_t(token) < by_id_.size() ? float(double(by_id_[size_t(token)]) - lse_) : -INFINITY;
    e.top = top_;
    entries.push_back(std::move(e));
  }
  void reset() override { entries.clear(); }
  std::unique_ptr<Sampler> clone() const override { return std::make_unique<LogprobRecorder>(*this); }
  bool thread_compatible() const override { return true; }

  std::vector<LogprobEntry> entries;

 private:
  int top_n_;
  double lse_ = 0;
  std::vector<float> by_id_;
  std::vector<std::pair<int32_t, float>> top_;
};

const char* finish_text(FinishReason r, bool tool_calls) {
  switch (r) {
    case FinishReason::MaxTokens: return "length";
    case FinishReason::Eos:
    case FinishReason::StopString: return tool_calls ? "tool_calls" : "stop";
    case FinishReason::None: break;
  }
  return "stop";
}

}  // namespace

namespace {

// The chain of make_sampler_chain; `recorder` receives the logprob recorder (owned by the chain) when there is one.
std::unique_ptr<SamplerChain> build_chain(const Request& r, int choice, LogprobRecorder** recorder) {
  auto chain = std::make_unique<SamplerChain>();
  if (r.logprobs) {
    auto rec = std::make_unique<LogprobRecorder>(r.top_logprobs);
    if (recorder) *recorder = rec.get();
    chain->add(std::move(rec));
  }
  if (!r.logit_bias.empty()) chain->add(make_logit_bias_sampler(r.logit_bias));
  if (r.frequency_penalty != 0 || r.presence_penalty != 0 || r.repetition_penalty != 1)
    chain->add(make_penalties_sampler(-1, r.repetition_penalty, r.frequency_penalty, r.presence_penalty));
  if (r.greedy()) {
    chain->add(make_greedy_sampler());
    return chain;
  }
  chain->add(make_temperature_sampler(r.temperature));
  if (r.top_k > 0) chain->add(make_top_k_sampler(r.top_k));
  if (r.top_p < 1.0f) chain->add(make_top_p_sampler(r.top_p));
  if (r.min_p > 0.0f) chain->add(make_min_p_sampler(r.min_p));
  // Without a seed every request samples differently (a fresh seed per request); choice i uses seed + i.
  const uint64_t seed = r.seed ? *r.seed : (uint64_t(std::random_device{}()) << 32) ^ std::random_device{}();
  chain->add(make_dist_sampler(seed + uint64_t(choice)));
  return chain;
}

}  // namespace

std::unique_ptr<SamplerChain> make_sampler_chain(const Request& r, int choice) { return build_chain(r, choice, nullptr); }

struct Completion::Impl {
  struct Call {
    std::string id, name, arguments;
    bool complete = false;  // ToolCallEnd came: a malformed block's call never completes (its text is content)
  };
  struct Choice {
    std::unique_ptr<Session> session;
    LogprobRecorder* recorder = nullptr;  // owned by the session's chain
    size_t logprobs_sent = 0;
    std::string content, reasoning;
    std::vector<Call> calls;
    bool ended = false, started = false;
    bool in_raw_call = false;  // tool_choice none: inside a tool-call block the model wrote anyway
    size_t text_offset = 0;    // completions: bytes of text sent (the logprobs' text_offset)
    std::string finish_reason;
  };

  Request req;
  const Model& model;
  const Tokenizer& tok;
  Defaults defaults;
  std::string id;
  int64_t created;
  std::vector<Choice> choices;
  int64_t cached = 0;
  bool forked = false;
  std::optional<Error> error;

  Impl(Request r, const Model& m, const Tokenizer& t, const Defaults& d)
      : req(std::move(r)), model(m), tok(t), defaults(d),
        id(random_id(req.endpoint == Endpoint::ChatCompletions ? "chatcmpl-" : "cmpl-", 24)),
        created(std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count()) {
    choices.resize(size_t(req.n));
    // The request was rendered in DeepSeek-V3.2's format; a V3-family model must not be prompted with it.
    if (chat()) {
      try {
        check_chat_format(detect_chat_format(model.info().model_type, model.info().chat_template));
      } catch (const Error& e) {
        throw ApiError(400, "invalid_request_error", "messages", e.what());
      }
    }
  }

  bool chat() const { return req.endpoint == Endpoint::ChatCompletions; }
  // With tool_choice "none" the model still sees the tools (as vLLM renders them); a call it makes anyway is
  // returned as content, in the DSML the official encoder writes for it.
  bool calls_as_content() const { return req.tool_choice == ToolChoice::None; }

  Choice& choice_of(const Session& s, size_t* index = nullptr) {
    for (size_t i = 0; i < choices.size(); ++i)
      if (choices[i].session.get() == &s) {
        if (index) *index = i;
        return choices[i];
      }
    throw Error(ErrorCode::InvalidArgument, "openai::Completion: a session that is not one of its choices");
  }

  std::string token_text(int32_t id) const {
    if (req.tokens_as_ids) return fmt::format("token_id:{}", id);
    return utf8_lossy(tok.token_bytes(id));
  }

  ojson bytes_of(int32_t id) const {
    const std::string b = tok.token_bytes(id);
    ojson a = ojson::array();
    for (unsigned char ch : b) a.push_back(int(ch));
    return a;
  }

  // Chat logprobs: {"content": [{"token", "logprob", "bytes", "top_logprobs": [...]}, ...]}.
  ojson chat_logprobs(const LogprobEntry* begin, const LogprobEntry* end) const {
    ojson content = ojson::array();
    for (const LogprobEntry* e = begin; e != end; ++e) {
      ojson item;
      item["token"] = token_text(e->id);
      item["logprob"] = e->logprob;
      item["bytes"] = bytes_of(e->id);
      ojson top = ojson::array();
      for (const auto& [tid, lp] : e->top) {
        ojson t;
        t["token"] = token_text(tid);
        t["logprob"] = lp;
        t["bytes"] = bytes_of(tid);
        top.push_back(t);
      }
      item["top_logprobs"] = top;
      content.push_back(item);
    }
    ojson out;
    out["content"] = content;
    return out;
  }

  // Completions logprobs (the legacy shape): tokens, token_logprobs, top_logprobs, text_offset.
  ojson completion_logprobs(const LogprobEntry* begin, const LogprobEntry* end, size_t offset) const {
    ojson tokens = ojson::array(), lps = ojson::array(), tops = ojson::array(), offsets = ojson::array();
    for (const LogprobEntry* e = begin; e != end; ++e) {
      const std::string t = token_text(e->id);
      tokens.push_back(t);
      lps.push_back(e->logprob);
      ojson top = ojson::object();
      for (const auto& [tid, lp] : e->top) top[token_text(tid)] = lp;
      tops.push_back(top);
      offsets.push_back(offset);
      offset += t.size();
    }
    ojson out;
    out["tokens"] = tokens;
    out["token_logprobs"] = lps;
    out["top_logprobs"] = tops;
    out["text_offset"] = offsets;
    return out;
  }

  // The logprobs of the tokens not yet sent with a chunk (null when logprobs were not asked for).
  ojson take_logprobs(Choice& c, size_t text_offset) {
    if (!c.recorder) return nullptr;
    const auto& es = c.recorder->entries;
    const LogprobEntry* b = es.data() + c.logprobs_sent;
    const LogprobEntry* e = es.data() + es.size();
    c.logprobs_sent = es.size();
    return chat() ? chat_logprobs(b, e) : completion_logprobs(b, e, text_offset);
  }

  ojson usage() const {
    ojson u;
    const int64_t p = int64_t(req.prompt.size()), c = completion_tokens();
    u["prompt_tokens"] = p;
    u["completion_tokens"] = c;
    u["total_tokens"] = p + c;
    ojson details;
    details["cached_tokens"] = cached;
    u["prompt_tokens_details"] = details;
    return u;
  }

  int64_t completion_tokens() const {
    int64_t n = 0;
    for (const Choice& c : choices)
      if (c.session) n += int64_t(c.session->generated().size());
    return n;
  }

  ojson chunk_head() const {
    ojson j;
    j["id"] = id;
    j["object"] = chat() ? "chat.completion.chunk" : "text_completion";
    j["created"] = created;
    j["model"] = defaults.model_id;
    return j;
  }

  // One streamed chunk for choice `index`: a chat delta or a completion's text.
  std::string chunk(size_t index, const ojson& delta_or_text, ojson logprobs, const char* finish) const {
    ojson j = chunk_head();
    ojson c;
    c["index"] = index;
    if (chat()) c["delta"] = delta_or_text;
    else c["text"] = delta_or_text;
    c["logprobs"] = std::move(logprobs);
    c["finish_reason"] = finish ? ojson(finish) : ojson(nullptr);
    j["choices"] = ojson::array({c});
    if (req.include_usage) j["usage"] = nullptr;
    return dump(j);
  }

  // A choice's sampler chain, and its role chunk (chat) or echoed prompt (completions) when streaming.
  void start_choice(Choice& c, size_t index, std::vector<std::string>& chunks) {
    c.started = true;
    if (!chat() && req.echo) c.text_offset = req.prompt_text.size();
    c.session->set_sampler(build_chain(req, int(index), &c.recorder));
    if (!req.stream) return;
    if (chat()) {
      ojson delta;
      delta["role"] = "assistant";
      delta["content"] = "";
      chunks.push_back(chunk(index, delta, nullptr, nullptr));
    } else if (req.echo) {
      chunks.push_back(chunk(index, req.prompt_text, nullptr, nullptr));
    }
  }

  // tool_choice "none": the model was not shown the tools; a tool call it writes anyway is not a tool call but
  // text, returned as content (never lost): the raw completion after the reasoning.
  std::string raw_content(const Choice& c) const {
    const std::string& t = c.session->generated_text();
    if (req.thinking != ThinkingMode::Thinking) return t;
    const size_t end = t.find("</think>");
    return end == std::string::npos ? std::string() : t.substr(end + 8);
  }

  void event(Choice& c, size_t index, const ChatEvent& e, std::vector<std::string>& chunks) {
    ojson delta = ojson::object();
    switch (e.kind) {
      case ChatEvent::Kind::ReasoningDelta:
        c.reasoning += e.text;
        delta["reasoning_content"] = e.text;
        break;
      case ChatEvent::Kind::ContentDelta:
        if (c.in_raw_call) return;  // tool_choice none: sent as raw text at the end
        c.content += e.text;
        if (!chat()) {
          if (req.stream) chunks.push_back(chunk(index, e.text, take_logprobs(c, c.text_offset), nullptr));
          c.text_offset += e.text.size();
          return;
        }
        delta["content"] = e.text;
        break;
      case ChatEvent::Kind::ToolCallBegin: {
        if (calls_as_content()) {
          c.in_raw_call = true;
          return;
        }
        Call call;
        call.id = random_id("call_", 24);
        call.name = e.name;
        c.calls.push_back(call);
        ojson fn;
        fn["name"] = e.name;
        fn["arguments"] = "";
        ojson tc;
        tc["index"] = c.calls.size() - 1;
        tc["id"] = call.id;
        tc["type"] = "function";
        tc["function"] = fn;
        delta["tool_calls"] = ojson::array({tc});
        break;
      }
      case ChatEvent::Kind::ToolArgsDelta: {
        if (calls_as_content() || c.calls.empty()) return;
        c.calls.back().arguments += e.text;
        ojson fn;
        fn["arguments"] = e.text;
        ojson tc;
        tc["index"] = c.calls.size() - 1;
        tc["function"] = fn;
        delta["tool_calls"] = ojson::array({tc});
        break;
      }
      case ChatEvent::Kind::ToolCallEnd:
        // The complete arguments: the deltas already carried them; keep the parser's final text.
        if (!calls_as_content() && !c.calls.empty()) {
          c.calls.back().arguments = e.arguments;
          c.calls.back().complete = true;
        }
        return;
      case ChatEvent::Kind::Error:
        return;  // the parser goes on and delivers the malformed block as content
    }
    if (req.stream) chunks.push_back(chunk(index, delta, take_logprobs(c, 0), nullptr));
  }

  void finished(Choice& c, size_t index, std::vector<std::string>& chunks) {
    if (c.ended) return;
    c.ended = true;
    const FinishReason why = c.session->finish_reason();
    if (calls_as_content()) {
      // Whatever a tool-call block held comes back as content.
      const std::string raw = raw_content(c);
      if (raw.size() > c.content.size() && raw.compare(0, c.content.size(), c.content) == 0) {
        const std::string rest = raw.substr(c.content.size());
        c.content += rest;
        if (req.stream) {
          ojson delta;
          delta["content"] = rest;
          chunks.push_back(chunk(index, delta, take_logprobs(c, 0), nullptr));
        }
      }
    }
    c.finish_reason = finish_text(why, complete_calls(c) > 0);
    if (!req.stream) return;
    if (chat()) chunks.push_back(chunk(index, ojson::object(), take_logprobs(c, 0), c.finish_reason.c_str()));
    else chunks.push_back(chunk(index, "", take_logprobs(c, c.text_offset), c.finish_reason.c_str()));
  }

  static size_t complete_calls(const Choice& c) {
    return size_t(std::count_if(c.calls.begin(), c.calls.end(), [](const Call& k) { return k.complete; }));
  }

  ojson message_of(Choice& c) {
    ojson m;
    m["role"] = "assistant";
    const bool calls = complete_calls(c) > 0;
    m["content"] = c.content.empty() && calls ? ojson(nullptr) : ojson(c.content);
    if (req.thinking == ThinkingMode::Thinking) m["reasoning_content"] = c.reasoning;
    if (calls) {
      ojson list = ojson::array();
      for (const Call& k : c.calls) {
        if (!k.complete) continue;
        ojson fn;
        fn["name"] = k.name;
        fn["arguments"] = k.arguments;
        ojson tc;
        tc["id"] = k.id;
        tc["type"] = "function";
        tc["function"] = fn;
        list.push_back(tc);
      }
      m["tool_calls"] = list;
    } else {
      m["tool_calls"] = ojson::array();
    }
    return m;
  }
};

Completion::Completion(Request request, const Model& model, const Tokenizer& tok, const Defaults& defaults)
    : impl_(std::make_unique<Impl>(std::move(request), model, tok, defaults)) {}
Completion::~Completion() = default;

const Request& Completion::request() const { return impl_->req; }
const std::string& Completion::id() const { return impl_->id; }

SessionParams Completion::session_params() const {
  SessionParams p;
  p.capacity = impl_->defaults.context;
  p.thinking = impl_->req.thinking;
  p.raw_text = !impl_->chat();
  p.speculative.draft_tokens = impl_->defaults.speculative_draft_tokens;
  return p;
}

GenerateParams Completion::generate_params() const {
  GenerateParams g;
  g.max_tokens = impl_->req.max_tokens;
  g.stop = impl_->req.stop;
  g.stop_at_eos = !impl_->req.ignore_eos;
  // Each choice's session runs its own ConstraintSampler of it, before the request's chain, in the session's
  // thinking mode (the constraint starts after </think>).
  g.constraint = impl_->req.constraint;
  return g;
}

Session& Completion::start(const Session* prefix, std::vector<std::string>& chunks) {
  Impl& m = *impl_;
  Impl::Choice& c = m.choices[0];
  SessionParams p = session_params();
  if (prefix) {
    if (p.capacity < int64_t(prefix->tokens().size())) p.capacity = int64_t(prefix->tokens().size());
    c.session = prefix->fork(p);
  } else {
    c.session = std::make_unique<Session>(m.model, m.tok, p);
  }
  // At least 2 prompt tokens are evaluated, so a cache hit computes the rest of the prompt as a miss would (the
  // same attention form): outputs do not depend on what the prefix cache held.
  m.cached = c.session->queue_tokens(m.req.prompt, prefix ? 2 : 0);
  m.start_choice(c, 0, chunks);
  return *c.session;
}

int64_t Completion::cached_tokens() const { return impl_->cached; }

bool Completion::prompt_ready() const {
  const auto& s = impl_->choices[0].session;
  return s && s->tokens().size() >= impl_->req.prompt.size() && !s->last_logits().empty();
}

bool Completion::needs_forks() const { return impl_->req.n > 1 && !impl_->forked; }

std::vector<Session*> Completion::fork_choices() {
  Impl& m = *impl_;
  std::vector<Session*> out;
  if (m.forked) return out;
  m.forked = true;
  // Forked after the prompt's evaluation and before choice 0 samples: each fork shares the prompt's blocks and
  // starts from the same logits; only its sampler (seed + index) differs.
  for (size_t i = 1; i < m.choices.size(); ++i) {
    m.choices[i].session = m.choices[0].session->fork(session_params());
    out.push_back(m.choices[i].session.get());
  }
  return out;
}

std::vector<std::string> Completion::fork_chunks() {
  Impl& m = *impl_;
  std::vector<std::string> chunks;
  for (size_t i = 1; i < m.choices.size(); ++i)
    if (m.choices[i].session && !m.choices[i].started) m.start_choice(m.choices[i], i, chunks);
  return chunks;
}

std::vector<Session*> Completion::sessions() {
  std::vector<Session*> out;
  for (auto& c : impl_->choices)
    if (c.session) out.push_back(c.session.get());
  return out;
}

void Completion::on_event(const Session& session, const ChatEvent& event, std::vector<std::string>& chunks) {
  size_t i = 0;
  Impl::Choice& c = impl_->choice_of(session, &i);
  impl_->event(c, i, event, chunks);
}

void Completion::on_finished(const Session& session, std::vector<std::string>& chunks) {
  size_t i = 0;
  Impl::Choice& c = impl_->choice_of(session, &i);
  impl_->finished(c, i, chunks);
}

void Completion::on_failed(const Session& session, const Error& error) {
  size_t i = 0;
  Impl::Choice& c = impl_->choice_of(session, &i);
  c.ended = true;
  if (!impl_->error) impl_->error = error;
}

bool Completion::done() const {
  if (impl_->error) return true;
  for (const auto& c : impl_->choices)
    if (!c.ended) return false;
  return true;
}

bool Completion::failed() const { return impl_->error.has_value(); }

void Completion::finish_stream(std::vector<std::string>& chunks) {
  Impl& m = *impl_;
  if (!m.req.stream || !m.req.include_usage) return;
  ojson j = m.chunk_head();
  j["choices"] = ojson::array();
  j["usage"] = m.usage();
  chunks.push_back(dump(j));
}

std::string Completion::reply() const {
  Impl& m = *impl_;
  ojson j;
  j["id"] = m.id;
  j["object"] = m.chat() ? "chat.completion" : "text_completion";
  j["created"] = m.created;
  j["model"] = m.defaults.model_id;
  ojson choices = ojson::array();
  for (size_t i = 0; i < m.choices.size(); ++i) {
    Impl::Choice& c = m.choices[i];
    ojson o;
    o["index"] = i;
    if (m.chat()) {
      o["message"] = m.message_of(c);
      o["logprobs"] = m.take_logprobs(c, 0);
    } else {
      o["text"] = (m.req.echo ? m.req.prompt_text : std::string()) + c.content;
      o["logprobs"] = m.take_logprobs(c, m.req.echo ? m.req.prompt_text.size() : 0);
    }
    o["finish_reason"] = c.finish_reason.empty() ? ojson(nullptr) : ojson(c.finish_reason);
    choices.push_back(o);
  }
  j["choices"] = choices;
  j["usage"] = m.usage();
  return dump(j);
}

std::string Completion::error_json() const {
  const Impl& m = *impl_;
  if (!m.error) return {};
  const bool cancelled = m.error->code() == ErrorCode::Cancelled;
  return ApiError(cancelled ? 499 : 500, cancelled ? "cancelled" : "server_error", "",
                  fmt::format("the generation failed: {} ({})", m.error->what(), error_code_name(m.error->code())))
      .json();
}

const Error* Completion::error() const { return impl_->error ? &*impl_->error : nullptr; }

int64_t Completion::prompt_tokens() const { return int64_t(impl_->req.prompt.size()); }
int64_t Completion::completion_tokens() const { return impl_->completion_tokens(); }

std::unique_ptr<Session> Completion::take_session() { return std::move(impl_->choices[0].session); }

std::vector<std::unique_ptr<Session>> Completion::take_sessions() {
  std::vector<std::unique_ptr<Session>> out;
  for (auto& c : impl_->choices)
    if (c.session) out.push_back(std::move(c.session));
  return out;
}

LocalCompletion::LocalCompletion(Request request, const Model& model, const Tokenizer& tok, const Defaults& defaults)
    : completion_(std::move(request), model, tok, defaults), engine_(model) {}

LocalCompletion::~LocalCompletion() {
  for (Session* s : completion_.sessions()) engine_.remove(*s);
}

bool LocalCompletion::next(std::vector<std::string>& chunks) {
  if (finished_) return false;
  if (!started_) {
    started_ = true;
    Session& s = completion_.start(nullptr, chunks);
    engine_.add(s, completion_.generate_params());
    return true;
  }
  if (completion_.needs_forks() && completion_.prompt_ready()) {
    for (Session* s : completion_.fork_choices()) engine_.add(*s, completion_.generate_params());
    for (auto& c : completion_.fork_chunks()) chunks.push_back(std::move(c));
  }
  const Engine::StepResult r = engine_.step([&](Session& s, const ChatEvent& e) { completion_.on_event(s, e, chunks); });
  for (Session* s : r.finished) completion_.on_finished(*s, chunks);
  for (const auto& f : r.failed) completion_.on_failed(*f.session, f.error);
  if (completion_.failed()) {
    for (Session* s : completion_.sessions()) engine_.remove(*s);
    finished_ = true;
    const Error& e = *completion_.error();
    throw ApiError(500, "server_error", "", fmt::format("the generation failed: {}", e.what()));
  }
  if (completion_.done()) {
    completion_.finish_stream(chunks);
    finished_ = true;
    return false;
  }
  return true;
}

std::string LocalCompletion::run(const std::function<void(const std::string&)>& on_chunk) {
  std::vector<std::string> chunks;
  bool more = true;
  while (more) {
    chunks.clear();
    more = next(chunks);
    if (on_chunk)
      for (const auto& c : chunks) on_chunk(c);
  }
  return completion_.request().stream ? std::string() : completion_.reply();
}

}  // namespace dsinfer::openai
