// GEMM benchmark at DeepSeek-V3.2's layer shapes (spec §3.1, §4.1, §5): dsinfer's FP8 linear (activation
// quantization + the skinny kernel for M <= small_m_max, cuBLASLt block-scaled FP8 above) against cuBLASLt BF16
// and cuBLASLt block-scaled FP8 (GEMM only, pre-quantized activations), same run, cudaEvent medians after
// warm-up, plus the device copy bandwidth as the weight-streaming floor. Prints a markdown table.
#include <algorithm>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "bench_util.cuh"
#include "cuda_backend.hpp"
#include "kernels/lt_gemm.hpp"

using namespace dsinfer;
using namespace dsinfer::bench;

namespace {

struct Shape {
  const char* name;
  int64_t N, K;
};
const Shape kShapes[] = {{"wq_a", 1536, 7168},        {"wq_b", 24576, 1536},     {"wkv_a", 576, 7168},
                         {"wkv_b", 32768, 512},       {"wo", 7168, 16384},       {"expert gate/up", 2048, 7168},
                         {"expert down", 7168, 2048}, {"idx wq_b", 8192, 1536},  {"idx wk", 128, 7168},
                         {"dense w1/w3", 18432, 7168}, {"dense w2", 7168, 18432}};
const int64_t kMs[] = {1, 16, 64, 128, 1024, 4096};

struct HostFp8 {
  std::vector<uint8_t> bytes;
  std::vector<float> scales;
  Weight w;
};

std::unique_ptr<HostFp8> host_fp8(const Shape& s, uint64_t seed) {
  auto h = std::make_unique<HostFp8>();
  h->bytes.resize(size_t(s.N * s.K));
  uint64_t x = seed * 0x9E3779B97F4A7C15ull + 7;
  for (auto& b : h->bytes) {
    x ^= x << 13; x ^= x >> 7; x ^= x << 17;
    b = uint8_t(x >> 24);
    if ((b & 0x7f) == 0x7f) b = 0x3c;
  }
  const int64_t rb = (s.N + 127) / 128, kb = (s.K + 127) / 128;
  h->scales.assign(size_t(rb * kb), 1.0f / 1024);
  h->w.name = s.name;
  h->w.dtype = DType::F8_E4M3;
  h->w.shape = {s.N, s.K};
  h->w.data = h->bytes.data();
  h->w.scale_inv = h->scales.data();
  return h;
}

}  // namespace

