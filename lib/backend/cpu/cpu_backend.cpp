#include "backend/cpu/cpu_backend.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <numeric>
#include <vector>

#include "dsinfer/error.hpp"
#include "backend/cpu/attention_kernels.hpp"
#include "backend/cpu/dense_gemm.hpp"
#include "backend/cpu/fp8_gemm.hpp"
#include "backend/cpu/quantize_kernels.hpp"
#include "backend/cpu/simd.hpp"
#include "backend/cpu/topk_select.hpp"
#include "backend/kv_format.hpp"

#include <sys/mman.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif
#ifndef MADV_PAGEOUT
#define MADV_PAGEOUT 21
#endif

namespace dsinfer {

namespace {

constexpr float kE4m3Max = 448.0f;
constexpr int64_t kActGroup = 128;  // activation quantization group (1x128), spec §4.3

void require(bool ok, const char* what) {
  if (!ok) throw Error(ErrorCode::Internal, fmt::format("cpu backend: {}", what));
}

// Contiguous fp32 dot product with several partial sums (keeps rounding error low and vectorizes). The loops that
// call it are compiled for AVX2 and baseline x86-64 and the best is chosen at load time (GCC function
// multiversioning on the CPU's features: an "arch=haswell" clone would be chosen only on a CPU that identifies as
// Haswell). The summation order is the same in every version and -ffp-contract=off (CMakeLists.txt) keeps FMAs out,
// so results do not depend on the machine.
// Sanitizer builds go without: the IFUNC resolvers run during relocation, before the sanitizer runtime starts.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(DSINFER_NO_MULTIVERSION)
#define DSINFER_MULTIVERSION __attribute__((target_clones("avx2", "default")))
#else
#define DSINFER_MULTIVERSION
#endif
inline __attribute__((always_inline)) float dot(const float* a, const float* b, int64_t n) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j) acc[j] += a[i + j] * b[i + j];
  float s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

// dot(a, b[r], n) for four vectors b[r] at once: each in dot()'s order, but four independent chains in flight
// instead of one (a single dot waits on its adds' latency).
typedef float v8f __attribute__((vector_size(32)));  // GCC vector extension: one ymm, or two xmm without AVX
#pragma GCC diagnostic ignored "-Wpsabi"  // load8 is always inlined: no call passes a v8f
inline __attribute__((always_inline)) v8f load8(const float* p) {
  v8f v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline __attribute__((always_inline)) void dot4(const float* a, const float* const* b, int64_t n, float* out) {
  v8f acc0 = {}, acc1 = {}, acc2 = {}, acc3 = {};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const v8f av = load8(a + i);
    acc0 += av * load8(b[0] + i);
    acc1 += av * load8(b[1] + i);
    acc2 += av * load8(b[2] + i);
    acc3 += av * load8(b[3] + i);
  }
  const v8f acc[4] = {acc0, acc1, acc2, acc3};
  for (int r = 0; r < 4; ++r) {
    const v8f c = acc[r];
    float s = ((c[0] + c[1]) + (c[2] + c[3])) + ((c[4] + c[5]) + (c[6] + c[7]));
    for (int64_t k = i; k < n; ++k) s += a[k] * b[r][k];
    out[r] = s;
  }
}

// y[t*ldy] = x[t]·w for every row t of x: one weight row against all activation rows (the inner loop of linear).
DSINFER_MULTIVERSION void row_times_rows(const float* x, int64_t ldx, int64_t T, const float* w, int64_t K, float* y,
                                         int64_t ldy) {
  int64_t t = 0;
  for (; t + 4 <= T; t += 4) {
    const float* rows[4] = {x + t * ldx, x + (t + 1) * ldx, x + (t + 2) * ldx, x + (t + 3) * ldx};
    float out[4];
    dot4(w, rows, K, out);  // w·x[t] = x[t]·w: the same products
    for (int r = 0; r < 4; ++r) y[(t + r) * ldy] = out[r];
  }
  for (; t < T; ++t) y[t * ldy] = dot(x + t * ldx, w, K);
}

// Causal work grows with the query's position: visiting queries as 0, T-1, 1, T-2, ... makes every contiguous
// chunk of a parallel loop hold early and late queries alike, so the threads finish together.
inline int64_t balanced_row(int64_t i, int64_t T) { return (i % 2 == 0) ? i / 2 : T - 1 - i / 2; }

// A vector weight (norm gains, biases: BF16/F16/F32) in fp32, in the caller's scratch at `slot` (kept between
// calls, so the per-token ops that read such weights allocate nothing once warm).
const float* weight_vector_f32(const Weight& w, ScratchArena& scratch, ScratchSlot slot) {
  const int64_t n = w.numel();
  if (w.dtype == DType::F8_E4M3) throw Error(ErrorCode::Unsupported, fmt::format("vector weight {} is FP8", w.name));
  float* buf = scratch.get<float>(0, slot, size_t(n));
  weight_row_f32(w, 0, 0, n, buf);  // row 0 from column 0: the n stored values in order (no scales)
  return buf;
}
float silu(float x) { return x / (1.0f + std::exp(-x)); }

// The caller's scratch for a quantized activation matrix [T, K] and its [T, G] scales, shared by linear and
// linear_many (kept between calls: no allocation once grown). Loops run by other threads get these pointers.
struct QuantizedInput {
  float *xq, *xs;
};
QuantizedInput quantized_input_scratch(ScratchArena& scratch, int64_t T, int64_t K, int64_t G) {
  return {scratch.get<float>(0, ScratchSlot::LinearQuantized, size_t(T * K)),
          scratch.get<float>(0, ScratchSlot::LinearScales, size_t(T * G))};
}


}  // namespace

float fp8_group_scale(float amax, bool ue8m0) {
  amax = std::max(amax, 1e-4f);
  float s = amax / kE4m3Max;
  if (!ue8m0) return s;
  int e;
  const float m = std::frexp(s, &e);  // s = m·2^e, m in [0.5, 1)
  return m == 0.5f ? std::ldexp(1.0f, e - 1) : std::ldexp(1.0f, e);
}

void weight_row_f32(const Weight& w, int64_t r, int64_t c0, int64_t n, float* out) {
  const int64_t cols = w.cols();
  const int64_t base = r * cols + c0;
  switch (w.dtype) {
    case DType::F32:
      std::memcpy(out, reinterpret_cast<const float*>(w.data) + base, size_t(n) * 4);
      return;
    case DType::BF16: {
      const auto* p = reinterpret_cast<const uint16_t*>(w.data) + base;
      for (int64_t i = 0; i < n; ++i) out[i] = bf16_to_f32(p[i]);
      return;
    }
    case DType::F16: {
      const auto* p = reinterpret_cast<const uint16_t*>(w.data) + base;
      for (int64_t i = 0; i < n; ++i) out[i] = f16_to_f32(p[i]);
      return;
    }
    case DType::F8_E4M3: {
      const uint8_t* p = w.data + base;
      if (!w.scale_inv) throw Error(ErrorCode::Internal, fmt::format("FP8 weight {} has no scale", w.name));
      const int64_t scale_cols = (cols + w.block - 1) / w.block;
      const float* srow = w.scale_inv + (r / w.block) * scale_cols;
      const float* table = e4m3_table();
      for (int64_t i = 0; i < n;) {  // one scale per run of columns inside a 128-wide block
        const int64_t col = c0 + i, end = std::min(n, i + (w.block - col % w.block));
        const float sc = srow[col / w.block];
        for (; i < end; ++i) out[i] = table[p[i]] * sc;
      }
      return;
    }
    default:
      throw Error(ErrorCode::Unsupported,
                  fmt::format("weight {} has dtype {}, which linear layers do not take", w.name, dtype_name(w.dtype)));
  }
}

