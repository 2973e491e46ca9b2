// CUDA backend vs CPU backend: memory ops, embed, norms, SwiGLU, add, RoPE, Hadamard, FP8 activation
// quantization and weight dequantization, on random inputs at real DeepSeek-V3.2 widths and odd ones.
#include <catch2/catch.hpp>

#include <cmath>
#include <iterator>
#include <numeric>

#include "cuda_test_util.hpp"

using namespace dsinfer;
using namespace dsinfer::cuda_test;

namespace {

struct Pair {
  std::unique_ptr<Backend> cpu = create_backend("cpu"), gpu = create_backend("cuda");
};

Pair& backends() {
  static Pair p;
  return p;
}

}  // namespace

TEST_CASE("memory: from_host, copy of strided views, fill_zero, to_host") {
  auto& [cpu, gpu] = backends();
  std::mt19937 rng(1);
  const auto host = randn(37 * 300, rng);
  Matrix a = upload(*gpu, host, 37, 300);
  CHECK(download(*gpu, a.view) == host);
  Matrix b = gpu->matrix(37, 100);
  gpu->copy(b.view, a.view.cols_slice(150, 100));
  const auto got = download(*gpu, b.view);
  for (int64_t r = 0; r < 37; ++r)
    for (int64_t c = 0; c < 100; ++c) REQUIRE(got[size_t(r * 100 + c)] == host[size_t(r * 300 + 150 + c)]);
  gpu->fill_zero(a.view.rows_slice(3, 5).cols_slice(7, 9));
  const auto z = download(*gpu, a.view);
  for (int64_t r = 0; r < 37; ++r)
    for (int64_t c = 0; c < 300; ++c) {
      const bool in = r >= 3 && r < 8 && c >= 7 && c < 16;
      REQUIRE(z[size_t(r * 300 + c)] == (in ? 0.0f : host[size_t(r * 300 + c)]));
    }
  Buffer big = gpu->allocate(size_t(1) << 24, false);  // uninitialized allocations work and free cleanly
  CHECK(big.data() != nullptr);
}

TEST_CASE("embed and dequantize decode every dtype exactly") {
  auto& [cpu, gpu] = backends();
  std::mt19937 rng(2);
  for (DType t : {DType::BF16, DType::F32, DType::F16}) {
    auto w = dense_weight(t, {1000, 7168 / 4}, rng, 0.5f, "embed");
    const std::vector<int32_t> ids = {0, 999, 17, 17, 512};
    Matrix oc = cpu->matrix(5, w->w.cols()), og = gpu->matrix(5, w->w.cols());
    cpu->embed(w->w, ids, oc.view);
    const auto ids_gpu = to_backend(*gpu, ids);  // index data lives on the backend (interface v2)
    gpu->embed(w->w, std::span<const int32_t>(ids_gpu.data(), ids.size()), og.view);
    INFO("dtype " << dtype_name(t));
    CHECK(download(*gpu, og.view) == download(*cpu, oc.view));
  }
  auto f8 = fp8_weight(576, 7168, rng);  // wkv_a: a partial last row block (576 = 4.5 x 128)
  Matrix dc = cpu->dequantize(f8->w), dg = gpu->dequantize(f8->w);
  CHECK(download(*gpu, dg.view) == download(*cpu, dc.view));
}

TEST_CASE("rms_norm, add_rms_norm, layer_norm") {
  auto& [cpu, gpu] = backends();
  std::mt19937 rng(3);
  for (int64_t cols : {7168, 1536, 512, 128, 333}) {
    for (int64_t rows : {1, 5, 64}) {
      INFO("rows " << rows << " cols " << cols);
      const auto x = randn(size_t(rows * cols), rng, 3.0f), r = randn(size_t(rows * cols), rng);
      auto g = dense_weight(DType::BF16, {cols}, rng, 1.0f, "norm");
      auto b = dense_weight(DType::F32, {cols}, rng, 1.0f, "bias");
      Matrix xc = upload(*cpu, x, rows, cols), xg = upload(*gpu, x, rows, cols);
      Matrix rc = upload(*cpu, r, rows, cols), rg = upload(*gpu, r, rows, cols);
      Matrix oc = cpu->matrix(rows, cols), og = gpu->matrix(rows, cols);
      // Double sums on both sides in a different order: the fp32 1/rms may differ by an ulp, which moves an
      // output of a few RMS by ~5e-7 of the RMS.
      cpu->rms_norm(xc.view, g->w, 1e-6f, oc.view);
      gpu->rms_norm(xg.view, g->w, 1e-6f, og.view);
      Diff d = compare(download(*cpu, oc.view), download(*gpu, og.view), rows, cols);
      INFO("rms_norm " << d.str());
      CHECK(d.rel < 2e-6);
      cpu->add_rms_norm(rc.view, xc.view, g->w, 1e-6f, oc.view);
      gpu->add_rms_norm(rg.view, xg.view, g->w, 1e-6f, og.view);
      CHECK(download(*gpu, rg.view) == download(*cpu, rc.view));  // the residual add is exact
      d = compare(download(*cpu, oc.view), download(*gpu, og.view), rows, cols);
      INFO("add_rms_norm " << d.str());
      CHECK(d.rel < 2e-6);
      cpu->layer_norm(xc.view, g->w, b->w, 1e-6f, oc.view);
      gpu->layer_norm(xg.view, g->w, b->w, 1e-6f, og.view);
      d = compare(download(*cpu, oc.view), download(*gpu, og.view), rows, cols);
      INFO("layer_norm " << d.str());
      CHECK(d.rel < 2e-6);
    }
  }
}

