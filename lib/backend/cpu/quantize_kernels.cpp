#include "backend/cpu/quantize_kernels.hpp"

#include <algorithm>
#include <cmath>

#include "backend/cpu/cpu_backend.hpp"
#include "util/dtype.hpp"

namespace dsinfer {

namespace {
constexpr float kE4m3Max = 448.0f;

#ifdef DSINFER_HAVE_AVX2_KERNELS
// round_to_e4m3 (util/dtype.hpp) on 16 lanes whose |v| ≤ 448 and that hold no NaN: normals keep 3 mantissa bits
// (half to even on the bits); below 2^-6 the value is rounded on the 2^-9 grid by adding and removing 2^23.
DSINFER_AVX512 __m512 round_e4m3_512(__m512 v) {
  const __m512i b = _mm512_castps_si512(v);
  const __m512i a = _mm512_and_si512(b, _mm512_set1_epi32(0x7fffffff)), sign = _mm512_xor_si512(a, b);
  const __m512i odd = _mm512_and_si512(_mm512_srli_epi32(a, 20), _mm512_set1_epi32(1));
  const __m512i normal = _mm512_and_si512(_mm512_add_epi32(_mm512_add_epi32(a, _mm512_set1_epi32(0x7ffff)), odd),
                                          _mm512_set1_epi32(int32_t(0xfff00000u)));
  const __m512 m = _mm512_sub_ps(_mm512_add_ps(_mm512_mul_ps(_mm512_castsi512_ps(a), _mm512_set1_ps(512.0f)),
                                               _mm512_set1_ps(8388608.0f)),
                                 _mm512_set1_ps(8388608.0f));
  const __m512i sub = _mm512_castps_si512(_mm512_mul_ps(m, _mm512_set1_ps(0.001953125f)));
  const __mmask16 is_normal = _mm512_cmpge_epi32_mask(a, _mm512_set1_epi32(0x3c800000));
  return _mm512_castsi512_ps(_mm512_or_si512(sign, _mm512_mask_blend_epi32(is_normal, sub, normal)));
}

DSINFER_AVX512_FN float quantize_group_avx512(const float* x, int64_t n, bool ue8m0, bool dequantize, float* out) {
  __m512 amax = _mm512_setzero_ps();
  __mmask16 nan = 0;
  for (int64_t k = 0; k < n; k += 16) {
    const __mmask16 m = n - k >= 16 ? __mmask16(0xffff) : __mmask16((1u << (n - k)) - 1u);
    const __m512 v = _mm512_maskz_loadu_ps(m, x + k);
    nan |= _mm512_mask_cmp_ps_mask(m, v, v, _CMP_UNORD_Q);
    amax = _mm512_max_ps(amax, _mm512_abs_ps(v));
  }
  if (nan) return fp8_quantize_group_reference(x, n, ue8m0, dequantize, out);
  const float s = fp8_group_scale(_mm512_reduce_max_ps(amax), ue8m0);
  const __m512 sv = _mm512_set1_ps(s), hi = _mm512_set1_ps(kE4m3Max), lo = _mm512_set1_ps(-kE4m3Max);
  for (int64_t k = 0; k < n; k += 16) {
    const __mmask16 m = n - k >= 16 ? __mmask16(0xffff) : __mmask16((1u << (n - k)) - 1u);
    const __m512 v = _mm512_max_ps(lo, _mm512_min_ps(hi, _mm512_div_ps(_mm512_maskz_loadu_ps(m, x + k), sv)));
    const __m512 q = round_e4m3_512(v);
    _mm512_mask_storeu_ps(out + k, m, dequantize ? _mm512_mul_ps(q, sv) : q);
  }
  return s;
}

DSINFER_AVX2 __m256 round_e4m3_256(__m256 v) {
  const __m256i b = _mm256_castps_si256(v);
  const __m256i a = _mm256_and_si256(b, _mm256_set1_epi32(0x7fffffff)), sign = _mm256_xor_si256(a, b);
  const __m256i odd = _mm256_and_si256(_mm256_srli_epi32(a, 20), _mm256_set1_epi32(1));
  const __m256i normal = _mm256_and_si256(_mm256_add_epi32(_mm256_add_epi32(a, _mm256_set1_epi32(0x7ffff)), odd),
                                          _mm256_set1_epi32(int32_t(0xfff00000u)));
  const __m256 m = _mm256_sub_ps(_mm256_add_ps(_mm256_mul_ps(_mm256_castsi256_ps(a), _mm256_set1_ps(512.0f)),
                                               _mm256_set1_ps(8388608.0f)),
                                 _mm256_set1_ps(8388608.0f));
  const __m256i sub = _mm256_castps_si256(_mm256_mul_ps(m, _mm256_set1_ps(0.001953125f)));
  // a ≥ 0x3c800000 as signed integers (a has no sign bit): a > 0x3c7fffff.
  const __m256i is_normal = _mm256_cmpgt_epi32(a, _mm256_set1_epi32(0x3c7fffff));
  return _mm256_castsi256_ps(_mm256_or_si256(sign, _mm256_blendv_epi8(sub, normal, is_normal)));
}

DSINFER_AVX2 __m256i tail_mask_256(int64_t left) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(int(std::min<int64_t>(left, 8))),
                            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

DSINFER_AVX2_FN float quantize_group_avx2(const float* x, int64_t n, bool ue8m0, bool dequantize, float* out) {
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  __m256 amax = _mm256_setzero_ps(), nan = _mm256_setzero_ps();
  for (int64_t k = 0; k < n; k += 8) {
    const __m256 v = _mm256_maskload_ps(x + k, tail_mask_256(n - k));  // lanes past n read as +0
    nan = _mm256_or_ps(nan, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
    amax = _mm256_max_ps(amax, _mm256_and_ps(v, abs_mask));
  }
  if (_mm256_movemask_ps(nan)) return fp8_quantize_group_reference(x, n, ue8m0, dequantize, out);
  __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(amax), _mm256_extractf128_ps(amax, 1));
  m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
  m4 = _mm_max_ss(m4, _mm_shuffle_ps(m4, m4, 1));
  const float s = fp8_group_scale(_mm_cvtss_f32(m4), ue8m0);
  const __m256 sv = _mm256_set1_ps(s), hi = _mm256_set1_ps(kE4m3Max), lo = _mm256_set1_ps(-kE4m3Max);
  for (int64_t k = 0; k < n; k += 8) {
    const __m256i m = tail_mask_256(n - k);
    const __m256 v = _mm256_max_ps(lo, _mm256_min_ps(hi, _mm256_div_ps(_mm256_maskload_ps(x + k, m), sv)));
    const __m256 q = round_e4m3_256(v);
    _mm256_maskstore_ps(out + k, m, dequantize ? _mm256_mul_ps(q, sv) : q);
  }
  return s;
}
#endif
}  // namespace

float fp8_quantize_group_reference(const float* x, int64_t n, bool ue8m0, bool dequantize, float* out) {
  float amax = 0.0f;
  for (int64_t k = 0; k < n; ++k) amax = std::max(amax, std::fabs(x[k]));
  const float s = fp8_group_scale(amax, ue8m0);
  for (int64_t k = 0; k < n; ++k) {
    const float q = round_to_e4m3(std::clamp(x[k] / s, -kE4m3Max, kE4m3Max));
    out[k] = dequantize ? q * s : q;
  }
  return s;
}

float fp8_quantize_group(const float* x, int64_t n, bool ue8m0, bool dequantize, float* out, CpuIsa isa) {
#ifdef DSINFER_HAVE_AVX2_KERNELS
  if (isa == CpuIsa::Avx512) return quantize_group_avx512(x, n, ue8m0, dequantize, out);
  if (isa == CpuIsa::Avx2) return quantize_group_avx2(x, n, ue8m0, dequantize, out);
#endif
  (void)isa;
  return fp8_quantize_group_reference(x, n, ue8m0, dequantize, out);
}

}  // namespace dsinfer