CpuBackend::CpuBackend(const BackendOptions& opts)
    : pool_(opts.n_threads), scratch_(pool_.size()), buffers_(BufferCache::create()) {}

CpuBackend::~CpuBackend() { buffers_->release_ref(); }

void CpuBackend::discard(void* p, size_t bytes) {
  const uintptr_t page = uintptr_t(sysconf(_SC_PAGESIZE));
  const uintptr_t begin = (uintptr_t(p) + page - 1) / page * page, end = (uintptr_t(p) + bytes) / page * page;
  if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED);
}

void CpuBackend::release_memory() {
  buffers_->trim();
  scratch_.release();
}

BackendMemoryStats CpuBackend::memory_stats() const {
  return {scratch_.bytes(), buffers_->cached_bytes()};
}

Buffer CpuBackend::allocate(size_t bytes, bool zero) {
  void* p = buffers_->take(bytes, zero);
  if (!p) throw Error(ErrorCode::OutOfMemory, fmt::format("cpu backend: cannot allocate {} bytes", bytes));
  return Buffer(p, bytes, &BufferCache::free_block);
}

void CpuBackend::fill_zero(Tensor2D x) {
  for (int64_t r = 0; r < x.rows; ++r) std::fill_n(x.row(r), x.cols, 0.0f);
}

void CpuBackend::copy(Tensor2D dst, Tensor2D src) {
  require(dst.rows == src.rows && dst.cols == src.cols, "copy shape mismatch");
  for (int64_t r = 0; r < src.rows; ++r) std::memmove(dst.row(r), src.row(r), size_t(src.cols) * 4);
}

void CpuBackend::copy_bytes(void* dst, const void* src, size_t bytes) { std::memmove(dst, src, bytes); }
void CpuBackend::bytes_to_host(void* dst, const void* src, size_t bytes) { std::memcpy(dst, src, bytes); }
void CpuBackend::bytes_from_host(void* dst, const void* src, size_t bytes) { std::memcpy(dst, src, bytes); }

void CpuBackend::round_to_bf16(Tensor2D x) {
  for (int64_t r = 0; r < x.rows; ++r)
    for (float* v = x.row(r); v < x.row(r) + x.cols; ++v) *v = bf16_to_f32(f32_to_bf16(*v));
}

void CpuBackend::kv_pack(const KvPackArgs& a) {
  const PackedKv& d = a.dst;
  const int64_t n = a.src.rows, C = d.dim;
  require(d.packed() && a.src.cols == C, "kv_pack shapes");
  if (a.latent) require(a.extra.rows == n && a.extra.cols == d.rope_dim, "kv_pack rope shape");
  else require(!a.extra.data || (a.extra.rows == n && a.extra.cols == 1), "kv_pack scale shape");
  float* q = scratch_.get<float>(0, ScratchSlot::KvPackRow, size_t(C));
  auto put_f32 = [](uint8_t* p, float v) { std::memcpy(p, &v, 4); };
  auto put_bf16 = [](uint8_t* p, const float* x, int64_t m) {
    for (int64_t i = 0; i < m; ++i) {
      const uint16_t h = f32_to_bf16(x[i]);
      std::memcpy(p + 2 * i, &h, 2);
    }
  };
  for (int64_t r = 0; r < n; ++r) {
    const float* x = a.src.row(r);
    if (a.latent) {
      uint8_t* row = kvfmt::latent_row(d, a.row0 + r);
      if (d.dtype == KvDtype::FP8) {
        // The same group quantization as fp8_quantize: the stored e4m3 · scale is, bit for bit, the value the
        // quantize-dequantize of the f32 cache keeps.
        for (int64_t g = 0; g < kvfmt::latent_scales(C); ++g) {
          const int64_t c0 = g * kvfmt::kFp8Group, m = std::min(kvfmt::kFp8Group, C - c0);
          const float s = fp8_quantize_group(x + c0, m, a.ue8m0, /*dequantize=*/false, q + c0);
          put_f32(row + C + 4 * g, s);
        }
        for (int64_t i = 0; i < C; ++i) row[i] = f32_to_e4m3(q[size_t(i)]);  // exact: q holds e4m3 values
        row += C + 4 * kvfmt::latent_scales(C);
      } else {
        put_bf16(row, x, C);
        row += 2 * C;
      }
      put_bf16(row, a.extra.row(r), d.rope_dim);
    } else {
      uint8_t* key = kvfmt::index_key_values(d, a.row0 + r);
      float scale = a.extra.data ? a.extra.row(r)[0] : 1.0f;
      if (d.dtype == KvDtype::FP8) {
        const float* v = x;
        if (!a.key_is_e4m3) {  // one group over the whole key, its scale folded into the given one
          scale *= fp8_quantize_group(x, C, a.ue8m0, /*dequantize=*/false, q);
          v = q;
        }
        for (int64_t i = 0; i < C; ++i) key[i] = f32_to_e4m3(v[i]);
      } else {
        put_bf16(key, x, C);
      }
      put_f32(kvfmt::index_key_scale(d, a.row0 + r), scale);
    }
  }
}

void CpuBackend::to_host(float* dst, Tensor2D src) {
  for (int64_t r = 0; r < src.rows; ++r) std::memcpy(dst + r * src.cols, src.row(r), size_t(src.cols) * 4);
}

void CpuBackend::from_host(Tensor2D dst, const float* src) {
  for (int64_t r = 0; r < dst.rows; ++r) std::memcpy(dst.row(r), src + r * dst.cols, size_t(dst.cols) * 4);
}

Matrix CpuBackend::dequantize(const Weight& w) {
  Matrix m = matrix(w.rows(), w.cols());
  pool_.parallel_for(w.rows(), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) weight_row_f32(w, r, 0, w.cols(), m.view.row(r));
  });
  return m;
}

void CpuBackend::embed(const Weight& table, std::span<const int32_t> ids, Tensor2D out) {
  require(out.rows == int64_t(ids.size()) && out.cols == table.cols(), "embed shape mismatch");
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] < 0 || ids[i] >= table.rows())
      throw Error(ErrorCode::InvalidArgument,
                  fmt::format("token id {} is out of range: the model's vocabulary has {} entries", ids[i], table.rows()));
    weight_row_f32(table, ids[i], 0, table.cols(), out.row(int64_t(i)));
  }
}

void CpuBackend::add_rms_norm(Tensor2D residual, Tensor2D x, const Weight& w, float eps, Tensor2D out) {
  if (x.data) add(residual, x);
  rms_norm(residual, w, eps, out);
}

void CpuBackend::rms_norm(Tensor2D x, const Weight& w, float eps, Tensor2D out) {
  require(w.numel() == x.cols && out.cols == x.cols && out.rows == x.rows, "rms_norm shape mismatch");
  const float* g = weight_vector_f32(w, scratch_, ScratchSlot::NormGain);
  for (int64_t r = 0; r < x.rows; ++r) {
    const float* xi = x.row(r);
    float* yo = out.row(r);
    double ss = 0;
    for (int64_t i = 0; i < x.cols; ++i) ss += double(xi[i]) * xi[i];
    const float inv = float(1.0 / std::sqrt(ss / double(x.cols) + eps));
    for (int64_t i = 0; i < x.cols; ++i) yo[i] = g[i] * (xi[i] * inv);
  }
}

