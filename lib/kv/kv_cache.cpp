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
