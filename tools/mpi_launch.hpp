// `mpirun -np N dsinfer ...` (docs/distributed.md): a program started by an MPI launcher with more than one rank runs
// one distributed model. Rank 0 runs the command; every other rank loads its share and serves rank 0 (run_worker).
#pragma once
#include <cstdlib>
#include <string>

#include "dsinfer/model.hpp"

namespace dsinfer::tools {

// Whether an MPI launcher started this process as one of several ranks: OpenMPI's mpirun sets OMPI_COMM_WORLD_SIZE,
// MPICH's Hydra and Slurm's PMI set PMI_SIZE. (A build without MPI then refuses the run with a clear error instead
// of running N independent copies.)
inline bool launched_as_ranks() {
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE"})
    if (const char* v = std::getenv(name); v && *v) {
      char* end = nullptr;
      const long n = std::strtol(v, &end, 10);  // (atoi's overflow is undefined; any garbage here means "no")
      if (*end == '\0' && n > 1) return true;
    }
  return false;
}

// A worker rank's whole job is done (rank 0 released the model): the command returns 0 without output.
struct WorkerDone {};

// Marks p distributed when launched as ranks; on a rank other than 0, serves rank 0 until it is done and throws
// WorkerDone. p must be what rank 0 uses (every rank builds it from the same command line).
inline void join_distributed_run(const std::string& dir, ModelLoadParams& p) {
  if (!launched_as_ranks()) return;
  p.distributed = true;
  if (Model::distributed_rank().rank == 0) return;
  Model::run_worker(dir, p);
  throw WorkerDone{};
}

}  // namespace dsinfer::tools
