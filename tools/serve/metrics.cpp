#include "metrics.hpp"

#include <fmt/format.h>
#include <unistd.h>

#include <fstream>

namespace dsinfer::serve {

namespace {

int64_t resident_bytes() {
  std::ifstream f("/proc/self/statm");
  int64_t pages = 0, resident = 0;
  if (!(f >> pages >> resident)) return 0;
  return resident * int64_t(sysconf(_SC_PAGESIZE));
}

}  // namespace

void Metrics::Histogram::observe(double v) {
  size_t i = 0;
  while (i < bounds.size() && v > bounds[i]) ++i;
  ++counts[i];
  sum += v;
  ++count;
}

Metrics::Metrics() {
  ttft_.bounds = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};
  itl_.bounds = {0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 1, 2.5};
  batch_sessions_.bounds = {1, 2, 4, 8, 16, 32, 64, 128, 256};
  batch_tokens_.bounds = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192};
  for (Histogram* h : {&ttft_, &itl_, &batch_sessions_, &batch_tokens_}) h->counts.assign(h->bounds.size() + 1, 0);
}

void Metrics::request_done(const std::string& endpoint, int status) {
  std::lock_guard<std::mutex> lock(mutex_);
  ++requests_[{endpoint, status}];
}
void Metrics::add_cancelled() {
  std::lock_guard<std::mutex> lock(mutex_);
  ++cancelled_;
}
void Metrics::add_prompt_tokens(int64_t n, int64_t cached) {
  std::lock_guard<std::mutex> lock(mutex_);
  prompt_tokens_ += uint64_t(n);
  cached_tokens_ += uint64_t(cached);
}
void Metrics::add_generated_tokens(int64_t n) {
  std::lock_guard<std::mutex> lock(mutex_);
  generated_tokens_ += uint64_t(n);
}
void Metrics::observe_ttft(double s) {
  std::lock_guard<std::mutex> lock(mutex_);
  ttft_.observe(s);
}
void Metrics::observe_itl(double s) {
  std::lock_guard<std::mutex> lock(mutex_);
  itl_.observe(s);
}
void Metrics::observe_step(int64_t sessions, int64_t tokens) {
  std::lock_guard<std::mutex> lock(mutex_);
  ++steps_;
  batch_sessions_.observe(double(sessions));
  batch_tokens_.observe(double(tokens));
}
void Metrics::add_speculative(const SpeculativeStats& st) {
  std::lock_guard<std::mutex> lock(mutex_);
  spec_verifications_ += uint64_t(st.steps);
  spec_drafted_ += uint64_t(st.drafted);
  spec_accepted_ += uint64_t(st.accepted);
  auto add = [](std::vector<uint64_t>& to, const std::vector<int64_t>& from) {
    if (to.size() < from.size()) to.resize(from.size(), 0);
    for (size_t i = 0; i < from.size(); ++i) to[i] += uint64_t(from[i]);
  };
  add(spec_drafted_at_, st.drafted_at);
  add(spec_accepted_at_, st.accepted_at);
}

void Metrics::set_gauges(const Gauges& g) {
  std::lock_guard<std::mutex> lock(mutex_);
  gauges_ = g;
}
Metrics::Gauges Metrics::gauges() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return gauges_;
}

