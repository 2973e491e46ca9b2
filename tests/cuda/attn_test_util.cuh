// Helpers shared by the attention/indexer/cache tests (tests/cuda/test_{mla,indexer,kv,mla_backend}.cu): a CHECK
// that counts failures and keeps going, a CUDA_OK that stops at the first CUDA error, and a device buffer.
#pragma once
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <cstdio>
#include <cstdlib>
#include <vector>

namespace dsinfer::attn_test {
inline int g_failures = 0;  // each test's main returns 1 when this is not 0
}  // namespace dsinfer::attn_test

#define CHECK(cond, ...)                                          \
  do {                                                            \
    if (!(cond)) {                                                \
      ++dsinfer::attn_test::g_failures;                           \
      std::printf("FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond); \
      std::printf(__VA_ARGS__);                                   \
      std::printf("\n");                                          \
    }                                                             \
  } while (0)
#define CUDA_OK(expr)                                                                          \
  do {                                                                                         \
    cudaError_t e_ = (expr);                                                                   \
    if (e_ != cudaSuccess) {                                                                   \
      std::printf("FATAL %s:%d: %s: %s\n", __FILE__, __LINE__, #expr, cudaGetErrorString(e_)); \
      std::exit(1);                                                                            \
    }                                                                                          \
  } while (0)

namespace dsinfer::attn_test {

// Device memory for `count` T (zeroed), optionally filled from a host vector; host() copies it back.
template <class T>
struct DevBuf {
  T* p = nullptr;
  size_t n = 0;
  explicit DevBuf(size_t count) : n(count) {
    CUDA_OK(cudaMalloc(&p, std::max<size_t>(count, 1) * sizeof(T)));
    CUDA_OK(cudaMemset(p, 0, std::max<size_t>(count, 1) * sizeof(T)));
  }
  DevBuf(const std::vector<T>& h) : DevBuf(h.size()) {
    CUDA_OK(cudaMemcpy(p, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice));
  }
  ~DevBuf() { cudaFree(p); }
  DevBuf(const DevBuf&) = delete;
  DevBuf& operator=(const DevBuf&) = delete;
  std::vector<T> host() const {
    std::vector<T> h(n);
    CUDA_OK(cudaMemcpy(h.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost));
    return h;
  }
};

// Block tables for several sequences sharing one cache pool: each sequence gets ceil(n_keys / block_tokens) blocks
// taken from a shuffled pool of that many plus `spare` blocks, so logical and physical order never agree.
// block_tokens 0 means contiguous (one sequence; `rows` = its keys, table unused).
struct PagedTables {
  bool paged = false;
  int64_t bt = 1, max_blocks = 0, max_keys = 0, T = 0, rows = 0;
  std::vector<int32_t> table;  // [n_seqs, max_blocks]
};
template <class Seqs, class Rng>
PagedTables make_paged_tables(const Seqs& seqs, int64_t block_tokens, int64_t spare, Rng& rng) {
  PagedTables t;
  t.paged = block_tokens > 0;
  t.bt = t.paged ? block_tokens : 1;
  int64_t total_blocks = 0;
  for (const auto& s : seqs) {
    t.max_blocks = std::max(t.max_blocks, (s.n_keys + t.bt - 1) / t.bt);
    total_blocks += (s.n_keys + t.bt - 1) / t.bt;
    t.max_keys = std::max(t.max_keys, s.n_keys);
    t.T += int64_t(s.positions.size());
  }
  const int64_t pool_blocks = total_blocks + spare;
  t.rows = t.paged ? pool_blocks * t.bt : t.max_keys;
  std::vector<int32_t> perm(static_cast<size_t>(pool_blocks));
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), rng);
  const int64_t n_seqs = int64_t(seqs.size());
  t.table.assign(static_cast<size_t>(std::max<int64_t>(1, n_seqs * t.max_blocks)), 0);
  for (int64_t s = 0, next = 0; s < n_seqs; ++s)
    for (int64_t b = 0; b < (seqs[size_t(s)].n_keys + t.bt - 1) / t.bt; ++b)
      t.table[size_t(s * t.max_blocks + b)] = perm[size_t(next++)];
  return t;
}

}  // namespace dsinfer::attn_test
