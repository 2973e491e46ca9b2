// Shared helpers of the CUDA tests: the skip-without-device main, random inputs (FP8 weights as random e4m3 bytes
// with random block scales), and the comparisons (max error relative to the reference's RMS, cosine similarity).
#pragma once
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "backend/backend.hpp"
#include "dsinfer/error.hpp"
#include "util/dtype.hpp"

namespace dsinfer::cuda_test {

// 77 (CTest's SKIP_RETURN_CODE) with a visible message when there is no usable CUDA device, else 0.
inline int skip_without_device(const char* test) {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess || n == 0) {
    std::printf("SKIP: no CUDA device (%s): %s\n", test,
                e == cudaSuccess ? "device count is 0" : cudaGetErrorString(e));
    std::fflush(stdout);
    return 77;
  }
  cudaDeviceProp prop{};
  cudaGetDeviceProperties(&prop, 0);
  std::printf("%s on %s (sm_%d%d, %d SMs)\n", test, prop.name, prop.major, prop.minor, prop.multiProcessorCount);
  return 0;
}

// A checkpoint-like tensor that owns its bytes.
struct OwnedWeight {
  Weight w;
  std::vector<uint8_t> bytes;
  std::vector<float> scales;
};

// Test weights live until the process ends, so that the raw pointers the tests hand around stay valid (the
// backends' prepared copies are found through Weight::prepared, not by address).
inline OwnedWeight* keep(std::unique_ptr<OwnedWeight> o) {
  static std::vector<std::unique_ptr<OwnedWeight>> all;
  all.push_back(std::move(o));
  return all.back().get();
}

