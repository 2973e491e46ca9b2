// Absorbed MLA attention on the tensor cores (warp-level bf16 mma.sync m16n8k16, fp32 accumulate).
//
// Block = (split, 64 heads, query token), 256 threads = 8 warps. Shared memory holds the block's queries
// [64 heads x 576] and one key tile [64 keys x 576] as bf16, plus the tile's probabilities [64 x 64] bf16 - about
// 157 KB (FP8: 198 KB with the cp.async staging tile), one block per SM. Per tile:
//   1. resolve the 64 list entries to physical rows (−1 = masked), load and convert the rows (FP8 rows are
//      dequantized with their per-128 scales) into sK; FP8 rows of the next tile are already in flight;
//   2. S = Q·Kᵀ: warp w owns heads 16·(w%4).. and keys 32·(w/4)..; fragments come from ldmatrix (row-major Q is
//      the A operand, key-major K is already the "col" B operand);
//   3. softmax in the log2 domain (scores pre-multiplied by scale·log2 e): row maxima and sums of the two warps
//      sharing a row meet in shared memory; the rescale factor of each row stays in the registers of the warps
//      that own the row in step 4 (same head mapping);
//   4. O += P·V with V = the first 512 columns of the same tile: warp w owns heads 16·(w%4).. and 256 latent
//      columns 256·(w/4)..: 32 accumulator fragments (128 fp32 registers); V fragments come from ldmatrix.trans.
// Shared-memory row strides are 16 bytes past a multiple of 128, so the 8 row addresses of every ldmatrix hit
// distinct bank groups. This is the mma.sync design; the wgmma/TMA pipeline (FlashMLA's) is the next step.
#include <cuda_bf16.h>

#include <cmath>

#include "mla_decode_tc.cuh"

namespace dsinfer::gpu::attn {

namespace {

constexpr int kThreads = 256;
constexpr int kC = 512, kR = 64, kDqk = kC + kR;
constexpr int kQS = kDqk + 8;          // sQ/sK row stride in bf16 (1168 bytes ≡ 16 mod 128)
constexpr int kPS = kMlaTcTile + 8;    // sP row stride in bf16 (144 bytes)
constexpr int kFp8Row = 656;           // bytes of one FP8 cache row at these dims (41 x 16)
// sQ, sK, sP, sRedMax/sRedSum/sM/sL, two row buffers; FP8 adds the raw staging tile of the cp.async pipeline.
constexpr size_t kSmemBase = size_t(kMlaTcHeads + kMlaTcTile) * kQS * 2 + size_t(kMlaTcHeads) * kPS * 2 +
                             (2 * kMlaTcHeads + 2 * kMlaTcHeads + 2 * kMlaTcHeads) * 4 + 2 * kMlaTcTile * 8;
constexpr size_t smem_bytes(LatentFormat f) {
  return kSmemBase + (f == LatentFormat::FP8 ? size_t(kMlaTcTile) * kFp8Row : 0);
}

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}
__device__ __forceinline__ void ldsm_x4(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p)));
}
__device__ __forceinline__ void ldsm_x4_trans(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p)));
}
// d += a·b for a 16x16 (row) x 16x8 (col) bf16 tile pair, fp32 accumulate.
__device__ __forceinline__ void mma_bf16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(smem_addr(smem)), "l"(gmem));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_all;\n" ::: "memory"); }
__device__ __forceinline__ void store_bf16x4(__nv_bfloat16* dst, float4 v) {
  __nv_bfloat162 lo = __floats2bfloat162_rn(v.x, v.y), hi = __floats2bfloat162_rn(v.z, v.w);
  uint2 u;
  u.x = *reinterpret_cast<uint32_t*>(&lo);
  u.y = *reinterpret_cast<uint32_t*>(&hi);
  *reinterpret_cast<uint2*>(dst) = u;
}

