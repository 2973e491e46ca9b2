#include "scheduler.hpp"

#include <fmt/format.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include <algorithm>
#include <cmath>
#include <unordered_map>

namespace dsinfer::serve {

namespace {
void complete(Job& job, int status, std::string body, std::vector<std::string> chunks = {}) {
  {
    std::lock_guard<std::mutex> lock(job.mutex);
    for (auto& c : chunks) job.chunks.push_back(std::move(c));
    job.status = status;
    job.body = std::move(body);
    job.done = true;
  }
  job.cv.notify_all();
}
}  // namespace

Scheduler::Scheduler(const Model& model, const SchedulerOptions& options, Metrics& metrics)
    : model_(model), opt_(options), metrics_(metrics), engine_(model, options.max_step_prompt_tokens) {
  update_gauges();
  thread_ = std::thread([this] { loop(); });
}

Scheduler::~Scheduler() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

bool Scheduler::submit(const std::shared_ptr<Job>& job) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (int(queue_.size()) >= opt_.max_queue) return false;
    queue_.push_back(job);
  }
  cv_.notify_all();
  return true;
}

void Scheduler::cancel(const std::shared_ptr<Job>& job) {
  job->cancelled = true;
  {
    // A request still waiting leaves the queue at once; a running one leaves the engine in the next iteration.
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = std::find(queue_.begin(), queue_.end(), job);
    if (it != queue_.end()) {
      queue_.erase(it);
      metrics_.add_cancelled();
      complete(*job, 499, openai::ApiError(499, "cancelled", "", "the client closed the connection").json());
    }
  }
  cv_.notify_all();
}

void Scheduler::reset_prefix_cache() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    reset_ = true;
  }
  cv_.notify_all();
  // Done by the engine thread (it owns the cache); wait for it so the caller sees the blocks freed.
  for (int i = 0; i < 500; ++i) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (!reset_) return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
}

bool Scheduler::wait_idle(std::chrono::milliseconds timeout) {
  const auto until = Clock::now() + timeout;
  for (;;) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (queue_.empty() && n_running_ == 0) return true;
    }
    if (Clock::now() >= until) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

void Scheduler::cancel_all() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    cancel_all_ = true;
  }
  cv_.notify_all();
}

int Scheduler::retry_after_seconds() const {
  std::lock_guard<std::mutex> lock(mutex_);
  const double wait = mean_request_seconds_ * double(queue_.size() + 1) / double(std::max(1, opt_.max_sessions));
  return std::max(1, int(std::ceil(wait)));
}

void Scheduler::publish(Job& job, std::vector<std::string>& chunks) {
  if (chunks.empty()) return;
  {
    std::lock_guard<std::mutex> lock(job.mutex);
    for (auto& c : chunks) job.chunks.push_back(std::move(c));
  }
  chunks.clear();
  job.cv.notify_all();
}


const Session* Scheduler::best_prefix(const std::vector<int32_t>& prompt, int64_t* common) {
  auto best = prefix_.end();
  int64_t best_n = 0;
  for (auto it = prefix_.begin(); it != prefix_.end(); ++it) {
    const auto& t = (*it)->tokens();
    const size_t n = std::min(t.size(), prompt.size());
    size_t k = 0;
    while (k < n && t[k] == prompt[k]) ++k;
    if (int64_t(k) > best_n) {
      best_n = int64_t(k);
      best = it;
    }
  }
  *common = best_n;
  if (best == prefix_.end() || best_n < opt_.min_prefix_tokens) return nullptr;
  prefix_.splice(prefix_.begin(), prefix_, best);  // most recently used first
  return prefix_.front().get();
}

void Scheduler::cache_session(std::unique_ptr<Session> s) {
  if (!s || opt_.prefix_cache_entries <= 0 || s->tokens().empty()) return;
  const auto& t = s->tokens();
  // An entry whose tokens this conversation extends is superseded by it.
  prefix_.remove_if([&](const std::unique_ptr<Session>& e) {
    const auto& u = e->tokens();
    return u.size() <= t.size() && std::equal(u.begin(), u.end(), t.begin());
  });
  prefix_.push_front(std::move(s));
  while (int(prefix_.size()) > opt_.prefix_cache_entries) prefix_.pop_back();
}

