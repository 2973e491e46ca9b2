// Paged GPU caches for MLA and the DSA indexer (spec §3.5, §4.7): the row formats, how a logical cache position
// becomes a physical row (block tables, as lib/kv/ does it on the host), and the kernels that write one token's
// entries (quantize + store).
//
// Formats of one token's MLA entry ("latent row"):
//   F32   two tensors, latent [rows, ld_latent] f32 and k_pe [rows, ld_rope] f32: what the backend interface
//         (lib/backend/backend.hpp MlaArgs) and lib/kv/ hold today.
//   BF16  one packed row of (C + R) bf16: c then rotated k_pe (1152 bytes at V3.2 dims).
//   FP8   DeepSeek's deployment row (FlashMLA "FP8 with scale", 656 bytes at V3.2 dims): C e4m3 values of c, then
//         ceil(C/128) f32 scales (one per 128 channels, the last covering a partial group when C is not a multiple
//         of 128, as lib/backend/kv_format.hpp defines it; power of two: 2^ceil(log2(amax/448)), amax floored at
//         1e-4, unless ue8m0 is off), then R bf16 of the rotated k_pe (not quantized). c[i] = e4m3[i] · scale[i/128].
// These are byte for byte the CPU backend's packed rows (lib/backend/kv_format.hpp), so a cache written by one
// backend means the same on the other.
// Indexer key ("132-byte") entry: D e4m3 values (post-RoPE, post-Hadamard k) and one f32 scale. In the paged
// layout DeepGEMM/vLLM use, each block of `block_tokens` tokens stores its block_tokens·D fp8 bytes first and then
// its block_tokens f32 scales; the F32 variant (the backend interface) keeps k [rows, ld] f32 and scale [rows] f32.
//
// Everything here is plain CUDA with raw pointers; launchers return the launch's cudaError_t and never throw.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace dsinfer::gpu::attn {

enum class LatentFormat : int { F32 = 0, BF16 = 1, FP8 = 2 };
enum class IndexKeyFormat : int { F32 = 0, FP8 = 1 };

constexpr int kFp8Group = 128;  // channels per FP8 scale in the latent row and in the indexer key

// Bytes of one packed latent row (BF16/FP8) for latent width C and rope width R. V3.2: bf16 1152, fp8 656.
// FP8 scales per latent row: ceil(C / 128).
__host__ __device__ constexpr int64_t latent_scales(int64_t C) { return (C + kFp8Group - 1) / kFp8Group; }
__host__ __device__ constexpr int64_t latent_row_bytes(LatentFormat f, int64_t C, int64_t R) {
  return f == LatentFormat::BF16 ? (C + R) * 2 : f == LatentFormat::FP8 ? C + latent_scales(C) * 4 + R * 2 : 0;
}
// Bytes per token of the FP8 indexer key (V3.2: 132).
__host__ __device__ constexpr int64_t index_key_bytes(int64_t D) { return D + 4; }

// Logical position -> physical row (null block table: contiguous, row = pos).
struct BlockTable {
  const int32_t* table = nullptr;  // [n_seqs, stride] i32 device, may be null
  int64_t stride = 0;              // entries per sequence
  int64_t block_tokens = 0;
  __device__ __forceinline__ int64_t row(int64_t seq, int64_t pos) const {
    return table ? int64_t(table[seq * stride + pos / block_tokens]) * block_tokens + pos % block_tokens : pos;
  }
};

// A latent cache, read side. Packed formats keep `rows` · latent_row_bytes bytes at `packed` (16-byte aligned).
struct LatentCacheView {
  LatentFormat format = LatentFormat::F32;
  int64_t C = 0, R = 0;             // latent width, rope width (multiples of 4)
  const float* latent = nullptr;    // F32: [rows, ld_latent] f32
  int64_t ld_latent = 0;
  const float* k_pe = nullptr;      // F32: [rows, ld_rope] f32
  int64_t ld_rope = 0;
  const uint8_t* packed = nullptr;  // BF16/FP8: [rows, latent_row_bytes] bytes
};

