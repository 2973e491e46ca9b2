// Memory-bound ops of the CUDA backend (see elementwise.cuh). Row ops use one block per row; sums that the CPU
// takes in double are taken in double here too.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include "common/check.cuh"
#include "kernels/elementwise.cuh"

namespace dsinfer::gpu {

namespace {

__device__ __forceinline__ float load_elem(const void* data, WeightKind kind, int64_t i) {
  switch (kind) {
    case WeightKind::BF16: return __uint_as_float(uint32_t(static_cast<const uint16_t*>(data)[i]) << 16);
    case WeightKind::F16: {
      __half_raw h;
      h.x = static_cast<const uint16_t*>(data)[i];
      return __half2float(__half(h));
    }
    case WeightKind::FP8:
      return __half2float(__half(__nv_cvt_fp8_to_halfraw(static_cast<const uint8_t*>(data)[i], __NV_E4M3)));
    default: return static_cast<const float*>(data)[i];
  }
}

__device__ __forceinline__ float weight_at(const DeviceTensorRef& w, int64_t r, int64_t c) {
  const float v = load_elem(w.data, w.kind, r * w.cols + c);
  if (w.kind != WeightKind::FP8) return v;
  return v * w.scale[(r / w.block) * w.scale_ld + c / w.block];
}

// Block-wide sum of a double (blockDim.x a multiple of 32, ≤ 1024).
__device__ double block_sum(double v) {
  __shared__ double part[32];
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, nw = blockDim.x / 32;
  __syncthreads();  // part[] may still be read by a previous call
  if (lane == 0) part[warp] = v;
  __syncthreads();
  double s = 0.0;
  for (int i = 0; i < nw; ++i) s += part[i];  // same order in every thread
  return s;
}

__global__ void decode_rows_kernel(DeviceTensorRef w, const int32_t* ids, float* out, int64_t ldo) {
  const int64_t i = blockIdx.x;
  const int64_t r = ids ? ids[i] : i;
  for (int64_t c = int64_t(blockIdx.y) * blockDim.x + threadIdx.x; c < w.cols; c += int64_t(gridDim.y) * blockDim.x)
    out[i * ldo + c] = weight_at(w, r, c);
}

__global__ void rms_norm_kernel(float* res, int64_t ldr, const float* add, int64_t lda, DeviceTensorRef g, float eps,
                                float* out, int64_t ldo, int64_t cols) {
  const int64_t r = blockIdx.x;
  float* xr = res + r * ldr;
  double ss = 0.0;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
    float v = xr[c];
    if (add) {
      v = __fadd_rn(v, add[r * lda + c]);
      xr[c] = v;
    }
    ss += double(v) * double(v);
  }
  ss = block_sum(ss);
  const float inv = float(1.0 / sqrt(ss / double(cols) + double(eps)));
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x)
    out[r * ldo + c] = __fmul_rn(load_elem(g.data, g.kind, c), __fmul_rn(xr[c], inv));
}

__global__ void layer_norm_kernel(const float* x, int64_t ldx, DeviceTensorRef g, DeviceTensorRef b, float eps,
                                  float* out, int64_t ldo, int64_t cols) {
  const int64_t r = blockIdx.x;
  const float* xr = x + r * ldx;
  double s = 0.0;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) s += xr[c];
  const double mean = block_sum(s) / double(cols);
  double v = 0.0;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) v += (xr[c] - mean) * (xr[c] - mean);
  const double var = block_sum(v) / double(cols);
  const float inv = float(1.0 / sqrt(var + double(eps)));
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
    const float y = __fmul_rn(__fmul_rn(float(xr[c] - mean), inv), load_elem(g.data, g.kind, c));
    out[r * ldo + c] = __fadd_rn(y, load_elem(b.data, b.kind, c));
  }
}

__global__ void silu_mul_kernel(const float* gate, int64_t ldg, const float* up, int64_t ldu, float* out, int64_t ldo,
                                int64_t cols) {
  const int64_t r = blockIdx.x;
  for (int64_t c = int64_t(blockIdx.y) * blockDim.x + threadIdx.x; c < cols; c += int64_t(gridDim.y) * blockDim.x) {
    const float g = gate[r * ldg + c];
    out[r * ldo + c] = __fmul_rn(g / (1.0f + expf(-g)), up[r * ldu + c]);
  }
}

__global__ void add_kernel(float* acc, int64_t lda, const float* x, int64_t ldx, int64_t cols) {
  const int64_t r = blockIdx.x;
  for (int64_t c = int64_t(blockIdx.y) * blockDim.x + threadIdx.x; c < cols; c += int64_t(gridDim.y) * blockDim.x)
    acc[r * lda + c] = __fadd_rn(acc[r * lda + c], x[r * ldx + c]);
}

__global__ void rope_kernel(RopeParams p) {
  const int64_t t = blockIdx.x, h = blockIdx.y;
  const int64_t half = p.rope_dim / 2;
  const float pos = float(p.positions[t]);
  float* v = p.x + t * p.ldx + h * p.head_dim + p.rope_offset;
  for (int64_t j = threadIdx.x; j < half; j += blockDim.x) {
    const float angle = __fmul_rn(pos, p.inv_freq[j]);  // fp32 product, as the reference builds its table
    const float c = float(cos(double(angle))), s = float(sin(double(angle)));
    const int64_t i0 = p.interleaved ? 2 * j : j, i1 = p.interleaved ? 2 * j + 1 : j + half;
    const float x0 = v[i0], x1 = v[i1];
    v[i0] = __fsub_rn(__fmul_rn(x0, c), __fmul_rn(x1, s));
    v[i1] = __fadd_rn(__fmul_rn(x0, s), __fmul_rn(x1, c));
  }
}

