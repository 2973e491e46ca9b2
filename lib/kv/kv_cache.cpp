#include "kv/kv_cache.hpp"

#include <fmt/format.h>

#include <algorithm>

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

KvBlockPool::KvBlockPool(Backend& backend, const ModelConfig& cfg, int64_t n_blocks, int64_t block_tokens)
    : backend_(backend), n_blocks_(n_blocks), block_tokens_(block_tokens) {
  if (n_blocks <= 0 || block_tokens <= 0 || block_tokens > kMaxBlockTokens || n_blocks > kMaxPoolTokens)
    throw Error(ErrorCode::InvalidArgument, fmt::format("KV pool of {} blocks of {} tokens (1 to {} blocks of 1 to {} tokens)",
                                                        n_blocks, block_tokens, kMaxPoolTokens, kMaxBlockTokens));
  const int64_t rows = n_blocks * block_tokens;  // < 2^47: no overflow
  layers_.resize(size_t(cfg.num_hidden_layers));
  int64_t width = cfg.kv_lora_rank + cfg.qk_rope_head_dim;
  for (auto& l : layers_) {
    l.latent = lazy_matrix(backend, rows, cfg.kv_lora_rank);
    l.k_pe = lazy_matrix(backend, rows, cfg.qk_rope_head_dim);
    if (cfg.has_indexer()) {
      l.index_k = lazy_matrix(backend, rows, cfg.index_head_dim);
      l.index_scale = lazy_matrix(backend, rows, 1);
    }
  }
  if (cfg.has_indexer()) width += cfg.index_head_dim + 1;
  bytes_per_block_ = size_t(width) * sizeof(float) * size_t(block_tokens) * layers_.size();
  refs_.assign(size_t(n_blocks), 0);
  for (int64_t b = n_blocks - 1; b >= 0; --b) free_.push_back(int32_t(b));
}

Tensor2D KvBlockPool::tensor(int64_t layer, KvTensor t) const {
  const Layer& l = layers_[size_t(layer)];
  switch (t) {
    case KvTensor::Latent: return l.latent.view;
    case KvTensor::RopeKey: return l.k_pe.view;
    case KvTensor::IndexKey: return l.index_k.view;
    case KvTensor::IndexScale: return l.index_scale.view;
  }
  return {};
}

int64_t KvBlockPool::floats_per_token() const {
  int64_t n = 0;
  for (int64_t l = 0; l < n_layers(); ++l)
    for (KvTensor t : {KvTensor::Latent, KvTensor::RopeKey, KvTensor::IndexKey, KvTensor::IndexScale}) {
      const Tensor2D v = tensor(l, t);
      if (v.data) n += v.cols;
    }
  return n;
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
    for (const Layer& l : layers_)
      for (const Matrix* m : {&l.latent, &l.k_pe, &l.index_k, &l.index_scale}) {
        const Tensor2D& v = m->view;
        if (!v.data) continue;
        backend_.discard(v.row(int64_t(b) * block_tokens_), size_t(block_tokens_ * v.ld) * sizeof(float));
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
      for (int64_t l = 0; l < pool_->n_layers(); ++l)
        for (KvTensor t : {KvTensor::Latent, KvTensor::RopeKey, KvTensor::IndexKey, KvTensor::IndexScale}) {
          const Tensor2D v = pool_->tensor(l, t);
          if (v.data) pool_->backend().copy(v.rows_slice(int64_t(fresh) * B, filled), v.rows_slice(int64_t(old) * B, filled));
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
  const Tensor2D dst = pool_->tensor(layer, t);
  for_each_run(pos, src.rows, [&](int64_t row, int64_t off, int64_t count) {
    pool_->backend().copy(dst.rows_slice(row, count), src.rows_slice(off, count));
  });
}

size_t KvCache::host_floats() const {
  size_t n = 0;
  for (int64_t l = 0; l < pool_->n_layers(); ++l)
    for (KvTensor t : {KvTensor::Latent, KvTensor::RopeKey, KvTensor::IndexKey, KvTensor::IndexScale}) {
      const Tensor2D v = pool_->tensor(l, t);
      if (v.data) n += size_t(size_ * v.cols);
    }
  return n;
}

template <class F>
void KvCache::for_each_row_run(F&& f) const {
  size_t at = 0;  // offset of the current tensor in the host layout
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

void KvCache::to_host(std::vector<float>& out) const {
  out.resize(host_floats());
  for_each_row_run([&](Tensor2D rows, size_t at) { pool_->backend().to_host(out.data() + at, rows); });
}

void KvCache::from_host(const float* data, size_t n_floats) {
  if (n_floats != host_floats()) throw Error(ErrorCode::Format, "saved KV cache has the wrong size for this model");
  for_each_row_run([&](Tensor2D rows, size_t at) { pool_->backend().from_host(rows, data + at); });
}

}  // namespace dsinfer
