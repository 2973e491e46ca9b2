// The CPU backend's FP8 ops against the independent emulation of DeepSeek's formulas
// (tests/reference/fp8_reference.py ops -> tests/golden/fp8_ops/).
#include <catch2/catch.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "backend/cpu/cpu_backend.hpp"

using namespace dsinfer;
using json = nlohmann::json;
namespace fs = std::filesystem;

namespace {

const fs::path kDir = fs::path(DSINFER_SOURCE_DIR) / "tests" / "golden" / "fp8_ops";

template <class T>
std::vector<T> read(const std::string& file) {
  std::ifstream f(kDir / file, std::ios::binary | std::ios::ate);
  REQUIRE(f.good());
  std::vector<T> v(size_t(f.tellg()) / sizeof(T));
  f.seekg(0);
  f.read(reinterpret_cast<char*>(v.data()), std::streamsize(v.size() * sizeof(T)));
  return v;
}

std::vector<json> cases(const std::string& op) {
  std::ifstream f(kDir / "manifest.json");
  REQUIRE(f.good());
  const json m = json::parse(f);
  std::vector<json> out;
  for (const auto& c : m.at("cases"))
    if (c.at("op") == op) out.push_back(c);
  REQUIRE(!out.empty());
  return out;
}

Matrix load_matrix(Backend& be, const std::vector<float>& v, int64_t rows, int64_t cols) {
  REQUIRE(int64_t(v.size()) == rows * cols);
  Matrix m = be.matrix(rows, cols);
  be.from_host(m.view, v.data());
  return m;
}

}  // namespace

TEST_CASE("activation quantization equals the emulation bit for bit (codes and scales)", "[fp8][golden]") {
  CpuBackend be({1});
  for (const auto& c : cases("act_quant")) {
    INFO(c.at("name").get<std::string>());
    const int64_t R = c.at("rows"), K = c.at("cols"), G = (K + 127) / 128;
    Matrix x = load_matrix(be, read<float>(c.at("x")), R, K), q = be.matrix(R, K), s = be.matrix(R, G);
    be.fp8_quantize(x.view, c.at("group"), c.at("ue8m0"), false, q.view, s.view);
    const auto want_q = read<uint8_t>(c.at("q_e4m3"));
    const auto want_s = read<float>(c.at("scales"));
    int64_t code_mismatch = 0;
    for (int64_t r = 0; r < R; ++r)
      for (int64_t k = 0; k < K; ++k) code_mismatch += f32_to_e4m3(q.view.row(r)[k]) != want_q[size_t(r * K + k)];
    CHECK(code_mismatch == 0);
    for (int64_t r = 0; r < R; ++r)
      for (int64_t g = 0; g < G; ++g) CHECK(s.view.row(r)[g] == want_s[size_t(r * G + g)]);
  }
}

TEST_CASE("block-scaled FP8 GEMM matches the emulation", "[fp8][golden]") {
  CpuBackend be({2});
  for (const auto& c : cases("fp8_gemm")) {
    INFO(c.at("name").get<std::string>());
    const int64_t M = c.at("M"), N = c.at("N"), K = c.at("K");
    const auto w8 = read<uint8_t>(c.at("w_e4m3"));
    const auto scale = read<float>(c.at("scale_inv"));
    const auto want = read<float>(c.at("y"));
    Weight w{"w", DType::F8_E4M3, {N, K}, w8.data(), scale.data()};
    Matrix x = load_matrix(be, read<float>(c.at("x")), M, K), y = be.matrix(M, N);
    be.linear(x.view, w, y.view, LinearQuant{true, c.at("ue8m0")});
    double worst = 0, ymax = 0;
    for (int64_t m = 0; m < M; ++m)
      for (int64_t n = 0; n < N; ++n) {
        worst = std::max(worst, double(std::fabs(y.view.row(m)[n] - want[size_t(m * N + n)])));
        ymax = std::max(ymax, double(std::fabs(want[size_t(m * N + n)])));
      }
    // Products of e4m3 values are exact in fp32; only the order of the fp32 block sums differs from the
    // float64 emulation.
    CHECK(worst <= 1e-6 * ymax);
  }
}

