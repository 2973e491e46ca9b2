// CPU reference backend ops checked against direct, loop-by-loop formulas (double precision) and the properties
// the spec states. The FP8 ops are also checked against the independent emulation's goldens (test_fp8_golden.cpp).
#include <catch2/catch.hpp>

#include <bit>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <memory>
#include <cmath>
#include <random>
#include <numeric>
#include <vector>

#include "backend/cpu/cpu_backend.hpp"
#include "dsinfer/error.hpp"

using namespace dsinfer;

namespace {

struct Rand {
  std::mt19937 gen;
  explicit Rand(uint32_t seed) : gen(seed) {}
  float uniform(float a = -1, float b = 1) { return std::uniform_real_distribution<float>(a, b)(gen); }
  void fill(Tensor2D t, float a = -1, float b = 1) {
    for (int64_t r = 0; r < t.rows; ++r)
      for (int64_t c = 0; c < t.cols; ++c) t.row(r)[c] = uniform(a, b);
  }
};

// An F32 weight over caller-owned storage.
Weight f32_weight(std::vector<float>& data, int64_t rows, int64_t cols, const char* name = "w") {
  Weight w;
  w.name = name;
  w.dtype = DType::F32;
  w.shape = cols > 1 || rows == 0 ? std::vector<int64_t>{rows, cols} : std::vector<int64_t>{rows};
  w.data = reinterpret_cast<const uint8_t*>(data.data());
  return w;
}

double max_abs_diff(Tensor2D a, Tensor2D b) {
  double m = 0;
  for (int64_t r = 0; r < a.rows; ++r)
    for (int64_t c = 0; c < a.cols; ++c) m = std::max(m, double(std::fabs(a.row(r)[c] - b.row(r)[c])));
  return m;
}

}  // namespace

TEST_CASE("linear dequantizes FP8 weights with their 128x128 block scales, partial edge blocks included", "[cpu]") {
  CpuBackend be({2});
  Rand rnd(1);
  const int64_t T = 3, N = 200, K = 300;  // two partial edge blocks
  std::vector<uint8_t> w8(size_t(N * K));
  for (auto& b : w8) {
    do b = uint8_t(rnd.gen() & 0xff); while ((b & 0x7f) == 0x7f);  // no NaN codes
  }
  std::vector<float> scale(size_t(2 * 3));
  for (auto& s : scale) s = rnd.uniform(0.001f, 0.01f);
  Weight w;
  w.name = "fp8";
  w.dtype = DType::F8_E4M3;
  w.shape = {N, K};
  w.data = w8.data();
  w.scale_inv = scale.data();
  Matrix x = be.matrix(T, K), y = be.matrix(T, N);
  rnd.fill(x.view);
  be.linear(x.view, w, y.view, LinearQuant{});
  for (int64_t t = 0; t < T; ++t)
    for (int64_t n = 0; n < N; ++n) {
      double ref = 0;
      for (int64_t k = 0; k < K; ++k)
        ref += double(x.view.row(t)[k]) * e4m3_to_f32(w8[size_t(n * K + k)]) * scale[size_t((n / 128) * 3 + k / 128)];
      REQUIRE(y.view.row(t)[n] == Approx(ref).margin(1e-5));
    }
}

TEST_CASE("the FP8 GEMM gives bitwise the same rows whatever the number of rows (decode and prefill kernels)",
          "[cpu][fp8]") {
  CpuBackend be({2});
  Rand rnd(11);
  const int64_t N = 70, K = 300;
  std::vector<uint8_t> w8(static_cast<size_t>(N * K));
  for (auto& b : w8) {
    do b = uint8_t(rnd.gen() & 0xff); while ((b & 0x7f) == 0x7f);
  }
  std::vector<float> scale(static_cast<size_t>(1 * 3), 0.01f);
  Weight w{"fp8", DType::F8_E4M3, {N, K}, w8.data(), scale.data()};
  Matrix x = be.matrix(12, K);
  rnd.fill(x.view);
  Matrix all = be.matrix(12, N);
  be.linear(x.view, w, all.view, LinearQuant{true, true});  // 12 rows: the converted-panel (prefill) kernel
  for (int64_t r = 0; r < 12; ++r) {
    Matrix one = be.matrix(1, N);
    be.linear(x.view.rows_slice(r, 1), w, one.view, LinearQuant{true, true});  // 1 row: the decode kernel
    for (int64_t n = 0; n < N; ++n) REQUIRE(one.view.row(0)[n] == all.view.row(r)[n]);
  }
}

