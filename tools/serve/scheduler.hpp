// `dsinfer serve`'s engine thread: requests wait in a bounded queue, join the engine's shared decode steps as slots
// free up (continuous batching), reuse cached conversations' KV blocks (prefix cache), and stream their chunks to
// the HTTP threads. Built only on the public API (Engine, Session, openai::Completion).
#pragma once
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "dsinfer/openai.hpp"
#include "dsinfer/session.hpp"
#include "metrics.hpp"

namespace dsinfer::serve {

using Clock = std::chrono::steady_clock;

// One request between its HTTP thread and the engine thread. The HTTP thread reads chunks/done/reply under `mutex`
// and may set `cancelled` at any time; everything else belongs to the engine thread.
struct Job {
  explicit Job(std::unique_ptr<openai::Completion> c) : completion(std::move(c)), arrived(Clock::now()) {}
  std::unique_ptr<openai::Completion> completion;
  Clock::time_point arrived;
  std::atomic<bool> cancelled{false};

  std::mutex mutex;
  std::condition_variable cv;
  std::deque<std::string> chunks;  // SSE data payloads not yet written
  bool done = false;
  int status = 200;                // final status when done (200, 500, 499)
  std::string body;                // the reply (non-streaming) or the error object

  // engine thread only
  int64_t tokens_seen = 0;
  Clock::time_point last_token;
};

struct SchedulerOptions {
  int max_sessions = 16;       // sessions generating at once (a request with n choices takes n)
  int max_queue = 64;          // requests waiting for a slot; more are refused (429)
  int prefix_cache_entries = 16;
  int64_t min_prefix_tokens = 16;  // shorter common prefixes are not worth a fork
  // Prompt tokens one engine step evaluates while sessions decode (the Engine's chunked prefill): long prompts and
  // prompts arriving together are spread over several steps, so running sessions keep decoding between them
  // instead of waiting for one huge forward.
  int64_t max_step_prompt_tokens = 256;
};

class Scheduler {
 public:
  Scheduler(const Model& model, const SchedulerOptions& options, Metrics& metrics);
  ~Scheduler();  // stops the engine thread; running requests end as cancelled

  // Queues a request. Returns false when the queue is full (the caller answers 429).
  bool submit(const std::shared_ptr<Job>& job);
  // The client went away: the job's sessions leave the engine and free their KV blocks in the next iteration.
  void cancel(const std::shared_ptr<Job>& job);
  // Drops every cached conversation (frees their KV blocks).
  void reset_prefix_cache();
  // Waits until no request is queued or running, at most `timeout`. Returns true if idle.
  bool wait_idle(std::chrono::milliseconds timeout);
  // Cancels everything queued and running.
  void cancel_all();
  // Seconds a refused request should wait (Retry-After): about one request's time at the current load.
  int retry_after_seconds() const;

 private:
  struct Running {
    std::shared_ptr<Job> job;
    std::vector<Session*> sessions;  // in the engine
  };
  void loop();
  void admit(std::shared_ptr<Job> job);
  void finish(Running& r);
  void drop(Running& r, int status);
  void count_speculation(openai::Completion& c);
  void publish(Job& job, std::vector<std::string>& chunks);
  void update_gauges();
  const Session* best_prefix(const std::vector<int32_t>& prompt, int64_t* common);
  void cache_session(std::unique_ptr<Session> s);

  const Model& model_;
  SchedulerOptions opt_;
  Metrics& metrics_;
  Engine engine_;

  mutable std::mutex mutex_;  // guards queue_, stop_, reset_, n_running_
  std::condition_variable cv_;
  std::deque<std::shared_ptr<Job>> queue_;
  bool stop_ = false, reset_ = false, cancel_all_ = false;
  size_t n_running_ = 0;
  double mean_request_seconds_ = 1.0;

  std::list<Running> running_;                     // engine thread only
  std::list<std::unique_ptr<Session>> prefix_;     // most recently used first
  int running_sessions_ = 0;
  std::thread thread_;
};

}  // namespace dsinfer::serve
