// Samplers on small hand-checkable distributions (the expected sets are worked out in the comments), the chain's
// contract, and a statistical test of the seeded random sampler.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <numeric>
#include <random>

#include "dsinfer/sampler.hpp"
#include "util/softmax.hpp"

using namespace dsinfer;

namespace {
// logits = ln(p) for p = {0.4, 0.3, 0.2, 0.1}: softmax gives back exactly those probabilities.
const std::vector<float> kLogits = {std::log(0.4f), std::log(0.3f), std::log(0.2f), std::log(0.1f)};

Candidates make(const std::vector<float>& logits) {
  Candidates c;
  for (size_t i = 0; i < logits.size(); ++i) {
    c.ids.push_back(int32_t(i));
    c.logits.push_back(logits[i]);
  }
  return c;
}

std::vector<int32_t> kept(const std::unique_ptr<Sampler>& s, const std::vector<float>& logits) {
  Candidates c = make(logits);
  s->apply(c);
  std::vector<int32_t> ids = c.ids;
  std::sort(ids.begin(), ids.end());
  return ids;
}
}  // namespace

TEST_CASE("truncating samplers keep the right sets", "[sampling]") {
  using V = std::vector<int32_t>;
  CHECK(kept(make_top_k_sampler(2), kLogits) == V{0, 1});
  CHECK(kept(make_top_k_sampler(0), kLogits) == V{0, 1, 2, 3});
  // top-p: cumulative 0.4, 0.7, 0.9, 1.0 -> p=0.5 keeps 2, p=0.7 keeps 2 (0.7 >= 0.7), p=0.75 keeps 3.
  CHECK(kept(make_top_p_sampler(0.5f), kLogits) == V{0, 1});
  CHECK(kept(make_top_p_sampler(0.75f), kLogits) == V{0, 1, 2});
  CHECK(kept(make_top_p_sampler(1.0f), kLogits) == V{0, 1, 2, 3});
  CHECK(kept(make_top_p_sampler(0.1f, 3), kLogits) == V{0, 1, 2});  // min_keep
  // min-p 0.5: keep p >= 0.2 -> {0.4, 0.3, 0.2}; min-p 0.8: keep p >= 0.32 -> {0.4}.
  CHECK(kept(make_min_p_sampler(0.5f), kLogits) == V{0, 1, 2});
  CHECK(kept(make_min_p_sampler(0.8f), kLogits) == V{0});
  // typical: entropy H = 1.2799; |-ln p - H| = 0.364, 0.084, 0.330, 1.023 -> order 1, 2, 0, 3;
  // mass 0.3, 0.5, 0.9 -> p=0.45 keeps {1, 2}.
  CHECK(kept(make_typical_sampler(0.45f), kLogits) == V{1, 2});
  // temperature 0 keeps only the best.
  CHECK(kept(make_temperature_sampler(0.0f), kLogits) == V{0});
}