TEST_CASE("linear reads BF16 and F16 weights exactly", "[cpu]") {
  CpuBackend be({1});
  const int64_t N = 3, K = 5;
  std::vector<uint16_t> bf(size_t(N * K)), hf(size_t(N * K));
  std::vector<float> ref(size_t(N * K));
  for (int64_t i = 0; i < N * K; ++i) {
    ref[size_t(i)] = float(i - 7) * 0.25f;  // exactly representable in both
    bf[size_t(i)] = f32_to_bf16(ref[size_t(i)]);
  }
  // f16 of k*0.25: sign, exponent, mantissa built by hand through the decoder's inverse on a small set.
  for (int64_t i = 0; i < N * K; ++i) {
    for (uint32_t h = 0; h < 0x7c00; ++h)
      if (f16_to_f32(uint16_t(h)) == std::fabs(ref[size_t(i)])) {
        hf[size_t(i)] = uint16_t(h | (ref[size_t(i)] < 0 ? 0x8000 : 0));
        break;
      }
  }
  Matrix x = be.matrix(1, K), y1 = be.matrix(1, N), y2 = be.matrix(1, N);
  for (int64_t k = 0; k < K; ++k) x.view.row(0)[k] = float(k + 1);
  Weight wb{"bf", DType::BF16, {N, K}, reinterpret_cast<const uint8_t*>(bf.data())};
  Weight wh{"hf", DType::F16, {N, K}, reinterpret_cast<const uint8_t*>(hf.data())};
  be.linear(x.view, wb, y1.view, LinearQuant{true, true});  // fp8 activations never apply to non-FP8 weights
  be.linear(x.view, wh, y2.view, LinearQuant{});
  for (int64_t n = 0; n < N; ++n) {
    double r = 0;
    for (int64_t k = 0; k < K; ++k) r += double(k + 1) * ref[size_t(n * K + k)];
    CHECK(y1.view.row(0)[n] == float(r));
    CHECK(y2.view.row(0)[n] == float(r));
  }
}

TEST_CASE("RoPE layouts pair the right elements and rotate by position x frequency", "[cpu][rope]") {
  CpuBackend be({1});
  const int64_t d = 8;
  std::vector<float> inv = {1.0f, 0.5f, 0.25f, 0.125f};
  const int32_t pos[1] = {3};
  for (auto layout : {RopeLayout::Interleaved, RopeLayout::HalfSplit}) {
    Matrix x = be.matrix(1, 2 + d);  // 2 untouched leading elements (rope_offset)
    for (int64_t i = 0; i < 2 + d; ++i) x.view.row(0)[i] = float(i + 1);
    be.rope({x.view, 1, 2 + d, 2, d, inv.data(), pos, layout});
    CHECK(x.view.row(0)[0] == 1.0f);
    CHECK(x.view.row(0)[1] == 2.0f);
    for (int64_t j = 0; j < d / 2; ++j) {
      const int64_t i0 = layout == RopeLayout::Interleaved ? 2 * j : j;
      const int64_t i1 = layout == RopeLayout::Interleaved ? 2 * j + 1 : j + d / 2;
      const double a = 3.0 * inv[size_t(j)], x0 = 2 + i0 + 1, x1 = 2 + i1 + 1;
      CHECK(x.view.row(0)[2 + i0] == Approx(x0 * std::cos(a) - x1 * std::sin(a)).margin(1e-5));
      CHECK(x.view.row(0)[2 + i1] == Approx(x0 * std::sin(a) + x1 * std::cos(a)).margin(1e-5));
    }
  }
}

TEST_CASE("Hadamard is the normalized Sylvester matrix", "[cpu][hadamard]") {
  CpuBackend be({1});
  Rand rnd(2);
  const int64_t n = 64;
  Matrix x = be.matrix(2, 2 * n), y = be.matrix(2, 2 * n);
  rnd.fill(x.view);
  be.copy(y.view, x.view);
  be.hadamard(y.view, n);
  for (int64_t r = 0; r < 2; ++r)
    for (int64_t b = 0; b < 2; ++b)
      for (int64_t i = 0; i < n; ++i) {
        double ref = 0;
        for (int64_t j = 0; j < n; ++j)
          ref += (std::popcount(uint64_t(i & j)) % 2 ? -1.0 : 1.0) * x.view.row(r)[b * n + j];
        REQUIRE(y.view.row(r)[b * n + i] == Approx(ref / std::sqrt(double(n))).margin(1e-5));
      }
}

