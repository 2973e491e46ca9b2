// Adaptive speculation: how many tokens a session drafts each step, from the acceptance and step times it measured.
// Pure bookkeeping (no model, no clock): the Session feeds it timings and outcomes, so the policy is tested alone.
#pragma once
#include <cstdint>

#include "dsinfer/model.hpp"

namespace dsinfer {

class SpeculationPolicy {
 public:
  // max_drafts: SpeculativeParams::draft_tokens; draft_cost: one draft row's cost in plain steps, as modelled before
  // anything is timed (the MTP layer and the lm_head against a whole decode step, by the bytes they read: ModelInfo).
  SpeculationPolicy(int64_t max_drafts, double draft_cost) : max_drafts_(max_drafts), draft_cost_(draft_cost) {}

  // Drafts for the next step, 0 .. limit (limit >= 1). Expected tokens per step with k drafts, each accepted with
  // probability a given the one before: 1 + a + ... + a^k; cost in plain steps (cost()). The best k by that ratio;
  // when none pays, a one-draft probe after 16 plain steps (then 32, 64, 128 while none pays) keeps the estimates
  // current, and while drafting pays a plain step every 32 keeps the plain cost current. timed: this session's own
  // step times are its costs (alone; in an Engine a step's time is the whole batch's, and the model decides).
  // Stands down for good — 0 from then on, stood_down() true — where even every draft accepted would gain under
  // kStandDownGain (a compute-bound model, where k + 1 rows cost about k + 1 steps): the upkeep of speculating (MTP
  // rows for every token, probes that lose most of a step) costs about what it could at best win, and the session
  // drops its MTP state. Judged on the cheapest of at least kStandDownSamples timed one-draft verifications after
  // the first (a step's first run of a new shape pays page faults and scratch growth; one slow sample must not end
  // speculation where it pays), against the mean plain step.
  int64_t draft_count(int64_t limit, bool timed);
  static constexpr double kStandDownGain = 1.1;
  static constexpr int64_t kStandDownSamples = 2;

  void plain_step(double seconds);                  // a timed step without drafts
  void verify_step(int64_t drafted, double seconds);  // a timed step that drafted and verified `drafted` tokens
  void checked(bool accepted);                       // one draft compared with the token the chain picked

  bool stood_down() const { return stood_down_; }
  double acceptance() const { return acceptance_; }
  // A step with k drafts in plain steps: timed by this session where it has run both kinds of step, else the model
  // (below) scaled by how far the last measurement was from it.
  double cost(int64_t k, bool timed) const;
  // The model: verifying k + 1 rows costs about 1 + 0.57 k on the CPU backend (measured on a large model: 2/3/4 rows
  // 1.62x/2.20x/2.71x one row), plus k draft rows.
  double modelled_cost(int64_t k) const { return 1.0 + 0.57 * double(k) + draft_cost_ * double(k); }

 private:
  int64_t max_drafts_;
  double draft_cost_;
  // Running estimate of a draft's acceptance given the previous one's: a prior of 0.8 worth two drafts, then the mean
  // of what was seen, then an exponential mean (weight 0.1) from the eighth checked draft on. A model whose drafts
  // are never accepted stops drafting after about three rejections instead of ~15.
  double acceptance_ = 0.8;
  int64_t checked_ = 0;
  int64_t steps_since_probe_ = 0;
  // Plain steps between one-draft probes while no k pays: 16, doubled after each probe that does not change that
  // (up to 128), so that a model whose drafts never pay loses little to probing; back to 16 once drafting pays.
  int64_t probe_interval_ = 16;
  // Measured costs (seconds, running means; 0 = not measured yet): a plain one-token step (which skips the MTP
  // layer: its row waits for the next draft), and a step with k drafts (drafting + verifying).
  double plain_seconds_ = 0;
  int64_t plain_samples_ = 0;
  double verify_seconds_[Model::kMaxDraftTokens + 1] = {};
  double calibration_ = 1.0;  // measured / modelled cost of the last measured k (scales the model for other k)
  // Per k: timed verifications, and the cheapest of them after the first (0 = none yet).
  int64_t verify_samples_[Model::kMaxDraftTokens + 1] = {};
  double verify_min_seconds_[Model::kMaxDraftTokens + 1] = {};
  int64_t steps_since_plain_ = 0;
  bool stood_down_ = false;
};

}  // namespace dsinfer
