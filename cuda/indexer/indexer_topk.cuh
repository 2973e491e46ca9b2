// Exact per-row top-k of indexer scores with the CPU backend's semantics (backend.hpp IndexerTopkArgs):
// candidates are positions [0, visible(t)); higher score first, equal scores -> lower position; the selected
// positions are written sorted ascending, and slots past min(k, visible) hold −1.
//
// Radix select, one block per row, built from CUB block primitives: four 8-bit histogram passes (shared-memory
// atomics) over order-preserving uint32 keys narrow down the k-th largest key and how many keys equal to it must
// be taken; BlockScan finds the digit of each pass and, in a final pass in position order, ranks the ties (the
// lowest positions win) and compacts the selection so the output comes out already sorted.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace dsinfer::gpu::attn {

struct TopkParams {
  int64_t T = 0;
  const float* scores = nullptr;       // [T, scores_t] f32 device
  int64_t scores_t = 0;
  const int32_t* query_seq = nullptr;  // [T] i32 device, null = sequence 0
  const int32_t* seq_len = nullptr;    // [n_seqs] i32 device, null = n_keys
  int64_t n_keys = 0;
  const int32_t* positions = nullptr;  // [T] i32 device: visible(t) = min(pos[t] + 1, keys of its sequence)
  int64_t k = 0;
  int32_t* out = nullptr;              // [T, out_t] i32 device: k entries per row
  int64_t out_t = 0;
};
cudaError_t launch_indexer_topk(const TopkParams& p, cudaStream_t stream);

}  // namespace dsinfer::gpu::attn