void Scheduler::admit(std::shared_ptr<Job> job) {
  openai::Completion& c = *job->completion;
  const openai::Request& rq = c.request();
  // The pool is sized for every slot at full context, but cached conversations also hold blocks: make room.
  const auto st = model_.kv_cache_stats();
  const int64_t need = rq.n * ((int64_t(rq.prompt.size()) + rq.max_tokens) / std::max<int64_t>(1, st.block_tokens) + 2);
  while (!prefix_.empty() && model_.kv_cache_stats().blocks_total - model_.kv_cache_stats().blocks_used < need)
    prefix_.pop_back();
  int64_t common = 0;
  const Session* prefix = best_prefix(rq.prompt, &common);
  std::vector<std::string> chunks;
  Session* s = nullptr;
  try {
    s = &c.start(prefix, chunks);
    engine_.add(*s, c.generate_params());
  } catch (const std::exception& e) {
    for (auto& owned : c.take_sessions()) owned.reset();
    running_sessions_ -= rq.n;
    complete(*job, 500, openai::ApiError(500, "server_error", "", fmt::format("could not start: {}", e.what())).json());
    return;
  }
  metrics_.add_prompt_tokens(int64_t(rq.prompt.size()), c.cached_tokens());
  running_.push_back(Running{job, {s}});
  publish(*job, chunks);
}

// Each session's speculative stats into /metrics, then reset: a session kept in the prefix cache counts only what
// it does for its next request.
void Scheduler::count_speculation(openai::Completion& c) {
  for (Session* s : c.sessions()) {
    metrics_.add_speculative(s->speculative_stats());
    s->reset_speculative_stats();
  }
}

void Scheduler::drop(Running& r, int status) {
  openai::Completion& c = *r.job->completion;
  count_speculation(c);
  for (Session* s : c.sessions()) engine_.remove(*s);
  for (auto& owned : c.take_sessions()) owned.reset();  // frees the KV blocks now
  running_sessions_ -= c.request().n;
  metrics_.add_cancelled();
  complete(*r.job, status, openai::ApiError(status, "cancelled", "", "the client closed the connection").json());
}

void Scheduler::finish(Running& r) {
  openai::Completion& c = *r.job->completion;
  std::vector<std::string> chunks;
  int status = 200;
  std::string body;
  if (c.failed()) {
    status = 500;
    body = c.error_json();
  } else {
    c.finish_stream(chunks);
    if (!c.request().stream) body = c.reply();
  }
  count_speculation(c);
  for (Session* s : c.sessions()) engine_.remove(*s);
  auto sessions = c.take_sessions();
  if (status == 200 && !sessions.empty()) cache_session(std::move(sessions[0]));
  sessions.clear();
  running_sessions_ -= c.request().n;
  const double secs = std::chrono::duration<double>(Clock::now() - r.job->arrived).count();
  {
    std::lock_guard<std::mutex> lock(mutex_);
    mean_request_seconds_ = 0.8 * mean_request_seconds_ + 0.2 * secs;
  }
  complete(*r.job, status, std::move(body), std::move(chunks));
}

void Scheduler::update_gauges() {
  Metrics::Gauges g;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    g.waiting = int64_t(queue_.size());
  }
  g.running_requests = int64_t(running_.size());
  g.running_sessions = int64_t(engine_.size());
  const auto st = model_.kv_cache_stats();
  g.kv_blocks_used = st.blocks_used;
  g.kv_blocks_total = st.blocks_total;
  g.kv_block_tokens = st.block_tokens;
  g.prefix_cache_entries = int64_t(prefix_.size());
  const auto mem = model_.backend_memory_stats();
  g.backend_scratch_bytes = mem.scratch_bytes;
  g.backend_cached_activation_bytes = mem.cached_activation_bytes;
  metrics_.set_gauges(g);
}

