// Lightning-indexer scores and top-k on the GPU (cuda/indexer/) against the CPU backend's indexer_topk.
//
// Exactness: (1) "integer" cases build q, k, the head weights and every scale from small integers and powers of
// two, so every product and partial sum is exactly representable in fp32 and the scores are identical whatever
// the summation order: the GPU must return bit-identical scores and exactly the CPU's index lists, including
// its tie rule (many ties occur by construction). (2) random-float cases at the real V3.2 dims (64 heads x 128,
// top-k 2048, contexts up to 8K) compare scores with a relative tolerance (fp32 sums of 8192 products in a
// different order: |Δ| <= 1e-5 · Σ|terms| is a generous bound for that, far below the score gaps that decide
// the set) and allow a selected position to differ from the CPU's only if both its score and the CPU's k-th
// score are within that tolerance of each other (tie-equivalent swaps). (3) the top-k kernel alone over
// adversarial score rows (all equal, ±0, negatives, k = visible ± 1, 64K candidates) must equal a host model of
// the CPU's rule exactly. Paged block tables (shuffled blocks), several sequences per launch (query_seq/seq_len),
// and the 132-byte FP8 key cache (which must give bit-identical scores to the F32 cache holding the same
// values) are covered. The e4m3 tensor-core kernel (indexer_scores_fp8.cu) runs the same cases: exact on integer
// inputs, within 1e-3 of the score scale on floats (its accumulation may keep fewer bits than fp32).
// Exits 77 without a CUDA device.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <numeric>
#include <random>
#include <vector>

#include "../../cuda/indexer/indexer_scores.cuh"
#include "../../cuda/indexer/indexer_topk.cuh"
#include "../../cuda/kv/kv_cache_formats.cuh"
#include "backend/backend.hpp"
#include "util/dtype.hpp"
#include "attn_test_util.cuh"

using namespace dsinfer;
using namespace dsinfer::gpu::attn;
using namespace dsinfer::attn_test;

