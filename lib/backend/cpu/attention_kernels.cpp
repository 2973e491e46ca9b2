#include "backend/cpu/attention_kernels.hpp"

#include <algorithm>
#include <cmath>
#include <type_traits>

#include "backend/cpu/indexer_amx.hpp"
#include "backend/cpu/simd.hpp"
#include "backend/kv_format.hpp"
#include "dsinfer/error.hpp"
#include "util/softmax.hpp"

// V is passed and returned by value only between always-inlined functions of one instruction set.
#pragma GCC diagnostic ignored "-Wpsabi"
// GCC 12's AVX-512 intrinsics start from _mm512_undefined values (as simd.hpp notes for -Wmaybe-uninitialized).
#pragma GCC diagnostic ignored "-Wuninitialized"

namespace dsinfer {

namespace {

// Where the absorbed kernels read kv_b from.
constexpr int kKvbF32 = 0, kKvbFp8 = 1, kKvbBf16 = 2;
struct KvbRows {
  int kind = kKvbF32;
  const uint8_t* bytes = nullptr;  // stored weight, row-major [rows, cols]
  const float* scale_inv = nullptr;
  int64_t cols = 0, block_shift = 7, scale_cols = 0;  // FP8: blocks of 2^block_shift rows and columns
  const float* f32 = nullptr;  // the fp32 copy, rows ld apart
  int64_t ld = 0;
};

// The absorbed vector kernel's buffers for a block of heads (from the worker's scratch).
struct MlaScratch {
  float* q_abs;  // [heads, C]
  float* p;      // [heads, n]
  float* o_lat;  // [heads, C]
};

// The latent and rope-key rows of keys[j0..j1) as fp32 pointers: into the cache (F32) or, for a packed cache, into
// decoded[j][C + dr] after decoding them there (exact: e4m3 · scale and bf16 are fp32 values, so every kernel
// computes what it computes over an F32 cache holding those values).
// decode: how a packed row becomes fp32 (the vector kernels pass their own, with the same values).
float* decoded_rows(const MlaArgs& a, int64_t n, WorkerScratch scratch) {
  if (!a.latent_packed.packed()) return nullptr;
  return scratch.get<float>(ScratchSlot::MlaDecoded, size_t(n * (a.latent.cols + a.rope_dim)));
}
using DecodeLatentRow = void (*)(const PackedKv&, int64_t, float*, float*);
void gather_latent_rows(const MlaArgs& a, const int32_t* keys, int64_t j0, int64_t j1, float* decoded,
                        const float** lat, const float** kpe, DecodeLatentRow decode = kvfmt::decode_latent_row) {
  const int64_t C = a.latent.cols, dr = a.rope_dim, w = C + dr;
  for (int64_t j = j0; j < j1; ++j) {
    const int64_t row = cache_row(a.block_table, a.block_tokens, keys[j]);
    if (a.latent_packed.packed()) {
      float* d = decoded + j * w;
      decode(a.latent_packed, row, d, d + C);
      lat[j] = d;
      kpe[j] = d + C;
    } else {
      lat[j] = a.latent.row(row);
      kpe[j] = a.k_pe.row(row);
    }
  }
}

float tree16(const float* l) {
  float a[8], b[4];
  for (int i = 0; i < 8; ++i) a[i] = l[i] + l[i + 8];
  for (int i = 0; i < 4; ++i) b[i] = a[i] + a[i + 4];
  return (b[0] + b[2]) + (b[1] + b[3]);
}

// p[0..n) ← softmax(p), util/softmax.hpp's (shared by the reference and the vector kernels, and with the sampler).
void softmax_in_place(float* p, int64_t n) { softmax(p, size_t(n), p); }

}  // namespace

// ---------------------------------------------------------------------------------------------------------------
// References: the orders of attention_kernels.hpp, one value at a time.

void indexer_scores_reference(const float* q, const float* wt, const IndexerTopkArgs& a, int64_t s0, int64_t s1,
                              float* scores, WorkerScratch scratch) {
  const int64_t H = a.n_heads, D = a.head_dim, Hp = (H + 15) / 16 * 16;
  float* decoded = a.k_packed.packed() ? scratch.get<float>(ScratchSlot::IndexerKeys, size_t(D)) : nullptr;
  for (int64_t s = s0; s < s1; ++s) {
    const int64_t row = cache_row(a.block_table, a.block_tokens, s);
    float key_scale = a.k_scale.data ? a.k_scale.row(row)[0] : 1.0f;
    const float* k = a.k.data ? a.k.row(row) : nullptr;
    if (a.k_packed.packed()) {
      key_scale = kvfmt::decode_index_key(a.k_packed, row, decoded);
      k = decoded;
    }
    float lanes[16];
    for (int64_t h = 0; h < Hp; ++h) {
      float d = 0.0f;
      for (int64_t i = 0; i < D; ++i) d = std::fma(h < H ? q[h * D + i] : 0.0f, k[i], d);
      const float v = (h < H ? wt[h] : 0.0f) * std::max(d, 0.0f);
      lanes[h % 16] = h < 16 ? v : lanes[h % 16] + v;
    }
    scores[s] = tree16(lanes) * key_scale;
  }
}

void mla_absorbed_reference(const MlaArgs& a, const int32_t* keys, int64_t n, int64_t t, int64_t h0, int64_t h1,
                            WorkerScratch scratch) {
  if (!a.wkv_b.data) throw Error(ErrorCode::Internal, "mla_absorbed_reference needs the fp32 kv_b copy");
  const int64_t dn = a.nope_dim, dr = a.rope_dim, dv = a.v_dim, C = a.latent.cols;
  const int64_t qk_head = dn + dr, kv_head = dn + dv;
  const float** lat_rows = scratch.get<const float*>(ScratchSlot::MlaRowPtrs, size_t(n));
  const float** kpe_rows = scratch.get<const float*>(ScratchSlot::MlaRopePtrs, size_t(n));
  gather_latent_rows(a, keys, 0, n, decoded_rows(a, n, scratch), lat_rows, kpe_rows);
  auto lat = [&](int64_t j) { return lat_rows[size_t(j)]; };
  auto kpe = [&](int64_t j) { return kpe_rows[size_t(j)]; };
  float* q_abs = scratch.get<float>(ScratchSlot::MlaQAbs, size_t(C));
  float* p = scratch.get<float>(ScratchSlot::MlaProbs, size_t(n));
  float* o_lat = scratch.get<float>(ScratchSlot::MlaOutLatent, size_t(C));
  for (int64_t h = h0; h < h1; ++h) {
    const float* qn = a.q.row(t) + h * qk_head;
    const float* qr = qn + dn;
    float* o = a.out.row(t) + h * dv;
    if (n == 0) {
      std::fill(o, o + dv, 0.0f);
      continue;
    }
    std::fill_n(q_abs, C, 0.0f);
    for (int64_t d = 0; d < dn; ++d) {
      const float* w = a.wkv_b.row(h * kv_head + d);
      for (int64_t c = 0; c < C; ++c) q_abs[size_t(c)] = std::fma(qn[d], w[c], q_abs[size_t(c)]);
    }
    for (int64_t j = 0; j < n; ++j) {
      float lanes[16] = {};
      const float* l = lat(j);
      const float* r = kpe(j);
      for (int64_t c = 0; c < C; ++c) lanes[c % 16] = std::fma(q_abs[size_t(c)], l[c], lanes[c % 16]);
      for (int64_t e = 0; e < dr; ++e) lanes[(C + e) % 16] = std::fma(qr[e], r[e], lanes[(C + e) % 16]);
      p[size_t(j)] = tree16(lanes) * a.softmax_scale;
    }
    softmax_in_place(p, n);
    std::fill_n(o_lat, C, 0.0f);
    for (int64_t j = 0; j < n; ++j) {
      const float* l = lat(j);
      for (int64_t c = 0; c < C; ++c) o_lat[size_t(c)] = std::fma(p[size_t(j)], l[c], o_lat[size_t(c)]);
    }
    for (int64_t v = 0; v < dv; ++v) {
      float lanes[16] = {};
      const float* w = a.wkv_b.row(h * kv_head + dn + v);
      for (int64_t c = 0; c < C; ++c) lanes[c % 16] = std::fma(o_lat[size_t(c)], w[c], lanes[c % 16]);
      o[v] = tree16(lanes);
    }
  }
}

void mla_mha_reference(const MlaArgs& a, const float* kv, const int32_t* keys, int64_t n, int64_t t, int64_t h,
                       WorkerScratch scratch) {
  const int64_t H = a.n_heads, dn = a.nope_dim, dr = a.rope_dim, dv = a.v_dim, kv_head = dn + dv;
  const float* q = a.q.row(t) + h * (dn + dr);
  float* o = a.out.row(t) + h * dv;
  if (n == 0) {
    std::fill(o, o + dv, 0.0f);
    return;
  }
  auto row = [&](int64_t j) { return kv + (int64_t(keys[j]) * H + h) * kv_head; };
  float* p = scratch.get<float>(ScratchSlot::MlaProbs, size_t(n));
  for (int64_t j = 0; j < n; ++j) {
    float lanes[16] = {};
    const float* k = row(j);
    const float* r = a.k_pe.row(cache_row(a.block_table, a.block_tokens, keys[j]));
    for (int64_t c = 0; c < dn; ++c) lanes[c % 16] = std::fma(q[c], k[c], lanes[c % 16]);
    for (int64_t e = 0; e < dr; ++e) lanes[(dn + e) % 16] = std::fma(q[dn + e], r[e], lanes[(dn + e) % 16]);
    p[size_t(j)] = tree16(lanes) * a.softmax_scale;
  }
  softmax_in_place(p, n);
  std::fill(o, o + dv, 0.0f);
  for (int64_t j = 0; j < n; ++j) {
    const float* v = row(j) + dn;
    for (int64_t d = 0; d < dv; ++d) o[d] = std::fma(p[size_t(j)], v[d], o[d]);
  }
}

#ifdef DSINFER_HAVE_AVX2_KERNELS
// ---------------------------------------------------------------------------------------------------------------
// 16 lanes as one zmm.
#ifdef __clang__  // clang has no GCC target pragma (sanitizer and fuzz builds): the same as an attribute
#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma,f16c"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx2,fma,f16c")
#endif
namespace avx512 {
namespace {
struct V {
  __m512 v;
  static V zero() { return {_mm512_setzero_ps()}; }
  static V load(const float* p) { return {_mm512_loadu_ps(p)}; }
  static V set1(float x) { return {_mm512_set1_ps(x)}; }
  void store(float* p) const { _mm512_storeu_ps(p, v); }
  // std::max(d, 0.0f): MAXPS returns its second operand when the first is not greater (ties of ±0, NaN).
  static V relu(V d) { return {_mm512_max_ps(_mm512_setzero_ps(), d.v)}; }
  // 16 e4m3 bytes as fl(e4m3 · scale), given scale256 = scale · 2^8: the byte becomes the IEEE half of value
  // e4m3 · 2^-8 (fp8_gemm.cpp explains the bit trick), widened exactly, then one rounding in the product.
  static V e4m3(const uint8_t* b, float scale256) {
    const __m256i w = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b)));
    const __m256i h = _mm256_and_si256(_mm256_slli_epi16(w, 7), _mm256_set1_epi16(int16_t(0xBF80)));
    return {_mm512_mul_ps(_mm512_cvtph_ps(h), _mm512_set1_ps(scale256))};
  }
  static V bf16(const uint8_t* p) {
    const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
    return {_mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16))};
  }
  float tree() const {
    const __m256 a = _mm256_add_ps(_mm512_castps512_ps256(v),
                                   _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
    const __m128 b = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    const __m128 c = _mm_add_ps(b, _mm_movehl_ps(b, b));
    return _mm_cvtss_f32(_mm_add_ss(c, _mm_movehdup_ps(c)));
  }
};
// (Free functions: GCC does not apply the target pragma to friends defined in the class.)
inline V fma(V a, V b, V c) { return {_mm512_fmadd_ps(a.v, b.v, c.v)}; }
inline V operator+(V a, V b) { return {_mm512_add_ps(a.v, b.v)}; }
inline V operator*(V a, V b) { return {_mm512_mul_ps(a.v, b.v)}; }
constexpr int kKeys = 4;   // MLA keys per score tile
constexpr int kHeads = 4;  // MLA heads per pass over the keys
// Indexer keys per tile, for queries of NC × 16 heads (NC accumulators per key) and of at most 8 heads. 8 chains
// for 16 heads (4 left the two FMA units waiting: bench_cpu_indexer's op 1.10-1.17x faster with 8 on an AVX-512 VM,
// 12 measured slower than 8); 4 keys for 32-64 heads (more measured no faster, fewer slower at 64 heads).
constexpr int indexer_keys_per_tile(int nc) { return nc == 1 ? 8 : 4; }
constexpr int kIndexerHalfKeys = 8;  // queries of at most 8 heads (one ymm accumulator per key): 1.18-1.23x over 4
constexpr int kColsA = 8;  // q_abs columns (×16) per pass over W_UK
constexpr int kColsC = 4;  // o_lat columns (×16) per pass over the keys
#include "backend/cpu/attention_kernels.inc"
}  // namespace
}  // namespace avx512
#ifdef __clang__
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