template <LatentFormat kFormat>
__global__ void __launch_bounds__(kThreads, 1) mla_decode_tc_kernel(MlaDecodeParams p, int64_t chunk, int splits) {
  extern __shared__ float4 smem4[];
  auto* sQ = reinterpret_cast<__nv_bfloat16*>(smem4);   // [64][kQS]
  __nv_bfloat16* sK = sQ + kMlaTcHeads * kQS;           // [64][kQS]
  __nv_bfloat16* sP = sK + kMlaTcTile * kQS;            // [64][kPS]
  float* sRedMax = reinterpret_cast<float*>(sP + kMlaTcHeads * kPS);  // [2][64]
  float* sRedSum = sRedMax + 2 * kMlaTcHeads;           // [2][64]
  float* sM = sRedSum + 2 * kMlaTcHeads;                // [64] running max (log2 domain)
  float* sL = sM + kMlaTcHeads;                         // [64] running sum
  int64_t* sRowBuf = reinterpret_cast<int64_t*>(sL + kMlaTcHeads);  // [2][64] physical rows, −1 = masked
  uint8_t* sStage = reinterpret_cast<uint8_t*>(sRowBuf + 2 * kMlaTcTile);  // FP8: [64][656] raw rows
  LatentCacheView cache = p.cache;
  cache.format = kFormat;
  // FP8 rows are fetched one tile ahead with cp.async into the raw staging tile, so the memory latency of tile
  // k+1 hides behind the MMAs of tile k; BF16/F32 rows are loaded synchronously (their bf16 tile would not fit
  // twice next to the queries).
  constexpr bool kAsync = kFormat == LatentFormat::FP8;
  LatentCacheView stage = cache;
  stage.packed = sStage;

  const int split = blockIdx.x;
  const int h0 = blockIdx.y * kMlaTcHeads;
  const int64_t t = blockIdx.z;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int gid = lane / 4, tig = lane % 4;
  const int nh = min(kMlaTcHeads, int(p.H - h0));
  const int64_t seq = p.query_seq ? p.query_seq[t] : 0;
  const int64_t n_keys = p.seq_len ? int64_t(p.seq_len[seq]) : p.n_keys;
  const int64_t pos = p.positions[t];
  const int64_t visible = min(pos + 1, n_keys);
  const int64_t n_list = p.indices ? p.n_indices : visible;
  const int64_t begin = int64_t(split) * chunk, end = min(n_list, begin + chunk);
  const float scale_log2 = p.softmax_scale * 1.4426950408889634f;

  for (int e = tid; e < kMlaTcHeads * (kDqk / 4); e += kThreads) {
    const int h = e / (kDqk / 4), i = (e % (kDqk / 4)) * 4;
    float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
    if (h < nh)
      v = i < kC ? *reinterpret_cast<const float4*>(p.q_abs + t * p.qabs_t + (h0 + h) * p.qabs_h + i)
                 : *reinterpret_cast<const float4*>(p.q_pe + t * p.qpe_t + (h0 + h) * p.qpe_h + (i - kC));
    store_bf16x4(sQ + h * kQS + i, v);
  }
  if (tid < kMlaTcHeads) {
    sM[tid] = -INFINITY;
    sL[tid] = 0.0f;
  }

  const int mt = warp % 4;      // head tile: rows mt*16 + gid and + 8
  const int half = warp / 4;    // S: keys half*32..; P·V: columns half*256..
  const int r0 = mt * 16 + gid, r1 = r0 + 8;
  float o[32][4];
#pragma unroll
  for (int j = 0; j < 32; ++j) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.0f;

  // Physical rows of the list entries [k0, k0 + 64) (−1: past the list, −1 entry, or outside the causal range).
  auto resolve = [&](int64_t k0, int64_t* rows) {
    if (tid < kMlaTcTile) {
      const int64_t li = k0 + tid;
      int64_t row = -1;
      if (li < end) {
        const int64_t s = p.indices ? int64_t(p.indices[t * p.n_indices + li]) : li;
        if (s >= 0 && s <= pos && s < n_keys) row = p.blocks.row(seq, s);
      }
      rows[tid] = row;
    }
  };
  auto issue = [&](const int64_t* rows) {
    for (int e = tid; e < kMlaTcTile * (kFp8Row / 16); e += kThreads) {
      const int j = e / (kFp8Row / 16), c = (e % (kFp8Row / 16)) * 16;
      if (rows[j] >= 0) cp_async16(sStage + j * kFp8Row + c, cache.packed + rows[j] * kFp8Row + c);
    }
    cp_async_commit();
  };
  int cur = 0;
  if (kAsync && begin < end) {
    resolve(begin, sRowBuf);
    __syncthreads();
    issue(sRowBuf);
  }

  for (int64_t k0 = begin; k0 < end; k0 += kMlaTcTile) {
    const int64_t* sRow = sRowBuf + cur * kMlaTcTile;
    if constexpr (kAsync) {
      cp_async_wait_all();
      __syncthreads();  // staging holds this tile; the previous tile is consumed (first time: sQ, sM, sL written)
      for (int e = tid; e < kMlaTcTile * (kDqk / 4); e += kThreads) {
        const int j = e / (kDqk / 4), i = (e % (kDqk / 4)) * 4;
        store_bf16x4(sK + j * kQS + i, sRow[j] >= 0 ? load_latent4(stage, j, i) : make_float4(0.f, 0.f, 0.f, 0.f));
      }
      if (k0 + kMlaTcTile < end) resolve(k0 + kMlaTcTile, sRowBuf + (cur ^ 1) * kMlaTcTile);
      __syncthreads();  // staging free, sK and the next rows ready
      if (k0 + kMlaTcTile < end) issue(sRowBuf + (cur ^ 1) * kMlaTcTile);
    } else {
      __syncthreads();  // previous tile consumed (first time: sQ, sM, sL written)
      resolve(k0, sRowBuf);
      __syncthreads();
      for (int e = tid; e < kMlaTcTile * (kDqk / 4); e += kThreads) {
        const int j = e / (kDqk / 4), i = (e % (kDqk / 4)) * 4;
        const int64_t row = sRow[j];
        store_bf16x4(sK + j * kQS + i, row >= 0 ? load_latent4(cache, row, i) : make_float4(0.f, 0.f, 0.f, 0.f));
      }
      __syncthreads();
    }

    // 2. S = Q·Kᵀ for heads mt*16.., keys half*32.. (4 n-tiles of 8 keys).
    float s[4][4];
#pragma unroll
    for (int j = 0; j < 4; ++j) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.0f;
    {
      const __nv_bfloat16* a_base = sQ + (mt * 16 + (lane % 8) + ((lane / 8) % 2) * 8) * kQS + (lane / 16) * 8;
      const __nv_bfloat16* b_base = sK + (half * 32 + (lane % 8) + (lane / 16) * 8) * kQS + ((lane / 8) % 2) * 8;
#pragma unroll 4
      for (int kk = 0; kk < kDqk; kk += 16) {
        uint32_t a[4], b[4];
        ldsm_x4(a, a_base + kk);
#pragma unroll
        for (int jj = 0; jj < 2; ++jj) {
          ldsm_x4(b, b_base + jj * 16 * kQS + kk);
          mma_bf16(s[2 * jj], a, b[0], b[1]);
          mma_bf16(s[2 * jj + 1], a, b[2], b[3]);
        }
      }
    }
    // 3. softmax (log2 domain); masked keys -> −inf.
    float mx0 = -INFINITY, mx1 = -INFINITY;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int key = half * 32 + j * 8 + 2 * tig;
      const bool v0 = sRow[key] >= 0, v1 = sRow[key + 1] >= 0;
      s[j][0] = v0 ? s[j][0] * scale_log2 : -INFINITY;
      s[j][1] = v1 ? s[j][1] * scale_log2 : -INFINITY;
      s[j][2] = v0 ? s[j][2] * scale_log2 : -INFINITY;
      s[j][3] = v1 ? s[j][3] * scale_log2 : -INFINITY;
      mx0 = fmaxf(mx0, fmaxf(s[j][0], s[j][1]));
      mx1 = fmaxf(mx1, fmaxf(s[j][2], s[j][3]));
    }
    mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 1));
    mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 2));
    mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 1));
    mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 2));
    if (tig == 0) {
      sRedMax[half * kMlaTcHeads + r0] = mx0;
      sRedMax[half * kMlaTcHeads + r1] = mx1;
    }
    __syncthreads();
    const float m_old0 = sM[r0], m_old1 = sM[r1];
    const float m_new0 = fmaxf(m_old0, fmaxf(sRedMax[r0], sRedMax[kMlaTcHeads + r0]));
    const float m_new1 = fmaxf(m_old1, fmaxf(sRedMax[r1], sRedMax[kMlaTcHeads + r1]));
    const float alpha0 = m_new0 == -INFINITY ? 1.0f : exp2f(m_old0 - m_new0);
    const float alpha1 = m_new1 == -INFINITY ? 1.0f : exp2f(m_old1 - m_new1);
    float sum0 = 0.0f, sum1 = 0.0f;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int key = half * 32 + j * 8 + 2 * tig;
      const float p0 = m_new0 == -INFINITY ? 0.0f : exp2f(s[j][0] - m_new0);
      const float p1 = m_new0 == -INFINITY ? 0.0f : exp2f(s[j][1] - m_new0);
      const float p2 = m_new1 == -INFINITY ? 0.0f : exp2f(s[j][2] - m_new1);
      const float p3 = m_new1 == -INFINITY ? 0.0f : exp2f(s[j][3] - m_new1);
      const __nv_bfloat162 q01 = __floats2bfloat162_rn(p0, p1), q23 = __floats2bfloat162_rn(p2, p3);
      *reinterpret_cast<__nv_bfloat162*>(sP + r0 * kPS + key) = q01;
      *reinterpret_cast<__nv_bfloat162*>(sP + r1 * kPS + key) = q23;
      // The sum uses the rounded probabilities, the ones P·V multiplies, so the normalization matches them.
      sum0 += __low2float(q01) + __high2float(q01);
      sum1 += __low2float(q23) + __high2float(q23);
    }
    sum0 += __shfl_xor_sync(0xffffffffu, sum0, 1);
    sum0 += __shfl_xor_sync(0xffffffffu, sum0, 2);
    sum1 += __shfl_xor_sync(0xffffffffu, sum1, 1);
    sum1 += __shfl_xor_sync(0xffffffffu, sum1, 2);
    if (tig == 0) {
      sRedSum[half * kMlaTcHeads + r0] = sum0;
      sRedSum[half * kMlaTcHeads + r1] = sum1;
    }
    __syncthreads();  // sP, sRedSum complete; every thread has read sM
    if (half == 0 && tig == 0) {
      sL[r0] = sL[r0] * alpha0 + sRedSum[r0] + sRedSum[kMlaTcHeads + r0];
      sL[r1] = sL[r1] * alpha1 + sRedSum[r1] + sRedSum[kMlaTcHeads + r1];
      sM[r0] = m_new0;
      sM[r1] = m_new1;
    }

    // 4. O = O·alpha + P·V for heads mt*16.., columns half*256..