namespace {

// The CPU backend's top-k rule, for the top-k-only cases.
std::vector<int32_t> host_topk(const float* s, int64_t visible, int64_t k) {
  std::vector<int32_t> order(static_cast<size_t>(visible));
  std::iota(order.begin(), order.end(), 0);
  const int64_t kk = std::min(k, visible);
  std::partial_sort(order.begin(), order.begin() + kk, order.end(),
                    [&](int32_t i, int32_t j) { return s[i] > s[j] || (s[i] == s[j] && i < j); });
  std::sort(order.begin(), order.begin() + kk);
  std::vector<int32_t> out(static_cast<size_t>(k), -1);
  std::copy(order.begin(), order.begin() + kk, out.begin());
  return out;
}

struct Seq {
  int64_t n_keys;                  // cached keys
  std::vector<int32_t> positions;  // its queries
};

struct Case {
  const char* name;
  int64_t H, D, topk;
  std::vector<Seq> seqs;
  bool integer;         // exact-arithmetic inputs
  int64_t block_tokens; // 0 = contiguous (one sequence only)
  bool fp8_cache;       // also run the 132-byte cache (integer/e4m3-representable keys only)
};

void run_case(const Case& c) {
  std::mt19937 rng(unsigned(c.H * 1000 + c.D + c.topk + c.seqs.size()));
  const int64_t H = c.H, D = c.D, n_seqs = int64_t(c.seqs.size());
  // Per sequence its own blocks, taken from one shuffled pool.
  const PagedTables pt = make_paged_tables(c.seqs, c.block_tokens, 3, rng);
  const bool paged = pt.paged;
  const int64_t bt = pt.bt, max_blocks = pt.max_blocks, max_keys = pt.max_keys, T = pt.T, rows = pt.rows;
  const std::vector<int32_t>& table = pt.table;

  // Keys (one cache per sequence region; rows of other sequences are simply other rows of the pool).
  std::vector<float> k(static_cast<size_t>(rows * D)), ks(static_cast<size_t>(rows));
  std::uniform_int_distribution<int> small(-3, 3);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t d = 0; d < D; ++d) k[size_t(r * D + d)] = c.integer ? float(small(rng)) : round_to_e4m3(nd(rng) * 64.0f);
    ks[size_t(r)] = c.integer ? std::ldexp(1.0f, int(rng() % 3) - 1) : std::ldexp(1.0f, -int(rng() % 4) - 6) * 1.37f;
  }
  // Queries.
  std::vector<float> q(static_cast<size_t>(T * H * D)), w(static_cast<size_t>(T * H)), qs(static_cast<size_t>(T * H));
  std::vector<int32_t> pos, qseq;
  for (int64_t s = 0; s < n_seqs; ++s)
    for (int32_t p : c.seqs[size_t(s)].positions) pos.push_back(p), qseq.push_back(int32_t(s));
  std::uniform_int_distribution<int> wi(-2, 2);
  for (auto& x : q) x = c.integer ? float(small(rng)) : round_to_e4m3(nd(rng) * 64.0f);
  for (auto& x : w) x = c.integer ? float(wi(rng)) : nd(rng);
  for (auto& x : qs) x = c.integer ? std::ldexp(1.0f, int(rng() % 3) - 1) : std::ldexp(1.0f, -int(rng() % 4) - 6);
  const float head_scale = c.integer ? 0.25f : float(1.0 / std::sqrt(double(H)) / std::sqrt(double(D)));

  // CPU reference, sequence by sequence.
  std::vector<int32_t> want(static_cast<size_t>(T * c.topk));
  std::vector<float> want_scores(static_cast<size_t>(T * max_keys), -INFINITY);
  auto cpu = create_backend("cpu");
  for (int64_t s = 0, t0 = 0; s < n_seqs; ++s) {
    const int64_t n = int64_t(c.seqs[size_t(s)].positions.size()), S = c.seqs[size_t(s)].n_keys;
    IndexerTopkArgs a;
    a.q = Tensor2D{q.data() + t0 * H * D, n, H * D, H * D};
    a.q_scale = Tensor2D{qs.data() + t0 * H, n, H, H};
    a.w = Tensor2D{w.data() + t0 * H, n, H, H};
    a.head_scale = head_scale;
    a.k = Tensor2D{k.data(), rows, D, D};
    a.k_scale = Tensor2D{ks.data(), rows, 1, 1};
    a.n_keys = S;
    a.block_table = paged ? table.data() + s * max_blocks : nullptr;
    a.block_tokens = bt;
    a.n_heads = H, a.head_dim = D;
    a.positions = pos.data() + t0;
    a.topk = c.topk;
    a.out_indices = want.data() + t0 * c.topk;
    std::vector<float> sc(static_cast<size_t>(n * S));
    a.out_scores = sc.data();
    cpu->indexer_topk(a);
    for (int64_t i = 0; i < n; ++i)
      std::copy_n(sc.data() + i * S, S, want_scores.data() + (t0 + i) * max_keys);
    t0 += n;
  }

  // GPU: the scores kernel over one cache format with one kernel, then the top-k kernel on its scores.
  std::vector<int32_t> seq_len;
  for (const auto& s : c.seqs) seq_len.push_back(int32_t(s.n_keys));
  DevBuf<float> dq(q), dw(w), dqs(qs), dk(k), dks(ks);
  DevBuf<int32_t> dpos(pos), dqseq(qseq), dlen(seq_len), dtable(table);
  // The 132-byte FP8 cache holding the same (e4m3-representable) keys and scales, in DeepGEMM's paged layout.
  const int64_t fbt = paged ? bt : 64, frows = (rows + fbt - 1) / fbt * fbt;
  std::vector<uint8_t> packed(static_cast<size_t>(frows * (D + 4)), 0);
  for (int64_t r = 0; r < rows; ++r) {
    uint8_t* pg = packed.data() + (r / fbt) * fbt * (D + 4);
    for (int64_t d = 0; d < D; ++d) pg[(r % fbt) * D + d] = f32_to_e4m3(k[size_t(r * D + d)]);
    std::memcpy(pg + fbt * D + (r % fbt) * 4, &ks[size_t(r)], 4);
  }
  DevBuf<uint8_t> dpacked(packed);
  auto run_gpu = [&](IndexKeyFormat fmt, IndexerKernel kernel, std::vector<float>& scores_out,
                     std::vector<int32_t>& idx_out) {
    DevBuf<float> dscores(static_cast<size_t>(T * max_keys));
    DevBuf<int32_t> dout(static_cast<size_t>(T * c.topk));
    IndexerScoresParams sp;
    sp.T = T, sp.H = H, sp.D = D, sp.q = dq.p, sp.q_t = H * D, sp.w = dw.p, sp.w_t = H, sp.q_scale = dqs.p,
    sp.qs_t = H;
    sp.head_scale = head_scale;
    sp.keys.format = fmt, sp.keys.D = D, sp.keys.k = dk.p, sp.keys.ld_k = D, sp.keys.scale = dks.p,
    sp.keys.ld_scale = 1, sp.keys.packed = dpacked.p, sp.keys.block_tokens = fbt;
    sp.blocks = BlockTable{paged ? dtable.p : nullptr, max_blocks, bt};
    sp.query_seq = dqseq.p, sp.seq_len = dlen.p, sp.n_keys = max_keys, sp.positions = dpos.p;
    sp.max_keys = max_keys, sp.scores = dscores.p, sp.scores_t = max_keys;
    sp.kernel = kernel;
    CUDA_OK(launch_indexer_scores(sp, nullptr));
    TopkParams tp;
    tp.T = T, tp.scores = dscores.p, tp.scores_t = max_keys, tp.query_seq = dqseq.p, tp.seq_len = dlen.p,
    tp.n_keys = max_keys, tp.positions = dpos.p, tp.k = c.topk, tp.out = dout.p, tp.out_t = c.topk;
    CUDA_OK(launch_indexer_topk(tp, nullptr));
    CUDA_OK(cudaDeviceSynchronize());
    scores_out = dscores.host();
    idx_out = dout.host();
  };

  // Compares one GPU result with the CPU: `tol` is the relative score tolerance of float inputs (integer inputs:
  // bit-exact scores and identical index lists).
  auto compare = [&](const char* what, const std::vector<float>& got_scores, const std::vector<int32_t>& got,
                     double tol) {
    int64_t bad_scores = 0;
    double worst = 0;
    for (int64_t t = 0; t < T; ++t) {
      const int64_t S = c.seqs[size_t(qseq[size_t(t)])].n_keys;
      for (int64_t s = 0; s < max_keys; ++s) {
        const float g = got_scores[size_t(t * max_keys + s)];
        const float r = s < S ? want_scores[size_t(t * max_keys + s)] : -INFINITY;
        if (c.integer || std::isinf(r)) {
          if (std::memcmp(&g, &r, 4) != 0) ++bad_scores;
        } else {
          const double d = std::fabs(double(g) - double(r));
          worst = std::max(worst, d);
          if (!(d <= tol * (std::fabs(r) + 1.0))) ++bad_scores;
        }
      }
    }
    CHECK(bad_scores == 0, "%s, %s: %lld scores off (worst |d| %.3g)", c.name, what, (long long)bad_scores, worst);
    int64_t bad_rows = 0;
    for (int64_t t = 0; t < T; ++t) {
      const int32_t* g = got.data() + t * c.topk;
      const int32_t* r = want.data() + t * c.topk;
      if (c.integer) {
        if (!std::equal(g, g + c.topk, r)) ++bad_rows;
        continue;
      }
      // Well-formed: ascending, unique, in range, −1 only as a suffix, same count.
      bool ok = true;
      int64_t ng = 0, nr = 0;
      const int64_t S = c.seqs[size_t(qseq[size_t(t)])].n_keys, vis = std::min<int64_t>(pos[size_t(t)] + 1, S);
      for (int64_t i = 0; i < c.topk; ++i) {
        if (g[i] >= 0) {
          ok &= ng == i && g[i] < vis && (i == 0 || g[i] > g[i - 1]);
          ++ng;
        }
        if (r[i] >= 0) ++nr;
      }
      ok &= ng == nr;
      // Differences only between tie-equivalent positions (CPU scores within twice the score tolerance of the
      // CPU's k-th score).
      if (ok && nr > 0) {
        const float* rs = want_scores.data() + t * max_keys;
        float kth = INFINITY;
        for (int64_t i = 0; i < nr; ++i) kth = std::min(kth, rs[r[i]]);
        std::vector<int32_t> diff;
        std::set_symmetric_difference(g, g + ng, r, r + nr, std::back_inserter(diff));
        for (int32_t s : diff) ok &= std::fabs(double(rs[s]) - double(kth)) <= 2 * tol * (std::fabs(kth) + 1.0);
      }
      if (!ok) ++bad_rows;
    }
    CHECK(bad_rows == 0, "%s, %s: %lld of %lld index rows differ", c.name, what, (long long)bad_rows, (long long)T);
    std::printf("%-44s %-22s T=%-5lld keys<=%-6lld worst|d| %.2e\n", c.name, what, (long long)T,
                (long long)max_keys, worst);
  };

  // fp32 CUDA cores over the F32 cache: fp32 reordering only (1e-5, see the top).
  std::vector<float> s32, s8, s8mma, s32mma;
  std::vector<int32_t> i32, i8, i8mma, i32mma;
  run_gpu(IndexKeyFormat::F32, IndexerKernel::CudaCore, s32, i32);
  compare("f32 cache, fp32 cores", s32, i32, 1e-5);
  if (c.fp8_cache) {
    // The FP8 cache decodes to the same values: the CUDA-core kernel must give bit-identical scores.
    run_gpu(IndexKeyFormat::FP8, IndexerKernel::CudaCore, s8, i8);
    CHECK(std::memcmp(s8.data(), s32.data(), s8.size() * 4) == 0 && i8 == i32,
          "%s: FP8-cache scores differ from the F32 cache", c.name);
    // e4m3 tensor cores: products exact, accumulation possibly with fewer bits than fp32 (Hopper FP8 MMA keeps
    // ~14): 1e-3 relative to the score scale bounds that for 4 k-steps of 32 (integer inputs stay exact: every
    // partial sum is a small integer).
    if (D % 32 == 0) {
      run_gpu(IndexKeyFormat::FP8, IndexerKernel::Fp8Mma, s8mma, i8mma);
      compare("fp8 cache, e4m3 MMA", s8mma, i8mma, 1e-3);
      run_gpu(IndexKeyFormat::F32, IndexerKernel::Fp8Mma, s32mma, i32mma);
      CHECK(std::memcmp(s8mma.data(), s32mma.data(), s8mma.size() * 4) == 0,
            "%s: e4m3 MMA over the F32 cache differs from the FP8 cache", c.name);
    }
  }
}