// ---------------------------------------------------------------------------------------------------------------
// 16 lanes as two ymm: lanes 0-7 and 8-15.
#ifdef __clang__
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
#endif
namespace avx2 {
namespace {
struct V {
  __m256 lo, hi;
  static V zero() { return {_mm256_setzero_ps(), _mm256_setzero_ps()}; }
  static V load(const float* p) { return {_mm256_loadu_ps(p), _mm256_loadu_ps(p + 8)}; }
  static V set1(float x) { return {_mm256_set1_ps(x), _mm256_set1_ps(x)}; }
  void store(float* p) const {
    _mm256_storeu_ps(p, lo);
    _mm256_storeu_ps(p + 8, hi);
  }
  static V relu(V d) { return {_mm256_max_ps(_mm256_setzero_ps(), d.lo), _mm256_max_ps(_mm256_setzero_ps(), d.hi)}; }
  static V e4m3(const uint8_t* b, float scale256) {
    const __m256i w = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b)));
    const __m256i h = _mm256_and_si256(_mm256_slli_epi16(w, 7), _mm256_set1_epi16(int16_t(0xBF80)));
    const __m256 s = _mm256_set1_ps(scale256);
    return {_mm256_mul_ps(_mm256_cvtph_ps(_mm256_castsi256_si128(h)), s),
            _mm256_mul_ps(_mm256_cvtph_ps(_mm256_extracti128_si256(h, 1)), s)};
  }
  static V bf16(const uint8_t* p) {
    const __m128i a = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 16));
    return {_mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(a), 16)),
            _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(b), 16))};
  }
  float tree() const {
    const __m256 a = _mm256_add_ps(lo, hi);
    const __m128 b = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    const __m128 c = _mm_add_ps(b, _mm_movehl_ps(b, b));
    return _mm_cvtss_f32(_mm_add_ss(c, _mm_movehdup_ps(c)));
  }
};
inline V fma(V a, V b, V c) { return {_mm256_fmadd_ps(a.lo, b.lo, c.lo), _mm256_fmadd_ps(a.hi, b.hi, c.hi)}; }
inline V operator+(V a, V b) { return {_mm256_add_ps(a.lo, b.lo), _mm256_add_ps(a.hi, b.hi)}; }
inline V operator*(V a, V b) { return {_mm256_mul_ps(a.lo, b.lo), _mm256_mul_ps(a.hi, b.hi)}; }
constexpr int kKeys = 2;
constexpr int kHeads = 2;
constexpr int kColsA = 4;
constexpr int kColsC = 2;
// An FMA's result is ready 4-5 cycles later and two issue per cycle, so 8-10 independent accumulator chains keep
// the units busy: with 4 (two keys of 16 heads) the scan ran at under 0.4 of the FMA rate (bench_cpu_indexer).
// 12 of the 16 ymm registers hold accumulators (two per key and 16-head chunk), two the query, one the broadcast
// key value.
constexpr int indexer_keys_per_tile(int nc) { return nc == 1 ? 6 : nc == 2 ? 3 : nc == 3 ? 2 : 1; }
constexpr int kIndexerHalfKeys = 8;  // queries of at most 8 heads: one ymm accumulator per key
#include "backend/cpu/attention_kernels.inc"
}  // namespace
}  // namespace avx2
#ifdef __clang__
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
#endif  // DSINFER_HAVE_AVX2_KERNELS