TEST_CASE("silu_mul and add") {
  auto& [cpu, gpu] = backends();
  std::mt19937 rng(4);
  const int64_t rows = 33, cols = 2048;
  const auto a = randn(size_t(rows * cols), rng, 4.0f), b = randn(size_t(rows * cols), rng);
  Matrix ac = upload(*cpu, a, rows, cols), ag = upload(*gpu, a, rows, cols);
  Matrix bc = upload(*cpu, b, rows, cols), bg = upload(*gpu, b, rows, cols);
  Matrix oc = cpu->matrix(rows, cols), og = gpu->matrix(rows, cols);
  cpu->silu_mul(ac.view, bc.view, oc.view);
  gpu->silu_mul(ag.view, bg.view, og.view);
  // expf (GPU, <= 2 ulp) vs glibc exp: a few ulp of outputs up to ~15x the RMS.
  const Diff d = compare(download(*cpu, oc.view), download(*gpu, og.view), rows, cols);
  INFO(d.str());
  CHECK(d.rel < 1e-5);
  cpu->add(ac.view, bc.view);
  gpu->add(ag.view, bg.view);
  CHECK(download(*gpu, ag.view) == download(*cpu, ac.view));
}

TEST_CASE("rope, both layouts, MLA and indexer shapes") {
  auto& [cpu, gpu] = backends();
  std::mt19937 rng(5);
  struct Case { int64_t heads, head_dim, offset, rope_dim; RopeLayout layout; };
  for (const Case c : {Case{128, 192, 128, 64, RopeLayout::Interleaved}, Case{1, 64, 0, 64, RopeLayout::Interleaved},
                       Case{64, 128, 0, 64, RopeLayout::HalfSplit}, Case{3, 40, 8, 32, RopeLayout::HalfSplit}}) {
    const int64_t T = 7, cols = c.heads * c.head_dim;
    INFO("heads " << c.heads << " head_dim " << c.head_dim << " layout " << int(c.layout));
    const auto x = randn(size_t(T * cols), rng);
    std::vector<float> inv_freq(size_t(c.rope_dim / 2));
    for (size_t j = 0; j < inv_freq.size(); ++j) inv_freq[j] = std::pow(10000.0f, -2.0f * float(j) / float(c.rope_dim)) / 3.0f;
    const std::vector<int32_t> pos = {0, 1, 2, 100, 4095, 70000, 163839};
    Matrix xc = upload(*cpu, x, T, cols), xg = upload(*gpu, x, T, cols);
    RopeArgs a;
    a.n_heads = c.heads;
    a.head_dim = c.head_dim;
    a.rope_offset = c.offset;
    a.rope_dim = c.rope_dim;
    a.inv_freq = inv_freq.data();
    a.positions = pos.data();
    a.layout = c.layout;
    a.x = xc.view;
    cpu->rope(a);
    const auto inv_freq_gpu = to_backend(*gpu, inv_freq);
    const auto pos_gpu = to_backend(*gpu, pos);
    a.inv_freq = inv_freq_gpu.data();
    a.positions = pos_gpu.data();
    a.x = xg.view;
    gpu->rope(a);
    // cos/sin in double on both sides, then the same fp32 products: equal up to a rare ulp of the double
    // trigonometry.
    const Diff d = compare(download(*cpu, xc.view), download(*gpu, xg.view), T, cols);
    INFO(d.str());
    CHECK(d.rel < 2e-6);
  }
}