void test_topk_only() {
  std::mt19937 rng(7);
  struct Row {
    std::vector<float> s;
    int64_t visible;
  };
  std::vector<Row> rows;
  const int64_t W = 65536, K = 2048;
  auto add = [&](std::vector<float> s, int64_t visible) {
    s.resize(static_cast<size_t>(W), 12345.0f);  // garbage past `visible`: must be ignored
    rows.push_back({std::move(s), visible});
  };
  std::vector<float> v(static_cast<size_t>(W));
  std::fill(v.begin(), v.end(), 1.0f);
  add(v, W);  // all equal: the first K positions
  for (auto& x : v) x = float(int(rng() % 5)) - 2.0f;  // few distinct values, negatives, many ties
  add(v, W);
  for (size_t i = 0; i < v.size(); ++i) v[i] = (i % 2) ? 0.0f : -0.0f;  // ±0 are equal
  v[100] = 1e-30f;
  v[W - 1] = -1e-30f;
  add(v, 40000);
  for (auto& x : v) x = std::uniform_real_distribution<float>(-1e3f, 1e3f)(rng);
  add(v, W);
  add(v, K);      // visible == k
  add(v, K + 1);  // one too many
  add(v, K - 1);  // fewer than k: −1 padding
  add(v, 1);
  for (auto& x : v) x = std::ldexp(1.0f, int(rng() % 40) - 20) * ((rng() & 1) ? 1.f : -1.f);  // spread exponents
  add(v, 50000);
  std::vector<float> all;
  std::vector<int32_t> pos;
  for (const auto& r : rows) all.insert(all.end(), r.s.begin(), r.s.end()), pos.push_back(int32_t(r.visible - 1));
  const int64_t T = int64_t(rows.size());
  DevBuf<float> ds(all);
  DevBuf<int32_t> dpos(pos), dout(static_cast<size_t>(T * K));
  TopkParams tp;
  tp.T = T, tp.scores = ds.p, tp.scores_t = W, tp.n_keys = W, tp.positions = dpos.p, tp.k = K, tp.out = dout.p,
  tp.out_t = K;
  CUDA_OK(launch_indexer_topk(tp, nullptr));
  CUDA_OK(cudaDeviceSynchronize());
  const std::vector<int32_t> got = dout.host();
  for (int64_t t = 0; t < T; ++t) {
    const std::vector<int32_t> want = host_topk(rows[size_t(t)].s.data(), rows[size_t(t)].visible, K);
    CHECK(std::equal(want.begin(), want.end(), got.begin() + t * K), "top-k row %lld (visible %lld) differs",
          (long long)t, (long long)rows[size_t(t)].visible);
  }
  std::printf("%-44s T=%-5lld ok\n", "top-k kernel, adversarial rows (k=2048)", (long long)T);
}