TEST_CASE("fp8 activation scales follow the ue8m0 rule exactly", "[cpu][fp8]") {
  CHECK(fp8_group_scale(448.0f, true) == 1.0f);           // amax/448 = 1 = 2^0
  CHECK(fp8_group_scale(449.0f, true) == 2.0f);           // just above: next power of two
  CHECK(fp8_group_scale(224.0f, true) == 0.5f);
  CHECK(fp8_group_scale(0.0f, true) == std::ldexp(1.0f, -22));  // floored amax 1e-4: 1e-4/448 ≈ 2^-22.09 -> 2^-22
  CHECK(fp8_group_scale(448.0f * 3, false) == 3.0f);
}

TEST_CASE("the two MLA forms agree with a direct MHA formula, dense and sparse", "[cpu][mla]") {
  CpuBackend be({2});
  Rand rnd(3);
  const int64_t T = 5, S = 9, H = 3, dn = 8, dr = 4, dv = 6, C = 16;
  Matrix q = be.matrix(T, H * (dn + dr)), lat = be.matrix(S, C), kpe = be.matrix(S, dr), wkv = be.matrix(H * (dn + dv), C);
  rnd.fill(q.view);
  rnd.fill(lat.view);
  rnd.fill(kpe.view);
  rnd.fill(wkv.view, -0.5f, 0.5f);
  const int32_t positions[T] = {4, 5, 6, 7, 8};
  // Sparse: each query sees 3 chosen keys (one of them in its future, which causality must drop) and a -1 slot.
  const int32_t indices[T * 4] = {0, 2, 4, -1, 1, 5, 7, -1, 0, 6, 3, -1, 7, 2, 8, -1, 8, 0, 1, -1};
  for (bool sparse : {false, true}) {
    Matrix o_mha = be.matrix(T, H * dv), o_abs = be.matrix(T, H * dv);
    MlaArgs a;
    a.q = q.view;
    a.latent = lat.view;
    a.k_pe = kpe.view;
    a.n_keys = S;
    a.wkv_b = wkv.view;
    a.n_heads = H;
    a.nope_dim = dn;
    a.rope_dim = dr;
    a.v_dim = dv;
    a.softmax_scale = 0.3f;
    a.positions = positions;
    a.indices = sparse ? indices : nullptr;
    a.n_indices = sparse ? 4 : 0;
    a.mode = MlaMode::Mha;
    a.out = o_mha.view;
    be.mla_attention(a);
    a.mode = MlaMode::Absorbed;
    a.out = o_abs.view;
    be.mla_attention(a);
    CHECK(max_abs_diff(o_mha.view, o_abs.view) < 1e-5);
    // Direct formula in double.
    for (int64_t t = 0; t < T; ++t)
      for (int64_t h = 0; h < H; ++h) {
        std::vector<int> keys;
        for (int s = 0; s <= positions[t]; ++s) {
          bool chosen = !sparse;
          for (int i = 0; sparse && i < 4; ++i) chosen |= indices[t * 4 + i] == s;
          if (chosen) keys.push_back(s);
        }
        std::vector<double> sc;
        for (int s : keys) {
          double dot = 0;
          for (int64_t d = 0; d < dn; ++d) {
            double k = 0;
            for (int64_t c = 0; c < C; ++c) k += double(lat.view.row(s)[c]) * wkv.view.row(h * (dn + dv) + d)[c];
            dot += q.view.row(t)[h * (dn + dr) + d] * k;
          }
          for (int64_t d = 0; d < dr; ++d) dot += double(q.view.row(t)[h * (dn + dr) + dn + d]) * kpe.view.row(s)[d];
          sc.push_back(dot * 0.3);
        }
        double mx = *std::max_element(sc.begin(), sc.end()), sum = 0;
        for (auto& v : sc) sum += (v = std::exp(v - mx));
        for (int64_t j = 0; j < dv; ++j) {
          double o = 0;
          for (size_t i = 0; i < keys.size(); ++i) {
            double v = 0;
            for (int64_t c = 0; c < C; ++c) v += double(lat.view.row(keys[i])[c]) * wkv.view.row(h * (dn + dv) + dn + j)[c];
            o += sc[i] / sum * v;
          }
          REQUIRE(o_abs.view.row(t)[h * dv + j] == Approx(o).margin(1e-5));
        }
      }
  }
}