void CpuBackend::layer_norm(Tensor2D x, const Weight& w, const Weight& b, float eps, Tensor2D out) {
  require(w.numel() == x.cols && b.numel() == x.cols, "layer_norm shape mismatch");
  const float* g = weight_vector_f32(w, scratch_, ScratchSlot::NormGain);
  const float* beta = weight_vector_f32(b, scratch_, ScratchSlot::NormBias);
  for (int64_t r = 0; r < x.rows; ++r) {
    const float* xi = x.row(r);
    float* yo = out.row(r);
    double mean = 0, var = 0;
    for (int64_t i = 0; i < x.cols; ++i) mean += xi[i];
    mean /= double(x.cols);
    for (int64_t i = 0; i < x.cols; ++i) var += (xi[i] - mean) * (xi[i] - mean);
    var /= double(x.cols);  // biased, as torch.nn.LayerNorm
    const float inv = float(1.0 / std::sqrt(var + eps));
    for (int64_t i = 0; i < x.cols; ++i) yo[i] = float(xi[i] - mean) * inv * g[i] + beta[i];
  }
}

void CpuBackend::linear(Tensor2D x, const Weight& w, Tensor2D out, const LinearQuant& q) {
  const int64_t T = x.rows, K = x.cols, N = w.rows();
  if (w.cols() != K || out.rows != T || out.cols != N)
    throw Error(ErrorCode::Internal, fmt::format("linear {}: x [{}, {}] · Wᵀ [{}, {}] -> out [{}, {}]", w.name, T, K,
                                                 N, w.cols(), out.rows, out.cols));
  require(out.data != x.data, "linear output must not alias its input");
  const bool fp8_path = q.fp8_activations && w.dtype == DType::F8_E4M3;
  if (!fp8_path && w.dtype != DType::F8_E4M3) {
    // BF16/F16/F32 weights: fp32 GEMM over the packed panels (dense_gemm.hpp), packed now if never prepared.
    if (const PackedDenseWeight* packed = packed_dense(w)) {
      dense_gemm(x.data, x.ld, T, *packed, out.data, out.ld, pool_);
    } else {
      const PackedDenseWeight tmp = pack_dense_weight(w);
      dense_gemm(x.data, x.ld, T, tmp, out.data, out.ld, pool_);
    }
    return;
  }
  if (!fp8_path) {
    // Reference numerics for an FP8 weight: dequantized to fp32 (W = w8 · scale_inv), plain fp32 GEMM.
    pool_.parallel_for(N, [&](int64_t n0, int64_t n1, int worker) {
      float* wrow = scratch_.get<float>(worker, ScratchSlot::LinearWeightRow, size_t(K));
      for (int64_t n = n0; n < n1; ++n) {
        weight_row_f32(w, n, 0, K, wrow);
        row_times_rows(x.data, x.ld, T, wrow, K, out.data + n, out.ld);
      }
    }, 4);
    return;
  }
  // DeepSeek's FP8 GEMM (spec §6): activations quantized per 1x128 group, fp32 partial sums per K block of the
  // e4m3 products, each promoted with (activation scale × weight block scale) into an fp32 accumulator.
  if (w.block != kActGroup)
    throw Error(ErrorCode::Unsupported, fmt::format("FP8 weight {} has block {}, only 128 is supported", w.name, w.block));
  const int64_t G = (K + kActGroup - 1) / kActGroup;
  const QuantizedInput scratch = quantized_input_scratch(scratch_, T, K, G);
  const Tensor2D xq{scratch.xq, T, K, K}, xs{scratch.xs, T, G, G};
  fp8_quantize(x, kActGroup, q.ue8m0, /*dequantize=*/false, xq, xs);
  if (const PackedFp8Weight* packed = packed_fp8(w)) {
    fp8_gemm(xq.data, K, xs.data, G, T, *packed, out.data, out.ld, pool_);
  } else {  // a weight that was never prepared (tests): pack it for this call
    const PackedFp8Weight tmp = pack_fp8_weight(w);
    fp8_gemm(xq.data, K, xs.data, G, T, tmp, out.data, out.ld, pool_);
  }
}

void CpuBackend::prepare_weight(const Weight& w) { prepare_weight(w, WeightUse::Linear); }

void CpuBackend::prepare_weight(const Weight& w, WeightUse use) {
  if (use != WeightUse::Linear || !w.present() || prepared(w)) return;
  PreparedWeight p{w.data, w.dtype, w.rows(), w.cols(), std::nullopt, std::nullopt};
  if (w.dtype == DType::F8_E4M3 && w.shape.size() == 2 && w.scale_inv && w.block == kActGroup)
    p.fp8 = pack_fp8_weight(w);
  else if (dense_gemm_supports(w))
    p.dense = pack_dense_weight(w);
  else
    return;
  prepared_.push_back(std::move(p));
  w.prepared = WeightHandle{id(), int32_t(prepared_.size() - 1)};
  // The kernels read only the packed copy from now on: hand the checkpoint's pages back so resident memory holds
  // the weight once. MADV_PAGEOUT keeps the contents (a page read again is faulted back in from the file, or was
  // never dropped if it is anonymous memory), unlike MADV_DONTNEED on private memory.
  const uintptr_t page = 4096, begin = (uintptr_t(w.data) + page - 1) / page * page,
                  end = (uintptr_t(w.data) + uintptr_t(w.numel()) * dtype_size(w.dtype)) / page * page;
  if (end > begin) (void)::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_PAGEOUT);
}

// Packed copies are found through the weight's handle; the entry must have been made from the same bytes, dtype and
// shape (a copied Weight re-pointed at other rows, such as a distributed rank's view, carries a stale handle).
const CpuBackend::PreparedWeight* CpuBackend::prepared(const Weight& w) const {
  const int32_t at = handle_index(w, prepared_.size());
  if (at < 0) return nullptr;
  const PreparedWeight& p = prepared_[size_t(at)];
  return p.host == w.data && p.dtype == w.dtype && p.rows == w.rows() && p.cols == w.cols() ? &p : nullptr;
}

const PackedFp8Weight* CpuBackend::packed_fp8(const Weight& w) const {
  const PreparedWeight* p = prepared(w);
  return p && p->fp8 ? &*p->fp8 : nullptr;
}

const PackedDenseWeight* CpuBackend::packed_dense(const Weight& w) const {
  const PreparedWeight* p = prepared(w);
  return p && p->dense ? &*p->dense : nullptr;
}

void CpuBackend::silu_mul(Tensor2D gate, Tensor2D up, Tensor2D out) {
  pool_.parallel_for(gate.rows, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r)
      for (int64_t i = 0; i < gate.cols; ++i) out.row(r)[i] = silu(gate.row(r)[i]) * up.row(r)[i];
  }, std::max<int64_t>(1, 16384 / std::max<int64_t>(1, gate.cols)));
}

void CpuBackend::add(Tensor2D acc, Tensor2D x) {
  require(acc.rows == x.rows && acc.cols == x.cols, "add shape mismatch");
  for (int64_t r = 0; r < x.rows; ++r)
    for (int64_t i = 0; i < x.cols; ++i) acc.row(r)[i] += x.row(r)[i];
}

void CpuBackend::rope(const RopeArgs& a) {
  require(a.rope_dim % 2 == 0 && a.rope_offset + a.rope_dim <= a.head_dim, "rope dims");
  const int64_t half = a.rope_dim / 2;
  float* c = scratch_.get<float>(0, ScratchSlot::RopeCos, size_t(half));
  float* s = scratch_.get<float>(0, ScratchSlot::RopeSin, size_t(half));
  for (int64_t t = 0; t < a.x.rows; ++t) {
    const float p = float(a.positions[t]);
    for (int64_t j = 0; j < half; ++j) {
      const float angle = p * a.inv_freq[j];  // fp32 product, as the reference computes the table
      c[j] = float(std::cos(double(angle)));
      s[j] = float(std::sin(double(angle)));
    }
    for (int64_t h = 0; h < a.n_heads; ++h) {
      float* v = a.x.row(t) + h * a.head_dim + a.rope_offset;
      for (int64_t j = 0; j < half; ++j) {
        const int64_t i0 = a.layout == RopeLayout::Interleaved ? 2 * j : j;
        const int64_t i1 = a.layout == RopeLayout::Interleaved ? 2 * j + 1 : j + half;
        const float x0 = v[i0], x1 = v[i1];
        v[i0] = x0 * c[j] - x1 * s[j];
        v[i1] = x0 * s[j] + x1 * c[j];
      }
    }
  }
}

