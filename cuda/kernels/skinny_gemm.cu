// Skinny GEMM (see skinny_gemm.cuh). One block = 16 warps = 32 weight rows; each warp owns 2 rows and walks K in
// steps of 32 lanes x 16 bytes, so every weight load is a coalesced 16-byte load and each weight byte is read
// once per 16 activation rows. The activations of the current K chunk sit in shared memory in a lane-permuted
// layout (a lane's 16 consecutive k are 4 float4 at stride 128 floats) so the reads are bank-conflict free.
// FP8 follows DeepSeek's GEMM (spec §6): per 128-wide K group, the sum of e4m3 products is promoted with
// (activation scale x weight block scale); here each lane promotes its 16-element slice of a group, which is the
// same sum in a different order.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <algorithm>

#include "common/check.cuh"
#include "kernels/skinny_gemm.cuh"

namespace dsinfer::gpu {

namespace {

constexpr int kThreads = 512;
constexpr int kWarps = kThreads / 32;
constexpr int kRowsPerWarp = 2;
constexpr int kRowsPerBlock = kWarps * kRowsPerWarp;  // 32

template <WeightKind WK>
struct WTraits {
  static constexpr int kBytes = WK == WeightKind::F32 ? 4 : WK == WeightKind::FP8 ? 1 : 2;
  static constexpr int kVec = 16 / kBytes;      // elements per 16-byte load
  static constexpr int kStep = 32 * kVec;       // K covered by one warp-wide load
};

__device__ __forceinline__ int64_t imin64(int64_t a, int64_t b) { return a < b ? a : b; }

__device__ __forceinline__ float e4m3_to_float(uint8_t b) {
  const __half_raw h = __nv_cvt_fp8_to_halfraw(b, __NV_E4M3);
  return __half2float(__half(h));
}

__device__ __forceinline__ void decode_fp8_word(uint32_t w, float* f) {
  const __half2_raw lo = __nv_cvt_fp8x2_to_halfraw2(__nv_fp8x2_storage_t(w & 0xffffu), __NV_E4M3);
  const __half2_raw hi = __nv_cvt_fp8x2_to_halfraw2(__nv_fp8x2_storage_t(w >> 16), __NV_E4M3);
  const float2 a = __half22float2(__half2(lo)), b = __half22float2(__half2(hi));
  f[0] = a.x; f[1] = a.y; f[2] = b.x; f[3] = b.y;
}

// 16 bytes of weight -> kVec floats.
template <WeightKind WK>
__device__ __forceinline__ void decode16(const uint4& r, float* f) {
  const uint32_t w[4] = {r.x, r.y, r.z, r.w};
  if constexpr (WK == WeightKind::FP8) {
#pragma unroll
    for (int i = 0; i < 4; ++i) decode_fp8_word(w[i], f + 4 * i);
  } else if constexpr (WK == WeightKind::BF16) {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      f[2 * i] = __uint_as_float(w[i] << 16);
      f[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
    }
  } else if constexpr (WK == WeightKind::F16) {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      __half2_raw h;
      h.x = uint16_t(w[i] & 0xffffu);
      h.y = uint16_t(w[i] >> 16);
      const float2 v = __half22float2(__half2(h));
      f[2 * i] = v.x;
      f[2 * i + 1] = v.y;
    }
  } else {
#pragma unroll
    for (int i = 0; i < 4; ++i) f[i] = __uint_as_float(w[i]);
  }
}

template <WeightKind WK>
__device__ __forceinline__ float load_one(const void* w, int64_t i) {
  if constexpr (WK == WeightKind::FP8) return e4m3_to_float(static_cast<const uint8_t*>(w)[i]);
  else if constexpr (WK == WeightKind::BF16)
    return __uint_as_float(uint32_t(static_cast<const uint16_t*>(w)[i]) << 16);
  else if constexpr (WK == WeightKind::F16) {
    __half_raw h;
    h.x = static_cast<const uint16_t*>(w)[i];
    return __half2float(__half(h));
  } else return static_cast<const float*>(w)[i];
}

// Shared-memory chunk of K per activation row: 32 KiB of fp32 activations for any MT.
template <WeightKind WK, int MT>
constexpr int chunk_k() {
  constexpr int c = 8192 / MT;
  return c < WTraits<WK>::kStep ? WTraits<WK>::kStep : c;
}

// The problems of one launch. Problem i owns the blockIdx.z range [z_begin[i], z_begin[i + 1]) (one z per MT
// activation rows) and, when split, partial sums at partial[i] ([splits, M_i, N]).
struct SkinnyBatch {
  SkinnyGemmParams p[kSkinnyMaxBatch];
  float* partial[kSkinnyMaxBatch];
  int z_begin[kSkinnyMaxBatch + 1];
  int n = 0;
};

// Copies problem i out of the parameter block with constant offsets only (a dynamically indexed kernel parameter
// would be copied to local memory by every thread).
__device__ __forceinline__ void select_problem(const SkinnyBatch& b, int i, SkinnyGemmParams& p, float*& partial) {
  p = b.p[0];
  partial = b.partial[0];
#pragma unroll
  for (int j = 1; j < kSkinnyMaxBatch; ++j)
    if (j == i) {
      p = b.p[j];
      partial = b.partial[j];
    }
}

template <WeightKind WK, bool QX, int MT>
__global__ void __launch_bounds__(kThreads) skinny_gemm_kernel(const __grid_constant__ SkinnyBatch batch,
                                                               int64_t k_chunk) {
  using T = WTraits<WK>;
  constexpr int VEC = T::kVec, STEP = T::kStep, KC = chunk_k<WK, MT>(), GC = KC / 128;
  constexpr int U = MT <= 4 ? 2 : 1;
  __shared__ __align__(16) float xs[MT * KC];
  __shared__ float sx[QX ? MT * GC : 1];

  int pi = 0;
  while (pi + 1 < batch.n && int(blockIdx.z) >= batch.z_begin[pi + 1]) ++pi;
  SkinnyGemmParams p;
  float* partial;
  select_problem(batch, pi, p, partial);

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t n_base = int64_t(blockIdx.x) * kRowsPerBlock + warp * kRowsPerWarp;
  const int64_t m0 = int64_t(int(blockIdx.z) - batch.z_begin[pi]) * MT;
  const int mt = int(imin64(MT, p.M - m0));
  const int64_t kb = int64_t(blockIdx.y) * k_chunk, ke = imin64(p.K, kb + k_chunk);
  // 16-byte loads need every row to start 16-byte aligned; otherwise element loads (odd test shapes only).
  const bool vec_ok = (p.K % VEC) == 0 && (reinterpret_cast<uintptr_t>(p.w) % 16) == 0;

  float acc[kRowsPerWarp][MT];
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r)
#pragma unroll
    for (int m = 0; m < MT; ++m) acc[r][m] = 0.0f;

