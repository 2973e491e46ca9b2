// Adaptive speculation's policy on synthetic timings: it drafts where drafting pays, backs off and probes where the
// drafts are poor, and stands down for good only where even every draft accepted would gain under 10 %.
#include <catch2/catch.hpp>

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

}  // namespace

TEST_CASE("speculation stands down when two rows cost two steps or more, even with every draft accepted",
          "[speculative]") {
  // A compute-bound model: verifying 1 draft costs 2.2 plain steps, so even k = 1 at full acceptance gives 2 tokens
  // for 2.2 steps.
  SpeculationPolicy policy(/*max_drafts=*/1, /*draft_cost=*/0.5);
  const Run r = drive(policy, 2000, 1, 1.0, [](int64_t) { return 2.2; }, /*accept=*/true);
  CHECK(policy.stood_down());
  // The probes that decided it (the first is left out as a warm-up, then kStandDownSamples), nothing more.
  CHECK(r.verifications == 1 + SpeculationPolicy::kStandDownSamples);
  CHECK(r.plain == 2000 - r.verifications);
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

TEST_CASE("in an Engine (untimed) the policy never stands down", "[speculative]") {
  // No session timing: the model of costs decides, and a modelled step never rules drafting out for good.
  SpeculationPolicy policy(1, 3.0);  // drafts modelled as costing 3 steps each: drafting never pays
  const Run r = drive(policy, 1000, 1, 1.0, [](int64_t) { return 0.0; }, false, /*timed=*/false);
  CHECK_FALSE(policy.stood_down());
  CHECK(r.verifications > 5);  // it still probes
}