inline std::vector<float> randn(size_t n, std::mt19937& rng, float sigma = 1.0f) {
  std::normal_distribution<float> d(0.0f, sigma);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

// Random e4m3 bytes (every finite code: wide dynamic range, subnormals, both zeros) and block scales in
// [2^-12, 2^-8] (arbitrary fp32, as the spec says weight scales may be).
inline OwnedWeight* fp8_weight(int64_t rows, int64_t cols, std::mt19937& rng, const char* name = "w") {
  auto o = std::make_unique<OwnedWeight>();
  o->bytes.resize(size_t(rows * cols));
  std::uniform_int_distribution<int> b(0, 255);
  for (auto& x : o->bytes) {
    int v = b(rng);
    while ((v & 0x7f) == 0x7f) v = b(rng);  // NaN codes
    x = uint8_t(v);
  }
  const int64_t rb = (rows + 127) / 128, kb = (cols + 127) / 128;
  o->scales.resize(size_t(rb * kb));
  std::uniform_real_distribution<float> s(std::ldexp(1.0f, -12), std::ldexp(1.0f, -8));
  for (auto& x : o->scales) x = s(rng);
  o->w.name = name;
  o->w.dtype = DType::F8_E4M3;
  o->w.shape = {rows, cols};
  o->w.data = o->bytes.data();
  o->w.scale_inv = o->scales.data();
  o->w.block = 128;
  return keep(std::move(o));
}

// bf16 / f16 / f32 weight with N(0, sigma) values.
inline OwnedWeight* dense_weight(DType t, std::vector<int64_t> shape, std::mt19937& rng,
                                                 float sigma = 0.05f, const char* name = "w") {
  auto o = std::make_unique<OwnedWeight>();
  int64_t n = 1;
  for (auto d : shape) n *= d;
  const std::vector<float> v = randn(size_t(n), rng, sigma);
  o->bytes.resize(size_t(n) * dtype_size(t));
  for (int64_t i = 0; i < n; ++i) {
    if (t == DType::F32) {
      std::memcpy(&o->bytes[size_t(i) * 4], &v[size_t(i)], 4);
    } else if (t == DType::BF16) {
      const uint16_t h = f32_to_bf16(v[size_t(i)]);
      std::memcpy(&o->bytes[size_t(i) * 2], &h, 2);
    } else {  // F16 via the round trip of a bf16-representable value (exact in f16 for these magnitudes)
      const float f = bf16_to_f32(f32_to_bf16(v[size_t(i)]));
      uint32_t b = f32_to_bits(f);
      const uint32_t sign = (b >> 16) & 0x8000u;
      int e = int((b >> 23) & 0xff) - 127 + 15;
      uint32_t m = (b >> 13) & 0x3ffu;
      uint16_t h;
      if (f == 0.0f || e <= 0) h = uint16_t(sign);  // tiny values flush to zero (fine for a test weight)
      else h = uint16_t(sign | (uint32_t(e) << 10) | m);
      std::memcpy(&o->bytes[size_t(i) * 2], &h, 2);
    }
  }
  o->w.name = name;
  o->w.dtype = t;
  o->w.shape = shape;
  o->w.data = o->bytes.data();
  return keep(std::move(o));
}

// A large bf16 weight filled straight from a xorshift generator (no fp32 staging): magnitudes in [2^-7, 2^-1),
// random signs and mantissas.
inline OwnedWeight* bf16_weight_fast(int64_t rows, int64_t cols, uint64_t seed, const char* name) {
  auto o = std::make_unique<OwnedWeight>();
  o->bytes.resize(size_t(rows * cols) * 2);
  uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
  auto* p = reinterpret_cast<uint16_t*>(o->bytes.data());
  for (int64_t i = 0; i < rows * cols; ++i) {
    x ^= x << 13; x ^= x >> 7; x ^= x << 17;
    const uint16_t sign = uint16_t((x >> 63) << 15), exp = uint16_t(120 + (x >> 8) % 6), man = uint16_t(x & 0x7f);
    p[i] = uint16_t(sign | (exp << 7) | man);
  }
  o->w.name = name;
  o->w.dtype = DType::BF16;
  o->w.shape = {rows, cols};
  o->w.data = o->bytes.data();
  return keep(std::move(o));
}

// A view of rows [r0, r0 + n) of a matrix weight (r0 a multiple of 128 for FP8), sharing its bytes: the CPU
// reference then computes only a slice of a real-sized output.
inline Weight row_slice(const Weight& w, int64_t r0, int64_t n) {
  Weight s = w;
  s.name = w.name + "[rows]";
  s.shape = {n, w.cols()};
  s.data = w.data + size_t(r0 * w.cols()) * dtype_size(w.dtype);
  if (w.scale_inv) s.scale_inv = w.scale_inv + (r0 / w.block) * ((w.cols() + w.block - 1) / w.block);
  return s;
}

// A matrix on a backend filled from host data.
inline Matrix upload(Backend& b, const std::vector<float>& host, int64_t rows, int64_t cols) {
  Matrix m = b.matrix(rows, cols);
  b.from_host(m.view, host.data());
  return m;
}

inline std::vector<float> download(Backend& b, Tensor2D t) {
  std::vector<float> v(size_t(t.rows * t.cols));
  b.to_host(v.data(), t);
  return v;
}

// Index data (positions, block tables, index lists, routing) in a backend's memory, where the Backend interface
// takes it (interface v2): a copy of `host`, or room for n values.
template <class T>
struct BackendArray {
  Buffer buffer;
  T* data() const { return static_cast<T*>(buffer.data()); }
};
template <class T>
BackendArray<T> to_backend(Backend& b, const std::vector<T>& host) {
  BackendArray<T> a{b.allocate(std::max<size_t>(host.size(), 1) * sizeof(T), false)};
  if (!host.empty()) b.bytes_from_host(a.data(), host.data(), host.size() * sizeof(T));
  return a;
}
template <class T>
BackendArray<T> backend_array(Backend& b, size_t n) {
  return {b.allocate(std::max<size_t>(n, 1) * sizeof(T), true)};
}
template <class T>
std::vector<T> from_backend(Backend& b, const T* p, size_t n) {
  std::vector<T> v(n);
  if (n) b.bytes_to_host(v.data(), p, n * sizeof(T));
  return v;
}

struct Diff {
  double max_abs = 0, ref_rms = 0, rel = 0, cosine = 1;
  int64_t mismatches = 0;  // elements differing at all
  bool finite = true;
  std::string str() const {
    char buf[256];
    std::snprintf(buf, sizeof buf, "max|d|=%.3g ref_rms=%.3g max|d|/rms=%.3g cos=%.9f differing=%lld finite=%d",
                  max_abs, ref_rms, rel, cosine, (long long)mismatches, int(finite));
    return buf;
  }
};

// Compares `got` against `ref` element-wise; `cols_got`/`cols_ref` allow comparing a column slice [0, cols_ref)
// of a wider result.
inline Diff compare(const std::vector<float>& ref, const std::vector<float>& got, int64_t rows, int64_t cols_ref,
                    int64_t ld_ref, int64_t ld_got) {
  Diff d;
  double ss = 0, dot = 0, g2 = 0;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols_ref; ++c) {
      const double a = ref[size_t(r * ld_ref + c)], b = got[size_t(r * ld_got + c)];
      if (!std::isfinite(b) && std::isfinite(a)) d.finite = false;
      const double e = std::fabs(a - b);
      if (e > d.max_abs) d.max_abs = e;
      if (a != b) ++d.mismatches;
      ss += a * a;
      dot += a * b;
      g2 += b * b;
    }
  const double n = double(rows * cols_ref);
  d.ref_rms = std::sqrt(ss / std::max(n, 1.0));
  d.rel = d.max_abs / std::max(d.ref_rms, 1e-30);
  d.cosine = (ss > 0 && g2 > 0) ? dot / std::sqrt(ss * g2) : (ss == g2 ? 1.0 : 0.0);
  return d;
}

inline Diff compare(const std::vector<float>& ref, const std::vector<float>& got, int64_t rows, int64_t cols) {
  return compare(ref, got, rows, cols, cols, cols);
}

}  // namespace dsinfer::cuda_test
