#include "backend/cpu/indexer_amx.hpp"

#include <algorithm>
#include <cstring>

#include "backend/cpu/simd.hpp"
#include "backend/kv_format.hpp"

namespace dsinfer {

void indexer_amx_prepare_query(IndexerQuery& q, uint16_t* storage) {
  q.qB = nullptr;
  const int64_t D = q.dim, NC = q.padded / 16, J = D / 32;
  if (D % 32 != 0 || NC < 1 || NC > 4) return;
  // Tile (c, j): the dims [32j, 32j + 32) of heads [16c, 16c + 16), row r holding dims 32j + 2r and 32j + 2r + 1 of
  // each head side by side (the B operand's pairs).
  for (int64_t c = 0; c < NC; ++c)
    for (int64_t j = 0; j < J; ++j) {
      uint16_t* tile = storage + (c * J + j) * 512;
      for (int64_t r = 0; r < 16; ++r)
        for (int64_t n = 0; n < 16; ++n)
          for (int64_t e = 0; e < 2; ++e) {
            const int64_t h = 16 * c + n;
            const float v = h < q.heads ? q.q[h * D + 32 * j + 2 * r + e] : 0.0f;
            uint32_t bits;
            std::memcpy(&bits, &v, 4);
            if ((bits & 0xFFFFu) || ((bits >> 23) & 0xFFu) == 0xFFu) return;  // not bf16-exact, or not finite
            tile[r * 32 + 2 * n + e] = uint16_t(bits >> 16);
          }
    }
  q.qB = storage;
}

#ifdef DSINFER_HAVE_AVX2_KERNELS
#ifdef __clang__
#pragma clang attribute push(                                                                                     \
    __attribute__((target("amx-tile,amx-bf16,avx512f,avx512bw,avx512vl,avx512bf16,avx512vbmi,avx2,fma,f16c"))), \
    apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("amx-tile,amx-bf16,avx512f,avx512bw,avx512vl,avx512bf16,avx512vbmi,avx2,fma,f16c")
#endif
namespace {

// Tile registers: tmm0-3 scores (C: 16 keys x 16 heads each), tmm4-5 keys (A: 16 keys x 32 dims, alternately),
// tmm6-7 a query's dims x heads (B: 32 dims x 16 heads, alternately, or held through the call when a lone query
// has at most two); all 16 rows of 64 bytes.
struct alignas(64) TileConfig {
  uint8_t palette = 1, start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

void load_tile_config() {
  TileConfig cfg;
  for (int t = 0; t < 8; ++t) {
    cfg.rows[t] = 16;
    cfg.colsb[t] = 64;
  }
  _tile_loadconfig(&cfg);
}

// e4m3 → bf16 by two lookups of 128 bytes (the high and the low byte of each magnitude's bf16, exact: e4m3 values
// are bf16 values) and the sign bit; the NaN codes (0x7F, 0xFF) are marked.
struct E4m3Bf16Tables {
  __m512i hi0, hi1, lo0, lo1;
  E4m3Bf16Tables() {
    alignas(64) uint8_t hi[128], lo[128];
    for (int c = 0; c < 128; ++c) {
      uint32_t bits;
      std::memcpy(&bits, &e4m3_table()[c], 4);
      hi[c] = uint8_t(bits >> 24);
      lo[c] = uint8_t(bits >> 16);
    }
    hi0 = _mm512_load_si512(hi), hi1 = _mm512_load_si512(hi + 64);
    lo0 = _mm512_load_si512(lo), lo1 = _mm512_load_si512(lo + 64);
  }
};

// Bytes 2j and 2j + 1 of 32 bf16 values from their low bytes lo[j] and high bytes hi[j] (vpermt2b indices: 64 + j
// selects from the second operand); + 32 gives the next 32.
alignas(64) constexpr uint8_t kLoHiInterleave[64] = {
    0,  64, 1,  65, 2,  66, 3,  67, 4,  68, 5,  69, 6,  70, 7,  71, 8,  72, 9,  73, 10, 74,
    11, 75, 12, 76, 13, 77, 14, 78, 15, 79, 16, 80, 17, 81, 18, 82, 19, 83, 20, 84, 21, 85,
    22, 86, 23, 87, 24, 88, 25, 89, 26, 90, 27, 91, 28, 92, 29, 93, 30, 94, 31, 95};

// 64 e4m3 bytes (only the first `n` when n < 64: 32) as bf16 into out[0, n); returns nonzero where a byte is a NaN
// code.
inline uint64_t e4m3_to_bf16(const E4m3Bf16Tables& t, const uint8_t* b, int n, uint16_t* out) {
  const __m512i x = n == 64 ? _mm512_loadu_si512(b) : _mm512_maskz_loadu_epi8(__mmask64(0xFFFFFFFFu), b);
  __m512i hi = _mm512_permutex2var_epi8(t.hi0, x, t.hi1);
  const __m512i lo = _mm512_permutex2var_epi8(t.lo0, x, t.lo1);
  const uint64_t nan = _mm512_cmpeq_epi8_mask(hi, _mm512_set1_epi8(0x7F));
  hi = _mm512_ternarylogic_epi32(hi, x, _mm512_set1_epi8(int8_t(0x80)), 0xF8);  // hi | (x & 0x80)
  const __m512i i0 = _mm512_load_si512(kLoHiInterleave);
  _mm512_storeu_si512(out, _mm512_permutex2var_epi8(lo, i0, hi));
  if (n == 64)
    _mm512_storeu_si512(out + 32, _mm512_permutex2var_epi8(lo, _mm512_add_epi8(i0, _mm512_set1_epi8(32)), hi));
  return nan;
}

// n consecutive keys of D codes each (D a multiple of 32) as bf16 rows out[n][D], asking for a share of `ahead`'s
// lines at each; bit i of the result: key i holds a NaN code. The tables are copied for the run so that they stay in
// registers (read through `t`, a static, they are loaded again at every key: the stores to `out` may alias them).
inline uint64_t e4m3_rows_to_bf16(const E4m3Bf16Tables& t, const uint8_t* values, int64_t n, int64_t D,
                                  uint16_t* out, KeyPrefetch& ahead) {
  const E4m3Bf16Tables tables = t;
  uint64_t nan_keys = 0;
  for (int64_t i = 0; i < n; ++i) {
    ahead.next();
    uint64_t nan = 0;
    for (int64_t d = 0; d < D; d += 64)  // (constant widths: the inlined single-key form loses its width tests)
      nan |= D - d >= 64 ? e4m3_to_bf16(tables, values + i * D + d, 64, out + i * D + d)
                         : e4m3_to_bf16(tables, values + i * D + d, 32, out + i * D + d);
    nan_keys |= uint64_t(nan != 0) << i;
  }
  return nan_keys;
}

// 32 fp32 values as bf16; returns nonzero unless all are bf16-exact and finite.
inline uint32_t f32_row_to_bf16(const float* v, uint16_t* out) {
  const __m512i lo = _mm512_loadu_si512(v), hi = _mm512_loadu_si512(v + 16);
  const __m512i low_bits = _mm512_set1_epi32(0xFFFF), exponent = _mm512_set1_epi32(0x7F800000);
  const uint32_t bad = _mm512_test_epi32_mask(lo, low_bits) | _mm512_test_epi32_mask(hi, low_bits) |
                       _mm512_cmpeq_epi32_mask(_mm512_and_si512(lo, exponent), exponent) |
                       _mm512_cmpeq_epi32_mask(_mm512_and_si512(hi, exponent), exponent);
  const __m512i packed = _mm512_permutex2var_epi16(
      lo, _mm512_set_epi16(63, 61, 59, 57, 55, 53, 51, 49, 47, 45, 43, 41, 39, 37, 35, 33, 31, 29, 27, 25, 23, 21, 19,
                           17, 15, 13, 11, 9, 7, 5, 3, 1),
      hi);
  _mm512_storeu_si512(out, packed);
  return bad;
}

// Keys [g0, g0 + n) of `a` (n <= 64) as the A operand's rows kb[][D] (rows n .. the next multiple of 16 zero) and
// each key's score multiplier; bit r of the result: key r is not bf16-exact (scored by the reference instead).
// A whole batch at once: decoding its keys in one pass, a page's run after the other, lets the core have more of
// their cache lines on the way than a call per tile of 16 did (a cold 64K-key scan 11-13 % faster).
uint64_t fill_keys(const IndexerTopkArgs& a, int64_t g0, int n, uint16_t* kb, float* mul, KeyPrefetch& ahead) {
  static const E4m3Bf16Tables tables;
  const int64_t D = a.head_dim;
  uint64_t inexact = 0;
  for_each_key_run(a, g0, g0 + n, [&](int64_t p, int64_t run, int64_t row) {
    const int r0 = int(p - g0);
    if (a.k_packed.packed()) {  // a run's values and scales are consecutive
      const uint8_t* values = kvfmt::index_key_values(a.k_packed, row);
      const uint8_t* scales = kvfmt::index_key_scale(a.k_packed, row);
      const bool fp8 = a.k_packed.dtype == KvDtype::FP8;
      if (fp8) {
        inexact |= e4m3_rows_to_bf16(tables, values, run, D, kb + r0 * D, ahead) << r0;
        std::memcpy(mul + r0, scales, size_t(run) * 4);  // little-endian fp32, as kvfmt::load_f32 reads them
        return;
      }
      for (int64_t i = 0; i < run; ++i) {  // BF16: the cache's halves are the values
        ahead.next();
        uint16_t* out = kb + (r0 + i) * D;
        uint64_t bad = 0;
        std::memcpy(out, values + 2 * i * D, size_t(D) * 2);
        for (int64_t d = 0; d < D; ++d) bad |= (out[d] & 0x7F80u) == 0x7F80u;
        mul[r0 + i] = kvfmt::load_f32(scales + 4 * i);
        if (bad) inexact |= uint64_t(1) << (r0 + i);
      }
    } else {
      for (int64_t i = 0; i < run; ++i) {
        uint16_t* out = kb + (r0 + i) * D;
        uint32_t bad = 0;
        for (int64_t d = 0; d < D; d += 32) bad |= f32_row_to_bf16(a.k.row(row + i) + d, out + d);
        mul[r0 + i] = a.k_scale.data ? a.k_scale.row(row + i)[0] : 1.0f;
        if (bad) inexact |= uint64_t(1) << (r0 + i);
      }
    }
  });
  if (n % 16) std::memset(kb + n * D, 0, size_t((16 - n % 16) * D) * 2);
  return inexact;
}

// The tile instructions name their registers as literals; these take a register number.
inline void tile_zero(int t) {
  switch (t) {
    case 0: _tile_zero(0); break;
    case 1: _tile_zero(1); break;
    case 2: _tile_zero(2); break;
    default: _tile_zero(3); break;
  }
}
inline void tile_store(int t, float* p) {
  switch (t) {
    case 0: _tile_stored(0, p, 64); break;
    case 1: _tile_stored(1, p, 64); break;
    case 2: _tile_stored(2, p, 64); break;
    default: _tile_stored(3, p, 64); break;
  }
}
inline void tile_load(int t, const uint16_t* p, int64_t stride) {
  switch (t) {
    case 4: _tile_loadd(4, p, stride); break;
    case 5: _tile_loadd(5, p, stride); break;
    case 6: _tile_loadd(6, p, stride); break;
    default: _tile_loadd(7, p, stride); break;
  }
}
// C tile c (0-3) += A tile a (4-5) · B tile b (6-7).
inline void tile_dp(int c, int a, int b) {
  switch (c * 4 + (a - 4) * 2 + (b - 6)) {
#define DSINFER_TILE_DP(C, A, B) \
  case C * 4 + (A - 4) * 2 + (B - 6): _tile_dpbf16ps(C, A, B); break;
    DSINFER_TILE_DP(0, 4, 6) DSINFER_TILE_DP(0, 4, 7) DSINFER_TILE_DP(0, 5, 6) DSINFER_TILE_DP(0, 5, 7)
    DSINFER_TILE_DP(1, 4, 6) DSINFER_TILE_DP(1, 4, 7) DSINFER_TILE_DP(1, 5, 6) DSINFER_TILE_DP(1, 5, 7)
    DSINFER_TILE_DP(2, 4, 6) DSINFER_TILE_DP(2, 4, 7) DSINFER_TILE_DP(2, 5, 6) DSINFER_TILE_DP(2, 5, 7)
    DSINFER_TILE_DP(3, 4, 6) DSINFER_TILE_DP(3, 4, 7) DSINFER_TILE_DP(3, 5, 6) DSINFER_TILE_DP(3, 5, 7)
#undef DSINFER_TILE_DP
  }
}

// sum16 of 16 vectors at once: lane r of the result is the sum of v[r]'s lanes, by a fixed tree (within each
// 128-bit quarter, lanes 0 + 2 and 1 + 3, then those two; then quarters 0 + 1 and 2 + 3; then those two).
inline __m512 sum16_of_16(__m512* v) {
  __m512 t[8], u[4], w[2];
  for (int i = 0; i < 8; ++i)
    t[i] = _mm512_add_ps(_mm512_unpacklo_ps(v[2 * i], v[2 * i + 1]), _mm512_unpackhi_ps(v[2 * i], v[2 * i + 1]));
  for (int i = 0; i < 4; ++i)
    u[i] = _mm512_add_ps(_mm512_shuffle_ps(t[2 * i], t[2 * i + 1], 0x44),
                         _mm512_shuffle_ps(t[2 * i], t[2 * i + 1], 0xEE));
  for (int i = 0; i < 2; ++i)
    w[i] = _mm512_add_ps(_mm512_shuffle_f32x4(u[2 * i], u[2 * i + 1], 0x88),
                         _mm512_shuffle_f32x4(u[2 * i], u[2 * i + 1], 0xDD));
  return _mm512_add_ps(_mm512_shuffle_f32x4(w[0], w[1], 0x88), _mm512_shuffle_f32x4(w[0], w[1], 0xDD));
}

// The 16 keys' scores before their multipliers, from a query's C tiles and head weights.
template <int NC>
__m512 reduce_heads(const float* cbuf, const float* wp) {
  const __m512 zero = _mm512_setzero_ps();
  __m512 v[16];
  for (int r = 0; r < 16; ++r) {
    v[r] = _mm512_mul_ps(_mm512_max_ps(zero, _mm512_load_ps(cbuf + 16 * r)), _mm512_loadu_ps(wp));
    for (int c = 1; c < NC; ++c)
      v[r] = _mm512_fmadd_ps(_mm512_max_ps(zero, _mm512_load_ps(cbuf + 256 * c + 16 * r)),
                             _mm512_loadu_ps(wp + 16 * c), v[r]);
  }
  return sum16_of_16(v);
}

// Keys go in batches of KT tiles of 16 (4 / NC: the C tiles of a batch fill tmm0-3), so that each tile's chain of
// dot products overlaps the others' (one tile's chain alone leaves the unit waiting on each result).
template <int NC>
void scores_amx(const IndexerQuery* const* qs, int nq, const IndexerTopkArgs& a, int64_t s0, int64_t s1,
                const int64_t* ends, float* const* scores, WorkerScratch scratch) {
  constexpr int KT = 4 / NC;
  const int64_t D = a.head_dim, J = D / 32;
  const bool held = nq == 1 && NC * J <= 2;  // a lone query's B tiles stay in tmm6-7
  uint16_t* kb = scratch.get<uint16_t>(ScratchSlot::IndexerKeysBf16, size_t(KT * 16 * D));
  alignas(64) float cbuf[4 * 256];
  alignas(64) float mul[KT * 16];
  uint32_t inexact[KT];
  KeyPrefetch ahead;
  // Configured at each call and released after it: the tile state is the thread's, and code between two calls (the
  // application's own AMX work) may configure it otherwise.
  load_tile_config();
  if (held)
    for (int64_t b = 0; b < NC * J; ++b) tile_load(6 + int(b), qs[0]->qB + b * 512, 64);
  for (int64_t g0 = s0; g0 < s1; g0 += 16 * KT) {
    const int64_t n = std::min<int64_t>(16 * KT, s1 - g0);
    // The next batch's keys, asked for while this one is decoded; past s1 too, where this thread's next unit starts.
    ahead.plan(a, g0 + 16 * KT, std::min(g0 + 32 * KT, a.n_keys), n);
    const uint64_t batch_inexact = fill_keys(a, g0, int(n), kb, mul, ahead);
    for (int kt = 0; kt < KT; ++kt) inexact[kt] = uint32_t(batch_inexact >> (16 * kt)) & 0xFFFFu;
    for (int i = 0; i < nq; ++i) {
      const int64_t m = std::min<int64_t>(n, ends[i] - g0);  // this query's keys in the batch
      if (m <= 0) continue;
      const int used = int((m + 15) / 16);
      for (int t = 0; t < used * NC; ++t) tile_zero(t);
      for (int64_t j = 0; j < J; ++j)
        for (int c = 0; c < NC; ++c) {
          const int b = held ? 6 + int(c * J + j) : 6 + int((c * J + j) & 1);
          if (!held) tile_load(b, qs[i]->qB + (c * J + j) * 512, 64);
          for (int kt = 0; kt < used; ++kt) {
            tile_load(4 + (kt & 1), kb + kt * 16 * D + 32 * j, D * 2);
            tile_dp(kt * NC + c, 4 + (kt & 1), b);
          }
        }
      for (int t = 0; t < used * NC; ++t) tile_store(t, cbuf + 256 * t);
      for (int kt = 0; kt < used; ++kt) {
        const int64_t k0 = g0 + 16 * kt;
        const int mk = int(std::min<int64_t>(16, m - 16 * kt));
        const __m512 score =
            _mm512_mul_ps(reduce_heads<NC>(cbuf + 256 * NC * kt, qs[i]->wp), _mm512_loadu_ps(mul + 16 * kt));
        _mm512_mask_storeu_ps(scores[i] + k0, __mmask16((1u << mk) - 1u), score);
        for (uint32_t bad = inexact[kt] & ((1u << mk) - 1u); bad; bad &= bad - 1) {
          const int64_t key = k0 + __builtin_ctz(bad);
          indexer_scores_reference(qs[i]->q, qs[i]->wt, a, key, key + 1, scores[i], scratch);
        }
      }
    }
  }
  _tile_release();
}

}  // namespace
#ifdef __clang__
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
#endif  // DSINFER_HAVE_AVX2_KERNELS

bool indexer_scores_amx(const IndexerQuery* const* qs, int nq, const IndexerTopkArgs& a, int64_t s0,
                        const int64_t* ends, float* const* scores, WorkerScratch scratch) {
#ifdef DSINFER_HAVE_AVX2_KERNELS
  int64_t s1 = s0;
  for (int i = 0; i < nq; ++i) {
    if (!qs[i]->qB || qs[i]->padded != qs[0]->padded || qs[i]->dim != a.head_dim) return false;
    s1 = std::max(s1, ends[i]);
  }
  if (nq <= 0 || s1 <= s0) return true;
  switch (qs[0]->padded / 16) {
    case 1: scores_amx<1>(qs, nq, a, s0, s1, ends, scores, scratch); break;
    case 2: scores_amx<2>(qs, nq, a, s0, s1, ends, scores, scratch); break;
    case 3: scores_amx<3>(qs, nq, a, s0, s1, ends, scores, scratch); break;
    default: scores_amx<4>(qs, nq, a, s0, s1, ends, scores, scratch); break;
  }
  return true;
#else
  (void)qs, (void)nq, (void)a, (void)s0, (void)ends, (void)scores, (void)scratch;
  return false;
#endif
}

}  // namespace dsinfer
