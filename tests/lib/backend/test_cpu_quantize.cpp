// The vector FP8 activation quantizers (lib/backend/cpu/quantize_kernels.cpp) against the scalar reference, bit for
// bit: every instruction set this CPU runs, group lengths with and without a vector tail, both scale rules, both
// outputs (quantized, quantize-dequantized), values that land on the e4m3 subnormal grid, on rounding ties and on
// the ±448 clamp, and groups holding zeros, negative zeros or a NaN.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "backend/cpu/quantize_kernels.hpp"
#include "util/dtype.hpp"

using namespace dsinfer;

namespace {

std::vector<CpuIsa> vector_isas() {
  std::vector<CpuIsa> out;
  if (cpu_kernel_isa() >= CpuIsa::Avx2) out.push_back(CpuIsa::Avx2);
  if (cpu_kernel_isa() >= CpuIsa::Avx512) out.push_back(CpuIsa::Avx512);
  return out;
}

// A group mixing ordinary values, a few far larger (they set the scale, so the rest fall towards and below the
// e4m3 subnormal range), exact multiples of the grid's half steps (ties), zeros and negative zeros.
std::vector<float> mixed_group(std::mt19937& gen, int64_t n, float sd) {
  std::normal_distribution<float> nd(0.0f, sd);
  std::uniform_int_distribution<int> kind(0, 9);
  std::vector<float> v(size_t(n), 0.0f);
  for (auto& x : v) {
    switch (kind(gen)) {
      case 0: x = nd(gen) * 4000.0f; break;
      case 1: x = nd(gen) * 1e-4f; break;
      case 2: x = std::ldexp(float(int(nd(gen) * 8.0f)) + 0.5f, -3); break;  // ties between e4m3 neighbours
      case 3: x = -0.0f; break;
      case 4: x = 0.0f; break;
      default: x = nd(gen); break;
    }
  }
  return v;
}

void check_same(const std::vector<float>& x, bool ue8m0, bool dequantize, CpuIsa isa) {
  const int64_t n = int64_t(x.size());
  std::vector<float> want(x.size()), got(x.size());
  const float s_want = fp8_quantize_group_reference(x.data(), n, ue8m0, dequantize, want.data());
  const float s_got = fp8_quantize_group(x.data(), n, ue8m0, dequantize, got.data(), isa);
  INFO("n " << n << " ue8m0 " << ue8m0 << " dequantize " << dequantize << " isa " << int(isa));
  CHECK(std::memcmp(&s_want, &s_got, 4) == 0);
  CHECK(std::memcmp(want.data(), got.data(), x.size() * 4) == 0);
}

}  // namespace

TEST_CASE("vector FP8 activation quantization equals the scalar reference bit for bit", "[cpu][quantize]") {
  const auto isas = vector_isas();
  if (isas.empty()) {
    WARN("this CPU runs only the scalar kernel: nothing to compare");
    return;
  }
  std::mt19937 gen(7);
  for (CpuIsa isa : isas)
    for (int64_t n : {128, 64, 100, 17, 8, 1})
      for (float sd : {1e-3f, 1.0f, 300.0f})
        for (int rep = 0; rep < 20; ++rep) {
          const auto x = mixed_group(gen, n, sd);
          for (bool ue8m0 : {true, false})
            for (bool dequantize : {false, true}) check_same(x, ue8m0, dequantize, isa);
        }
}

TEST_CASE("vector FP8 quantization: all-zero groups, the clamp and NaN follow the reference", "[cpu][quantize]") {
  const auto isas = vector_isas();
  if (isas.empty()) {
    WARN("this CPU runs only the scalar kernel: nothing to compare");
    return;
  }
  for (CpuIsa isa : isas) {
    check_same(std::vector<float>(128, 0.0f), true, false, isa);
    check_same(std::vector<float>(128, -0.0f), false, true, isa);
    std::vector<float> x(128);
    for (size_t i = 0; i < x.size(); ++i) x[i] = float(i) * (i % 2 ? 3.5f : -3.5f);  // |x| up to 444.5
    check_same(x, true, false, isa);   // ue8m0: the scale rounds up, nothing clamps
    check_same(x, false, false, isa);  // exact scale: the largest lands on 448
    x[77] = std::numeric_limits<float>::quiet_NaN();
    std::vector<float> want(x.size()), got(x.size());
    fp8_quantize_group_reference(x.data(), 128, true, false, want.data());
    fp8_quantize_group(x.data(), 128, true, false, got.data(), isa);
    CHECK(std::isnan(got[77]));
    CHECK(std::memcmp(want.data(), got.data(), x.size() * 4) == 0);
  }
}
