// The paged cache of what attention needs from earlier tokens (spec §3.5, §4.7): per layer, the MLA latent c
// (after kv_norm; in fp8 mode the FP8-simulated value) and the rotated rope key, and for V3.2 the indexer key
// (post-RoPE, in fp8 mode post-Hadamard e4m3 values) with its per-token scale.
//
// Storage is a pool of fixed-size blocks shared by all sequences of a model; a sequence is a block table. Forked
// sequences share their common blocks (a long system prompt is stored once) and copy a shared block only when
// they write into it. A pool stores one KvDtype: F32 (fp32 tensors), or BF16 / FP8 packed rows in the layouts of
// backend/kv_format.hpp (FP8: FlashMLA's 656-byte latent row and the 132-byte indexer key at V3.2's dimensions).
#pragma once
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "backend/backend.hpp"
#include "checkpoint/hf_config.hpp"

namespace dsinfer {

const char* kv_dtype_name(KvDtype d);  // "f32", "bf16", "fp8"

enum class KvTensor { Latent, RopeKey, IndexKey, IndexScale };

class KvBlockPool {
 public:
  // Limits (docs/errors.md): block ids are int32, and a block longer than 64Ki tokens has no use.
  static constexpr int64_t kMaxBlockTokens = int64_t(1) << 16;
  static constexpr int64_t kMaxPoolTokens = INT32_MAX;

  // Reserves n_blocks blocks of block_tokens tokens on the backend (pages are committed as they are written).
  // Throws Error(InvalidArgument) past the limits, Error(Unsupported) when the backend cannot hold that dtype,
  // Error(OutOfMemory) when the backend cannot reserve it.
  KvBlockPool(Backend& backend, const ModelConfig& cfg, int64_t n_blocks, int64_t block_tokens,
              KvDtype dtype = KvDtype::F32);

  // Bytes one token takes in one layer (latent + rope key, and for V3.2 the indexer key and its scale), and of those
  // the indexer key's with its scale (0 without an indexer).
  static int64_t bytes_per_token_layer(const ModelConfig& cfg, KvDtype dtype);
  static int64_t index_bytes_per_token_layer(const ModelConfig& cfg, KvDtype dtype);

  Backend& backend() const { return backend_; }
  int64_t block_tokens() const { return block_tokens_; }
  int64_t n_blocks() const { return n_blocks_; }
  int64_t used_blocks() const;
  size_t bytes_per_block() const { return bytes_per_block_; }  // all layers and tensors
  int64_t n_layers() const { return int64_t(layers_.size()); }
  KvDtype dtype() const { return dtype_; }
  // [n_blocks * block_tokens, width] f32; data is null for the indexer tensors of a model without indexer, and for
  // every tensor of a packed pool (the shape is still set: the ops check it).
  Tensor2D tensor(int64_t layer, KvTensor t) const;
  // A packed pool's latent rows (KvTensor::Latent: latent + rope key) or indexer keys (KvTensor::IndexKey: keys +
  // scales); dtype F32 for an F32 pool or a model without indexer.
  PackedKv packed(int64_t layer, KvTensor t) const;

  int32_t allocate();         // a block with one reference; throws Error(OutOfMemory) when none is free
  void retain(int32_t block);
  void release(int32_t block);
  int refs(int32_t block) const;
  // Tells the backend that the free blocks' rows are not needed (the CPU backend gives their pages back): the pool's
  // resident memory falls to what the blocks in use hold. A block is written before it is read, so nothing changes.
  void discard_free_blocks();

 private:
  friend class KvCache;
  struct Layer {
    Matrix latent, k_pe, index_k, index_scale;  // F32
    Buffer latent_rows, index_pages;            // packed
  };
  // Per layer, the byte ranges one block occupies in a packed pool: its latent rows and its indexer page.
  size_t latent_block_bytes() const;
  size_t index_block_bytes() const;
  Backend& backend_;
  KvDtype dtype_;
  int64_t kv_dim_ = 0, rope_dim_ = 0, index_dim_ = 0;
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
  // Moves an empty cache (no blocks) to another pool, e.g. of another dtype.
  void set_pool(std::shared_ptr<KvBlockPool> pool);
  const std::vector<int32_t>& block_table() const { return blocks_; }
  int64_t block_tokens() const { return pool_->block_tokens(); }
  int64_t physical_row(int64_t pos) const {
    return int64_t(blocks_[size_t(pos / pool_->block_tokens())]) * pool_->block_tokens() + pos % pool_->block_tokens();
  }
  Tensor2D tensor(int64_t layer, KvTensor t) const { return pool_->tensor(layer, t); }

  KvDtype dtype() const { return pool_->dtype(); }
  // Writes src's rows to positions [pos, pos + src.rows) (blocks prepared by prepare_append). F32 pools only.
  void write(int64_t layer, KvTensor t, int64_t pos, Tensor2D src);
  // Packed pools: stores rows through Backend::kv_pack (KvPackArgs says what is quantized where).
  void write_latent(int64_t layer, int64_t pos, Tensor2D latent, Tensor2D rope_key, bool ue8m0);
  void write_index_key(int64_t layer, int64_t pos, Tensor2D key, Tensor2D scales, bool key_is_e4m3, bool ue8m0);
  // Positions [0, size()) to / from host memory (save and restore), layer by layer. F32: per layer the latent,
  // rope key, indexer key and scale rows as fp32 (the version-1 file layout). Packed: per layer the size() latent
  // rows as stored, then for V3.2 each position's indexer key bytes followed by its 4-byte scale.
  void to_host(std::vector<uint8_t>& out) const;
  void from_host(const uint8_t* data, size_t n_bytes);  // expects size() already set by set_size
  size_t host_bytes() const;

 private:
  template <class F>
  void for_each_run(int64_t pos, int64_t n, F&& f) const;  // f(physical_row, logical_offset, count) per block run
  template <class F>
  void for_each_row_run(F&& f) const;  // f(rows, offset in the host layout) over positions [0, size) of every tensor
  template <class F>
  void for_each_packed_piece(F&& f) const;

  std::shared_ptr<KvBlockPool> pool_;
  int64_t capacity_ = 0, size_ = 0;
  std::vector<int32_t> blocks_;
};

}  // namespace dsinfer
