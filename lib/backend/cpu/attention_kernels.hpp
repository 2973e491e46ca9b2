// The CPU backend's attention kernels for the step that matters most in decode: the lightning indexer's scores and
// the absorbed MLA over the latent cache (cpu_backend.cpp's indexer_topk and mla_attention call them). Each has a
// scalar reference that states its operation order, and AVX-512 and AVX2 versions that follow that order lane by
// lane, so a result does not depend on the instruction set, the thread count or how the work is split
// (tests/lib/backend/test_cpu_attention.cpp compares them bit for bit).
//
// The order's unit is 16 fp32 lanes: a dot product keeps 16 running sums (lane l takes the elements whose index is
// l mod 16), each a chain of fused multiply-adds from +0, and ends with tree16:
//   a[i] = l[i] + l[i+8] (i < 8), b[i] = a[i] + a[i+4] (i < 4), c[i] = b[i] + b[i+2] (i < 2), result c[0] + c[1].
// One zmm register, or two ymm, hold those lanes.
#pragma once
#include <algorithm>
#include <cstdint>

#include "backend/backend.hpp"
#include "backend/kv_format.hpp"
#include "backend/cpu/scratch_arena.hpp"

namespace dsinfer {

// Lightning-indexer scores of one query against keys [s0, s1) of `a` (IndexerTopkArgs; scores indexed by key
// position). q is the query row [H*D], wt the H head weights (w · head_scale · q_scale). Per key: each head's q_h·k
// is one fused multiply-add chain over the D dims; v_h = wt_h · max(q_h·k, 0); heads are padded with zero queries
// and weights to a multiple of 16; lane l = v_l + v_{16+l} + v_{32+l} + ... in that order; score = tree16(lanes)
// times the key's scale.
// The vector kernel takes the query prepared once (indexer_prepare_query: its heads transposed to [D][Hp], Hp the
// head count rounded up to 16 with zero queries and weights), so that each key value is broadcast against 16 heads.
// The kernels that read a packed cache decode its keys into `scratch` (ScratchSlot::IndexerKeys).
struct IndexerQuery {
  const float* q = nullptr;   // the query row [H*D] and its head weights [H], as given
  const float* wt = nullptr;
  int64_t heads = 0, dim = 0, padded = 0;
  float* qT = nullptr;        // [D][padded], in the storage given to indexer_prepare_query
  float* wp = nullptr;        // [padded], after qT
  const uint16_t* qB = nullptr;  // the Amx family: the heads as bf16 tiles after wp (indexer_amx.hpp), or null
};
// The floats of storage one prepared query takes (in the Amx family its bf16 tiles too).
int64_t indexer_query_floats(int64_t heads, int64_t dim);
void indexer_prepare_query(const float* q, const float* wt, int64_t heads, int64_t dim, float* storage,
                           IndexerQuery& out);
void indexer_scores(const IndexerQuery& q, const IndexerTopkArgs& a, int64_t s0, int64_t s1, float* scores,
                    WorkerScratch scratch);
// Up to kIndexerMaxQueries queries (all of one IndexerTopkArgs, so of one head count) against keys [s0, ends[i]),
// query i's scores into scores[i] (indexed by key position). Each key is read (a packed cache's decoded) once for
// all of them; every score equals indexer_scores' bit for bit.
constexpr int kIndexerMaxQueries = 64;
void indexer_scores_many(const IndexerQuery* const* qs, int nq, const IndexerTopkArgs& a, int64_t s0,
                         const int64_t* ends, float* const* scores, WorkerScratch scratch);
void indexer_scores_reference(const float* q, const float* wt, const IndexerTopkArgs& a, int64_t s0, int64_t s1,
                              float* scores, WorkerScratch scratch);

// f(p, n, row) for the runs of key positions [p, p + n) that cover [s0, s1) in order and whose rows row .. row + n - 1
// are consecutive and, for a packed cache, in one page (so that their values and scales are consecutive too): one
// block-table lookup a run instead of cache_row's and kvfmt's divisions at every key.
template <class F>
void for_each_key_run(const IndexerTopkArgs& a, int64_t s0, int64_t s1, F&& f) {
  for (int64_t p = s0; p < s1;) {
    const int64_t row = cache_row(a.block_table, a.block_tokens, p);
    int64_t n = s1 - p;
    if (a.block_table) n = std::min(n, a.block_tokens - p % a.block_tokens);
    if (a.k_packed.packed()) n = std::min(n, a.k_packed.page_tokens - row % a.k_packed.page_tokens);
    f(p, n, row);
    p += n;
  }
}

// Asks for the cache line holding p, into L2 (prefetcht1: the Amx family's cold 64K-key scan measured about 7 %
// faster than with the lines asked for into L1, and the same with its keys in cache: docs/design-log.md). An asm
// statement rather than __builtin_prefetch: with the builtin, GCC 12 at -O2 emitted nothing for a function that asked
// for a range of keys' lines in for_each_key_run's callback (a function calling it alone compiled to a bare return).
inline void prefetch_line(const void* p) {
#if defined(__x86_64__) || defined(__i386__)
  asm volatile("prefetcht1 %0" : : "m"(*static_cast<const char*>(p)));
#else
  __builtin_prefetch(p, 0, 2);
#endif
}

// The cache lines of a packed cache's keys [s0, s1) (values and scales), asked for a few at a time without waiting
// for them. A key scan plans its next batch's lines and asks for a share after each key it decodes: in a decode step
// the weights' reads have evicted a layer's keys since its previous scan, and the hardware's own prefetch, which
// stops at every 4 KB, leaves the scan waiting on them; asked for all at once, the lines keep the core waiting for
// free fill buffers instead (docs/design-log.md, "CPU kernels").
class KeyPrefetch {
 public:
  // The lines of keys [s0, s1) (none when the cache is not packed), to be asked for over `shares` calls of next().
  void plan(const IndexerTopkArgs& a, int64_t s0, int64_t s1, int64_t shares) {
    n_ranges_ = 0;
    range_ = 0;
    int64_t lines = 0;
    if (a.k_packed.packed() && s0 < s1) {
      const int64_t value_bytes = a.k_packed.dtype == KvDtype::FP8 ? 1 : 2;
      for_each_key_run(a, s0, s1, [&](int64_t, int64_t run, int64_t row) {
        lines += add(kvfmt::index_key_values(a.k_packed, row), run * a.head_dim * value_bytes);
        lines += add(kvfmt::index_key_scale(a.k_packed, row), run * 4);
      });
    }
    per_share_ = shares > 0 ? (lines + shares - 1) / shares : lines;
  }
  // The next share of the lines.
  void next() {
    for (int64_t left = per_share_; left > 0 && range_ < n_ranges_;) {
      Range& r = ranges_[range_];
      for (; left > 0 && r.lines > 0; --left, --r.lines, r.first += 64) prefetch_line(r.first);
      if (r.lines == 0) ++range_;
    }
  }

