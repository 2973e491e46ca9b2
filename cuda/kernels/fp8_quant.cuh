// Activation quantization to e4m3 per 1 x `group` elements (spec §4.3, §6), exactly the CPU reference's
// arithmetic: amax floored at 1e-4, s = amax / 448 (rounded up to a power of two when ue8m0), q = e4m3(clamp(x/s))
// with round-to-nearest-even. Optionally fused with the SwiGLU that produces the input (h = silu(gate) ⊙ up) and
// with a row gather (MoE: output row r quantizes input row row_src[r]).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace dsinfer::gpu {

struct Fp8QuantParams {
  // Input: rows of x (row stride ldx); with `up`, the input is silu(x) ⊙ up (row stride ldup).
  const float* x = nullptr;
  int64_t ldx = 0;
  const float* up = nullptr;
  int64_t ldup = 0;
  // Optional row map: output row r reads input row row_src[r] (or, with `up`, input row r); row_src[r] < 0 makes
  // an all-zero row with scale 1 (padding rows of a grouped GEMM).
  const int32_t* row_src = nullptr;
  int64_t rows = 0, cols = 0;
  int group = 128;
  bool ue8m0 = true;
  // Outputs (each optional): e4m3 bytes, fp32 q (or q·s with qf_dequant), scales.
  uint8_t* q8 = nullptr;
  int64_t ldq8 = 0;
  float* qf = nullptr;
  int64_t ldqf = 0;
  bool qf_dequant = false;
  // scale(r, g) = scales[r * s_row + g * s_grp], or with row_seg (segments of a grouped GEMM, token-major per
  // segment as cuBLASLt's VEC128 layout wants): scales[seg.x * G + g * seg.y + (r - seg.x)], seg = row_seg[r].
  float* scales = nullptr;
  int64_t s_row = 0, s_grp = 0;
  const int2* row_seg = nullptr;
};

void fp8_quantize_rows(const Fp8QuantParams& p, cudaStream_t stream);

}  // namespace dsinfer::gpu
