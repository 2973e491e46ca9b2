#include "backend/cpu/dense_gemm.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "dsinfer/error.hpp"
#include "util/dtype.hpp"
#include "util/thread_pool.hpp"

#include "backend/cpu/simd.hpp"

namespace dsinfer {

namespace {

constexpr int64_t kNr = 16;     // rows per panel
constexpr int64_t kChunk = 128;  // k run converted at a time by the prefill kernel

float load_elem(DType t, const uint8_t* p, int64_t i) {
  switch (t) {
    case DType::BF16: { uint16_t h; std::memcpy(&h, p + 2 * i, 2); return bf16_to_f32(h); }
    case DType::F16: { uint16_t h; std::memcpy(&h, p + 2 * i, 2); return f16_to_f32(h); }
    default: { float f; std::memcpy(&f, p + 4 * i, 4); return f; }
  }
}

void panels_scalar(const float* x, int64_t ldx, int64_t T, const PackedDenseWeight& w, int64_t p0, int64_t p1,
                   float* y, int64_t ldy) {
  for (int64_t p = p0; p < p1; ++p) {
    const uint8_t* panel = w.panel(p);
    const int64_t n0 = p * kNr, nvalid = std::min(kNr, w.n - n0);
    for (int64_t t = 0; t < T; ++t) {
      float s[kNr] = {};
      for (int64_t k = 0; k < w.k; ++k)
        for (int64_t j = 0; j < kNr; ++j) s[j] = std::fma(x[t * ldx + k], load_elem(w.dtype, panel, k * kNr + j), s[j]);
      for (int64_t j = 0; j < nvalid; ++j) y[t * ldy + n0 + j] = s[j];
    }
  }
}

#ifdef DSINFER_HAVE_AVX2_KERNELS

// 16 consecutive panel elements of weight dtype D as two fp32 vectors.
template <DType D>
DSINFER_AVX2 void load16(const uint8_t* p, __m256& lo, __m256& hi) {
  if constexpr (D == DType::F32) {
    lo = _mm256_loadu_ps(reinterpret_cast<const float*>(p));
    hi = _mm256_loadu_ps(reinterpret_cast<const float*>(p) + 8);
  } else if constexpr (D == DType::BF16) {
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
    lo = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm256_castsi256_si128(v)), 16));
    hi = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm256_extracti128_si256(v, 1)), 16));
  } else {
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
    lo = _mm256_cvtph_ps(_mm256_castsi256_si128(v));
    hi = _mm256_cvtph_ps(_mm256_extracti128_si256(v, 1));
  }
}

// Decode: P panels × MR tokens, the whole K in registers (2·P·MR independent FMA chains).
template <DType D, int P, int MR>
DSINFER_AVX2_FN void direct_tile(const float* x, int64_t ldx, const PackedDenseWeight& w, int64_t p0, float* y,
                                 int64_t ldy) {
  const size_t es = w.elem();
  __m256 s[MR][P][2];
  for (int m = 0; m < MR; ++m)
    for (int p = 0; p < P; ++p) s[m][p][0] = s[m][p][1] = _mm256_setzero_ps();
  const uint8_t* panel[P];
  for (int p = 0; p < P; ++p) panel[p] = w.panel(p0 + p);
  const int64_t line_k = int64_t(64 / (kNr * es)) > 0 ? int64_t(64 / (kNr * es)) : 1;  // k per cache line
  for (int64_t k = 0; k < w.k; ++k) {
    __m256 b[MR];
    for (int m = 0; m < MR; ++m) b[m] = _mm256_broadcast_ss(x + m * ldx + k);
    if (k % line_k == 0)  // ask for each panel's line 1 KiB ahead
      for (int p = 0; p < P; ++p)
        _mm_prefetch(reinterpret_cast<const char*>(panel[p] + size_t(k * kNr) * es + 1024), _MM_HINT_T0);
    for (int p = 0; p < P; ++p) {
      __m256 lo, hi;
      load16<D>(panel[p] + size_t(k * kNr) * es, lo, hi);
      for (int m = 0; m < MR; ++m) {
        s[m][p][0] = _mm256_fmadd_ps(b[m], lo, s[m][p][0]);
        s[m][p][1] = _mm256_fmadd_ps(b[m], hi, s[m][p][1]);
      }
    }
  }
  for (int p = 0; p < P; ++p) {
    const PanelMask mk = panel_mask(std::min(kNr, w.n - (p0 + p) * kNr));
    for (int m = 0; m < MR; ++m) {
      float* yy = y + m * ldy + (p0 + p) * kNr;
      _mm256_maskstore_ps(yy, mk.lo, s[m][p][0]);
      _mm256_maskstore_ps(yy + 8, mk.hi, s[m][p][1]);
    }
  }
}