int main() {
  if (const int rc = skip_without_device("bench_gemm")) return rc;
  auto backend = create_backend("cuda");
  auto& cuda = static_cast<CudaBackend&>(*backend);
  cudaStream_t s = cuda.stream();
  print_device();
  const double copy_gbs = copy_bandwidth_gbs(s);
  std::printf("device copy bandwidth (cudaMemcpy D2D, read+write bytes): %.0f GB/s\n", copy_gbs);
  std::printf("ours = activation quantization + skinny kernel (M <= %lld) or cuBLASLt block-scaled FP8 (M > %lld);"
              " baselines are the GEMM alone, fp32 output.\n\n",
              (long long)cuda.small_m_max(), (long long)cuda.small_m_max());

  gpu::LtGemm lt;
  void* ws = nullptr;
  const size_t ws_bytes = size_t(32) << 20;
  BENCH_CHECK(cudaMalloc(&ws, ws_bytes));
  lt.set_workspace(ws, ws_bytes);

  std::printf("| shape | N | K | M | ours µs | ours path | ours TFLOPS | ours weight GB/s | %% copy BW | "
              "BF16 µs | BF16 TFLOPS | FP8 µs | FP8 TFLOPS | ours vs BF16 | ours vs FP8 |\n");
  std::printf("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
  uint64_t seed = 1;
  // Host weights stay alive while the benchmark reads them (their device copies are found by handle).
  std::vector<std::unique_ptr<HostFp8>> keep;
  for (const Shape& sh : kShapes) {
    keep.push_back(host_fp8(sh, seed++));
    HostFp8* hw = keep.back().get();
    backend->prepare_weight(hw->w);
    const gpu::DeviceTensorRef dw = cuda.device_weight(hw->w);
    uint16_t* wb = nullptr;  // bf16 baseline weight
    BENCH_CHECK(cudaMalloc(&wb, size_t(sh.N * sh.K) * 2));
    fill_bf16_kernel<<<fill_blocks(size_t(sh.N * sh.K)), 256, 0, s>>>(wb, size_t(sh.N * sh.K), seed++);
    for (const int64_t M : kMs) {
      const int64_t Mp = (M + 3) / 4 * 4, G = (sh.K + 127) / 128;
      Matrix x = backend->matrix(M, sh.K), out = backend->matrix(M, sh.N);
      fill_f32_kernel<<<fill_blocks(size_t(M * sh.K)), 256, 0, s>>>(x.view.data, size_t(M * sh.K), seed++, -2.f, 2.f);
      uint16_t* xb = nullptr;
      uint8_t* xq = nullptr;
      float *xs = nullptr, *o2 = nullptr;
      BENCH_CHECK(cudaMalloc(&xb, size_t(M * sh.K) * 2));
      BENCH_CHECK(cudaMalloc(&xq, size_t(Mp * sh.K)));
      BENCH_CHECK(cudaMalloc(&xs, size_t(G * Mp) * 4));
      BENCH_CHECK(cudaMalloc(&o2, size_t(Mp * sh.N) * 4));
      fill_bf16_kernel<<<fill_blocks(size_t(M * sh.K)), 256, 0, s>>>(xb, size_t(M * sh.K), seed++);
      fill_bytes_kernel<<<fill_blocks(size_t(Mp * sh.K)), 256, 0, s>>>(xq, size_t(Mp * sh.K), seed++);
      fill_f32_kernel<<<fill_blocks(size_t(G * Mp)), 256, 0, s>>>(xs, size_t(G * Mp), seed++, 1e-3f, 2e-3f);

      const LinearQuant q{true, true};
      const double t_ours = time_us(s, [&] { backend->linear(x.view, hw->w, out.view, q); });
      gpu::LtGemmArgs bf;
      bf.kind = gpu::LtKind::Bf16; bf.N = sh.N; bf.M = M; bf.K = sh.K;
      bf.w = wb; bf.ldw = sh.K; bf.x = xb; bf.ldx = sh.K; bf.out = o2; bf.ldo = sh.N;
      const double t_bf16 = lt.supported(bf) ? time_us(s, [&] { lt.run(bf, s); }) : -1;
      gpu::LtGemmArgs f8;
      f8.kind = gpu::LtKind::Fp8Block; f8.N = sh.N; f8.M = Mp; f8.K = sh.K;
      f8.w = dw.data; f8.ldw = sh.K; f8.x = xq; f8.ldx = sh.K; f8.out = o2; f8.ldo = sh.N;
      f8.w_scale = dw.scale; f8.x_scale = xs;
      const double t_fp8 = lt.supported(f8) ? time_us(s, [&] { lt.run(f8, s); }) : -1;

      const double flops = 2.0 * double(M) * double(sh.N) * double(sh.K);
      const double wbytes = double(sh.N) * double(sh.K) + double(((sh.N + 127) / 128) * ((sh.K + 127) / 128)) * 4;
      const double gbs = wbytes / (t_ours * 1e-6) / 1e9;
      auto tf = [&](double us) { return us > 0 ? flops / (us * 1e-6) / 1e12 : 0.0; };
      std::printf("| %s | %lld | %lld | %lld | %.1f | %s | %.1f | %.0f | %.0f%% | %.1f | %.1f | %.1f | %.1f | %.2fx | %.2fx |\n",
                  sh.name, (long long)sh.N, (long long)sh.K, (long long)M, t_ours,
                  M <= cuda.small_m_max() ? (cuda.small_mma_enabled() ? "skinny (tensor cores)" : "skinny") : "cuBLASLt",
                  tf(t_ours), gbs, 100.0 * gbs / copy_gbs, t_bf16,
                  tf(t_bf16), t_fp8, tf(t_fp8), t_bf16 > 0 ? t_bf16 / t_ours : 0.0,
                  t_fp8 > 0 ? t_fp8 / t_ours : 0.0);
      std::fflush(stdout);
      cudaFree(xb); cudaFree(xq); cudaFree(xs); cudaFree(o2);
    }
    BENCH_CHECK(cudaStreamSynchronize(s));
    cudaFree(wb);
  }
  // The small-M kernels alone against cuBLASLt FP8 at the decode sizes (where the dispatch threshold is decided).
  std::printf("\ntensor-core skinny kernel (Auto path for M <= %lld): %s\n\n", (long long)cuda.small_m_max(),
              cuda.small_mma_enabled() ? "on" : "off (probe failed)");
  std::printf("| shape | M | CUDA-core skinny µs | tensor-core skinny µs | cuBLASLt FP8 path µs | best small-M weight GB/s | %% copy BW |\n");
  std::printf("|---|---|---|---|---|---|---|\n");
  for (size_t si = 0; si < std::size(kShapes); ++si) {
    const Shape& sh = kShapes[si];
    HostFp8* hw = keep[si].get();
    for (const int64_t M : {1, 2, 4, 8, 16, 32, 64, 128}) {
      Matrix x = backend->matrix(M, sh.K), out = backend->matrix(M, sh.N);
      fill_f32_kernel<<<fill_blocks(size_t(M * sh.K)), 256, 0, s>>>(x.view.data, size_t(M * sh.K), seed++, -2.f, 2.f);
      const LinearQuant q{true, true};
      auto timed = [&](CudaBackend::LinearPath path) {
        try {
          return time_us(s, [&] { cuda.linear_path(x.view, hw->w, out.view, q, path); });
        } catch (const std::exception&) {
          return -1.0;
        }
      };
      const double t_sk = timed(CudaBackend::LinearPath::Skinny);
      const double t_mma = timed(CudaBackend::LinearPath::SkinnyMma);
      const double t_lt = timed(CudaBackend::LinearPath::CublasLt);
      const double best = t_mma > 0 ? std::min(t_sk, t_mma) : t_sk;
      const double gbs = double(sh.N) * double(sh.K) / (best * 1e-6) / 1e9;
      std::printf("| %s | %lld | %.1f | %.1f | %.1f | %.0f | %.0f%% |\n", sh.name, (long long)M, t_sk, t_mma, t_lt, gbs,
                  100.0 * gbs / copy_gbs);
      std::fflush(stdout);
    }
  }
  cudaFree(ws);
  return 0;
}
