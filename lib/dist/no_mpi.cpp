// A build without DSINFER_MPI: distributed runs are refused with a clear error.
#include "dist/communicator.hpp"
#include "dsinfer/error.hpp"

namespace dsinfer {

bool mpi_available() { return false; }

void mpi_world_place(int* rank, int* size) {
  *rank = 0;
  *size = 1;
  mpi_world_communicator(0);  // throws
}

std::shared_ptr<Communicator> mpi_world_communicator(double) {
  throw Error(ErrorCode::Unsupported, "this dsinfer was built without MPI: distributed runs need a build with "
                                      "-DDSINFER_MPI=ON (Debian: libopenmpi-dev)");
}

}  // namespace dsinfer
