// The MPI communicator (DSINFER_MPI). Every operation is started non-blocking and then polled, so that a peer that
// never answers becomes an error after the timeout instead of a hang, and so that a waiting rank sleeps instead of
// spinning (dist/backoff.hpp).
#include "dist/communicator.hpp"

#include <fmt/format.h>
#include <mpi.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include "dist/backoff.hpp"
#include "dsinfer/error.hpp"
#include "util/log.hpp"

namespace dsinfer {

bool mpi_available() { return true; }

namespace {

// Finalizes MPI at exit when dsinfer started it (static destruction, after every model is gone).
struct MpiLifetime {
  bool started_here = false;
  bool broken = false;
  ~MpiLifetime() {
    int finalized = 0;
    MPI_Finalized(&finalized);
    // A broken run skips MPI_Finalize: it is collective and would wait for the peer that failed.
    if (started_here && !finalized && !broken) MPI_Finalize();
  }
};
MpiLifetime& lifetime() {
  static MpiLifetime l;
  return l;
}

std::string mpi_error_text(int rc) {
  char text[MPI_MAX_ERROR_STRING] = {};
  int len = 0;
  MPI_Error_string(rc, text, &len);
  return std::string(text, size_t(len));
}

// Polls r until it completes (dist/backoff.hpp). Returns false when timeout_s > 0 passes first (never when idle);
// MPI errors go to `rc`.
bool poll(MPI_Request& r, double timeout_s, bool idle, int* rc) {
  Backoff wait(idle);
  for (;;) {
    int done = 0;
    *rc = MPI_Test(&r, &done, MPI_STATUS_IGNORE);
    if (*rc != MPI_SUCCESS || done) return true;
    if (!idle && timeout_s > 0 && wait.waited_s() > timeout_s) return false;
    wait.pause();
  }
}

class MpiCommunicator final : public Communicator {
 public:
  MpiCommunicator(MPI_Comm comm, double timeout_s) : comm_(comm), timeout_(timeout_s) {
    MPI_Comm_rank(comm_, &rank_);
    MPI_Comm_size(comm_, &size_);
  }
  ~MpiCommunicator() override {
    int finalized = 0;
    MPI_Finalized(&finalized);  // (a model destroyed after MPI ended, e.g. at static destruction)
    if (!broken_ && !finalized) MPI_Comm_free(&comm_);
  }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  bool broken() const override { return broken_; }

  void broadcast(void* data, size_t bytes, int root, bool idle) override {
    for_pieces(bytes, [&](size_t off, int n) {
      MPI_Request r;
      check(MPI_Ibcast(static_cast<char*>(data) + off, n, MPI_BYTE, root, comm_, &r), "broadcast");
      wait(r, "broadcast", fmt::format("rank {}", root), idle);
    });
  }

  void all_gather(const void* send, void* recv, size_t bytes, bool idle) override {
    ensure_usable();
    if (bytes > size_t(INT_MAX))
      throw Error(ErrorCode::Unsupported, fmt::format("all_gather of {} bytes per rank (at most {})", bytes, INT_MAX));
    MPI_Request r;
    check(MPI_Iallgather(send, int(bytes), MPI_BYTE, recv, int(bytes), MPI_BYTE, comm_, &r), "all_gather");
    wait(r, "all_gather", "the other ranks", idle);
  }

  void gather(const void* send, void* recv, size_t bytes, int root) override {
    ensure_usable();
    if (bytes > size_t(INT_MAX))
      throw Error(ErrorCode::Unsupported, fmt::format("gather of {} bytes per rank (at most {})", bytes, INT_MAX));
    MPI_Request r;
    check(MPI_Igather(send, int(bytes), MPI_BYTE, recv, int(bytes), MPI_BYTE, root, comm_, &r), "gather");
    wait(r, "gather", rank_ == root ? std::string("the other ranks") : fmt::format("rank {}", root), false);
  }

  void send(const void* data, size_t bytes, int to) override {
    for_pieces(bytes, [&](size_t off, int n) {
      MPI_Request r;
      check(MPI_Isend(static_cast<const char*>(data) + off, n, MPI_BYTE, to, kTag, comm_, &r), "send");
      wait(r, "send", fmt::format("rank {}", to), false);
    });
  }

  void recv(void* data, size_t bytes, int from) override {
    for_pieces(bytes, [&](size_t off, int n) {
      MPI_Request r;
      check(MPI_Irecv(static_cast<char*>(data) + off, n, MPI_BYTE, from, kTag, comm_, &r), "recv");
      wait(r, "receive", fmt::format("rank {}", from), false);
    });
  }