 private:
  struct Range {
    const uint8_t* first;  // a line's start
    int64_t lines;
  };
  // The lines of [p, p + bytes) as a range; 0 when the plan is full (a batch of keys spans at most two pages, so two
  // value and two scale ranges, unless its pages are smaller than the batch: those past the last range go unasked).
  int64_t add(const uint8_t* p, int64_t bytes) {
    if (n_ranges_ == kMaxRanges || bytes <= 0) return 0;
    const uint8_t* first = p - (uintptr_t(p) & 63);
    const int64_t lines = (p + bytes - first + 63) / 64;
    ranges_[n_ranges_++] = {first, lines};
    return lines;
  }
  static constexpr int kMaxRanges = 8;
  Range ranges_[kMaxRanges];
  int n_ranges_ = 0, range_ = 0;
  int64_t per_share_ = 0;
};

// Absorbed MLA (MlaMode::Absorbed) of query row t for heads [h0, h1), over the cached positions keys[0..n), written
// to a.out. kv_b values come from a.wkv_b_stored (FP8 as fl(e4m3 · scale), BF16 as is) or from the fp32 copy
// a.wkv_b when that is given instead (the reference needs the copy). Per head:
//   q_abs[c] = fused multiply-add chain over d < dn of q_nope[d] · W_UK[d][c], from +0;
//   score_j  = tree16 dot of [q_abs | q_rope] with [latent_j | k_pe_j] (one 16-lane dot over kvr + dr values),
//              times softmax_scale;
//   p        = softmax(score) as util/softmax.hpp defines it (the same bits on every CPU);
//   o_lat[c] = fused multiply-add chain over the keys in order of p_j · latent_j[c], from +0;
//   out[v]   = tree16 dot of o_lat with W_UV[v].
// The MLA kernels work in `scratch` (the ScratchSlot::Mla* slots after MlaKeys).
// rows_ready: the previous call with this scratch was for the same call of the op, query and keys, so the rows it
// gathered (a packed cache's decoded) are reused instead of gathered again (a query's head blocks share them).
void mla_absorbed(const MlaArgs& a, const int32_t* keys, int64_t n, int64_t t, int64_t h0, int64_t h1,
                  WorkerScratch scratch, bool rows_ready = false);
void mla_absorbed_reference(const MlaArgs& a, const int32_t* keys, int64_t n, int64_t t, int64_t h0, int64_t h1,
                            WorkerScratch scratch);
// Whether mla_absorbed has a vector kernel for these arguments (else it runs the reference, which needs a.wkv_b).
bool mla_absorbed_vectorized(const MlaArgs& a);
// The vector kernel in two parts, so that threads can share a query's rows: mla_gather_rows points lat[j] / kpe[j]
// at the latent row and rope key of keys[j] for j in [j0, j1) (a packed cache's rows decoded into decoded[j][C + dr],
// the values mla_absorbed reads); mla_absorbed_gathered is mla_absorbed over rows so gathered (same bits), and
// needs mla_absorbed_vectorized(a) and n > 0.
void mla_gather_rows(const MlaArgs& a, const int32_t* keys, int64_t j0, int64_t j1, float* decoded, const float** lat,
                     const float** kpe);
void mla_absorbed_gathered(const MlaArgs& a, const float* const* lat, const float* const* kpe, int64_t n, int64_t t,
                           int64_t h0, int64_t h1, WorkerScratch scratch);
// MHA form (MlaMode::Mha) of query row t, head h, over keys[0..n), given kv = the cache expanded through kv_b,
// [S, H*(dn+dv)] (row s: per head k_nope then v). Per head:
//   score_j = tree16 dot of [q_nope | q_rope] with [k_nope_j | k_pe_j], times softmax_scale;
//   p       = softmax(score), as in mla_absorbed;
//   out[v]  = fused multiply-add chain over the keys in order of p_j · v_j[v], from +0.
void mla_mha(const MlaArgs& a, const float* kv, const int32_t* keys, int64_t n, int64_t t, int64_t h,
             WorkerScratch scratch);
void mla_mha_reference(const MlaArgs& a, const float* kv, const int32_t* keys, int64_t n, int64_t t, int64_t h,
                       WorkerScratch scratch);

// Heads the vector kernel takes together (each latent row it loads serves that many heads): the natural unit of
// work to hand a thread.
int64_t mla_absorbed_head_block();

}  // namespace dsinfer