// An indexer key cache, read side.
struct IndexKeyCacheView {
  IndexKeyFormat format = IndexKeyFormat::F32;
  int64_t D = 0;                    // head dim (multiple of 4; FP8: multiple of 16)
  const float* k = nullptr;         // F32: [rows, ld_k] f32
  int64_t ld_k = 0;
  const float* scale = nullptr;     // F32: [rows, ld_scale] f32, may be null (= 1)
  int64_t ld_scale = 1;
  const uint8_t* packed = nullptr;  // FP8: blocks of block_tokens · (D e4m3 bytes) then block_tokens · f32
  int64_t block_tokens = 0;         // FP8 layout page size (contiguous cache: any value dividing nothing special;
                                    // rows are still grouped in pages of this size)
};

// e4m3 -> f32 for 4 packed bytes (exact).
__device__ __forceinline__ float4 e4m3x4_to_float4(uint32_t v) {
  const __half2_raw lo = __nv_cvt_fp8x2_to_halfraw2(__nv_fp8x2_storage_t(v & 0xffffu), __NV_E4M3);
  const __half2_raw hi = __nv_cvt_fp8x2_to_halfraw2(__nv_fp8x2_storage_t(v >> 16), __NV_E4M3);
  const float2 a = __half22float2(__half2(lo)), b = __half22float2(__half2(hi));
  return make_float4(a.x, a.y, b.x, b.y);
}

// Four consecutive elements [i, i+4) of the 576-style row (latent then rope) of physical row `row`, as f32.
// i is a multiple of 4; C and R are multiples of 4, so a group never straddles latent and rope.
__device__ __forceinline__ float4 load_latent4(const LatentCacheView& v, int64_t row, int i) {
  if (v.format == LatentFormat::F32) {
    if (i < v.C) return *reinterpret_cast<const float4*>(v.latent + row * v.ld_latent + i);
    return *reinterpret_cast<const float4*>(v.k_pe + row * v.ld_rope + (i - v.C));
  }
  const uint8_t* base = v.packed + row * latent_row_bytes(v.format, v.C, v.R);
  if (v.format == LatentFormat::BF16) {
    const uint2 u = *reinterpret_cast<const uint2*>(base + int64_t(i) * 2);
    const float2 a = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&u.x));
    const float2 b = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&u.y));
    return make_float4(a.x, a.y, b.x, b.y);
  }
  if (i < v.C) {
    const float s = reinterpret_cast<const float*>(base + v.C)[i / kFp8Group];
    const float4 f = e4m3x4_to_float4(*reinterpret_cast<const uint32_t*>(base + i));
    return make_float4(f.x * s, f.y * s, f.z * s, f.w * s);
  }
  // Two 4-byte loads: with an odd number of 128-groups (C = 128, 384, ...) a row is 4 bytes past an 8-byte
  // boundary, so the rope part is only 4-byte aligned (V3.2's 656-byte rows happen to be 8-aligned).
  const uint8_t* rope = base + v.C + latent_scales(v.C) * 4;
  const uint32_t* u = reinterpret_cast<const uint32_t*>(rope + int64_t(i - v.C) * 2);
  const uint32_t u0 = u[0], u1 = u[1];
  const float2 a = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&u0));
  const float2 b = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&u1));
  return make_float4(a.x, a.y, b.x, b.y);
}

// Elements [i, i+4) of the indexer key at physical row `row` as f32 (unscaled e4m3 values for FP8).
__device__ __forceinline__ float4 load_index_key4(const IndexKeyCacheView& v, int64_t row, int i) {
  if (v.format == IndexKeyFormat::F32) return *reinterpret_cast<const float4*>(v.k + row * v.ld_k + i);
  const int64_t page = row / v.block_tokens, off = row % v.block_tokens;
  const uint8_t* p = v.packed + page * v.block_tokens * index_key_bytes(v.D) + off * v.D + i;
  return e4m3x4_to_float4(*reinterpret_cast<const uint32_t*>(p));
}
__device__ __forceinline__ float load_index_scale(const IndexKeyCacheView& v, int64_t row) {
  if (v.format == IndexKeyFormat::F32) return v.scale ? v.scale[row * v.ld_scale] : 1.0f;
  const int64_t page = row / v.block_tokens, off = row % v.block_tokens;
  return reinterpret_cast<const float*>(v.packed + page * v.block_tokens * index_key_bytes(v.D) +
                                        v.block_tokens * v.D)[off];
}

