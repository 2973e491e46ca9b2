// CUDA runtime and cuBLASLt statuses turned into dsinfer::Error(ErrorCode::Device) carrying file:line and the
// failing expression, so a device failure reads like any other dsinfer error at the front doors.
#pragma once
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <string>

#include "dsinfer/error.hpp"

namespace dsinfer::gpu {

[[noreturn]] void throw_cuda_error(cudaError_t e, const char* expr, const char* file, int line);
[[noreturn]] void throw_cublas_error(cublasStatus_t s, const char* expr, const char* file, int line);
[[noreturn]] void throw_device_error(ErrorCode code, const std::string& what, const char* file, int line);

}  // namespace dsinfer::gpu

#define DSINFER_CUDA_CHECK(expr)                                                          \
  do {                                                                                    \
    const cudaError_t dsinfer_e_ = (expr);                                                \
    if (dsinfer_e_ != cudaSuccess) ::dsinfer::gpu::throw_cuda_error(dsinfer_e_, #expr, __FILE__, __LINE__); \
  } while (0)

#define DSINFER_CUBLAS_CHECK(expr)                                                        \
  do {                                                                                    \
    const cublasStatus_t dsinfer_s_ = (expr);                                             \
    if (dsinfer_s_ != CUBLAS_STATUS_SUCCESS)                                              \
      ::dsinfer::gpu::throw_cublas_error(dsinfer_s_, #expr, __FILE__, __LINE__);          \
  } while (0)

// A kernel launch: the launch error (bad configuration, no kernel image for this GPU) is reported at once;
// faults inside the kernel surface at the next synchronizing call, which checks too.
#define DSINFER_CUDA_CHECK_LAUNCH() DSINFER_CUDA_CHECK(cudaGetLastError())

// An internal precondition of the CUDA backend (shape, alignment) that the caller broke.
#define DSINFER_CUDA_REQUIRE(cond, what)                                                  \
  do {                                                                                    \
    if (!(cond)) ::dsinfer::gpu::throw_device_error(::dsinfer::ErrorCode::Internal, (what), __FILE__, __LINE__); \
  } while (0)