TEST_CASE("truncating samplers on a large vocabulary keep what a sort of all of it keeps, in its order",
          "[sampling]") {
  // top_k, top_p, min_p and temperature 0 put only the candidates they keep in order (a selection, then a sort of
  // those); the reference here sorts everything (sort_by_logit, the order's definition: higher logit first, ties by
  // lower id) and cuts. Logits with many ties (rounded to 1/8) and -inf (masked ids), shuffled ids, cuts from the
  // first candidate to past the first block of 64 and into the thousands.
  std::mt19937_64 rng(5);
  std::normal_distribution<float> normal(0.0f, 2.0f);
  for (const bool peaked : {false, true}) {
    Candidates c;
    for (int32_t i = 0; i < 20000; ++i) {
      c.ids.push_back(int32_t((i * 7919) % 20000));
      float l = std::round(normal(rng) * 8.0f) / 8.0f;
      if (i % 97 == 0) l = -INFINITY;
      c.logits.push_back(l);
    }
    if (peaked)
      for (int k = 0; k < 40; ++k) c.logits[size_t(rng() % c.size())] += 9.0f;
    auto reference = [&](float cut_p, size_t min_keep) {  // top-p after a full sort
      Candidates r = c;
      r.sort_by_logit();
      r.softmax();
      double cum = 0;
      size_t n = r.size();
      for (size_t i = 0; i < r.size(); ++i)
        if ((cum += r.probs[i]) >= cut_p && i + 1 >= min_keep) {
          n = i + 1;
          break;
        }
      r.resize(n);
      return r;
    };
    auto same = [](const Candidates& a, const Candidates& b) {
      CHECK(a.ids == b.ids);
      CHECK(a.logits == b.logits);
      CHECK(a.sorted);
    };
    for (const int64_t k : {1, 2, 63, 64, 65, 320, 1000, 19999}) {
      Candidates a = c, r = c;
      make_top_k_sampler(k)->apply(a);
      r.sort_by_logit();
      r.resize(size_t(k));
      same(a, r);
    }
    for (const float p : {1e-6f, 0.3f, 0.9f, 0.95f, 0.999f}) {
      for (const size_t min_keep : {size_t(1), size_t(100)}) {
        Candidates a = c;
        make_top_p_sampler(p, min_keep)->apply(a);
        const Candidates r = reference(p, min_keep);
        // The normalizer is summed in the candidates' order (here: unsorted), the reference's in sorted order:
        // the same cut unless a partial sum falls within rounding of p, which these inputs do not.
        same(a, r);
      }
    }
    for (const float p : {0.01f, 0.5f, 1.0f}) {
      Candidates a = c, r = c;
      make_min_p_sampler(p, 3)->apply(a);
      r.sort_by_logit();
      size_t n = 0;
      while (n < r.size() && (r.logits[n] >= r.logits[0] + std::log(p) || n < 3)) ++n;
      r.resize(n);
      same(a, r);
    }
    Candidates a = c, r = c;
    make_temperature_sampler(0.0f)->apply(a);
    r.sort_by_logit();
    size_t n = 1;
    while (n < r.size() && r.logits[n] == r.logits[0]) ++n;
    r.resize(n);
    same(a, r);
    CHECK(a.size() >= 1);
  }
}

TEST_CASE("temperature, penalties and logit bias change logits as defined", "[sampling]") {
  Candidates c = make({2.0f, -1.0f, 0.5f});
  make_temperature_sampler(2.0f)->apply(c);
  CHECK(c.logits == std::vector<float>{1.0f, -0.5f, 0.25f});

  auto pen = make_penalties_sampler(-1, 2.0f, 0.5f, 0.25f);
  pen->accept(0);
  pen->accept(0);
  pen->accept(1);
  c = make({2.0f, -1.0f, 0.5f});
  pen->apply(c);
  // token 0 seen twice: 2/2 - 2·0.5 - 0.25 = -0.25; token 1 seen once: -1·2 - 0.5 - 0.25 = -2.75; token 2 unchanged.
  CHECK(c.logits[0] == Approx(-0.25f));
  CHECK(c.logits[1] == Approx(-2.75f));
  CHECK(c.logits[2] == 0.5f);
  pen->reset();
  c = make({2.0f, -1.0f, 0.5f});
  pen->apply(c);
  CHECK(c.logits[0] == 2.0f);  // history cleared, parameters kept

  auto window = make_penalties_sampler(1, 1.0f, 1.0f, 0.0f);  // only the last accepted token counts
  window->accept(0);
  window->accept(2);
  c = make({2.0f, -1.0f, 0.5f});
  window->apply(c);
  CHECK(c.logits[0] == 2.0f);
  CHECK(c.logits[2] == Approx(-0.5f));

  c = make({2.0f, -1.0f, 0.5f});
  make_logit_bias_sampler({{1, 10.0f}})->apply(c);
  CHECK(c.logits[1] == 9.0f);
}

TEST_CASE("top_k keeps what a sort by key keeps, NaN included, at every tail length", "[sampling]") {
  // The heap pass skips groups of 8 logits below its worst kept one; a NaN compares below nothing and must still be
  // ordered by its key, as sort_by_logit orders it.
  std::mt19937 rng(3);
  const float nan = std::numeric_limits<float>::quiet_NaN();
  for (int trial = 0; trial < 400; ++trial) {
    const size_t size = 16 + size_t(rng() % 600);
    Candidates c;
    c.ids.resize(size);
    std::iota(c.ids.begin(), c.ids.end(), 0);
    std::shuffle(c.ids.begin(), c.ids.end(), rng);
    for (size_t i = 0; i < size; ++i) {
      const uint32_t r = rng() % 50;  // few distinct values (ties), a NaN of either sign now and then
      c.logits.push_back(r == 0 ? nan : r == 1 ? -nan : float(int(rng() % 9) - 4) * 0.5f);
    }
    const size_t k = 1 + size_t(rng() % (size / 16));
    Candidates a = c, r = c;
    make_top_k_sampler(int64_t(k))->apply(a);
    r.sort_by_logit();
    r.resize(k);
    INFO("size " << size << ", k " << k);
    REQUIRE(a.ids == r.ids);
  }
}