// ---------------------------------------------------------------------------------------------------------------
// Dispatch.

int64_t indexer_query_floats(int64_t heads, int64_t dim) {
  const int64_t Hp = (heads + 15) / 16 * 16;
  const int64_t tiles = cpu_kernel_isa() == CpuIsa::Amx ? (indexer_amx_query_halves(Hp, dim) + 1) / 2 : 0;
  return dim * Hp + Hp + tiles;
}

void indexer_prepare_query(const float* q, const float* wt, int64_t heads, int64_t dim, float* storage,
                           IndexerQuery& out) {
  const int64_t Hp = (heads + 15) / 16 * 16;
  out.q = q;
  out.wt = wt;
  out.heads = heads;
  out.dim = dim;
  out.padded = Hp;
  out.qT = storage;
  out.wp = storage + dim * Hp;
  for (int64_t i = 0; i < dim; ++i)
    for (int64_t h = 0; h < Hp; ++h) out.qT[size_t(i * Hp + h)] = h < heads ? q[h * dim + i] : 0.0f;
  for (int64_t h = 0; h < Hp; ++h) out.wp[size_t(h)] = h < heads ? wt[h] : 0.0f;
  out.qB = nullptr;
  if (cpu_kernel_isa() == CpuIsa::Amx) indexer_amx_prepare_query(out, reinterpret_cast<uint16_t*>(out.wp + Hp));
}

