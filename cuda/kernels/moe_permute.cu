// MoE grouping and combine (see moe_permute.cuh). Grouping: iota slots -> CUB radix sort of (expert id, slot)
// pairs (stable, so an expert's rows keep token order, as the CPU's per-expert lists do) -> per-expert counts ->
// CUB exclusive scans of the counts and of the counts padded to 4 -> every sorted pair scattered to its row.
#include <cub/device/device_radix_sort.cuh>
#include <cub/device/device_scan.cuh>

#include "common/check.cuh"
#include "kernels/moe_permute.cuh"

namespace dsinfer::gpu {

namespace {

size_t align_up(size_t v) { return (v + 255) / 256 * 256; }

struct Layout {
  size_t slots, sorted_ids, sorted_slots, counts, padded, off, poff, temp, temp_bytes, total;
};

int bits_for(int E) {
  int b = 1;
  while ((1 << b) < E) ++b;
  return b;
}

Layout layout(int64_t S, int E) {
  size_t sort_bytes = 0, scan_bytes = 0;
  DSINFER_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(nullptr, sort_bytes, (const uint32_t*)nullptr, (uint32_t*)nullptr,
                                                     (const int32_t*)nullptr, (int32_t*)nullptr, int(S), 0, bits_for(E)));
  DSINFER_CUDA_CHECK(cub::DeviceScan::ExclusiveSum(nullptr, scan_bytes, (const int32_t*)nullptr, (int32_t*)nullptr,
                                                   E + 1));
  Layout l{};
  size_t at = 0;
  auto take = [&](size_t bytes) { const size_t o = at; at += align_up(bytes); return o; };
  l.slots = take(size_t(S) * 4);
  l.sorted_ids = take(size_t(S) * 4);
  l.sorted_slots = take(size_t(S) * 4);
  l.counts = take(size_t(E + 1) * 4);
  l.padded = take(size_t(E + 1) * 4);
  l.off = take(size_t(E + 1) * 4);
  l.poff = take(size_t(E + 1) * 4);
  l.temp_bytes = std::max(sort_bytes, scan_bytes);
  l.temp = take(l.temp_bytes);
  l.total = at;
  return l;
}

__global__ void iota_and_count_kernel(const int32_t* ids, int64_t S, int32_t* slots, int32_t* counts) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= S) return;
  slots[i] = int32_t(i);
  atomicAdd(counts + ids[i], 1);
}

__global__ void pad_counts_kernel(const int32_t* counts, int E, int32_t* padded) {
  const int e = blockIdx.x * blockDim.x + threadIdx.x;
  if (e > E) return;
  padded[e] = e == E ? 0 : (counts[e] + kMoeSegmentPad - 1) / kMoeSegmentPad * kMoeSegmentPad;
}

__global__ void segment_fill_kernel(const int32_t* poff, int E, int64_t rows, int32_t* row_src, int2* row_seg) {
  const int64_t r = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (r >= rows) return;
  int lo = 0, hi = E;  // last e with poff[e] <= r (it is non-empty)
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (poff[mid] <= r) lo = mid; else hi = mid - 1;
  }
  int e = lo;
  while (e > 0 && poff[e] == poff[e + 1]) --e;  // defensive: never land on an empty segment
  row_seg[r] = make_int2(poff[e], poff[e + 1] - poff[e]);
  row_src[r] = -1;
}

__global__ void scatter_kernel(const int32_t* sorted_ids, const int32_t* sorted_slots, const int32_t* off,
                               const int32_t* poff, int64_t S, int top_k, int32_t* row_src, int32_t* slot_row) {
  const int64_t j = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (j >= S) return;
  const int e = sorted_ids[j];
  const int32_t dst = poff[e] + int32_t(j - off[e]);
  const int32_t slot = sorted_slots[j];
  row_src[dst] = slot / top_k;
  slot_row[slot] = dst;
}

__global__ void combine_kernel(MoeCombineParams p) {
  __shared__ int order[32];
  const int64_t t = blockIdx.x;
  if (threadIdx.x == 0) {
    // Slots of this token by increasing expert id (insertion sort of ≤ 32).
    for (int i = 0; i < p.top_k; ++i) {
      const int id = p.expert_ids[t * p.top_k + i];
      int j = i;
      while (j > 0 && p.expert_ids[t * p.top_k + order[j - 1]] > id) { order[j] = order[j - 1]; --j; }
      order[j] = i;
    }
  }
  __syncthreads();
  const int64_t d = int64_t(blockIdx.y) * blockDim.x + threadIdx.x;
  if (d >= p.D) return;
  float acc = 0.0f;
  for (int i = 0; i < p.top_k; ++i) {
    const int s = order[i];
    const float w = p.weights[t * p.top_k + s];
    const float v = p.y[int64_t(p.slot_row[t * p.top_k + s]) * p.ldy + d];
    acc = __fadd_rn(acc, __fmul_rn(w, v));
  }
  p.out[t * p.ldo + d] = acc;
}