void CpuBackend::hadamard(Tensor2D x, int64_t n) {
  require(n > 0 && (n & (n - 1)) == 0 && x.cols % n == 0, "hadamard size must be a power of two dividing cols");
  const float scale = 1.0f / std::sqrt(float(n));
  for (int64_t r = 0; r < x.rows; ++r)
    for (int64_t b = 0; b < x.cols; b += n) {
      float* v = x.row(r) + b;
      // Fast Walsh–Hadamard transform in natural (Sylvester) order: H[i][j] = (-1)^popcount(i & j).
      for (int64_t len = 1; len < n; len <<= 1)
        for (int64_t i = 0; i < n; i += 2 * len)
          for (int64_t j = i; j < i + len; ++j) {
            const float u = v[j], w = v[j + len];
            v[j] = u + w;
            v[j + len] = u - w;
          }
      for (int64_t i = 0; i < n; ++i) v[i] *= scale;
    }
}

void CpuBackend::fp8_quantize(Tensor2D x, int64_t group, bool ue8m0, bool dequantize, Tensor2D out,
                              Tensor2D scales) {
  require(out.rows == x.rows && out.cols == x.cols && group > 0, "fp8_quantize shape");
  const int64_t G = (x.cols + group - 1) / group;
  require(!scales.data || (scales.rows == x.rows && scales.cols == G), "fp8_quantize scales shape");
  // Rows are independent: spread long inputs (prompts) over the threads, keep one decode row on the caller.
  pool_.parallel_for(x.rows, [&](int64_t r0, int64_t r1) {
  for (int64_t r = r0; r < r1; ++r) {
    const float* xi = x.row(r);
    float* yo = out.row(r);
    for (int64_t g = 0; g < G; ++g) {
      const int64_t k0 = g * group;
      const float s = fp8_quantize_group(xi + k0, std::min(group, x.cols - k0), ue8m0, dequantize, yo + k0);
      if (scales.data) scales.row(r)[g] = s;
    }
  }
  }, std::max<int64_t>(1, 16384 / std::max<int64_t>(1, x.cols)));
}

void CpuBackend::indexer_topk(const IndexerTopkArgs& a) {
  const int64_t T = a.q.rows, S = a.n_keys, H = a.n_heads, D = a.head_dim;
  require(a.q.cols == H * D && a.k.cols == D && a.w.cols == H && a.topk > 0, "indexer_topk shapes");
  require(a.block_table || a.k.rows >= S, "indexer_topk: fewer key rows than keys");
  // Scores first, over (group of queries, block of 64 keys) units so that one decoding query also spreads over the
  // threads; then each query's top-k. Queries go in tiles whose score rows fit in kTileScores floats, so a long
  // prompt's chunk (2048 queries over 64K keys would be 512 MB of scores) needs bounded scratch; each query's
  // scores and top-k are its own, so tiling changes no result.
  constexpr int64_t kTileScores = int64_t(1) << 23;  // 32 MB of fp32 scores
  const int64_t tile = std::clamp<int64_t>(kTileScores / std::max<int64_t>(S, 1), 1, std::max<int64_t>(T, 1));
  float* all_scores = scratch_.get<float>(0, ScratchSlot::IndexerScores, size_t(tile * S));
  float* all_wt = scratch_.get<float>(0, ScratchSlot::IndexerHeadWeights, size_t(T * H));
  for (int64_t t = 0; t < T; ++t)
    for (int64_t h = 0; h < H; ++h)
      all_wt[size_t(t * H + h)] = a.w.row(t)[h] * a.head_scale * (a.q_scale.data ? a.q_scale.row(t)[h] : 1.0f);
  // Keys per unit: the Amx family's kernel loads its tile configuration once per call, which 256 keys amortize.
  const int64_t unit_keys = cpu_kernel_isa() == CpuIsa::Amx ? 256 : 64;
  const int64_t blocks = (S + unit_keys - 1) / unit_keys;
  const float* wt_all = all_wt;
  for (int64_t q0 = 0; q0 < T; q0 += tile) {
    const int64_t Tq = std::min(tile, T - q0);
    float* tile_scores = all_scores;  // query q0 + i's scores at tile_scores + i * S
    // Units of (kGroup queries, unit_keys keys): each key block is read once for the group (a packed cache decodes
    // it), and the groups go to the threads in balanced order (early queries see fewer keys).
    constexpr int64_t kGroup = 16;
    const int64_t groups = (Tq + kGroup - 1) / kGroup;
    const int64_t query_floats = indexer_query_floats(H, D);
    pool_.parallel_for(groups * blocks, [&](int64_t u0, int64_t u1, int worker) {
      const WorkerScratch scratch(scratch_, worker);
      float* storage = scratch.get<float>(ScratchSlot::IndexerQueries, size_t(kGroup * query_floats));
      IndexerQuery query[kGroup];  // this thread's prepared group, redone only when its units move on
      int64_t prepared = -1;
      const IndexerQuery* qs[kGroup];
      int64_t ends[kGroup];
      float* rows[kGroup];
      for (int64_t u = u0; u < u1; ++u) {
        const int64_t g = balanced_row(u / blocks, groups), s0 = (u % blocks) * unit_keys;
        const int64_t t0 = q0 + g * kGroup, n = std::min(kGroup, q0 + Tq - t0);
        int nq = 0;
        for (int64_t i = 0; i < n; ++i) {
          const int64_t t = t0 + i;
          const int64_t visible = std::min<int64_t>(a.positions[t] + 1, S);
          if (g != prepared)
            indexer_prepare_query(a.q.row(t), wt_all + t * H, H, D, storage + i * query_floats, query[i]);
          if (visible <= s0) continue;
          qs[nq] = &query[i];
          ends[nq] = std::min(visible, s0 + unit_keys);
          rows[nq] = tile_scores + (t - q0) * S;
          ++nq;
        }
        prepared = g;
        indexer_scores_many(qs, nq, a, s0, ends, rows, scratch);
      }
    });
    // The k highest scores, equal scores ranked by earlier position (topk_select.hpp); then the chosen positions in
    // ascending order. select() ranks keys [s0, s1) of query t into ranked[s0, s1) and moves their top
    // min(k, s1 - s0) to the front of that range.
    auto select = [&](int64_t t, int64_t s0, int64_t s1, int64_t k, uint64_t* ranked) {
      return select_top_keys(tile_scores + (t - q0) * S, s0, s1, k, ranked);
    };
    auto finish = [&](int64_t t, int64_t k, const uint64_t* top, int32_t* order) {
      const int64_t visible = std::min<int64_t>(a.positions[t] + 1, S);
      if (a.out_scores) {
        const float* scores = tile_scores + (t - q0) * S;
        float* so = a.out_scores + t * S;
        for (int64_t s = 0; s < S; ++s) so[s] = s < visible ? scores[s] : -std::numeric_limits<float>::infinity();
      }
      for (int64_t i = 0; i < k; ++i) order[size_t(i)] = topk_entry_position(top[i]);
      std::sort(order, order + k);
      int32_t* out = a.out_indices + t * a.topk;
      for (int64_t i = 0; i < a.topk; ++i) out[i] = i < k ? order[size_t(i)] : -1;
    };
    if (Tq >= pool_.size()) {
      pool_.parallel_for(Tq, [&](int64_t t0, int64_t t1, int worker) {
        int32_t* order = scratch_.get<int32_t>(worker, ScratchSlot::TopkOrder, size_t(a.topk));
        uint64_t* ranked = scratch_.get<uint64_t>(worker, ScratchSlot::TopkRanked, size_t(S));
        for (int64_t i = t0; i < t1; ++i) {
          const int64_t t = q0 + balanced_row(i, Tq);
          const int64_t visible = std::min<int64_t>(a.positions[t] + 1, S);
          const int64_t k = select(t, 0, visible, a.topk, ranked);
          finish(t, k, ranked, order);
        }
      });
      continue;
    }
    // Fewer queries than threads (decode): each query's keys split over the threads, each part's top k selected
    // there; the global top k are among the parts' (every key of it outranks all but < k keys of its part), so a
    // last selection over those gives the same set.
    // (The caller's buffers: the workers write their parts of them.)
    int32_t* order = scratch_.get<int32_t>(0, ScratchSlot::TopkOrder, size_t(a.topk));
    uint64_t* r = scratch_.get<uint64_t>(0, ScratchSlot::TopkRanked, size_t(S));
    int64_t* part_kept = scratch_.get<int64_t>(0, ScratchSlot::TopkPartKept, size_t(pool_.size()));
    for (int64_t t = q0; t < q0 + Tq; ++t) {
      const int64_t visible = std::min<int64_t>(a.positions[t] + 1, S);
      const int64_t parts = std::clamp<int64_t>(visible / std::max<int64_t>(4 * a.topk, 1024), 1, pool_.size());
      pool_.parallel_for(parts, [&](int64_t p0, int64_t p1) {
        for (int64_t p = p0; p < p1; ++p)
          part_kept[p] = select(t, visible * p / parts, visible * (p + 1) / parts, a.topk, r);
      });
      int64_t n = 0;  // the parts' tops moved together to the front
      for (int64_t p = 0; p < parts; ++p) {
        std::copy_n(r + visible * p / parts, part_kept[p], r + n);  // (n <= the part's start: no overlap ahead)
        n += part_kept[p];
      }
      const int64_t k = std::min(a.topk, visible);
      std::nth_element(r, r + (k - 1), r + n, std::greater<>());
      finish(t, k, r, order);
    }
  }
}

