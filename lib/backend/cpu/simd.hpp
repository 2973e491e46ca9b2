// What the CPU GEMM kernels (fp8_gemm.cpp, dense_gemm.cpp) share: the instruction-set choice made once at run time,
// the target attributes of the kernel functions, and the lane masks of a partial 16-row panel.
#pragma once
#include <cstdint>
#include <cstdlib>
#include <cstring>

#if defined(__x86_64__) && defined(__GNUC__)
#include <cpuid.h>
#include <immintrin.h>
#define DSINFER_HAVE_AVX2_KERNELS 1
// GCC 12's AVX-512 conversion intrinsics start from _mm512_undefined values and trip this warning.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace dsinfer {

enum class CpuIsa { Scalar, Avx2, Avx512 };

// The best kernel family this CPU runs (AVX2 needs FMA and F16C too; AVX-512 needs F, BW and VL), capped by
// DSINFER_CPU_KERNELS=avx2 or =scalar. Decided once per process.
inline CpuIsa cpu_kernel_isa() {
  static const CpuIsa chosen = [] {
    const char* force = std::getenv("DSINFER_CPU_KERNELS");
    if (force && std::strcmp(force, "scalar") == 0) return CpuIsa::Scalar;
#ifdef DSINFER_HAVE_AVX2_KERNELS
    __builtin_cpu_init();
    // F16C from CPUID (leaf 1, ECX): clang's __builtin_cpu_supports does not know "f16c" (sanitizer/fuzz builds).
    unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
    const bool f16c = __get_cpuid(1, &eax, &ebx, &ecx, &edx) && (ecx & bit_F16C);
    if (!(__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && f16c))
      return CpuIsa::Scalar;
    if (!(force && std::strcmp(force, "avx2") == 0) && __builtin_cpu_supports("avx512f") &&
        __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl"))
      return CpuIsa::Avx512;
    return CpuIsa::Avx2;
#else
    return CpuIsa::Scalar;
#endif
  }();
  return chosen;
}

#ifdef DSINFER_HAVE_AVX2_KERNELS
#define DSINFER_AVX2 __attribute__((target("avx2,fma,f16c"), always_inline)) inline
#define DSINFER_AVX2_FN __attribute__((target("avx2,fma,f16c")))
#define DSINFER_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma,f16c"), always_inline)) inline
#define DSINFER_AVX512_FN __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma,f16c")))

// Lane masks for a panel with `nvalid` real rows (the partial last panel of a weight whose N is not a multiple of
// 16): loads and stores of y go through them so no row past N is touched.
struct PanelMask {
  __m256i lo, hi;
};
DSINFER_AVX2 PanelMask panel_mask(int64_t nvalid) {
  const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return {_mm256_cmpgt_epi32(_mm256_set1_epi32(int(nvalid)), idx),
          _mm256_cmpgt_epi32(_mm256_set1_epi32(int(nvalid) - 8), idx)};
}
DSINFER_AVX512 __mmask16 panel_mask_512(int64_t nvalid) { return __mmask16((1u << nvalid) - 1u); }
#endif

}  // namespace dsinfer
