#include "kv/kv_cache.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>

#include "backend/kv_format.hpp"
#include "dsinfer/error.hpp"

namespace dsinfer {

namespace {
Matrix lazy_matrix(Backend& be, int64_t rows, int64_t cols) {
  // Checked: a product that wrapped would reserve a small buffer that the block table then indexes far past.
  int64_t elems = 0, bytes = 0;
  if (cols < 0 || __builtin_mul_overflow(rows, cols, &elems) || __builtin_mul_overflow(elems, int64_t(sizeof(float)), &bytes))
    throw Error(ErrorCode::OutOfMemory, fmt::format("a KV pool tensor of {} x {} floats is larger than memory", rows, cols));
  Matrix m;
  m.buffer = be.allocate(size_t(bytes), /*zero=*/false);
  m.view = Tensor2D{static_cast<float*>(m.buffer.data()), rows, cols, cols};
  return m;
}
}  // namespace

const char* kv_dtype_name(KvDtype d) {
  return d == KvDtype::FP8 ? "fp8" : d == KvDtype::BF16 ? "bf16" : "f32";
}

int64_t KvBlockPool::bytes_per_token_layer(const ModelConfig& cfg, KvDtype dtype) {
  return kvfmt::latent_row_bytes(dtype, cfg.kv_lora_rank, cfg.qk_rope_head_dim) +
         index_bytes_per_token_layer(cfg, dtype);
}

int64_t KvBlockPool::index_bytes_per_token_layer(const ModelConfig& cfg, KvDtype dtype) {
  return cfg.has_indexer() ? kvfmt::index_key_bytes(dtype, cfg.index_head_dim) : 0;
}

KvBlockPool::KvBlockPool(Backend& backend, const ModelConfig& cfg, int64_t n_blocks, int64_t block_tokens,
                         KvDtype dtype)
    : backend_(backend),
      dtype_(dtype),
      kv_dim_(cfg.kv_lora_rank),
      rope_dim_(cfg.qk_rope_head_dim),
      index_dim_(cfg.has_indexer() ? cfg.index_head_dim : 0),
      n_blocks_(n_blocks),
      block_tokens_(block_tokens) {
  if (n_blocks <= 0 || block_tokens <= 0 || block_tokens > kMaxBlockTokens || n_blocks > kMaxPoolTokens)
    throw Error(ErrorCode::InvalidArgument, fmt::format("KV pool of {} blocks of {} tokens (1 to {} blocks of 1 to {} tokens)",
                                                        n_blocks, block_tokens, kMaxPoolTokens, kMaxBlockTokens));
  if (!backend.supports_kv_dtype(dtype))
    throw Error(ErrorCode::Unsupported, fmt::format("the {} backend cannot hold a {} KV cache yet (use kv_cache_dtype "
                                                    "f32)", backend.name(), kv_dtype_name(dtype)));
  const int64_t rows = n_blocks * block_tokens;  // < 2^47: no overflow
  layers_.resize(size_t(cfg.num_hidden_layers));
  for (auto& l : layers_) {
    if (dtype == KvDtype::F32) {
      l.latent = lazy_matrix(backend, rows, cfg.kv_lora_rank);
      l.k_pe = lazy_matrix(backend, rows, cfg.qk_rope_head_dim);
      if (cfg.has_indexer()) {
        l.index_k = lazy_matrix(backend, rows, cfg.index_head_dim);
        l.index_scale = lazy_matrix(backend, rows, 1);
      }
    } else {
      l.latent_rows = backend.allocate(latent_block_bytes() * size_t(n_blocks), /*zero=*/false);
      if (index_dim_ > 0) l.index_pages = backend.allocate(index_block_bytes() * size_t(n_blocks), /*zero=*/false);
    }
  }
  bytes_per_block_ = size_t(bytes_per_token_layer(cfg, dtype)) * size_t(block_tokens) * layers_.size();
  refs_.assign(size_t(n_blocks), 0);
  for (int64_t b = n_blocks - 1; b >= 0; --b) free_.push_back(int32_t(b));
}

size_t KvBlockPool::latent_block_bytes() const {
  return size_t(kvfmt::latent_row_bytes(dtype_, kv_dim_, rope_dim_) * block_tokens_);
}
size_t KvBlockPool::index_block_bytes() const {
  return index_dim_ > 0 ? size_t(kvfmt::index_key_bytes(dtype_, index_dim_) * block_tokens_) : 0;
}

PackedKv KvBlockPool::packed(int64_t layer, KvTensor t) const {
  const Layer& l = layers_[size_t(layer)];
  PackedKv p;
  if (dtype_ == KvDtype::F32) return p;
  if (t == KvTensor::Latent || t == KvTensor::RopeKey) {
    p.dtype = dtype_;
    p.data = static_cast<uint8_t*>(l.latent_rows.data());
    p.dim = kv_dim_;
    p.rope_dim = rope_dim_;
  } else if (index_dim_ > 0) {
    p.dtype = dtype_;
    p.data = static_cast<uint8_t*>(l.index_pages.data());
    p.dim = index_dim_;
    p.page_tokens = block_tokens_;
  }
  return p;
}

Tensor2D KvBlockPool::tensor(int64_t layer, KvTensor t) const {
  const Layer& l = layers_[size_t(layer)];
  if (dtype_ != KvDtype::F32) {  // shapes only: the data is packed()
    const int64_t rows = n_blocks_ * block_tokens_;
    switch (t) {
      case KvTensor::Latent: return Tensor2D{nullptr, rows, kv_dim_, kv_dim_};
      case KvTensor::RopeKey: return Tensor2D{nullptr, rows, rope_dim_, rope_dim_};
      case KvTensor::IndexKey: return index_dim_ ? Tensor2D{nullptr, rows, index_dim_, index_dim_} : Tensor2D{};
      case KvTensor::IndexScale: return index_dim_ ? Tensor2D{nullptr, rows, 1, 1} : Tensor2D{};
    }
  }
  switch (t) {
    case KvTensor::Latent: return l.latent.view;
    case KvTensor::RopeKey: return l.k_pe.view;
    case KvTensor::IndexKey: return l.index_k.view;
    case KvTensor::IndexScale: return l.index_scale.view;
  }
  return {};
}

int64_t KvBlockPool::used_blocks() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return n_blocks_ - int64_t(free_.size());
}

