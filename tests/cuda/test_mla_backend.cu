// The CUDA backend's mla_attention and indexer_topk (cuda/attention/cuda_backend_attention.cu) against the CPU
// backend, through the Backend interface exactly as lib/model/ calls them: host positions, host block tables and
// index lists, host top-k output (and out_scores), fp32 views into backend matrices, including a q view that is not
// 16-byte aligned (the op copies it) and an output view narrower than its row stride. The kernels themselves are
// covered in depth by test_mla.cu and test_indexer.cu; this checks the glue. Tolerances as there: fp32 summation
// order for MLA (max|d| <= 2e-4·max|ref|), bit-exact scores and indices for the integer-valued indexer inputs.
// Exits 77 without a CUDA device.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <random>
#include <vector>

#include "backend/backend.hpp"
#include "dsinfer/error.hpp"
#include "util/dtype.hpp"
#include "attn_test_util.cuh"

using namespace dsinfer;
using namespace dsinfer::attn_test;

namespace {

// A matrix on `b` holding `host` [rows, cols].
Matrix put(Backend& b, const std::vector<float>& host, int64_t rows, int64_t cols) {
  Matrix m = b.matrix(rows, cols);
  b.from_host(m.view, host.data());
  return m;
}
std::vector<float> get(Backend& b, Tensor2D t) {
  std::vector<float> v(static_cast<size_t>(t.rows * t.cols));
  b.to_host(v.data(), t);
  return v;
}

struct MlaShape {
  const char* name;
  int64_t H, C, R, dn, dv, S, T0, T, block_tokens, topk;
  MlaMode mode;
};

// tol: max|d| <= tol·max|ref| (2e-4: fp32 reordering; 3e-2: the bf16 tensor-core kernel, see test_mla.cu).
// fp8_kvb: kv_b also handed over as stored (MlaArgs::wkv_b_stored, random e4m3 bytes + block scales), the fp32
// copy being its dequantization on each backend: decode-sized calls then read the e4m3 weight on the GPU.
void check_mla(Backend& cpu, Backend& gpu, const MlaShape& c, double tol = 2e-4, bool fp8_kvb = false) {
  std::mt19937 rng(unsigned(c.H + c.S + c.T + c.topk));
  std::normal_distribution<float> nd(0.0f, 1.0f);
  const int64_t H = c.H, C = c.C, R = c.R, dn = c.dn, dv = c.dv, S = c.S, T = c.T;
  const int64_t bt = c.block_tokens > 0 ? c.block_tokens : 1;
  const int64_t n_blocks = (S + bt - 1) / bt + 2, rows = c.block_tokens > 0 ? n_blocks * bt : S;
  std::vector<int32_t> table(static_cast<size_t>(n_blocks));
  std::iota(table.begin(), table.end(), 0);
  std::shuffle(table.begin(), table.end(), rng);
  auto randv = [&](size_t n, float s) {
    std::vector<float> v(n);
    for (auto& x : v) x = nd(rng) * s;
    return v;
  };
  // q lives at column offset 1 of a wider matrix: its rows are not 16-byte aligned.
  const int64_t qc = H * (dn + R);
  const std::vector<float> qwide = randv(size_t(T * (qc + 3)), 1.0f), lat = randv(size_t(rows * C), 1.0f),
                           kpe = randv(size_t(rows * R), 1.0f), wkv = randv(size_t(H * (dn + dv) * C), 0.05f);
  std::vector<int32_t> pos(static_cast<size_t>(T));
  std::iota(pos.begin(), pos.end(), int32_t(c.T0));
  std::vector<int32_t> idx;
  if (c.topk) {
    idx.assign(static_cast<size_t>(T * c.topk), -1);
    for (int64_t t = 0; t < T; ++t) {
      std::vector<int32_t> all(static_cast<size_t>(pos[size_t(t)] + 1));
      std::iota(all.begin(), all.end(), 0);
      std::shuffle(all.begin(), all.end(), rng);
      const int64_t take = std::min<int64_t>(int64_t(all.size()), c.topk - 3);
      std::copy_n(all.begin(), take, idx.begin() + t * c.topk);
    }
  }
  // The stored FP8 kv_b: e4m3 codes except NaN, scales in [2^-13, 2^-11] (values up to ~0.2).
  const int64_t wr = H * (dn + dv);
  std::vector<uint8_t> w8(static_cast<size_t>(wr * C));
  std::vector<float> w8s(static_cast<size_t>(((wr + 127) / 128) * ((C + 127) / 128)));
  for (auto& x : w8) {
    do x = uint8_t(rng()); while ((x & 0x7f) == 0x7f);
  }
  for (auto& x : w8s) x = std::ldexp(1.0f + float(rng() % 1000) / 1000.0f, -13 + int(rng() % 2));
  Weight stored;
  stored.name = "kv_b_proj";
  stored.dtype = DType::F8_E4M3;
  stored.shape = {wr, C};
  stored.data = w8.data();
  stored.scale_inv = w8s.data();
  stored.block = 128;
  std::vector<float> out[2];
  Backend* bes[2] = {&cpu, &gpu};
  for (int i = 0; i < 2; ++i) {
    Backend& b = *bes[i];
    Matrix mq = put(b, qwide, T, qc + 3), ml = put(b, lat, rows, C), mk = put(b, kpe, rows, R),
           mw = fp8_kvb ? b.dequantize(stored) : put(b, wkv, wr, C), mo = b.matrix(T, H * dv + 5);
    MlaArgs a;
    a.q = mq.view.cols_slice(1, qc);
    a.latent = ml.view;
    a.k_pe = mk.view;
    a.n_keys = S;
    a.block_table = c.block_tokens > 0 ? table.data() : nullptr;
    a.block_tokens = bt;
    a.wkv_b = mw.view;
    a.wkv_b_stored = fp8_kvb ? &stored : nullptr;
    a.n_heads = H, a.nope_dim = dn, a.rope_dim = R, a.v_dim = dv;
    a.softmax_scale = 0.1352337789f;
    a.positions = pos.data();
    a.indices = c.topk ? idx.data() : nullptr;
    a.n_indices = c.topk;
    a.mode = c.mode;
    a.out = mo.view.cols_slice(2, H * dv);
    b.mla_attention(a);
    out[i] = get(b, a.out);
  }
  double max_ref = 0, max_err = 0;
  for (size_t i = 0; i < out[0].size(); ++i) {
    max_ref = std::max(max_ref, std::fabs(double(out[0][i])));
    const double d = std::fabs(double(out[0][i]) - double(out[1][i]));
    max_err = std::isfinite(out[1][i]) ? std::max(max_err, d) : INFINITY;
  }
  CHECK(max_err <= tol * max_ref + 1e-7, "%s: max|d| %.3g, max|ref| %.3g", c.name, max_err, max_ref);
  // The CUDA backend keys its device copies of weights by host address: keep the bytes alive (and their
  // addresses unused by later cases) until the process ends.
  static std::vector<std::vector<uint8_t>> keep_bytes;
  static std::vector<std::vector<float>> keep_scales;
  if (fp8_kvb) {
    keep_bytes.push_back(std::move(w8));
    keep_scales.push_back(std::move(w8s));
  }
  std::printf("%-48s max|d|/max|ref| %.2e\n", c.name, max_ref > 0 ? max_err / max_ref : max_err);
}

void check_indexer(Backend& cpu, Backend& gpu, int64_t H, int64_t D, int64_t S, int64_t T0, int64_t T, int64_t topk,
                   int64_t block_tokens, bool scales) {
  std::mt19937 rng(unsigned(H + D + S + T + topk));
  std::uniform_int_distribution<int> small(-3, 3), wi(-2, 2);
  const int64_t bt = block_tokens > 0 ? block_tokens : 1;
  const int64_t n_blocks = (S + bt - 1) / bt + 1, rows = block_tokens > 0 ? n_blocks * bt : S;
  std::vector<int32_t> table(static_cast<size_t>(n_blocks));
  std::iota(table.begin(), table.end(), 0);
  std::shuffle(table.begin(), table.end(), rng);
  // Integer-valued inputs with power-of-two scales: exact in fp32 in any order (see test_indexer.cu).
  std::vector<float> q(static_cast<size_t>(T * H * D)), w(static_cast<size_t>(T * H)), qs(static_cast<size_t>(T * H)),
      k(static_cast<size_t>(rows * D)), ks(static_cast<size_t>(rows));
  for (auto& x : q) x = float(small(rng));
  for (auto& x : k) x = float(small(rng));
  for (auto& x : w) x = float(wi(rng));
  for (auto& x : qs) x = std::ldexp(1.0f, int(rng() % 3) - 1);
  for (auto& x : ks) x = std::ldexp(1.0f, int(rng() % 3) - 1);
  std::vector<int32_t> pos(static_cast<size_t>(T));
  std::iota(pos.begin(), pos.end(), int32_t(T0));
  std::vector<int32_t> idx[2];
  std::vector<float> sc[2];
  Backend* bes[2] = {&cpu, &gpu};
  for (int i = 0; i < 2; ++i) {
    Backend& b = *bes[i];
    Matrix mq = put(b, q, T, H * D), mw = put(b, w, T, H), mqs = put(b, qs, T, H), mk = put(b, k, rows, D),
           mks = put(b, ks, rows, 1);
    idx[i].assign(static_cast<size_t>(T * topk), 7);
    sc[i].assign(static_cast<size_t>(T * S), 0.0f);
    IndexerTopkArgs a;
    a.q = mq.view;
    a.q_scale = scales ? mqs.view : Tensor2D{};
    a.w = mw.view;
    a.head_scale = 0.25f;
    a.k = mk.view;
    a.k_scale = scales ? mks.view : Tensor2D{};
    a.n_keys = S;
    a.block_table = block_tokens > 0 ? table.data() : nullptr;
    a.block_tokens = bt;
    a.n_heads = H, a.head_dim = D;
    a.positions = pos.data();
    a.topk = topk;
    a.out_indices = idx[i].data();
    a.out_scores = sc[i].data();
    b.indexer_topk(a);
  }
  CHECK(idx[0] == idx[1], "indexer H=%lld D=%lld S=%lld T=%lld: index lists differ", (long long)H, (long long)D,
        (long long)S, (long long)T);
  CHECK(std::memcmp(sc[0].data(), sc[1].data(), sc[0].size() * 4) == 0, "indexer: out_scores differ");
  std::printf("indexer_topk H=%-3lld D=%-3lld S=%-5lld T=%-5lld k=%-5lld paged=%d ok\n", (long long)H, (long long)D,
              (long long)S, (long long)T, (long long)topk, int(block_tokens > 0));
}

}  // namespace