#pragma unroll
    for (int j = 0; j < 32; ++j) {
      o[j][0] *= alpha0;
      o[j][1] *= alpha0;
      o[j][2] *= alpha1;
      o[j][3] *= alpha1;
    }
    {
      const __nv_bfloat16* a_base = sP + (mt * 16 + (lane % 8) + ((lane / 8) % 2) * 8) * kPS + (lane / 16) * 8;
      const __nv_bfloat16* b_base = sK + ((lane % 8) + ((lane / 8) % 2) * 8) * kQS + half * 256 + (lane / 16) * 8;
#pragma unroll
      for (int kk = 0; kk < kMlaTcTile; kk += 16) {
        uint32_t a[4];
        ldsm_x4(a, a_base + kk);
#pragma unroll
        for (int jj = 0; jj < 16; ++jj) {
          uint32_t b[4];
          ldsm_x4_trans(b, b_base + kk * kQS + jj * 16);
          mma_bf16(o[2 * jj], a, b[0], b[1]);
          mma_bf16(o[2 * jj + 1], a, b[2], b[3]);
        }
      }
    }
    if constexpr (kAsync) cur ^= 1;
  }
  __syncthreads();

  float* out;
  float* lse = nullptr;
  if (splits == 1) {
    out = p.o_lat;
  } else {
    out = p.workspace + size_t(split) * size_t(p.T * p.H) * kC;
    lse = p.workspace + size_t(splits) * size_t(p.T * p.H) * kC + size_t(split) * size_t(p.T * p.H);
  }
  const float l0 = sL[r0], l1 = sL[r1];
  const float inv0 = l0 > 0.0f ? 1.0f / l0 : 0.0f, inv1 = l1 > 0.0f ? 1.0f / l1 : 0.0f;
  float* o0 = out + size_t(t * p.H + h0 + r0) * kC + half * 256 + 2 * tig;
  float* o1 = out + size_t(t * p.H + h0 + r1) * kC + half * 256 + 2 * tig;