int32_t KvBlockPool::allocate() {
  std::lock_guard<std::mutex> lock(mutex_);
  if (free_.empty())
    throw Error(ErrorCode::OutOfMemory,
                fmt::format("KV cache full: all {} blocks of {} tokens of the pool are in use (raise "
                            "ModelLoadParams::kv_cache_tokens)", n_blocks_, block_tokens_));
  const int32_t b = free_.back();
  free_.pop_back();
  refs_[size_t(b)] = 1;
  return b;
}

void KvBlockPool::retain(int32_t b) {
  std::lock_guard<std::mutex> lock(mutex_);
  ++refs_[size_t(b)];
}

void KvBlockPool::release(int32_t b) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (--refs_[size_t(b)] == 0) free_.push_back(b);
}

void KvBlockPool::discard_free_blocks() {
  std::lock_guard<std::mutex> lock(mutex_);
  for (int32_t b : free_)
    for (const Layer& l : layers_) {
      if (dtype_ != KvDtype::F32) {
        backend_.discard(static_cast<uint8_t*>(l.latent_rows.data()) + size_t(b) * latent_block_bytes(),
                         latent_block_bytes());
        if (index_dim_ > 0)
          backend_.discard(static_cast<uint8_t*>(l.index_pages.data()) + size_t(b) * index_block_bytes(),
                           index_block_bytes());
        continue;
      }
      for (const Matrix* m : {&l.latent, &l.k_pe, &l.index_k, &l.index_scale}) {
        const Tensor2D& v = m->view;
        if (!v.data) continue;
        backend_.discard(v.row(int64_t(b) * block_tokens_), size_t(block_tokens_ * v.ld) * sizeof(float));
      }
    }
}

int KvBlockPool::refs(int32_t b) const {
  std::lock_guard<std::mutex> lock(mutex_);
  return refs_[size_t(b)];
}

KvCache::KvCache(std::shared_ptr<KvBlockPool> pool, int64_t capacity) : pool_(std::move(pool)), capacity_(capacity) {
  if (capacity <= 0) throw Error(ErrorCode::InvalidArgument, fmt::format("KV cache capacity must be positive, got {}", capacity));
  // The whole block table up front (a sequence never holds more blocks than the pool has), so that a decode step
  // that starts a new block does not grow it.
  const int64_t B = pool_->block_tokens();
  blocks_.reserve(size_t(std::min(capacity / B + (capacity % B != 0), pool_->n_blocks())));  // no overflow near INT64_MAX
}

void KvCache::set_pool(std::shared_ptr<KvBlockPool> pool) {
  if (!blocks_.empty() || size_ != 0) throw Error(ErrorCode::Internal, "KvCache::set_pool on a cache holding blocks");
  pool_ = std::move(pool);
}

