// A build without NCCL (no CUDA backend, or nccl.h not found): GPU communicators are refused with a clear error.
#include "dist/communicator.hpp"
#include "dsinfer/error.hpp"

namespace dsinfer {

std::shared_ptr<Communicator> nccl_communicator(Communicator&, int, double) {
  throw Error(ErrorCode::Unsupported, "this dsinfer was built without NCCL: GPU communicators need a build with the "
                                      "CUDA backend (-DDSINFER_CUDA=ON) where nccl.h is found");
}

}  // namespace dsinfer
