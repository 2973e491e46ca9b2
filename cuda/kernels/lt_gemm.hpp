// cuBLASLt GEMMs of the backend, all "TN" in cuBLAS' column-major terms: D[N, M] (col-major, = out [M, N]
// row-major) = A[K, N]ᵀ·B[K, M] with A the weight [N, K] row-major and B the activations [M, K] row-major, fp32 D.
//   Fp8Block: A e4m3 with BLK128x128_32F scales, B e4m3 with VEC128_32F scales, fp32 accumulate (cuBLASLt's
//             per-block promotion; fast accumulation is not allowed with these modes).
//   Bf16:     A, B bf16; Fp32: A, B fp32 (CUBLAS_COMPUTE_32F, no TF32).
// Matmul descriptors, layouts and the heuristic's algorithm are cached per shape; the scale pointers are set on
// the cached descriptor at each call (the backend is single-stream, so no two calls race on it).
#pragma once
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <map>
#include <tuple>

namespace dsinfer::gpu {

enum class LtKind : int { Fp8Block = 0, Bf16 = 1, Fp32 = 2 };

struct LtGemmArgs {
  LtKind kind = LtKind::Fp8Block;
  int64_t N = 0, M = 0, K = 0;  // M: activation rows (a multiple of 4 for Fp8Block)
  const void* w = nullptr;      // [N, K] row-major, ld = ldw (elements)
  int64_t ldw = 0;
  const void* x = nullptr;      // [M, K] row-major, ld = ldx
  int64_t ldx = 0;
  float* out = nullptr;         // [M, N] row-major, ld = ldo
  int64_t ldo = 0;
  // Fp8Block: weight scales [ceil(N/128), round_up(ceil(K/128), 4)] row-major; activation scales
  // [ceil(K/128), M] row-major (token-major: all M scales of group 0, then group 1, ...).
  const float* w_scale = nullptr;
  const float* x_scale = nullptr;
};

class LtGemm {
 public:
  LtGemm();
  ~LtGemm();
  LtGemm(const LtGemm&) = delete;
  LtGemm& operator=(const LtGemm&) = delete;

  // Workspace: device memory the caller keeps alive for as long as this object.
  void set_workspace(void* ptr, size_t bytes) { workspace_ = ptr; workspace_bytes_ = bytes; }
  // Whether cuBLASLt has an algorithm for this shape (cached); false instead of throwing.
  bool supported(const LtGemmArgs& a);
  void run(const LtGemmArgs& a, cudaStream_t stream);

 private:
  struct Plan {
    cublasLtMatmulDesc_t desc = nullptr;
    cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
    cublasLtMatmulAlgo_t algo{};
    bool ok = false;
    bool bf16_out = false;  // cuBLASLt had no fp32-output algorithm: D in bf16 (ld N), widened into `out`
  };
  // kind, N, M, K, ldw, ldx, ldo, and the pointers' alignments (the heuristic may pick kernels that need more).
  using Key = std::tuple<int, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int, int, int>;
  Plan& plan(const LtGemmArgs& a);
  bool heuristic(Plan& p, int al_w, int al_x, int al_d);

  cublasLtHandle_t handle_ = nullptr;
  void* bf16_out_ = nullptr;  // D buffer of bf16_out plans (grown on demand)
  size_t bf16_out_bytes_ = 0;
  void* workspace_ = nullptr;
  size_t workspace_bytes_ = 0;
  std::map<Key, Plan> plans_;
};

}  // namespace dsinfer::gpu
