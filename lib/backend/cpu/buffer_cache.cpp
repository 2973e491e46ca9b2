#include "backend/cpu/buffer_cache.hpp"

#include <cstdint>
#include <cstdlib>
#include <cstring>

#include <sys/mman.h>
#include <unistd.h>

namespace dsinfer {

namespace {
// Each block starts with this header; the caller's memory begins kHeader bytes in (keeping 64-byte alignment).
struct Header {
  BufferCache* cache;
  size_t rounded;
};
constexpr size_t kHeader = 64;
static_assert(sizeof(Header) <= kHeader);
// Blocks above this size go back to the system (the KV pool, the activations of long prompts: recycling those by
// exact size would keep blocks of sizes that never come back and raise peak memory), and the cache keeps at most
// kMaxCached bytes: every activation of a decode step fits many times over. They are mapped and unmapped directly
// rather than taken from malloc: glibc serves such blocks from its heap once a large one has been freed, and the
// holes a long prompt's activations leave there kept 10-20 MB more resident at the peak (measured on a 512-token
// prefill of the 1.2 GB benchmark model) than the blocks alive at any moment.
constexpr size_t kMaxBlock = size_t(1) << 20;
constexpr size_t kMaxCached = size_t(64) << 20;

// Maps `bytes` of fresh memory for a block above kMaxBlock. One of at least a huge page (2 MB on x86-64) starts on a
// huge-page boundary and asks for transparent huge pages (under the system setting `madvise`, the default of Debian
// and Ubuntu, memory gets them only when asked): a long context's decode step scans every indexer key of every
// layer's pool and gathers latent rows at random, long after the weights' reads have evicted those pages' TLB
// entries, and with 4 KB pages the scan waits on the page walks (docs/design-log.md, "CPU kernels"). The cost: a
// block's partly used huge pages are resident whole once touched (the KV pool's: at most 2 MB more per layer and
// tensor).
void* map_block(size_t bytes) {
  constexpr size_t kHuge = size_t(2) << 20;
  if (bytes < kHuge) {
    void* m = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return m == MAP_FAILED ? nullptr : m;
  }
  // Map a huge page more than needed, then unmap the part before the first boundary and what follows the block.
  void* m = mmap(nullptr, bytes + kHuge, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (m == MAP_FAILED) return nullptr;
  const uintptr_t start = uintptr_t(m), aligned = (start + kHuge - 1) / kHuge * kHuge;
  const uintptr_t page = uintptr_t(sysconf(_SC_PAGESIZE)), mapped_end = start + bytes + kHuge;
  const uintptr_t end = (aligned + bytes + page - 1) / page * page;  // <= mapped_end: aligned < start + kHuge
  if (aligned > start) munmap(m, aligned - start);
  if (mapped_end > end) munmap(reinterpret_cast<void*>(end), mapped_end - end);
#ifdef MADV_HUGEPAGE
  (void)madvise(reinterpret_cast<void*>(aligned), bytes, MADV_HUGEPAGE);  // a hint: without THP, 4 KB pages
#endif
  return reinterpret_cast<void*>(aligned);
}
}  // namespace

BufferCache* BufferCache::create() { return new BufferCache(); }

void BufferCache::release_ref() {
  if (refs_.fetch_sub(1, std::memory_order_acq_rel) != 1) return;
  for (auto& [size, blocks] : free_)
    for (void* b : blocks) std::free(b);
  delete this;
}

void* BufferCache::take(size_t bytes, bool zero) {
  const size_t rounded = (std::max<size_t>(bytes, 1) + 63) / 64 * 64;
  void* block = nullptr;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = free_.find(rounded);
    if (it != free_.end() && !it->second.empty()) {
      block = it->second.back();
      it->second.pop_back();
      cached_bytes_ -= rounded;
    }
  }
  if (!block && rounded > kMaxBlock) {
    block = map_block(rounded + kHeader);  // page-aligned, so the caller's memory is 64-byte aligned too
    if (!block) return nullptr;
  }
  if (!block) {
    block = std::aligned_alloc(64, rounded + kHeader);
    if (!block) return nullptr;
    // Fresh memory from the system reads as zero only by accident: zero it when asked, like recycled memory.
  }
  refs_.fetch_add(1, std::memory_order_relaxed);
  Header h{this, rounded};
  std::memcpy(block, &h, sizeof h);
  void* p = static_cast<char*>(block) + kHeader;
  if (zero) std::memset(p, 0, rounded);
  return p;
}

void BufferCache::free_block(void* p) {
  if (!p) return;
  void* block = static_cast<char*>(p) - kHeader;
  Header h;
  std::memcpy(&h, block, sizeof h);
  h.cache->give_back(block, h.rounded);
}

void BufferCache::trim() {
  std::unordered_map<size_t, std::vector<void*>> cached;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    cached.swap(free_);
    cached_bytes_ = 0;
  }
  for (auto& [size, blocks] : cached)
    for (void* b : blocks) std::free(b);  // only blocks up to kMaxBlock are cached, and those come from malloc
}

size_t BufferCache::cached_bytes() {
  std::lock_guard<std::mutex> lock(mutex_);
  return cached_bytes_;
}

void BufferCache::give_back(void* block, size_t rounded) {
  bool keep = false;
  if (rounded <= kMaxBlock) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (cached_bytes_ + rounded <= kMaxCached) {
      free_[rounded].push_back(block);
      cached_bytes_ += rounded;
      keep = true;
    }
  }
  if (!keep) {
    if (rounded > kMaxBlock) munmap(block, rounded + kHeader);
    else std::free(block);
  }
  release_ref();
}

}  // namespace dsinfer
