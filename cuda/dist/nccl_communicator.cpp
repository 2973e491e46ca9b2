// The NCCL communicator (issue 22, docs/distributed.md): ranks on GPUs, one device each, exchanging data through
// NCCL, NVIDIA's collective library (NVLink, PCIe, InfiniBand or sockets, whatever connects the devices). It is made
// collectively over a bootstrap communicator (MPI in practice), which carries NCCL's unique id from rank 0 and each
// rank's host name; after that the bootstrap is not used.
//
// libnccl.so.2 is opened when the first NCCL communicator is made, not linked: a CUDA build of dsinfer runs on
// machines without NCCL, and only a distributed GPU run needs it.
//
// Buffers may be device memory (used in place; the work writing them must be complete or queued on the legacy default
// stream, which the communicator's stream follows) or host memory (staged through a device buffer of the
// communicator's, grown to the largest call). NCCL runs non-blocking (ncclConfig_t::blocking = 0): every call is
// enqueued on the communicator's own stream, then polled as the MPI communicator polls (dist/backoff.hpp),
// so a peer that does not take part within the timeout aborts the communicator (ncclCommAbort) and the call throws
// Error(Device) instead of hanging; neither NCCL's initialization nor a collective can block the caller for good.
#include <dlfcn.h>
#include <fmt/format.h>
#include <nccl.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#include "common/check.cuh"
#include "dist/backoff.hpp"
#include "dist/communicator.hpp"
#include "dsinfer/error.hpp"

namespace dsinfer {

namespace {

// The NCCL functions dsinfer calls, resolved from libnccl.so.2. 2.14 is the first NCCL with non-blocking
// communicators (ncclConfig_t::blocking, ncclCommFinalize).
constexpr int kMinNcclVersion = 21400;
struct NcclApi {
  int version = 0;
  ncclResult_t (*GetVersion)(int*) = nullptr;
  ncclResult_t (*GetUniqueId)(ncclUniqueId*) = nullptr;
  ncclResult_t (*CommInitRankConfig)(ncclComm_t*, int, ncclUniqueId, int, ncclConfig_t*) = nullptr;
  ncclResult_t (*CommFinalize)(ncclComm_t) = nullptr;
  ncclResult_t (*CommDestroy)(ncclComm_t) = nullptr;
  ncclResult_t (*CommAbort)(ncclComm_t) = nullptr;
  ncclResult_t (*CommGetAsyncError)(ncclComm_t, ncclResult_t*) = nullptr;
  const char* (*GetErrorString)(ncclResult_t) = nullptr;
  ncclResult_t (*Broadcast)(const void*, void*, size_t, ncclDataType_t, int, ncclComm_t, cudaStream_t) = nullptr;
  ncclResult_t (*AllGather)(const void*, void*, size_t, ncclDataType_t, ncclComm_t, cudaStream_t) = nullptr;
  ncclResult_t (*Send)(const void*, size_t, ncclDataType_t, int, ncclComm_t, cudaStream_t) = nullptr;
  ncclResult_t (*Recv)(void*, size_t, ncclDataType_t, int, ncclComm_t, cudaStream_t) = nullptr;
  ncclResult_t (*GroupStart)() = nullptr;
  ncclResult_t (*GroupEnd)() = nullptr;
};

NcclApi load_nccl() {
  // The library stays loaded for the process's life (NCCL keeps threads of its own).
  void* lib = dlopen("libnccl.so.2", RTLD_NOW | RTLD_LOCAL);
  if (!lib)
    throw Error(ErrorCode::Unsupported, fmt::format("NCCL is not installed here ({}): a distributed GPU run needs "
                                                    "libnccl.so.2 on the library path (Debian/Ubuntu: libnccl2; PyPI: "
                                                    "nvidia-nccl-cu12 or -cu13)", dlerror()));
  NcclApi api;
  auto resolve = [&](auto& fn, const char* name) {
    void* p = dlsym(lib, name);
    if (!p) throw Error(ErrorCode::Unsupported, fmt::format("libnccl.so.2 lacks {}: NCCL 2.14 or newer is needed", name));
    fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(p);
  };
  resolve(api.GetVersion, "ncclGetVersion");
  if (api.GetVersion(&api.version) != ncclSuccess || api.version < kMinNcclVersion)
    throw Error(ErrorCode::Unsupported, fmt::format("NCCL {} is too old: dsinfer needs 2.14 or newer (non-blocking "
                                                    "communicators)", api.version));
  resolve(api.GetUniqueId, "ncclGetUniqueId");
  resolve(api.CommInitRankConfig, "ncclCommInitRankConfig");
  resolve(api.CommFinalize, "ncclCommFinalize");
  resolve(api.CommDestroy, "ncclCommDestroy");
  resolve(api.CommAbort, "ncclCommAbort");
  resolve(api.CommGetAsyncError, "ncclCommGetAsyncError");
  resolve(api.GetErrorString, "ncclGetErrorString");
  resolve(api.Broadcast, "ncclBroadcast");
  resolve(api.AllGather, "ncclAllGather");
  resolve(api.Send, "ncclSend");
  resolve(api.Recv, "ncclRecv");
  resolve(api.GroupStart, "ncclGroupStart");
  resolve(api.GroupEnd, "ncclGroupEnd");
  return api;
}

// Loaded once per process (a failed load is tried again by the next call).
const NcclApi& nccl() {
  static const NcclApi api = load_nccl();
  return api;
}

class NcclCommunicator final : public Communicator {
 public:
  NcclCommunicator(const NcclApi& api, int rank, int size, int device, double timeout_s)
      : api_(api), rank_(rank), size_(size), device_(device), timeout_(timeout_s) {}

