// Recycles the CPU backend's activation buffers so that a decode step, after the first, takes its activation
// matrices from here rather than from the allocator: a released buffer goes to a free list by size and the next
// request of that size takes it back.
#pragma once
#include <atomic>
#include <cstddef>
#include <mutex>
#include <unordered_map>
#include <vector>

namespace dsinfer {

class BufferCache {
 public:
  // A new cache with one reference (the backend's). Buffers hold a reference each, so the cache outlives the
  // backend while any of its buffers is alive.
  static BufferCache* create();
  void release_ref();

  // 64-byte aligned memory of at least `bytes` (zeroed if asked); nullptr when the system has none. Free it with
  // BufferCache::free_block (a plain function, usable as a Buffer release callback).
  void* take(size_t bytes, bool zero);
  static void free_block(void* p);
  // Frees every cached block (blocks in use are not affected).
  void trim();
  // The bytes of the cached (free, kept for reuse) blocks.
  size_t cached_bytes();

 private:
  BufferCache() = default;
  void give_back(void* block, size_t rounded);

  std::mutex mutex_;
  std::unordered_map<size_t, std::vector<void*>> free_;  // by rounded size; blocks start at their header
  size_t cached_bytes_ = 0;
  std::atomic<int64_t> refs_{1};
};

}  // namespace dsinfer
