// Adaptive speculation's policy on synthetic timings: it drafts where drafting pays, backs off and probes where the
// drafts are poor, and stands down for good only where even every draft accepted would gain under 10 %.
#include <catch2/catch.hpp>

#include <algorithm>
#include <vector>

#include "session/speculation_policy.hpp"

using namespace dsinfer;

namespace {

struct Run {
  int64_t verifications = 0, plain = 0, drafted = 0;
};

// Steps a session would take: a plain step costs plain_s, a verification of k drafts verify_s(k); every draft is
// accepted when `accept`, none otherwise.
template <class VerifySeconds>
Run drive(SpeculationPolicy& policy, int64_t steps, int64_t limit, double plain_s, VerifySeconds verify_s, bool accept,
          bool timed = true) {
  Run r;
  for (int64_t i = 0; i < steps; ++i) {
    const int64_t k = policy.draft_count(limit, timed);
    REQUIRE(k >= 0);
    REQUIRE(k <= limit);
    if (k == 0) {
      if (timed) policy.plain_step(plain_s);
      r.plain += 1;
      continue;
    }
    if (timed) policy.verify_step(k, verify_s(k));
    for (int64_t d = 0; d < k; ++d) policy.checked(accept);
    r.verifications += 1;
    r.drafted += k;
  }
  return r;
}

// Steps of an Engine whose sessions each follow their own policy: a forward of R rows takes step_s(R), and each
// session is fed what its rows cost (StepCostFit), as Engine::step does. Session b joins at step b * stagger (so that
// their probes fall on different steps). Every draft is accepted. Returns the tokens per second of the run.
template <class StepSeconds>
double drive_batch(std::vector<SpeculationPolicy>& policies, int64_t steps, int64_t limit, int64_t stagger,
                   StepSeconds step_s) {
  StepCostFit fit;
  double seconds = 0;
  int64_t tokens = 0;
  std::vector<int64_t> k(policies.size());
  for (int64_t i = 0; i < steps; ++i) {
    const size_t in_batch = std::min(policies.size(), size_t(i / stagger + 1));
    int64_t rows = 0;
    for (size_t b = 0; b < in_batch; ++b) {
      k[b] = policies[b].draft_count(limit, /*timed=*/true);
      rows += 1 + k[b];
    }
    const double t = step_s(rows);
    fit.add(rows, t);
    for (size_t b = 0; b < in_batch; ++b) {
      if (k[b] == 0) {
        policies[b].plain_step(fit.plain_seconds(rows, t));
        continue;
      }
      const double cost = fit.verify_seconds(rows, t, k[b], /*drafting_seconds=*/0.0);
      if (cost > 0) policies[b].verify_step(k[b], cost);
      for (int64_t d = 0; d < k[b]; ++d) policies[b].checked(true);
    }
    seconds += t;
    tokens += rows;
  }
  return double(tokens) / seconds;
}

}  // namespace

TEST_CASE("speculation stands down when two rows cost two steps or more, even with every draft accepted",
          "[speculative]") {
  // A compute-bound model: verifying 1 draft costs 2.2 plain steps, so even k = 1 at full acceptance gives 2 tokens
  // for 2.2 steps.
  SpeculationPolicy policy(/*max_drafts=*/1, /*draft_cost=*/0.5);
  // The probes that decide it come every 16 steps (not after 16, 32 and 64): stood down within 50 steps.
  const Run first = drive(policy, 50, 1, 1.0, [](int64_t) { return 2.2; }, /*accept=*/true);
  CHECK(policy.stood_down());
  const Run r = drive(policy, 1950, 1, 1.0, [](int64_t) { return 2.2; }, /*accept=*/true);
  // The probes that decided it (the first is left out as a warm-up, then kStandDownSamples), nothing more.
  CHECK(first.verifications == 1 + SpeculationPolicy::kStandDownSamples);
  CHECK(r.verifications == 0);
}

TEST_CASE("a slow first verification does not end speculation where it pays", "[speculative]") {
  // The first run of a two-row step pays page faults and scratch growth: 5 steps here, then 1.5.
  SpeculationPolicy policy(1, 0.1);
  int64_t calls = 0;
  const Run r = drive(policy, 2000, 1, 1.0, [&](int64_t) { return calls++ == 0 ? 5.0 : 1.5; }, true);
  CHECK_FALSE(policy.stood_down());
  CHECK(r.verifications > 1500);
}

TEST_CASE("speculation stands down where full acceptance would gain under 10 %", "[speculative]") {
  // 2 rows cost 1.85 steps: 2 / 1.85 = 1.08 tokens per step at best.
  SpeculationPolicy policy(1, 0.1);
  drive(policy, 500, 1, 1.0, [](int64_t) { return 1.85; }, true);
  CHECK(policy.stood_down());
  SpeculationPolicy cheaper(1, 0.1);  // 1.75: 1.14 at best, worth keeping
  drive(cheaper, 500, 1, 1.0, [](int64_t) { return 1.75; }, true);
  CHECK_FALSE(cheaper.stood_down());
}

