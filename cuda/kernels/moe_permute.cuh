// Token grouping for the MoE experts (spec §5): the (token, slot) pairs sorted by expert id with CUB, each
// expert's rows placed in a contiguous segment of a grouped buffer whose segments start at multiples of 4 rows
// (cuBLASLt's block-scaled FP8 GEMM wants M % 4 == 0 and 16-byte aligned scale segments), and the weighted
// combine of the expert outputs back into token order.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace dsinfer::gpu {

constexpr int kMoeSegmentPad = 4;

struct MoeGroupingParams {
  const int32_t* expert_ids = nullptr;  // [S = T * top_k] device, each in [0, E)
  int64_t S = 0;
  int top_k = 1, E = 0;
  int64_t rows_padded = 0;  // Σ_e round_up(count_e, 4): the caller computes it from its host copy of the ids
  // Outputs (device):
  int32_t* row_src = nullptr;  // [rows_padded] token of each grouped row, -1 for padding rows
  int2* row_seg = nullptr;     // [rows_padded] {first row, padded rows} of the row's expert segment
  int32_t* slot_row = nullptr; // [S] grouped row of each (token, slot)
};

size_t moe_grouping_workspace(int64_t S, int E);
void moe_group_by_expert(const MoeGroupingParams& p, void* workspace, size_t workspace_bytes, cudaStream_t s);

// out[t, :] = Σ_i weights[t, i] · y[slot_row[t * top_k + i], :], summed in increasing expert id order (the CPU
// reference's order) with unfused multiply and add.
struct MoeCombineParams {
  const float* y = nullptr;
  int64_t ldy = 0;
  const int32_t* slot_row = nullptr;
  const int32_t* expert_ids = nullptr;
  const float* weights = nullptr;
  int64_t T = 0, D = 0;
  int top_k = 1;
  float* out = nullptr;
  int64_t ldo = 0;
};
void moe_combine(const MoeCombineParams& p, cudaStream_t s);

// dst[r, :] = src[row_src[r], :] (fp32), zeros where row_src[r] < 0.
void gather_rows_f32(const float* src, int64_t lds, const int32_t* row_src, int64_t rows, int64_t cols, float* dst,
                     int64_t ldd, cudaStream_t s);

}  // namespace dsinfer::gpu
