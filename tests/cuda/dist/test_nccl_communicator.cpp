// The NCCL communicator (cuda/dist/nccl_communicator.cpp). Without a CUDA device only its refusal is checked (every
// rank gets the same clear error naming the rank that failed) and the run then reports a CTest skip (77). With a
// device per rank, every call moves host and device buffers and must give what the Communicator interface promises:
// alone over a one-rank bootstrap, or under mpirun (MPI builds) with the MPI communicator as the bootstrap.
#include <catch2/catch.hpp>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <numeric>
#include <string>
#include <vector>

#include "catch_runner.hpp"
#include "dist/communicator.hpp"
#include "dsinfer/error.hpp"

using namespace dsinfer;

namespace {

bool has_device() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

// A bootstrap of one rank (no MPI): every collective is a copy.
class SoloBootstrap final : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  void broadcast(void*, size_t, int, bool) override {}
  void all_gather(const void* send, void* recv, size_t bytes, bool) override { std::memcpy(recv, send, bytes); }
  void gather(const void* send, void* recv, size_t bytes, int) override { std::memcpy(recv, send, bytes); }
  void send(const void*, size_t, int) override { FAIL("a one-rank bootstrap sends nothing"); }
  void recv(void*, size_t, int) override { FAIL("a one-rank bootstrap receives nothing"); }
  bool broken() const override { return false; }
};

// Under mpirun (an MPI build, launched with more than one rank or OMPI's variables set) the bootstrap is MPI.
Communicator& bootstrap() {
  static std::shared_ptr<Communicator> comm = [] {
    std::shared_ptr<Communicator> c;
    if (mpi_available() && std::getenv("OMPI_COMM_WORLD_SIZE")) c = mpi_world_communicator(60);
    if (!c) c = std::make_shared<SoloBootstrap>();
    return c;
  }();
  return *comm;
}

// Bytes that tell rank, call and position apart.
std::vector<uint8_t> pattern(int rank, int call, size_t n) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = uint8_t(rank * 37 + call * 11 + int(i) * 7 + 1);
  return v;
}

// Every rank's pattern, in rank order: what a gather brings.
std::vector<uint8_t> every_rank_pattern(int size, int call, size_t n) {
  std::vector<uint8_t> all;
  for (int r = 0; r < size; ++r) {
    const auto p = pattern(r, call, n);
    all.insert(all.end(), p.begin(), p.end());
  }
  return all;
}

// A buffer in host or device memory.
struct Buf {
  bool device;
  size_t n;
  std::vector<uint8_t> host;
  void* dev = nullptr;
  Buf(bool on_device, size_t bytes) : device(on_device), n(bytes), host(bytes) {
    if (device) REQUIRE(cudaMalloc(&dev, n) == cudaSuccess);
  }
  ~Buf() {
    if (dev) cudaFree(dev);
  }
  void* ptr() { return device ? dev : host.data(); }
  void set(const std::vector<uint8_t>& v) {
    REQUIRE(v.size() == n);
    host = v;
    if (device) REQUIRE(cudaMemcpy(dev, v.data(), n, cudaMemcpyHostToDevice) == cudaSuccess);
  }
  std::vector<uint8_t> get() {
    if (device) REQUIRE(cudaMemcpy(host.data(), dev, n, cudaMemcpyDeviceToHost) == cudaSuccess);
    return host;
  }
};

// The first byte where `got` differs from `want` (or the shorter length), -1 where they are equal. Checked instead of
// the vectors themselves: Catch prints a failed comparison's operands whole, and printing 3 MB took longer than the
// GPU check's time limit (first GPU run, 2026-12-05).
int64_t first_difference(const std::vector<uint8_t>& got, const std::vector<uint8_t>& want) {
  const size_t n = std::min(got.size(), want.size());
  for (size_t i = 0; i < n; ++i)
    if (got[i] != want[i]) return int64_t(i);
  return got.size() == want.size() ? -1 : int64_t(n);
}

}  // namespace

