// The CPU backend's scratch arena (lib/backend/cpu/scratch_arena.cpp): grow-only per-worker buffers, owned by the
// backend and freed by release_memory() and with the backend (issue 19).
#include <catch2/catch.hpp>

#include <cstdint>

#include "backend/cpu/scratch_arena.hpp"

using namespace dsinfer;

TEST_CASE("a scratch buffer is per worker and slot, aligned, kept while it fits, and grows to a power of two",
          "[cpu][memory][scratch]") {
  ScratchArena arena(2);
  CHECK(arena.bytes() == 0);
  float* a = arena.get<float>(0, ScratchSlot::RopeCos, 10);
  REQUIRE(reinterpret_cast<uintptr_t>(a) % 64 == 0);
  CHECK(arena.bytes() == 64);  // 40 bytes, rounded up to 64
  for (int i = 0; i < 10; ++i) a[i] = float(i + 1);
  CHECK(arena.get<float>(0, ScratchSlot::RopeCos, 16) == a);  // fits: the same memory, contents kept
  CHECK(a[9] == 10.0f);
  float* other_slot = arena.get<float>(0, ScratchSlot::RopeSin, 10);
  float* other_worker = arena.get<float>(1, ScratchSlot::RopeCos, 10);
  CHECK(other_slot != a);
  CHECK(other_worker != a);
  CHECK(arena.bytes() == 3 * 64);
  float* grown = arena.get<float>(0, ScratchSlot::RopeCos, 17);  // 68 bytes: 128
  REQUIRE(reinterpret_cast<uintptr_t>(grown) % 64 == 0);
  CHECK(arena.bytes() == 4 * 64);
  grown[31] = 1.0f;  // all 128 bytes are usable, and a request that fits keeps them
  CHECK(arena.get<float>(0, ScratchSlot::RopeCos, 32) == grown);
  CHECK(grown[31] == 1.0f);
  arena.get<float>(1, ScratchSlot::RopeSin, 1000);  // 4000 bytes: 4096
  CHECK(arena.bytes() == 4 * 64 + 4096);
  arena.release();
  CHECK(arena.bytes() == 0);
  arena.get<float>(1, ScratchSlot::MlaKvB, 3);
  CHECK(arena.bytes() == 64);
}
