// The per-sequence cache of what attention needs from earlier tokens (spec §3.5, §4.7): per layer, the MLA
// latent c (after kv_norm; in fp8 mode the FP8-simulated value) and the rotated rope key, and for V3.2 the
// indexer key (post-RoPE, in fp8 mode post-Hadamard e4m3 values) with its per-token scale.
// Contiguous for now; the paged layout with prefix sharing comes with sessions (issue 4).
#pragma once
#include <cstdint>
#include <vector>

#include "backend/backend.hpp"
#include "checkpoint/hf_config.hpp"

namespace dsinfer {

class KvCache {
 public:
  // Allocates room for `capacity` tokens on the backend.
  KvCache(Backend& backend, const ModelConfig& cfg, int64_t capacity);

  int64_t capacity() const { return capacity_; }
  int64_t size() const { return size_; }  // tokens written so far = position of the next token
  // Forgets tokens from position n on (n <= size()); their rows are overwritten by later writes.
  void truncate(int64_t n);
  void set_size(int64_t n);  // used by the model after a forward wrote rows [size, n)

  // Copies rows [0, n) of every layer of `src` (same model, capacity >= n) into this cache; size becomes n.
  void copy_from(Backend& backend, const KvCache& src, int64_t n);
  // Every tensor of the first size() rows, layer by layer, in a fixed order (for saving and restoring).
  std::vector<Tensor2D> tensors() const;

  Tensor2D latent(int64_t layer) const { return layers_[size_t(layer)].latent.view; }      // [cap, kv_lora_rank]
  Tensor2D k_pe(int64_t layer) const { return layers_[size_t(layer)].k_pe.view; }          // [cap, rope_dim]
  Tensor2D index_k(int64_t layer) const { return layers_[size_t(layer)].index_k.view; }    // [cap, index_head_dim]
  Tensor2D index_scale(int64_t layer) const { return layers_[size_t(layer)].index_scale.view; }  // [cap, 1]

 private:
  struct Layer {
    Matrix latent, k_pe, index_k, index_scale;
  };
  int64_t capacity_ = 0, size_ = 0;
  std::vector<Layer> layers_;
};

}  // namespace dsinfer
