// Kernels that store one step's new tokens into the paged latent and indexer-key caches (formats in
// kv_cache_formats.cuh). One block per token: a step writes at most a few thousand rows and each row is small,
// so the work is latency-bound and needs nothing cleverer.
#include "kv_cache_formats.cuh"

namespace dsinfer::gpu::attn {

namespace {

__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

__device__ __forceinline__ uint8_t to_e4m3(float x) {
  // Round to nearest even, saturating at ±448 like the reference's clamp-then-cast.
  return uint8_t(__nv_cvt_float_to_fp8(x, __NV_SATFINITE, __NV_E4M3));
}
__device__ __forceinline__ float e4m3_value(uint8_t b) {
  const __half_raw h = __nv_cvt_fp8_to_halfraw(__nv_fp8_storage_t(b), __NV_E4M3);
  return __half2float(__half(h));
}

// 128 threads (4 warps) per token. FP8 groups of 128 channels are handled one per warp: each lane owns 4 channels,
// the warp reduces amax, and the lane writes its 4 e4m3 bytes as one 32-bit store.
__global__ void __launch_bounds__(128) latent_cache_write_kernel(LatentWriteParams p) {
  const int64_t t = blockIdx.x;
  const int64_t row = p.slots ? p.slots[t] : p.row0 + t;
  const float* c = p.c_new + t * p.ld_c;
  const float* pe = p.kpe_new + t * p.ld_pe;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (p.format == LatentFormat::F32) {
    float* dst = p.latent + row * p.ld_latent;
    if (!p.simulate_fp8) {
      for (int64_t i = threadIdx.x; i < p.C; i += blockDim.x) dst[i] = c[i];
    } else {
      // Groups of 128 (the last may be partial), as fp8_quantize(..., dequantize=true) does on the CPU.
      for (int64_t g = warp; g * kFp8Group < p.C; g += blockDim.x / 32) {
        float v[4];
        float amax = 0.0f;
        for (int j = 0; j < 4; ++j) {
          const int64_t i = g * kFp8Group + lane * 4 + j;
          v[j] = i < p.C ? c[i] : 0.0f;
          amax = fmaxf(amax, fabsf(v[j]));
        }
        const float s = fp8_scale_of(warp_max(amax), p.ue8m0);
        for (int j = 0; j < 4; ++j) {
          const int64_t i = g * kFp8Group + lane * 4 + j;
          if (i < p.C) dst[i] = e4m3_value(to_e4m3(fminf(fmaxf(v[j] / s, -448.0f), 448.0f))) * s;
        }
      }
    }
    float* dpe = p.k_pe + row * p.ld_rope;
    for (int64_t i = threadIdx.x; i < p.R; i += blockDim.x) dpe[i] = pe[i];
    return;
  }
  uint8_t* base = p.packed + row * latent_row_bytes(p.format, p.C, p.R);
  if (p.format == LatentFormat::BF16) {
    auto* dst = reinterpret_cast<__nv_bfloat16*>(base);
    for (int64_t i = threadIdx.x; i < p.C + p.R; i += blockDim.x)
      dst[i] = __float2bfloat16_rn(i < p.C ? c[i] : pe[i - p.C]);
    return;
  }
  // FP8 (656-byte row at V3.2 dims): C e4m3 | ceil(C/128) f32 scales | R bf16. The last group may be partial
  // (C a multiple of 4, so a lane's 4 channels are all in or all out).
  float* scales = reinterpret_cast<float*>(base + p.C);
  for (int64_t g = warp; g < latent_scales(p.C); g += blockDim.x / 32) {
    const int64_t i = g * kFp8Group + lane * 4;
    const bool in = i < p.C;
    const float4 v = in ? *reinterpret_cast<const float4*>(c + i) : make_float4(0.f, 0.f, 0.f, 0.f);
    const float amax = warp_max(fmaxf(fmaxf(fabsf(v.x), fabsf(v.y)), fmaxf(fabsf(v.z), fabsf(v.w))));
    const float s = fp8_scale_of(amax, p.ue8m0);
    const uint32_t q = uint32_t(to_e4m3(v.x / s)) | uint32_t(to_e4m3(v.y / s)) << 8 |
                       uint32_t(to_e4m3(v.z / s)) << 16 | uint32_t(to_e4m3(v.w / s)) << 24;
    if (in) *reinterpret_cast<uint32_t*>(base + i) = q;
    if (lane == 0) scales[g] = s;
  }
  auto* rope = reinterpret_cast<__nv_bfloat16*>(base + p.C + latent_scales(p.C) * 4);
  for (int64_t i = threadIdx.x; i < p.R; i += blockDim.x) rope[i] = __float2bfloat16_rn(pe[i]);
}

// One warp per token: D <= 32·4·k channels, one scale over the whole key (the indexer quantizes with group = D).
__global__ void __launch_bounds__(128) index_key_cache_write_kernel(IndexKeyWriteParams p) {
  const int64_t t = int64_t(blockIdx.x) * 4 + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (t >= p.n) return;
  const int64_t row = p.slots ? p.slots[t] : p.row0 + t;
  const float* k = p.k_new + t * p.ld_new;
  const float given = p.scale_new ? p.scale_new[t * p.ld_scale_new] : 1.0f;
  if (p.format == IndexKeyFormat::F32) {
    float* dst = p.k + row * p.ld_k;
    for (int64_t i = lane; i < p.D; i += 32) dst[i] = k[i];
    if (p.scale && lane == 0) p.scale[row * p.ld_scale] = given;
    return;
  }
  const int64_t page = row / p.block_tokens, off = row % p.block_tokens;
  uint8_t* pg = p.packed + page * p.block_tokens * index_key_bytes(p.D);
  if (p.key_is_e4m3) {  // already e4m3 values: the conversion is exact
    for (int64_t i = lane; i < p.D; i += 32) pg[off * p.D + i] = to_e4m3(k[i]);
    if (lane == 0) reinterpret_cast<float*>(pg + p.block_tokens * p.D)[off] = given;
    return;
  }
  float amax = 0.0f;
  for (int64_t i = lane; i < p.D; i += 32) amax = fmaxf(amax, fabsf(k[i]));
  const float s = fp8_scale_of(warp_max(amax), p.ue8m0);
  for (int64_t i = lane; i < p.D; i += 32) pg[off * p.D + i] = to_e4m3(fminf(fmaxf(k[i] / s, -448.0f), 448.0f));
  if (lane == 0) reinterpret_cast<float*>(pg + p.block_tokens * p.D)[off] = given * s;
}

}  // namespace

cudaError_t launch_latent_cache_write(const LatentWriteParams& p, cudaStream_t stream) {
  if (p.n <= 0) return cudaSuccess;
  if (p.C % 4 || p.R % 4) return cudaErrorInvalidValue;
  if (p.format == LatentFormat::FP8 && (reinterpret_cast<uintptr_t>(p.c_new) % 16 || p.ld_c % 4))
    return cudaErrorMisalignedAddress;  // c is read as float4
  latent_cache_write_kernel<<<unsigned(p.n), 128, 0, stream>>>(p);
  return cudaGetLastError();
}

cudaError_t launch_index_key_cache_write(const IndexKeyWriteParams& p, cudaStream_t stream) {
  if (p.n <= 0) return cudaSuccess;
  if (p.format == IndexKeyFormat::FP8 && (p.D % 16 || p.block_tokens <= 0)) return cudaErrorInvalidValue;
  index_key_cache_write_kernel<<<unsigned((p.n + 3) / 4), 128, 0, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace dsinfer::gpu::attn