TEST_CASE("speculation keeps drafting where verification is cheap and drafts are good", "[speculative]") {
  // Bandwidth bound: 2 rows cost 1.6 steps; every draft accepted.
  SpeculationPolicy policy(1, 0.1);
  const Run r = drive(policy, 2000, 1, 1.0, [](int64_t) { return 1.6; }, true);
  CHECK_FALSE(policy.stood_down());
  CHECK(r.verifications > 1900);  // a plain step every 32 keeps the plain cost current
}

TEST_CASE("poor drafts back off and keep probing where drafting could still pay", "[speculative]") {
  // The same cheap verification, no draft ever accepted: no k pays, yet one would with good drafts, so the policy
  // probes (after 16, 32, 64, then every 128 plain steps) instead of standing down.
  SpeculationPolicy policy(2, 0.1);
  const Run r = drive(policy, 2000, 2, 1.0, [](int64_t k) { return 1.0 + 0.6 * double(k); }, false);
  CHECK_FALSE(policy.stood_down());
  CHECK(r.verifications >= 10);
  CHECK(r.verifications <= 25);
  CHECK(policy.acceptance() < 0.2);
}

TEST_CASE("standing down weighs every k up to the most drafts allowed", "[speculative]") {
  // One draft costs 2.05 steps: k = 1 cannot pay. Scaled by that measurement the model gives k = 4 about 4.4 steps
  // for 5 tokens (1.14 a step at best): a policy allowed 4 drafts keeps going, one allowed 1 stands down.
  const auto verify = [](int64_t k) { return k == 1 ? 2.05 : 1.0 + 0.6 * double(k); };
  SpeculationPolicy up_to_4(4, 0.05);
  SpeculationPolicy only_1(1, 0.05);
  // Both probe with one draft only (poor drafts), so k = 1 is all they measure.
  drive(up_to_4, 500, 4, 1.0, verify, false);
  drive(only_1, 500, 1, 1.0, verify, false);
  CHECK_FALSE(up_to_4.stood_down());
  CHECK(only_1.stood_down());
}

TEST_CASE("in an Engine, sessions stand down where the batch's rows cost what they yield", "[speculative]") {
  // 16 sessions on a compute-bound model: a step's time grows with its rows (0.2 + 1 per row), so drafts add
  // tokens only as fast as plain rows would, and every session stands down. (One session's probe among 16 makes the
  // step only 6 % slower: judged by the step's time, drafting would look nearly free.)
  std::vector<SpeculationPolicy> compute_bound(16, SpeculationPolicy(1, 0.1));
  drive_batch(compute_bound, 1000, 1, /*stagger=*/3, [](int64_t rows) { return 0.2 + double(rows); });
  for (const SpeculationPolicy& p : compute_bound) CHECK(p.stood_down());
  // 16 sessions on a bandwidth-bound model (40 + 1 per row: reading the weights dominates): a session's drafts
  // cost the step little, so drafting goes on — though one session's drafts add at most 1/16 to the batch's tokens
  // (a share of the step by rows would count only that, and stand down).
  const auto bandwidth = [](int64_t rows) { return 40.0 + double(rows); };
  std::vector<SpeculationPolicy> drafting(16, SpeculationPolicy(1, 0.1));
  const double speculative = drive_batch(drafting, 1000, 1, /*stagger=*/3, bandwidth);
  for (const SpeculationPolicy& p : drafting) CHECK_FALSE(p.stood_down());
  // 32 tokens in 72 against 16 in 56 without drafts: 1.56x, less the plain steps that keep the plain cost timed and
  // the staggered start.
  CHECK(speculative > 1.4 * 16.0 / bandwidth(16));
}

TEST_CASE("untimed steps decide on the costs timed before", "[speculative]") {
  // Timed: one draft costs 1.8 steps, and 3 of 4 drafts are accepted: 1.76 tokens for 1.8 steps does not pay. The
  // untimed model (1 + 0.57 + 0.1 = 1.67 steps) would say it does; an Engine's step with a prompt is untimed.
  SpeculationPolicy policy(1, 0.1);
  for (int i = 0; i < 3; ++i) policy.plain_step(1.0);
  for (int i = 0; i < 8; ++i) {
    policy.verify_step(1, 1.8);
    policy.checked(i % 4 != 3);
  }
  REQUIRE(policy.acceptance() > 1.67 - 1.0);
  REQUIRE(policy.acceptance() < 1.8 - 1.0);
  REQUIRE_FALSE(policy.stood_down());
  for (int i = 0; i < 10; ++i) CHECK(policy.draft_count(1, /*timed=*/false) == 0);
}

