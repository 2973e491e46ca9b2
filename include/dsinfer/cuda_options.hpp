// dsinfer — the CUDA backend's tuning options (ModelLoadParams::cuda). A header of its own so that the backend
// interface (lib/backend/backend.hpp), which nvcc compiles too, can carry them without the rest of the public API.
#pragma once
#include <cstdint>
#include <string>

#include "dsinfer/export.hpp"

namespace dsinfer {

// How the CUDA backend runs (backend "cuda" or "cuda:N"); the CPU backend ignores them. They select among kernels
// that compute the same function (results differ at most by rounding: docs/cuda.md), so they are for speed
// measurements on a GPU. Each has an environment variable that, when set to a valid value, wins over the option
// (logged at warn); an invalid value in the environment is ignored with a warning. Model::load refuses invalid
// option values with Error(InvalidArgument) naming the field, before anything is read.
struct CudaOptions {
  // The device ordinal, >= 0, for backend "cuda" ("cuda:N" names the device itself and wins over the option and
  // the environment). Environment: DSINFER_CUDA_DEVICE.
  int device = 0;
  // GEMMs of at most this many activation rows (tokens) run the skinny kernels, which read each weight once;
  // larger ones run cuBLASLt. 0 to kMaxSmallM (0: cuBLASLt wherever it applies). Environment: DSINFER_CUDA_SMALL_M.
  // 16: on an H200 the tensor-core skinny kernel wins at every V3.2 shape up to 8 rows, half of them at 16, and
  // cuBLASLt at 32-64 rows by 1.1-4.3x (docs/benchmarks.md, GPU check 2026-12-04).
  int64_t small_m_max = 16;
  static constexpr int64_t kMaxSmallM = 4096;
  // Whether the skinny FP8 GEMM may use its tensor-core (mma.sync e4m3) form; it is still used only after a
  // start-up probe agrees with the CUDA-core form. Environment: DSINFER_CUDA_MMA (0 = false, 1 = true).
  bool small_m_tensor_cores = true;
  // Whether FP8 GEMMs above small_m_max may use cuBLASLt's block-scaled FP8 (after a start-up probe finds its scale
  // layout); false runs them on the skinny kernel. Environment: DSINFER_CUDA_LT_FP8 (0 = false, 1 = true).
  bool cublaslt_fp8 = true;
  // The MLA attention kernel: "cuda-core" (fp32) or "tensor-core" (bf16 mma.sync; bf16 rounding of q, cache and
  // probabilities). Environment: DSINFER_CUDA_MLA_KERNEL ("cuda-core", or "tensor-core" / "tc").
  std::string mla_kernel = "cuda-core";
  // The sparse-attention indexer's score kernel: "cuda-core" (fp32) or "tensor-core" (e4m3 mma.sync, taken when
  // the indexer's queries and keys are FP8-quantized, i.e. in fp8 precision; otherwise the cuda-core kernel runs).
  // Environment: DSINFER_CUDA_INDEXER_KERNEL ("cuda-core", or "tensor-core" / "mma").
  std::string indexer_kernel = "cuda-core";
};

}  // namespace dsinfer
