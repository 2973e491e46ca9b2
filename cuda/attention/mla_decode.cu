// Absorbed-form MLA over a paged latent cache, split over the key list, with an online fp32 softmax
// (see mla_decode.cuh for the contract).
//
// Block = (split, group of 16 heads, query token); 256 threads. Per tile of 32 keys:
//   1. 32 threads resolve the tile's key list entries to physical rows (−1 when masked), then all threads load the
//      rows as f32 into shared memory (converting BF16 / FP8+scale rows on the way): each tile is read once for 16
//      heads, which is the point of the absorbed form (all heads share one latent).
//   2. scores: each thread owns 2 heads x 4 keys over an interleaved quarter of the 576 dims (float4 steps), the 4
//      quarters are summed with two shuffles. 32 FMAs per 6 shared loads.
//   3. softmax: one warp per 2 heads, a lane per key: running max / sum per head, rescale factor for the
//      accumulators (flash-attention style, fp32 throughout as the CPU reference does).
//   4. P·V: each thread owns 4 heads x 8 latent columns (two float4 at col and col+256) and accumulates over the 32
//      keys; the 4 probabilities of its heads are one float4 load (sP is stored key-major).
// Row strides in shared memory are ≡ 16 (mod 32) floats so the two key rows a quarter-warp touches in step 2 fall
// in different banks.
// Splits write normalized partial outputs plus their log-sum-exp; the combine kernel weighs them by exp(lse − max).
// This is a CUDA-core kernel: correct for every cache format and dimension the interface allows, not yet the
// tensor-core (wgmma) kernel the bandwidth target needs (see the report in the issue).
#include <cmath>

#include "mla_decode.cuh"
#include "mla_decode_tc.cuh"