KvCache::~KvCache() {
  for (int32_t b : blocks_) pool_->release(b);
}

std::unique_ptr<KvCache> KvCache::fork(int64_t capacity) const {
  if (capacity < size_) throw Error(ErrorCode::InvalidArgument, "a fork needs a capacity of at least the cached tokens");
  auto c = std::make_unique<KvCache>(pool_, capacity);
  for (int32_t b : blocks_) pool_->retain(b);
  c->blocks_ = blocks_;
  c->size_ = size_;
  return c;
}

void KvCache::truncate(int64_t n) {
  if (n < 0 || n > size_)
    throw Error(ErrorCode::InvalidArgument, fmt::format("cannot truncate a KV cache of {} tokens to {}", size_, n));
  size_ = n;
  const size_t keep = size_t((n + block_tokens() - 1) / block_tokens());
  while (blocks_.size() > keep) {
    pool_->release(blocks_.back());
    blocks_.pop_back();
  }
}

void KvCache::set_size(int64_t n) {
  if (n < 0 || n > int64_t(blocks_.size()) * block_tokens()) throw Error(ErrorCode::Internal, "KV cache size out of range");
  size_ = n;
}

void KvCache::prepare_append(int64_t n) {
  if (size_ + n > capacity_)
    throw Error(ErrorCode::OutOfMemory, fmt::format("KV cache full: {} tokens cached + {} new > capacity {}", size_, n, capacity_));
  const int64_t B = block_tokens();
  // Copy on write: the block holding position size_ is shared and partly filled.
  if (size_ % B != 0) {
    const size_t bi = size_t(size_ / B);
    const int32_t old = blocks_[bi];
    if (pool_->refs(old) > 1) {
      const int32_t fresh = pool_->allocate();
      const int64_t filled = size_ % B;
      for (int64_t l = 0; l < pool_->n_layers(); ++l) {
        if (dtype() != KvDtype::F32) {
          // Packed: the filled latent rows and the whole indexer page (keys and scales are in separate parts of it).
          const PackedKv lat = pool_->packed(l, KvTensor::Latent), idx = pool_->packed(l, KvTensor::IndexKey);
          const size_t row_bytes = pool_->latent_block_bytes() / size_t(B), page = pool_->index_block_bytes();
          pool_->backend().copy_bytes(lat.data + size_t(fresh) * size_t(B) * row_bytes,
                                      lat.data + size_t(old) * size_t(B) * row_bytes, size_t(filled) * row_bytes);
          if (idx.packed())
            pool_->backend().copy_bytes(idx.data + size_t(fresh) * page, idx.data + size_t(old) * page, page);
          continue;
        }
        for (KvTensor t : {KvTensor::Latent, KvTensor::RopeKey, KvTensor::IndexKey, KvTensor::IndexScale}) {
          const Tensor2D v = pool_->tensor(l, t);
          if (v.data) pool_->backend().copy(v.rows_slice(int64_t(fresh) * B, filled), v.rows_slice(int64_t(old) * B, filled));
        }
      }
      blocks_[bi] = fresh;
      pool_->release(old);
    }
  }
  const size_t need = size_t((size_ + n + B - 1) / B), had = blocks_.size();
  blocks_.reserve(need);  // already reserved by the constructor; keeps the push_back below from throwing
  try {
    while (blocks_.size() < need) blocks_.push_back(pool_->allocate());
  } catch (...) {
    for (; blocks_.size() > had; blocks_.pop_back()) pool_->release(blocks_.back());
    throw;
  }
}

template <class F>
void KvCache::for_each_run(int64_t pos, int64_t n, F&& f) const {
  const int64_t B = block_tokens();
  int64_t done = 0;
  while (done < n) {
    const int64_t p = pos + done;
    const int64_t run = std::min(n - done, B - p % B);
    f(physical_row(p), done, run);
    done += run;
  }
}

void KvCache::write(int64_t layer, KvTensor t, int64_t pos, Tensor2D src) {
  if (dtype() != KvDtype::F32) throw Error(ErrorCode::Internal, "KvCache::write on a packed cache");
  const Tensor2D dst = pool_->tensor(layer, t);
  for_each_run(pos, src.rows, [&](int64_t row, int64_t off, int64_t count) {
    pool_->backend().copy(dst.rows_slice(row, count), src.rows_slice(off, count));
  });
}