  for (int64_t c0 = kb; c0 < ke; c0 += KC) {
    const int cn = int(imin64(KC, ke - c0));
    // Stage the activations of this chunk (zero outside the valid rows/columns).
    for (int i = threadIdx.x; i < MT * KC; i += kThreads) {
      const int m = i / KC, kk = i % KC;
      float v = 0.0f;
      if (m < mt && kk < cn) {
        const int64_t row = m0 + m, k = c0 + kk;
        if constexpr (QX) v = e4m3_to_float(p.x_q8[row * p.ldx + k]);
        else v = p.x_f32[row * p.ldx + k];
      }
      const int within = kk % STEP, l = within / VEC, c = within % VEC;
      xs[m * KC + (kk - within) + (c / 4) * 128 + l * 4 + (c % 4)] = v;
    }
    if constexpr (QX) {
      for (int i = threadIdx.x; i < MT * GC; i += kThreads) {
        const int m = i / GC, gg = i % GC;
        const int64_t g = c0 / 128 + gg;
        sx[i] = (m < mt && gg * 128 < cn) ? p.x_scale[(m0 + m) * p.xs_m + g * p.xs_g] : 0.0f;
      }
    }
    __syncthreads();

    // U warp-steps per iteration: all their weight loads are issued before any is used, so each thread keeps
    // U x 2 x 16 bytes in flight (few activation rows: the kernel is purely load-latency bound).
    for (int s = 0; s < cn; s += U * STEP) {
      uint4 raw[U][kRowsPerWarp];
      float wsc[U][kRowsPerWarp];
#pragma unroll
      for (int u = 0; u < U; ++u) {
        const int64_t k = c0 + s + u * STEP + lane * VEC;
#pragma unroll
        for (int r = 0; r < kRowsPerWarp; ++r) {
          const int64_t n = n_base + r;
          const bool in = n < p.N && k < ke;
          raw[u][r] = make_uint4(0, 0, 0, 0);
          if (in && vec_ok)
            raw[u][r] = __ldg(reinterpret_cast<const uint4*>(static_cast<const uint8_t*>(p.w) + (n * p.K + k) * T::kBytes));
          if constexpr (WK == WeightKind::FP8) wsc[u][r] = in ? __ldg(p.w_scale + (n / 128) * p.w_scale_ld + k / 128) : 0.0f;
          else wsc[u][r] = 1.0f;
        }
      }
#pragma unroll
      for (int u = 0; u < U; ++u) {
        const int su = s + u * STEP;
        if (su >= cn) break;
        const int64_t k = c0 + su + lane * VEC;
        float wf[kRowsPerWarp][VEC];
#pragma unroll
        for (int r = 0; r < kRowsPerWarp; ++r) {
          if (vec_ok) {
            decode16<WK>(raw[u][r], wf[r]);
          } else {
            const int64_t n = n_base + r;
            const bool in = n < p.N && k < ke;
#pragma unroll
            for (int c = 0; c < VEC; ++c)
              wf[r][c] = (in && k + c < ke) ? load_one<WK>(p.w, n * p.K + k + c) : 0.0f;
          }
        }
        const int gg = (su + lane * VEC) / 128;
#pragma unroll
        for (int m = 0; m < MT; ++m) {
          float xv[VEC];
#pragma unroll
          for (int j = 0; j < VEC / 4; ++j) {
            const float4 v = *reinterpret_cast<const float4*>(&xs[m * KC + su + j * 128 + lane * 4]);
            xv[4 * j] = v.x; xv[4 * j + 1] = v.y; xv[4 * j + 2] = v.z; xv[4 * j + 3] = v.w;
          }
          const float xsc = QX ? sx[m * GC + gg] : 1.0f;
#pragma unroll
          for (int r = 0; r < kRowsPerWarp; ++r) {
            float d = 0.0f;
#pragma unroll
            for (int c = 0; c < VEC; ++c) d = fmaf(xv[c], wf[r][c], d);
            acc[r][m] = fmaf(d, xsc * wsc[u][r], acc[r][m]);
          }
        }
      }
    }
    __syncthreads();
  }

#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r)
#pragma unroll
    for (int m = 0; m < MT; ++m) {
      float v = acc[r][m];
#pragma unroll
      for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
      const int64_t n = n_base + r;
      if (lane == 0 && n < p.N && m < mt) {
        if (partial) partial[(int64_t(blockIdx.y) * p.M + m0 + m) * p.N + n] = v;
        else p.out[(m0 + m) * p.ldo + n] = v;
      }
    }
}