TEST_CASE("indexer top-k is causal, picks the highest weighted-ReLU scores and pads with -1", "[cpu][indexer]") {
  CpuBackend be({2});
  Rand rnd(4);
  const int64_t T = 4, S = 10, H = 2, D = 8, K = 3;
  Matrix q = be.matrix(T, H * D), k = be.matrix(S, D), w = be.matrix(T, H), ks = be.matrix(S, 1), qs = be.matrix(T, H);
  rnd.fill(q.view);
  rnd.fill(k.view);
  rnd.fill(w.view);
  rnd.fill(ks.view, 0.5f, 2.0f);
  rnd.fill(qs.view, 0.5f, 2.0f);
  const int32_t positions[T] = {1, 4, 8, 9};
  std::vector<int32_t> idx(size_t(T * K));
  std::vector<float> scores(size_t(T * S));
  IndexerTopkArgs a;
  a.q = q.view;
  a.q_scale = qs.view;
  a.w = w.view;
  a.head_scale = 0.25f;
  a.k = k.view;
  a.k_scale = ks.view;
  a.n_keys = S;
  a.n_heads = H;
  a.head_dim = D;
  a.positions = positions;
  a.topk = K;
  a.out_indices = idx.data();
  a.out_scores = scores.data();
  be.indexer_topk(a);
  for (int64_t t = 0; t < T; ++t) {
    std::vector<std::pair<double, int>> ref;
    for (int s = 0; s <= positions[t]; ++s) {
      double acc = 0;
      for (int64_t h = 0; h < H; ++h) {
        double d = 0;
        for (int64_t i = 0; i < D; ++i) d += double(q.view.row(t)[h * D + i]) * k.view.row(s)[i];
        acc += double(w.view.row(t)[h]) * 0.25 * qs.view.row(t)[h] * std::max(d, 0.0);
      }
      ref.push_back({acc * ks.view.row(s)[0], s});
      REQUIRE(scores[size_t(t * S + s)] == Approx(ref.back().first).margin(1e-5));
    }
    std::sort(ref.begin(), ref.end(), [](auto& x, auto& y) { return x.first > y.first; });
    std::vector<int> want;
    for (size_t i = 0; i < std::min<size_t>(K, ref.size()); ++i) want.push_back(ref[i].second);
    std::sort(want.begin(), want.end());
    std::vector<int> got;
    for (int64_t i = 0; i < K; ++i)
      if (idx[size_t(t * K + i)] >= 0) got.push_back(idx[size_t(t * K + i)]);
    CHECK(got == want);
    if (positions[t] + 1 < K) CHECK(idx[size_t(t * K + K - 1)] == -1);
  }
}

TEST_CASE("indexer top-k ranks negative and zero scores in order and breaks ties by earlier position",
          "[cpu][indexer]") {
  // One head with a negative weight: a key's score is -max(k0, 0), so positive k0 give negative scores (several
  // equal) and the others give zeros, which must win, earliest first among equals.
  CpuBackend be({1});
  const int64_t S = 12, D = 4, K = 7;
  const float k0[S] = {0.5f, -1.0f, 0.5f, 2.0f, 0.0f, 0.5f, 3.0f, -2.0f, 0.5f, 1.0f, 0.5f, 0.0f};
  Matrix q = be.matrix(1, D), k = be.matrix(S, D), w = be.matrix(1, 1);
  be.fill_zero(q.view);
  be.fill_zero(k.view);
  q.view.row(0)[0] = 1.0f;
  w.view.row(0)[0] = -1.0f;
  for (int64_t s = 0; s < S; ++s) k.view.row(s)[0] = k0[s];
  const int32_t position = int32_t(S - 1);
  std::vector<int32_t> idx(static_cast<size_t>(K));
  std::vector<float> scores(static_cast<size_t>(S));
  IndexerTopkArgs a;
  a.q = q.view;
  a.w = w.view;
  a.head_scale = 1.0f;
  a.k = k.view;
  a.n_keys = S;
  a.n_heads = 1;
  a.head_dim = D;
  a.positions = &position;
  a.topk = K;
  a.out_indices = idx.data();
  a.out_scores = scores.data();
  be.indexer_topk(a);
  std::vector<int32_t> rank(S);
  std::iota(rank.begin(), rank.end(), 0);
  std::stable_sort(rank.begin(), rank.end(), [&](int32_t i, int32_t j) { return scores[size_t(i)] > scores[size_t(j)]; });
  std::vector<int32_t> want(rank.begin(), rank.begin() + K);
  std::sort(want.begin(), want.end());
  CHECK(idx == want);
  CHECK(idx == std::vector<int32_t>{0, 1, 2, 4, 5, 7, 11});  // the four zeros, then the first three -0.5s
}