void CpuBackend::mla_attention(const MlaArgs& args) {
  const int64_t T = args.q.rows, S = args.n_keys, H = args.n_heads;
  const int64_t dn = args.nope_dim, dr = args.rope_dim, dv = args.v_dim, C = args.latent.cols;
  const int64_t qk_head = dn + dr, kv_head = dn + dv;
  require(args.q.cols == H * qk_head && args.k_pe.cols == dr && args.k_pe.rows == args.latent.rows,
          "mla q/k_pe shapes");
  require(args.block_table || args.latent.rows >= S, "mla: fewer cache rows than keys");
  require(args.wkv_b.rows == H * kv_head && args.wkv_b.cols == C && args.out.cols == H * dv, "mla wkv_b/out shapes");
  // Without the model's fp32 copy of kv_b (this backend supports BackendFeature::MlaStoredKvB), the forms that read
  // it get one made here from the stored weight, with the same values; the absorbed vector kernels read the stored
  // weight directly.
  MlaArgs a = args;
  const bool absorbed = a.mode == MlaMode::Absorbed;
  const bool vectorized = absorbed && mla_absorbed_vectorized(a);
  // The MHA form packs the stored weight itself (below); only the absorbed reference needs the fp32 copy.
  const bool mha_reads_stored = !absorbed && a.wkv_b_stored && a.wkv_b_stored->present() &&
                                (a.wkv_b_stored->dtype == DType::BF16 || a.wkv_b_stored->dtype == DType::F8_E4M3);
  if (!a.wkv_b.data && !vectorized && !mha_reads_stored) {
    require(a.wkv_b_stored && a.wkv_b_stored->present(), "mla: neither an fp32 nor a stored kv_b");
    const Weight& w = *a.wkv_b_stored;
    float* dst = scratch_.get<float>(0, ScratchSlot::MlaKvB, size_t(w.numel()));
    pool_.parallel_for(w.rows(), [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) weight_row_f32(w, r, 0, w.cols(), dst + r * w.cols());
    }, 16);
    a.wkv_b = Tensor2D{dst, w.rows(), w.cols(), w.cols()};
  }
  auto lat = [&](int64_t s) { return a.latent.row(cache_row(a.block_table, a.block_tokens, s)); };

  // The key positions each query attends to: causal, and the DSA index set when given (spec §4.5–4.6), into a
  // worker's keys (max_keys of room); returns how many.
  const int64_t max_keys = a.indices ? a.n_indices : S;
  auto keys_of = [&](int64_t t, int32_t* keys) {
    int64_t n = 0;
    const int32_t pos = a.positions[t];
    require(pos < S, "query position beyond the cache");
    if (a.indices) {
      for (int64_t i = 0; i < a.n_indices; ++i) {
        const int32_t s = a.indices[t * a.n_indices + i];
        if (s >= 0 && s <= pos) keys[n++] = s;
      }
    } else {
      for (int32_t s = 0; s <= pos; ++s) keys[n++] = s;
    }
    return n;
  };

  if (absorbed) {
    // Units of (query, block of heads): the vector kernel reads each selected latent row once per head block.
    const int64_t hb = mla_absorbed_head_block(), blocks = (H + hb - 1) / hb;
    if (T == 1 && vectorized && a.latent_packed.packed() && pool_.size() > 1) {
      // One query's head blocks over several threads (a decode step): its selected rows are decoded once, split
      // over the threads, into the caller's scratch, instead of by every thread for its own blocks; when they are
      // many (kSharedRowFloats decoded values or more): for few the second loop's hand-over costs more than it
      // saves (the shipped model's 128 rows of 160 values: decode 4-7 % slower split).
      constexpr int64_t kSharedRowFloats = int64_t(1) << 15;
      int32_t* keys = scratch_.get<int32_t>(0, ScratchSlot::MlaKeys, size_t(max_keys));
      const int64_t n = keys_of(0, keys);
      if (n > 0 && n * (C + dr) >= kSharedRowFloats) {
        float* decoded = scratch_.get<float>(0, ScratchSlot::MlaDecoded, size_t(n * (C + dr)));
        const float** lat = scratch_.get<const float*>(0, ScratchSlot::MlaRowPtrs, size_t(n));
        const float** kpe = scratch_.get<const float*>(0, ScratchSlot::MlaRopePtrs, size_t(n));
        pool_.parallel_for(n, [&](int64_t j0, int64_t j1) { mla_gather_rows(a, keys, j0, j1, decoded, lat, kpe); },
                           16);
        pool_.parallel_for(blocks, [&](int64_t b0, int64_t b1, int worker) {
          for (int64_t b = b0; b < b1; ++b)
            mla_absorbed_gathered(a, lat, kpe, n, 0, b * hb, std::min(H, b * hb + hb), WorkerScratch(scratch_, worker));
        });
        return;
      }
    }
    // Consecutive units of one query on a thread share its keys and gathered rows (decoded once per query).
    pool_.parallel_for(T * blocks, [&](int64_t u0, int64_t u1, int worker) {
      const WorkerScratch scratch(scratch_, worker);
      int32_t* keys = scratch.get<int32_t>(ScratchSlot::MlaKeys, size_t(max_keys));
      int64_t last = -1, n = 0;
      for (int64_t u = u0; u < u1; ++u) {
        const int64_t t = balanced_row(u / blocks, T), h0 = (u % blocks) * hb, h1 = std::min(H, h0 + hb);
        if (t != last) n = keys_of(t, keys);
        if (vectorized) mla_absorbed(a, keys, n, t, h0, h1, scratch, /*rows_ready=*/t == last);
        else mla_absorbed_reference(a, keys, n, t, h0, h1, scratch);
        last = t;
      }
    });
    return;
  }

  // MHA form: expand every cached latent row to per-head k_nope and v once, kv[S, H*(dn+dv)] = latent · wkv_bᵀ, as
  // one fp32 GEMM (dense_gemm: one FMA chain per output) over the cache rows gathered in position order.
  const int64_t R = H * kv_head;
  Matrix kv_rows = matrix(S, R);  // a backend buffer: one this large is mapped for the call and unmapped after
  float* kv = kv_rows.view.data;
  {
    float* rows = scratch_.get<float>(0, ScratchSlot::MlaCacheRows, size_t(S * C));
    if (a.latent_packed.packed()) {
      // A packed cache: every row decoded (exactly) in position order, the rope keys beside them; the per-head
      // kernels then read those as an unpaged F32 cache.
      float* rope = scratch_.get<float>(0, ScratchSlot::MlaCacheRope, size_t(S * dr));
      for (int64_t s = 0; s < S; ++s)
        kvfmt::decode_latent_row(a.latent_packed, cache_row(a.block_table, a.block_tokens, s), rows + s * C,
                                 rope + s * dr);
      a.k_pe = Tensor2D{rope, S, dr, dr};
      a.latent = Tensor2D{rows, S, C, C};
      a.block_table = nullptr;
      a.latent_packed = PackedKv{};
    } else {
      for (int64_t s = 0; s < S; ++s) std::memcpy(rows + s * C, lat(s), size_t(C) * sizeof(float));
    }
    const Weight* stored = a.wkv_b_stored;
    const bool use_stored = mha_reads_stored && stored->rows() == R && stored->cols() == C;
    require(use_stored || (a.wkv_b.data && a.wkv_b.ld == C), "mla: no usable kv_b for the MHA form");
    const PackedDenseWeight packed =
        !use_stored ? pack_dense_weight(Weight{"kv_b_proj (fp32)", DType::F32, {R, C},
                                               reinterpret_cast<const uint8_t*>(a.wkv_b.data)})
        : stored->dtype == DType::BF16
            ? pack_dense_weight(*stored)
            // FP8: dequantized row by row into the panels (the values weight_row_f32 gives; no fp32 copy first)
            : pack_dense_rows_f32(R, C, [&](int64_t r, float* out) { weight_row_f32(*stored, r, 0, C, out); },
                                  stored->name);
    dense_gemm(rows, C, S, packed, kv, R, pool_);
  }
  pool_.parallel_for(T * H, [&](int64_t i0, int64_t i1, int worker) {
    const WorkerScratch scratch(scratch_, worker);
    int32_t* keys = scratch.get<int32_t>(ScratchSlot::MlaKeys, size_t(max_keys));
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t t = balanced_row(i / H, T), h = i % H;
      const int64_t n = keys_of(t, keys);
      mla_mha(a, kv, keys, n, t, h, scratch);
    }
  });
}

