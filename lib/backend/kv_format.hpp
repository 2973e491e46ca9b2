// Byte layouts of the packed KV cache dtypes (KvDtype BF16 / FP8), defined for any model dimensions, and the
// exact scalar decoding of one row. At DeepSeek-V3.2's dimensions (kv_lora_rank 512, rope 64, index head 128)
// they are the deployed formats: FlashMLA's 656-byte "FP8 with scale" latent row (its tests/quant.py) and the
// 132-byte indexer key in DeepGEMM's paged layout (spec §3.5, §4.7); cuda/kv/kv_cache_formats.cuh defines the
// same rows for the GPU.
//
// Latent row, one per token (C = kv_lora_rank, R = qk_rope_head_dim, G = ceil(C / 128)):
//   FP8:  C e4m3 bytes of c | G fp32 scales (scale g covers channels [128g, 128g + 128)) | R bf16 of the rope key
//         c[i] = e4m3[i] · scale[i / 128] (one fp32 multiply); C + 4G + 2R bytes (656 at 512/64)
//   BF16: C bf16 of c | R bf16 of the rope key; 2(C + R) bytes (1152 at 512/64)
// Indexer key, paged: a page of P tokens (P = the pool's block) holds the P keys first, then their P fp32 scales:
//   FP8:  P·D e4m3 bytes | P fp32 scales: D + 4 bytes per token (132 at D = 128)
//   BF16: P·D bf16       | P fp32 scales: 2D + 4 bytes per token
// Scales are little-endian fp32 like everything else; rows and pages carry no padding.
#pragma once
#include <cstdint>
#include <algorithm>
#include <cstring>

#include "backend/backend.hpp"
#include "util/dtype.hpp"

namespace dsinfer::kvfmt {

constexpr int64_t kFp8Group = 128;  // latent channels per FP8 scale (FlashMLA's tile)

inline int64_t latent_scales(int64_t C) { return (C + kFp8Group - 1) / kFp8Group; }

inline int64_t latent_row_bytes(KvDtype d, int64_t C, int64_t R) {
  switch (d) {
    case KvDtype::FP8: return C + 4 * latent_scales(C) + 2 * R;
    case KvDtype::BF16: return 2 * (C + R);
    case KvDtype::F32: return 4 * (C + R);
  }
  return 0;
}

inline int64_t index_key_bytes(KvDtype d, int64_t D) {  // per token, its scale included
  return (d == KvDtype::FP8 ? D : d == KvDtype::BF16 ? 2 * D : 4 * D) + 4;
}

inline uint8_t* latent_row(const PackedKv& p, int64_t row) {
  return p.data + row * latent_row_bytes(p.dtype, p.dim, p.rope_dim);
}
// Indexer key of physical row `row`: its value bytes and its scale.
inline uint8_t* index_key_values(const PackedKv& p, int64_t row) {
  const int64_t page = row / p.page_tokens, off = row % p.page_tokens;
  const int64_t elem = p.dtype == KvDtype::FP8 ? 1 : 2;
  return p.data + page * p.page_tokens * index_key_bytes(p.dtype, p.dim) + off * p.dim * elem;
}
inline uint8_t* index_key_scale(const PackedKv& p, int64_t row) {
  const int64_t page = row / p.page_tokens, off = row % p.page_tokens;
  const int64_t elem = p.dtype == KvDtype::FP8 ? 1 : 2;
  return p.data + page * p.page_tokens * index_key_bytes(p.dtype, p.dim) + p.page_tokens * p.dim * elem + off * 4;
}

inline float load_f32(const uint8_t* p) {
  float f;
  std::memcpy(&f, p, 4);
  return f;
}
inline uint16_t load_u16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}

// The fp32 values of a latent row: c into latent[0, C), the rope key into rope[0, R).
inline void decode_latent_row(const PackedKv& p, int64_t row, float* latent, float* rope) {
  const int64_t C = p.dim, R = p.rope_dim;
  const uint8_t* b = latent_row(p, row);
  if (p.dtype == KvDtype::FP8) {
    const float* table = e4m3_table();
    for (int64_t g = 0; g < latent_scales(C); ++g) {
      const float s = load_f32(b + C + 4 * g);
      const int64_t end = std::min(C, (g + 1) * kFp8Group);
      for (int64_t i = g * kFp8Group; i < end; ++i) latent[i] = table[b[i]] * s;
    }
    b += C + 4 * latent_scales(C);
  } else {
    for (int64_t i = 0; i < C; ++i) latent[i] = bf16_to_f32(load_u16(b + 2 * i));
    b += 2 * C;
  }
  for (int64_t i = 0; i < R; ++i) rope[i] = bf16_to_f32(load_u16(b + 2 * i));
}

// The indexer key of a row as the indexer reads it: its values (FP8: the unscaled e4m3 values) and its scale.
inline float decode_index_key(const PackedKv& p, int64_t row, float* key) {
  const uint8_t* b = index_key_values(p, row);
  if (p.dtype == KvDtype::FP8) {
    const float* table = e4m3_table();
    for (int64_t i = 0; i < p.dim; ++i) key[i] = table[b[i]];
  } else {
    for (int64_t i = 0; i < p.dim; ++i) key[i] = bf16_to_f32(load_u16(b + 2 * i));
  }
  return load_f32(index_key_scale(p, row));
}

}  // namespace dsinfer::kvfmt