TEST_CASE("a decode query's top-k, selected over keys split across threads, equals its top-k in a batch",
          "[cpu][indexer]") {
  // Fewer queries than threads: each query's keys are split over the threads and the parts' tops merged. Keys take
  // five values (at random), so the top k come from every part and some scores tie, where the earlier-position
  // rule decides across part boundaries.
  CpuBackend be({4});
  Rand rnd(9);
  const int64_t S = 9000, H = 2, D = 16, K = 256, B = 8;
  Matrix q1 = be.matrix(1, H * D), qb = be.matrix(B, H * D), k = be.matrix(S, D), w1 = be.matrix(1, H),
         wb = be.matrix(B, H);
  rnd.fill(q1.view);
  rnd.fill(w1.view, 0.5f, 1.0f);
  for (int64_t s = 0; s < S; ++s)
    for (int64_t i = 0; i < D; ++i) k.view.row(s)[i] = std::round(rnd.uniform(-2.5f, 2.5f));
  for (int64_t b = 0; b < B; ++b) {
    std::memcpy(qb.view.row(b), q1.view.row(0), size_t(H * D) * sizeof(float));
    std::memcpy(wb.view.row(b), w1.view.row(0), size_t(H) * sizeof(float));
  }
  for (const int32_t pos : {int32_t(S - 1), int32_t(5000), int32_t(2100), int32_t(700)}) {
    std::vector<int32_t> positions(static_cast<size_t>(B), pos), one(static_cast<size_t>(K)),
        batch(static_cast<size_t>(B * K));
    std::vector<float> scores(static_cast<size_t>(S));
    IndexerTopkArgs a;
    a.head_scale = 1.0f;
    a.k = k.view;
    a.n_keys = S;
    a.n_heads = H;
    a.head_dim = D;
    a.topk = K;
    a.q = q1.view;
    a.w = w1.view;
    a.positions = positions.data();
    a.out_indices = one.data();
    a.out_scores = scores.data();
    be.indexer_topk(a);  // one query: the split selection
    a.q = qb.view;
    a.w = wb.view;
    a.out_indices = batch.data();
    a.out_scores = nullptr;
    be.indexer_topk(a);  // B >= threads queries: one selection per query
    for (int64_t b = 0; b < B; ++b)
      CHECK(std::vector<int32_t>(batch.begin() + b * K, batch.begin() + (b + 1) * K) == one);
    std::vector<int32_t> rank(size_t(pos) + 1);
    std::iota(rank.begin(), rank.end(), 0);
    std::stable_sort(rank.begin(), rank.end(),
                     [&](int32_t i, int32_t j) { return scores[size_t(i)] > scores[size_t(j)]; });
    std::vector<int32_t> want(rank.begin(), rank.begin() + K);
    std::sort(want.begin(), want.end());
    CHECK(one == want);
  }
}