namespace dsinfer::gpu::attn {

namespace {

constexpr int kHeads = 16;    // heads per block
constexpr int kTile = 32;     // keys per tile
constexpr int kThreads = 256;
constexpr int kMaxDim = 576;  // C + R
constexpr int kMaxSplits = 64;

__host__ __device__ constexpr int smem_stride(int dqk) { return (dqk + 31) / 32 * 32 + 16; }
__host__ __device__ constexpr size_t smem_floats(int dqk) {
  // sQ, sK, sS [16][33], sP [32][16], sM/sL/sAlpha [16] each, then 32 int64 rows (as 64 floats).
  return size_t(kHeads + kTile) * smem_stride(dqk) + kHeads * 33 + kTile * kHeads + 3 * kHeads + 2 * kTile;
}

__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float dot4(float4 a, float4 b, float acc) {
  acc = fmaf(a.x, b.x, acc);
  acc = fmaf(a.y, b.y, acc);
  acc = fmaf(a.z, b.z, acc);
  return fmaf(a.w, b.w, acc);
}

template <LatentFormat kFormat>
__global__ void __launch_bounds__(kThreads, 1) mla_decode_kernel(MlaDecodeParams p, int64_t chunk, int splits) {
  extern __shared__ float4 smem4[];
  float* smem = reinterpret_cast<float*>(smem4);
  LatentCacheView cache = p.cache;
  cache.format = kFormat;  // lets the compiler drop the other formats' branches
  const int C = int(cache.C), R = int(cache.R), DQK = C + R;
  const int stride = smem_stride(DQK);
  float* sQ = smem;                                  // [16][stride]
  float* sK = sQ + kHeads * stride;                  // [32][stride]
  float* sS = sK + kTile * stride;                   // [16][33] scaled scores
  float* sP = sS + kHeads * 33;                      // [32][16] probabilities, key-major
  float* sM = sP + kTile * kHeads;                   // [16] running max
  float* sL = sM + kHeads;                           // [16] running sum
  float* sAlpha = sL + kHeads;                       // [16] rescale of this tile
  int64_t* sRow = reinterpret_cast<int64_t*>(sAlpha + kHeads);  // [32] physical rows, −1 = masked

  const int split = blockIdx.x;
  const int h0 = blockIdx.y * kHeads;
  const int64_t t = blockIdx.z;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int nh = min(kHeads, int(p.H - h0));
  const int64_t seq = p.query_seq ? p.query_seq[t] : 0;
  const int64_t n_keys = p.seq_len ? int64_t(p.seq_len[seq]) : p.n_keys;
  const int64_t pos = p.positions[t];
  const int64_t visible = min(pos + 1, n_keys);
  const int64_t n_list = p.indices ? p.n_indices : visible;
  const int64_t begin = int64_t(split) * chunk, end = min(n_list, begin + chunk);

  // Queries of this block's heads: [q_abs | q_pe], zero rows for heads past H.
  const int q4 = DQK / 4;
  for (int e = tid; e < kHeads * q4; e += kThreads) {
    const int h = e / q4, i = (e % q4) * 4;
    float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
    if (h < nh) {
      v = i < C ? *reinterpret_cast<const float4*>(p.q_abs + t * p.qabs_t + (h0 + h) * p.qabs_h + i)
                : *reinterpret_cast<const float4*>(p.q_pe + t * p.qpe_t + (h0 + h) * p.qpe_h + (i - C));
    }
    *reinterpret_cast<float4*>(sQ + h * stride + i) = v;
  }
  if (tid < kHeads) {
    sM[tid] = -INFINITY;
    sL[tid] = 0.0f;
  }

  // P·V ownership: heads hq*4 + a, columns col and col + 256.
  const int hq = tid / 64, col = (tid % 64) * 4;
  float4 acc[4][2];
#pragma unroll
  for (int a = 0; a < 4; ++a) acc[a][0] = acc[a][1] = make_float4(0.f, 0.f, 0.f, 0.f);
  // Score ownership: heads 2*warp + {0,1}, keys kq + 8j, dims quarter sl (interleaved float4s).
  const int sl = lane & 3, kq = lane >> 2;

  for (int64_t k0 = begin; k0 < end; k0 += kTile) {
    __syncthreads();  // the previous tile is consumed (first time: sQ, sM, sL are written)
    if (tid < kTile) {
      const int64_t li = k0 + tid;
      int64_t row = -1;
      if (li < end) {
        const int64_t s = p.indices ? int64_t(p.indices[t * p.n_indices + li]) : li;
        if (s >= 0 && s <= pos && s < n_keys) row = p.blocks.row(seq, s);
      }
      sRow[tid] = row;
    }
    __syncthreads();
    for (int e = tid; e < kTile * q4; e += kThreads) {
      const int j = e / q4, i = (e % q4) * 4;
      const int64_t row = sRow[j];
      const float4 v = row >= 0 ? load_latent4(cache, row, i) : make_float4(0.f, 0.f, 0.f, 0.f);
      *reinterpret_cast<float4*>(sK + j * stride + i) = v;
    }
    __syncthreads();

    // 2. scores
    {
      float s[2][4] = {};
      const float* q0p = sQ + (2 * warp) * stride;
      const float* q1p = q0p + stride;
      for (int i = sl * 4; i < DQK; i += 16) {
        const float4 q0 = *reinterpret_cast<const float4*>(q0p + i);
        const float4 q1 = *reinterpret_cast<const float4*>(q1p + i);
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          const float4 k = *reinterpret_cast<const float4*>(sK + (kq + 8 * j) * stride + i);
          s[0][j] = dot4(q0, k, s[0][j]);
          s[1][j] = dot4(q1, k, s[1][j]);
        }
      }
#pragma unroll
      for (int a = 0; a < 2; ++a)
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          s[a][j] += __shfl_xor_sync(0xffffffffu, s[a][j], 1);
          s[a][j] += __shfl_xor_sync(0xffffffffu, s[a][j], 2);
        }
      if (sl == 0) {
#pragma unroll
        for (int a = 0; a < 2; ++a)
#pragma unroll
          for (int j = 0; j < 4; ++j) {
            const int key = kq + 8 * j;
            sS[(2 * warp + a) * 33 + key] = sRow[key] >= 0 ? s[a][j] * p.softmax_scale : -INFINITY;
          }
      }
    }
    __syncthreads();

    // 3. online softmax, one warp per two heads
#pragma unroll
    for (int a = 0; a < 2; ++a) {
      const int h = 2 * warp + a;
      const float x = sS[h * 33 + lane];
      const float m_old = sM[h];
      const float m_new = fmaxf(m_old, warp_max(x));
      const float pr = m_new == -INFINITY ? 0.0f : expf(x - m_new);
      const float sum = warp_sum(pr);
      const float alpha = m_new == -INFINITY ? 1.0f : expf(m_old - m_new);
      sP[lane * kHeads + h] = pr;
      __syncwarp();
      if (lane == 0) {
        sM[h] = m_new;
        sL[h] = sL[h] * alpha + sum;
        sAlpha[h] = alpha;
      }
    }
    __syncthreads();