TEST_CASE("Hadamard matches the emulation", "[fp8][golden]") {
  CpuBackend be({1});
  for (const auto& c : cases("hadamard")) {
    const int64_t R = c.at("rows"), n = c.at("n");
    Matrix x = load_matrix(be, read<float>(c.at("x")), R, n);
    be.hadamard(x.view, n);
    const auto want = read<float>(c.at("y"));
    for (int64_t i = 0; i < R * n; ++i) REQUIRE(x.view.row(i / n)[i % n] == Approx(want[size_t(i)]).margin(1e-5));
  }
}

TEST_CASE("indexer: Hadamard + FP8 quantization + weighted-ReLU scores + causal top-k match the emulation",
          "[fp8][golden][indexer]") {
  CpuBackend be({2});
  for (const json& c : cases("indexer")) {
  INFO(c.at("name").get<std::string>());
  const int64_t T = c.at("T"), S = c.at("S"), H = c.at("heads"), D = c.at("dim"), K = c.at("topk");
  Matrix q = load_matrix(be, read<float>(c.at("q")), T, H * D), k = load_matrix(be, read<float>(c.at("k")), S, D);
  Matrix w = load_matrix(be, read<float>(c.at("w")), T, H), qs = be.matrix(T, H), ks = be.matrix(S, 1);
  // The model's pipeline: Hadamard over each head, then one e4m3 group per (token, head) and per key.
  be.hadamard(q.view, D);
  be.hadamard(k.view, D);
  be.fp8_quantize(q.view, D, true, false, q.view, qs.view);
  be.fp8_quantize(k.view, D, true, false, k.view, ks.view);
  const auto q8 = read<float>(c.at("q8")), k8 = read<float>(c.at("k8"));
  const auto want_qs = read<float>(c.at("q_scale")), want_ks = read<float>(c.at("k_scale"));
  int64_t mismatch = 0;
  for (int64_t i = 0; i < T * H * D; ++i) mismatch += q.view.row(i / (H * D))[i % (H * D)] != q8[size_t(i)];
  for (int64_t i = 0; i < S * D; ++i) mismatch += k.view.row(i / D)[i % D] != k8[size_t(i)];
  for (int64_t i = 0; i < T * H; ++i) mismatch += qs.view.row(i / H)[i % H] != want_qs[size_t(i)];
  for (int64_t i = 0; i < S; ++i) mismatch += ks.view.row(i)[0] != want_ks[size_t(i)];
  CHECK(mismatch == 0);

  const auto positions64 = c.at("positions").get<std::vector<int32_t>>();
  std::vector<int32_t> idx(size_t(T * K));
  std::vector<float> scores(size_t(T * S));
  IndexerTopkArgs a;
  a.q = q.view;
  a.q_scale = qs.view;
  a.w = w.view;
  a.head_scale = float(c.at("head_scale").get<double>());
  a.k = k.view;
  a.k_scale = ks.view;
  a.n_keys = S;
  a.n_heads = H;
  a.head_dim = D;
  a.positions = positions64.data();
  a.topk = K;
  a.out_indices = idx.data();
  a.out_scores = scores.data();
  be.indexer_topk(a);
  const auto want_scores = read<float>(c.at("scores"));
  const auto want_idx = read<int32_t>(c.at("topk_indices"));
  for (int64_t i = 0; i < T * S; ++i) {
    if (std::isinf(want_scores[size_t(i)])) {
      CHECK(std::isinf(scores[size_t(i)]));
    } else {
      CHECK(scores[size_t(i)] == Approx(want_scores[size_t(i)]).epsilon(1e-5).margin(1e-6));
    }
  }
  CHECK(idx == want_idx);
  }
}