#pragma unroll
  for (int j = 0; j < 32; ++j) {
    if (r0 < nh) *reinterpret_cast<float2*>(o0 + j * 8) = make_float2(o[j][0] * inv0, o[j][1] * inv0);
    if (r1 < nh) *reinterpret_cast<float2*>(o1 + j * 8) = make_float2(o[j][2] * inv1, o[j][3] * inv1);
  }
  if (lse && half == 0 && tig == 0) {
    // Natural-log LSE for the shared combine kernel: m is in log2 units.
    constexpr float kLn2 = 0.6931471805599453f;
    if (r0 < nh) lse[t * p.H + h0 + r0] = l0 > 0.0f ? (sM[r0] + log2f(l0)) * kLn2 : -INFINITY;
    if (r1 < nh) lse[t * p.H + h0 + r1] = l1 > 0.0f ? (sM[r1] + log2f(l1)) * kLn2 : -INFINITY;
  }
}

template <LatentFormat F>
cudaError_t launch_format(const MlaDecodeParams& p, int64_t chunk, int splits, cudaStream_t stream) {
  constexpr size_t smem = smem_bytes(F);
  cudaError_t err =
      cudaFuncSetAttribute(mla_decode_tc_kernel<F>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem));
  if (err != cudaSuccess) return err;
  const dim3 grid(unsigned(splits), unsigned((p.H + kMlaTcHeads - 1) / kMlaTcHeads), unsigned(p.T));
  mla_decode_tc_kernel<F><<<grid, kThreads, smem, stream>>>(p, chunk, splits);
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_mla_decode_tc_kernel(const MlaDecodeParams& p, int64_t chunk, int splits, cudaStream_t stream) {
  if (p.cache.C != kC || p.cache.R != kR || chunk % kMlaTcTile) return cudaErrorInvalidValue;
  switch (p.cache.format) {
    case LatentFormat::F32: return launch_format<LatentFormat::F32>(p, chunk, splits, stream);
    case LatentFormat::BF16: return launch_format<LatentFormat::BF16>(p, chunk, splits, stream);
    case LatentFormat::FP8: return launch_format<LatentFormat::FP8>(p, chunk, splits, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace dsinfer::gpu::attn