void indexer_scores_many(const IndexerQuery* const* qs, int nq, const IndexerTopkArgs& a, int64_t s0,
                         const int64_t* ends, float* const* scores, WorkerScratch scratch) {
  if (nq <= 0) return;
  if (nq > kIndexerMaxQueries) throw Error(ErrorCode::Internal, "indexer_scores_many: too many queries");
  int64_t s1 = s0;
  for (int i = 0; i < nq; ++i) s1 = std::max(s1, ends[i]);
#ifdef DSINFER_HAVE_AVX2_KERNELS
  const IndexerQuery& q = *qs[0];
  if (q.padded <= 64 && q.heads == a.n_heads && q.dim == a.head_dim) {
    if (cpu_kernel_isa() == CpuIsa::Amx && indexer_scores_amx(qs, nq, a, s0, ends, scores, scratch)) return;
    if (cpu_vector_isa() == CpuIsa::Avx512)
      return avx512::indexer_scores_vec(qs, nq, a, s0, s1, ends, scores, scratch);
    if (cpu_vector_isa() == CpuIsa::Avx2) return avx2::indexer_scores_vec(qs, nq, a, s0, s1, ends, scores, scratch);
  }
#endif
  for (int i = 0; i < nq; ++i)
    if (ends[i] > s0) indexer_scores_reference(qs[i]->q, qs[i]->wt, a, s0, ends[i], scores[i], scratch);
}