__global__ void gather_rows_kernel(const float* src, int64_t lds, const int32_t* row_src, int64_t cols, float* dst,
                                   int64_t ldd) {
  const int64_t r = blockIdx.x;
  const int64_t c = int64_t(blockIdx.y) * blockDim.x + threadIdx.x;
  if (c >= cols) return;
  const int32_t s = row_src[r];
  dst[r * ldd + c] = s < 0 ? 0.0f : src[int64_t(s) * lds + c];
}

unsigned blocks_for(int64_t n, int threads) { return unsigned((n + threads - 1) / threads); }

}  // namespace

size_t moe_grouping_workspace(int64_t S, int E) { return layout(S, E).total; }

void moe_group_by_expert(const MoeGroupingParams& p, void* workspace, size_t workspace_bytes, cudaStream_t s) {
  if (p.S == 0) return;
  const Layout l = layout(p.S, p.E);
  DSINFER_CUDA_REQUIRE(workspace_bytes >= l.total, "moe grouping: workspace too small");
  auto at = [&](size_t o) { return reinterpret_cast<int32_t*>(static_cast<char*>(workspace) + o); };
  int32_t *slots = at(l.slots), *sorted_ids = at(l.sorted_ids), *sorted_slots = at(l.sorted_slots);
  int32_t *counts = at(l.counts), *padded = at(l.padded), *off = at(l.off), *poff = at(l.poff);
  void* temp = static_cast<char*>(workspace) + l.temp;

  DSINFER_CUDA_CHECK(cudaMemsetAsync(counts, 0, size_t(p.E + 1) * 4, s));
  iota_and_count_kernel<<<blocks_for(p.S, 256), 256, 0, s>>>(p.expert_ids, p.S, slots, counts);
  DSINFER_CUDA_CHECK_LAUNCH();
  size_t temp_bytes = l.temp_bytes;
  // Unsigned keys: the ids are non-negative, and only their low bits_for(E) bits are sorted.
  DSINFER_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(temp, temp_bytes, reinterpret_cast<const uint32_t*>(p.expert_ids),
                                                     reinterpret_cast<uint32_t*>(sorted_ids), slots, sorted_slots,
                                                     int(p.S), 0, bits_for(p.E), s));
  pad_counts_kernel<<<blocks_for(p.E + 1, 256), 256, 0, s>>>(counts, p.E, padded);
  DSINFER_CUDA_CHECK_LAUNCH();
  temp_bytes = l.temp_bytes;
  DSINFER_CUDA_CHECK(cub::DeviceScan::ExclusiveSum(temp, temp_bytes, counts, off, p.E + 1, s));
  temp_bytes = l.temp_bytes;
  DSINFER_CUDA_CHECK(cub::DeviceScan::ExclusiveSum(temp, temp_bytes, padded, poff, p.E + 1, s));
  if (p.rows_padded > 0) {
    segment_fill_kernel<<<blocks_for(p.rows_padded, 256), 256, 0, s>>>(poff, p.E, p.rows_padded, p.row_src, p.row_seg);
    DSINFER_CUDA_CHECK_LAUNCH();
  }
  scatter_kernel<<<blocks_for(p.S, 256), 256, 0, s>>>(sorted_ids, sorted_slots, off, poff, p.S, p.top_k, p.row_src,
                                                      p.slot_row);
  DSINFER_CUDA_CHECK_LAUNCH();
}

void moe_combine(const MoeCombineParams& p, cudaStream_t s) {
  if (p.T == 0 || p.D == 0) return;
  DSINFER_CUDA_REQUIRE(p.top_k >= 1 && p.top_k <= 32, "moe_combine: top_k must be in [1, 32]");
  const dim3 grid(unsigned(p.T), blocks_for(p.D, 256));
  combine_kernel<<<grid, 256, 0, s>>>(p);
  DSINFER_CUDA_CHECK_LAUNCH();
}

void gather_rows_f32(const float* src, int64_t lds, const int32_t* row_src, int64_t rows, int64_t cols, float* dst,
                     int64_t ldd, cudaStream_t s) {
  if (rows == 0 || cols == 0) return;
  const dim3 grid(unsigned(rows), blocks_for(cols, 256));
  gather_rows_kernel<<<grid, 256, 0, s>>>(src, lds, row_src, cols, dst, ldd);
  DSINFER_CUDA_CHECK_LAUNCH();
}

}  // namespace dsinfer::gpu
