#include <catch2/catch.hpp>
#include <cmath>

#include "util/dtype.hpp"
#include "util/thread_pool.hpp"

using namespace dsinfer;

TEST_CASE("e4m3 decodes the format's landmarks", "[dtype]") {
  CHECK(e4m3_to_f32(0x00) == 0.0f);
  CHECK(e4m3_to_f32(0x38) == 1.0f);                       // exponent 7 = bias
  CHECK(e4m3_to_f32(0x7e) == 448.0f);                     // largest finite
  CHECK(e4m3_to_f32(0xfe) == -448.0f);
  CHECK(e4m3_to_f32(0x01) == std::ldexp(1.0f, -9));       // smallest subnormal
  CHECK(e4m3_to_f32(0x08) == std::ldexp(1.0f, -6));       // smallest normal
  CHECK(std::isnan(e4m3_to_f32(0x7f)));
  CHECK(std::isnan(e4m3_to_f32(0xff)));
}

TEST_CASE("e4m3 encoding round-trips every finite code and rounds to nearest even", "[dtype]") {
  for (int c = 0; c < 256; ++c) {
    if ((c & 0x7f) == 0x7f) continue;
    const float v = e4m3_to_f32(uint8_t(c));
    if (v == 0.0f) continue;  // -0 and +0 both decode to zero
    CHECK(f32_to_e4m3(v) == c);
  }
  // 1.0625 is halfway between 1.0 (mantissa 0, even) and 1.125 (mantissa 1): ties go to even.
  CHECK(round_to_e4m3(1.0625f) == 1.0f);
  CHECK(round_to_e4m3(1.1875f) == 1.25f);  // between 1.125 (odd) and 1.25 (even)
  CHECK(round_to_e4m3(1000.0f) == 448.0f);  // saturates
  CHECK(round_to_e4m3(-1000.0f) == -448.0f);
  CHECK(round_to_e4m3(std::ldexp(1.0f, -11)) == 0.0f);            // below half the smallest subnormal
  CHECK(round_to_e4m3(std::ldexp(3.0f, -11)) == std::ldexp(1.0f, -9));
}

TEST_CASE("bf16 rounds to nearest even", "[dtype]") {
  CHECK(bf16_to_f32(f32_to_bf16(1.0f)) == 1.0f);
  CHECK(bf16_to_f32(f32_to_bf16(1.0f + std::ldexp(1.0f, -8))) == 1.0f);  // tie -> even
  CHECK(bf16_to_f32(f32_to_bf16(1.0f + std::ldexp(3.0f, -8))) == 1.0f + std::ldexp(1.0f, -6));
  CHECK(f16_to_f32(0x3c00) == 1.0f);
  CHECK(f16_to_f32(0x0001) == std::ldexp(1.0f, -24));
}

TEST_CASE("thread pool covers the range exactly once and forwards exceptions", "[thread_pool]") {
  ThreadPool pool(3);
  std::vector<int> hits(1000, 0);
  pool.parallel_for(1000, [&](int64_t b, int64_t e) { for (int64_t i = b; i < e; ++i) hits[i]++; });
  for (int h : hits) REQUIRE(h == 1);
  CHECK_THROWS_AS(pool.parallel_for(100, [&](int64_t b, int64_t) { if (b > 0) throw std::runtime_error("x"); }),
                  std::runtime_error);
  pool.parallel_for(10, [&](int64_t b, int64_t e) { for (int64_t i = b; i < e; ++i) hits[i]++; });
  CHECK(hits[9] == 2);
}

TEST_CASE("round_to_e4m3 equals encode-then-decode for every float pattern tried", "[dtype][e4m3]") {
  // Every 61st bit pattern of each sign up to and past 448, plus each e4m3 value's neighbourhood (ties included).
  int64_t mismatches = 0;
  auto check = [&](uint32_t bits) {
    const float x = bits_to_f32(bits);
    const float want = e4m3_to_f32(f32_to_e4m3(x)), got = round_to_e4m3(x);
    mismatches += f32_to_bits(want) != f32_to_bits(got) && !(std::isnan(want) && std::isnan(got));
  };
  for (uint32_t a = 0; a <= 0x44000000u; a += 61) {
    check(a);
    check(a | 0x80000000u);
  }
  for (int c = 0; c < 256; ++c) {
    const uint32_t v = f32_to_bits(e4m3_to_f32(uint8_t(c)));
    for (uint32_t d = 0; d < 4096; ++d) {
      check(v + d);
      check(v - d);
    }
  }
  check(0x7f800000u);
  check(0x7fc00000u);
  REQUIRE(mismatches == 0);
}
