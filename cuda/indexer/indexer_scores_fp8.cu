// Indexer scores on the FP8 tensor cores (see indexer_scores_fp8.cuh).
//
// Block = one query token x a run of kTiles tiles of 64 keys; 256 threads = 8 warps. Shared memory holds the
// query's 64 heads x 128 dims and the current key tile as e4m3 bytes, rows padded to 144 bytes (36 words: the
// 8 rows x 4 words a fragment load touches fall in 32 distinct banks). For m16n8k32 the A fragment of a thread is
// four 32-bit words (rows gid / gid+8, bytes 4·tig.. and 16 + 4·tig..) and the B fragment two words (key gid,
// dims 4·tig.. and 16 + 4·tig..), so fragments are plain 32-bit shared loads, no ldmatrix.
// Warp w computes heads 16·(w%4).. against keys 32·(w/4)..: 4 k-steps x 4 n-tiles = 16 MMAs per tile. The epilogue
// applies ReLU and the folded head weight to its two rows, sums the 8 row groups with shuffles, and the four head
// tiles meet in shared memory; the key scale multiplies last, as on the CPU.
#include <cuda_fp8.h>

#include <cmath>

#include "indexer_scores_fp8.cuh"

namespace dsinfer::gpu::attn {

namespace {

constexpr int kHeads = 64, kKeys = 64, kTiles = 8, kThreads = 256;
constexpr int kRow = 144;  // bytes per shared-memory row (128 + 16)

__device__ __forceinline__ void mma_e4m3(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
__device__ __forceinline__ uint32_t pack_e4m3x4(float4 v) {
  // Exact for e4m3-representable inputs (the only ones this kernel is for).
  const uint32_t lo = __nv_cvt_float2_to_fp8x2(make_float2(v.x, v.y), __NV_SATFINITE, __NV_E4M3);
  const uint32_t hi = __nv_cvt_float2_to_fp8x2(make_float2(v.z, v.w), __NV_SATFINITE, __NV_E4M3);
  return lo | (hi << 16);
}

template <IndexKeyFormat kFormat>
__global__ void __launch_bounds__(kThreads) indexer_scores_fp8_kernel(IndexerScoresParams p) {
  __shared__ __align__(16) uint8_t sQ[kHeads * kRow];
  __shared__ __align__(16) uint8_t sK[kKeys * kRow];
  __shared__ float sW[kHeads];
  __shared__ float sPart[4][kKeys];
  __shared__ int64_t sRow[kKeys];
  IndexKeyCacheView keys = p.keys;
  keys.format = kFormat;

  const int64_t t = blockIdx.y;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, gid = lane / 4, tig = lane % 4;
  const int D = int(p.D);
  const int64_t seq = p.query_seq ? p.query_seq[t] : 0;
  const int64_t n_keys = p.seq_len ? int64_t(p.seq_len[seq]) : p.n_keys;
  const int64_t visible = min(int64_t(p.positions[t]) + 1, n_keys);
  const int64_t first = int64_t(blockIdx.x) * kTiles * kKeys;
  const int64_t last = min(first + kTiles * kKeys, p.max_keys);
  float* out = p.scores + t * p.scores_t;
  for (int64_t s = max(first, visible) + tid; s < last; s += kThreads) out[s] = -INFINITY;
  if (first >= visible) return;

  // Query as e4m3 (dims past D and heads past H are zero), folded head weights.
  for (int e = tid; e < kHeads * 32; e += kThreads) {
    const int h = e / 32, i = (e % 32) * 4;
    uint32_t v = 0;
    if (h < p.H && i < D) v = pack_e4m3x4(*reinterpret_cast<const float4*>(p.q + t * p.q_t + int64_t(h) * D + i));
    *reinterpret_cast<uint32_t*>(sQ + h * kRow + i) = v;
  }
  if (tid < kHeads) {
    float wt = 0.0f;
    if (tid < p.H) wt = p.w[t * p.w_t + tid] * p.head_scale * (p.q_scale ? p.q_scale[t * p.qs_t + tid] : 1.0f);
    sW[tid] = wt;
  }

  const int mt = warp % 4, half = warp / 4;
  const int r0 = mt * 16 + gid, r1 = r0 + 8;
  const int k_steps = (D + 31) / 32;
  const int64_t stop = min(last, visible);
  for (int64_t s0 = first; s0 < stop; s0 += kKeys) {
    __syncthreads();
    if (tid < kKeys) {
      const int64_t s = s0 + tid;
      sRow[tid] = s < stop ? p.blocks.row(seq, s) : -1;
    }
    __syncthreads();
    for (int e = tid; e < kKeys * 32; e += kThreads) {
      const int j = e / 32, i = (e % 32) * 4;
      const int64_t row = sRow[j];
      uint32_t v = 0;
      if (row >= 0 && i < D) {
        if (kFormat == IndexKeyFormat::FP8) {
          const int64_t page = row / keys.block_tokens, off = row % keys.block_tokens;
          v = *reinterpret_cast<const uint32_t*>(keys.packed + page * keys.block_tokens * index_key_bytes(D) +
                                                 off * D + i);
        } else {
          v = pack_e4m3x4(*reinterpret_cast<const float4*>(keys.k + row * keys.ld_k + i));
        }
      }
      *reinterpret_cast<uint32_t*>(sK + j * kRow + i) = v;
    }
    __syncthreads();

    float acc[4][4];
#pragma unroll
    for (int n = 0; n < 4; ++n) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.0f;
    for (int ks = 0; ks < k_steps; ++ks) {
      const int kb = ks * 32 + tig * 4;
      uint32_t a[4];
      a[0] = *reinterpret_cast<const uint32_t*>(sQ + r0 * kRow + kb);
      a[1] = *reinterpret_cast<const uint32_t*>(sQ + r1 * kRow + kb);
      a[2] = *reinterpret_cast<const uint32_t*>(sQ + r0 * kRow + kb + 16);
      a[3] = *reinterpret_cast<const uint32_t*>(sQ + r1 * kRow + kb + 16);
#pragma unroll
      for (int n = 0; n < 4; ++n) {
        const uint8_t* kr = sK + (half * 32 + n * 8 + gid) * kRow + kb;
        mma_e4m3(acc[n], a, *reinterpret_cast<const uint32_t*>(kr), *reinterpret_cast<const uint32_t*>(kr + 16));
      }
    }
    // ReLU, head weights, sum over this warp's 16 heads (rows gid and gid+8 of every lane group).
    const float w0 = sW[r0], w1 = sW[r1];
    float v[8];
#pragma unroll
    for (int n = 0; n < 4; ++n) {
      v[2 * n] = fmaf(w1, fmaxf(acc[n][2], 0.0f), w0 * fmaxf(acc[n][0], 0.0f));
      v[2 * n + 1] = fmaf(w1, fmaxf(acc[n][3], 0.0f), w0 * fmaxf(acc[n][1], 0.0f));
    }
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      v[i] += __shfl_xor_sync(0xffffffffu, v[i], 4);
      v[i] += __shfl_xor_sync(0xffffffffu, v[i], 8);
      v[i] += __shfl_xor_sync(0xffffffffu, v[i], 16);
    }
    if (gid == 0) {
#pragma unroll
      for (int n = 0; n < 4; ++n) {
        sPart[mt][half * 32 + n * 8 + 2 * tig] = v[2 * n];
        sPart[mt][half * 32 + n * 8 + 2 * tig + 1] = v[2 * n + 1];
      }
    }
    __syncthreads();
    if (tid < kKeys && sRow[tid] >= 0) {
      const float sum = (sPart[0][tid] + sPart[1][tid]) + (sPart[2][tid] + sPart[3][tid]);
      out[s0 + tid] = sum * load_index_scale(keys, sRow[tid]);
    }
  }
}

}  // namespace

cudaError_t launch_indexer_scores_fp8_mma(const IndexerScoresParams& p, cudaStream_t stream) {
  if (p.T <= 0 || p.max_keys <= 0) return cudaSuccess;
  if (p.H <= 0 || p.H > kHeads || p.D <= 0 || p.D > 128 || p.D % 32 || p.keys.D != p.D || p.T > 65535)
    return cudaErrorInvalidValue;
  if (p.keys.format == IndexKeyFormat::FP8 && p.keys.block_tokens <= 0) return cudaErrorInvalidValue;
  const int64_t per_block = int64_t(kTiles) * kKeys;
  const dim3 grid(unsigned((p.max_keys + per_block - 1) / per_block), unsigned(p.T));
  if (p.keys.format == IndexKeyFormat::FP8)
    indexer_scores_fp8_kernel<IndexKeyFormat::FP8><<<grid, kThreads, 0, stream>>>(p);
  else
    indexer_scores_fp8_kernel<IndexKeyFormat::F32><<<grid, kThreads, 0, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace dsinfer::gpu::attn
