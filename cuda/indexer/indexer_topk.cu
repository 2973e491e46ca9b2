// Radix-select top-k (contract in indexer_topk.cuh). One 256-thread block per query row.
//
// Keys: a float score maps to a uint32 whose unsigned order is the float order (sign bit flipped for positives, all
// bits flipped for negatives; −0 is folded onto +0 first because the CPU's comparison treats them as equal).
// Pass p (p = 0..3) histograms digit p (8 bits, most significant first) of the keys whose higher digits equal the
// prefix found so far; a BlockScan over the 256 bins taken from the top gives, for each bin, how many keys lie
// strictly above it, and the single bin where the running count crosses k becomes the next digit. After four
// passes the prefix is the exact k-th largest key T, and `rem` says how many keys equal to T belong to the set.
// Final pass, in position order: selected = key > T, or key == T and fewer than `rem` equal keys precede it
// (a BlockScan over the tie flags, carried across tiles) - the tie rule of the CPU. A second BlockScan over the
// selected flags gives each its output slot, so the indices come out ascending without a sort.
#include <cub/block/block_scan.cuh>

#include "indexer_topk.cuh"

namespace dsinfer::gpu::attn {

namespace {

constexpr int kThreads = 256;
constexpr int kItems = 8;  // per thread per tile of the final pass

__device__ __forceinline__ uint32_t order_key(float f) {
  uint32_t b = __float_as_uint(f);
  if (b == 0x80000000u) b = 0;  // −0 == +0
  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

__global__ void __launch_bounds__(kThreads) indexer_topk_kernel(TopkParams p) {
  using Scan = cub::BlockScan<int, kThreads>;
  __shared__ typename Scan::TempStorage scan_tmp;
  __shared__ int hist[256];
  __shared__ int s_digit, s_rem;

  const int64_t t = blockIdx.x;
  const int tid = threadIdx.x;
  const int64_t seq = p.query_seq ? p.query_seq[t] : 0;
  const int64_t n_keys = p.seq_len ? int64_t(p.seq_len[seq]) : p.n_keys;
  const int64_t n = max(int64_t(0), min(int64_t(p.positions[t]) + 1, n_keys));
  const float* sc = p.scores + t * p.scores_t;
  int32_t* out = p.out + t * p.out_t;
  const int64_t k = p.k;

  if (n <= k) {  // everything visible is selected
    for (int64_t i = tid; i < k; i += kThreads) out[i] = i < n ? int32_t(i) : -1;
    return;
  }

  uint32_t prefix = 0, mask = 0;
  int rem = int(k);
  for (int pass = 0; pass < 4; ++pass) {
    const int shift = 24 - 8 * pass;
    hist[tid] = 0;
    __syncthreads();
    for (int64_t i = tid; i < n; i += kThreads) {
      const uint32_t u = order_key(sc[i]);
      if ((u & mask) == prefix) atomicAdd(&hist[(u >> shift) & 255u], 1);
    }
    __syncthreads();
    // Thread i looks at bin 255 − i: inclusive = keys in bins >= it, exclusive = keys in bins above it.
    const int cnt = hist[255 - tid];
    int incl;
    Scan(scan_tmp).InclusiveSum(cnt, incl);
    const int excl = incl - cnt;
    if (excl < rem && rem <= incl) {
      s_digit = 255 - tid;
      s_rem = rem - excl;
    }
    __syncthreads();
    prefix |= uint32_t(s_digit) << shift;
    mask |= 255u << shift;
    rem = s_rem;
    __syncthreads();  // hist and s_* are rewritten by the next pass
  }
  const uint32_t thr = prefix;

  int eq_before = 0, sel_before = 0;
  for (int64_t base = 0; base < n; base += int64_t(kThreads) * kItems) {
    int eq[kItems], sel[kItems], rank[kItems];
    uint32_t key[kItems];
#pragma unroll
    for (int j = 0; j < kItems; ++j) {
      const int64_t i = base + int64_t(tid) * kItems + j;  // blocked: thread owns consecutive positions
      key[j] = i < n ? order_key(sc[i]) : 0u;
      eq[j] = (i < n && key[j] == thr) ? 1 : 0;
    }
    int eq_total;
    Scan(scan_tmp).ExclusiveSum(eq, rank, eq_total);
    __syncthreads();
#pragma unroll
    for (int j = 0; j < kItems; ++j) {
      const int64_t i = base + int64_t(tid) * kItems + j;
      sel[j] = (i < n && (key[j] > thr || (eq[j] && eq_before + rank[j] < rem))) ? 1 : 0;
    }
    int sel_total;
    Scan(scan_tmp).ExclusiveSum(sel, rank, sel_total);
    __syncthreads();
#pragma unroll
    for (int j = 0; j < kItems; ++j)
      if (sel[j]) out[sel_before + rank[j]] = int32_t(base + int64_t(tid) * kItems + j);
    eq_before += eq_total;
    sel_before += sel_total;
  }
}

}  // namespace

cudaError_t launch_indexer_topk(const TopkParams& p, cudaStream_t stream) {
  if (p.T <= 0) return cudaSuccess;
  if (p.k <= 0 || p.k > (int64_t(1) << 30) || p.T > 0x7fffffff) return cudaErrorInvalidValue;
  indexer_topk_kernel<<<unsigned(p.T), kThreads, 0, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace dsinfer::gpu::attn