// Prefill: a k chunk of one panel converted to fp32 once (wf), MR tokens × 16 outputs per tile; the running sums
// go through y between chunks (a stored and reloaded float is the same float, so the chain is unchanged).
template <int MR>
DSINFER_AVX2_FN void converted_tile(const float* x, int64_t ldx, const float* wf, int64_t k0, int64_t k1, float* y,
                                    int64_t ldy, const PanelMask& mk) {
  __m256 s[MR][2];
  for (int m = 0; m < MR; ++m) {
    if (k0 == 0) {
      s[m][0] = s[m][1] = _mm256_setzero_ps();
    } else {
      s[m][0] = _mm256_maskload_ps(y + m * ldy, mk.lo);
      s[m][1] = _mm256_maskload_ps(y + m * ldy + 8, mk.hi);
    }
  }
  for (int64_t k = k0; k < k1; ++k) {
    const __m256 lo = _mm256_load_ps(wf + (k - k0) * kNr), hi = _mm256_load_ps(wf + (k - k0) * kNr + 8);
    for (int m = 0; m < MR; ++m) {
      const __m256 b = _mm256_broadcast_ss(x + m * ldx + k);
      s[m][0] = _mm256_fmadd_ps(b, lo, s[m][0]);
      s[m][1] = _mm256_fmadd_ps(b, hi, s[m][1]);
    }
  }
  for (int m = 0; m < MR; ++m) {
    _mm256_maskstore_ps(y + m * ldy, mk.lo, s[m][0]);
    _mm256_maskstore_ps(y + m * ldy + 8, mk.hi, s[m][1]);
  }
}

template <DType D>
DSINFER_AVX2_FN void panels_avx2(const float* x, int64_t ldx, int64_t T, const PackedDenseWeight& w, int64_t p0,
                                 int64_t p1, float* y, int64_t ldy) {
  if (T < 8) {
    int64_t t = 0;
    for (; t + 2 <= T; t += 2) {
      int64_t p = p0;
      for (; p + 2 <= p1; p += 2) direct_tile<D, 2, 2>(x + t * ldx, ldx, w, p, y + t * ldy, ldy);
      for (; p < p1; ++p) direct_tile<D, 1, 2>(x + t * ldx, ldx, w, p, y + t * ldy, ldy);
    }
    if (t < T) {
      int64_t p = p0;
      for (; p + 4 <= p1; p += 4) direct_tile<D, 4, 1>(x + t * ldx, ldx, w, p, y + t * ldy, ldy);
      for (; p < p1; ++p) direct_tile<D, 1, 1>(x + t * ldx, ldx, w, p, y + t * ldy, ldy);
    }
    return;
  }
  constexpr int64_t kTokens = 64;
  const size_t es = w.elem();
  alignas(64) float wf[kChunk * kNr];
  for (int64_t t0 = 0; t0 < T; t0 += kTokens) {
    const int64_t t1 = std::min(T, t0 + kTokens);
    for (int64_t p = p0; p < p1; ++p) {
      const uint8_t* panel = w.panel(p);
      const int64_t n0 = p * kNr;
      const PanelMask mk = panel_mask(std::min(kNr, w.n - n0));
      for (int64_t k0 = 0; k0 < w.k; k0 += kChunk) {
        const int64_t k1 = std::min(w.k, k0 + kChunk);
        for (int64_t k = k0; k < k1; ++k) {
          __m256 lo, hi;
          load16<D>(panel + size_t(k * kNr) * es, lo, hi);
          _mm256_store_ps(wf + (k - k0) * kNr, lo);
          _mm256_store_ps(wf + (k - k0) * kNr + 8, hi);
        }
        int64_t t = t0;
        for (; t + 6 <= t1; t += 6) converted_tile<6>(x + t * ldx, ldx, wf, k0, k1, y + t * ldy + n0, ldy, mk);
        const float* xt = x + t * ldx;
        float* yt = y + t * ldy + n0;
        switch (t1 - t) {
          case 5: converted_tile<5>(xt, ldx, wf, k0, k1, yt, ldy, mk); break;
          case 4: converted_tile<4>(xt, ldx, wf, k0, k1, yt, ldy, mk); break;
          case 3: converted_tile<3>(xt, ldx, wf, k0, k1, yt, ldy, mk); break;
          case 2: converted_tile<2>(xt, ldx, wf, k0, k1, yt, ldy, mk); break;
          case 1: converted_tile<1>(xt, ldx, wf, k0, k1, yt, ldy, mk); break;
          default: break;
        }
      }
    }
  }
}