// out[m, n] = Σ_split partial[split, m, n], in split order (deterministic); blockIdx.y = problem.
__global__ void splitk_reduce_kernel(const __grid_constant__ SkinnyBatch batch, int splits) {
  SkinnyGemmParams p;
  float* partial;
  select_problem(batch, int(blockIdx.y), p, partial);
  const int64_t M = p.M, N = p.N;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < M * N; i += int64_t(gridDim.x) * blockDim.x) {
    float s = 0.0f;
    for (int y = 0; y < splits; ++y) s += partial[int64_t(y) * M * N + i];
    p.out[(i / N) * p.ldo + i % N] = s;
  }
}

// --- Tensor-core variant for FP8 weights x e4m3 activations, M ≤ 64 ---
// Swap-AB: the weight rows are the mma's M side (16 per warp, 128 per block = one weight scale row block) and the
// activation rows its N side (NT tiles of 8). Within a 64-wide K step each lane loads 16 contiguous bytes of its two
// weight rows and of its token; the mma's k slots are assigned to those bytes with the same lane mapping for A and
// B (the sum over k does not care about order), so every load is a 16-byte load straight from global memory.
// Per 128-wide K group the fp32 mma sum is promoted with (activation scale x weight block scale), as the
// reference GEMM does.
__device__ __forceinline__ void mma_e4m3_16832(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                               uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

constexpr int kMmaThreads = 256;  // 8 warps x 16 weight rows = 128 rows per block

template <int NT>
__global__ void __launch_bounds__(kMmaThreads, NT >= 4 ? 1 : 2) skinny_fp8_mma_kernel(const __grid_constant__ SkinnyBatch batch,
                                                                        int64_t k_chunk) {
  constexpr int NA = NT < 4 ? NT : 4;
  SkinnyGemmParams p;
  float* partial;
  select_problem(batch, int(blockIdx.z), p, partial);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int64_t n0 = int64_t(blockIdx.x) * 128 + warp * 16;
  if (n0 >= p.N) return;  // no block-level synchronization in this kernel
  const int64_t kb = int64_t(blockIdx.y) * k_chunk, ke = imin64(p.K, kb + k_chunk);
  const uint8_t* w0 = static_cast<const uint8_t*>(p.w) + (n0 + g) * p.K;
  const uint8_t* w1 = w0 + 8 * p.K;
  const float* ws_row = p.w_scale + (n0 / 128) * p.w_scale_ld;

  float tot[NT][4];
#pragma unroll
  for (int j = 0; j < NT; ++j) tot[j][0] = tot[j][1] = tot[j][2] = tot[j][3] = 0.0f;

  for (int64_t k0 = kb; k0 < ke; k0 += 128) {
    // All weight bytes of this 128-wide group first (4 x 16 bytes per lane in flight), then the activations.
    uint4 wa[2], wbv[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int64_t kk = k0 + h * 64 + t * 16;
      wa[h] = __ldg(reinterpret_cast<const uint4*>(w0 + kk));
      wbv[h] = __ldg(reinterpret_cast<const uint4*>(w1 + kk));
    }
    const int64_t grp = k0 / 128;
    const float wsc = __ldg(ws_row + grp);
    // Token tiles in passes of up to 4 (the group accumulators of 8 tiles would not fit next to the totals).
#pragma unroll
    for (int jb = 0; jb < NT; jb += NA) {
      float acc[NA][4];
#pragma unroll
      for (int jj = 0; jj < NA; ++jj) acc[jj][0] = acc[jj][1] = acc[jj][2] = acc[jj][3] = 0.0f;
#pragma unroll
      for (int jj = 0; jj < NA; ++jj) {
        const int64_t token = (jb + jj) * 8 + g;
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          uint4 xv = make_uint4(0, 0, 0, 0);
          if (token < p.M) xv = __ldg(reinterpret_cast<const uint4*>(p.x_q8 + token * p.ldx + k0 + h * 64 + t * 16));
          mma_e4m3_16832(acc[jj], wa[h].x, wbv[h].x, wa[h].y, wbv[h].y, xv.x, xv.y);
          mma_e4m3_16832(acc[jj], wa[h].z, wbv[h].z, wa[h].w, wbv[h].w, xv.z, xv.w);
        }
      }
#pragma unroll
      for (int jj = 0; jj < NA; ++jj) {
        const int j = jb + jj;
        const int64_t m0 = j * 8 + t * 2, m1 = m0 + 1;
        const float s0 = m0 < p.M ? p.x_scale[m0 * p.xs_m + grp * p.xs_g] * wsc : 0.0f;
        const float s1 = m1 < p.M ? p.x_scale[m1 * p.xs_m + grp * p.xs_g] * wsc : 0.0f;
        tot[j][0] = fmaf(acc[jj][0], s0, tot[j][0]);
        tot[j][1] = fmaf(acc[jj][1], s1, tot[j][1]);
        tot[j][2] = fmaf(acc[jj][2], s0, tot[j][2]);
        tot[j][3] = fmaf(acc[jj][3], s1, tot[j][3]);
      }
    }
  }

#pragma unroll
  for (int j = 0; j < NT; ++j)
#pragma unroll
    for (int c = 0; c < 4; ++c) {
      const int64_t m = j * 8 + t * 2 + (c & 1), n = n0 + g + (c >> 1) * 8;
      if (m >= p.M) continue;
      if (partial) partial[(int64_t(blockIdx.y) * p.M + m) * p.N + n] = tot[j][c];
      else p.out[m * p.ldo + n] = tot[j][c];
    }
}