TEST_CASE("without a CUDA device every rank gets the same clear error", "[no_device]") {
  if (has_device()) return;  // (the cases below run instead)
  Communicator& boot = bootstrap();
  try {
    nccl_communicator(boot, -1, 30);
    FAIL("a NCCL communicator was made without a device");
  } catch (const Error& e) {
    const std::string what = e.what();
    INFO(what);
    // No device (Device), or no libnccl.so.2 on this machine (Unsupported): the first failing rank is named.
    CHECK((e.code() == ErrorCode::Device || e.code() == ErrorCode::Unsupported));
    CHECK(what.rfind("NCCL communicator: rank 0: ", 0) == 0);
    CHECK((what.find("no CUDA device") != std::string::npos || what.find("libnccl") != std::string::npos));
  }
  // The bootstrap is still usable: every rank failed alike, none is left waiting.
  int token = boot.rank() == 0 ? 42 : 0;
  boot.broadcast(&token, sizeof token, 0);
  CHECK(token == 42);
}

TEST_CASE("NCCL calls give what the interface promises, host and device buffers", "[device]") {
  if (!has_device()) return;
  Communicator& boot = bootstrap();
  std::shared_ptr<Communicator> comm;
  try {
    comm = nccl_communicator(boot, -1, 60);
  } catch (const Error& e) {
    if (e.code() == ErrorCode::Unsupported) {
      WARN("NCCL is not usable here: " << e.what());
      return;
    }
    throw;
  }
  const int rank = comm->rank(), size = comm->size();
  CHECK(rank == boot.rank());
  CHECK(size == boot.size());
  int call = 0;
  for (bool device : {false, true})
    for (size_t n : {size_t(1), size_t(1000), size_t(3) << 20}) {
      INFO("device buffers " << device << ", " << n << " bytes");
      for (int root = 0; root < size; ++root) {  // broadcast
        Buf b(device, n);
        b.set(rank == root ? pattern(root, call, n) : std::vector<uint8_t>(n, 0));
        comm->broadcast(b.ptr(), n, root);
        CHECK(first_difference(b.get(), pattern(root, call, n)) == -1);
        ++call;
      }
      {  // all_gather, in rank order
        Buf in(device, n), out(device, n * size_t(size));
        in.set(pattern(rank, call, n));
        comm->all_gather(in.ptr(), out.ptr(), n);
        CHECK(first_difference(out.get(), every_rank_pattern(size, call, n)) == -1);
        ++call;
      }
      for (int root = 0; root < size; ++root) {  // gather to each root
        Buf in(device, n), out(device, n * size_t(size));
        in.set(pattern(rank, call, n));
        out.set(std::vector<uint8_t>(n * size_t(size), 0));
        comm->gather(in.ptr(), out.ptr(), n, root);
        if (rank == root) CHECK(first_difference(out.get(), every_rank_pattern(size, call, n)) == -1);
        ++call;
      }
      if (size > 1) {  // a ring of sends: even ranks send first, odd ones receive first
        Buf out(device, n), in(device, n);
        out.set(pattern(rank, call, n));
        const int next = (rank + 1) % size, prev = (rank + size - 1) % size;
        if (rank % 2 == 0) {
          comm->send(out.ptr(), n, next);
          comm->recv(in.ptr(), n, prev);
        } else {
          comm->recv(in.ptr(), n, prev);
          comm->send(out.ptr(), n, next);
        }
        CHECK(first_difference(in.get(), pattern(prev, call, n)) == -1);
        ++call;
      }
    }
  CHECK_FALSE(comm->broken());
}

int main(int argc, char** argv) {
  // Without a device only the refusal runs; passing, the run is a skip (the GPU part did not run).
  const bool device = has_device();
  std::vector<char*> args(argv, argv + argc);
  std::string only = "[no_device]";
  if (!device) args.push_back(only.data());
  const int rc = dsinfer::test::run_catch(int(args.size()), args.data());
  return rc == 0 && !device ? 77 : rc;
}
