// The indexer's top-k selection (lib/backend/cpu/topk_select.hpp) against a stable sort by the rule it implements:
// higher scores first, equal scores by earlier position, −0 equal to +0, a NaN above everything when its sign bit is
// clear and below everything when set.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <utility>
#include <vector>

#include "backend/cpu/topk_select.hpp"

using namespace dsinfer;

namespace {

// Where a score stands in the rule's order: NaNs beyond the infinities by their sign, then the value.
std::pair<int, float> standing(float x) {
  if (std::isnan(x)) return {std::signbit(x) ? -1 : 1, 0.0f};
  return {0, x + 0.0f};
}

// The positions of the min(k, s1 - s0) highest scores of [s0, s1), ascending.
std::vector<int32_t> reference_top(const std::vector<float>& scores, int64_t s0, int64_t s1, int64_t k) {
  std::vector<int32_t> order(size_t(s1 - s0));
  std::iota(order.begin(), order.end(), int32_t(s0));
  std::stable_sort(order.begin(), order.end(),
                   [&](int32_t i, int32_t j) { return standing(scores[size_t(i)]) > standing(scores[size_t(j)]); });
  order.resize(size_t(std::min(k, s1 - s0)));
  std::sort(order.begin(), order.end());
  return order;
}

std::vector<int32_t> selected(const std::vector<float>& scores, int64_t s0, int64_t s1, int64_t k) {
  std::vector<uint64_t> ranked(scores.size());
  const int64_t m = select_top_keys(scores.data(), s0, s1, k, ranked.data());
  std::vector<int32_t> got;
  for (int64_t i = 0; i < m; ++i) got.push_back(topk_entry_position(ranked[size_t(s0 + i)]));
  std::sort(got.begin(), got.end());
  return got;
}

}  // namespace

TEST_CASE("top-k selection: the exact set over few and many keys, whole ranges and parts", "[cpu][indexer][topk]") {
  std::mt19937 gen(5);
  std::normal_distribution<float> normal;
  for (const int64_t n : {int64_t(10), int64_t(3000), int64_t(5000), int64_t(40000), int64_t(70000)}) {
    std::vector<float> scores(size_t(n) + 100);
    for (auto& x : scores) x = normal(gen);
    for (const int64_t k : {int64_t(1), int64_t(64), int64_t(256), int64_t(2048), int64_t(9000)})
      for (const int64_t s0 : {int64_t(0), int64_t(37)}) {
        INFO("n " << n << " k " << k << " s0 " << s0);
        CHECK(selected(scores, s0, s0 + n, k) == reference_top(scores, s0, s0 + n, k));
      }
  }
}

TEST_CASE("top-k selection: a sample that misses the high scores still gives the exact set", "[cpu][indexer][topk]") {
  // The high scores sit exactly at the sampled positions (every n / kTopkSamples-th): the sampled threshold then
  // lets through fewer keys than k, and the selection must not stop there.
  const int64_t spacing = 64, n = kTopkSamples * spacing;
  std::mt19937 gen(6);
  std::uniform_real_distribution<float> low(-1.0f, 0.0f), high(1.0f, 2.0f);
  std::vector<float> scores(static_cast<size_t>(n));
  for (int64_t s = 0; s < n; ++s) scores[size_t(s)] = s % spacing == 0 ? high(gen) : low(gen);
  for (const int64_t k : {int64_t(100), int64_t(600), int64_t(1000), int64_t(4000)}) {
    INFO("k " << k);
    CHECK(selected(scores, 0, n, k) == reference_top(scores, 0, n, k));
  }
}

TEST_CASE("top-k selection: ties by earlier position, signed zeros equal, NaNs at the ends", "[cpu][indexer][topk]") {
  const int64_t n = 20000;
  // All equal: the first k.
  std::vector<float> equal(static_cast<size_t>(n), 0.5f);
  std::vector<int32_t> first(256);
  std::iota(first.begin(), first.end(), 0);
  CHECK(selected(equal, 0, n, 256) == first);
  // A few values only, −0 and +0 among them, some NaNs of either sign and infinities.
  std::mt19937 gen(7);
  const float values[] = {-0.0f, 0.0f, 1.0f, -1.0f, 0.25f};
  std::vector<float> scores(static_cast<size_t>(n));
  for (auto& x : scores) x = values[gen() % 5];
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  scores[123] = nan;
  scores[9000] = -nan;
  scores[15000] = inf;
  scores[77] = -inf;
  for (const int64_t k : {int64_t(1), int64_t(2), int64_t(300), int64_t(2500), int64_t(12000), int64_t(n)}) {
    INFO("k " << k);
    const auto got = selected(scores, 0, n, k);
    CHECK(got == reference_top(scores, 0, n, k));
    if (k == 2) CHECK(got == std::vector<int32_t>{123, 15000});
  }
  const auto all_but_one = selected(scores, 0, n, n - 1);
  CHECK(all_but_one == reference_top(scores, 0, n, n - 1));
  CHECK(std::find(all_but_one.begin(), all_but_one.end(), 9000) == all_but_one.end());  // the negative NaN is last
}