// Greedy's rule, one candidate after another: the highest logit, ties to the lowest id; a NaN never wins unless it
// is the first candidate (nothing compares above it).
static int64_t greedy_reference(const Candidates& c) {
  int64_t best = 0;
  for (size_t i = 1; i < c.size(); ++i)
    if (c.logits[i] > c.logits[size_t(best)] ||
        (c.logits[i] == c.logits[size_t(best)] && c.ids[i] < c.ids[size_t(best)]))
      best = int64_t(i);
  return best;
}

TEST_CASE("greedy picks as one compare after another would, in order or shuffled, with ties, NaN and -inf",
          "[sampling]") {
  std::mt19937 rng(11);
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  for (int trial = 0; trial < 3000; ++trial) {
    const size_t n = 1 + size_t(rng() % (trial < 2000 ? 40 : 3000));  // every tail length of the 8 lanes
    std::vector<float> logits(n);
    for (auto& l : logits) {
      const uint32_t r = rng() % 100;
      // Few distinct values, so that ties are common; the top one sometimes NaN, -inf or -0.
      l = r < 3 ? nan : r < 6 ? -inf : r < 8 ? -0.0f : float(int(rng() % 7) - 3);
    }
    if (trial % 7 == 0) logits[0] = nan;
    SamplerChain greedy;
    greedy.add(make_greedy_sampler());
    const Candidates in_order = make(logits);
    INFO("n " << n << ", trial " << trial);
    REQUIRE(greedy.sample(logits, int64_t(n)) == in_order.ids[size_t(greedy_reference(in_order))]);
    Candidates shuffled = make(logits);  // as a sampler before it may leave them: ids out of order
    std::vector<size_t> perm(n);
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), rng);
    for (size_t i = 0; i < n; ++i) {
      shuffled.ids[i] = int32_t(perm[i]);
      shuffled.logits[i] = logits[perm[i]];
    }
    const int64_t want = greedy_reference(shuffled);
    make_greedy_sampler()->apply(shuffled);
    REQUIRE(shuffled.selected == want);
  }
}

TEST_CASE("chains select; greedy picks the argmax; ids beyond the usable vocabulary are never chosen", "[sampling]") {
  SamplerChain greedy;
  greedy.add(make_greedy_sampler());
  const std::vector<float> logits = {0.1f, 3.0f, 0.2f, 9.0f};  // id 3 is "padding" beyond the tokenizer
  CHECK(greedy.sample(logits, 4) == 3);
  CHECK(greedy.sample(logits, 3) == 1);
  SamplerChain sampled;
  sampled.add(make_top_k_sampler(2)).add(make_dist_sampler(7));
  for (int i = 0; i < 200; ++i) {
    const int32_t t = sampled.sample(logits, 3);
    REQUIRE((t == 1 || t == 2));  // top-2 of the first three ids
  }
  SamplerChain no_selector;
  no_selector.add(make_top_k_sampler(2));
  try {
    no_selector.sample(logits, 4);
    FAIL("no error");
  } catch (const Error& e) {
    CHECK(e.code() == ErrorCode::InvalidArgument);
    CHECK_THAT(e.what(), Catch::Contains("not a selector"));
  }
  SamplerChain empty;
  CHECK_THROWS_AS(empty.sample(logits, 4), Error);
}