    // 4. P·V
    {
      const float4 al = *reinterpret_cast<const float4*>(sAlpha + hq * 4);
      const float alv[4] = {al.x, al.y, al.z, al.w};
#pragma unroll
      for (int a = 0; a < 4; ++a)
#pragma unroll
        for (int c = 0; c < 2; ++c) {
          acc[a][c].x *= alv[a];
          acc[a][c].y *= alv[a];
          acc[a][c].z *= alv[a];
          acc[a][c].w *= alv[a];
        }
      const bool hi = C > 256;
#pragma unroll 4
      for (int j = 0; j < kTile; ++j) {
        const float4 pj = *reinterpret_cast<const float4*>(sP + j * kHeads + hq * 4);
        const float pv[4] = {pj.x, pj.y, pj.z, pj.w};
        const float4 c0 = *reinterpret_cast<const float4*>(sK + j * stride + col);
        const float4 c1 = hi ? *reinterpret_cast<const float4*>(sK + j * stride + 256 + col)
                             : make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll
        for (int a = 0; a < 4; ++a) {
          acc[a][0].x = fmaf(pv[a], c0.x, acc[a][0].x);
          acc[a][0].y = fmaf(pv[a], c0.y, acc[a][0].y);
          acc[a][0].z = fmaf(pv[a], c0.z, acc[a][0].z);
          acc[a][0].w = fmaf(pv[a], c0.w, acc[a][0].w);
          acc[a][1].x = fmaf(pv[a], c1.x, acc[a][1].x);
          acc[a][1].y = fmaf(pv[a], c1.y, acc[a][1].y);
          acc[a][1].z = fmaf(pv[a], c1.z, acc[a][1].z);
          acc[a][1].w = fmaf(pv[a], c1.w, acc[a][1].w);
        }
      }
    }
  }
  __syncthreads();

  // Epilogue: normalized partial output (and its log-sum-exp when split).
  float* out;
  float* lse = nullptr;
  if (splits == 1) {
    out = p.o_lat;
  } else {
    out = p.workspace + size_t(split) * size_t(p.T * p.H) * size_t(C);
    lse = p.workspace + size_t(splits) * size_t(p.T * p.H) * size_t(C) + size_t(split) * size_t(p.T * p.H);
  }
#pragma unroll
  for (int a = 0; a < 4; ++a) {
    const int h = hq * 4 + a;
    if (h >= nh) continue;
    const float l = sL[h];
    const float inv = l > 0.0f ? 1.0f / l : 0.0f;
    float* o = out + size_t(t * p.H + h0 + h) * size_t(C);
    if (col < C)
      *reinterpret_cast<float4*>(o + col) =
          make_float4(acc[a][0].x * inv, acc[a][0].y * inv, acc[a][0].z * inv, acc[a][0].w * inv);
    if (col + 256 < C)
      *reinterpret_cast<float4*>(o + col + 256) =
          make_float4(acc[a][1].x * inv, acc[a][1].y * inv, acc[a][1].z * inv, acc[a][1].w * inv);
    if (lse && (tid % 64) == 0) lse[t * p.H + h0 + h] = l > 0.0f ? sM[h] + logf(l) : -INFINITY;
  }
}

// One block per (token, head): o = Σ_s e^(lse_s − max) · o_s / Σ_s e^(lse_s − max); no keys at all -> zeros.
__global__ void __launch_bounds__(128) mla_combine_kernel(const float* __restrict__ ws, int64_t TH, int64_t C,
                                                          int splits, float* __restrict__ out) {
  __shared__ float w[kMaxSplits];
  __shared__ float total;
  const int64_t th = blockIdx.x;
  const float* lse = ws + size_t(splits) * size_t(TH) * size_t(C);
  if (threadIdx.x < 32) {
    float mx = -INFINITY;
    for (int s = threadIdx.x; s < splits; s += 32) mx = fmaxf(mx, lse[size_t(s) * TH + th]);
    mx = warp_max(mx);
    float sum = 0.0f;
    for (int s = threadIdx.x; s < splits; s += 32) {
      const float l = lse[size_t(s) * TH + th];
      const float e = (mx == -INFINITY || l == -INFINITY) ? 0.0f : expf(l - mx);
      w[s] = e;
      sum += e;
    }
    sum = warp_sum(sum);
    if (threadIdx.x == 0) total = sum;
  }
  __syncthreads();
  const float inv = total > 0.0f ? 1.0f / total : 0.0f;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
    float acc = 0.0f;
    for (int s = 0; s < splits; ++s)
      if (w[s] != 0.0f) acc = fmaf(w[s], ws[(size_t(s) * TH + th) * C + c], acc);
    out[size_t(th) * C + c] = acc * inv;
  }
}

int64_t chunk_for(int64_t max_list, int splits, int tile) {
  const int64_t per = (max_list + splits - 1) / splits;
  return (per + tile - 1) / tile * tile;
}

}  // namespace

