// The indexer's top-k selection over one query's scores (CpuBackend::indexer_topk): the k highest scores, equal
// scores ranked by earlier position. That is a strict total order, so the chosen set is determined whatever the
// method; every method here gives it.
#pragma once
#include <cstdint>

namespace dsinfer {

// Scores sampled when select_top_keys narrows by a threshold.
constexpr int64_t kTopkSamples = 512;

// One entry of the ranking: a score's bits made monotonic (−0 folded into +0 first, NaNs above +inf or below −inf by
// their sign bit) above its position's complement, so that plain integer comparisons order entries as the rule does.
inline uint64_t topk_entry(uint32_t monotonic_score, int64_t position) {
  return (uint64_t(monotonic_score) << 32) | uint64_t(~uint32_t(position));
}
inline int32_t topk_entry_position(uint64_t entry) { return int32_t(~uint32_t(entry)); }

// Ranks the keys [s0, s1) of `scores` and moves the entries of their min(k, s1 - s0) highest to ranked[s0, s0 + m)
// (in no particular order); returns m. ranked[s0, s1) is its working space.
int64_t select_top_keys(const float* scores, int64_t s0, int64_t s1, int64_t k, uint64_t* ranked);

}  // namespace dsinfer