TEST_CASE("each sample() starts from fresh candidates, though the chain keeps their arrays", "[sampling]") {
  // The first sampler of the chain sees what a new Candidates would hold: every usable id in order, no probs, not
  // sorted, nothing selected — after calls whose top_p sorted, softmaxed, shrank and selected.
  struct Check : Sampler {
    int64_t expect_n = 0;
    int calls = 0;
    std::string name() const override { return "check"; }
    void apply(Candidates& c) override {
      ++calls;
      REQUIRE(int64_t(c.size()) == expect_n);
      for (size_t i = 0; i < c.size(); ++i) REQUIRE(c.ids[i] == int32_t(i));
      CHECK_FALSE(c.sorted);
      CHECK_FALSE(c.has_probs);
      CHECK(c.probs.empty());
      CHECK(c.selected == -1);
    }
    std::unique_ptr<Sampler> clone() const override { return std::make_unique<Check>(*this); }
  };
  auto check = std::make_unique<Check>();
  Check* seen = check.get();
  SamplerChain chain;
  chain.add(std::move(check)).add(make_top_p_sampler(0.9f)).add(make_dist_sampler(3));
  std::mt19937 rng(5);
  std::normal_distribution<float> normal;
  for (int64_t n : {64, 7, 64, 1, 30}) {
    std::vector<float> logits(80);
    for (auto& x : logits) x = normal(rng);
    seen->expect_n = n;
    const int32_t t = chain.sample(logits, n);
    CHECK((t >= 0 && t < n));
  }
  CHECK(seen->calls == 5);
  // And the tokens are a fresh chain's: top_k + greedy (no RNG) against a new chain per call.
  SamplerChain kept;
  kept.add(make_top_k_sampler(3)).add(make_greedy_sampler());
  for (int64_t n : {50, 5, 50, 2}) {
    std::vector<float> logits(50);
    for (auto& x : logits) x = normal(rng);
    SamplerChain fresh;
    fresh.add(make_top_k_sampler(3)).add(make_greedy_sampler());
    CHECK(kept.sample(logits, n) == fresh.sample(logits, n));
  }
}

TEST_CASE("the same seed gives the same tokens; clone copies the RNG state", "[sampling]") {
  const std::vector<float> logits(50, 0.0f);
  auto run = [&](SamplerChain& c) {
    std::vector<int32_t> out;
    for (int i = 0; i < 100; ++i) out.push_back(c.sample(logits, 50));
    return out;
  };
  SamplerChain a, b;
  a.add(make_dist_sampler(42));
  b.add(make_dist_sampler(42));
  const auto ra = run(a);
  CHECK(ra == run(b));
  auto cl = a.clone();
  CHECK(run(a) == run(static_cast<SamplerChain&>(*cl)));
  SamplerChain c;
  c.add(make_dist_sampler(43));
  CHECK(run(c) != ra);
  a.reset();
  CHECK(run(a) == ra);  // reset rewinds the RNG to its seed
}

TEST_CASE("the seeded random sampler's frequencies match the probabilities (chi-square)", "[sampling][stats]") {
  SamplerChain chain;
  chain.add(make_dist_sampler(2026));
  const int n = 200000;
  std::vector<int> count(4, 0);
  for (int i = 0; i < n; ++i) count[size_t(chain.sample(kLogits, 4))]++;
  const double p[4] = {0.4, 0.3, 0.2, 0.1};
  double chi2 = 0;
  for (int k = 0; k < 4; ++k) chi2 += std::pow(count[size_t(k)] - n * p[k], 2) / (n * p[k]);
  // 3 degrees of freedom: P(chi2 > 16.27) = 0.001. A correct sampler fails this one time in a thousand seeds; the
  // seed is fixed, so the test is deterministic.
  INFO("chi2 = " << chi2 << ", counts " << count[0] << " " << count[1] << " " << count[2] << " " << count[3]);
  CHECK(chi2 < 16.27);
}

TEST_CASE("top_p follows the logit order where rounding gives a higher logit a lower probability", "[sampling]") {
  // The softmax's exponential is within an ulp of exp but not monotone. Two adjacent logits xb < xa with
  // exp(xa) < exp(xb), and a fourth logit f that makes b's probability exactly 0.25 and a's just below: top_p 0.5
  // keeps the maximum and a (probabilities 0.32 + 0.25 in logit order), as a full sort does, not the maximum and b.
  float xa = 0.0f, xb = 0.0f;
  for (float x = -0.25f; x < 0.0f && xa == 0.0f; x = std::nextafter(x, 0.0f))
    if (softmax_exp(x) < softmax_exp(std::nextafter(x, -1.0f))) {
      xa = x;
      xb = std::nextafter(x, -1.0f);
    }
  REQUIRE(xa != 0.0f);
  std::vector<float> logits;
  for (float f = -0.7f; f < -0.45f && logits.empty(); f = std::nextafter(f, 0.0f)) {
    Candidates c = make({0.0f, xa, xb, f});
    c.softmax();
    if (c.probs[2] == 0.25f && c.probs[1] < 0.25f) logits = c.logits;
  }
  REQUIRE(!logits.empty());
  CHECK(kept(make_top_p_sampler(0.5f), logits) == std::vector<int32_t>{0, 1});
}

