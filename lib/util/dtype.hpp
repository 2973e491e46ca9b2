// Element types of checkpoint tensors and activations, and exact scalar conversions between them.
#pragma once
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>

namespace dsinfer {

enum class DType : uint8_t { F32, BF16, F16, F8_E4M3, I32, I64 };

size_t dtype_size(DType t) noexcept;
std::string_view dtype_name(DType t) noexcept;  // safetensors spelling: "F32", "BF16", "F8_E4M3", ...
bool dtype_from_name(std::string_view name, DType* out) noexcept;

inline float bits_to_f32(uint32_t b) { float f; std::memcpy(&f, &b, 4); return f; }
inline uint32_t f32_to_bits(float f) { uint32_t b; std::memcpy(&b, &f, 4); return b; }

inline float bf16_to_f32(uint16_t h) { return bits_to_f32(uint32_t(h) << 16); }
// Round to nearest even, NaN kept NaN.
inline uint16_t f32_to_bf16(float f) {
  uint32_t b = f32_to_bits(f);
  if ((b & 0x7fffffffu) > 0x7f800000u) return uint16_t((b >> 16) | 0x40);
  b += 0x7fffu + ((b >> 16) & 1u);
  return uint16_t(b >> 16);
}

float f16_to_f32(uint16_t h) noexcept;

// float8 e4m3fn: 1 sign, 4 exponent (bias 7), 3 mantissa bits; no inf, 0x7f/0xff are NaN; max 448.
// Decoding goes through a 256-entry table built once.
float e4m3_to_f32(uint8_t v) noexcept;
// The decoding table itself (256 floats), for hot loops that decode whole rows.
const float* e4m3_table() noexcept;
// Round to nearest even; |x| > 448 saturates to ±448 (the reference clamps before casting). NaN -> NaN.
uint8_t f32_to_e4m3(float x) noexcept;
// The e4m3 value nearest to x, as a float: e4m3_to_f32(f32_to_e4m3(x)), computed on the float's bits (activation
// quantization runs it on every element; tests/lib/util/test_dtype.cpp checks it against the encoder).
inline float round_to_e4m3(float x) noexcept {
  const uint32_t b = f32_to_bits(x), a = b & 0x7fffffffu, sign = b & 0x80000000u;
  if (a >= 0x43e00000u) return e4m3_to_f32(f32_to_e4m3(x));  // |x| >= 448, inf, NaN: saturate, keep NaN
  if (a >= 0x3c800000u)  // |x| >= 2^-6, a normal e4m3: keep 3 mantissa bits, round half to even
    return bits_to_f32(sign | ((a + 0x7ffffu + ((a >> 20) & 1u)) & 0xfff00000u));
  // Subnormal range: multiples of 2^-9; adding and removing 2^23 rounds |x|·2^9 (< 8) half to even.
  const float m = (bits_to_f32(a) * 512.0f + 8388608.0f) - 8388608.0f;
  return bits_to_f32(sign | f32_to_bits(m * 0.001953125f));
}

}  // namespace dsinfer