 private:
  static constexpr int kTag = 0x5d51;
  static constexpr size_t kPiece = size_t(1) << 30;  // MPI counts are int

  template <class F>
  void for_pieces(size_t bytes, F&& f) {
    ensure_usable();
    size_t off = 0;
    do {
      const size_t n = std::min(kPiece, bytes - off);
      f(off, int(n));
      off += n;
    } while (off < bytes);
  }

  void ensure_usable() const {
    if (broken_)
      throw Error(ErrorCode::Device, "the ranks of this distributed run are out of step after an earlier failure; "
                                     "restart the run");
  }

  void check(int rc, const char* what) {
    if (rc == MPI_SUCCESS) return;
    fail();
    throw Error(ErrorCode::Device, fmt::format("rank {}: MPI {} failed: {}", rank_, what, mpi_error_text(rc)));
  }

  void fail() {
    broken_ = true;
    lifetime().broken = true;
  }

  void wait(MPI_Request& r, const char* what, const std::string& peer, bool idle) {
    int rc = MPI_SUCCESS;
    const bool done = poll(r, timeout_, idle, &rc);
    check(rc, what);
    if (!done) {
      fail();
      throw Error(ErrorCode::Device, fmt::format("rank {}: {} timed out after {:.0f} s waiting for {} (a rank died, "
                                                 "hangs or is far slower; DSINFER_DIST_TIMEOUT sets the limit)",
                                                 rank_, what, timeout_, peer));
    }
  }

  MPI_Comm comm_;
  double timeout_;
  int rank_ = 0, size_ = 1;
  bool broken_ = false;
};

}  // namespace

namespace {
void start_mpi() {
  static std::mutex init_mutex;
  std::lock_guard<std::mutex> lock(init_mutex);
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (!initialized) {
    int provided = 0;
    const int rc = MPI_Init_thread(nullptr, nullptr, MPI_THREAD_SERIALIZED, &provided);
    if (rc != MPI_SUCCESS) throw Error(ErrorCode::Device, "MPI_Init_thread failed: " + mpi_error_text(rc));
    lifetime().started_here = true;
    if (provided < MPI_THREAD_SERIALIZED)
      log_fmt(LogLevel::Warn, "MPI gives thread level {} (< MPI_THREAD_SERIALIZED): call a distributed model from one "
                              "thread only", provided);
  } else {
    int provided = 0;
    MPI_Query_thread(&provided);
    if (provided < MPI_THREAD_SERIALIZED)
      log_fmt(LogLevel::Warn, "the application started MPI at thread level {} (< MPI_THREAD_SERIALIZED): call a "
                              "distributed model from one thread only", provided);
  }
}
}  // namespace

void mpi_world_place(int* rank, int* size) {
  start_mpi();
  MPI_Comm_rank(MPI_COMM_WORLD, rank);
  MPI_Comm_size(MPI_COMM_WORLD, size);
}

std::shared_ptr<Communicator> mpi_world_communicator(double timeout_s) {
  start_mpi();
  // A communicator of our own (collective over MPI_COMM_WORLD): dsinfer's messages never mix with the
  // application's. Errors are returned, not fatal, so that they become Error exceptions.
  // Non-blocking, so that a rank whose peers never join (they did not call Model::run_worker, or loaded another
  // model first) gets an error instead of waiting forever.
  MPI_Comm comm;
  MPI_Request r;
  int rc = MPI_Comm_idup(MPI_COMM_WORLD, &comm, &r);
  if (rc == MPI_SUCCESS && !poll(r, timeout_s, /*idle=*/false, &rc)) {
    int rank = 0, size = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    lifetime().broken = true;
    throw Error(ErrorCode::Device, fmt::format("rank {}: the other {} ranks did not join the distributed model within "
                                               "{:.0f} s (rank 0 calls Model::load, every other rank Model::run_worker, "
                                               "with the same checkpoint)", rank, size - 1, timeout_s));
  }
  if (rc != MPI_SUCCESS) throw Error(ErrorCode::Device, "MPI_Comm_idup failed: " + mpi_error_text(rc));
  MPI_Comm_set_errhandler(comm, MPI_ERRORS_RETURN);
  return std::make_shared<MpiCommunicator>(comm, timeout_s);
}

}  // namespace dsinfer
