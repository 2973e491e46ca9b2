// SpeculationPolicy: adaptive speculation's choice of drafts per step (speculation_policy.hpp).
#include "session/speculation_policy.hpp"

#include <algorithm>

namespace dsinfer {

namespace {
void running_mean(double& mean, double x) { mean = mean > 0 ? 0.8 * mean + 0.2 * x : x; }
}  // namespace

double SpeculationPolicy::cost(int64_t k, bool timed) const {
  if (!timed) return modelled_cost(k);
  if (plain_seconds_ > 0 && verify_seconds_[k] > 0) return verify_seconds_[k] / plain_seconds_;
  return calibration_ * modelled_cost(k);
}

int64_t SpeculationPolicy::draft_count(int64_t limit, bool timed) {
  if (stood_down_) return 0;
  if (timed && verifications_timed_ >= 2 && plain_seconds_ > 0) {
    bool could_pay = false;  // with every draft accepted, k drafts give k + 1 tokens a step
    for (int64_t k = 1; k <= max_drafts_ && !could_pay; ++k) could_pay = double(k + 1) / cost(k, true) > 1.0;
    if (!could_pay) {
      stood_down_ = true;
      return 0;
    }
  }
  if (timed && (plain_seconds_ == 0 || steps_since_plain_ >= 32)) return 0;
  int64_t best = 0;
  double best_rate = 1.0, expected = 1.0, p = 1.0;
  for (int64_t k = 1; k <= limit; ++k) {
    p *= acceptance_;
    expected += p;
    const double rate = expected / cost(k, timed);
    if (rate > best_rate) {
      best_rate = rate;
      best = k;
    }
  }
  if (best == 0 && ++steps_since_probe_ >= probe_interval_) {
    steps_since_probe_ = 0;
    probe_interval_ = std::min<int64_t>(2 * probe_interval_, 128);
    return 1;
  }
  if (best > 0) {
    steps_since_probe_ = 0;
    probe_interval_ = 16;
  }
  return best;
}

void SpeculationPolicy::plain_step(double seconds) {
  running_mean(plain_seconds_, seconds);
  steps_since_plain_ = 0;
}

void SpeculationPolicy::verify_step(int64_t drafted, double seconds) {
  running_mean(verify_seconds_[drafted], seconds);
  steps_since_plain_ += 1;
  verifications_timed_ += 1;
  if (plain_seconds_ > 0) calibration_ = verify_seconds_[drafted] / plain_seconds_ / modelled_cost(drafted);
}

void SpeculationPolicy::checked(bool accepted) {
  checked_ += 1;
  const double w = std::max(0.1, 1.0 / double(checked_ + 2));
  acceptance_ += w * ((accepted ? 1.0 : 0.0) - acceptance_);
}

}  // namespace dsinfer
