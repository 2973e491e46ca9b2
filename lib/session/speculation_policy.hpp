// Adaptive speculation: how many tokens a session drafts each step, from the acceptance and step times it measured.
// Pure bookkeeping (no model, no clock): the Session feeds it timings and outcomes, so the policy is tested alone.
#pragma once
#include <cstdint>
#include <optional>

#include "dsinfer/model.hpp"

namespace dsinfer {

class SpeculationPolicy {
 public:
  // max_drafts: SpeculativeParams::draft_tokens; draft_cost: one draft row's cost in plain steps, as modelled before
  // anything is timed (the MTP layer and the lm_head against a whole decode step, by the bytes they read: ModelInfo).
  SpeculationPolicy(int64_t max_drafts, double draft_cost) : max_drafts_(max_drafts), draft_cost_(draft_cost) {}

  // Drafts for the next step, 0 .. limit (limit >= 1). Expected tokens per step with k drafts, each accepted with
  // probability a given the one before: 1 + a + ... + a^k; cost in plain steps (cost()). The best k by that ratio;
  // when none pays, a one-draft probe after 16 plain steps (then 32, 64, 128 while none pays, once timed probes can
  // decide standing down; every 16 before) keeps the estimates current, and while drafting pays a plain step every
  // 32 keeps the plain cost current. timed: the step will be timed (plain_step / verify_step follow it), so the
  // policy may ask for a plain step to time; an untimed step (an Engine's step that also evaluates a prompt) decides
  // on what was timed before, or on the model where nothing was.
  // Stands down for good — 0 from then on, stood_down() true — where even every draft accepted would gain under
  // kStandDownGain (a compute-bound model, where k + 1 rows cost about k + 1 steps): the upkeep of speculating (MTP
  // rows for every token, probes that lose most of a step) costs about what it could at best win, and the session
  // drops its MTP state. Judged on the cheapest of at least kStandDownSamples timed one-draft verifications after
  // the first (a step's first run of a new shape pays page faults and scratch growth; one slow sample must not end
  // speculation where it pays), against the mean plain step.
  int64_t draft_count(int64_t limit, bool timed);
  static constexpr double kStandDownGain = 1.1;
  static constexpr int64_t kStandDownSamples = 2;

  // Timed steps: a session's own (drafting and the forward, sampling excluded), or in an Engine what the session's
  // rows cost the batch's step (StepCostFit::plain_seconds / verify_seconds).
  void plain_step(double seconds);                  // a step without drafts
  void verify_step(int64_t drafted, double seconds);  // a step that drafted and verified `drafted` tokens
  void checked(bool accepted);                       // one draft compared with the token the chain picked

  bool stood_down() const { return stood_down_; }
  // Whether anything was timed or checked yet (a policy that has measured nothing starts from the model).
  bool measured() const;
  double acceptance() const { return acceptance_; }
  // A step with k drafts in plain steps: as timed where both kinds of step were, else the model (below) scaled by
  // how far the last measurement was from it (unscaled before any).
  double cost(int64_t k) const;
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
  // (up to 128; not before the timed probes can decide standing down), so that a model whose drafts never pay loses
  // little to probing; back to 16 once drafting pays.
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

// What a session's rows cost an Engine's step, whose forward evaluates every session's rows at once. The forward's
// time is fitted as T(R) = a + b R over the timed steps (R rows; least squares, each step's weight decaying by 0.99 a
// step), so b is what one more row adds: ~0 where reading the weights dominates (drafts nearly free), ~T / R where
// the rows' arithmetic does (k drafts cost about k plain rows). A session's plain step costs a row's share, T / R; a
// step where it drafted k costs what its one row would have without the drafts, T(R - k) / (R - k), plus b k for the
// drafts and its own drafting time. Alone (R = 1 + k) that is the session's step time; in a batch it is what the
// session's drafts add to the batch's time, the figure that decides whether they pay — where a share of the step by
// rows would count a draft among 16 sessions as 1/16 of the gain it brings.
class StepCostFit {
 public:
  void add(int64_t rows, double seconds);  // a timed forward
  static double plain_seconds(int64_t rows, double seconds) { return seconds / double(rows); }
  // A session that drafted `drafted` of the step's rows; negative while the fit cannot tell a row's cost (every
  // timed step had the same number of rows).
  double verify_seconds(int64_t rows, double seconds, int64_t drafted, double drafting_seconds) const;

 private:
  double weight_ = 0, rows_ = 0, rows2_ = 0, seconds_ = 0, rows_seconds_ = 0;  // decayed sums
};

// An Engine's record of its sessions' speculation measurements, for the sessions that join it later (a server's
// requests): without it each new session measures from nothing and pays the probes that lead to a verdict (a
// stand-down comes at step 48 at the soonest), so a reply shorter than that pays them every time.
// - A stand-down: a session that stood down by its measurements leaves its policy here, with its draft count and
//   the number of sessions in that step. A new session drafting as many with the MTP module that has measured
//   nothing, joining a batch at least as large (where a draft row costs at least as large a share of the step),
//   starts from it: stood down, no MTP state. It serves kHandOvers sessions, then is dropped (with the
//   measurements below), so that the next one measures again; a fresh stand-down renews it.
// - Measurements without a verdict: a session that leaves the engine having measured but not stood down leaves its
//   policy too (the last such one is kept); while there is no stand-down, a new session as above starts from those
//   measurements, as a fork does from its parent's, and goes on measuring where the other stopped.
class SpeculationRecord {
 public:
  static constexpr int64_t kHandOvers = 15;
  // policy: stood down (the caller checks), measured by a session drafting up to max_drafts in a step of `batch`
  // sessions. Replaces a record of another draft count or of a larger batch; renews one of the same or a smaller.
  void record_stand_down(const SpeculationPolicy& policy, int64_t max_drafts, int64_t batch);
  // policy: measured, not stood down, of a session leaving a batch of `batch` sessions.
  void record_leaving(const SpeculationPolicy& policy, int64_t max_drafts, int64_t batch);
  // The policy a new session drafting up to max_drafts, joining a batch of `batch` sessions (itself included),
  // starts from: a stand-down, else measurements without a verdict; nullptr where there is neither for it.
  const SpeculationPolicy* hand_over(int64_t max_drafts, int64_t batch);

 private:
  struct Entry {
    SpeculationPolicy policy;
    int64_t max_drafts, batch;
    bool applies(int64_t k, int64_t b) const { return k == max_drafts && b >= batch; }
  };
  std::optional<Entry> stand_down_, measured_;
  int64_t handed_ = 0;  // stand-downs handed over since the last was recorded
};

// What an Engine keeps for its sessions' adaptive speculation.
struct EngineSpeculation {
  StepCostFit cost;
  SpeculationRecord record;
};

}  // namespace dsinfer
