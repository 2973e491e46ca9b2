// util/softmax: the exponential against double-precision exp, the AVX2 path bit for bit against the portable
// definition, and the probabilities against a double-precision softmax.
#include <catch2/catch.hpp>

#include <bit>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "util/softmax.hpp"

using namespace dsinfer;

namespace {

// The distance from `got` to the true value in units of the float spacing at the true value.
double ulps(float got, double truth) {
  int e = 0;
  std::frexp(truth, &e);
  const double spacing = std::ldexp(1.0, std::max(e - 24, -149));
  return std::fabs(double(got) - truth) / spacing;
}

std::vector<float> random_logits(size_t n, uint64_t seed, float spread) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, spread);
  std::vector<float> x(n);
  for (auto& v : x) v = normal(rng);
  return x;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (std::bit_cast<uint32_t>(a[i]) != std::bit_cast<uint32_t>(b[i]) && !(std::isnan(a[i]) && std::isnan(b[i])))
      return false;
  return true;
}

}  // namespace

TEST_CASE("softmax_exp is within 1 ulp of exp over [ln FLT_MIN, 0], and 0 below", "[util][softmax]") {
  double worst = 0;
  float worst_at = 0;
  // Every 64th float from -87.3 up to -0 (about 8 million arguments, every binade and the range-reduction seams).
  for (uint32_t bits = std::bit_cast<uint32_t>(-87.33f); bits > 0x80000000u; bits -= 64) {
    const float x = std::bit_cast<float>(bits);
    const double u = ulps(softmax_exp(x), std::exp(double(x)));
    if (u > worst) {
      worst = u;
      worst_at = x;
    }
  }
  INFO("worst " << worst << " ulp at x = " << worst_at);
  CHECK(worst < 1.0);  // every float argument, swept once: 0.94 at worst
  CHECK(softmax_exp(0.0f) == 1.0f);
  CHECK(softmax_exp(-0.0f) == 1.0f);
  CHECK(softmax_exp(-88.0f) == 0.0f);
  CHECK(softmax_exp(-std::numeric_limits<float>::infinity()) == 0.0f);
  CHECK(std::isnan(softmax_exp(std::numeric_limits<float>::quiet_NaN())));
}

TEST_CASE("softmax: the AVX2 path gives the portable definition's bits", "[util][softmax]") {
  std::vector<size_t> sizes;
  for (size_t n = 1; n <= 41; ++n) sizes.push_back(n);
  sizes.push_back(4096);
  sizes.push_back(129280);  // DeepSeek-V3.2's vocabulary
  for (const size_t n : sizes)
    for (const float spread : {0.01f, 3.0f, 40.0f}) {
      std::vector<float> x = random_logits(n, n * 31 + uint64_t(spread), spread);
      for (size_t i = 0; i < n; i += 7) x[i] = -std::numeric_limits<float>::infinity();  // masked ids
      if (n > 2) x[n / 2] = x[n / 3];  // ties
      std::vector<float> portable(n), vec(n, -1.0f);
      softmax_detail::softmax_portable(x.data(), n, portable.data());
      if (!softmax_detail::softmax_avx2(x.data(), n, vec.data())) {
        WARN("this CPU has no AVX2 + FMA: only the portable path runs");
        return;
      }
      INFO("n " << n << ", spread " << spread);
      CHECK(same_bits(portable, vec));
      std::vector<float> in_place = x;
      softmax(in_place.data(), n, in_place.data());  // out may be x
      CHECK(same_bits(portable, in_place));
    }
  softmax(nullptr, 0, nullptr);  // nothing to do, and no division by an empty sum
  // A NaN logit: no value is trusted, on either path.
  std::vector<float> x = random_logits(100, 7, 2.0f), a(100), b(100);
  x[42] = std::numeric_limits<float>::quiet_NaN();
  softmax_detail::softmax_portable(x.data(), x.size(), a.data());
  if (softmax_detail::softmax_avx2(x.data(), x.size(), b.data())) CHECK(same_bits(a, b));
  CHECK(std::isnan(a[0]));
}

TEST_CASE("softmax matches a double-precision softmax", "[util][softmax]") {
  for (const float spread : {0.5f, 4.0f, 30.0f}) {
    const std::vector<float> x = random_logits(129280, 11, spread);
    std::vector<float> p(x.size());
    softmax(x.data(), x.size(), p.data());
    // The truth from the same float differences x - max (their rounding is the input's, not the softmax's).
    float mx = -INFINITY;
    for (const float v : x) mx = std::max(mx, v);
    double sum = 0, total = 0, worst = 0;
    for (const float v : x) sum += std::exp(double(v - mx));
    for (size_t i = 0; i < x.size(); ++i) {
      const double truth = std::exp(double(x[i] - mx)) / sum;
      total += p[i];
      if (truth > 1e-30) worst = std::max(worst, std::fabs(p[i] - truth) / truth);
    }
    INFO("spread " << spread);
    CHECK(worst < 1e-6);  // a few float roundings: < 1 ulp from the exponential, one from the quotient
    CHECK(std::fabs(total - 1.0) < 1e-6);
  }
}