std::string Metrics::text(bool ready) const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::string o;
  auto head = [&](const char* name, const char* type, const char* help) {
    o += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
  };
  // One value without labels: its HELP and TYPE lines, then the sample.
  auto metric = [&](const char* name, const char* type, const char* help, double v) {
    head(name, type, help);
    o += fmt::format("{} {}\n", name, v);
  };
  // A counter per draft position (label position="0", "1", ...).
  auto by_position = [&](const char* name, const char* help, const std::vector<uint64_t>& counts) {
    head(name, "counter", help);
    for (size_t i = 0; i < counts.size(); ++i) o += fmt::format("{}{{position=\"{}\"}} {}\n", name, i, counts[i]);
  };
  auto hist = [&](const char* name, const char* help, const Histogram& h) {
    head(name, "histogram", help);
    uint64_t cum = 0;
    for (size_t i = 0; i < h.bounds.size(); ++i) {
      cum += h.counts[i];
      o += fmt::format("{}_bucket{{le=\"{}\"}} {}\n", name, h.bounds[i], cum);
    }
    cum += h.counts.back();
    o += fmt::format("{}_bucket{{le=\"+Inf\"}} {}\n{}_sum {}\n{}_count {}\n", name, cum, name, h.sum, name, h.count);
  };
  metric("dsinfer_ready", "gauge", "1 once the model is loaded", ready ? 1 : 0);
  head("dsinfer_requests_total", "counter", "HTTP responses, by path and status");
  for (const auto& [key, n] : requests_)
    o += fmt::format("dsinfer_requests_total{{endpoint=\"{}\",status=\"{}\"}} {}\n", key.first, key.second, n);
  metric("dsinfer_requests_cancelled_total", "counter",
         "generations ended because the client closed the connection", double(cancelled_));
  metric("dsinfer_prompt_tokens_total", "counter", "prompt tokens of admitted requests", double(prompt_tokens_));
  metric("dsinfer_prefix_cache_hit_tokens_total", "counter",
         "prompt tokens reused from cached KV blocks", double(cached_tokens_));
  metric("dsinfer_generation_tokens_total", "counter", "generated tokens", double(generated_tokens_));
  metric("dsinfer_engine_steps_total", "counter", "engine steps (one forward each)", double(steps_));
  metric("dsinfer_spec_decode_verifications_total", "counter",
         "speculative decoding: main-model forwards that checked drafted tokens (--speculative)",
         double(spec_verifications_));
  metric("dsinfer_spec_decode_draft_tokens_total", "counter",
         "speculative decoding: drafted tokens checked", double(spec_drafted_));
  metric("dsinfer_spec_decode_accepted_tokens_total", "counter",
         "speculative decoding: drafted tokens accepted", double(spec_accepted_));
  by_position("dsinfer_spec_decode_draft_tokens_by_position_total",
              "speculative decoding: drafted tokens checked, by position in the draft (0 = first)", spec_drafted_at_);
  by_position("dsinfer_spec_decode_accepted_tokens_by_position_total",
              "speculative decoding: drafted tokens accepted, by position in the draft (0 = first)", spec_accepted_at_);
  metric("dsinfer_queue_depth", "gauge", "requests waiting for a slot", double(gauges_.waiting));
  metric("dsinfer_running_requests", "gauge", "requests generating", double(gauges_.running_requests));
  metric("dsinfer_running_sessions", "gauge",
         "sessions in the engine (a request with n choices has n)", double(gauges_.running_sessions));
  metric("dsinfer_kv_blocks_used", "gauge",
         "KV cache blocks in use (running sessions and the prefix cache)", double(gauges_.kv_blocks_used));
  metric("dsinfer_kv_blocks_total", "gauge", "KV cache blocks in the pool", double(gauges_.kv_blocks_total));
  metric("dsinfer_backend_scratch_bytes", "gauge", "the backend's op scratch, kept between steps (freed when idle)",
         double(gauges_.backend_scratch_bytes));
  metric("dsinfer_backend_cached_activation_bytes", "gauge",
         "freed activation buffers the backend keeps for reuse (freed when idle)",
         double(gauges_.backend_cached_activation_bytes));
  metric("dsinfer_kv_block_tokens", "gauge", "tokens per KV cache block", double(gauges_.kv_block_tokens));
  metric("dsinfer_prefix_cache_entries", "gauge",
         "finished conversations kept for prefix reuse", double(gauges_.prefix_cache_entries));
  hist("dsinfer_batch_sessions", "sessions per engine step", batch_sessions_);
  hist("dsinfer_batch_tokens", "tokens evaluated per engine step (prompts and decode tokens)", batch_tokens_);
  hist("dsinfer_time_to_first_token_seconds", "time from a request's arrival to its first generated token", ttft_);
  hist("dsinfer_inter_token_latency_seconds", "time between a request's consecutive generated tokens", itl_);
  metric("process_resident_memory_bytes", "gauge", "resident memory of the server process", double(resident_bytes()));
  return o;
}

}  // namespace dsinfer::serve