struct Plan {
  int mt = 1;
  int64_t k_chunk = 0;
  int splits = 1;
  int64_t nb = 0, chunks = 0;  // N tiles, total MT-row chunks over the problems
};

int pick_mt(bool qx, int64_t max_m) {
  if (max_m <= 1) return 1;
  if (qx) return max_m <= 2 ? 2 : max_m <= 4 ? 4 : max_m <= 8 ? 8 : 16;
  return 8;
}

int step_of(WeightKind k) {
  switch (k) {
    case WeightKind::FP8: return WTraits<WeightKind::FP8>::kStep;
    case WeightKind::F32: return WTraits<WeightKind::F32>::kStep;
    default: return WTraits<WeightKind::BF16>::kStep;
  }
}

Plan make_plan(const SkinnyGemmParams* p, int n, int num_sms) {
  Plan pl;
  int64_t max_m = 0;
  for (int i = 0; i < n; ++i) max_m = std::max(max_m, p[i].M);
  pl.mt = pick_mt(p[0].x_q8 != nullptr, max_m);
  for (int i = 0; i < n; ++i) pl.chunks += (p[i].M + pl.mt - 1) / pl.mt;
  pl.nb = (p[0].N + kRowsPerBlock - 1) / kRowsPerBlock;
  const int64_t step = step_of(p[0].w_kind);
  const int64_t ksteps = (p[0].K + step - 1) / step;
  // Two blocks per SM keep enough 16-byte loads in flight to stream the weight; split K when N x M is short.
  const int64_t blocks = std::max<int64_t>(pl.nb * pl.chunks, 1);
  const int64_t want = (2 * int64_t(std::max(num_sms, 1)) + blocks - 1) / blocks;
  const int64_t splits = std::clamp<int64_t>(want, 1, ksteps);
  pl.k_chunk = ((ksteps + splits - 1) / splits) * step;
  pl.splits = int((p[0].K + pl.k_chunk - 1) / pl.k_chunk);
  return pl;
}

