// `dsinfer serve`'s /metrics: counters, gauges and histograms in Prometheus' text exposition format.
#pragma once
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "dsinfer/session.hpp"

namespace dsinfer::serve {

class Metrics {
 public:
  Metrics();
  // requests by endpoint and HTTP status (499: the client went away first)
  void request_done(const std::string& endpoint, int status);
  void add_cancelled();  // a generation ended because its client went away
  void add_prompt_tokens(int64_t n, int64_t cached);
  void add_generated_tokens(int64_t n);
  void observe_ttft(double seconds);
  void observe_itl(double seconds);
  void observe_step(int64_t sessions, int64_t tokens);
  // What a finished or dropped session's speculative decoding did (its stats since they were last reset).
  void add_speculative(const SpeculativeStats& s);
  // Gauges the scheduler sets.
  struct Gauges {
    int64_t waiting = 0, running_requests = 0, running_sessions = 0;
    int64_t kv_blocks_used = 0, kv_blocks_total = 0, kv_block_tokens = 0;
    int64_t prefix_cache_entries = 0;
    int64_t backend_scratch_bytes = 0, backend_cached_activation_bytes = 0;  // Model::backend_memory_stats
  };
  void set_gauges(const Gauges& g);
  Gauges gauges() const;
  // The whole exposition text (includes process RSS and the given readiness).
  std::string text(bool ready) const;

 private:
  struct Histogram {
    std::vector<double> bounds;
    std::vector<uint64_t> counts;  // per bucket (not cumulative); one more for +Inf
    double sum = 0;
    uint64_t count = 0;
    void observe(double v);
  };
  mutable std::mutex mutex_;
  std::map<std::pair<std::string, int>, uint64_t> requests_;
  uint64_t prompt_tokens_ = 0, cached_tokens_ = 0, generated_tokens_ = 0, steps_ = 0, cancelled_ = 0;
  uint64_t spec_verifications_ = 0, spec_drafted_ = 0, spec_accepted_ = 0;
  std::vector<uint64_t> spec_drafted_at_, spec_accepted_at_;  // by draft position
  Histogram ttft_, itl_, batch_sessions_, batch_tokens_;
  Gauges gauges_;
};

}  // namespace dsinfer::serve