// The activation-quantization scale of spec §4.3 (amax floored at 1e-4, /448, rounded up to a power of two when
// ue8m0), bit-for-bit what the CPU backend's fp8_group_scale computes with frexp.
__host__ __device__ __forceinline__ float fp8_scale_of(float amax, bool ue8m0) {
  amax = amax > 1e-4f ? amax : 1e-4f;
  const float s = amax / 448.0f;
  if (!ue8m0) return s;
#ifdef __CUDA_ARCH__
  const uint32_t b = __float_as_uint(s);
#else
  uint32_t b;
  __builtin_memcpy(&b, &s, 4);
#endif
  if ((b & 0x7fffffu) == 0) return s;  // already a power of two (s is normal: >= 1e-4/448)
  const uint32_t up = ((b >> 23) + 1) << 23;
#ifdef __CUDA_ARCH__
  return __uint_as_float(up);
#else
  float r;
  __builtin_memcpy(&r, &up, 4);
  return r;
#endif
}

// --- writers ---------------------------------------------------------------------------------------------------

// Stores n tokens' latent entries: c_new [n, ld_c] f32 (after kv_norm, not yet quantized) and kpe_new [n, ld_pe] f32
// (rotated) into physical rows slots[i]. F32: plain copy; BF16: round to nearest even; FP8: the 656-byte row, c
// quantized per 128 channels exactly as the CPU backend's fp8_quantize (and kv_pack) does it.
struct LatentWriteParams {
  LatentFormat format = LatentFormat::F32;
  int64_t n = 0, C = 0, R = 0;
  const float* c_new = nullptr;   // [n, ld_c] f32 device (FP8: rows 16-byte aligned)
  int64_t ld_c = 0;
  const float* kpe_new = nullptr; // [n, ld_pe] f32 device
  int64_t ld_pe = 0;
  const int64_t* slots = nullptr; // [n] physical row of each token, device; null: rows row0, row0 + 1, ...
  int64_t row0 = 0;
  bool ue8m0 = true;              // FP8 and simulate_fp8: scales rounded up to powers of two (scale_fmt ue8m0)
  float* latent = nullptr;        // F32 destination [rows, ld_latent]
  int64_t ld_latent = 0;
  float* k_pe = nullptr;          // F32 destination [rows, ld_rope]
  int64_t ld_rope = 0;
  uint8_t* packed = nullptr;      // BF16/FP8 destination [rows, latent_row_bytes]
  // F32 only: quantize-dequantize c through e4m3 (the FP8-simulated cache of the reference, spec §3.2).
  bool simulate_fp8 = false;
};
cudaError_t launch_latent_cache_write(const LatentWriteParams& p, cudaStream_t stream);

// Stores n tokens' indexer keys. F32: k_new holds the key (already in its final form) and scale_new its scale (may be
// null: 1). FP8: with key_is_e4m3, k_new already holds e4m3 values and scale_new their scales (the fp8 precision's
// quantized key), stored as they are; else k_new holds the unquantized key and the kernel quantizes it as one
// group (ue8m0 optional), storing scale_new · its scale (KvPackArgs' rule, lib/backend/backend.hpp). Layout: the
// paged 132-byte one.
struct IndexKeyWriteParams {
  IndexKeyFormat format = IndexKeyFormat::F32;
  int64_t n = 0, D = 0;
  const float* k_new = nullptr;      // [n, ld_new] f32 device
  int64_t ld_new = 0;
  const float* scale_new = nullptr;  // [n] f32 device (stride ld_scale_new), may be null (= 1)
  int64_t ld_scale_new = 1;
  bool ue8m0 = true;                 // FP8 only
  bool key_is_e4m3 = false;          // FP8 only
  const int64_t* slots = nullptr;    // [n] physical rows, device; null: rows row0, row0 + 1, ...
  int64_t row0 = 0;
  float* k = nullptr;                // F32 destination [rows, ld_k]
  int64_t ld_k = 0;
  float* scale = nullptr;            // F32 destination [rows] (stride ld_scale), may be null
  int64_t ld_scale = 1;
  uint8_t* packed = nullptr;         // FP8 destination
  int64_t block_tokens = 0;          // FP8 page size
};
cudaError_t launch_index_key_cache_write(const IndexKeyWriteParams& p, cudaStream_t stream);

}  // namespace dsinfer::gpu::attn