void KvCache::write_latent(int64_t layer, int64_t pos, Tensor2D latent, Tensor2D rope_key, bool ue8m0) {
  KvPackArgs a;
  a.dst = pool_->packed(layer, KvTensor::Latent);
  a.latent = true;
  a.ue8m0 = ue8m0;
  for_each_run(pos, latent.rows, [&](int64_t row, int64_t off, int64_t count) {
    a.src = latent.rows_slice(off, count);
    a.extra = rope_key.rows_slice(off, count);
    a.row0 = row;
    pool_->backend().kv_pack(a);
  });
}

void KvCache::write_index_key(int64_t layer, int64_t pos, Tensor2D key, Tensor2D scales, bool key_is_e4m3,
                              bool ue8m0) {
  KvPackArgs a;
  a.dst = pool_->packed(layer, KvTensor::IndexKey);
  a.latent = false;
  a.ue8m0 = ue8m0;
  a.key_is_e4m3 = key_is_e4m3;
  for_each_run(pos, key.rows, [&](int64_t row, int64_t off, int64_t count) {
    a.src = key.rows_slice(off, count);
    a.extra = scales.data ? scales.rows_slice(off, count) : Tensor2D{};
    a.row0 = row;
    pool_->backend().kv_pack(a);
  });
}

size_t KvCache::host_bytes() const {
  return size_t(size_) * size_t(pool_->n_layers()) * (pool_->bytes_per_block() / size_t(pool_->n_layers()) /
                                                      size_t(block_tokens()));
}

template <class F>
void KvCache::for_each_row_run(F&& f) const {
  size_t at = 0;  // offset of the current tensor in the host layout, in floats
  for (int64_t l = 0; l < pool_->n_layers(); ++l)
    for (KvTensor t : {KvTensor::Latent, KvTensor::RopeKey, KvTensor::IndexKey, KvTensor::IndexScale}) {
      const Tensor2D v = pool_->tensor(l, t);
      if (!v.data) continue;
      for_each_run(0, size_, [&](int64_t row, int64_t off, int64_t count) {
        f(v.rows_slice(row, count), at + size_t(off * v.cols));
      });
      at += size_t(size_ * v.cols);
    }
}

// Packed pools: f(device pointer, host offset, bytes) for every piece of positions [0, size), in the host layout.
template <class F>
void KvCache::for_each_packed_piece(F&& f) const {
  size_t at = 0;
  for (int64_t l = 0; l < pool_->n_layers(); ++l) {
    const PackedKv lat = pool_->packed(l, KvTensor::Latent), idx = pool_->packed(l, KvTensor::IndexKey);
    const size_t row_bytes = size_t(kvfmt::latent_row_bytes(lat.dtype, lat.dim, lat.rope_dim));
    for_each_run(0, size_, [&](int64_t row, int64_t off, int64_t count) {
      f(kvfmt::latent_row(lat, row), at + size_t(off) * row_bytes, size_t(count) * row_bytes);
    });
    at += size_t(size_) * row_bytes;
    if (!idx.packed()) continue;
    const size_t key_bytes = size_t(kvfmt::index_key_bytes(idx.dtype, idx.dim)) - 4;
    for (int64_t p = 0; p < size_; ++p) {
      const int64_t row = physical_row(p);
      f(kvfmt::index_key_values(idx, row), at, key_bytes);
      f(kvfmt::index_key_scale(idx, row), at + key_bytes, size_t(4));
      at += key_bytes + 4;
    }
  }
}

void KvCache::to_host(std::vector<uint8_t>& out) const {
  out.resize(host_bytes());
  Backend& be = pool_->backend();
  if (dtype() == KvDtype::F32) {
    float* f = reinterpret_cast<float*>(out.data());
    for_each_row_run([&](Tensor2D rows, size_t at) { be.to_host(f + at, rows); });
    return;
  }
  for_each_packed_piece([&](const uint8_t* dev, size_t at, size_t n) { be.bytes_to_host(out.data() + at, dev, n); });
}

void KvCache::from_host(const uint8_t* data, size_t n_bytes) {
  if (n_bytes != host_bytes()) throw Error(ErrorCode::Format, "saved KV cache has the wrong size for this model");
  Backend& be = pool_->backend();
  if (dtype() == KvDtype::F32) {
    // The file's bytes need not be float-aligned: copied row run by row run through an aligned buffer.
    std::vector<float> f(n_bytes / sizeof(float));
    if (n_bytes) std::memcpy(f.data(), data, n_bytes);  // an empty sequence may come with no buffer at all
    for_each_row_run([&](Tensor2D rows, size_t at) { be.from_host(rows, f.data() + at); });
    return;
  }
  for_each_packed_piece([&](uint8_t* dev, size_t at, size_t n) { be.bytes_from_host(dev, data + at, n); });
}

}  // namespace dsinfer