TEST_CASE("indexer top-k over many keys with spread scores: the histogram-narrowed selection keeps the exact set",
          "[cpu][indexer]") {
  // Past 4k keys per selection the top k are found among the entries of the histogram bucket that holds the k-th
  // highest and above. Continuous scores of both signs (two heads, one weight negative), plus runs of equal keys,
  // for one query (keys split over the threads) and for a batch (one selection per query), against a stable sort.
  CpuBackend be({3});
  Rand rnd(21);
  const int64_t S = 7000, H = 2, D = 8, B = 3;
  Matrix q = be.matrix(B, H * D), k = be.matrix(S, D), w = be.matrix(B, H);
  rnd.fill(q.view);
  rnd.fill(k.view);
  for (int64_t b = 0; b < B; ++b) {
    w.view.row(b)[0] = 1.0f;
    w.view.row(b)[1] = -0.75f;
  }
  for (int64_t s = 100; s < 400; ++s) std::memcpy(k.view.row(s), k.view.row(99), size_t(D) * sizeof(float));
  for (const int64_t K : {int64_t(1), int64_t(64), int64_t(300), int64_t(1500)})
    for (const int64_t T : {int64_t(1), B}) {
      std::vector<int32_t> positions(static_cast<size_t>(T));
      for (int64_t t = 0; t < T; ++t) positions[size_t(t)] = int32_t(S - 1 - 1000 * t);
      std::vector<int32_t> idx(static_cast<size_t>(T * K));
      std::vector<float> scores(static_cast<size_t>(T * S));
      IndexerTopkArgs a;
      a.q = Tensor2D{q.view.data, T, H * D, H * D};
      a.w = Tensor2D{w.view.data, T, H, H};
      a.head_scale = 1.0f;
      a.k = k.view;
      a.n_keys = S;
      a.n_heads = H;
      a.head_dim = D;
      a.positions = positions.data();
      a.topk = K;
      a.out_indices = idx.data();
      a.out_scores = scores.data();
      be.indexer_topk(a);
      for (int64_t t = 0; t < T; ++t) {
        const float* sc = scores.data() + t * S;
        std::vector<int32_t> rank(size_t(positions[size_t(t)]) + 1);
        std::iota(rank.begin(), rank.end(), 0);
        std::stable_sort(rank.begin(), rank.end(), [&](int32_t i, int32_t j) { return sc[i] > sc[j]; });
        std::vector<int32_t> want(rank.begin(), rank.begin() + K);
        std::sort(want.begin(), want.end());
        INFO("K " << K << " T " << T << " t " << t);
        CHECK(std::vector<int32_t>(idx.begin() + t * K, idx.begin() + (t + 1) * K) == want);
      }
    }
}

TEST_CASE("MoE routing is group-limited, bias-steered and weighted by unbiased scores", "[cpu][moe]") {
  CpuBackend be({1});
  // 8 experts in 4 groups of 2; keep 2 groups; pick top-2. Gate = identity-like so logits are chosen directly.
  const int64_t E = 8, hidden = 8;
  std::vector<float> gate(size_t(E * hidden), 0.0f), bias(size_t(E), 0.0f);
  for (int64_t e = 0; e < E; ++e) gate[size_t(e * hidden + e)] = 1.0f;
  Weight gw = f32_weight(gate, E, hidden, "gate");
  Weight bw = f32_weight(bias, E, 1, "bias");
  Matrix x = be.matrix(1, hidden);
  // Expert logits: group0 {3, -5}, group1 {2, 2}, group2 {2.5, -5}, group3 {0, 0}.
  const float logits[E] = {3, -5, 2, 2, 2.5f, -5, 0, 0};
  for (int64_t e = 0; e < E; ++e) x.view.row(0)[e] = logits[e];
  auto sig = [](double v) { return 1.0 / (1.0 + std::exp(-v)); };
  int32_t ids[2];
  float wts[2];
  MoeRouteArgs a;
  a.x = x.view;
  a.gate = &gw;
  a.bias = &bw;
  a.n_experts = E;
  a.n_group = 4;
  a.topk_group = 2;
  a.top_k = 2;
  a.routed_scale = 2.5f;
  a.out_experts = ids;
  a.out_weights = wts;
  be.moe_route(a);
  // Group scores (sum of top-2): g0 = σ3+σ-5 ≈ 0.959, g1 = 2σ2 ≈ 1.762, g2 ≈ 0.931, g3 = 1.0 -> keep g1, g3.
  // Unlimited top-2 would be experts 0 and 4; group limiting gives 2 and 3.
  CHECK(((ids[0] == 2 && ids[1] == 3) || (ids[0] == 3 && ids[1] == 2)));
  CHECK(wts[0] == Approx(1.25).epsilon(1e-6));  // equal scores, normalized, times 2.5
  // A bias on expert 6 lifts group 3 above group 1 and makes 6 win, but its weight uses the unbiased score.
  bias[6] = 1.0f;
  be.moe_route(a);
  const double s6 = sig(0), s2 = sig(2);
  // Groups now: g3 = σ0+1+σ0 = 2.0 > g1 = 1.76 > g0: kept g3, g1; top-2 by biased score: 6 (1.5), then 2 (0.88).
  CHECK(ids[0] == 6);
  CHECK(ids[1] == 2);
  CHECK(wts[0] == Approx(2.5 * s6 / (s6 + s2)).epsilon(1e-6));
  CHECK(wts[1] == Approx(2.5 * s2 / (s6 + s2)).epsilon(1e-6));
}