int main() {
  int n_dev = 0;
  if (cudaGetDeviceCount(&n_dev) != cudaSuccess || n_dev == 0) {
    std::printf("SKIP: no CUDA device\n");
    return 77;
  }
  auto cpu = create_backend("cpu");
  auto gpu = create_backend("cuda");
  check_mla(*cpu, *gpu, {"tiny decode, paged", 4, 128, 32, 64, 64, 45, 44, 1, 16, 0, MlaMode::Absorbed});
  check_mla(*cpu, *gpu, {"tiny prefill, contiguous, CPU MHA", 16, 256, 32, 64, 64, 120, 0, 120, 0, 0, MlaMode::Mha});
  check_mla(*cpu, *gpu, {"tiny sparse prefill chunk, paged", 16, 256, 32, 64, 64, 300, 250, 50, 16, 16,
                         MlaMode::Mha});
  check_mla(*cpu, *gpu, {"V3.2 decode 4K, paged", 128, 512, 64, 128, 128, 4096, 4095, 1, 64, 0, MlaMode::Absorbed});
  check_mla(*cpu, *gpu, {"V3.2 sparse decode 3 queries, paged", 128, 512, 64, 128, 128, 6000, 5997, 3, 64, 2048,
                         MlaMode::Absorbed});
  check_indexer(*cpu, *gpu, 8, 64, 100, 0, 100, 16, 16, true);
  check_indexer(*cpu, *gpu, 16, 64, 500, 300, 200, 256, 0, false);
  check_indexer(*cpu, *gpu, 64, 128, 5000, 4990, 10, 2048, 64, true);
  // kv_b as stored FP8: decode-sized calls stream the e4m3 weight (the absorb kernels of mla_absorb_fp8.cu);
  // 40 queries exceed the 32-query limit and take the fp32 GEMMs over the same values.
  check_mla(*cpu, *gpu, {"V3.2 decode 4K, stored FP8 kv_b", 128, 512, 64, 128, 128, 4096, 4095, 1, 64, 0,
                         MlaMode::Absorbed}, 2e-4, true);
  check_mla(*cpu, *gpu, {"V3.2 sparse, 9 queries, stored FP8 kv_b", 128, 512, 64, 128, 128, 6000, 5991, 9, 64,
                         2048, MlaMode::Absorbed}, 2e-4, true);
  check_mla(*cpu, *gpu, {"tiny prefill 40, stored FP8 kv_b", 16, 256, 32, 64, 64, 40, 0, 40, 16, 0, MlaMode::Mha},
            2e-4, true);
  check_mla(*cpu, *gpu, {"tiny decode, stored FP8 kv_b", 4, 128, 32, 64, 64, 45, 44, 1, 16, 0, MlaMode::Absorbed},
            2e-4, true);
  {
    // The opt-in tensor-core paths (CudaOptions::indexer_kernel / mla_kernel): the e4m3 indexer kernel is exact on
    // these integer inputs; the bf16 MLA kernel is held to the bf16 bound.
    BackendOptions tc;
    tc.cuda.indexer_kernel = "tensor-core";
    tc.cuda.mla_kernel = "tensor-core";
    auto gpu_tc = create_backend("cuda", tc);
    check_indexer(*cpu, *gpu_tc, 64, 128, 5000, 4990, 10, 2048, 64, true);
    check_indexer(*cpu, *gpu_tc, 8, 64, 100, 0, 100, 16, 16, true);
    check_mla(*cpu, *gpu_tc, {"V3.2 decode 4K, paged, bf16 tensor cores", 128, 512, 64, 128, 128, 4096, 4095, 1, 64,
                              0, MlaMode::Absorbed}, 3e-2);
    check_mla(*cpu, *gpu_tc, {"V3.2 sparse decode, bf16 tensor cores", 128, 512, 64, 128, 128, 6000, 5997, 3, 64,
                              2048, MlaMode::Absorbed}, 3e-2);
  }
  // Errors arrive as dsinfer::Error, never as a crash: a head count the kernels do not support.
  bool threw = false;
  try {
    check_indexer(*cpu, *gpu, 65, 128, 10, 9, 1, 4, 0, true);
  } catch (const Error& e) {
    threw = e.code() == ErrorCode::Unsupported;
  }
  CHECK(threw, "65 indexer heads should be refused with Unsupported");
  if (g_failures) {
    std::printf("%d check(s) failed\n", g_failures);
    return 1;
  }
  std::printf("test_mla_backend: all checks passed\n");
  return 0;
}
