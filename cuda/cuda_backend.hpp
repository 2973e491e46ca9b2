// The CUDA backend: the Backend interface (lib/backend/backend.hpp) on one NVIDIA GPU.
//
// Memory: activations and Buffers come from the device's stream-ordered pool (cudaMallocAsync; the pool keeps
// freed memory cached). Weights are uploaded once, in their stored dtype (FP8 stays e4m3 plus fp32 block scales),
// by prepare_weight (or on first use) into a table of device copies that Weight::prepared points into.
// Streams: every op is enqueued on the backend's own stream; the ops that return host data (to_host, bytes_to_host)
// synchronize it, and so does moe_experts, which reads the routing's expert counts on the host for its launch
// shapes. Index data (positions, block tables, top-k, routing) arrives and stays in device memory (interface v2).
// No hidden per-thread state: one backend is used by one thread at a time (the model serializes its evaluations),
// several backends may coexist.
// Errors: every CUDA/cuBLASLt status becomes dsinfer::Error (Device, OutOfMemory, Unsupported) with file:line.
#pragma once
#include <cuda_runtime.h>

#include <array>
#include <cstdint>
#include <memory>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "backend/backend.hpp"
#include "kernels/elementwise.cuh"
#include "kernels/lt_gemm.hpp"

namespace dsinfer {

class CudaBackend final : public Backend {
 public:
  // device: CUDA device ordinal; < 0 takes opts.cuda.device. opts.cuda is taken as given: create_backend has
  // checked it and applied the environment's overrides (lib/backend/cuda_options.hpp).
  explicit CudaBackend(const BackendOptions& opts, int device = -1);
  ~CudaBackend() override;
  CudaBackend(const CudaBackend&) = delete;
  CudaBackend& operator=(const CudaBackend&) = delete;
  std::string_view name() const override { return "cuda"; }

  Buffer allocate(size_t bytes, bool zero = true) override;
  BackendMemoryStats memory_stats() const override;  // the scratch slots (the pool's cache is the driver's)
  void fill_zero(Tensor2D x) override;
  void copy(Tensor2D dst, Tensor2D src) override;
  void to_host(float* dst, Tensor2D src) override;
  void from_host(Tensor2D dst, const float* src) override;
  // Packed KV caches (issue 19): FP8 only, in the CPU backend's byte layout (lib/backend/kv_format.hpp). BF16 is
  // refused: the attention kernels read a BF16 latent row, but nothing on the GPU writes or reads a BF16 indexer key.
  bool supports(BackendFeature f) const override { return f == BackendFeature::KvCacheFp8; }
  void kv_pack(const KvPackArgs& a) override;  // cuda/kv/cuda_backend_kv.cu
  void copy_bytes(void* dst, const void* src, size_t bytes) override;
  void bytes_to_host(void* dst, const void* src, size_t bytes) override;
  void bytes_from_host(void* dst, const void* src, size_t bytes) override;
  using Backend::prepare_weight;  // any other overload forwards to this one
  void prepare_weight(const Weight& w) override;
  Matrix dequantize(const Weight& w) override;

  void embed(const Weight& table, std::span<const int32_t> ids, Tensor2D out) override;
  void add_rms_norm(Tensor2D residual, Tensor2D x, const Weight& w, float eps, Tensor2D out) override;
  void rms_norm(Tensor2D x, const Weight& w, float eps, Tensor2D out) override;
  void layer_norm(Tensor2D x, const Weight& w, const Weight& b, float eps, Tensor2D out) override;
  void linear(Tensor2D x, const Weight& w, Tensor2D out, const LinearQuant& q) override;
  void silu_mul(Tensor2D gate, Tensor2D up, Tensor2D out) override;
  void add(Tensor2D acc, Tensor2D x) override;
  void rope(const RopeArgs& a) override;
  void hadamard(Tensor2D x, int64_t n) override;
  void fp8_quantize(Tensor2D x, int64_t group, bool ue8m0, bool dequantize, Tensor2D out, Tensor2D scales) override;
  void round_to_bf16(Tensor2D x) override;  // on the stream (the default goes through host memory)
  void indexer_topk(const IndexerTopkArgs& a) override;   // cuda/attention/cuda_backend_attention.cu
  void mla_attention(const MlaArgs& a) override;          // cuda/attention/cuda_backend_attention.cu
  void moe_route(const MoeRouteArgs& a) override;
  void moe_experts(const MoeExpertsArgs& a) override;

  // --- for the CUDA code of other files (attention, indexer, KV cache) and for tests/benchmarks ---
  cudaStream_t stream() const { return stream_; }
  int device() const { return device_; }
  int num_sms() const { return num_sms_; }
  void synchronize();
  // The device copy of a weight (uploaded now if prepare_weight was not called: w.prepared then records it),
  // shaped as `w`.
  gpu::DeviceTensorRef device_weight(const Weight& w);
  // Grow-only device scratch, one buffer per slot, valid until the same slot is requested again. Reuse is
  // stream-ordered (an old buffer is freed after the work already enqueued). Slots [0, 32) belong to
  // cuda_backend.cu, [32, 64) to the attention/indexer/KV files.
  static constexpr int kScratchSlots = 64;
  void* scratch(int slot, size_t bytes);