void Scheduler::loop() {
  std::unordered_map<const Session*, Running*> owner;
  std::unordered_map<Running*, std::vector<std::string>> out;
  for (;;) {
    update_gauges();
    std::vector<std::shared_ptr<Job>> admitted;
    bool reset = false, cancel_everything = false;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      if (running_.empty() && !stop_ && !reset_ && !cancel_all_ && queue_.empty()) {
        // Going idle: the pages of free KV blocks, the backend's recycled buffers and the heap's free pages (the
        // many HTTP threads' malloc arenas keep what a burst of requests freed) go back to the system, so an idle
        // server's RSS returns to its idle level.
        lock.unlock();
        model_.release_memory();
#if defined(__GLIBC__)
        malloc_trim(0);
#endif
        update_gauges();  // (/metrics shows what the release left: an idle server's backend holds no scratch)
        lock.lock();
        cv_.wait(lock, [&] { return stop_ || reset_ || cancel_all_ || !queue_.empty(); });
      }
      if (stop_) break;
      reset = reset_;
      cancel_everything = cancel_all_;
      cancel_all_ = false;
      if (cancel_everything) {
        for (auto& j : queue_) j->cancelled = true;
      }
      while (!queue_.empty() && running_sessions_ + queue_.front()->completion->request().n <= opt_.max_sessions) {
        running_sessions_ += queue_.front()->completion->request().n;
        admitted.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
      n_running_ = running_.size() + admitted.size();
    }
    if (reset) {
      prefix_.clear();
      std::lock_guard<std::mutex> lock(mutex_);
      reset_ = false;
    }
    for (auto& job : admitted) {
      if (job->cancelled) {
        running_sessions_ -= job->completion->request().n;
        metrics_.add_cancelled();
        complete(*job, 499, openai::ApiError(499, "cancelled", "", "the client closed the connection").json());
        continue;
      }
      admit(std::move(job));
    }
    // Clients that went away leave at once: their sessions are destroyed, which frees their KV blocks.
    for (auto it = running_.begin(); it != running_.end();) {
      if (it->job->cancelled || cancel_everything) {
        drop(*it, 499);
        it = running_.erase(it);
      } else {
        ++it;
      }
    }
    // A request with n > 1: once choice 0's prompt is evaluated the other choices fork from it (shared blocks).
    for (Running& r : running_) {
      openai::Completion& c = *r.job->completion;
      if (c.needs_forks() && c.prompt_ready()) {
        for (Session* s : c.fork_choices()) {
          engine_.add(*s, c.generate_params());
          r.sessions.push_back(s);
        }
        auto chunks = c.fork_chunks();
        publish(*r.job, chunks);
      }
    }
    owner.clear();
    for (Running& r : running_)
      for (Session* s : r.job->completion->sessions()) owner[s] = &r;
    if (engine_.size() == 0) {
      std::lock_guard<std::mutex> lock(mutex_);
      n_running_ = running_.size();
      continue;
    }
    out.clear();
    const Engine::StepResult step = engine_.step([&](Session& s, const ChatEvent& e) {
      Running* r = owner.at(&s);
      r->job->completion->on_event(s, e, out[r]);
    });
    if (step.batch_sessions > 0) metrics_.observe_step(step.batch_sessions, step.batch_tokens);
    for (Session* s : step.finished) {
      Running* r = owner.at(s);
      r->job->completion->on_finished(*s, out[r]);
    }
    for (const auto& f : step.failed) owner.at(f.session)->job->completion->on_failed(*f.session, f.error);
    const auto now = Clock::now();
    for (auto it = running_.begin(); it != running_.end();) {
      Running& r = *it;
      openai::Completion& c = *r.job->completion;
      const int64_t tokens = c.completion_tokens();
      if (tokens > r.job->tokens_seen) {
        if (r.job->tokens_seen == 0) metrics_.observe_ttft(std::chrono::duration<double>(now - r.job->arrived).count());
        else metrics_.observe_itl(std::chrono::duration<double>(now - r.job->last_token).count());
        metrics_.add_generated_tokens(tokens - r.job->tokens_seen);
        r.job->tokens_seen = tokens;
        r.job->last_token = now;
      }
      auto o = out.find(&r);
      if (o != out.end()) publish(*r.job, o->second);
      if (c.done()) {
        finish(r);
        it = running_.erase(it);
      } else {
        ++it;
      }
    }
    {
      std::lock_guard<std::mutex> lock(mutex_);
      n_running_ = running_.size();
    }
    update_gauges();
  }
  // Stopping: whatever still runs ends as cancelled.
  for (Running& r : running_) drop(r, 499);
  running_.clear();
  std::lock_guard<std::mutex> lock(mutex_);
  for (auto& j : queue_) complete(*j, 503, openai::ApiError(503, "server_error", "", "the server is shutting down").json());
  queue_.clear();
}

}  // namespace dsinfer::serve