MlaKernel mla_decode_kernel_for(const MlaDecodeParams& p) {
  const bool v32 = p.cache.C == 512 && p.cache.R == 64;
  if (p.kernel == MlaKernel::TensorCore && v32) return MlaKernel::TensorCore;
  if (p.kernel == MlaKernel::Auto && v32 && p.cache.format != LatentFormat::F32) return MlaKernel::TensorCore;
  return MlaKernel::CudaCore;
}

int mla_decode_num_splits(const MlaDecodeParams& p) {
  if (p.num_splits > 0) return p.num_splits < kMaxSplits ? p.num_splits : kMaxSplits;
  // One 256-thread block per SM fits (115-160 KB of shared memory); aim for two waves, and never give a split
  // fewer than 4 tiles (the combine pass then costs more than it saves).
  const bool tc = mla_decode_kernel_for(p) == MlaKernel::TensorCore;
  const int heads = tc ? kMlaTcHeads : kHeads, tile = tc ? kMlaTcTile : kTile;
  const int64_t blocks = p.T * ((p.H + heads - 1) / heads);
  const int64_t want = (2 * int64_t(p.num_sms) + blocks - 1) / blocks;
  const int64_t most = (p.max_list + 4 * tile - 1) / (4 * tile);
  int64_t s = want < most ? want : most;
  if (s < 1) s = 1;
  if (s > kMaxSplits) s = kMaxSplits;
  return int(s);
}

size_t mla_decode_workspace_bytes(int64_t T, int64_t H, int64_t C, int splits) {
  if (splits <= 1) return 0;
  return size_t(splits) * size_t(T * H) * (size_t(C) + 1) * sizeof(float);
}

cudaError_t launch_mla_decode(const MlaDecodeParams& p, cudaStream_t stream) {
  if (p.T <= 0 || p.H <= 0) return cudaSuccess;
  const int64_t C = p.cache.C, R = p.cache.R;
  if (C <= 0 || C > 512 || R < 0 || C % 4 || R % 4 || C + R > kMaxDim) return cudaErrorInvalidValue;
  if (p.T > 65535 || (p.H + kHeads - 1) / kHeads > 65535) return cudaErrorInvalidValue;
  const int splits = mla_decode_num_splits(p);
  if (splits > 1 && !p.workspace) return cudaErrorInvalidValue;
  const bool tc = mla_decode_kernel_for(p) == MlaKernel::TensorCore;
  const int64_t chunk = chunk_for(p.max_list > 0 ? p.max_list : 1, splits, tc ? kMlaTcTile : kTile);
  cudaError_t err = cudaSuccess;
  if (tc) {
    if ((err = launch_mla_decode_tc_kernel(p, chunk, splits, stream)) != cudaSuccess) return err;
    if (splits > 1) {
      mla_combine_kernel<<<unsigned(p.T * p.H), 128, 0, stream>>>(p.workspace, p.T * p.H, C, splits, p.o_lat);
      err = cudaGetLastError();
    }
    return err;
  }
  const size_t smem = smem_floats(int(C + R)) * sizeof(float);
  const dim3 grid(unsigned(splits), unsigned((p.H + kHeads - 1) / kHeads), unsigned(p.T));
  switch (p.cache.format) {
    case LatentFormat::F32:
      err = cudaFuncSetAttribute(mla_decode_kernel<LatentFormat::F32>,
                                 cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem));
      if (err == cudaSuccess) mla_decode_kernel<LatentFormat::F32><<<grid, kThreads, smem, stream>>>(p, chunk, splits);
      break;
    case LatentFormat::BF16:
      err = cudaFuncSetAttribute(mla_decode_kernel<LatentFormat::BF16>,
                                 cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem));
      if (err == cudaSuccess) mla_decode_kernel<LatentFormat::BF16><<<grid, kThreads, smem, stream>>>(p, chunk, splits);
      break;
    case LatentFormat::FP8:
      err = cudaFuncSetAttribute(mla_decode_kernel<LatentFormat::FP8>,
                                 cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem));
      if (err == cudaSuccess) mla_decode_kernel<LatentFormat::FP8><<<grid, kThreads, smem, stream>>>(p, chunk, splits);
      break;
  }
  if (err != cudaSuccess) return err;
  if ((err = cudaGetLastError()) != cudaSuccess) return err;
  if (splits > 1) {
    mla_combine_kernel<<<unsigned(p.T * p.H), 128, 0, stream>>>(p.workspace, p.T * p.H, C, splits, p.o_lat);
    err = cudaGetLastError();
  }
  return err;
}

}  // namespace dsinfer::gpu::attn
