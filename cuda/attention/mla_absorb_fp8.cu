// Decode-time absorb products over the stored e4m3 wkv_b (see mla_absorb.cuh). Both kernels stream the weight
// once per group of 8 queries with coalesced loads, dequantize with the 128x128 block scale on the fly and keep
// fp32 accumulators; the queries' operands are tiny and come from shared memory / L1.
#include <cuda_fp8.h>

#include "mla_absorb.cuh"

namespace dsinfer::gpu::attn {

namespace {

constexpr int kQ = 8;  // queries per block

__device__ __forceinline__ float4 e4m3x4(uint32_t v) {
  const __half2_raw lo = __nv_cvt_fp8x2_to_halfraw2(__nv_fp8x2_storage_t(v & 0xffffu), __NV_E4M3);
  const __half2_raw hi = __nv_cvt_fp8x2_to_halfraw2(__nv_fp8x2_storage_t(v >> 16), __NV_E4M3);
  const float2 a = __half22float2(__half2(lo)), b = __half22float2(__half2(hi));
  return make_float4(a.x, a.y, b.x, b.y);
}

// Block = (head, group of 8 queries), 128 threads; thread i owns latent columns 4i..4i+3 and walks the dn rows of
// W_UK[h]: each row is one coalesced 512-byte read across the block.
__global__ void __launch_bounds__(128) absorb_q_fp8_kernel(Fp8AbsorbWeight w, const float* __restrict__ q,
                                                           int64_t ld_q, int64_t T, int64_t H, int64_t dn,
                                                           int64_t dr, int64_t dv, int64_t C,
                                                           float* __restrict__ q_abs) {
  __shared__ float sq[kQ][128];
  const int64_t h = blockIdx.x, t0 = int64_t(blockIdx.y) * kQ;
  const int nq = int(min(int64_t(kQ), T - t0));
  for (int e = threadIdx.x; e < kQ * 128; e += blockDim.x) {
    const int i = e / 128, d = e % 128;
    sq[i][d] = (i < nq && d < dn) ? q[(t0 + i) * ld_q + h * (dn + dr) + d] : 0.0f;
  }
  __syncthreads();
  const int64_t c0 = int64_t(threadIdx.x) * 4;
  if (c0 >= C) return;
  float acc[kQ][4] = {};
  const int64_t row0 = h * (dn + dv);
  for (int64_t d = 0; d < dn; ++d) {
    const int64_t r = row0 + d;
    const float s = w.scale[(r / 128) * w.scale_ld + c0 / 128];
    const float4 f = e4m3x4(*reinterpret_cast<const uint32_t*>(w.w8 + r * C + c0));
    const float wv[4] = {f.x * s, f.y * s, f.z * s, f.w * s};
#pragma unroll
    for (int i = 0; i < kQ; ++i)
#pragma unroll
      for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(sq[i][d], wv[j], acc[i][j]);
  }
#pragma unroll
  for (int i = 0; i < kQ; ++i)
    if (i < nq)
      *reinterpret_cast<float4*>(q_abs + ((t0 + i) * H + h) * C + c0) =
          make_float4(acc[i][0], acc[i][1], acc[i][2], acc[i][3]);
}

// Block = 8 rows (h, e) of W_UV x group of 8 queries, one warp per row: lane l reads 16 weight bytes at columns
// 16l + 512k, so a row of 512 is one coalesced 512-byte read; the warp reduces the 8 dot products with shuffles.
__global__ void __launch_bounds__(256) absorb_out_fp8_kernel(Fp8AbsorbWeight w, const float* __restrict__ o_lat,
                                                             int64_t T, int64_t H, int64_t dn, int64_t dv,
                                                             int64_t C, float* __restrict__ out, int64_t ld_out) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t idx = int64_t(blockIdx.x) * 8 + warp;  // h*dv + e
  if (idx >= H * dv) return;
  const int64_t h = idx / dv, e = idx % dv, t0 = int64_t(blockIdx.y) * kQ;
  const int nq = int(min(int64_t(kQ), T - t0));
  const int64_t r = h * (dn + dv) + dn + e;
  float acc[kQ] = {};
  for (int64_t c0 = int64_t(lane) * 16; c0 < C; c0 += 512) {
    const float s = w.scale[(r / 128) * w.scale_ld + c0 / 128];
    const uint4 raw = *reinterpret_cast<const uint4*>(w.w8 + r * C + c0);
    const uint32_t words[4] = {raw.x, raw.y, raw.z, raw.w};
    float wv[16];
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const float4 f = e4m3x4(words[k]);
      wv[4 * k] = f.x * s, wv[4 * k + 1] = f.y * s, wv[4 * k + 2] = f.z * s, wv[4 * k + 3] = f.w * s;
    }
#pragma unroll
    for (int i = 0; i < kQ; ++i) {
      if (i >= nq) break;
      const float* o = o_lat + ((t0 + i) * H + h) * C + c0;
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        const float4 v = *reinterpret_cast<const float4*>(o + 4 * k);
        acc[i] = fmaf(v.x, wv[4 * k], acc[i]);
        acc[i] = fmaf(v.y, wv[4 * k + 1], acc[i]);
        acc[i] = fmaf(v.z, wv[4 * k + 2], acc[i]);
        acc[i] = fmaf(v.w, wv[4 * k + 3], acc[i]);
      }
    }
  }
#pragma unroll
  for (int i = 0; i < kQ; ++i)
    for (int o = 16; o > 0; o >>= 1) acc[i] += __shfl_xor_sync(0xffffffffu, acc[i], o);
  if (lane == 0) {
#pragma unroll
    for (int i = 0; i < kQ; ++i)
      if (i < nq) out[(t0 + i) * ld_out + h * dv + e] = acc[i];
  }
}

}  // namespace

cudaError_t launch_absorb_q_fp8(const Fp8AbsorbWeight& w, const float* q, int64_t ld_q, int64_t T, int64_t H,
                                int64_t dn, int64_t dr, int64_t dv, int64_t C, float* q_abs, cudaStream_t stream) {
  if (T <= 0) return cudaSuccess;
  if (C % 4 || C > 512 || dn > 128 || H > 65535 || (T + kQ - 1) / kQ > 65535) return cudaErrorInvalidValue;
  absorb_q_fp8_kernel<<<dim3(unsigned(H), unsigned((T + kQ - 1) / kQ)), 128, 0, stream>>>(w, q, ld_q, T, H, dn, dr,
                                                                                          dv, C, q_abs);
  return cudaGetLastError();
}

cudaError_t launch_absorb_out_fp8(const Fp8AbsorbWeight& w, const float* o_lat, int64_t T, int64_t H, int64_t dn,
                                  int64_t dv, int64_t C, float* out, int64_t ld_out, cudaStream_t stream) {
  if (T <= 0) return cudaSuccess;
  if (C % 16 || (T + kQ - 1) / kQ > 65535) return cudaErrorInvalidValue;
  absorb_out_fp8_kernel<<<dim3(unsigned((H * dv + 7) / 8), unsigned((T + kQ - 1) / kQ)), 256, 0, stream>>>(
      w, o_lat, T, H, dn, dv, C, out, ld_out);
  return cudaGetLastError();
}

}  // namespace dsinfer::gpu::attn