// The tensor-core kernel: one block per 128 weight rows per K split per problem; NT from the largest M.
Plan make_mma_plan(const SkinnyGemmParams* p, int n, int num_sms) {
  Plan pl;
  int64_t max_m = 0;
  for (int i = 0; i < n; ++i) max_m = std::max(max_m, p[i].M);
  pl.mt = max_m <= 8 ? 1 : max_m <= 16 ? 2 : max_m <= 32 ? 4 : 8;  // n-tiles of 8 tokens
  pl.nb = (p[0].N + 127) / 128;
  pl.chunks = n;
  const int64_t groups = p[0].K / 128;
  const int64_t blocks = std::max<int64_t>(pl.nb * n, 1);
  const int64_t want = (3 * int64_t(std::max(num_sms, 1)) + blocks - 1) / blocks;
  const int64_t splits = std::clamp<int64_t>(want, 1, groups);
  pl.k_chunk = ((groups + splits - 1) / splits) * 128;
  pl.splits = int((p[0].K + pl.k_chunk - 1) / pl.k_chunk);
  return pl;
}

size_t partial_bytes(const SkinnyGemmParams& p, int splits) {
  return (size_t(splits) * size_t(p.M) * size_t(p.N) * sizeof(float) + 255) / 256 * 256;
}