TEST_CASE("a policy never timed (an Engine's steps with prompts) never stands down", "[speculative]") {
  // No timing: the model of costs decides, and a modelled step never rules drafting out for good.
  SpeculationPolicy policy(1, 3.0);  // drafts modelled as costing 3 steps each: drafting never pays
  const Run r = drive(policy, 1000, 1, 1.0, [](int64_t) { return 0.0; }, false, /*timed=*/false);
  CHECK_FALSE(policy.stood_down());
  CHECK(r.verifications > 5);  // it still probes
}

TEST_CASE("an engine hands a measured stand-down to sessions that join later, for a while", "[speculative]") {
  SpeculationPolicy fresh(2, 0.5);
  CHECK_FALSE(fresh.measured());
  SpeculationPolicy down(2, 0.5);
  drive(down, 50, 2, 1.0, [](int64_t k) { return 1.1 * double(k + 1); }, /*accept=*/true);
  REQUIRE(down.stood_down());
  CHECK(down.measured());

  SpeculationRecord record;
  CHECK(record.hand_over(2, 4) == nullptr);  // nothing measured yet
  record.record_stand_down(down, /*max_drafts=*/2, /*batch=*/4);
  // Only to sessions drafting as many, joining a batch at least as large: a draft row costs a smaller share of a
  // smaller batch's step, where the verdict may not hold.
  CHECK(record.hand_over(1, 4) == nullptr);
  CHECK(record.hand_over(2, 3) == nullptr);
  const SpeculationPolicy* p = record.hand_over(2, 4);
  REQUIRE(p != nullptr);
  CHECK(p->stood_down());
  SpeculationPolicy joined = *p;
  CHECK(joined.draft_count(2, true) == 0);  // it drafts nothing, ever
  // kHandOvers sessions in all, then the next measures for itself and the record is gone.
  for (int64_t i = 1; i < SpeculationRecord::kHandOvers; ++i) CHECK(record.hand_over(2, 16) != nullptr);
  CHECK(record.hand_over(2, 16) == nullptr);
  CHECK(record.hand_over(2, 16) == nullptr);

  // A fresh stand-down renews the record; one at a larger batch keeps the smaller batch's reach.
  record.record_stand_down(down, 2, 4);
  for (int64_t i = 0; i < 10; ++i) CHECK(record.hand_over(2, 4) != nullptr);
  record.record_stand_down(down, 2, 8);
  CHECK(record.hand_over(2, 4) != nullptr);
  for (int64_t i = 1; i < SpeculationRecord::kHandOvers; ++i) CHECK(record.hand_over(2, 8) != nullptr);
  CHECK(record.hand_over(2, 8) == nullptr);
  // One for another draft count replaces it.
  record.record_stand_down(down, 2, 1);
  record.record_stand_down(down, 1, 16);
  CHECK(record.hand_over(2, 16) == nullptr);
  CHECK(record.hand_over(1, 16) != nullptr);
}

TEST_CASE("sessions that leave without a verdict pass their measurements on, so short ones still reach it",
          "[speculative]") {
  // A compute-bound model (verification 2.2 steps): a session alone stands down at step 48 (three probes, the first
  // left out). Replies of 40 tokens never get there on their own: every one pays two probes.
  auto verify = [](int64_t k) { return 1.1 * double(k + 1); };
  SpeculationRecord record;
  int64_t probes = 0;
  for (int reply = 0; reply < 8; ++reply) {
    SpeculationPolicy policy(1, 0.5);
    if (const SpeculationPolicy* p = record.hand_over(1, 1)) policy = *p;
    probes += drive(policy, 40, 1, 1.0, verify, /*accept=*/true).verifications;
    if (policy.stood_down()) record.record_stand_down(policy, 1, 1);
    else record.record_leaving(policy, 1, 1);
  }
  // The first reply probes twice, the second goes on from its measurements and stands down at its first probe;
  // the other six start stood down.
  CHECK(probes == 3);
  const SpeculationPolicy* p = record.hand_over(1, 1);
  REQUIRE(p != nullptr);
  CHECK(p->stood_down());

  // Measurements without a verdict go only to the same draft count and a batch at least as large; a stand-down
  // recorded later replaces them.
  SpeculationRecord other;
  SpeculationPolicy partial(2, 0.5);
  drive(partial, 20, 2, 1.0, verify, true);
  REQUIRE(partial.measured());
  REQUIRE_FALSE(partial.stood_down());
  other.record_leaving(partial, 2, 4);
  CHECK(other.hand_over(1, 4) == nullptr);
  CHECK(other.hand_over(2, 2) == nullptr);
  REQUIRE(other.hand_over(2, 4) != nullptr);
  CHECK_FALSE(other.hand_over(2, 4)->stood_down());
  CHECK(other.hand_over(2, 4)->measured());
}
