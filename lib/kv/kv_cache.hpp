// The paged cache of what attention needs from earlier tokens (spec §3.5, §4.7): per layer, the MLA latent c
// (after kv_norm; in fp8 mode the FP8-simulated value) and the rotated rope key, and for V3.2 the indexer key
// (post-RoPE, in fp8 mode post-Hadamard e4m3 values) with its per-token scale.
//
// Storage is a pool of fixed-size blocks shared by all sequences of a model; a sequence is a block table. Forked
// sequences share their common blocks (a long system prompt is stored once) and copy a shared block only when
// they write into it. Values are fp32 here; the FP8 656/132-byte formats belong to the GPU backend.
#pragma once
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "backend/backend.hpp"
#include "checkpoint/hf_config.hpp"

namespace dsinfer {

enum class KvTensor { Latent, RopeKey, IndexKey, IndexScale };

class KvBlockPool {
 public:
  // Limits (docs/errors.md): block ids are int32, and a block longer than 64Ki tokens has no use.
  static constexpr int64_t kMaxBlockTokens = int64_t(1) << 16;
  static constexpr int64_t kMaxPoolTokens = INT32_MAX;

  // Reserves n_blocks blocks of block_tokens tokens on the backend (pages are committed as they are written).
  // Throws Error(InvalidArgument) past the limits, Error(OutOfMemory) when the backend cannot reserve it.
  KvBlockPool(Backend& backend, const ModelConfig& cfg, int64_t n_blocks, int64_t block_tokens);

  Backend& backend() const { return backend_; }
  int64_t block_tokens() const { return block_tokens_; }
  int64_t n_blocks() const { return n_blocks_; }
  int64_t used_blocks() const;
  size_t bytes_per_block() const { return bytes_per_block_; }  // all layers and tensors
  int64_t floats_per_token() const;                             // all layers and tensors (KvCache::to_host)
  int64_t n_layers() const { return int64_t(layers_.size()); }
  // [n_blocks * block_tokens, width] f32; data is null for the indexer tensors of a model without indexer.
  Tensor2D tensor(int64_t layer, KvTensor t) const;

  int32_t allocate();         // a block with one reference; throws Error(OutOfMemory) when none is free
  void retain(int32_t block);
  void release(int32_t block);
  int refs(int32_t block) const;
  // Tells the backend that the free blocks' rows are not needed (the CPU backend gives their pages back): the pool's
  // resident memory falls to what the blocks in use hold. A block is written before it is read, so nothing changes.
  void discard_free_blocks();

 private:
  struct Layer {
    Matrix latent, k_pe, index_k, index_scale;
  };
  Backend& backend_;
  int64_t n_blocks_, block_tokens_;
  size_t bytes_per_block_ = 0;
  std::vector<Layer> layers_;
  mutable std::mutex mutex_;
  std::vector<int> refs_;
  std::vector<int32_t> free_;
};

// One sequence's cache: a block table over a pool.
class KvCache {
 public:
  KvCache(std::shared_ptr<KvBlockPool> pool, int64_t capacity);
  ~KvCache();
  KvCache(const KvCache&) = delete;
  KvCache& operator=(const KvCache&) = delete;

  // A cache holding the same tokens, sharing every block with this one (capacity >= size()).
  std::unique_ptr<KvCache> fork(int64_t capacity) const;

  int64_t capacity() const { return capacity_; }
  int64_t size() const { return size_; }  // tokens written so far = position of the next token
  void truncate(int64_t n);               // forgets tokens from position n on; frees blocks no longer used
  void set_size(int64_t n);               // after a forward wrote rows [size, n)

  // Makes positions [size, size + n) writable: allocates blocks and copies a shared block the new tokens would
  // write into (copy on write). Throws Error(OutOfMemory) when the capacity or the pool is exhausted; on error
  // the cache is unchanged as far as its tokens go.
  void prepare_append(int64_t n);

  KvBlockPool& pool() const { return *pool_; }
  const std::vector<int32_t>& block_table() const { return blocks_; }
  int64_t block_tokens() const { return pool_->block_tokens(); }
  int64_t physical_row(int64_t pos) const {
    return int64_t(blocks_[size_t(pos / pool_->block_tokens())]) * pool_->block_tokens() + pos % pool_->block_tokens();
  }
  Tensor2D tensor(int64_t layer, KvTensor t) const { return pool_->tensor(layer, t); }

  // Writes src's rows to positions [pos, pos + src.rows) (blocks prepared by prepare_append).
  void write(int64_t layer, KvTensor t, int64_t pos, Tensor2D src);
  // Positions [0, size()) of every present tensor, layer by layer, to / from host memory (save and restore).
  void to_host(std::vector<float>& out) const;
  void from_host(const float* data, size_t n_floats);  // expects size() already set by set_size
  size_t host_floats() const;

 private:
  template <class F>
  void for_each_run(int64_t pos, int64_t n, F&& f) const;  // f(physical_row, logical_offset, count) per block run
  template <class F>
  void for_each_row_run(F&& f) const;  // f(rows, offset in the host layout) over positions [0, size) of every tensor

  std::shared_ptr<KvBlockPool> pool_;
  int64_t capacity_ = 0, size_ = 0;
  std::vector<int32_t> blocks_;
};

}  // namespace dsinfer
