// Communication between the processes ("ranks") that run one model together (docs/distributed.md). Only what the
// model needs: a broadcast (rank 0's commands, the MoE result), an all-gather in rank order (the attention heads'
// partial sums) and ordered point-to-point sends (the expert combine's chain). No home-made transport: MPI
// (DSINFER_MPI) between CPU processes, NCCL between GPUs (cuda/dist, built with the CUDA backend).
//
// Every call blocks the caller until its part is done. Collectives must be made by every rank in the same order.
// A peer that does not take part within the communicator's timeout makes the call throw Error(Device) naming the
// operation and the peer(s): a dead or stuck rank becomes an error on rank 0, never a hang. After such an error the
// communicator is broken (its peers are out of step) and the model that uses it refuses further work.
#pragma once
#include <cstddef>
#include <memory>

namespace dsinfer {

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // root's `bytes` bytes into every rank's `data`. `idle`: a worker waiting for its next command, which may come
  // much later (no timeout; the wait sleeps instead of spinning).
  virtual void broadcast(void* data, size_t bytes, int root, bool idle = false) = 0;
  // Every rank's `bytes` bytes of `send`, in rank order, into `recv` (size() * bytes bytes), on every rank.
  virtual void all_gather(const void* send, void* recv, size_t bytes, bool idle = false) = 0;
  // Every rank's `bytes` bytes of `send`, in rank order, into root's `recv` (size() * bytes; ignored elsewhere).
  virtual void gather(const void* send, void* recv, size_t bytes, int root) = 0;
  virtual void send(const void* data, size_t bytes, int to) = 0;
  virtual void recv(void* data, size_t bytes, int from) = 0;
  // True once a call has failed (timeout or transport error): the ranks are out of step.
  virtual bool broken() const = 0;
};

// MPI_COMM_WORLD. Starts MPI (MPI_THREAD_SERIALIZED: one thread at a time calls, any thread may) unless the
// application already did, and finalizes it at exit if it started it. timeout_s > 0: how long a call waits for its
// peers. Throws Error(Unsupported) in a build without DSINFER_MPI, Error(Device) when MPI cannot start.
std::shared_ptr<Communicator> mpi_world_communicator(double timeout_s);

// This process's rank in MPI_COMM_WORLD and the number of ranks (not collective; starts MPI like the above).
void mpi_world_place(int* rank, int* size);

// Whether this build has MPI (DSINFER_MPI=ON).
bool mpi_available();

// NCCL between GPUs, one device per rank, made collectively by every rank of `bootstrap` (which carries NCCL's id
// from rank 0; not used afterwards). device >= 0: this rank's device; -1: the ranks on one host (by host name) take
// its devices in rank order. The calls take device or host buffers (host ones are staged through a device buffer;
// a device buffer's writes must be complete or queued on the legacy default stream, which the calls wait for);
// timeout_s as for MPI. libnccl.so.2 (2.14 or newer) is loaded at the first call. Not yet used by the model: the
// CUDA backend has no expert-parallel mode (docs/distributed.md). Errors, alike on every rank and naming the rank
// that failed: Unsupported in a build without the CUDA backend and nccl.h, or where libnccl.so.2 is missing or too
// old; Device when a rank has no device of its own or NCCL fails.
std::shared_ptr<Communicator> nccl_communicator(Communicator& bootstrap, int device, double timeout_s);

}  // namespace dsinfer
