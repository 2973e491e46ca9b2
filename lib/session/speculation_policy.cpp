// SpeculationPolicy: adaptive speculation's choice of drafts per step (speculation_policy.hpp).
#include "session/speculation_policy.hpp"

#include <algorithm>

namespace dsinfer {

namespace {
// A running mean of step times in which the second sample replaces the first: a step's first run of a shape pays page
// faults and scratch growth, and a mean that kept it (weight 0.8 per later sample) took ~10 probes, ~900 steps, to
// forget one cold verification at 3x its cost.
void running_mean(double& mean, int64_t& samples, double x) {
  mean = samples >= 2 ? 0.8 * mean + 0.2 * x : x;
  samples += 1;
}
}  // namespace

double SpeculationPolicy::cost(int64_t k) const {
  if (plain_seconds_ > 0 && verify_seconds_[k] > 0) return verify_seconds_[k] / plain_seconds_;
  return calibration_ * modelled_cost(k);
}

int64_t SpeculationPolicy::draft_count(int64_t limit, bool timed) {
  if (stood_down_) return 0;
  if (verify_samples_[1] > kStandDownSamples && plain_seconds_ > 0) {
    // Costs at their lowest: k = 1 as measured, other k as measured where they were, else scaled from k = 1.
    const double cost1 = verify_min_seconds_[1] / plain_seconds_;
    bool worth_it = false;  // with every draft accepted, k drafts give k + 1 tokens a step
    for (int64_t k = 1; k <= max_drafts_ && !worth_it; ++k) {
      const double c = verify_samples_[k] > kStandDownSamples ? verify_min_seconds_[k] / plain_seconds_
                                                               : cost1 * modelled_cost(k) / modelled_cost(1);
      worth_it = double(k + 1) / c >= kStandDownGain;
    }
    if (!worth_it) {
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
    const double rate = expected / cost(k);
    if (rate > best_rate) {
      best_rate = rate;
      best = k;
    }
  }
  if (best == 0 && ++steps_since_probe_ >= probe_interval_) {
    steps_since_probe_ = 0;
    // Until this probe gives the samples that can decide standing down, the next comes as soon: where drafting
    // cannot pay, the session stands down after 48 steps instead of 112, and its probes run 16 deferred MTP rows
    // each instead of 32 and 64.
    if (!timed || verify_samples_[1] >= kStandDownSamples)
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
  running_mean(plain_seconds_, plain_samples_, seconds);
  steps_since_plain_ = 0;
}

void SpeculationPolicy::verify_step(int64_t drafted, double seconds) {
  if (verify_samples_[drafted] > 0)  // the first is left out (see kStandDownSamples)
    verify_min_seconds_[drafted] =
        verify_min_seconds_[drafted] > 0 ? std::min(verify_min_seconds_[drafted], seconds) : seconds;
  running_mean(verify_seconds_[drafted], verify_samples_[drafted], seconds);
  steps_since_plain_ += 1;
  if (plain_seconds_ > 0) calibration_ = verify_seconds_[drafted] / plain_seconds_ / modelled_cost(drafted);
}

void SpeculationPolicy::checked(bool accepted) {
  checked_ += 1;
  const double w = std::max(0.1, 1.0 / double(checked_ + 2));
  acceptance_ += w * ((accepted ? 1.0 : 0.0) - acceptance_);
}

void StepCostFit::add(int64_t rows, double seconds) {
  constexpr double kDecay = 0.99;
  const double r = double(rows);
  weight_ = kDecay * weight_ + 1.0;
  rows_ = kDecay * rows_ + r;
  rows2_ = kDecay * rows2_ + r * r;
  seconds_ = kDecay * seconds_ + seconds;
  rows_seconds_ = kDecay * rows_seconds_ + r * seconds;
}

double StepCostFit::verify_seconds(int64_t rows, double seconds, int64_t drafted, double drafting_seconds) const {
  if (weight_ == 0) return -1;
  const double mean_rows = rows_ / weight_;
  const double variance = rows2_ / weight_ - mean_rows * mean_rows;
  if (variance < 1e-6) return -1;
  const double slope = (rows_seconds_ / weight_ - mean_rows * seconds_ / weight_) / variance;
  const double row = std::max(0.0, slope);
  const double without = std::max(seconds - row * double(drafted), 0.0);  // the step had the session not drafted
  return without / double(rows - drafted) + row * double(drafted) + drafting_seconds;
}

bool SpeculationPolicy::measured() const {
  if (plain_samples_ > 0 || checked_ > 0) return true;
  for (const int64_t n : verify_samples_)
    if (n > 0) return true;
  return false;
}

void SpeculationRecord::record_stand_down(const SpeculationPolicy& policy, int64_t max_drafts, int64_t batch) {
  measured_.reset();  // a verdict supersedes the measurements that led to it
  handed_ = 0;
  // The same verdict at a larger batch renews the record, which keeps its reach to smaller batches.
  if (stand_down_ && stand_down_->max_drafts == max_drafts && stand_down_->batch < batch) return;
  stand_down_ = Entry{policy, max_drafts, batch};
}

void SpeculationRecord::record_leaving(const SpeculationPolicy& policy, int64_t max_drafts, int64_t batch) {
  measured_ = Entry{policy, max_drafts, batch};
}

const SpeculationPolicy* SpeculationRecord::hand_over(int64_t max_drafts, int64_t batch) {
  if (stand_down_ && stand_down_->applies(max_drafts, batch)) {
    if (++handed_ <= kHandOvers) return &stand_down_->policy;
    stand_down_.reset();  // served its sessions: the next measures from nothing
    measured_.reset();
    return nullptr;
  }
  return measured_ && measured_->applies(max_drafts, batch) ? &measured_->policy : nullptr;
}

}  // namespace dsinfer
