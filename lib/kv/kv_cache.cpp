#include "kv/kv_cache.hpp"

#include <fmt/format.h>

#include "dsinfer/error.hpp"

namespace dsinfer {

KvCache::KvCache(Backend& backend, const ModelConfig& cfg, int64_t capacity) : capacity_(capacity) {
  if (capacity <= 0) throw Error(ErrorCode::InvalidArgument, fmt::format("KV cache capacity must be positive, got {}", capacity));
  layers_.resize(size_t(cfg.num_hidden_layers));
  for (auto& l : layers_) {
    l.latent = backend.matrix(capacity, cfg.kv_lora_rank);
    l.k_pe = backend.matrix(capacity, cfg.qk_rope_head_dim);
    if (cfg.has_indexer()) {
      l.index_k = backend.matrix(capacity, cfg.index_head_dim);
      l.index_scale = backend.matrix(capacity, 1);
    }
  }
}

std::vector<Tensor2D> KvCache::tensors() const {
  std::vector<Tensor2D> out;
  for (const auto& l : layers_)
    for (const Matrix* m : {&l.latent, &l.k_pe, &l.index_k, &l.index_scale})
      if (m->view.data) out.push_back(m->view.rows_slice(0, size_));
  return out;
}

void KvCache::copy_from(Backend& backend, const KvCache& src, int64_t n) {
  if (n > capacity_ || n > src.size_ || layers_.size() != src.layers_.size())
    throw Error(ErrorCode::InvalidArgument, fmt::format("cannot copy {} cached tokens into a cache of capacity {}", n, capacity_));
  for (size_t i = 0; i < layers_.size(); ++i) {
    const Layer& s = src.layers_[i];
    Layer& d = layers_[i];
    for (auto [dm, sm] : {std::pair{&d.latent, &s.latent}, {&d.k_pe, &s.k_pe}, {&d.index_k, &s.index_k},
                          {&d.index_scale, &s.index_scale}})
      if (sm->view.data) backend.copy(dm->view.rows_slice(0, n), sm->view.rows_slice(0, n));
  }
  size_ = n;
}

void KvCache::truncate(int64_t n) {
  if (n < 0 || n > size_)
    throw Error(ErrorCode::InvalidArgument, fmt::format("cannot truncate a KV cache of {} tokens to {}", size_, n));
  size_ = n;
}

void KvCache::set_size(int64_t n) {
  if (n < 0 || n > capacity_) throw Error(ErrorCode::Internal, "KV cache size out of range");
  size_ = n;
}

}  // namespace dsinfer