TEST_CASE("the random sampler never picks a candidate of probability 0, even when the sum falls short", "[sampling]") {
  // Probabilities a sampler before it left summing to 0.5 (rounding leaves a real sum a hair below 1): a draw above
  // the sum must fall back on the last candidate that has a probability, never on the excluded one after it.
  struct HalfMass : Sampler {
    std::string name() const override { return "half_mass"; }
    void apply(Candidates& c) override {
      c.probs = {0.25f, 0.25f, 0.0f};
      c.has_probs = true;
    }
    std::unique_ptr<Sampler> clone() const override { return std::make_unique<HalfMass>(); }
  };
  std::vector<int> count(3, 0);
  SamplerChain chain;
  chain.add(std::make_unique<HalfMass>()).add(make_dist_sampler(9));
  for (int i = 0; i < 400; ++i) count[size_t(chain.sample(std::vector<float>(3, 0.0f), 3))]++;
  CHECK(count[2] == 0);
  CHECK(count[1] > 250);  // draws in [0.25, 1): about 3 in 4
  // Every logit -inf: nothing can be sampled, and the error says so.
  SamplerChain dist;
  dist.add(make_dist_sampler(1));
  const float inf = std::numeric_limits<float>::infinity();
  CHECK_THROWS_WITH(dist.sample(std::vector<float>{-inf, -inf}, 2),
                    Catch::Contains("no candidate has a probability above 0"));
}

TEST_CASE("a user sampler can force a token or fail with a clear error", "[sampling]") {
  struct Force : Sampler {
    int32_t id;
    explicit Force(int32_t i) : id(i) {}
    std::string name() const override { return "force"; }
    void apply(Candidates& c) override {
      for (size_t i = 0; i < c.size(); ++i)
        if (c.ids[i] == id) c.selected = int64_t(i);
    }
    std::unique_ptr<Sampler> clone() const override { return std::make_unique<Force>(id); }
  };
  struct Fails : Sampler {
    std::string name() const override { return "my_sampler"; }
    void apply(Candidates&) override { throw std::runtime_error("out of ideas"); }
    std::unique_ptr<Sampler> clone() const override { return std::make_unique<Fails>(); }
  };
  SamplerChain force;
  force.add(std::make_unique<Force>(2));
  CHECK(force.sample(kLogits, 4) == 2);
  SamplerChain fails;
  fails.add(std::make_unique<Fails>()).add(make_greedy_sampler());
  try {
    fails.sample(kLogits, 4);
    FAIL("no error");
  } catch (const Error& e) {
    CHECK(e.code() == ErrorCode::InvalidArgument);
    CHECK_THAT(e.what(), Catch::Contains("sampler \"my_sampler\" failed: out of ideas"));
  }
  CHECK(fails.size() == 2);  // the chain is still usable
}

TEST_CASE("parameter ranges are checked", "[sampling][errors]") {
  CHECK_THROWS_AS(make_temperature_sampler(-1.0f), Error);
  CHECK_THROWS_AS(make_top_p_sampler(0.0f), Error);
  CHECK_THROWS_AS(make_top_p_sampler(1.5f), Error);
  CHECK_THROWS_AS(make_min_p_sampler(-0.1f), Error);
  CHECK_THROWS_AS(make_typical_sampler(0.0f), Error);
  CHECK_THROWS_AS(make_penalties_sampler(64, 0.5f, 0.0f, 0.0f), Error);
  CHECK_THROWS_AS(make_penalties_sampler(64, 1.1f, 3.0f, 0.0f), Error);
  CHECK_THROWS_AS(make_penalties_sampler(64, 1.1f, 0.0f, -2.5f), Error);
  CHECK_THROWS_AS(make_logit_bias_sampler({{-1, 1.0f}}), Error);
}

TEST_CASE("generation_config.json gives DeepSeek's defaults", "[sampling]") {
  const auto dir = std::filesystem::temp_directory_path() / "dsinfer-genconf";
  std::filesystem::create_directories(dir);
  std::ofstream(dir / "generation_config.json") << R"({"do_sample": true, "temperature": 1.0, "top_p": 0.95})";
  const GenerationConfig g = load_generation_config(dir.string());
  CHECK(g.do_sample);
  CHECK(g.temperature == 1.0f);
  CHECK(g.top_p == 0.95f);
  auto chain = make_default_chain(g, 1);
  CHECK(chain->size() == 3);  // temperature, top_p, dist
  std::ofstream(dir / "generation_config.json") << "{ broken";
  CHECK_THROWS_AS(load_generation_config(dir.string()), Error);
  std::filesystem::remove_all(dir);
  CHECK(load_generation_config(dir.string()).top_p == 1.0f);  // absent file: defaults
}
