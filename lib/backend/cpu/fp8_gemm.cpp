#include "backend/cpu/fp8_gemm.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "dsinfer/error.hpp"
#include "util/dtype.hpp"
#include "util/thread_pool.hpp"

#include "backend/cpu/simd.hpp"

namespace dsinfer {

namespace {

constexpr int64_t kBlock = 128;       // weight block edge and activation group (spec §6)
constexpr int64_t kNr = kFp8PanelRows;

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// ---------------------------------------------------------------------------------------------------------------
// Scalar kernel: the reference order, over the packed layout.
void panels_scalar(const float* xq, int64_t ldx, const float* xs, int64_t ldxs, int64_t T, const PackedFp8Weight& w,
                   int64_t p0, int64_t p1, float* y, int64_t ldy) {
  const int64_t K = w.k, G = ceil_div(K, kBlock);
  const float* table = e4m3_table();
  for (int64_t p = p0; p < p1; ++p) {
    const uint8_t* panel = w.panel(p);
    const int64_t n0 = p * kNr, nvalid = std::min(kNr, w.n - n0);
    const float* ws = w.scale_inv + (n0 / kBlock) * G;
    for (int64_t t = 0; t < T; ++t) {
      float total[kNr] = {};
      for (int64_t g = 0; g < G; ++g) {
        const int64_t k0 = g * kBlock, k1 = std::min(K, k0 + kBlock);
        float s[kNr] = {};
        for (int64_t k = k0; k < k1; ++k) {
          const float xv = xq[t * ldx + k];
          for (int64_t j = 0; j < kNr; ++j) s[j] += xv * table[panel[k * kNr + j]];
        }
        const float c = xs[t * ldxs + g] * ws[g];
        for (int64_t j = 0; j < kNr; ++j) total[j] += s[j] * c;
      }
      for (int64_t j = 0; j < nvalid; ++j) y[t * ldy + n0 + j] = total[j];
    }
  }
}

#ifdef DSINFER_HAVE_AVX2_KERNELS
// ---------------------------------------------------------------------------------------------------------------
// AVX2 kernels. The weight bytes become floats without a table: an e4m3 byte sign-extended to 16 bits and shifted
// left by 7 is, once bit 14 is cleared, the IEEE half with the same sign, exponent field and mantissa bits, whose
// value is the e4m3 value times 2^-8 (subnormals included: both formats' subnormals line up); F16C widens it to
// fp32 exactly. The 2^8 goes into the block's scale product, an exact power-of-two factor, so every sum is the
// reference's sum times 2^-8, rounded identically, and the result is bitwise the reference's.

DSINFER_AVX2 void e4m3x16_to_f32(const uint8_t* p, __m256& lo, __m256& hi) {
  const __m256i w = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  const __m256i h = _mm256_and_si256(_mm256_slli_epi16(w, 7), _mm256_set1_epi16(int16_t(0xBF80)));
  lo = _mm256_cvtph_ps(_mm256_castsi256_si128(h));
  hi = _mm256_cvtph_ps(_mm256_extracti128_si256(h, 1));
}

// y[0..16) += s·c (multiply, then add: the reference's order), through the panel's masks.
DSINFER_AVX2 void add_block(float* y, const PanelMask& m, __m256 s_lo, __m256 s_hi, float c) {
  const __m256 cv = _mm256_set1_ps(c * 256.0f);
  _mm256_maskstore_ps(y, m.lo, _mm256_add_ps(_mm256_maskload_ps(y, m.lo), _mm256_mul_ps(s_lo, cv)));
  _mm256_maskstore_ps(y + 8, m.hi, _mm256_add_ps(_mm256_maskload_ps(y + 8, m.hi), _mm256_mul_ps(s_hi, cv)));
}

// Few tokens (decode): P panels × MR tokens, weight bytes converted inside the k loop (each converted byte is used
// MR times). 2·P·MR accumulators: P·MR ≥ 4 keeps enough independent FMA chains in flight to hide their latency.
template <int P, int MR>
DSINFER_AVX2_FN void direct_tile(const float* xq, int64_t ldx, const float* xs, int64_t ldxs,
                                 const PackedFp8Weight& w, int64_t p0, float* y, int64_t ldy) {
  const int64_t K = w.k, G = ceil_div(K, kBlock);
  const uint8_t* panel[P];
  const float* ws[P];
  PanelMask mask[P];
  for (int p = 0; p < P; ++p) {
    const int64_t n0 = (p0 + p) * kNr;
    panel[p] = w.panel(p0 + p);
    ws[p] = w.scale_inv + (n0 / kBlock) * G;
    mask[p] = panel_mask(std::min(kNr, w.n - n0));
  }
  for (int64_t g = 0; g < G; ++g) {
    const int64_t k0 = g * kBlock, k1 = std::min(K, k0 + kBlock);
    __m256 s[MR][P][2];
    for (int m = 0; m < MR; ++m)
      for (int p = 0; p < P; ++p) s[m][p][0] = s[m][p][1] = _mm256_setzero_ps();
    for (int64_t k = k0; k < k1; ++k) {
      __m256 b[MR];
      for (int m = 0; m < MR; ++m) b[m] = _mm256_broadcast_ss(xq + m * ldx + k);
      for (int p = 0; p < P; ++p) {
        __m256 lo, hi;
        e4m3x16_to_f32(panel[p] + k * kNr, lo, hi);
        for (int m = 0; m < MR; ++m) {
          s[m][p][0] = _mm256_fmadd_ps(b[m], lo, s[m][p][0]);
          s[m][p][1] = _mm256_fmadd_ps(b[m], hi, s[m][p][1]);
        }
      }
    }
    for (int m = 0; m < MR; ++m)
      for (int p = 0; p < P; ++p)
        add_block(y + m * ldy + (p0 + p) * kNr, mask[p], s[m][p][0], s[m][p][1], xs[m * ldxs + g] * ws[p][g]);
  }
}

// Many tokens (prefill): one panel's block is converted once into `wf` (16·kn floats, L1-resident) and reused by
// every token; MR tokens × 16 outputs per tile (12 accumulators at MR = 6).
template <int MR>
DSINFER_AVX2_FN void converted_tile(const float* xq, int64_t ldx, const float* wf, int64_t k0, int64_t k1,
                                    __m256 (&s)[MR][2]) {
  for (int m = 0; m < MR; ++m) s[m][0] = s[m][1] = _mm256_setzero_ps();
  for (int64_t k = k0; k < k1; ++k) {
    const __m256 lo = _mm256_load_ps(wf + (k - k0) * kNr), hi = _mm256_load_ps(wf + (k - k0) * kNr + 8);
    for (int m = 0; m < MR; ++m) {
      const __m256 b = _mm256_broadcast_ss(xq + m * ldx + k);
      s[m][0] = _mm256_fmadd_ps(b, lo, s[m][0]);
      s[m][1] = _mm256_fmadd_ps(b, hi, s[m][1]);
    }
  }
}

template <int MR>
DSINFER_AVX2_FN void converted_rows(const float* xq, int64_t ldx, const float* xs, int64_t ldxs, const float* wf,
                                    int64_t g, int64_t k0, int64_t k1, const float* ws, const PanelMask& mask,
                                    float* y, int64_t ldy) {
  __m256 s[MR][2];
  converted_tile<MR>(xq, ldx, wf, k0, k1, s);
  for (int m = 0; m < MR; ++m) add_block(y + m * ldy, mask, s[m][0], s[m][1], xs[m * ldxs + g] * ws[g]);
}

DSINFER_AVX2_FN void panels_avx2(const float* xq, int64_t ldx, const float* xs, int64_t ldxs, int64_t T,
                                 const PackedFp8Weight& w, int64_t p0, int64_t p1, float* y, int64_t ldy) {
  const int64_t K = w.k, G = ceil_div(K, kBlock);
  if (T <= 3) {  // decode and small batches: weight bytes straight from memory, converted in registers
    auto run = [&]<int P, int MR>() {
      int64_t p = p0;
      for (; p + P <= p1; p += P) direct_tile<P, MR>(xq, ldx, xs, ldxs, w, p, y, ldy);
      for (; p < p1; ++p) direct_tile<1, MR>(xq, ldx, xs, ldxs, w, p, y, ldy);
    };
    if (T == 1) run.template operator()<4, 1>();
    else if (T == 2) run.template operator()<2, 2>();
    else run.template operator()<2, 3>();
    return;
  }
  // Prefill: tokens in chunks whose activations stay in L2 while every panel of the range passes over them.
  constexpr int64_t kChunk = 64;
  alignas(64) float wf[kBlock * kNr];
  for (int64_t t0 = 0; t0 < T; t0 += kChunk) {
    const int64_t t1 = std::min(T, t0 + kChunk);
    for (int64_t p = p0; p < p1; ++p) {
      const uint8_t* panel = w.panel(p);
      const int64_t n0 = p * kNr;
      const float* ws = w.scale_inv + (n0 / kBlock) * G;
      const PanelMask mask = panel_mask(std::min(kNr, w.n - n0));
      for (int64_t g = 0; g < G; ++g) {
        const int64_t k0 = g * kBlock, k1 = std::min(K, k0 + kBlock);
        for (int64_t k = k0; k < k1; ++k) {
          __m256 lo, hi;
          e4m3x16_to_f32(panel + k * kNr, lo, hi);
          _mm256_store_ps(wf + (k - k0) * kNr, lo);
          _mm256_store_ps(wf + (k - k0) * kNr + 8, hi);
        }
        int64_t t = t0;
        auto at = [&](int64_t tt) { return std::make_tuple(xq + tt * ldx, xs + tt * ldxs, y + tt * ldy + n0); };
        for (; t + 6 <= t1; t += 6) {
          auto [x, s, yy] = at(t);
          converted_rows<6>(x, ldx, s, ldxs, wf, g, k0, k1, ws, mask, yy, ldy);
        }
        auto [x, s, yy] = at(t);
        switch (t1 - t) {
          case 5: converted_rows<5>(x, ldx, s, ldxs, wf, g, k0, k1, ws, mask, yy, ldy); break;
          case 4: converted_rows<4>(x, ldx, s, ldxs, wf, g, k0, k1, ws, mask, yy, ldy); break;
          case 3: converted_rows<3>(x, ldx, s, ldxs, wf, g, k0, k1, ws, mask, yy, ldy); break;
          case 2: converted_rows<2>(x, ldx, s, ldxs, wf, g, k0, k1, ws, mask, yy, ldy); break;
          case 1: converted_rows<1>(x, ldx, s, ldxs, wf, g, k0, k1, ws, mask, yy, ldy); break;
          default: break;
        }
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------------------------
// AVX-512 kernels: the same lanes, 16 to a register (one panel row per lane), so one zmm holds a whole panel
// column; the e4m3 -> half -> fp32 conversion (the decode bottleneck, its shuffles all on one port) handles twice
// the bytes per instruction.

DSINFER_AVX512 __m512 e4m3x16_to_f32_512(const uint8_t* p) {
  const __m256i w = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  return _mm512_cvtph_ps(_mm256_and_si256(_mm256_slli_epi16(w, 7), _mm256_set1_epi16(int16_t(0xBF80))));
}

DSINFER_AVX512 void add_block_512(float* y, __mmask16 m, __m512 s, float c) {
  const __m512 cv = _mm512_set1_ps(c * 256.0f);
  _mm512_mask_storeu_ps(y, m, _mm512_add_ps(_mm512_maskz_loadu_ps(m, y), _mm512_mul_ps(s, cv)));
}

template <int P, int MR>
DSINFER_AVX512_FN void direct_tile_512(const float* xq, int64_t ldx, const float* xs, int64_t ldxs,
                                       const PackedFp8Weight& w, int64_t p0, float* y, int64_t ldy) {
  const int64_t K = w.k, G = ceil_div(K, kBlock);
  const uint8_t* panel[P];
  const float* ws[P];
  __mmask16 mask[P];
  for (int p = 0; p < P; ++p) {
    const int64_t n0 = (p0 + p) * kNr;
    panel[p] = w.panel(p0 + p);
    ws[p] = w.scale_inv + (n0 / kBlock) * G;
    mask[p] = panel_mask_512(std::min(kNr, w.n - n0));
  }
  for (int64_t g = 0; g < G; ++g) {
    const int64_t k0 = g * kBlock, k1 = std::min(K, k0 + kBlock);
    __m512 s[MR][P];
    for (int m = 0; m < MR; ++m)
      for (int p = 0; p < P; ++p) s[m][p] = _mm512_setzero_ps();
    for (int64_t k = k0; k < k1; ++k) {
      __m512 b[MR];
      for (int m = 0; m < MR; ++m) b[m] = _mm512_set1_ps(xq[m * ldx + k]);
      if ((k & 3) == 0)  // one cache line per panel every 4 k: ask for the line 1 KiB ahead
        for (int p = 0; p < P; ++p) _mm_prefetch(reinterpret_cast<const char*>(panel[p] + k * kNr + 1024), _MM_HINT_T0);
      for (int p = 0; p < P; ++p) {
        const __m512 wv = e4m3x16_to_f32_512(panel[p] + k * kNr);
        for (int m = 0; m < MR; ++m) s[m][p] = _mm512_fmadd_ps(b[m], wv, s[m][p]);
      }
    }
    for (int m = 0; m < MR; ++m)
      for (int p = 0; p < P; ++p)
        add_block_512(y + m * ldy + (p0 + p) * kNr, mask[p], s[m][p], xs[m * ldxs + g] * ws[p][g]);
  }
}

// P panels' converted block (wf: P × kn × 16 floats) against MR rows: 2·MR loads... per k, P·MR FMAs.
template <int P, int MR>
DSINFER_AVX512_FN void converted_rows_512(const float* xq, int64_t ldx, const float* xs, int64_t ldxs,
                                          const float* wf, int64_t g, int64_t k0, int64_t k1,
                                          const float* const* ws, const __mmask16* mask, float* y, int64_t ldy) {
  const int64_t kn = k1 - k0;
  __m512 s[MR][P];
  for (int m = 0; m < MR; ++m)
    for (int p = 0; p < P; ++p) s[m][p] = _mm512_setzero_ps();
  for (int64_t k = k0; k < k1; ++k) {
    __m512 wv[P];
    for (int p = 0; p < P; ++p) wv[p] = _mm512_load_ps(wf + (p * kn + k - k0) * kNr);
    for (int m = 0; m < MR; ++m) {
      const __m512 b = _mm512_set1_ps(xq[m * ldx + k]);
      for (int p = 0; p < P; ++p) s[m][p] = _mm512_fmadd_ps(b, wv[p], s[m][p]);
    }
  }
  for (int m = 0; m < MR; ++m)
    for (int p = 0; p < P; ++p) add_block_512(y + m * ldy + p * kNr, mask[p], s[m][p], xs[m * ldxs + g] * ws[p][g]);
}

// Prefill over panels [p0, p0+P): per K block, the P panels are converted once and every row of the token chunk
// passes over them in tiles of 12 (then 8, 4, 2, 1).
template <int P>
DSINFER_AVX512_FN void converted_panels_512(const float* xq, int64_t ldx, const float* xs, int64_t ldxs,
                                            int64_t t0, int64_t t1, const PackedFp8Weight& w, int64_t p0,
                                            float* y, int64_t ldy) {
  const int64_t K = w.k, G = ceil_div(K, kBlock), n0 = p0 * kNr;
  alignas(64) float wf[P * kBlock * kNr];
  const float* ws[P];
  __mmask16 mask[P];
  for (int p = 0; p < P; ++p) {
    ws[p] = w.scale_inv + ((p0 + p) * kNr / kBlock) * G;
    mask[p] = panel_mask_512(std::min(kNr, w.n - (p0 + p) * kNr));
  }
  for (int64_t g = 0; g < G; ++g) {
    const int64_t k0 = g * kBlock, k1 = std::min(K, k0 + kBlock), kn = k1 - k0;
    for (int p = 0; p < P; ++p) {
      const uint8_t* panel = w.panel(p0 + p);
      for (int64_t k = k0; k < k1; ++k)
        _mm512_store_ps(wf + (p * kn + k - k0) * kNr, e4m3x16_to_f32_512(panel + k * kNr));
    }
    int64_t t = t0;
    auto tile = [&]<int MR>() {
      converted_rows_512<P, MR>(xq + t * ldx, ldx, xs + t * ldxs, ldxs, wf, g, k0, k1, ws, mask, y + t * ldy + n0,
                                ldy);
      t += MR;
    };
    while (t + 12 <= t1) tile.template operator()<12>();
    if (t + 8 <= t1) tile.template operator()<8>();
    if (t + 4 <= t1) tile.template operator()<4>();
    if (t + 2 <= t1) tile.template operator()<2>();
    if (t + 1 <= t1) tile.template operator()<1>();
  }
}

DSINFER_AVX512_FN void panels_avx512(const float* xq, int64_t ldx, const float* xs, int64_t ldxs, int64_t T,
                                     const PackedFp8Weight& w, int64_t p0, int64_t p1, float* y, int64_t ldy) {
  if (T <= 8) {  // decode and small batches: every weight byte read and converted once, used by all T rows
    auto run = [&]<int P, int MR>() {
      int64_t p = p0;
      for (; p + P <= p1; p += P) direct_tile_512<P, MR>(xq, ldx, xs, ldxs, w, p, y, ldy);
      // The last 2 or 3 panels (kv_a's 2) side by side as well: a panel alone is one memory stream.
      if constexpr (P == 4) {
        if (p1 - p == 3) return direct_tile_512<3, MR>(xq, ldx, xs, ldxs, w, p, y, ldy);
        if (p1 - p == 2) return direct_tile_512<2, MR>(xq, ldx, xs, ldxs, w, p, y, ldy);
      }
      for (; p < p1; ++p) direct_tile_512<1, MR>(xq, ldx, xs, ldxs, w, p, y, ldy);
    };
    switch (T) {  // at most 16 accumulators
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
  constexpr int64_t kChunk = 96;  // tokens whose activations stay in L2 while the panels pass
  for (int64_t t0 = 0; t0 < T; t0 += kChunk) {
    const int64_t t1 = std::min(T, t0 + kChunk);
    int64_t p = p0;
    for (; p + 2 <= p1; p += 2) converted_panels_512<2>(xq, ldx, xs, ldxs, t0, t1, w, p, y, ldy);
    if (p < p1) converted_panels_512<1>(xq, ldx, xs, ldxs, t0, t1, w, p, y, ldy);
  }
}
#endif  // DSINFER_HAVE_AVX2_KERNELS

using Isa = CpuIsa;
Isa isa() { return cpu_vector_isa(); }

}  // namespace

const char* fp8_gemm_isa() {
  switch (isa()) {
    case Isa::Avx512: return "avx512";
    case Isa::Avx2: return "avx2";
    default: return "scalar";
  }
}

PackedFp8Weight pack_fp8_weight(const Weight& w) {
  if (w.dtype != DType::F8_E4M3 || w.shape.size() != 2 || !w.scale_inv || w.block != kBlock)
    throw Error(ErrorCode::Internal, fmt::format("pack_fp8_weight: {} is not a 2-D block-128 FP8 weight", w.name));
  PackedFp8Weight p;
  p.n = w.rows();
  p.k = w.cols();
  p.panels = ceil_div(p.n, kNr);
  p.scale_inv = w.scale_inv;
  const size_t bytes = size_t(p.panels * kNr * p.k);
  void* mem = std::aligned_alloc(64, (bytes + 63) / 64 * 64);
  if (!mem) throw Error(ErrorCode::OutOfMemory, fmt::format("cannot allocate {} bytes to repack {}", bytes, w.name));
  p.bytes = std::unique_ptr<uint8_t, void (*)(void*)>(static_cast<uint8_t*>(mem), [](void* q) { std::free(q); });
  uint8_t* out = p.bytes.get();
  for (int64_t pi = 0; pi < p.panels; ++pi) {
    uint8_t* dst = out + pi * p.k * kNr;
    for (int64_t j = 0; j < kNr; ++j) {
      const int64_t n = pi * kNr + j;
      if (n >= p.n) {
        for (int64_t k = 0; k < p.k; ++k) dst[k * kNr + j] = 0;
        continue;
      }
      const uint8_t* src = w.data + n * p.k;
      for (int64_t k = 0; k < p.k; ++k) {
        const uint8_t b = src[k];
        if ((b & 0x7f) == 0x7f)
          throw Error(ErrorCode::Format, fmt::format("FP8 weight {} holds a NaN (byte 0x{:02x}) at row {}, column {}",
                                                     w.name, b, n, k));
        dst[k * kNr + j] = b;
      }
    }
  }
  return p;
}

void fp8_gemm_panels(const float* xq, int64_t ldx, const float* xs, int64_t ldxs, int64_t T,
                     const PackedFp8Weight& w, int64_t p0, int64_t p1, float* y, int64_t ldy, Fp8Kernel kernel) {
  if (T <= 0 || p0 >= p1) return;
  const Isa which = kernel == Fp8Kernel::Scalar ? Isa::Scalar
                    : kernel == Fp8Kernel::Avx2 && isa() == Isa::Avx512 ? Isa::Avx2
                                                                          : isa();
  const int64_t n0 = p0 * kNr, n1 = std::min(w.n, p1 * kNr);
  for (int64_t t = 0; t < T; ++t) std::fill(y + t * ldy + n0, y + t * ldy + n1, 0.0f);
#ifdef DSINFER_HAVE_AVX2_KERNELS
  if (which == Isa::Avx512) {
    panels_avx512(xq, ldx, xs, ldxs, T, w, p0, p1, y, ldy);
    return;
  }
  if (which == Isa::Avx2) {
    panels_avx2(xq, ldx, xs, ldxs, T, w, p0, p1, y, ldy);
    return;
  }
#endif
  (void)which;
  panels_scalar(xq, ldx, xs, ldxs, T, w, p0, p1, y, ldy);
}

void fp8_gemm(const float* xq, int64_t ldx, const float* xs, int64_t ldxs, int64_t T, const PackedFp8Weight& w,
              float* y, int64_t ldy, ThreadPool& pool, Fp8Kernel kernel) {
  if (T <= 0 || w.n <= 0) return;
  pool.parallel_for(w.panels, [&](int64_t p0, int64_t p1) {
    fp8_gemm_panels(xq, ldx, xs, ldxs, T, w, p0, p1, y, ldy, kernel);
  }, 2);
}

void fp8_gemm_reference(const float* xq, int64_t ldx, const float* xs, int64_t ldxs, int64_t T, const Weight& w,
                        float* y, int64_t ldy) {
  const int64_t N = w.rows(), K = w.cols(), G = ceil_div(K, kBlock);
  const float* table = e4m3_table();
  for (int64_t t = 0; t < T; ++t)
    for (int64_t n = 0; n < N; ++n) {
      const uint8_t* wr = w.data + n * K;
      const float* ws = w.scale_inv + (n / kBlock) * G;
      float total = 0.0f;
      for (int64_t g = 0; g < G; ++g) {
        float s = 0.0f;
        for (int64_t k = g * kBlock; k < std::min(K, (g + 1) * kBlock); ++k) s += xq[t * ldx + k] * table[wr[k]];
        total += s * (xs[t * ldxs + g] * ws[g]);
      }
      y[t * ldy + n] = total;
    }
}

}  // namespace dsinfer