template <WeightKind WK, bool QX, int MT>
void launch(const SkinnyBatch& b, const Plan& pl, cudaStream_t s) {
  const dim3 grid(unsigned(pl.nb), unsigned(pl.splits), unsigned(pl.chunks));
  skinny_gemm_kernel<WK, QX, MT><<<grid, kThreads, 0, s>>>(b, pl.k_chunk);
}

}  // namespace

bool skinny_fp8_mma_eligible(const SkinnyGemmParams* p, int n) {
  for (int i = 0; i < n; ++i) {
    const SkinnyGemmParams& q = p[i];
    if (q.w_kind != WeightKind::FP8 || !q.x_q8 || q.M > kSkinnyMmaMaxM || q.K % 128 != 0 || q.N % 16 != 0 ||
        q.ldx % 16 != 0 || reinterpret_cast<uintptr_t>(q.w) % 16 != 0 || reinterpret_cast<uintptr_t>(q.x_q8) % 16 != 0)
      return false;
  }
  return n > 0;
}

size_t skinny_gemm_batched_workspace(const SkinnyGemmParams* p, int n, int num_sms, bool use_mma) {
  if (n <= 0) return 0;
  const Plan pl = use_mma && skinny_fp8_mma_eligible(p, n) ? make_mma_plan(p, n, num_sms) : make_plan(p, n, num_sms);
  if (pl.splits == 1) return 0;
  size_t total = 0;
  for (int i = 0; i < n; ++i) total += partial_bytes(p[i], pl.splits);
  return total;
}

