// A checkpoint tensor as the backends see it: dtype, shape, a zero-copy pointer into the mapped shard, and for
// FP8 weights the 128x128 block scales. Filled by the checkpoint binding (lib/model/deepseek_weights.cpp).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "util/dtype.hpp"

namespace dsinfer {

// What a backend made of a weight (its device copy, its repacked panels): an entry of that backend's table of
// prepared weights, found through this handle rather than by the weight's address. Filled by Backend::prepare_weight
// (and by a backend that prepares a weight on first use).
struct WeightHandle {
  uint64_t backend_id = 0;  // Backend::id() of the backend that issued it; 0 = not prepared
  int32_t index = -1;       // into that backend's table
};

// A tensor as stored in the checkpoint (zero-copy view into the mapped shard).
struct Weight {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;          // matrices: [out_features, in_features] (y = x·Wᵀ); vectors: [n]
  const uint8_t* data = nullptr;       // nullptr = absent
  const float* scale_inv = nullptr;    // F8_E4M3 only: F32 [ceil(out/128), ceil(in/128)], multiplied in
  int64_t block = 128;                 // FP8 weight block edge (weight_block_size)
  // The handle of the last backend that prepared this weight. Mutable: preparing a weight records where its
  // prepared form is without changing what the weight is. A backend checks that the entry was made from these
  // bytes and this shape (a Weight copied and then re-pointed at other rows carries a stale handle) and treats a
  // handle of another backend, or a stale one, as no handle.
  mutable WeightHandle prepared{};

  bool present() const { return data != nullptr; }
  int64_t rows() const { return shape.empty() ? 0 : shape[0]; }
  int64_t cols() const { return shape.size() > 1 ? shape[1] : 1; }
  int64_t numel() const { return rows() * cols(); }
};

}  // namespace dsinfer