// AVX-512: one zmm per panel column (16 lanes), the same chains.

template <DType D>
DSINFER_AVX512 __m512 load16_512(const uint8_t* p) {
  if constexpr (D == DType::F32) {
    return _mm512_loadu_ps(reinterpret_cast<const float*>(p));
  } else if constexpr (D == DType::BF16) {
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(v), 16));
  } else {
    return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  }
}

template <DType D, int P, int MR>
DSINFER_AVX512_FN void direct_tile_512(const float* x, int64_t ldx, const PackedDenseWeight& w, int64_t p0, float* y,
                                       int64_t ldy) {
  const size_t es = w.elem();
  const int64_t line_k = int64_t(64 / (kNr * es)) > 0 ? int64_t(64 / (kNr * es)) : 1;
  __m512 s[MR][P];
  for (int m = 0; m < MR; ++m)
    for (int p = 0; p < P; ++p) s[m][p] = _mm512_setzero_ps();
  const uint8_t* panel[P];
  for (int p = 0; p < P; ++p) panel[p] = w.panel(p0 + p);
  for (int64_t k = 0; k < w.k; ++k) {
    __m512 b[MR];
    for (int m = 0; m < MR; ++m) b[m] = _mm512_set1_ps(x[m * ldx + k]);
    if (k % line_k == 0)
      for (int p = 0; p < P; ++p)
        _mm_prefetch(reinterpret_cast<const char*>(panel[p] + size_t(k * kNr) * es + 1024), _MM_HINT_T0);
    for (int p = 0; p < P; ++p) {
      const __m512 wv = load16_512<D>(panel[p] + size_t(k * kNr) * es);
      for (int m = 0; m < MR; ++m) s[m][p] = _mm512_fmadd_ps(b[m], wv, s[m][p]);
    }
  }
  for (int p = 0; p < P; ++p) {
    const __mmask16 mk = __mmask16((1u << std::min(kNr, w.n - (p0 + p) * kNr)) - 1u);
    for (int m = 0; m < MR; ++m) _mm512_mask_storeu_ps(y + m * ldy + (p0 + p) * kNr, mk, s[m][p]);
  }
}

template <int P, int MR>
DSINFER_AVX512_FN void converted_tile_512(const float* x, int64_t ldx, const float* wf, int64_t k0, int64_t k1,
                                          float* y, int64_t ldy, const __mmask16* mk) {
  const int64_t kn = k1 - k0;
  __m512 s[MR][P];
  for (int m = 0; m < MR; ++m)
    for (int p = 0; p < P; ++p)
      s[m][p] = k0 == 0 ? _mm512_setzero_ps() : _mm512_maskz_loadu_ps(mk[p], y + m * ldy + p * kNr);
  for (int64_t k = k0; k < k1; ++k) {
    __m512 wv[P];
    for (int p = 0; p < P; ++p) wv[p] = _mm512_load_ps(wf + (p * kn + k - k0) * kNr);
    for (int m = 0; m < MR; ++m) {
      const __m512 b = _mm512_set1_ps(x[m * ldx + k]);
      for (int p = 0; p < P; ++p) s[m][p] = _mm512_fmadd_ps(b, wv[p], s[m][p]);
    }
  }
  for (int m = 0; m < MR; ++m)
    for (int p = 0; p < P; ++p) _mm512_mask_storeu_ps(y + m * ldy + p * kNr, mk[p], s[m][p]);
}