void skinny_gemm_batched(const SkinnyGemmParams* p, int n, void* workspace, int num_sms, cudaStream_t s,
                         bool use_mma) {
  DSINFER_CUDA_REQUIRE(n >= 1 && n <= kSkinnyMaxBatch, "skinny_gemm: 1..16 problems per launch");
  const bool qx = p[0].x_q8 != nullptr;
  for (int i = 0; i < n; ++i) {
    DSINFER_CUDA_REQUIRE(p[i].N == p[0].N && p[i].K == p[0].K && p[i].w_kind == p[0].w_kind &&
                             (p[i].x_q8 != nullptr) == qx,
                         "skinny_gemm: batched problems must share N, K and dtypes");
    DSINFER_CUDA_REQUIRE(!qx || p[i].w_kind == WeightKind::FP8, "skinny_gemm: e4m3 activations need FP8 weights");
    DSINFER_CUDA_REQUIRE(p[i].w_kind != WeightKind::FP8 || p[i].w_scale, "skinny_gemm: FP8 weight without scales");
  }
  const bool mma = use_mma && skinny_fp8_mma_eligible(p, n);
  const Plan pl = mma ? make_mma_plan(p, n, num_sms) : make_plan(p, n, num_sms);
  if (pl.chunks == 0 || p[0].N == 0) return;
  SkinnyBatch b;
  b.n = n;
  int z = 0;
  auto* ws = static_cast<char*>(workspace);
  for (int i = 0; i < n; ++i) {
    b.p[i] = p[i];
    b.z_begin[i] = z;
    z += int((p[i].M + pl.mt - 1) / pl.mt);
    b.partial[i] = nullptr;
    if (pl.splits > 1) {
      DSINFER_CUDA_REQUIRE(ws != nullptr, "skinny_gemm: split-K needs a workspace");
      b.partial[i] = reinterpret_cast<float*>(ws);
      ws += partial_bytes(p[i], pl.splits);
    }
  }
  for (int i = n; i <= kSkinnyMaxBatch; ++i) b.z_begin[i] = z;
  for (int i = n; i < kSkinnyMaxBatch; ++i) { b.p[i] = p[0]; b.partial[i] = b.partial[0]; }
  if (mma) {
    const dim3 grid(unsigned(pl.nb), unsigned(pl.splits), unsigned(n));
    switch (pl.mt) {
      case 1: skinny_fp8_mma_kernel<1><<<grid, kMmaThreads, 0, s>>>(b, pl.k_chunk); break;
      case 2: skinny_fp8_mma_kernel<2><<<grid, kMmaThreads, 0, s>>>(b, pl.k_chunk); break;
      case 4: skinny_fp8_mma_kernel<4><<<grid, kMmaThreads, 0, s>>>(b, pl.k_chunk); break;
      default: skinny_fp8_mma_kernel<8><<<grid, kMmaThreads, 0, s>>>(b, pl.k_chunk); break;
    }
  } else switch (p[0].w_kind) {
    case WeightKind::FP8:
      if (qx) {
        switch (pl.mt) {
          case 1: launch<WeightKind::FP8, true, 1>(b, pl, s); break;
          case 2: launch<WeightKind::FP8, true, 2>(b, pl, s); break;
          case 4: launch<WeightKind::FP8, true, 4>(b, pl, s); break;
          case 8: launch<WeightKind::FP8, true, 8>(b, pl, s); break;
          default: launch<WeightKind::FP8, true, 16>(b, pl, s); break;
        }
      } else if (pl.mt == 1) launch<WeightKind::FP8, false, 1>(b, pl, s);
      else launch<WeightKind::FP8, false, 8>(b, pl, s);
      break;
    case WeightKind::BF16:
      if (pl.mt == 1) launch<WeightKind::BF16, false, 1>(b, pl, s);
      else launch<WeightKind::BF16, false, 8>(b, pl, s);
      break;
    case WeightKind::F16:
      if (pl.mt == 1) launch<WeightKind::F16, false, 1>(b, pl, s);
      else launch<WeightKind::F16, false, 8>(b, pl, s);
      break;
    case WeightKind::F32:
      if (pl.mt == 1) launch<WeightKind::F32, false, 1>(b, pl, s);
      else launch<WeightKind::F32, false, 8>(b, pl, s);
      break;
  }
  DSINFER_CUDA_CHECK_LAUNCH();
  if (pl.splits > 1) {
    int64_t max_mn = 0;
    for (int i = 0; i < n; ++i) max_mn = std::max(max_mn, p[i].M * p[i].N);
    const unsigned bx = unsigned(std::min<int64_t>((max_mn + 255) / 256, 4096));
    splitk_reduce_kernel<<<dim3(bx, unsigned(n)), 256, 0, s>>>(b, pl.splits);
    DSINFER_CUDA_CHECK_LAUNCH();
  }
}

size_t skinny_gemm_workspace(const SkinnyGemmParams& p, int num_sms) {
  return skinny_gemm_batched_workspace(&p, 1, num_sms);
}

void skinny_gemm(const SkinnyGemmParams& p, void* workspace, int num_sms, cudaStream_t s) {
  if (p.M == 0 || p.N == 0) return;
  skinny_gemm_batched(&p, 1, workspace, num_sms, s);
}

}  // namespace dsinfer::gpu
