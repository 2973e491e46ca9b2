#include "util/dtype.hpp"

#include <array>

namespace dsinfer {

size_t dtype_size(DType t) noexcept {
  switch (t) {
    case DType::F32: return 4;
    case DType::BF16: return 2;
    case DType::F16: return 2;
    case DType::F8_E4M3: return 1;
    case DType::I32: return 4;
    case DType::I64: return 8;
  }
  return 0;
}

std::string_view dtype_name(DType t) noexcept {
  switch (t) {
    case DType::F32: return "F32";
    case DType::BF16: return "BF16";
    case DType::F16: return "F16";
    case DType::F8_E4M3: return "F8_E4M3";
    case DType::I32: return "I32";
    case DType::I64: return "I64";
  }
  return "?";
}

bool dtype_from_name(std::string_view n, DType* out) noexcept {
  static constexpr std::pair<std::string_view, DType> kNames[] = {
      {"F32", DType::F32}, {"BF16", DType::BF16}, {"F16", DType::F16},
      {"F8_E4M3", DType::F8_E4M3}, {"I32", DType::I32}, {"I64", DType::I64}};
  for (auto& [name, t] : kNames)
    if (name == n) { *out = t; return true; }
  return false;
}

float f16_to_f32(uint16_t h) noexcept {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  const uint32_t man = h & 0x3ffu;
  if (exp == 0) {
    // zero or subnormal: man * 2^-24
    float v = std::ldexp(float(man), -24);
    return (sign ? -v : v);
  }
  if (exp == 31) return bits_to_f32(sign | 0x7f800000u | (man << 13));
  return bits_to_f32(sign | ((exp + 112u) << 23) | (man << 13));
}

namespace {
float decode_e4m3(uint8_t v) {
  const bool neg = v & 0x80;
  const int exp = (v >> 3) & 0xf;
  const int man = v & 0x7;
  if (exp == 0xf && man == 0x7) return NAN;
  float mag = exp == 0 ? std::ldexp(float(man), -9)                // subnormal: man/8 * 2^-6
                       : std::ldexp(1.0f + float(man) / 8.0f, exp - 7);
  return neg ? -mag : mag;
}
const std::array<float, 256>& table_256() {
  static const std::array<float, 256> table = [] {
    std::array<float, 256> t{};
    for (int i = 0; i < 256; ++i) t[i] = decode_e4m3(uint8_t(i));
    return t;
  }();
  return table;
}
}  // namespace

float e4m3_to_f32(uint8_t v) noexcept { return table_256()[v]; }
const float* e4m3_table() noexcept { return table_256().data(); }

uint8_t f32_to_e4m3(float x) noexcept {
  if (std::isnan(x)) return 0x7f;
  const uint8_t sign = std::signbit(x) ? 0x80 : 0x00;
  float a = std::fabs(x);
  if (a >= 448.0f) return sign | 0x7e;  // saturate to the largest finite value
  // Spacing of representable values: subnormals (a < 2^-6) are multiples of 2^-9; otherwise 2^(e-3).
  int e;
  std::frexp(a, &e);  // a = m * 2^e with m in [0.5, 1)  => exponent of a is e-1
  int unbiased = e - 1;
  if (unbiased < -6) unbiased = -6;
  const float quantum = std::ldexp(1.0f, unbiased - 3);
  // Round half to even in units of the quantum (exact in float: a/quantum < 2^5).
  float q = std::nearbyint(a / quantum);  // default FP rounding mode is round-half-even
  float r = q * quantum;
  if (r > 448.0f) r = 448.0f;
  // Encode r exactly.
  if (r == 0.0f) return sign;
  int re;
  std::frexp(r, &re);
  int rexp = re - 1;
  if (rexp < -6) {  // subnormal
    return sign | uint8_t(int(r / std::ldexp(1.0f, -9)));
  }
  const int man = int(std::ldexp(r, -rexp) * 8.0f) - 8;
  return sign | uint8_t(((rexp + 7) << 3) | man);
}

}  // namespace dsinfer