template <DType D, int P>
DSINFER_AVX512_FN void converted_panels_512(const float* x, int64_t ldx, int64_t t0, int64_t t1,
                                            const PackedDenseWeight& w, int64_t p0, float* y, int64_t ldy) {
  const size_t es = w.elem();
  alignas(64) float wf[P * kChunk * kNr];
  __mmask16 mk[P];
  for (int p = 0; p < P; ++p) mk[p] = __mmask16((1u << std::min(kNr, w.n - (p0 + p) * kNr)) - 1u);
  const int64_t n0 = p0 * kNr;
  for (int64_t k0 = 0; k0 < w.k; k0 += kChunk) {
    const int64_t k1 = std::min(w.k, k0 + kChunk), kn = k1 - k0;
    for (int p = 0; p < P; ++p) {
      const uint8_t* panel = w.panel(p0 + p);
      for (int64_t k = k0; k < k1; ++k)
        _mm512_store_ps(wf + (p * kn + k - k0) * kNr, load16_512<D>(panel + size_t(k * kNr) * es));
    }
    int64_t t = t0;
    auto tile = [&]<int MR>() {
      converted_tile_512<P, MR>(x + t * ldx, ldx, wf, k0, k1, y + t * ldy + n0, ldy, mk);
      t += MR;
    };
    while (t + 12 <= t1) tile.template operator()<12>();
    if (t + 8 <= t1) tile.template operator()<8>();
    if (t + 4 <= t1) tile.template operator()<4>();
    if (t + 2 <= t1) tile.template operator()<2>();
    if (t + 1 <= t1) tile.template operator()<1>();
  }
}

template <DType D>
DSINFER_AVX512_FN void panels_avx512(const float* x, int64_t ldx, int64_t T, const PackedDenseWeight& w, int64_t p0,
                                     int64_t p1, float* y, int64_t ldy) {
  if (T <= 8) {
    auto run = [&]<int P, int MR>() {
      int64_t p = p0;
      for (; p + P <= p1; p += P) direct_tile_512<D, P, MR>(x, ldx, w, p, y, ldy);
      // The last 2 or 3 panels (a router's 3, kv_a's 2) side by side as well: a panel alone is one memory stream.
      if constexpr (P == 4) {
        if (p1 - p == 3) return direct_tile_512<D, 3, MR>(x, ldx, w, p, y, ldy);
        if (p1 - p == 2) return direct_tile_512<D, 2, MR>(x, ldx, w, p, y, ldy);
      }
      for (; p < p1; ++p) direct_tile_512<D, 1, MR>(x, ldx, w, p, y, ldy);
    };
    switch (T) {
      case 1: run.template operator()<4, 1>(); break;
      case 2: run.template operator()<4, 2>(); break;
      case 3: run.template operator()<4, 3>(); break;
      case 4: run.template operator()<4, 4>(); break;
      case 5: run.template operator()<2, 5>(); break;
      case 6: run.template operator()<2, 6>(); break;
      case 7: run.template operator()<2, 7>(); break;
      default: run.template operator()<2, 8>(); break;
    }
    return;
  }
  constexpr int64_t kTokens = 96;
  for (int64_t t0 = 0; t0 < T; t0 += kTokens) {
    const int64_t t1 = std::min(T, t0 + kTokens);
    int64_t p = p0;
    for (; p + 2 <= p1; p += 2) converted_panels_512<D, 2>(x, ldx, t0, t1, w, p, y, ldy);
    if (p < p1) converted_panels_512<D, 1>(x, ldx, t0, t1, w, p, y, ldy);
  }
}

#endif  // DSINFER_HAVE_AVX2_KERNELS

}  // namespace

bool dense_gemm_supports(const Weight& w) {
  return w.shape.size() == 2 && (w.dtype == DType::BF16 || w.dtype == DType::F16 || w.dtype == DType::F32);
}

namespace {
// An empty packed weight of `dtype` [n, k]: the panels allocated (rows past n are for the caller to zero).
PackedDenseWeight packed_storage(DType dtype, int64_t n, int64_t k, const std::string& name) {
  PackedDenseWeight p;
  p.dtype = dtype;
  p.n = n;
  p.k = k;
  p.panels = (n + kNr - 1) / kNr;
  const size_t bytes = size_t(p.panels * kNr * k) * p.elem();
  void* mem = std::aligned_alloc(64, (bytes + 63) / 64 * 64);
  if (!mem) throw Error(ErrorCode::OutOfMemory, fmt::format("cannot allocate {} bytes to repack {}", bytes, name));
  p.bytes = std::unique_ptr<uint8_t, void (*)(void*)>(static_cast<uint8_t*>(mem), [](void* q) { std::free(q); });
  return p;
}
}  // namespace