std::vector<int32_t> iota_positions(int32_t from, int32_t to) {
  std::vector<int32_t> v;
  for (int32_t p = from; p < to; ++p) v.push_back(p);
  return v;
}

}  // namespace

int main() {
  int n_dev = 0;
  if (cudaGetDeviceCount(&n_dev) != cudaSuccess || n_dev == 0) {
    std::printf("SKIP: no CUDA device\n");
    return 77;
  }
  test_topk_only();
  // Exact cases (integer inputs): small dims (v32-tiny: 8 heads x 64, top-k 16) and real dims.
  run_case({"exact tiny prefill, contiguous", 8, 64, 16, {{100, iota_positions(0, 100)}}, true, 0, true});
  run_case({"exact tiny prefill chunk, paged", 16, 64, 16, {{300, iota_positions(200, 300)}}, true, 16, true});
  run_case({"exact V3.2 decode, 4 sequences, paged", 64, 128, 2048,
            {{3000, {2999}}, {8192, {8191}}, {2049, {2048}}, {100, {99}}}, true, 64, true});
  run_case({"exact V3.2 prefill 2.5K, paged", 64, 128, 2048, {{2560, iota_positions(0, 2560)}}, true, 64, true});
  // Random floats at real dims.
  run_case({"float V3.2 decode 8K, paged", 64, 128, 2048, {{8192, {8191, 5000, 2047}}}, false, 64, true});
  run_case({"float V3.2 prefill chunk 7K..8K, contiguous", 64, 128, 2048, {{8192, iota_positions(7168, 8192)}},
            false, 0, true});
  run_case({"float V3.2 batch of 16 decodes, paged", 64, 128, 2048,
            {{4096, {4095}}, {8192, {8191}}, {2500, {2499}}, {6000, {5999}}, {4096, {4095}}, {8192, {8191}},
             {2500, {2499}}, {6000, {5999}}, {4096, {4095}}, {8192, {8191}}, {2500, {2499}}, {6000, {5999}},
             {4096, {4095}}, {8192, {8191}}, {2500, {2499}}, {6000, {5999}}},
            false, 64, false});
  if (g_failures) {
    std::printf("%d check(s) failed\n", g_failures);
    return 1;
  }
  std::printf("test_indexer: all checks passed\n");
  return 0;
}