void CpuBackend::moe_route(const MoeRouteArgs& a) {
  const int64_t T = a.x.rows, E = a.n_experts, K = a.top_k;
  const int64_t per_group = E / a.n_group;
  require(a.gate && a.gate->rows() == E && a.gate->cols() == a.x.cols && E % a.n_group == 0, "moe_route shapes");
  // Router logits in fp32 (spec §5.2): an unquantized linear (the dense GEMM over the gate packed at load).
  // Scratch kept between calls (no allocation per token once warm).
  float* all_logits = scratch_.get<float>(0, ScratchSlot::RouterLogits, size_t(T * E));
  linear(a.x, *a.gate, Tensor2D{all_logits, T, E, E}, LinearQuant{});
  const float* bias =
      a.bias && a.bias->present() ? weight_vector_f32(*a.bias, scratch_, ScratchSlot::RouterBias) : nullptr;
  float* logits = scratch_.get<float>(0, ScratchSlot::RouterRow, size_t(E));
  float* scores = scratch_.get<float>(0, ScratchSlot::RouterScores, size_t(E));
  float* choice = scratch_.get<float>(0, ScratchSlot::RouterChoice, size_t(E));
  float* gscore = scratch_.get<float>(0, ScratchSlot::RouterGroupScores, size_t(a.n_group));
  int32_t* order = scratch_.get<int32_t>(0, ScratchSlot::RouterOrder, size_t(std::max(E, a.n_group)));
  char* keep = scratch_.get<char>(0, ScratchSlot::RouterKeep, size_t(a.n_group));
  for (int64_t t = 0; t < T; ++t) {
    std::copy_n(all_logits + t * E, E, logits);
    if (a.sigmoid) {
      for (int64_t e = 0; e < E; ++e) scores[e] = 1.0f / (1.0f + std::exp(-logits[e]));
    } else {
      const float mx = *std::max_element(logits, logits + E);
      double sum = 0;
      for (int64_t e = 0; e < E; ++e) { scores[e] = std::exp(logits[e] - mx); sum += scores[e]; }
      for (int64_t e = 0; e < E; ++e) scores[e] = float(scores[e] / sum);
    }
    // The bias only steers selection; the weights use the unbiased scores (spec §5.2).
    for (int64_t e = 0; e < E; ++e) choice[e] = scores[e] + (bias ? bias[e] : 0.0f);
    auto higher = [](const float* v) {
      return [v](int32_t i, int32_t j) { return v[i] > v[j] || (v[i] == v[j] && i < j); };
    };
    if (a.n_group > 1 && a.topk_group < a.n_group) {
      for (int64_t g = 0; g < a.n_group; ++g) {
        const float* c = choice + g * per_group;
        if (bias) {  // noaux_tc: group score = sum of its top-2
          float b1 = -INFINITY, b2 = -INFINITY;
          for (int64_t i = 0; i < per_group; ++i) {
            if (c[i] > b1) { b2 = b1; b1 = c[i]; } else if (c[i] > b2) b2 = c[i];
          }
          gscore[g] = per_group >= 2 ? b1 + b2 : b1;
        } else {
          gscore[g] = *std::max_element(c, c + per_group);
        }
      }
      std::iota(order, order + a.n_group, 0);
      std::partial_sort(order, order + a.topk_group, order + a.n_group, higher(gscore));
      std::fill_n(keep, a.n_group, 0);
      for (int64_t i = 0; i < a.topk_group; ++i) keep[order[i]] = true;
      for (int64_t e = 0; e < E; ++e)
        if (!keep[e / per_group]) choice[e] = -INFINITY;
    }
    std::iota(order, order + E, 0);
    std::partial_sort(order, order + K, order + E, higher(choice));
    float denom = 0.0f;
    for (int64_t i = 0; i < K; ++i) denom += scores[order[i]];
    for (int64_t i = 0; i < K; ++i) {
      a.out_experts[t * K + i] = order[i];
      float w = scores[order[i]];
      if (a.normalize) w /= (denom + 1e-20f);
      a.out_weights[t * K + i] = w * a.routed_scale;
    }
  }
}

