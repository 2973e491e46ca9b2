#include "common/check.cuh"

#include <fmt/format.h>

namespace dsinfer::gpu {

namespace {
const char* file_tail(const char* file) {
  // Paths relative to the repository read better than the build machine's absolute path.
  std::string_view f(file);
  const size_t at = f.rfind("/cuda/");
  return at == std::string_view::npos ? file : file + at + 1;
}
}  // namespace

void throw_cuda_error(cudaError_t e, const char* expr, const char* file, int line) {
  const ErrorCode code = e == cudaErrorMemoryAllocation ? ErrorCode::OutOfMemory : ErrorCode::Device;
  throw Error(code, fmt::format("CUDA error {} ({}) at {}:{}: {}", cudaGetErrorName(e), cudaGetErrorString(e),
                                file_tail(file), line, expr));
}

void throw_cublas_error(cublasStatus_t s, const char* expr, const char* file, int line) {
  const ErrorCode code = s == CUBLAS_STATUS_ALLOC_FAILED ? ErrorCode::OutOfMemory
                         : s == CUBLAS_STATUS_NOT_SUPPORTED ? ErrorCode::Unsupported
                                                             : ErrorCode::Device;
  throw Error(code, fmt::format("cuBLASLt error {} ({}) at {}:{}: {}", cublasLtGetStatusName(s),
                                cublasLtGetStatusString(s), file_tail(file), line, expr));
}

void throw_device_error(ErrorCode code, const std::string& what, const char* file, int line) {
  throw Error(code, fmt::format("cuda backend: {} (at {}:{})", what, file_tail(file), line));
}

}  // namespace dsinfer::gpu