void indexer_scores(const IndexerQuery& q, const IndexerTopkArgs& a, int64_t s0, int64_t s1, float* scores,
                    WorkerScratch scratch) {
  const IndexerQuery* qs[1] = {&q};
  float* out[1] = {scores};
  indexer_scores_many(qs, 1, a, s0, &s1, out, scratch);
}

namespace {
// The kv_b source of the vector kernel, or none (kind < 0).
KvbRows kv_b_rows(const MlaArgs& a) {
  KvbRows w;
  w.kind = -1;
  const int64_t H = a.n_heads, C = a.latent.cols, rows = H * (a.nope_dim + a.v_dim);
  if (C % 16 != 0 || a.rope_dim % 16 != 0 || a.k_pe.cols != a.rope_dim) return w;
  const Weight* s = a.wkv_b_stored;
  if (s && s->present() && s->rows() == rows && s->cols() == C) {
    // FP8 with a power-of-two block of at least 16 (DeepSeek's is 128): block indices by shifts.
    if (s->dtype == DType::F8_E4M3 && s->scale_inv && s->block >= 16 && (s->block & (s->block - 1)) == 0) {
      w.kind = kKvbFp8;
      w.scale_cols = (C + s->block - 1) / s->block;
      w.block_shift = __builtin_ctzll(uint64_t(s->block));
      w.scale_inv = s->scale_inv;
    } else if (s->dtype == DType::BF16) {
      w.kind = kKvbBf16;
    }
    w.bytes = s->data;
    w.cols = C;
  }
  if (w.kind < 0 && a.wkv_b.data && a.wkv_b.rows == rows && a.wkv_b.cols == C) {
    w.kind = kKvbF32;
    w.f32 = a.wkv_b.data;
    w.ld = a.wkv_b.ld;
  }
  return w;
}
}  // namespace

bool mla_absorbed_vectorized(const MlaArgs& a) {
#ifdef DSINFER_HAVE_AVX2_KERNELS
  return cpu_vector_isa() != CpuIsa::Scalar && kv_b_rows(a).kind >= 0;
#else
  (void)a;
  return false;
#endif
}

int64_t mla_absorbed_head_block() {
#ifdef DSINFER_HAVE_AVX2_KERNELS
  if (cpu_vector_isa() == CpuIsa::Avx512) return avx512::kHeads;
  if (cpu_vector_isa() == CpuIsa::Avx2) return avx2::kHeads;
#endif
  return 1;
}