void CpuBackend::moe_experts(const MoeExpertsArgs& a) {
  // Long prompts in chunks of tokens: bounds the stacked per-expert buffers (each token's output depends only on
  // its own rows, so chunking changes no result), while each chunk still gives every expert enough rows to reuse
  // its weights.
  constexpr int64_t kChunk = 128;
  if (a.x.rows > kChunk) {
    for (int64_t t0 = 0; t0 < a.x.rows; t0 += kChunk) {
      const int64_t n = std::min(kChunk, a.x.rows - t0);
      MoeExpertsArgs c = a;
      c.x = a.x.rows_slice(t0, n);
      c.out = a.out.rows_slice(t0, n);
      c.expert_ids = a.expert_ids + t0 * a.top_k;
      c.weights = a.weights + t0 * a.top_k;
      if (a.slots.data) c.slots = a.slots.rows_slice(t0 * a.top_k, n * a.top_k);
      moe_experts(c);
    }
    return;
  }
  const int64_t T = a.x.rows, D = a.x.cols, E = int64_t(a.experts.size());
  const bool slot_mode = a.slots.data != nullptr;
  require(!slot_mode || (a.slots.rows == T * a.top_k && a.slots.cols == D && !a.shared), "moe_experts slots shape");
  if (!slot_mode) fill_zero(a.out);
  // Group the (token, slot) pairs by expert so each expert runs once over its tokens; experts nobody chose are
  // never touched. The shared expert, when given, comes last with every token at weight 1 (1·y = y: the plain
  // unweighted add). (A counting sort into scratch kept between calls: no allocation once warm.)
  const int64_t lists = E + (a.shared ? 1 : 0);
  RoutedTokens routed;
  routed.offset = scratch_.get<int64_t>(0, ScratchSlot::MoeOffsets, size_t(lists + 1));
  std::fill_n(routed.offset, lists + 1, 0);
  for (int64_t k = 0; k < T * a.top_k; ++k) {
    const int32_t e = a.expert_ids[k];
    if (slot_mode && e == -1) continue;  // another rank's expert
    require(e >= 0 && e < E, "expert id out of range");
    ++routed.offset[size_t(e) + 1];
  }
  if (a.shared) routed.offset[size_t(E) + 1] = T;
  for (int64_t e = 0; e < lists; ++e) routed.offset[size_t(e) + 1] += routed.offset[size_t(e)];
  const int64_t n_entries = routed.offset[size_t(lists)];
  routed.entries = scratch_.get<RoutedEntry>(0, ScratchSlot::MoeEntries, size_t(n_entries));
  routed.slot = slot_mode ? scratch_.get<int32_t>(0, ScratchSlot::MoeEntrySlots, size_t(n_entries)) : nullptr;
  int64_t* fill = scratch_.get<int64_t>(0, ScratchSlot::MoeFill, size_t(lists));
  std::copy_n(routed.offset, lists, fill);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t i = 0; i < a.top_k; ++i) {
      const int32_t e = a.expert_ids[t * a.top_k + i];
      if (e < 0) continue;  // (slot mode only: checked above)
      const int64_t at = fill[size_t(e)]++;
      routed.entries[size_t(at)] = {int32_t(t), a.weights[t * a.top_k + i]};
      if (slot_mode) routed.slot[size_t(at)] = int32_t(t * a.top_k + i);
    }
  for (int64_t t = 0; a.shared && t < T; ++t) routed.entries[size_t(fill[size_t(E)]++)] = {int32_t(t), 1.0f};
  auto weights_of = [&](int64_t e) -> const ExpertWeights& { return e < E ? a.experts[size_t(e)] : *a.shared; };
  if (moe_experts_fused(a, routed)) return;
  for (int64_t e = 0; e < lists; ++e) {
    const auto* list = routed.of(e);
    const int64_t n = routed.count(e);
    if (n == 0) continue;
    const ExpertWeights& ew = weights_of(e);
    const int64_t inner = ew.gate->rows();
    Matrix xe = matrix(n, D), g = matrix(n, inner), u = matrix(n, inner), y = matrix(n, D);
    for (int64_t i = 0; i < n; ++i) std::memcpy(xe.view.row(i), a.x.row(list[i].token), size_t(D) * 4);
    linear(xe.view, *ew.gate, g.view, a.quant);
    linear(xe.view, *ew.up, u.view, a.quant);
    silu_mul(g.view, u.view, g.view);
    linear(g.view, *ew.down, y.view, a.quant);
    for (int64_t i = 0; i < n; ++i) {
      const float* yi = y.view.row(i);
      const float w = list[i].weight;
      if (slot_mode) {
        float* s = a.slots.row(routed.slots_of(e)[i]);
        for (int64_t d = 0; d < D; ++d) s[d] = w * yi[d];
        continue;
      }
      float* o = a.out.row(list[i].token);
      for (int64_t d = 0; d < D; ++d) o[d] += w * yi[d];
    }
  }
}

void CpuBackend::moe_combine(const MoeCombineArgs& a) {
  require(a.slots.rows == a.out.rows * a.top_k && a.slots.cols == a.out.cols, "moe_combine shapes");
  moe_combine_host(a.slots.data, a.slots.ld, a.expert_ids, a.top_k, a.out.data, a.out.ld, a.out.rows, a.out.cols);
}