TEST_CASE("hadamard is bit-identical") {
  auto& [cpu, gpu] = backends();
  std::mt19937 rng(6);
  for (int64_t n : {128, 64, 1024}) {
    const int64_t rows = 9, cols = 2048;
    const auto x = randn(size_t(rows * cols), rng);
    Matrix xc = upload(*cpu, x, rows, cols), xg = upload(*gpu, x, rows, cols);
    cpu->hadamard(xc.view, n);
    gpu->hadamard(xg.view, n);
    INFO("n " << n);
    CHECK(download(*gpu, xg.view) == download(*cpu, xc.view));
  }
}

TEST_CASE("round_to_bf16 is bit-identical, on a strided view, ties and edge values included") {
  auto& [cpu, gpu] = backends();
  std::mt19937 rng(11);
  const int64_t rows = 5, cols = 300;
  auto x = randn(size_t(rows * cols), rng);
  // Exact ties between two bf16 values (1 + 2^-8: to even, down; 1 + 3·2^-8: up), a denormal, the largest finite
  // value (rounds to infinity), infinities.
  const float edge[] = {1.0f + 0x1p-8f, 1.0f + 0x3p-8f, -(1.0f + 0x1p-8f), 0x1p-140f, 3.4028235e38f, INFINITY,
                        -INFINITY, 0.0f, -0.0f};
  std::copy(std::begin(edge), std::end(edge), x.begin() + 7);
  Matrix xc = upload(*cpu, x, rows, cols), xg = upload(*gpu, x, rows, cols);
  // Columns [3, 259) only: the op must leave the rest of each row alone.
  cpu->round_to_bf16(xc.view.cols_slice(3, 256));
  gpu->round_to_bf16(xg.view.cols_slice(3, 256));
  const auto rc = download(*cpu, xc.view), rg = download(*gpu, xg.view);
  CHECK(std::memcmp(rc.data(), rg.data(), rc.size() * 4) == 0);
  CHECK(rc[7] == 1.0f);                 // the tie went to even
  CHECK(rc[size_t(cols + 1)] == x[size_t(cols + 1)]);  // column 1 is outside the view: unchanged
}

TEST_CASE("fp8_quantize is bit-identical (ue8m0 and plain scales, q and q*s, partial groups, edge values)") {
  auto& [cpu, gpu] = backends();
  std::mt19937 rng(7);
  for (int64_t cols : {7168, 128, 200}) {
    for (int64_t group : {128, 64}) {
      for (bool ue8m0 : {true, false}) {
        for (bool deq : {false, true}) {
          const int64_t rows = 13, G = (cols + group - 1) / group;
          auto x = randn(size_t(rows * cols), rng, 2.0f);
          // Edge cases: an all-zero group (amax floor), tiny values (e4m3 subnormals), exact powers of two,
          // a huge value, halfway cases.
          for (int64_t c = 0; c < std::min<int64_t>(group, cols); ++c) x[size_t(c)] = 0.0f;
          for (int64_t c = 0; c < cols; ++c) x[size_t(cols + c)] = 1e-6f * float(c % 7);
          x[size_t(2 * cols)] = 448.0f;
          x[size_t(2 * cols + 1)] = 3e5f;
          x[size_t(3 * cols)] = 0.5f * (1.0f + 1.0f / 16.0f);
          INFO("cols " << cols << " group " << group << " ue8m0 " << ue8m0 << " dequantize " << deq);
          Matrix xc = upload(*cpu, x, rows, cols), xg = upload(*gpu, x, rows, cols);
          Matrix oc = cpu->matrix(rows, cols), og = gpu->matrix(rows, cols);
          Matrix sc = cpu->matrix(rows, G), sg = gpu->matrix(rows, G);
          cpu->fp8_quantize(xc.view, group, ue8m0, deq, oc.view, sc.view);
          gpu->fp8_quantize(xg.view, group, ue8m0, deq, og.view, sg.view);
          CHECK(download(*gpu, og.view) == download(*cpu, oc.view));
          CHECK(download(*gpu, sg.view) == download(*cpu, sc.view));
          gpu->fp8_quantize(xg.view, group, ue8m0, deq, xg.view, Tensor2D{});  // in place, no scales
          CHECK(download(*gpu, xg.view) == download(*cpu, oc.view));
        }
      }
    }
  }
}
