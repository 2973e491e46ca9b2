// MoE layer benchmark at DeepSeek-V3.2's sizes (hidden 7168, expert inner 2048, 256 routed experts, top-8 of 8
// groups keeping 4, one shared expert): router, routed experts and the shared expert at decode batches 1..256 and
// a 4096-token prefill, against the weight-bytes floor = bytes of the experts touched (routed + shared, e4m3 +
// scales) / measured device copy bandwidth. Prints a markdown table.
#include <algorithm>
#include <memory>
#include <numeric>
#include <random>
#include <set>
#include <vector>

#include "bench_util.cuh"
#include "cuda_backend.hpp"

using namespace dsinfer;
using namespace dsinfer::bench;

namespace {

constexpr int64_t kD = 7168, kInner = 2048, kE = 256, kTopK = 8, kGroups = 8, kTopGroups = 4;

// One random e4m3 matrix on the host; 256 experts x 3 projections point their Weights at distinct offsets of one
// slightly larger host buffer, and each gets its own device copy (prepare_weight, one per Weight).
struct HostPool {
  std::vector<uint8_t> bytes;
  std::vector<float> scales;
};

}  // namespace

int main() {
  if (const int rc = skip_without_device("bench_moe")) return rc;
  auto backend = create_backend("cuda");
  auto& cuda = static_cast<CudaBackend&>(*backend);
  cudaStream_t s = cuda.stream();
  print_device();
  const double copy_gbs = copy_bandwidth_gbs(s);
  std::printf("device copy bandwidth (cudaMemcpy D2D, read+write bytes): %.0f GB/s\n\n", copy_gbs);

  HostPool pool;
  const size_t mat = size_t(kInner * kD);
  const int64_t n_mats = 3 * (kE + 1);
  pool.bytes.resize(mat + size_t(n_mats));
  uint64_t x = 12345;
  for (auto& b : pool.bytes) {
    x ^= x << 13; x ^= x >> 7; x ^= x << 17;
    b = uint8_t(x >> 24);
    if ((b & 0x7f) == 0x7f) b = 0x3c;
  }
  const int64_t sblocks = (kInner / 128) * (kD / 128);
  pool.scales.assign(size_t(sblocks + n_mats), 1.0f / 2048);
  std::vector<Weight> mats(static_cast<size_t>(n_mats));
  for (int64_t i = 0; i < n_mats; ++i) {
    Weight& w = mats[size_t(i)];
    const bool down = i % 3 == 2;
    w.name = "expert";
    w.dtype = DType::F8_E4M3;
    w.shape = down ? std::vector<int64_t>{kD, kInner} : std::vector<int64_t>{kInner, kD};
    w.data = pool.bytes.data() + i;
    w.scale_inv = pool.scales.data() + i;
    backend->prepare_weight(w);
  }
  std::vector<ExpertWeights> experts(static_cast<size_t>(kE));
  for (int64_t e = 0; e < kE; ++e) experts[size_t(e)] = {&mats[size_t(3 * e)], &mats[size_t(3 * e + 1)], &mats[size_t(3 * e + 2)]};
  const ExpertWeights shared{&mats[size_t(3 * kE)], &mats[size_t(3 * kE + 1)], &mats[size_t(3 * kE + 2)]};

  std::vector<uint16_t> gate_bytes(static_cast<size_t>(kE * kD));
  for (auto& g : gate_bytes) { x ^= x << 13; x ^= x >> 7; x ^= x << 17; g = uint16_t(((x >> 63) << 15) | ((118 + (x >> 8) % 4) << 7) | (x & 0x7f)); }
  std::vector<float> bias(static_cast<size_t>(kE));
  for (auto& b : bias) { x ^= x << 13; x ^= x >> 7; x ^= x << 17; b = float(x % 1000) * 1e-4f; }
  Weight gate{"gate", DType::BF16, {kE, kD}, reinterpret_cast<const uint8_t*>(gate_bytes.data())};
  Weight gbias{"bias", DType::F32, {kE}, reinterpret_cast<const uint8_t*>(bias.data())};
  backend->prepare_weight(gate);
  backend->prepare_weight(gbias);

  const double expert_bytes = 3.0 * (double(mat) + double(sblocks) * 4);
  std::printf("| tokens | experts touched | route µs | routed experts µs | shared expert µs | layer µs | "
              "floor µs (touched + shared weight bytes / copy BW) | layer / floor |\n");
  std::printf("|---|---|---|---|---|---|---|---|\n");
  std::mt19937 rng(7);
  for (const int64_t T : {1, 2, 4, 8, 16, 32, 64, 128, 256, 4096}) {
    Matrix xin = backend->matrix(T, kD), out = backend->matrix(T, kD), h1 = backend->matrix(T, kInner),
           h2 = backend->matrix(T, kInner), so = backend->matrix(T, kD);
    fill_f32_kernel<<<fill_blocks(size_t(T * kD)), 256, 0, s>>>(xin.view.data, size_t(T * kD), uint64_t(T), -1.f, 1.f);
    // Routing: random distinct experts per token (a balanced load, as the bias keeps it in the trained model).
    std::vector<int32_t> ids(static_cast<size_t>(T * kTopK));
    std::vector<float> w(ids.size(), 0.125f);
    std::vector<int32_t> perm(static_cast<size_t>(kE));
    for (int64_t t = 0; t < T; ++t) {
      std::iota(perm.begin(), perm.end(), 0);
      std::shuffle(perm.begin(), perm.end(), rng);
      std::copy_n(perm.begin(), kTopK, ids.begin() + t * kTopK);
    }
    const std::set<int32_t> touched(ids.begin(), ids.end());
    // Index data lives in device memory (interface v2): the router writes there, the experts read there.
    Buffer rid = backend->allocate(ids.size() * 4), rw = backend->allocate(ids.size() * 4);
    Buffer ids_dev = backend->allocate(ids.size() * 4, false), w_dev = backend->allocate(w.size() * 4, false);
    backend->bytes_from_host(ids_dev.data(), ids.data(), ids.size() * 4);
    backend->bytes_from_host(w_dev.data(), w.data(), w.size() * 4);
    MoeRouteArgs ra;
    ra.x = xin.view; ra.gate = &gate; ra.bias = &gbias; ra.n_experts = kE; ra.n_group = kGroups;
    ra.topk_group = kTopGroups; ra.top_k = kTopK; ra.routed_scale = 2.5f;
    ra.out_experts = static_cast<int32_t*>(rid.data()); ra.out_weights = static_cast<float*>(rw.data());
    const double t_route = time_us(s, [&] { backend->moe_route(ra); });
    MoeExpertsArgs ea;
    ea.x = xin.view; ea.experts = experts; ea.expert_ids = static_cast<const int32_t*>(ids_dev.data());
    ea.weights = static_cast<const float*>(w_dev.data()); ea.top_k = kTopK;
    ea.quant = LinearQuant{true, true}; ea.out = out.view;
    const double t_exp = time_us(s, [&] { backend->moe_experts(ea); });
    const LinearQuant q{true, true};
    const double t_sh = time_us(s, [&] {
      backend->linear(xin.view, *shared.gate, h1.view, q);
      backend->linear(xin.view, *shared.up, h2.view, q);
      backend->silu_mul(h1.view, h2.view, h1.view);
      backend->linear(h1.view, *shared.down, so.view, q);
      backend->add(out.view, so.view);
    });
    const double t_layer = time_us(s, [&] {
      backend->moe_route(ra);
      backend->moe_experts(ea);
      backend->linear(xin.view, *shared.gate, h1.view, q);
      backend->linear(xin.view, *shared.up, h2.view, q);
      backend->silu_mul(h1.view, h2.view, h1.view);
      backend->linear(h1.view, *shared.down, so.view, q);
      backend->add(out.view, so.view);
    }, 2, 9);
    const double floor_us = (double(touched.size()) + 1.0) * expert_bytes / (copy_gbs * 1e9) * 1e6;
    std::printf("| %lld | %zu | %.1f | %.1f | %.1f | %.1f | %.1f | %.2fx |\n", (long long)T, touched.size(), t_route,
                t_exp, t_sh, t_layer, floor_us, t_layer / floor_us);
    std::fflush(stdout);
  }
  std::printf("\nroute and experts read and write the routing in device memory (interface v2); experts include the"
              " one synchronization of a MoE layer (the expert counts read on the host for launch shapes).\n");
  return 0;
}
