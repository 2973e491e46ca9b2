#include "backend/cpu/scratch_arena.hpp"

#include <algorithm>
#include <bit>
#include <cstdlib>

#include <fmt/format.h>

#include "dsinfer/error.hpp"

namespace dsinfer {

ScratchArena::ScratchArena(int workers)
    : workers_(workers), blocks_(size_t(std::max(workers, 1)) * size_t(ScratchSlot::kCount)) {}

ScratchArena::~ScratchArena() { release(); }

void ScratchArena::release() {
  for (Block& b : blocks_) {
    std::free(b.data);
    b = Block{};
  }
  bytes_.store(0, std::memory_order_relaxed);
}

void ScratchArena::grow(Block& b, size_t need) {
  // A power of two: the buffers sized by the context (a decode step's keys) need one more element per token, which
  // must not mean one allocation per token; and sizes that creep up reach the next size at the same points whatever
  // they started from. Capacity that is never written is never touched, so it costs address space only.
  const size_t bytes = std::bit_ceil(std::max<size_t>(need, 64));
  void* p = std::aligned_alloc(64, bytes);
  if (!p)
    throw Error(ErrorCode::OutOfMemory, fmt::format("cpu backend: cannot allocate {} bytes of scratch", bytes));
  std::free(b.data);
  bytes_.fetch_add(bytes - b.bytes, std::memory_order_relaxed);
  b = Block{p, bytes};
}

}  // namespace dsinfer
