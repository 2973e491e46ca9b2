// What the CPU GEMM kernels (fp8_gemm.cpp, dense_gemm.cpp) share: the instruction-set choice made once at run time,
// the target attributes of the kernel functions, and the lane masks of a partial 16-row panel.
#pragma once
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string_view>

#if defined(__x86_64__) && defined(__GNUC__)
#include <cpuid.h>
#include <immintrin.h>
#define DSINFER_HAVE_AVX2_KERNELS 1
// GCC 12's AVX-512 conversion intrinsics start from _mm512_undefined values and trip this warning (clang has none).
#if !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#endif

namespace dsinfer {

// The CPU kernel families. Scalar, Avx2 and Avx512 compute bitwise-identical results; Amx is Avx512 with the
// lightning indexer's scores on AMX tiles (indexer_amx.hpp), whose bf16 dot products round in their own way, so its
// scores (and top-k choices between near-equal keys) are its own: it is never chosen unless asked for.
enum class CpuIsa { Scalar, Avx2, Avx512, Amx };

// The best bitwise-identical kernel family this CPU runs (AVX2 needs FMA and F16C too; AVX-512 needs F, BW and VL).
// Detected once.
CpuIsa cpu_best_isa();
// Whether this CPU and kernel run the Amx family: AVX-512 as above, AMX-TILE, AMX-BF16, AVX512-BF16, VBMI, and the
// kernel's permission to use the tile data (requested here, once per process).
bool cpu_amx_available();

// The family the kernels run, fixed once per process (every op of every model sees the same one: call sites decide
// buffer layouts and head blocking by it, so it must never change under a running forward). The first of these
// fixes it: a load with ModelLoadParams::cpu_kernels other than "auto" (fix_cpu_kernel_isa), or the first kernel
// that asks (the best family, capped by DSINFER_CPU_KERNELS).
namespace cpu_isa_detail {
inline std::atomic<int> chosen{-1};  // a CpuIsa once fixed
CpuIsa fix(const char* requested);   // fixes it (first caller wins) and returns what is in force
}  // namespace cpu_isa_detail

inline CpuIsa cpu_kernel_isa() {
  const int c = cpu_isa_detail::chosen.load(std::memory_order_acquire);
  return c >= 0 ? CpuIsa(c) : cpu_isa_detail::fix(nullptr);
}

// The family of every kernel but the indexer's scores: the Amx family runs the Avx512 kernels elsewhere.
inline CpuIsa cpu_vector_isa() {
  const CpuIsa isa = cpu_kernel_isa();
  return isa == CpuIsa::Amx ? CpuIsa::Avx512 : isa;
}

// ModelLoadParams::cpu_kernels: "auto", "avx512", "avx2" or "scalar", a cap on the family (a cap above what the CPU
// runs gives the best it runs), or "amx", which asks for the Amx family (where it is not available: the best
// family, logged). Fixes the family if it is not fixed yet; DSINFER_CPU_KERNELS in the environment overrides the
// request. Throws Error(InvalidArgument) for another name, or for a request whose family differs from the one
// already fixed for this process ("auto" never conflicts).
CpuIsa fix_cpu_kernel_isa(std::string_view requested);
const char* cpu_isa_name(CpuIsa isa);  // "scalar", "avx2", "avx512", "amx"

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