TEST_CASE("embedding rejects ids outside the table", "[cpu]") {
  CpuBackend be({1});
  std::vector<float> table(4 * 2, 1.0f);
  Weight t = f32_weight(table, 4, 2, "embed");
  Matrix out = be.matrix(1, 2);
  const int32_t bad[1] = {4};
  try {
    be.embed(t, bad, out.view);
    FAIL("no error");
  } catch (const Error& e) {
    CHECK(e.code() == ErrorCode::InvalidArgument);
    CHECK_THAT(e.what(), Catch::Contains("token id 4"));
  }
}

TEST_CASE("activation buffers are recycled, zeroed on request, and may outlive the backend", "[cpu][memory]") {
  auto be = std::make_unique<CpuBackend>(BackendOptions{1});
  void* first;
  {
    Buffer b = be->allocate(1000);
    first = b.data();
    std::memset(b.data(), 0x5a, 1000);
  }
  Buffer again = be->allocate(1000);  // the same size comes back from the cache ...
  REQUIRE(again.data() == first);
  for (int i = 0; i < 1000; ++i) REQUIRE(static_cast<unsigned char*>(again.data())[i] == 0);  // ... zeroed
  REQUIRE(reinterpret_cast<uintptr_t>(again.data()) % 64 == 0);
  Buffer other = be->allocate(1000);  // while it is in use, another block
  REQUIRE(other.data() != again.data());
  Matrix m = be->matrix(3, 5);
  be.reset();  // buffers still alive: released later without the backend
  m.view.data[14] = 1.0f;
  REQUIRE(m.view.data[0] == 0.0f);
}

namespace {
// The VmFlags line of /proc/self/smaps for the mapping that holds address p ("" if none).
std::string vm_flags_of(const void* p) {
  std::ifstream smaps("/proc/self/smaps");
  std::string line;
  bool inside = false;
  while (std::getline(smaps, line)) {
    uintptr_t lo = 0, hi = 0;
    char dash = 0;
    std::istringstream range(line);
    if (range >> std::hex >> lo >> dash >> hi && dash == '-' && line.find(':') > line.find(' ')) {
      inside = uintptr_t(p) >= lo && uintptr_t(p) < hi;
      continue;
    }
    if (inside && line.rfind("VmFlags:", 0) == 0) return line;
  }
  return "";
}
}  // namespace

TEST_CASE("blocks of a huge page or more start at a huge-page boundary and ask for transparent huge pages",
          "[cpu][memory]") {
  CpuBackend be(BackendOptions{1});
  constexpr size_t kHuge = size_t(2) << 20;
  const size_t bytes = 3 * kHuge + 100;
  Buffer b = be.allocate(bytes, /*zero=*/true);
  const auto* p = static_cast<const unsigned char*>(b.data());
  REQUIRE((reinterpret_cast<uintptr_t>(p) - 64) % kHuge == 0);  // its 64-byte header first
  bool zero = true;
  for (size_t i = 0; i < bytes; i += 4096) zero = zero && p[i] == 0;
  REQUIRE((zero && p[bytes - 1] == 0));
  std::memset(b.data(), 0x5a, bytes);  // every byte of it is the caller's
  if (std::ifstream("/sys/kernel/mm/transparent_hugepage/enabled")) {  // a kernel with THP takes the hint
    const std::string flags = vm_flags_of(p);
    INFO(flags);
    CHECK(flags.find(" hg") != std::string::npos);
  }
  // A block under a huge page is mapped as it comes.
  Buffer small = be.allocate(kHuge / 2 + 4096);
  REQUIRE(reinterpret_cast<uintptr_t>(small.data()) % 64 == 0);
  CHECK(vm_flags_of(small.data()).find(" hg") == std::string::npos);
}