PackedDenseWeight pack_dense_weight(const Weight& w) {
  if (!dense_gemm_supports(w))
    throw Error(ErrorCode::Internal, fmt::format("pack_dense_weight: {} is not a 2-D BF16/F16/F32 weight", w.name));
  PackedDenseWeight p = packed_storage(w.dtype, w.rows(), w.cols(), w.name);
  const size_t es = p.elem();
  uint8_t* out = p.bytes.get();
  for (int64_t pi = 0; pi < p.panels; ++pi)
    for (int64_t j = 0; j < kNr; ++j) {
      const int64_t n = pi * kNr + j;
      uint8_t* dst = out + size_t(pi * p.k * kNr + j) * es;
      for (int64_t k = 0; k < p.k; ++k) {
        if (n < p.n) std::memcpy(dst + size_t(k * kNr) * es, w.data + size_t(n * p.k + k) * es, es);
        else std::memset(dst + size_t(k * kNr) * es, 0, es);
      }
    }
  return p;
}

PackedDenseWeight pack_dense_rows_f32(int64_t n, int64_t k, const std::function<void(int64_t, float*)>& row,
                                      const std::string& name) {
  PackedDenseWeight p = packed_storage(DType::F32, n, k, name);
  float* out = reinterpret_cast<float*>(p.bytes.get());
  std::vector<float> r(static_cast<size_t>(k));
  for (int64_t i = 0; i < p.panels * kNr; ++i) {
    if (i < n) row(i, r.data());
    else std::fill(r.begin(), r.end(), 0.0f);
    float* panel = out + (i / kNr) * k * kNr;
    for (int64_t j = 0; j < k; ++j) panel[j * kNr + i % kNr] = r[size_t(j)];
  }
  return p;
}

void dense_gemm_panels(const float* x, int64_t ldx, int64_t T, const PackedDenseWeight& w, int64_t p0, int64_t p1,
                       float* y, int64_t ldy, DenseKernel kernel) {
  if (T <= 0 || p0 >= p1) return;
#ifdef DSINFER_HAVE_AVX2_KERNELS
  const CpuIsa best = cpu_vector_isa();
  const CpuIsa which = kernel == DenseKernel::Scalar                       ? CpuIsa::Scalar
                       : kernel == DenseKernel::Avx2 && best == CpuIsa::Avx512 ? CpuIsa::Avx2
                                                                                : best;
  if (which == CpuIsa::Avx512) {
    switch (w.dtype) {
      case DType::BF16: panels_avx512<DType::BF16>(x, ldx, T, w, p0, p1, y, ldy); return;
      case DType::F16: panels_avx512<DType::F16>(x, ldx, T, w, p0, p1, y, ldy); return;
      default: panels_avx512<DType::F32>(x, ldx, T, w, p0, p1, y, ldy); return;
    }
  }
  if (which == CpuIsa::Avx2) {
    switch (w.dtype) {
      case DType::BF16: panels_avx2<DType::BF16>(x, ldx, T, w, p0, p1, y, ldy); return;
      case DType::F16: panels_avx2<DType::F16>(x, ldx, T, w, p0, p1, y, ldy); return;
      default: panels_avx2<DType::F32>(x, ldx, T, w, p0, p1, y, ldy); return;
    }
  }
#endif
  panels_scalar(x, ldx, T, w, p0, p1, y, ldy);
}

void dense_gemm(const float* x, int64_t ldx, int64_t T, const PackedDenseWeight& w, float* y, int64_t ldy,
                ThreadPool& pool, DenseKernel kernel) {
  if (T <= 0 || w.n <= 0) return;
  pool.parallel_for(w.panels, [&](int64_t p0, int64_t p1) {
    dense_gemm_panels(x, ldx, T, w, p0, p1, y, ldy, kernel);
  }, 2);
}

void dense_gemm_reference(const float* x, int64_t ldx, int64_t T, const Weight& w, float* y, int64_t ldy) {
  const int64_t N = w.rows(), K = w.cols();
  for (int64_t t = 0; t < T; ++t)
    for (int64_t n = 0; n < N; ++n) {
      float s = 0.0f;
      for (int64_t k = 0; k < K; ++k) s = std::fma(x[t * ldx + k], load_elem(w.dtype, w.data, n * K + k), s);
      y[t * ldy + n] = s;
    }
}

}  // namespace dsinfer
