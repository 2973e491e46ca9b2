// create_backend("cuda") lands here (lib/backend/backend.cpp declares this function when built with CUDA), so the
// core library needs no CUDA header.
#include "cuda_backend.hpp"

namespace dsinfer {

std::unique_ptr<Backend> make_cuda_backend(const BackendOptions& opts, int device) {
  return std::make_unique<CudaBackend>(opts, device);
}

}  // namespace dsinfer