  // Collective: every rank calls it with the same id. Throws as the calls do.
  void start(const ncclUniqueId& id) {
    DSINFER_CUDA_CHECK(cudaSetDevice(device_));
    // A blocking stream (ordered after the legacy default stream's work): a caller's device buffer written there
    // last, by a kernel or a cudaMemcpy from pageable memory (which may return before its DMA lands), is complete
    // before NCCL or the gather's own copy reads or overwrites it. The first GPU run (H100, 2026-12-05) showed the
    // race with a non-blocking stream: a 3 MB gather's root part was overwritten by the test's earlier zero fill.
    DSINFER_CUDA_CHECK(cudaStreamCreate(&stream_));
    DSINFER_CUDA_CHECK(cudaEventCreateWithFlags(&done_, cudaEventDisableTiming));
    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.blocking = 0;
    check(api_.CommInitRankConfig(&comm_, size_, id, rank_, &config), "initialization");
    settle("initialization", "the other ranks", false);
  }

  ~NcclCommunicator() override {
    if (comm_) {
      if (broken_) {
        api_.CommAbort(comm_);
      } else {
        // Finalize flushes what is in flight; it is collective, so a peer that is gone is waited for only up to the
        // timeout, then the communicator is aborted.
        cudaSetDevice(device_);
        ncclResult_t state = api_.CommFinalize(comm_);
        Backoff wait(false);
        while (state == ncclInProgress && (timeout_ <= 0 || wait.waited_s() < timeout_)) {
          wait.pause();
          api_.CommGetAsyncError(comm_, &state);
        }
        if (state == ncclSuccess)
          api_.CommDestroy(comm_);
        else
          api_.CommAbort(comm_);
      }
    }
    if (staging_) cudaFree(staging_);
    if (done_) cudaEventDestroy(done_);
    if (stream_) cudaStreamDestroy(stream_);
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  bool broken() const override { return broken_; }

  void broadcast(void* data, size_t bytes, int root, bool idle) override {
    begin(bytes);
    Buffer buf = place(data, bytes, 0, /*copy_in=*/rank_ == root);
    run("broadcast", fmt::format("rank {}", root), idle,
        [&] { return api_.Broadcast(buf.device, buf.device, bytes, ncclUint8, root, comm_, stream_); });
    if (rank_ != root) copy_out(buf, data, bytes);
  }

  void all_gather(const void* send, void* recv, size_t bytes, bool idle) override {
    begin(bytes * size_t(size_));
    Buffer in = place(const_cast<void*>(send), bytes, 0, true);
    Buffer out = place(recv, bytes * size_t(size_), in.staged ? bytes : 0, false);
    run("all_gather", "the other ranks", idle,
        [&] { return api_.AllGather(in.device, out.device, bytes, ncclUint8, comm_, stream_); });
    copy_out(out, recv, bytes * size_t(size_));
  }

  void gather(const void* send, void* recv, size_t bytes, int root) override {
    const bool at_root = rank_ == root;
    begin(bytes * size_t(at_root ? size_ : 1));
    Buffer in = place(const_cast<void*>(send), bytes, 0, true);
    Buffer out = at_root ? place(recv, bytes * size_t(size_), in.staged ? bytes : 0, false) : Buffer{};
    // NCCL has no gather: the root copies its own part, then receives every other rank's in one group.
    char* dst = static_cast<char*>(out.device);
    if (at_root && bytes > 0)
      DSINFER_CUDA_CHECK(cudaMemcpyAsync(dst + size_t(root) * bytes, in.device, bytes, cudaMemcpyDeviceToDevice,
                                         stream_));
    run("gather", at_root ? std::string("the other ranks") : fmt::format("rank {}", root), false, [&] {
      ncclResult_t rc = api_.GroupStart();
      if (rc != ncclSuccess) return rc;
      if (at_root) {
        for (int r = 0; r < size_ && rc == ncclSuccess; ++r)
          if (r != root) rc = api_.Recv(dst + size_t(r) * bytes, bytes, ncclUint8, r, comm_, stream_);
      } else {
        rc = api_.Send(in.device, bytes, ncclUint8, root, comm_, stream_);
      }
      const ncclResult_t end = api_.GroupEnd();
      return rc != ncclSuccess ? rc : end;
    });
    if (at_root) copy_out(out, recv, bytes * size_t(size_));
  }

  void send(const void* data, size_t bytes, int to) override {
    begin(bytes);
    Buffer buf = place(const_cast<void*>(data), bytes, 0, true);
    run("send", fmt::format("rank {}", to), false,
        [&] { return api_.Send(buf.device, bytes, ncclUint8, to, comm_, stream_); });
  }

  void recv(void* data, size_t bytes, int from) override {
    begin(bytes);
    Buffer buf = place(data, bytes, 0, false);
    run("receive", fmt::format("rank {}", from), false,
        [&] { return api_.Recv(buf.device, bytes, ncclUint8, from, comm_, stream_); });
    copy_out(buf, data, bytes);
  }

 private:
  // A caller's buffer as NCCL sees it: the buffer itself when it is device memory, else a part of the staging buffer.
  struct Buffer {
    void* device = nullptr;
    bool staged = false;
  };

  // Before a call: usable, on this communicator's device, staging room for `staged_bytes` (an upper bound).
  void begin(size_t staged_bytes) {
    if (broken_)
      throw Error(ErrorCode::Device, "the ranks of this distributed run are out of step after an earlier failure; "
                                     "restart the run");
    DSINFER_CUDA_CHECK(cudaSetDevice(device_));
    const size_t need = 2 * staged_bytes;  // a call stages at most its input and its output
    if (need > staging_bytes_) {
      if (staging_) DSINFER_CUDA_CHECK(cudaFree(staging_));
      staging_ = nullptr;
      staging_bytes_ = 0;
      DSINFER_CUDA_CHECK(cudaMalloc(&staging_, need));
      staging_bytes_ = need;
    }
  }

  static bool on_device(const void* p) {
    cudaPointerAttributes a{};
    if (cudaPointerGetAttributes(&a, p) != cudaSuccess) {
      cudaGetLastError();  // (older runtimes report plain host memory as an error)
      return false;
    }
    return a.type == cudaMemoryTypeDevice || a.type == cudaMemoryTypeManaged;
  }

  Buffer place(void* p, size_t bytes, size_t staging_offset, bool copy_in) {
    if (bytes == 0 || on_device(p)) return {p, false};
    void* d = static_cast<char*>(staging_) + staging_offset;
    if (copy_in) DSINFER_CUDA_CHECK(cudaMemcpyAsync(d, p, bytes, cudaMemcpyHostToDevice, stream_));
    return {d, true};
  }

  // After run(): the stream is idle, so this copy does not wait on a peer.
  void copy_out(const Buffer& b, void* host, size_t bytes) {
    if (!b.staged) return;
    DSINFER_CUDA_CHECK(cudaMemcpyAsync(host, b.device, bytes, cudaMemcpyDeviceToHost, stream_));
    DSINFER_CUDA_CHECK(cudaStreamSynchronize(stream_));
  }

  // Enqueues an operation and waits until the device has done it, or fails after the timeout.
  template <class Enqueue>
  void run(const char* what, const std::string& peer, bool idle, Enqueue&& enqueue) {
    check(enqueue(), what);
    settle(what, peer, idle);  // a non-blocking communicator may still be enqueueing
    DSINFER_CUDA_CHECK(cudaEventRecord(done_, stream_));
    Backoff wait(idle);
    for (;;) {
      const cudaError_t e = cudaEventQuery(done_);
      if (e == cudaSuccess) return;
      if (e != cudaErrorNotReady) {
        fail();
        DSINFER_CUDA_CHECK(e);
      }
      ncclResult_t state = ncclSuccess;
      check(api_.CommGetAsyncError(comm_, &state), what);
      if (state != ncclSuccess && state != ncclInProgress) check(state, what);
      if (!idle && timeout_ > 0 && wait.waited_s() > timeout_) time_out(what, peer);
      wait.pause();
    }
  }

  // Waits until the communicator has no operation left in its enqueueing state.
  void settle(const char* what, const std::string& peer, bool idle) {
    Backoff wait(idle);
    for (;;) {
      ncclResult_t state = ncclSuccess;
      check(api_.CommGetAsyncError(comm_, &state), what);
      if (state == ncclSuccess) return;
      if (state != ncclInProgress) check(state, what);
      if (!idle && timeout_ > 0 && wait.waited_s() > timeout_) time_out(what, peer);
      wait.pause();
    }
  }

  void check(ncclResult_t rc, const char* what) {
    if (rc == ncclSuccess || rc == ncclInProgress) return;
    fail();
    throw Error(ErrorCode::Device, fmt::format("rank {}: NCCL {} failed: {}", rank_, what, api_.GetErrorString(rc)));
  }

  [[noreturn]] void time_out(const char* what, const std::string& peer) {
    fail();
    throw Error(ErrorCode::Device, fmt::format("rank {}: NCCL {} timed out after {:.0f} s waiting for {} (a rank died, "
                                               "hangs or is far slower; DSINFER_DIST_TIMEOUT sets the limit)",
                                               rank_, what, timeout_, peer));
  }

  // The ranks are out of step: NCCL's work in flight is abandoned (the destructor aborts the communicator).
  void fail() { broken_ = true; }

  const NcclApi& api_;
  int rank_, size_, device_;
  double timeout_;
  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;
  cudaEvent_t done_ = nullptr;
  void* staging_ = nullptr;
  size_t staging_bytes_ = 0;
  bool broken_ = false;
};

// What a rank found while preparing, exchanged so that every rank fails alike (none is left waiting in NCCL's
// initialization for a rank that gave up).
struct PrepareStatus {
  int32_t ok = 1;
  int32_t code = 0;
  std::array<char, 248> message{};
};

}  // namespace

std::shared_ptr<Communicator> nccl_communicator(Communicator& bootstrap, int device, double timeout_s) {
  const int rank = bootstrap.rank(), size = bootstrap.size();
  // Ranks on one host take its devices in rank order: a rank's index among the ranks with its host name.
  std::array<char, 256> host{};
  gethostname(host.data(), host.size() - 1);
  std::vector<char> hosts(host.size() * size_t(size));
  bootstrap.all_gather(host.data(), hosts.data(), host.size());
  int local = 0;
  for (int r = 0; r < rank; ++r)
    if (std::memcmp(hosts.data() + size_t(r) * host.size(), host.data(), host.size()) == 0) ++local;

  PrepareStatus mine;
  ncclUniqueId id{};
  const NcclApi* api = nullptr;
  try {
    api = &nccl();
    int count = 0;
    const cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess || count == 0)
      throw Error(ErrorCode::Device, fmt::format("no CUDA device ({})", e != cudaSuccess ? cudaGetErrorString(e)
                                                                                          : "none visible"));
    if (device < 0) device = local;
    if (device >= count)
      throw Error(ErrorCode::Device, fmt::format("device {} does not exist: {} CUDA device(s) visible on host {} "
                                                 "(NCCL needs a device of its own per rank)", device, count,
                                                 host.data()));
    if (rank == 0 && api->GetUniqueId(&id) != ncclSuccess)
      throw Error(ErrorCode::Device, "ncclGetUniqueId failed (no usable network interface?)");
  } catch (const Error& e) {
    mine.ok = 0;
    mine.code = int32_t(e.code());
    std::snprintf(mine.message.data(), mine.message.size(), "%s", e.what());
  }
  std::vector<PrepareStatus> all(size_t(size), PrepareStatus{});
  bootstrap.all_gather(&mine, all.data(), sizeof(PrepareStatus));
  for (int r = 0; r < size; ++r)
    if (!all[size_t(r)].ok)
      throw Error(ErrorCode(all[size_t(r)].code),
                  fmt::format("NCCL communicator: rank {}: {}", r, all[size_t(r)].message.data()));
  bootstrap.broadcast(&id, sizeof id, 0);

  auto comm = std::make_shared<NcclCommunicator>(*api, rank, size, device, timeout_s);
  comm->start(id);
  return comm;
}

}  // namespace dsinfer
