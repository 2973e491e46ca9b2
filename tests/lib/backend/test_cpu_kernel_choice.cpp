// ModelLoadParams::cpu_kernels (lib/backend/cpu/simd.cpp): the CPU kernel family is a cap fixed once per process,
// so this is its own executable (the other backend tests let the first kernel fix it). Run without
// DSINFER_CPU_KERNELS, which would override the requests.
#include <catch2/catch.hpp>

#include "backend/cpu/fp8_gemm.hpp"
#include "backend/cpu/simd.hpp"
#include "dsinfer/error.hpp"

using namespace dsinfer;

TEST_CASE("cpu_kernels: a cap, fixed by the first request, checked afterwards", "[cpu_kernels]") {
  if (std::getenv("DSINFER_CPU_KERNELS")) {
    WARN("DSINFER_CPU_KERNELS overrides the requests: not checked");
    return;
  }
  CHECK_THROWS_AS(fix_cpu_kernel_isa("sse9"), Error);
  CHECK(cpu_isa_detail::chosen.load() < 0);  // a refused name fixes nothing

  // The cap below the best this CPU runs (scalar is below everything).
  CHECK(fix_cpu_kernel_isa("scalar") == CpuIsa::Scalar);
  CHECK(cpu_kernel_isa() == CpuIsa::Scalar);
  CHECK(std::string(fp8_gemm_isa()) == "scalar");
  // "auto" never conflicts; the same request again neither.
  CHECK(fix_cpu_kernel_isa("auto") == CpuIsa::Scalar);
  CHECK(fix_cpu_kernel_isa("scalar") == CpuIsa::Scalar);
  // Another family would change under running models: refused, unless this CPU runs nothing better anyway.
  if (cpu_best_isa() >= CpuIsa::Avx2) {
    try {
      fix_cpu_kernel_isa("avx2");
      FAIL("a different family was accepted");
    } catch (const Error& e) {
      CHECK(e.code() == ErrorCode::InvalidArgument);
      CHECK(std::string(e.what()).find("scalar") != std::string::npos);
    }
  } else {
    CHECK(fix_cpu_kernel_isa("avx2") == CpuIsa::Scalar);
  }
  // "amx" names a family of its own (never picked by a cap): against scalar it conflicts too, where this CPU runs
  // anything better (the Amx family, or the best family in its place).
  if (cpu_best_isa() >= CpuIsa::Avx2) {
    try {
      fix_cpu_kernel_isa("amx");
      FAIL("amx was accepted beside scalar");
    } catch (const Error& e) {
      CHECK(std::string(e.what()).find("already runs the scalar") != std::string::npos);  // a name it knows
    }
  }
  CHECK(cpu_kernel_isa() == CpuIsa::Scalar);
}
