#include "backend/cpu/simd.hpp"

#include <mutex>
#include <string>

#include <sys/syscall.h>
#include <unistd.h>

#include "dsinfer/error.hpp"
#include "util/json_input.hpp"
#include "util/log.hpp"

namespace dsinfer {
namespace {

// "auto" (or nullptr) -> -1; a family name -> its CpuIsa; anything else -> -2.
int parse_isa(const char* s) {
  if (!s || std::strcmp(s, "auto") == 0) return -1;
  for (CpuIsa i : {CpuIsa::Scalar, CpuIsa::Avx2, CpuIsa::Avx512, CpuIsa::Amx})
    if (std::strcmp(s, cpu_isa_name(i)) == 0) return int(i);
  return -2;
}

std::mutex fix_mutex;  // serializes the first decision (the atomic makes later reads lock-free)

}  // namespace

const char* cpu_isa_name(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::Amx: return "amx";
    case CpuIsa::Avx512: return "avx512";
    case CpuIsa::Avx2: return "avx2";
    default: return "scalar";
  }
}

CpuIsa cpu_best_isa() {
  static const CpuIsa best = [] {
#ifdef DSINFER_HAVE_AVX2_KERNELS
    __builtin_cpu_init();
    // F16C from CPUID (leaf 1, ECX): clang's __builtin_cpu_supports does not know "f16c" (sanitizer/fuzz builds).
    unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
    const bool f16c = __get_cpuid(1, &eax, &ebx, &ecx, &edx) && (ecx & bit_F16C);
    if (!(__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && f16c)) return CpuIsa::Scalar;
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl"))
      return CpuIsa::Avx512;
    return CpuIsa::Avx2;
#else
    return CpuIsa::Scalar;
#endif
  }();
  return best;
}

bool cpu_amx_available() {
  static const bool available = [] {
#ifdef DSINFER_HAVE_AVX2_KERNELS
    if (cpu_best_isa() != CpuIsa::Avx512) return false;
    unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
    if (!__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx)) return false;
    const bool tile = edx & (1u << 24), bf16_tiles = edx & (1u << 22), vbmi = ecx & (1u << 1);
    if (!__get_cpuid_count(7, 1, &eax, &ebx, &ecx, &edx)) return false;
    const bool avx512_bf16 = eax & (1u << 5);
    if (!(tile && bf16_tiles && vbmi && avx512_bf16)) return false;
    // Linux keeps the 8 KB of tile data out of a thread's state until the process asks for it.
    constexpr long kReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
    return syscall(SYS_arch_prctl, kReqXcompPerm, kXfeatureXtiledata) == 0;
#else
    return false;
#endif
  }();
  return available;
}

namespace cpu_isa_detail {
CpuIsa fix(const char* requested) {
  std::lock_guard lock(fix_mutex);
  const int now = chosen.load(std::memory_order_acquire);
  const char* env = std::getenv("DSINFER_CPU_KERNELS");
  const int from_env = parse_isa(env && *env ? env : nullptr);
  const int cap = from_env >= 0 ? from_env : parse_isa(requested);
  if (from_env >= 0 && parse_isa(requested) >= 0 && parse_isa(requested) != from_env)
    log_fmt(LogLevel::Warn, "cpu_kernels {} overridden by DSINFER_CPU_KERNELS={}", requested, env);
  // Amx is asked for by name only; the other names cap the best bitwise-identical family.
  const int want = cap == int(CpuIsa::Amx) ? int(cpu_amx_available() ? CpuIsa::Amx : cpu_best_isa())
                   : cap < 0              ? int(cpu_best_isa())
                                          : std::min(cap, int(cpu_best_isa()));
  if (now >= 0) {
    // Only an explicit request can conflict; the environment's cap was applied when the family was fixed.
    if (cap >= 0 && want != now)
      throw Error(ErrorCode::InvalidArgument,
                  std::string("cpu_kernels ") + requested + " asked for, but this process already runs the " +
                      cpu_isa_name(CpuIsa(now)) + " CPU kernels (the family is fixed by the first load)");
    return CpuIsa(now);
  }
  if (cap >= 0 && want < cap)
    log_fmt(LogLevel::Info, "cpu kernels: {} asked for, this CPU runs at most {}", cpu_isa_name(CpuIsa(cap)),
            cpu_isa_name(cpu_best_isa()));
  chosen.store(want, std::memory_order_release);
  log_fmt(LogLevel::Info, "cpu kernels: {}{}", cpu_isa_name(CpuIsa(want)),
          from_env >= 0 ? " (DSINFER_CPU_KERNELS)" : cap >= 0 ? " (cpu_kernels)" : "");
  return CpuIsa(want);
}
}  // namespace cpu_isa_detail

CpuIsa fix_cpu_kernel_isa(std::string_view requested) {
  const std::string r(requested.empty() ? "auto" : requested);
  if (parse_isa(r.c_str()) == -2)
    throw Error(ErrorCode::InvalidArgument,
                "cpu_kernels must be auto, amx, avx512, avx2 or scalar, not \"" + excerpt(r) + "\"");
  return cpu_isa_detail::fix(r.c_str());
}

}  // namespace dsinfer
