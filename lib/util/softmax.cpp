// softmax(): a portable definition and an AVX2 path that computes the same operations eight lanes at a time.
#include "util/softmax.hpp"

#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define DSINFER_SOFTMAX_AVX2 1
#endif

namespace dsinfer {

namespace {

constexpr float kMinArg = -87.33654475f;            // ln(FLT_MIN): below it exp(x) is subnormal, taken as 0
constexpr float kLog2e = 1.44269504088896341f;
constexpr float kLn2Hi = 0.693145751953125f;        // ln 2 to 16 bits: k · kLn2Hi is exact for |k| <= 127
constexpr float kLn2Lo = 1.42860682030941723e-6f;   // ln 2 - kLn2Hi
// 1/j! for j = 7 .. 2 (the terms of degree 1 and 0 have coefficient 1).
constexpr float kInvFact[6] = {1.0f / 5040.0f, 1.0f / 720.0f, 1.0f / 120.0f, 1.0f / 24.0f, 1.0f / 6.0f, 0.5f};

// The last step of every path: the sum of the 8 partial sums in the documented order.
double combine(const double s[8]) { return ((s[0] + s[4]) + (s[2] + s[6])) + ((s[1] + s[5]) + (s[3] + s[7])); }

}  // namespace

float softmax_exp(float x) {
  if (!(x >= kMinArg)) return std::isnan(x) ? x : 0.0f;
  const float k = std::nearbyint(x * kLog2e);
  float r = std::fma(k, -kLn2Hi, x);
  r = std::fma(k, -kLn2Lo, r);
  float p = kInvFact[0];
  for (int j = 1; j < 6; ++j) p = std::fma(p, r, kInvFact[j]);
  p = std::fma(p, r, 1.0f);
  p = std::fma(p, r, 1.0f);
  return p * std::bit_cast<float>(uint32_t(int32_t(k) + 127) << 23);
}

namespace softmax_detail {

void softmax_portable(const float* x, size_t n, float* out) {
  float mx = -std::numeric_limits<float>::infinity();
  for (size_t i = 0; i < n; ++i)
    if (x[i] > mx) mx = x[i];
  double s[8] = {};
  for (size_t i = 0; i < n; ++i) {
    out[i] = softmax_exp(x[i] - mx);
    s[i % 8] += double(out[i]);
  }
  const double inv = 1.0 / combine(s);
  for (size_t i = 0; i < n; ++i) out[i] = float(double(out[i]) * inv);
}

#ifdef DSINFER_SOFTMAX_AVX2
namespace {

#define DSINFER_SOFTMAX_TARGET __attribute__((target("avx2,fma")))

DSINFER_SOFTMAX_TARGET inline __m256 exp8(__m256 x) {
  const __m256 k =
      _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(kLog2e)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fmadd_ps(k, _mm256_set1_ps(-kLn2Hi), x);
  r = _mm256_fmadd_ps(k, _mm256_set1_ps(-kLn2Lo), r);
  __m256 p = _mm256_set1_ps(kInvFact[0]);
  for (int j = 1; j < 6; ++j) p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kInvFact[j]));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  // Lanes below kMinArg (and -inf) get k's bits from a clamped k, then are zeroed; a NaN lane stays NaN through p.
  const __m256 below = _mm256_cmp_ps(x, _mm256_set1_ps(kMinArg), _CMP_LT_OQ);
  const __m256i ki = _mm256_cvtps_epi32(_mm256_max_ps(k, _mm256_set1_ps(-126.0f)));
  const __m256 scale = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(ki, _mm256_set1_epi32(127)), 23));
  return _mm256_andnot_ps(below, _mm256_mul_ps(p, scale));
}

DSINFER_SOFTMAX_TARGET void softmax8(const float* x, size_t n, float* out) {
  const size_t n8 = n / 8 * 8;
  __m256 m = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
  for (size_t i = 0; i < n8; i += 8) m = _mm256_max_ps(_mm256_loadu_ps(x + i), m);  // a NaN in x keeps m
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, m);
  float mx = -std::numeric_limits<float>::infinity();
  for (const float v : lanes)
    if (v > mx) mx = v;
  for (size_t i = n8; i < n; ++i)
    if (x[i] > mx) mx = x[i];

  const __m256 vmx = _mm256_set1_ps(mx);
  __m256d s_lo = _mm256_setzero_pd(), s_hi = _mm256_setzero_pd();  // partial sums of positions i mod 8 = 0-3, 4-7
  for (size_t i = 0; i < n8; i += 8) {
    const __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(x + i), vmx));
    _mm256_storeu_ps(out + i, e);
    s_lo = _mm256_add_pd(s_lo, _mm256_cvtps_pd(_mm256_castps256_ps128(e)));
    s_hi = _mm256_add_pd(s_hi, _mm256_cvtps_pd(_mm256_extractf128_ps(e, 1)));
  }
  double s[8];
  _mm256_storeu_pd(s, s_lo);
  _mm256_storeu_pd(s + 4, s_hi);
  for (size_t i = n8; i < n; ++i) {
    out[i] = softmax_exp(x[i] - mx);
    s[i % 8] += double(out[i]);
  }
  const double inv = 1.0 / combine(s);
  const __m256d vinv = _mm256_set1_pd(inv);
  for (size_t i = 0; i < n8; i += 8) {
    const __m256 e = _mm256_loadu_ps(out + i);
    const __m128 lo = _mm256_cvtpd_ps(_mm256_mul_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(e)), vinv));
    const __m128 hi = _mm256_cvtpd_ps(_mm256_mul_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(e, 1)), vinv));
    _mm256_storeu_ps(out + i, _mm256_set_m128(hi, lo));
  }
  for (size_t i = n8; i < n; ++i) out[i] = float(double(out[i]) * inv);
}

}  // namespace

// Its own CPU check rather than backend/cpu/simd.hpp's kernel family: util sits below the backends, and both paths
// give the same bits, so DSINFER_CPU_KERNELS has nothing to choose here.
bool softmax_avx2(const float* x, size_t n, float* out) {
  static const bool supported = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if (!supported) return false;
  softmax8(x, n, out);
  return true;
}
#else
bool softmax_avx2(const float*, size_t, float*) { return false; }
#endif

}  // namespace softmax_detail

void softmax(const float* x, size_t n, float* out) {
  if (n == 0) return;  // (1 / S with S = 0 would divide by zero)
  if (!softmax_detail::softmax_avx2(x, n, out)) softmax_detail::softmax_portable(x, n, out);
}

}  // namespace dsinfer