void mla_gather_rows(const MlaArgs& a, const int32_t* keys, int64_t j0, int64_t j1, float* decoded, const float** lat,
                     const float** kpe) {
#ifdef DSINFER_HAVE_AVX2_KERNELS
  if (cpu_vector_isa() != CpuIsa::Scalar)
    return gather_latent_rows(a, keys, j0, j1, decoded, lat, kpe,
                              cpu_vector_isa() == CpuIsa::Avx512 ? avx512::decode_latent_vec : avx2::decode_latent_vec);
#endif
  gather_latent_rows(a, keys, j0, j1, decoded, lat, kpe);
}

void mla_absorbed_gathered(const MlaArgs& a, const float* const* lat, const float* const* kpe, int64_t n, int64_t t,
                           int64_t h0, int64_t h1, WorkerScratch scratch) {
#ifdef DSINFER_HAVE_AVX2_KERNELS
  const KvbRows w = kv_b_rows(a);
  if (cpu_vector_isa() != CpuIsa::Scalar && w.kind >= 0 && n > 0) {
    const int64_t C = a.latent.cols, heads = std::max<int64_t>(avx512::kHeads, avx2::kHeads);
    const MlaScratch s{scratch.get<float>(ScratchSlot::MlaQAbs, size_t(heads * C)),
                       scratch.get<float>(ScratchSlot::MlaProbs, size_t(heads * n)),
                       scratch.get<float>(ScratchSlot::MlaOutLatent, size_t(heads * C))};
    if (cpu_vector_isa() == CpuIsa::Avx512) return avx512::mla_absorbed_vec(a, w, lat, kpe, n, t, h0, h1, s);
    return avx2::mla_absorbed_vec(a, w, lat, kpe, n, t, h0, h1, s);
  }
#endif
  (void)a, (void)lat, (void)kpe, (void)n, (void)t, (void)h0, (void)h1, (void)scratch;
  throw Error(ErrorCode::Internal, "mla_absorbed_gathered without a vector kernel for these arguments");
}

void mla_absorbed(const MlaArgs& a, const int32_t* keys, int64_t n, int64_t t, int64_t h0, int64_t h1,
                  WorkerScratch scratch, bool rows_ready) {
  if (!mla_absorbed_vectorized(a) || n <= 0) return mla_absorbed_reference(a, keys, n, t, h0, h1, scratch);
  // (With rows_ready these are the previous call's: the same n, so the same memory, still holding its rows.)
  const float** lat = scratch.get<const float*>(ScratchSlot::MlaRowPtrs, size_t(n));
  const float** kpe = scratch.get<const float*>(ScratchSlot::MlaRopePtrs, size_t(n));
  if (!rows_ready) mla_gather_rows(a, keys, 0, n, decoded_rows(a, n, scratch), lat, kpe);
  mla_absorbed_gathered(a, lat, kpe, n, t, h0, h1, scratch);
}

void mla_mha(const MlaArgs& a, const float* kv, const int32_t* keys, int64_t n, int64_t t, int64_t h,
             WorkerScratch scratch) {
#ifdef DSINFER_HAVE_AVX2_KERNELS
  const bool shapes = a.nope_dim % 16 == 0 && a.rope_dim % 16 == 0 && a.v_dim % 16 == 0;
  if (cpu_vector_isa() != CpuIsa::Scalar && shapes && n > 0) {
    float* p = scratch.get<float>(ScratchSlot::MlaProbs, size_t(n));
    const float** rows = scratch.get<const float*>(ScratchSlot::MlaRowPtrs, size_t(n));
    const float** kpe = scratch.get<const float*>(ScratchSlot::MlaRopePtrs, size_t(n));
    const float** v = scratch.get<const float*>(ScratchSlot::MlaValuePtrs, size_t(n));
    const int64_t H = a.n_heads, kv_head = a.nope_dim + a.v_dim;
    for (int64_t j = 0; j < n; ++j) {
      rows[j] = kv + (int64_t(keys[j]) * H + h) * kv_head;
      kpe[j] = a.k_pe.row(cache_row(a.block_table, a.block_tokens, keys[j]));
    }
    if (cpu_vector_isa() == CpuIsa::Avx512) return avx512::mha_head_vec(a, rows, kpe, n, t, h, p, v);
    return avx2::mha_head_vec(a, rows, kpe, n, t, h, p, v);
  }
#endif
  mla_mha_reference(a, kv, keys, n, t, h, scratch);
}

}  // namespace dsinfer