  // Linear layers with at most this many activation rows use the skinny kernel, larger ones cuBLASLt
  // (CudaOptions::small_m_max).
  int64_t small_m_max() const { return small_m_max_; }
  void set_small_m_max(int64_t m) { small_m_max_ = m; }
  // Skinny: the CUDA-core skinny kernel; SkinnyMma: its tensor-core FP8 variant (FP8 weights with FP8
  // activations, M ≤ 64, K % 128 == 0, N % 16 == 0); CublasLt: cuBLASLt. Auto: SkinnyMma (where it applies and its
  // probe passed) or Skinny up to small_m_max rows, cuBLASLt above.
  enum class LinearPath { Auto, Skinny, SkinnyMma, CublasLt };
  // Whether the tensor-core skinny kernel is used: probed once against the CUDA-core kernel (a wrong result
  // turns it off with a line on stderr); CudaOptions::small_m_tensor_cores false turns it off.
  bool small_mma_enabled();
  void set_small_mma_enabled(bool on) { mma_state_ = on ? 1 : -1; }  // tests: both kernels in every path
  // How cuBLASLt's VEC128_32F activation scales are laid out, found once by a probe GEMM against the skinny
  // kernel (the documentation leaves it implicit): TokenMajor = [G][M] (all rows of group 0, then group 1, ...),
  // RowMajor = [M][G]; None = cuBLASLt's block-scaled FP8 is unavailable or disagrees, and every FP8 linear uses
  // the skinny kernel. CudaOptions::cublaslt_fp8 false forces None.
  enum class Fp8ScaleLayout { Unknown, TokenMajor, RowMajor, None };
  Fp8ScaleLayout fp8_scale_layout();
  // linear() through a chosen path (benchmarks and tests compare the two).
  void linear_path(Tensor2D x, const Weight& w, Tensor2D out, const LinearQuant& q, LinearPath path);

 private:
  struct DeviceWeight {
    const uint8_t* host = nullptr;  // the bytes it was uploaded from, and their shape (a stale handle differs)
    int64_t rows = 0, cols = 0;
    void* data = nullptr;
    float* scale = nullptr;  // FP8: [ceil(rows/128), scale_ld] with scale_ld = round_up(ceil(cols/128), 4)
    int64_t scale_ld = 0;
    DType dtype = DType::F32;
    int64_t numel = 0;
  };
  struct Scratch {
    void* ptr = nullptr;
    size_t bytes = 0;
  };

  const DeviceWeight& upload_weight(const Weight& w);
  // One FP8 GEMM over pre-quantized activations: rows [0, M) of xq (row stride K) with scales
  // x_scale[m * xs_m + g * xs_g] -> out [M, N] (ldo). xq and the scales hold round_up(M, 4) rows (padding rows
  // zero) so that cuBLASLt can take them when the scale layout is the one it reads (Fp8ScaleLayout).
  void fp8_gemm_prequantized(const uint8_t* xq, const float* x_scale, int64_t xs_m, int64_t xs_g, int64_t M,
                             int64_t K, const Weight& w, float* out, int64_t ldo, LinearPath path);
  void skinny(const gpu::SkinnyGemmParams& p, bool use_mma = false);
  void skinny_batched(const std::vector<gpu::SkinnyGemmParams>& ps, bool use_mma = false);  // launches of <= 16

  int device_ = 0;
  int num_sms_ = 1;
  cudaStream_t stream_ = nullptr;
  int64_t small_m_max_ = CudaOptions{}.small_m_max;
  bool small_m_tensor_cores_ = true;     // CudaOptions::small_m_tensor_cores
  bool cublaslt_fp8_ = true;             // CudaOptions::cublaslt_fp8
  bool mla_tensor_cores_ = false;        // CudaOptions::mla_kernel == "tensor-core"
  bool indexer_tensor_cores_ = false;    // CudaOptions::indexer_kernel == "tensor-core"
  Fp8ScaleLayout fp8_layout_ = Fp8ScaleLayout::Unknown;
  int mma_state_ = 0;  // 0 unknown, 1 on, -1 off
  std::unique_ptr<gpu::LtGemm> lt_;
  void* lt_workspace_ = nullptr;
  std::vector<DeviceWeight> weights_;  // indexed by WeightHandle::index
  std::vector<int32_t> route_host_;  // moe_experts: the routing's host copy (launch shapes), storage kept
  std::array<Scratch, kScratchSlots> scratch_{};
};

}  // namespace dsinfer
