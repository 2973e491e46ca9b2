#include "backend/cpu/topk_select.hpp"

#include <algorithm>
#include <functional>
#include <iterator>

#include "util/dtype.hpp"

namespace dsinfer {

namespace {

uint32_t monotonic(float score) {
  const uint32_t b = f32_to_bits(score + 0.0f);
  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

// Over many keys, a threshold from a sample first: the scores at kTopkSamples evenly spaced positions, and the one
// ranked about 3m·samples/n among them, so that about 3m keys of the range reach it. One pass keeps the keys that
// reach it (writing only their entries, not all n); when they are at least m, the top m are among them, since every
// other key ranks below the threshold and so below each of them. Otherwise (a sample that missed the high scores:
// scores periodic with the spacing, or mostly equal below a few) false, and the caller narrows by a histogram.
bool select_by_sampled_threshold(const float* scores, int64_t s0, int64_t s1, int64_t m, uint64_t* ranked) {
  const int64_t n = s1 - s0, stride = n / kTopkSamples;
  uint32_t sample[kTopkSamples];
  for (int64_t i = 0; i < kTopkSamples; ++i) sample[i] = monotonic(scores[s0 + i * stride]);
  const int64_t want = std::min(kTopkSamples, 3 * m * kTopkSamples / n + 8);
  std::nth_element(sample, sample + (want - 1), sample + kTopkSamples, std::greater<>());
  // The threshold as a float: a key reaches it when its score is not below it, a comparison of floats that orders
  // as the entries do except for NaNs, which pass it (the negative ones needlessly, which costs nothing).
  const uint32_t key = sample[want - 1];
  const float threshold = bits_to_f32((key & 0x80000000u) ? (key & 0x7FFFFFFFu) : ~key);
  // A branch per key while few keys pass (it is then predictable); when many do (a large k: at k 2048 over 32K keys
  // a fifth), every entry is written and only the passing ones kept, since a branch taken at random would be
  // mispredicted at a fifth of the keys.
  int64_t kept = 0;
  if (want * 16 >= kTopkSamples) {
    for (int64_t s = s0; s < s1; ++s) {
      ranked[s0 + kept] = topk_entry(monotonic(scores[s]), s);
      kept += !(scores[s] < threshold);
    }
  } else {
    for (int64_t s = s0; s < s1; ++s)
      if (!(scores[s] < threshold)) ranked[s0 + kept++] = topk_entry(monotonic(scores[s]), s);
  }
  if (kept < m) return false;
  std::nth_element(ranked + s0, ranked + s0 + (m - 1), ranked + s0 + kept, std::greater<>());
  return true;
}

}  // namespace

int64_t select_top_keys(const float* scores, int64_t s0, int64_t s1, int64_t k, uint64_t* ranked) {
  const int64_t n = s1 - s0, m = std::min(k, n);
  if (m <= 0) return 0;
  if (n >= 8 * m && n >= 8 * kTopkSamples && select_by_sampled_threshold(scores, s0, s1, m, ranked)) return m;
  // Otherwise every key's entry, and over many keys a narrowing first: a histogram of the entries' top kBucketBits
  // bits, filled in the same pass, gives the bucket that holds the m-th highest; the entries of that bucket and above
  // (the top m and the bucket's others) move to the front, in order, and nth_element runs over those only.
  constexpr int kBucketBits = 11;
  constexpr int kShift = 64 - kBucketBits;
  const bool narrow = n > 4 * m;
  uint32_t count[size_t(1) << kBucketBits];
  if (narrow) std::fill(std::begin(count), std::end(count), 0u);
  for (int64_t s = s0; s < s1; ++s) {
    const uint32_t key = monotonic(scores[s]);
    ranked[s] = topk_entry(key, s);
    if (narrow) ++count[key >> (kShift - 32)];
  }
  int64_t candidates = n;
  if (narrow) {
    uint64_t bucket = (uint64_t(1) << kBucketBits) - 1;
    for (int64_t above = 0; above + count[bucket] < m; --bucket) above += count[bucket];
    candidates = 0;
    for (int64_t s = s0; s < s1; ++s)
      if ((ranked[s] >> kShift) >= bucket) ranked[s0 + candidates++] = ranked[s];
  }
  std::nth_element(ranked + s0, ranked + s0 + (m - 1), ranked + s0 + candidates, std::greater<>());
  return m;
}

}  // namespace dsinfer