// One block per (row, run): the runs are transformed in shared memory with the CPU's butterfly order, so the
// result is bit-identical.
__global__ void hadamard_kernel(float* x, int64_t ldx, int64_t n, float scale) {
  extern __shared__ float v[];
  float* base = x + int64_t(blockIdx.x) * ldx + int64_t(blockIdx.y) * n;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) v[i] = base[i];
  __syncthreads();
  for (int64_t len = 1; len < n; len <<= 1) {
    for (int64_t idx = threadIdx.x; idx < n / 2; idx += blockDim.x) {
      const int64_t i = (idx / len) * 2 * len + idx % len, j = i + len;
      const float u = v[i], w = v[j];
      v[i] = __fadd_rn(u, w);
      v[j] = __fsub_rn(u, w);
    }
    __syncthreads();
  }
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) base[i] = __fmul_rn(v[i], scale);
}

__global__ void f32_to_bf16_kernel(const float* src, int64_t lds, uint16_t* dst, int64_t ldd, int64_t cols) {
  const int64_t r = blockIdx.x;
  for (int64_t c = int64_t(blockIdx.y) * blockDim.x + threadIdx.x; c < cols; c += int64_t(gridDim.y) * blockDim.x) {
    const __nv_bfloat16 b = __float2bfloat16_rn(src[r * lds + c]);
    dst[r * ldd + c] = reinterpret_cast<const __nv_bfloat16_raw&>(b).x;
  }
}

dim3 row_grid(int64_t rows, int64_t cols, int threads) {
  const int64_t per_row = (cols + threads - 1) / threads;
  return dim3(unsigned(rows), unsigned(per_row < 1 ? 1 : (per_row > 65535 ? 65535 : per_row)));
}

}  // namespace

void decode_rows(const DeviceTensorRef& w, const int32_t* ids, int64_t n, float* out, int64_t ldo, cudaStream_t s) {
  if (n == 0 || w.cols == 0) return;
  decode_rows_kernel<<<row_grid(n, w.cols, 256), 256, 0, s>>>(w, ids, out, ldo);
  DSINFER_CUDA_CHECK_LAUNCH();
}

void rms_norm_rows(float* res, int64_t ldr, const float* add, int64_t lda, const DeviceTensorRef& gamma, float eps,
                   float* out, int64_t ldo, int64_t rows, int64_t cols, cudaStream_t s) {
  if (rows == 0) return;
  rms_norm_kernel<<<unsigned(rows), 256, 0, s>>>(res, ldr, add, lda, gamma, eps, out, ldo, cols);
  DSINFER_CUDA_CHECK_LAUNCH();
}

void layer_norm_rows(const float* x, int64_t ldx, const DeviceTensorRef& gamma, const DeviceTensorRef& beta,
                     float eps, float* out, int64_t ldo, int64_t rows, int64_t cols, cudaStream_t s) {
  if (rows == 0) return;
  layer_norm_kernel<<<unsigned(rows), 256, 0, s>>>(x, ldx, gamma, beta, eps, out, ldo, cols);
  DSINFER_CUDA_CHECK_LAUNCH();
}

void silu_mul_rows(const float* gate, int64_t ldg, const float* up, int64_t ldu, float* out, int64_t ldo,
                   int64_t rows, int64_t cols, cudaStream_t s) {
  if (rows == 0 || cols == 0) return;
  silu_mul_kernel<<<row_grid(rows, cols, 256), 256, 0, s>>>(gate, ldg, up, ldu, out, ldo, cols);
  DSINFER_CUDA_CHECK_LAUNCH();
}

void add_rows(float* acc, int64_t lda, const float* x, int64_t ldx, int64_t rows, int64_t cols, cudaStream_t s) {
  if (rows == 0 || cols == 0) return;
  add_kernel<<<row_grid(rows, cols, 256), 256, 0, s>>>(acc, lda, x, ldx, cols);
  DSINFER_CUDA_CHECK_LAUNCH();
}

void rope_rows(const RopeParams& p, cudaStream_t s) {
  if (p.rows == 0 || p.rope_dim == 0) return;
  rope_kernel<<<dim3(unsigned(p.rows), unsigned(p.n_heads)), 64, 0, s>>>(p);
  DSINFER_CUDA_CHECK_LAUNCH();
}

void hadamard_rows(float* x, int64_t ldx, int64_t rows, int64_t cols, int64_t n, cudaStream_t s) {
  if (rows == 0 || cols == 0) return;
  DSINFER_CUDA_REQUIRE(n > 0 && (n & (n - 1)) == 0 && n <= 8192 && cols % n == 0,
                       "hadamard: run length must be a power of two <= 8192 dividing the row");
  const float scale = 1.0f / sqrtf(float(n));
  hadamard_kernel<<<dim3(unsigned(rows), unsigned(cols / n)), 256, size_t(n) * sizeof(float), s>>>(x, ldx, n, scale);
  DSINFER_CUDA_CHECK_LAUNCH();
}

void f32_to_bf16_rows(const float* src, int64_t lds, uint16_t* dst, int64_t ldd, int64_t rows, int64_t cols,
                      cudaStream_t s) {
  if (rows == 0 || cols == 0) return;
  f32_to_bf16_kernel<<<row_grid(rows, cols, 256), 256, 0, s>>>(src, lds, dst, ldd, cols);
  DSINFER_CUDA_CHECK_LAUNCH();
}

}  // namespace dsinfer::gpu
