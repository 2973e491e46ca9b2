#include "backend/backend.hpp"

#include <fmt/format.h>

#include "backend/cpu/cpu_backend.hpp"
#include "dsinfer/error.hpp"

namespace dsinfer {

Matrix Backend::matrix(int64_t rows, int64_t cols) {
  Matrix m;
  m.buffer = allocate(size_t(rows * cols) * sizeof(float));
  fill_zero(Tensor2D{static_cast<float*>(m.buffer.data()), rows, cols, cols});
  m.view = Tensor2D{static_cast<float*>(m.buffer.data()), rows, cols, cols};
  return m;
}

std::unique_ptr<Backend> create_backend(std::string_view name, const BackendOptions& opts) {
  if (name == "cpu") return std::make_unique<CpuBackend>(opts);
  throw Error(ErrorCode::InvalidArgument,
              fmt::format("unknown backend \"{}\" (this build has: cpu)", name));
}

}  // namespace dsinfer