// The experts of one MoE layer (the shared one included) as two passes over all active experts at once: gate and
// up projections with the activation (units: an expert's 128-row blocks), then down with the weighted sum (units:
// output panels across all experts), so the threads share the work of all experts instead of splitting each small
// GEMM, and no step between or after the passes runs on one thread. For packed FP8 experts each token's activation is
// quantized once; packed BF16/F16/F32 experts take the rows as they are. Every output goes through the same kernel
// lanes as linear() would compute it, and the weighted sum runs in expert order, so the result is bitwise the
// unfused path's.
bool CpuBackend::moe_experts_fused(const MoeExpertsArgs& a, const RoutedTokens& routed) {
  const int64_t E = int64_t(a.experts.size()), lists = E + (a.shared ? 1 : 0);
  struct Job {
    int64_t e, n, row0;  // list (expert id, or E for the shared expert), its rows, first row in the stacked inputs
    const PackedFp8Weight *gate, *up, *down;         // FP8 experts
    const PackedDenseWeight *dgate, *dup, *ddown;    // dense experts
    int64_t inner, panels_gu, panels_down;           // gate/up outputs; panels per gate (= up) and down projection
    int64_t gu0, hs0, unit_gu;                       // offsets in g/u and hs; first unit in the gate/up pass
    int64_t blocks() const { return (inner + kActGroup - 1) / kActGroup; }  // the gate/up pass's units
  };
  Job* const job_list = scratch_.get<Job>(0, ScratchSlot::MoeJobs, size_t(lists));
  int64_t n_jobs = 0;
  // All experts FP8 (with FP8 activations, as linear() would run them) or all dense; anything else goes unfused.
  bool fp8 = false;
  int64_t R = 0, GU = 0, HS = 0, units_gu = 0;
  for (int64_t e = 0; e < lists; ++e) {
    const int64_t n = routed.count(e);
    if (n == 0) continue;
    const ExpertWeights& ew = e < E ? a.experts[size_t(e)] : *a.shared;
    Job j{e, n, R, packed_fp8(*ew.gate), packed_fp8(*ew.up), packed_fp8(*ew.down), nullptr, nullptr, nullptr,
          0, 0, 0, GU, HS, units_gu};
    const bool this_fp8 = j.gate && j.up && j.down;
    if (!this_fp8) {
      j.dgate = packed_dense(*ew.gate);
      j.dup = packed_dense(*ew.up);
      j.ddown = packed_dense(*ew.down);
      if (!j.dgate || !j.dup || !j.ddown) return false;
      j.inner = j.dgate->n;
      j.panels_gu = j.dgate->panels;
      j.panels_down = j.ddown->panels;
      if (j.dup->n != j.inner || j.ddown->k != j.inner || j.dgate->k != a.x.cols || j.ddown->n != a.x.cols)
        return false;
    } else {
      if (!a.quant.fp8_activations) return false;
      j.inner = j.gate->n;
      j.panels_gu = j.gate->panels;
      j.panels_down = j.down->panels;
      if (j.up->n != j.inner || j.down->k != j.inner || j.gate->k != a.x.cols || j.down->n != a.x.cols) return false;
    }
    if (n_jobs == 0) fp8 = this_fp8;
    if (this_fp8 != fp8) return false;
    job_list[n_jobs++] = j;
    R += n;
    GU += n * j.inner;
    HS += fp8 ? n * j.blocks() : 0;
    units_gu += j.blocks();
  }
  if (n_jobs == 0) return true;
  const std::span<const Job> jobs(job_list, size_t(n_jobs));
  const int64_t T = a.x.rows, D = a.x.cols, G = fp8 ? (D + kActGroup - 1) / kActGroup : 0;
  const size_t need = size_t((fp8 ? T * D + T * G : 0) + R * D + R * G + 2 * GU + HS);
  float* p = scratch_.get<float>(0, ScratchSlot::MoeStacked, need);
  auto take = [&](int64_t n) { float* q = p; p += n; return q; };
  float* xq_t = fp8 ? take(T * D) : nullptr;
  float* xs_t = fp8 ? take(T * G) : nullptr;
  float *xq = take(R * D), *xs = take(R * G), *g = take(GU), *u = take(GU), *hs = take(HS);
  float* y = xq;  // the stacked inputs are dead once gate and up have run: the down outputs reuse them
  // FP8: quantize each token once, then stack its quantized row for every expert that chose it. Dense: stack x.
  if (fp8) fp8_quantize(a.x, kActGroup, a.quant.ue8m0, false, Tensor2D{xq_t, T, D, D}, Tensor2D{xs_t, T, G, G});
  for (const Job& j : jobs)
    for (int64_t i = 0; i < j.n; ++i) {
      const int64_t t = routed.of(j.e)[i].token;
      std::memcpy(xq + (j.row0 + i) * D, fp8 ? xq_t + t * D : a.x.row(t), size_t(D) * 4);
      if (fp8) std::memcpy(xs + (j.row0 + i) * G, xs_t + t * G, size_t(G) * 4);
    }
  // Runs fn(job, q0, q1) over the units [u0, u1) of a pass whose units lie job after job (first(job), count(job)).
  auto for_units = [&](int64_t u0, int64_t u1, const auto& first, const auto& count, const auto& fn) {
    for (const Job& j : jobs) {
      const int64_t base = first(j), a0 = std::max(u0, base), a1 = std::min(u1, base + count(j));
      if (a0 < a1) fn(j, a0 - base, a1 - base);
    }
  };
  // A gate/up unit is one 128-row block of a job's inner dimension: its gate and up panels, then, on the same
  // thread, silu(g)·u over the block and (FP8) the block's quantization, which is exactly one activation group of
  // the down projection's input. So nothing runs serially between the two passes.
  static_assert(kActGroup % kFp8PanelRows == 0 && kFp8PanelRows == 16, "a block is whole FP8 and dense panels");
  constexpr int64_t kBlockPanels = kActGroup / kFp8PanelRows;
  const bool ue8m0 = a.quant.ue8m0;
  pool_.parallel_for(units_gu, [&](int64_t u0, int64_t u1) {
    for_units(u0, u1, [](const Job& j) { return j.unit_gu; }, [](const Job& j) { return j.blocks(); },
              [&](const Job& j, int64_t b0, int64_t b1) {
      const int64_t p0 = b0 * kBlockPanels, p1 = std::min(j.panels_gu, b1 * kBlockPanels);
      const float* x = xq + j.row0 * D;
      const float* sx = xs + j.row0 * G;
      if (fp8) {
        fp8_gemm_panels(x, D, sx, G, j.n, *j.gate, p0, p1, g + j.gu0, j.inner);
        fp8_gemm_panels(x, D, sx, G, j.n, *j.up, p0, p1, u + j.gu0, j.inner);
      } else {
        dense_gemm_panels(x, D, j.n, *j.dgate, p0, p1, g + j.gu0, j.inner);
        dense_gemm_panels(x, D, j.n, *j.dup, p0, p1, u + j.gu0, j.inner);
      }
      const int64_t Gi = j.blocks();
      for (int64_t i = 0; i < j.n; ++i)
        for (int64_t b = b0; b < b1; ++b) {
          const int64_t c0 = b * kActGroup, cn = std::min(kActGroup, j.inner - c0);
          float* gi = g + j.gu0 + i * j.inner + c0;
          const float* ui = u + j.gu0 + i * j.inner + c0;
          for (int64_t c = 0; c < cn; ++c) gi[c] = silu(gi[c]) * ui[c];
          if (fp8) hs[j.hs0 + i * Gi + b] = fp8_quantize_group(gi, cn, ue8m0, /*dequantize=*/false, gi);
        }
    });
  });
  // A down unit is a range of output panels (rows of D) over every job, then those rows' weighted sums in expert
  // order: the same order as a sum after the pass, with no serial step after it.
  const int64_t panels_d = jobs.front().panels_down;
  pool_.parallel_for(panels_d, [&](int64_t q0, int64_t q1) {
    for (const Job& j : jobs) {
      if (fp8) fp8_gemm_panels(g + j.gu0, j.inner, hs + j.hs0, j.blocks(), j.n, *j.down, q0, q1, y + j.row0 * D, D);
      else dense_gemm_panels(g + j.gu0, j.inner, j.n, *j.ddown, q0, q1, y + j.row0 * D, D);
    }
    const int64_t d0 = q0 * kFp8PanelRows, d1 = std::min(D, q1 * kFp8PanelRows);
    for (const Job& j : jobs)
      for (int64_t i = 0; i < j.n; ++i) {
        const auto& [t, w] = routed.of(j.e)[i];
        const float* yi = y + (j.row0 + i) * D;
        if (a.slots.data) {  // slot mode: the term itself, rounded as the sum below rounds it
          float* s = a.slots.row(routed.slots_of(j.e)[i]);
          for (int64_t d = d0; d < d1; ++d) s[d] = w * yi[d];
          continue;
        }
        float* o = a.out.row(t);
        for (int64_t d = d0; d < d1; ++d) o[d] += w * yi[d];
      }
  });
  return true;
}

void CpuBackend::linear_many(Tensor2D x, std::span<const LinearOut> outs, const LinearQuant& q) {
  // FP8 activations and every weight packed FP8 of the input's width: x quantized once, then one parallel loop
  // over all the weights' panels. Anything else (or a shape error, which linear() reports) goes one by one.
  const int64_t T = x.rows, K = x.cols, G = (K + kActGroup - 1) / kActGroup;
  constexpr size_t kMax = 8;
  const PackedFp8Weight* packed[kMax];
  int64_t first[kMax + 1] = {0};
  bool together = q.fp8_activations && outs.size() > 1 && outs.size() <= kMax;
  for (size_t i = 0; together && i < outs.size(); ++i) {
    const LinearOut& o = outs[i];
    packed[i] = o.w->dtype == DType::F8_E4M3 && o.w->block == kActGroup ? packed_fp8(*o.w) : nullptr;
    together = packed[i] && o.w->cols() == K && o.out.rows == T && o.out.cols == o.w->rows() && o.out.data != x.data;
    if (together) first[i + 1] = first[i] + packed[i]->panels;
  }
  if (!together) {
    for (const LinearOut& o : outs) linear(x, *o.w, o.out, q);
    return;
  }
  const QuantizedInput scratch = quantized_input_scratch(scratch_, T, K, G);
  float *xq = scratch.xq, *xs = scratch.xs;
  fp8_quantize(x, kActGroup, q.ue8m0, /*dequantize=*/false, Tensor2D{xq, T, K, K}, Tensor2D{xs, T, G, G});
  pool_.parallel_for(first[outs.size()], [&](int64_t u0, int64_t u1) {
    for (size_t i = 0; i < outs.size(); ++i) {
      const int64_t a0 = std::max(u0, first[i]), a1 = std::min(u1, first[i + 1]);
      if (a0 < a1)
        fp8_gemm_panels(xq, K, xs, G, T, *packed[i], a0 - first[i], a1 - first[i], outs[i].out.data, outs[i].out.ld);
    }
  }, 2);
}

}  // namespace dsinfer
