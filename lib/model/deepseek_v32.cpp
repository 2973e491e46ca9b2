#include "model/deepseek_v32.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <numbers>

namespace dsinfer {

std::vector<float> yarn_inv_freq(const ModelConfig& cfg) {
  const int64_t d = cfg.qk_rope_head_dim;
  const double base = cfg.rope_theta;
  std::vector<float> inv(static_cast<size_t>(d / 2));
  const RopeScaling& y = cfg.rope_scaling;
  const bool yarn = y.present && y.factor > 1.0;
  // Correction range: the pair indices whose wavelength turns beta_fast / beta_slow times over the original
  // context (spec §2.3); pairs below `low` keep their frequency, above `high` are divided by the factor.
  auto corr = [&](double rotations) {
    return double(d) * std::log(double(y.original_max_position_embeddings) / (rotations * 2.0 * std::numbers::pi)) /
           (2.0 * std::log(base));
  };
  double low = 0, high = 0;
  if (yarn) {
    low = std::max(std::floor(corr(y.beta_fast)), 0.0);
    high = std::min(std::ceil(corr(y.beta_slow)), double(d - 1));
    if (low == high) high += 0.001;  // avoid a zero-width ramp
  }
  for (int64_t j = 0; j < d / 2; ++j) {
    const float freq = float(1.0 / std::pow(base, double(2 * j) / double(d)));
    if (!yarn) {
      inv[j] = freq;
      continue;
    }
    const float ramp = float(std::clamp((double(j) - low) / (high - low), 0.0, 1.0));
    const float keep = 1.0f - ramp;  // 1 = original frequency (extrapolation), 0 = interpolated
    inv[j] = (freq / float(y.factor)) * (1.0f - keep) + freq * keep;
  }
  return inv;
}

float mla_softmax_scale(const ModelConfig& cfg) {
  double scale = 1.0 / std::sqrt(double(cfg.qk_head_dim()));
  const RopeScaling& y = cfg.rope_scaling;
  // YaRN's attention-temperature correction, squared because it applies to both q and k (spec §2.4). Like
  // transformers we take it from mscale_all_dim; DeepSeek's configs set mscale == mscale_all_dim == 1.
  if (y.present && y.factor > 1.0 && y.mscale_all_dim != 0.0) {
    const double m = 0.1 * y.mscale_all_dim * std::log(y.factor) + 1.0;
    scale *= m * m;
  }
  return float(scale);
}

ModelShard make_shard(Communicator* comm, const ModelConfig& cfg) {
  ModelShard s;
  if (comm && comm->size() > 1) {
    s.comm = comm;
    s.rank = comm->rank();
    s.world = comm->size();
  }
  s.expert_begin = cfg.n_routed_experts * s.rank / s.world;
  s.expert_end = cfg.n_routed_experts * (s.rank + 1) / s.world;
  const int64_t per = (cfg.vocab_size + s.world - 1) / s.world;
  s.vocab_begin = std::min(cfg.vocab_size, per * s.rank);
  s.vocab_end = std::min(cfg.vocab_size, per * (s.rank + 1));
  return s;
}

Weight weight_rows(const Weight& w, int64_t begin, int64_t end) {
  Weight v = w;
  v.shape = {end - begin, w.cols()};
  v.data = w.data + size_t(begin * w.cols()) * dtype_size(w.dtype);
  if (w.dtype == DType::F8_E4M3) {
    if (begin % w.block != 0)
      throw Error(ErrorCode::Internal, fmt::format("rows of FP8 {} from {}: not on a scale block", w.name, begin));
    v.scale_inv = w.scale_inv + (begin / w.block) * ((w.cols() + w.block - 1) / w.block);
  }
  return v;
}

DeepseekV32::DeepseekV32(const ModelConfig& cfg, ModelWeights weights, Backend& backend, ModelShard shard)
    : cfg_(cfg), w_(std::move(weights)), be_(backend), shard_(shard) {
  if (shard_.distributed() && !be_.supports(BackendFeature::MoeSlots))
    throw Error(ErrorCode::Unsupported, fmt::format("the {} backend has no expert-parallel MoE (distributed runs use "
                                                    "the cpu backend)", be_.name()));
  inv_freq_ = yarn_inv_freq(cfg_);
  inv_freq_mem_ = be_.allocate(inv_freq_.size() * sizeof(float), /*zero=*/false);
  be_.bytes_from_host(inv_freq_mem_.data(), inv_freq_.data(), inv_freq_.size() * sizeof(float));
  softmax_scale_ = mla_softmax_scale(cfg_);
  for (int64_t l = 0; l < cfg_.num_hidden_layers + (w_.mtp ? 1 : 0); ++l) {
    const LayerWeights& layer = layer_weights(l);
    const Weight& kvb = layer.attn.kv_b_proj;
    if (!be_.supports(BackendFeature::MlaStoredKvB)) {
      wkv_b_.push_back(be_.dequantize(kvb));
    } else {  // the backend reads the stored weight (MlaArgs::wkv_b_stored): only the shape travels
      Matrix m;
      m.view = Tensor2D{nullptr, kvb.rows(), kvb.cols(), kvb.cols()};
      wkv_b_.push_back(std::move(m));
    }
    std::vector<ExpertWeights> ex;
    for (auto& e : layer.moe.experts) ex.push_back({&e.gate_proj, &e.up_proj, &e.down_proj});
    experts_.push_back(std::move(ex));
  }
  // Weights split by rows among the ranks (docs/distributed.md), as views: each rank takes `per_rank` consecutive
  // rows. Every rank must decide alike (the split ones exchange results), so the test is on the share, not on this
  // rank's start: an FP8 weight splits only where every rank's rows start on a scale block.
  const int64_t n_attn = cfg_.num_hidden_layers + (w_.mtp ? 1 : 0);
  auto splits = [&](auto&& weight_of_layer, int64_t per_rank) {
    bool ok = true;
    for (int64_t l = 0; l < n_attn; ++l) {
      const Weight& w = weight_of_layer(l);
      ok = ok && (w.dtype != DType::F8_E4M3 || per_rank % w.block == 0);
    }
    return ok;
  };
  // Attention split by heads: MLA for this rank's heads only, reading their rows of kv_b.
  const int64_t H = cfg_.num_attention_heads, kv_head = cfg_.qk_nope_head_dim + cfg_.v_head_dim;
  const int64_t qkh = cfg_.qk_nope_head_dim + cfg_.qk_rope_head_dim;
  auto kv_b = [&](int64_t l) -> const Weight& { return layer_weights(l).attn.kv_b_proj; };
  auto query = [&](int64_t l) -> const Weight& { return query_weight(l); };
  auto o_proj = [&](int64_t l) -> const Weight& { return layer_weights(l).attn.o_proj; };
  if (shard_.distributed() && H % shard_.world == 0 && splits(kv_b, H / shard_.world * kv_head)) {
    shard_.split_heads = true;
    shard_.head_begin = H / shard_.world * shard_.rank;
    shard_.head_end = shard_.head_begin + H / shard_.world;
    for (int64_t l = 0; l < n_attn; ++l)
      kv_b_heads_.push_back(weight_rows(kv_b(l), shard_.head_begin * kv_head, shard_.head_end * kv_head));
  }
  // The attention projections: q_b's (q's) rows of this rank's heads, and o_proj's rows of this rank's share of the
  // hidden features. Each output of a linear is one weight row times the input, whatever the other rows, so the
  // outputs gathered in rank order are bitwise the whole projection's.
  if (shard_.split_heads && splits(query, H / shard_.world * qkh)) {
    shard_.split_q = true;
    for (int64_t l = 0; l < n_attn; ++l)
      q_heads_.push_back(weight_rows(query(l), shard_.head_begin * qkh, shard_.head_end * qkh));
  }
  const int64_t D = cfg_.hidden_size;
  if (shard_.distributed() && D % shard_.world == 0 && splits(o_proj, D / shard_.world)) {
    shard_.split_o = true;
    shard_.hidden_begin = D / shard_.world * shard_.rank;
    shard_.hidden_end = shard_.hidden_begin + D / shard_.world;
    for (int64_t l = 0; l < n_attn; ++l)
      o_rows_.push_back(weight_rows(o_proj(l), shard_.hidden_begin, shard_.hidden_end));
  }
  if (shard_.distributed()) lm_head_rows_ = weight_rows(w_.lm_head, shard_.vocab_begin, shard_.vocab_end);
}

const Weight& DeepseekV32::query_weight(int64_t layer) const {
  const AttentionWeights& a = layer_weights(layer).attn;
  return cfg_.q_lora_rank > 0 ? a.q_b_proj : a.q_proj;
}

std::vector<const Weight*> DeepseekV32::row_views() const {
  std::vector<const Weight*> v;
  for (const Weight& w : q_heads_) v.push_back(&w);
  for (const Weight& w : o_rows_) v.push_back(&w);
  if (shard_.distributed() && lm_head_rows_.rows() > 0) v.push_back(&lm_head_rows_);
  return v;
}

bool DeepseekV32::read_as_rows(const Weight& w) const {
  if (shard_.distributed() && &w == &w_.lm_head) return true;
  for (int64_t l = 0; l < cfg_.num_hidden_layers + (w_.mtp ? 1 : 0); ++l)
    if ((shard_.split_q && &w == &query_weight(l)) || (shard_.split_o && &w == &layer_weights(l).attn.o_proj))
      return true;
  return false;
}

void DeepseekV32::forward(KvCache& cache, std::span<const int32_t> ids, const EvalOptions& opts,
                          std::vector<float>& logits, MtpState* mtp) {
  BatchItem item{&cache, ids, opts.all_logits, &logits, false, mtp};
  forward_batch(std::span<BatchItem>(&item, 1), opts);
}

void DeepseekV32::begin_step(Step& step, const EvalOptions& opts) {
  step.precision = opts.precision;
  // A checkpoint without quantization_config has no scale_fmt; the indexer and latent cache then use DeepSeek's
  // ue8m0 rule, the V3.2 default.
  step.ue8m0 = cfg_.quant.fp8 ? cfg_.quant.scale_ue8m0 : true;
  step.quant = LinearQuant{opts.precision == Precision::Fp8, step.ue8m0};
  step.index_topk = opts.index_topk > 0 ? opts.index_topk : cfg_.index_topk;
  step.attention = opts.attention;
  step.cache_only = false;

  // The index data's layout in step.index_mem: ids, positions and the block tables (uploaded), then the outputs.
  // Each region starts on a 64-byte boundary (16 int32), as kernels reading it vectorized would want.
  auto aligned = [](int64_t n) { return (n + 15) / 16 * 16; };
  const int64_t T = step.n, K = cfg_.num_experts_per_tok;
  int64_t tables_n = 0, max_rows = 0;
  for (const auto& sg : step.segments) {
    tables_n += aligned(int64_t(sg.cache->block_table().size()));
    max_rows = std::max(max_rows, sg.n);
  }
  const int64_t inputs_n = 2 * aligned(T) + tables_n;
  const int64_t indices_n = cfg_.has_indexer() ? aligned(max_rows * step.index_topk) : 0;
  const int64_t total = inputs_n + indices_n + 3 * aligned(T * K);
  if (step.index_mem.bytes() < size_t(total) * 4) {
    const size_t grown = std::max(size_t(total) * 4, step.index_mem.bytes() * 2);  // grow-only, geometric
    step.index_mem = be_.allocate(grown, /*zero=*/false);
  }
  auto* base = static_cast<int32_t*>(step.index_mem.data());
  step.index_host.assign(size_t(inputs_n), 0);
  int64_t at = 0;
  auto stage = [&](const int32_t* p, int64_t n) {
    std::copy_n(p, n, step.index_host.data() + at);
    const int32_t* dev = base + at;
    at += aligned(n);
    return dev;
  };
  step.ids_dev = stage(step.ids.data(), T);
  step.positions_dev = stage(step.positions.data(), T);
  for (auto& sg : step.segments) {
    const std::vector<int32_t>& table = sg.cache->block_table();
    sg.block_table = table.empty() ? nullptr : stage(table.data(), int64_t(table.size()));
  }
  be_.bytes_from_host(base, step.index_host.data(), size_t(inputs_n) * sizeof(int32_t));
  step.indices_dev = base + inputs_n;
  step.experts_dev = step.indices_dev + indices_n;
  step.expert_weights_dev = reinterpret_cast<float*>(step.experts_dev + aligned(T * K));
  step.own_experts_dev = step.experts_dev + 2 * aligned(T * K);
  // Reference precision's unit indexer-key scales, on the backend once for the longest segment seen.
  if (cfg_.has_indexer() && step.precision != Precision::Fp8 && ones_.view.rows < max_rows) {
    ones_ = be_.matrix(max_rows, 1);
    const std::vector<float> host(size_t(max_rows), 1.0f);
    be_.from_host(ones_.view, host.data());
  }
}

void MtpState::truncate_main(int64_t n, int64_t hidden) {
  drop_draft();
  if (n == 0) {
    cache->truncate(0);
    clear_deferred();
    pending.clear();
    last_n = 0;
    return;
  }
  if (cache->size() > n - 1) {
    cache->truncate(n - 1);
    clear_deferred();
  } else if (cache->size() + deferred() > n - 1) {  // the cut falls among the deferred rows
    const size_t keep = size_t(n - 1 - cache->size());
    deferred_ids.resize(keep);
    deferred_hidden.resize(keep * size_t(hidden));
  }
  const int64_t row = n - 1 - last_start;
  if (row >= 0 && row < last_n) {  // the hidden state of the new last token is known: a rollback inside the last forward
    pending.assign(last_hidden.begin() + row * hidden, last_hidden.begin() + (row + 1) * hidden);
    last_n = row + 1;
  } else {  // not known any more: the next MTP row reads zeros (hnorm(0) = 0), which only makes its draft worse
    pending.assign(size_t(hidden), 0.0f);
    last_n = 0;
  }
}

std::unique_ptr<MtpState> MtpState::fork(int64_t capacity) const {
  auto m = std::make_unique<MtpState>();
  m->cache = cache->fork(capacity);
  if (draft_depth > 0) m->cache->truncate(cache->size() - draft_depth);
  m->pending = pending;
  m->deferred_hidden = deferred_hidden;
  m->deferred_ids = deferred_ids;
  m->last_hidden = last_hidden;
  m->last_start = last_start;
  m->last_n = last_n;
  return m;
}

void DeepseekV32::forward_batch(std::span<BatchItem> items, const EvalOptions& opts) {
  const int64_t D = cfg_.hidden_size, V = cfg_.vocab_size;
  // Everything is checked before any cache is touched, so a failed call leaves every sequence as it was.
  int64_t T = 0;
  auto mtp_rows = [](const BatchItem& it) { return int64_t(it.ids.size()) - (it.cache->size() == 0 ? 1 : 0); };
  for (size_t b = 0; b < items.size(); ++b) {
    const BatchItem& it = items[b];
    const int64_t n = int64_t(it.ids.size());
    if (n == 0) throw Error(ErrorCode::InvalidArgument, "eval needs at least one token id");
    for (int64_t i = 0; i < n; ++i)
      if (it.ids[i] < 0 || it.ids[i] >= V)
        throw Error(ErrorCode::InvalidArgument,
                    fmt::format("token id {} at index {} is out of range [0, {})", it.ids[i], i, V));
    if (it.cache->size() + n > it.cache->capacity())
      throw Error(ErrorCode::OutOfMemory, fmt::format("KV cache full: {} tokens cached + {} new > capacity {}",
                                                      it.cache->size(), n, it.cache->capacity()));
    for (size_t c = 0; c < b; ++c)
      if (items[c].cache == it.cache) throw Error(ErrorCode::InvalidArgument, "a sequence appears twice in one batch");
    if (it.mtp) {
      if (!has_mtp()) throw Error(ErrorCode::Internal, "MTP state given for a model without an MTP module");
      const int64_t committed = it.mtp->cache->size() - it.mtp->draft_depth + it.mtp->deferred();
      if (committed != std::max<int64_t>(it.cache->size() - 1, 0))
        throw Error(ErrorCode::Internal, fmt::format("MTP cache out of step: {} rows for {} tokens", committed,
                                                     it.cache->size()));
      if (committed + mtp_rows(it) > it.mtp->cache->capacity())
        throw Error(ErrorCode::OutOfMemory, "MTP cache full");
    }
    T += n;
  }

  // Deferring (EvalOptions::defer_mtp) keeps a sequence's new MTP rows for later while they fit; otherwise its
  // earlier deferred rows run first, in their own pass (their inputs are known: nothing observable changes).
  auto fits = [&](const BatchItem& it) {
    return (opts.defer_mtp || it.defer_mtp) && it.mtp->deferred() + mtp_rows(it) <= kMaxDeferredMtpRows;
  };
  {
    std::vector<MtpState*> catch_up;
    for (const BatchItem& it : items)
      if (it.mtp && it.mtp->deferred() > 0 && !fits(it)) catch_up.push_back(it.mtp);
    if (!catch_up.empty()) run_deferred_mtp(catch_up, opts);
  }
  // Decided once: appending the rows changes deferred().
  for (const BatchItem& it : items)
    if (it.mtp) it.mtp->defer_this_forward = fits(it);
  auto defer_rows = [&](size_t b) { return items[b].mtp && items[b].mtp->defer_this_forward; };

  // Blocks for the new tokens (copying shared blocks they write into). A failure here releases what it took.
  for (size_t b = 0; b < items.size(); ++b) {
    try {
      if (items[b].mtp) {
        items[b].mtp->drop_draft();
        if (!defer_rows(b)) items[b].mtp->cache->prepare_append(mtp_rows(items[b]));
      }
      items[b].cache->prepare_append(int64_t(items[b].ids.size()));
    } catch (...) {
      for (size_t c = 0; c <= b; ++c) {  // frees the new blocks
        items[c].cache->truncate(items[c].cache->size());
        if (items[c].mtp) items[c].mtp->cache->truncate(items[c].mtp->cache->size());
      }
      throw;
    }
  }

  Step& step = step_;  // cleared, not freed: a decode step reuses the previous step's storage
  step.clear_rows(T);
  for (const BatchItem& it : items) {
    const int64_t n = int64_t(it.ids.size()), start = it.cache->size();
    step.segments.push_back({it.cache, int64_t(step.ids.size()), n, start, it.exact_rows && n > 1});
    for (int64_t i = 0; i < n; ++i) step.positions.push_back(int32_t(start + i));
    step.ids.insert(step.ids.end(), it.ids.begin(), it.ids.end());
  }
  begin_step(step, opts);

  Matrix h = be_.matrix(T, D), residual = be_.matrix(T, D), x = be_.matrix(T, D);
  be_.embed(w_.embed_tokens, std::span<const int32_t>(step.ids_dev, size_t(T)), h.view);
  // Pre-norm residual stream kept in fp32; the residual starts at zero so every layer is the fused add + norm.
  // Every op but attention works row by row, so sequences batched together get exactly the results they would
  // get alone.
  for (int64_t l = 0; l < cfg_.num_hidden_layers; ++l) {
    const LayerWeights& lw = w_.layers[size_t(l)];
    be_.add_rms_norm(residual.view, h.view, lw.input_layernorm, float(cfg_.rms_norm_eps), x.view);
    attention(l, x.view, step, h.view);
    be_.add_rms_norm(residual.view, h.view, lw.post_attention_layernorm, float(cfg_.rms_norm_eps), x.view);
    feed_forward(l, x.view, step, h.view);
  }
  be_.add_rms_norm(residual.view, h.view, w_.norm, float(cfg_.rms_norm_eps), x.view);

  // lm_head (fp32, never quantized: spec §2.1) on the rows each caller asked for.
  int64_t n_out = 0;
  for (size_t b = 0; b < items.size(); ++b) n_out += items[b].all_logits ? step.segments[b].n : 1;
  Matrix rows = be_.matrix(n_out, D), out = be_.matrix(n_out, V);
  int64_t r = 0;
  for (size_t b = 0; b < items.size(); ++b) {
    const auto& sg = step.segments[b];
    const int64_t k = items[b].all_logits ? sg.n : 1;
    be_.copy(rows.view.rows_slice(r, k), x.view.rows_slice(sg.row0 + sg.n - k, k));
    r += k;
  }
  lm_head(rows.view, out.view);

  // The MTP module's rows: for each token, the hidden state of the token before it (the pending one for the
  // first) and the token itself.
  for (size_t b = 0; b < items.size(); ++b) {
    const BatchItem& it = items[b];
    if (!defer_rows(b) || mtp_rows(it) == 0) continue;
    const int64_t m = mtp_rows(it);
    const auto& sg = step.segments[b];
    const bool from_pending = sg.start > 0;
    it.mtp->deferred_ids.insert(it.mtp->deferred_ids.end(), it.ids.begin() + (from_pending ? 0 : 1), it.ids.end());
    const size_t at = it.mtp->deferred_hidden.size();
    it.mtp->deferred_hidden.resize(at + size_t(m * D), 0.0f);
    float* dst = it.mtp->deferred_hidden.data() + at;
    if (from_pending) {
      if (int64_t(it.mtp->pending.size()) == D) std::copy(it.mtp->pending.begin(), it.mtp->pending.end(), dst);
      if (m > 1) be_.to_host(dst + D, x.view.rows_slice(sg.row0, m - 1));
    } else {
      be_.to_host(dst, x.view.rows_slice(sg.row0, m));
    }
  }
  bool any_mtp = false;
  for (size_t b = 0; b < items.size(); ++b)
    any_mtp = any_mtp || (items[b].mtp && !defer_rows(b) && mtp_rows(items[b]) > 0);
  if (any_mtp) {
    int64_t M = 0;
    for (size_t b = 0; b < items.size(); ++b)
      if (items[b].mtp && !defer_rows(b)) M += mtp_rows(items[b]);
    Step& ms = mtp_step_;
    ms.clear_rows(M);
    Matrix hin = be_.matrix(M, D);
    for (size_t b = 0; b < items.size(); ++b) {
      const BatchItem& it = items[b];
      const int64_t m = it.mtp && !defer_rows(b) ? mtp_rows(it) : 0;
      if (m == 0) continue;
      const auto& sg = step.segments[b];
      const int64_t row0 = int64_t(ms.ids.size()), start = it.mtp->cache->size();
      ms.segments.push_back({it.mtp->cache.get(), row0, m, start, it.exact_rows && m > 1});
      for (int64_t i = 0; i < m; ++i) ms.positions.push_back(int32_t(start + i));
      const bool from_pending = sg.start > 0;
      ms.ids.insert(ms.ids.end(), it.ids.begin() + (from_pending ? 0 : 1), it.ids.end());
      if (from_pending) {
        // (pending is empty only for an MTP state that never saw this sequence's last token: zeros, hnorm(0) = 0)
        if (int64_t(it.mtp->pending.size()) == D) be_.from_host(hin.view.rows_slice(row0, 1), it.mtp->pending.data());
        if (m > 1) be_.copy(hin.view.rows_slice(row0 + 1, m - 1), x.view.rows_slice(sg.row0, m - 1));
      } else {
        be_.copy(hin.view.rows_slice(row0, m), x.view.rows_slice(sg.row0, m));
      }
    }
    begin_step(ms, opts);
    ms.cache_only = true;
    mtp_layer(hin.view, ms, Tensor2D{});
    for (const auto& sg : ms.segments) sg.cache->set_size(sg.start + sg.n);
  }
  for (size_t b = 0; b < items.size(); ++b) {
    MtpState* m = items[b].mtp;
    if (!m) continue;
    const auto& sg = step.segments[b];
    // Every row's state is kept after a verification (exact rows: a rejected draft rolls back into it), else the
    // last one only.
    const int64_t keep = items[b].exact_rows ? sg.n : 1;
    m->last_hidden.resize(static_cast<size_t>(keep * D));
    be_.to_host(m->last_hidden.data(), x.view.rows_slice(sg.row0 + sg.n - keep, keep));
    m->last_start = sg.start + sg.n - keep;
    m->last_n = keep;
    m->pending.assign(m->last_hidden.end() - D, m->last_hidden.end());
  }

  r = 0;
  for (size_t b = 0; b < items.size(); ++b) {
    const auto& sg = step.segments[b];
    const int64_t k = items[b].all_logits ? sg.n : 1;
    items[b].logits->resize(static_cast<size_t>(k * V));
    be_.to_host(items[b].logits->data(), out.view.rows_slice(r, k));
    r += k;
    sg.cache->set_size(sg.start + sg.n);
  }
}

void DeepseekV32::mtp_layer(Tensor2D hidden, Step& step, Tensor2D out) {
  const MtpWeights& mw = *w_.mtp;
  const LayerWeights& lw = mw.layer;
  const int64_t n = step.n, D = cfg_.hidden_size, L = cfg_.num_hidden_layers;
  const float eps = float(cfg_.rms_norm_eps);
  Matrix e = be_.matrix(n, D), en = be_.matrix(n, D), hn = be_.matrix(n, D), cat = be_.matrix(n, 2 * D);
  be_.embed(w_.embed_tokens, std::span<const int32_t>(step.ids_dev, size_t(step.n)), e.view);
  be_.rms_norm(e.view, mw.enorm, eps, en.view);
  be_.rms_norm(hidden, mw.hnorm, eps, hn.view);
  // concat[enorm(e), hnorm(h)]: the embedding half first (spec §7, as vLLM and the released eh_proj have it).
  be_.copy(cat.view.cols_slice(0, D), en.view);
  be_.copy(cat.view.cols_slice(D, D), hn.view);
  Matrix u = be_.matrix(n, D), residual = be_.matrix(n, D), x = be_.matrix(n, D), h = be_.matrix(n, D);
  be_.linear(cat.view, mw.eh_proj, u.view, step.quant);
  be_.add_rms_norm(residual.view, u.view, lw.input_layernorm, eps, x.view);
  attention(L, x.view, step, h.view);
  if (step.cache_only) return;  // the rows' cache entries are written; nothing reads their outputs
  be_.add_rms_norm(residual.view, h.view, lw.post_attention_layernorm, eps, x.view);
  feed_forward(L, x.view, step, h.view);
  be_.add_rms_norm(residual.view, h.view, mw.shared_head_norm, eps, out);
}

void DeepseekV32::mtp_rebuild(MtpState& m, std::span<const int32_t> tokens, const EvalOptions& opts) {
  const int64_t D = cfg_.hidden_size;
  if (!has_mtp()) throw Error(ErrorCode::Unsupported, "the checkpoint has no MTP module");
  m.drop_draft();
  m.cache->truncate(0);
  m.clear_deferred();
  m.last_n = 0;
  m.pending.clear();
  if (tokens.empty()) return;
  const int64_t rows = int64_t(tokens.size()) - 1;
  if (rows > m.cache->capacity()) throw Error(ErrorCode::OutOfMemory, "MTP cache full");
  for (int64_t at = 0; at < rows;) {
    const int64_t n = std::min<int64_t>(rows - at, 2048);
    m.cache->prepare_append(n);
    Step& ms = mtp_step_;
    ms.n = n;
    ms.segments.assign(1, {m.cache.get(), 0, n, at, false});
    ms.positions.resize(size_t(n));
    for (int64_t i = 0; i < n; ++i) ms.positions[size_t(i)] = int32_t(at + i);
    ms.ids.assign(tokens.begin() + at + 1, tokens.begin() + at + 1 + n);
    begin_step(ms, opts);
    ms.cache_only = true;
    Matrix hin = be_.matrix(n, D);  // the main model's states are not known: zeros
    mtp_layer(hin.view, ms, Tensor2D{});
    m.cache->set_size(at + n);
    at += n;
  }
  m.pending.assign(size_t(D), 0.0f);
}

void DeepseekV32::run_deferred_mtp(std::span<MtpState* const> states, const EvalOptions& opts) {
  const int64_t D = cfg_.hidden_size;
  int64_t M = 0;
  for (size_t b = 0; b < states.size(); ++b) {
    MtpState& m = *states[b];
    m.drop_draft();
    try {
      m.cache->prepare_append(m.deferred());
    } catch (...) {
      for (size_t c = 0; c <= b; ++c) states[c]->cache->truncate(states[c]->cache->size());
      throw;
    }
    M += m.deferred();
  }
  Step& ms = mtp_step_;
  ms.clear_rows(M);
  Matrix hin = be_.matrix(M, D);
  for (MtpState* m : states) {
    const int64_t row0 = int64_t(ms.ids.size()), start = m->cache->size(), n = m->deferred();
    // Cache-only rows run per-row projections alone, whose results do not depend on how many rows a step has:
    // deferring changes no cache entry and no draft, bit for bit.
    ms.segments.push_back({m->cache.get(), row0, n, start, false});
    for (int64_t i = 0; i < n; ++i) ms.positions.push_back(int32_t(start + i));
    ms.ids.insert(ms.ids.end(), m->deferred_ids.begin(), m->deferred_ids.end());
    be_.from_host(hin.view.rows_slice(row0, n), m->deferred_hidden.data());
  }
  begin_step(ms, opts);
  ms.cache_only = true;
  mtp_layer(hin.view, ms, Tensor2D{});
  for (MtpState* m : states) {
    m->cache->set_size(m->cache->size() + m->deferred());
    m->clear_deferred();
  }
}

void DeepseekV32::mtp_draft(std::span<DraftItem> items, const EvalOptions& opts) {
  const int64_t D = cfg_.hidden_size, V = cfg_.vocab_size;
  if (!has_mtp()) throw Error(ErrorCode::Unsupported, "the checkpoint has no MTP module to draft with");
  for (size_t b = 0; b < items.size(); ++b) {
    const DraftItem& it = items[b];
    if (it.token < 0 || it.token >= V)
      throw Error(ErrorCode::InvalidArgument, fmt::format("draft token id {} is out of range [0, {})", it.token, V));
    if (it.mtp->pending.empty()) throw Error(ErrorCode::InvalidArgument, "nothing to draft from: the sequence is empty");
    if (it.mtp->cache->size() + it.mtp->deferred() + 1 > it.mtp->cache->capacity())
      throw Error(ErrorCode::OutOfMemory, "MTP cache full");
    for (size_t c = 0; c < b; ++c)
      if (items[c].mtp == it.mtp) throw Error(ErrorCode::InvalidArgument, "a sequence appears twice in one draft batch");
  }
  if (items.empty()) return;
  {  // a draft continues from every committed row: the deferred ones run first
    std::vector<MtpState*> catch_up;
    for (const DraftItem& it : items)
      if (it.mtp->deferred() > 0) catch_up.push_back(it.mtp);
    if (!catch_up.empty()) run_deferred_mtp(catch_up, opts);
  }
  for (size_t b = 0; b < items.size(); ++b) {
    try {
      items[b].mtp->cache->prepare_append(1);
    } catch (...) {
      for (size_t c = 0; c < b; ++c) items[c].mtp->cache->truncate(items[c].mtp->cache->size());
      throw;
    }
  }
  const int64_t B = int64_t(items.size());
  Step& ms = mtp_step_;
  ms.clear_rows(B);
  Matrix hin = be_.matrix(B, D);
  for (int64_t b = 0; b < B; ++b) {
    const DraftItem& it = items[size_t(b)];
    const int64_t start = it.mtp->cache->size();
    ms.segments.push_back({it.mtp->cache.get(), b, 1, start, false});
    ms.positions.push_back(int32_t(start));
    ms.ids.push_back(it.token);
    const std::vector<float>& in = it.mtp->draft_depth == 0 ? it.mtp->pending : it.mtp->draft_hidden;
    be_.from_host(hin.view.rows_slice(b, 1), in.data());
  }
  begin_step(ms, opts);
  Matrix x = be_.matrix(B, D), out = be_.matrix(B, V);
  mtp_layer(hin.view, ms, x.view);
  lm_head(x.view, out.view);
  for (int64_t b = 0; b < B; ++b) {
    DraftItem& it = items[size_t(b)];
    it.logits->resize(static_cast<size_t>(V));
    be_.to_host(it.logits->data(), out.view.rows_slice(b, 1));
    // The chain's next input: this row's shared_head.norm output, the MTP's analogue of the main model's
    // final-normed state (what training/model.py's MTP returns).
    it.mtp->draft_hidden.resize(static_cast<size_t>(D));
    be_.to_host(it.mtp->draft_hidden.data(), x.view.rows_slice(b, 1));
    it.mtp->cache->set_size(it.mtp->cache->size() + 1);
    it.mtp->draft_depth += 1;
  }
}

void DeepseekV32::attention(int64_t l, Tensor2D x, Step& step, Tensor2D out) {
  const LayerWeights& lw = layer_weights(l);
  const int64_t kl = l < cfg_.num_hidden_layers ? l : 0;  // the cache layer: the MTP cache has one
  const AttentionWeights& aw = lw.attn;
  const int64_t T = step.n;
  const int64_t H = cfg_.num_attention_heads, dn = cfg_.qk_nope_head_dim, dr = cfg_.qk_rope_head_dim;
  const int64_t dv = cfg_.v_head_dim, kvr = cfg_.kv_lora_rank, qkh = dn + dr;
  const float eps = float(cfg_.rms_norm_eps);
  const bool fp8 = step.precision == Precision::Fp8;

  // The projections of x — the query's (q_a, or q without a low-rank query), the latent's (kv_a) and the
  // indexer key's (wk) — in one call, and those of qr (q_b, the indexer's wq_b) in another: the backend may
  // quantize each input once and run the GEMMs as one parallel loop (the results are the separate linears').
  const bool indexer = cfg_.has_indexer(), low_rank_q = cfg_.q_lora_rank > 0;
  // The indexer's queries and head weights only rank cached keys, and a sequence that sees at most index_topk keys
  // keeps them all (below): when no sequence in the step sees more, they are not computed (their weights are not
  // read). The indexer keys are, always: later steps rank them.
  // Cache-only rows (Step::cache_only) need no queries at all.
  const bool queries = !step.cache_only;
  bool rank_keys = false;
  for (const auto& sg : step.segments)
    rank_keys = rank_keys || (queries && indexer && sg.start + sg.n > step.index_topk);
  const int64_t Hi = cfg_.index_n_heads, Di = cfg_.index_head_dim;
  Matrix q, qa, qr, kv = be_.matrix(T, kvr + dr), qi, hw, qs, kraw;
  // Split heads with q_b split too: q holds this rank's heads only (from its rows of q_b); else every head.
  const int64_t q_h0 = shard_.split_q ? shard_.head_begin : 0;
  const int64_t q_heads = shard_.split_q ? shard_.head_end - shard_.head_begin : H;
  const Weight& wq = shard_.split_q ? q_heads_[size_t(l)] : query_weight(l);
  if (queries) q = be_.matrix(T, q_heads * qkh);
  if (queries && low_rank_q) qa = be_.matrix(T, cfg_.q_lora_rank);
  if (indexer) kraw = be_.matrix(T, Di);
  if (rank_keys) {
    qi = be_.matrix(T, Hi * Di);
    hw = be_.matrix(T, Hi);
  }
  {
    LinearOut of_x[3];
    size_t n_of = 0;
    if (queries) of_x[n_of++] = {low_rank_q ? &aw.q_a_proj : &wq, low_rank_q ? qa.view : q.view};
    of_x[n_of++] = {&aw.kv_a_proj_with_mqa, kv.view};
    if (indexer) of_x[n_of++] = {&lw.indexer.wk, kraw.view};
    be_.linear_many(x, std::span<const LinearOut>(of_x, n_of), step.quant);
  }
  // Queries: q = q_b(RMSNorm(q_a(x))); qr, the normed low-rank query, also feeds the indexer.
  if (queries && low_rank_q) {
    qr = be_.matrix(T, cfg_.q_lora_rank);
    be_.rms_norm(qa.view, aw.q_a_layernorm, eps, qr.view);
    LinearOut of_qr[2] = {{&wq, q.view}, {&lw.indexer.wq_b, qi.view}};
    be_.linear_many(qr.view, std::span<const LinearOut>(of_qr, rank_keys ? 2 : 1), step.quant);
  } else if (rank_keys) {
    be_.linear(qr.view, lw.indexer.wq_b, qi.view, step.quant);
  }
  if (queries) be_.rope({q.view, q_heads, qkh, dn, dr, inv_freq_dev(), step.positions_dev, RopeLayout::Interleaved});

  // Keys: one latent per token (RMSNorm'd c) plus the shared rotated rope key, written into each sequence's cache.
  for (const auto& sg : step.segments) {
    // New rows are computed in scratch and then written through the block table (they may span blocks).
    Matrix latent_new = be_.matrix(sg.n, kvr), kpe_new = be_.matrix(sg.n, dr);
    const Tensor2D kv_rows = kv.view.rows_slice(sg.row0, sg.n);
    be_.rms_norm(kv_rows.cols_slice(0, kvr), aw.kv_a_layernorm, eps, latent_new.view);
    be_.copy(kpe_new.view, kv_rows.cols_slice(kvr, dr));
    be_.rope({kpe_new.view, 1, dr, 0, dr, inv_freq_dev(), step.positions_dev + sg.row0, RopeLayout::Interleaved});
    // DeepSeek deploys an FP8 latent cache and its reference simulates it (spec §3.2): c quantize-dequantized, the
    // rope key in bf16 (the reference's pe_cache, FlashMLA's FP8 row). An FP8 cache quantizes c itself, with the
    // same rule, so every cache dtype holds the same values in fp8 precision.
    const KvDtype kd = sg.cache->dtype();
    if (fp8) {
      if (kd != KvDtype::FP8)
        be_.fp8_quantize(latent_new.view, 128, step.ue8m0, /*dequantize=*/true, latent_new.view, Tensor2D{});
      be_.round_to_bf16(kpe_new.view);
    }
    if (kd == KvDtype::F32) {
      sg.cache->write(kl, KvTensor::Latent, sg.start, latent_new.view);
      sg.cache->write(kl, KvTensor::RopeKey, sg.start, kpe_new.view);
    } else {
      sg.cache->write_latent(kl, sg.start, latent_new.view, kpe_new.view, step.ue8m0);
    }
  }

  // DSA lightning indexer (spec §4): queries and head weights for all rows; keys into each cache; one top-k set
  // of cached positions per query, shared by all heads.
  if (indexer) {
    const IndexerWeights& iw = lw.indexer;
    if (rank_keys) {
      // The indexer's heads are [rope | nope] and use the half-split RoPE layout (spec §2.5, §11.1–2).
      be_.rope({qi.view, Hi, Di, 0, dr, inv_freq_dev(), step.positions_dev, RopeLayout::HalfSplit});
      be_.linear(x, iw.weights_proj, hw.view, LinearQuant{});  // bf16 weight, fp32 math
      if (fp8) {
        // Hadamard spreads outliers before the single-scale FP8 quantization; q·k is unchanged by it.
        be_.hadamard(qi.view, Di);
        qs = be_.matrix(T, Hi);
        be_.fp8_quantize(qi.view, Di, step.ue8m0, false, qi.view, qs.view);
      }
    }
    for (const auto& sg : step.segments) {
      // The keys' scales: the quantizer's in fp8 precision, else ones (begin_step keeps enough of them on the backend).
      Matrix k_new = be_.matrix(sg.n, Di), ks_new = fp8 ? be_.matrix(sg.n, 1) : Matrix{};
      const Tensor2D ks = fp8 ? ks_new.view : ones_.view.rows_slice(0, sg.n);
      be_.layer_norm(kraw.view.rows_slice(sg.row0, sg.n), iw.k_norm_weight, iw.k_norm_bias, 1e-6f, k_new.view);
      be_.rope({k_new.view, 1, Di, 0, dr, inv_freq_dev(), step.positions_dev + sg.row0, RopeLayout::HalfSplit});
      if (fp8) {
        be_.hadamard(k_new.view, Di);
        be_.fp8_quantize(k_new.view, Di, step.ue8m0, false, k_new.view, ks_new.view);
      }
      if (sg.cache->dtype() == KvDtype::F32) {
        sg.cache->write(kl, KvTensor::IndexKey, sg.start, k_new.view);
        sg.cache->write(kl, KvTensor::IndexScale, sg.start, ks);
      } else {  // fp8 precision: k_new already holds e4m3 values and ks their scales
        sg.cache->write_index_key(kl, sg.start, k_new.view, ks, /*key_is_e4m3=*/fp8, step.ue8m0);
      }
    }
  }

  if (step.cache_only) return;

  Matrix o = be_.matrix(T, H * dv);
  // Split heads: this rank's heads into o_mine, gathered into o below; else every head into o.
  const bool split = shard_.split_heads;
  const int64_t h0 = split ? shard_.head_begin : 0, nh = split ? shard_.head_end - shard_.head_begin : H;
  Matrix o_mine = split ? be_.matrix(T, nh * dv) : Matrix{};
  const Tensor2D o_heads = split ? o_mine.view : o.view;
  // Rows [row0, row0 + n) of one sequence at cache positions [start, start + n): its indexer top-k and attention.
  auto attend = [&](const Step::Segment& sg, int64_t row0, int64_t n, int64_t start) {
    const int64_t S = start + n;
    const int32_t* positions = step.positions_dev + row0;
    int64_t n_indices = 0;
    // With at most index_topk visible tokens DSA is dense causal attention: skip scoring (the keys are cached).
    if (cfg_.has_indexer() && S > step.index_topk) {
      n_indices = step.index_topk;  // (room for n rows of them: begin_step sized indices_dev by the longest segment)
      IndexerTopkArgs ia;
      ia.q = qi.view.rows_slice(row0, n);
      ia.q_scale = fp8 ? qs.view.rows_slice(row0, n) : Tensor2D{};
      ia.w = hw.view.rows_slice(row0, n);
      ia.head_scale = float(1.0 / std::sqrt(double(Hi)) / std::sqrt(double(Di)));
      ia.k = sg.cache->tensor(kl, KvTensor::IndexKey);
      ia.k_scale = fp8 ? sg.cache->tensor(kl, KvTensor::IndexScale) : Tensor2D{};
      ia.k_packed = sg.cache->pool().packed(kl, KvTensor::IndexKey);
      ia.n_keys = S;
      ia.block_table = sg.block_table;
      ia.block_tokens = sg.cache->block_tokens();
      ia.n_heads = Hi;
      ia.head_dim = Di;
      ia.positions = positions;
      ia.topk = n_indices;
      ia.out_indices = step.indices_dev;
      be_.indexer_topk(ia);
    }
    MlaArgs ma;
    ma.q = q.view.rows_slice(row0, n).cols_slice((h0 - q_h0) * qkh, nh * qkh);
    ma.latent = sg.cache->tensor(kl, KvTensor::Latent);
    ma.k_pe = sg.cache->tensor(kl, KvTensor::RopeKey);
    ma.latent_packed = sg.cache->pool().packed(kl, KvTensor::Latent);
    ma.n_keys = S;
    ma.block_table = sg.block_table;
    ma.block_tokens = sg.cache->block_tokens();
    const Tensor2D kvb = wkv_b_[size_t(l)].view;  // (only its shape when the backend reads the stored weight)
    ma.wkv_b = !split    ? kvb
               : kvb.data ? kvb.rows_slice(h0 * (dn + dv), nh * (dn + dv))
                          : Tensor2D{nullptr, nh * (dn + dv), kvb.cols, kvb.ld};
    ma.wkv_b_stored = split ? &kv_b_heads_[size_t(l)] : &aw.kv_b_proj;
    ma.n_heads = nh;
    ma.nope_dim = dn;
    ma.rope_dim = dr;
    ma.v_dim = dv;
    ma.softmax_scale = softmax_scale_;
    ma.positions = positions;
    ma.indices = n_indices ? step.indices_dev : nullptr;
    ma.n_indices = n_indices;
    ma.out = o_heads.rows_slice(row0, n);
    if (step.attention != AttentionForm::Auto) {
      ma.mode = step.attention == AttentionForm::Mha ? MlaMode::Mha : MlaMode::Absorbed;
      be_.mla_attention(ma);
      return;
    }
    // Auto: a decode row takes the absorbed form. In a multi-token step, rows that attend every earlier token take
    // the MHA form (the cache expanded through kv_b once for all of them); rows that attend index_topk selected
    // tokens (DSA, position >= index_topk) take the absorbed form, whose cost does not grow with the context, where
    // expanding the cache would cost cache length x kv_b per chunk. The form depends only on a row's position, never
    // on how a prompt is chunked or batched (a sequence's logits stay bitwise those of any chunking).
    const int64_t mha_rows = n == 1 ? 0 : n_indices ? std::clamp<int64_t>(step.index_topk - start, 0, n) : n;
    if (mha_rows > 0) {
      MlaArgs mha = ma;
      mha.mode = MlaMode::Mha;
      mha.q = ma.q.rows_slice(0, mha_rows);
      mha.out = ma.out.rows_slice(0, mha_rows);
      mha.n_keys = start + mha_rows;  // (the keys these rows can see: the expansion stops there)
      be_.mla_attention(mha);
    }
    if (mha_rows < n) {
      ma.mode = MlaMode::Absorbed;
      ma.q = ma.q.rows_slice(mha_rows, n - mha_rows);
      ma.out = ma.out.rows_slice(mha_rows, n - mha_rows);
      ma.positions = positions + mha_rows;
      if (ma.indices) ma.indices += mha_rows * n_indices;
      be_.mla_attention(ma);
    }
  };
  for (const auto& sg : step.segments) {
    if (sg.exact_rows) {
      // Row by row, each seeing exactly the keys up to its own position: what n decode steps compute (the keys of
      // later rows are already written, but a row never reads past its position).
      for (int64_t r = 0; r < sg.n; ++r) attend(sg, sg.row0 + r, 1, sg.start + r);
    } else {
      attend(sg, sg.row0, sg.n, sg.start);
    }
  }
  // Every rank's heads, in rank order, into every rank's o: the values one process computes (a head's attention does
  // not depend on the others).
  if (split) all_gather_columns(o_mine.view, o.view, step);
  if (!shard_.split_o) {
    be_.linear(o.view, aw.o_proj, out, step.quant);
    return;
  }
  // This rank's rows of o_proj (its share of the hidden features), then every rank's share side by side.
  Matrix out_mine = be_.matrix(T, shard_.hidden_end - shard_.hidden_begin);
  be_.linear(o.view, o_rows_[size_t(l)], out_mine.view, step.quant);
  all_gather_columns(out_mine.view, out, step);
}

void DeepseekV32::all_gather_columns(Tensor2D mine, Tensor2D full, Step& step) {
  const int64_t T = mine.rows, w = mine.cols, W = shard_.world;
  step.gather_mine.resize(size_t(T * w));
  step.gather_all.resize(size_t(W * T * w));
  step.gather_full.resize(size_t(T * W * w));
  be_.to_host(step.gather_mine.data(), mine);
  shard_.comm->all_gather(step.gather_mine.data(), step.gather_all.data(), step.gather_mine.size() * sizeof(float));
  for (int64_t r = 0; r < W; ++r)
    for (int64_t t = 0; t < T; ++t)
      std::copy_n(step.gather_all.data() + (r * T + t) * w, w, step.gather_full.data() + t * W * w + r * w);
  be_.from_host(full, step.gather_full.data());
}

void DeepseekV32::swiglu(const MlpWeights& mlp, Tensor2D x, const LinearQuant& q, Tensor2D out) {
  const int64_t inner = mlp.gate_proj.rows();
  Matrix g = be_.matrix(x.rows, inner), u = be_.matrix(x.rows, inner);
  be_.linear(x, mlp.gate_proj, g.view, q);
  be_.linear(x, mlp.up_proj, u.view, q);
  be_.silu_mul(g.view, u.view, g.view);
  be_.linear(g.view, mlp.down_proj, out, q);
}

void DeepseekV32::feed_forward(int64_t l, Tensor2D x, Step& step, Tensor2D out) {
  const LayerWeights& lw = layer_weights(l);
  if (!lw.is_moe) {
    swiglu(lw.mlp, x, step.quant, out);
    return;
  }
  const int64_t T = step.n, K = cfg_.num_experts_per_tok;
  MoeRouteArgs ra;
  ra.x = x;
  ra.gate = &lw.moe.gate;
  ra.bias = lw.moe.e_score_correction_bias.present() ? &lw.moe.e_score_correction_bias : nullptr;
  ra.n_experts = cfg_.n_routed_experts;
  ra.n_group = cfg_.n_group;
  ra.topk_group = cfg_.topk_group;
  ra.top_k = K;
  ra.sigmoid = cfg_.scoring_func == "sigmoid";
  ra.normalize = cfg_.norm_topk_prob;
  ra.routed_scale = float(cfg_.routed_scaling_factor);
  ra.out_experts = step.experts_dev;
  ra.out_weights = step.expert_weights_dev;
  be_.moe_route(ra);
  if (shard_.distributed()) {
    moe_expert_parallel(l, x, step, out);
    return;
  }

  MoeExpertsArgs ea;
  ea.x = x;
  ea.experts = experts_[size_t(l)];
  ea.expert_ids = step.experts_dev;
  ea.weights = step.expert_weights_dev;
  ea.top_k = K;
  ea.quant = step.quant;
  ea.out = out;
  // The shared expert goes with the routed ones where the backend can fuse it (one pass over all their weights).
  const ExpertWeights shared{&lw.moe.shared.gate_proj, &lw.moe.shared.up_proj, &lw.moe.shared.down_proj};
  const bool fuse_shared = cfg_.n_shared_experts > 0 && be_.supports(BackendFeature::MoeFusedSharedExpert);
  if (fuse_shared) ea.shared = &shared;
  be_.moe_experts(ea);
  if (cfg_.n_shared_experts > 0 && !fuse_shared) {
    Matrix shared = be_.matrix(T, cfg_.hidden_size);
    swiglu(lw.moe.shared, x, step.quant, shared.view);
    be_.add(out, shared.view);  // the shared expert is added unweighted (spec §5.3)
  }
}

// Each logit is one row of lm_head times x, whatever the other rows: the ranks' vocab slices gathered are bitwise
// the one-process logits. (The lm_head has no FP8 weight in DeepSeek's checkpoints: a plain GEMM.)
void DeepseekV32::lm_head(Tensor2D x, Tensor2D out) {
  if (!shard_.distributed()) {
    be_.linear(x, w_.lm_head, out, LinearQuant{});
    return;
  }
  const int64_t R = x.rows, V = cfg_.vocab_size, W = shard_.world;
  const int64_t per = (V + W - 1) / W, n = shard_.vocab_end - shard_.vocab_begin;
  logits_mine_.assign(size_t(R * per), 0.0f);
  if (n > 0) {
    Matrix part = be_.matrix(R, n);
    be_.linear(x, lm_head_rows_, part.view, LinearQuant{});
    be_.to_host(logits_mine_.data(), part.view);  // dense [R, n]; spread to the padded rows below
    for (int64_t t = R - 1; t > 0; --t)
      std::copy_backward(logits_mine_.data() + t * n, logits_mine_.data() + (t + 1) * n, logits_mine_.data() + t * per + n);
  }
  if (shard_.rank == 0) logits_all_.resize(size_t(W * R * per));
  shard_.comm->gather(logits_mine_.data(), logits_all_.data(), logits_mine_.size() * sizeof(float), 0);
  if (shard_.rank != 0) return;  // (only rank 0 reads logits)
  logits_mine_.resize(size_t(R * V));  // reused: rank 0's logits in order
  for (int64_t r = 0; r < W; ++r) {
    const int64_t v0 = std::min(V, per * r), nr = std::min(V, per * (r + 1)) - v0;
    for (int64_t t = 0; t < R; ++t)
      std::copy_n(logits_all_.data() + (r * R + t) * per, nr, logits_mine_.data() + t * V + v0);
  }
  be_.from_host(out, logits_mine_.data());
}

// Expert parallelism without changing a bit: every rank holds the same x and routing (computed the same way from
// the same values). Each computes the weighted outputs of its own experts' (token, slot) pairs into slots (all
// ranks at once), then the running sum goes from rank to rank: rank 0 starts it at zero, each adds its slots in
// expert order (moe_combine) and passes it on, the last adds the shared expert and broadcasts the result. As the
// ranks own consecutive expert ranges, that is term for term the one-process sum (moe_experts adds its experts in
// ascending order and the shared one last). The cost of the order is a chain of world - 1 hops per layer; an
// all-reduce would be one step but its sum order is the transport's.
void DeepseekV32::moe_expert_parallel(int64_t l, Tensor2D x, Step& step, Tensor2D out) {
  const LayerWeights& lw = layer_weights(l);
  const int64_t T = step.n, K = cfg_.num_experts_per_tok, D = cfg_.hidden_size;
  Communicator& comm = *shard_.comm;
  const int r = shard_.rank, W = shard_.world;
  // This rank's share of the routing, worked out on the host (one small copy each way per layer).
  step.experts.resize(size_t(T * K));
  step.own_experts.resize(size_t(T * K));
  be_.bytes_to_host(step.experts.data(), step.experts_dev, step.experts.size() * sizeof(int32_t));
  for (int64_t i = 0; i < T * K; ++i) {
    const int32_t e = step.experts[size_t(i)];
    step.own_experts[size_t(i)] = e >= shard_.expert_begin && e < shard_.expert_end ? e : -1;
  }
  be_.bytes_from_host(step.own_experts_dev, step.own_experts.data(), step.own_experts.size() * sizeof(int32_t));
  // The last rank adds the shared expert after the routed ones (spec §5.3: unweighted); it computes it first, while
  // the running sum is still on its way.
  Matrix shared;
  if (r == W - 1 && cfg_.n_shared_experts > 0) {
    shared = be_.matrix(T, D);
    swiglu(lw.moe.shared, x, step.quant, shared.view);
  }
  // Chunks of tokens bound the slots buffer ([chunk * top_k, hidden]) for long prompts.
  constexpr int64_t kChunk = 256;
  for (int64_t t0 = 0; t0 < T; t0 += kChunk) {
    const int64_t n = std::min(kChunk, T - t0);
    Matrix slots = be_.matrix(n * K, D);
    MoeExpertsArgs ea;
    ea.x = x.rows_slice(t0, n);
    ea.experts = experts_[size_t(l)];
    ea.expert_ids = step.own_experts_dev + t0 * K;
    ea.weights = step.expert_weights_dev + t0 * K;
    ea.top_k = K;
    ea.quant = step.quant;
    ea.slots = slots.view;
    be_.moe_experts(ea);
    const Tensor2D o = out.rows_slice(t0, n);
    step.partial.resize(size_t(n * D));
    if (r == 0) {
      be_.fill_zero(o);
    } else {
      comm.recv(step.partial.data(), step.partial.size() * 4, r - 1);
      be_.from_host(o, step.partial.data());
    }
    be_.moe_combine({slots.view, step.own_experts_dev + t0 * K, K, o});
    if (r + 1 < W) {
      be_.to_host(step.partial.data(), o);
      comm.send(step.partial.data(), step.partial.size() * 4, r + 1);
    }
  }
  if (shared.view.data) be_.add(out, shared.view);
  step.partial.resize(size_t(T * D));
  if (r == W - 1) be_.to_host(step.partial.data(), out);
  comm.broadcast(step.partial.data(), step.partial.size() * 4, W - 1);
  if (r != W - 1) be_.from_host(out, step.partial.data());
}

}  // namespace dsinfer
