// Activation quantization (see fp8_quant.cuh): one warp per (row, group). Two passes over the group (amax, then
// quantize) so that the output may alias the input: every element is read and written by the same thread.
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include "common/check.cuh"
#include "kernels/fp8_quant.cuh"

namespace dsinfer::gpu {

namespace {

constexpr float kE4m3Max = 448.0f;

// The same expression as the CPU's silu (x / (1 + e^-x)); expf may differ from glibc's by an ulp or two.
__device__ __forceinline__ float silu(float x) { return x / (1.0f + expf(-x)); }

// fp8_group_scale of the CPU backend: frexp/ldexp are exact, so the power of two is the same bit for bit.
__device__ __forceinline__ float group_scale(float amax, bool ue8m0) {
  amax = fmaxf(amax, 1e-4f);
  const float s = amax / kE4m3Max;  // IEEE division (the build keeps -prec-div=true)
  if (!ue8m0) return s;
  int e;
  const float m = frexpf(s, &e);
  return m == 0.5f ? ldexpf(1.0f, e - 1) : ldexpf(1.0f, e);
}

__global__ void fp8_quant_kernel(Fp8QuantParams p, int64_t n_groups) {
  const int64_t wid = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  const int64_t G = n_groups;
  if (wid >= p.rows * G) return;
  const int64_t r = wid / G, g = wid % G;
  const int64_t k0 = g * p.group;
  const int kn = int(min(int64_t(p.group), p.cols - k0));

  int64_t src = r;
  bool zero = false;
  if (p.row_src) {
    const int32_t s = p.row_src[r];
    zero = s < 0;
    if (!p.up) src = s;
  }
  auto in = [&](int k) -> float {
    if (zero) return 0.0f;
    const float v = p.x[src * p.ldx + k0 + k];
    return p.up ? silu(v) * p.up[src * p.ldup + k0 + k] : v;
  };

  float amax = 0.0f;
  for (int k = lane; k < kn; k += 32) amax = fmaxf(amax, fabsf(in(k)));
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, off));
  const float s = zero ? 1.0f : group_scale(amax, p.ue8m0);

  for (int k = lane; k < kn; k += 32) {
    float v = in(k) / s;
    if (!isnan(v)) v = fminf(fmaxf(v, -kE4m3Max), kE4m3Max);  // std::clamp keeps NaN, as here
    const __nv_fp8_storage_t b = __nv_cvt_float_to_fp8(v, __NV_SATFINITE, __NV_E4M3);
    if (p.q8) p.q8[r * p.ldq8 + k0 + k] = b;
    if (p.qf) {
      const float qv = __half2float(__half(__nv_cvt_fp8_to_halfraw(b, __NV_E4M3)));
      p.qf[r * p.ldqf + k0 + k] = p.qf_dequant ? qv * s : qv;
    }
  }
  if (lane == 0 && p.scales) {
    if (p.row_seg) {
      const int2 seg = p.row_seg[r];
      p.scales[int64_t(seg.x) * G + g * seg.y + (r - seg.x)] = s;
    } else {
      p.scales[r * p.s_row + g * p.s_grp] = s;
    }
  }
}

}  // namespace

void fp8_quantize_rows(const Fp8QuantParams& p, cudaStream_t stream) {
  if (p.rows == 0 || p.cols == 0) return;
  DSINFER_CUDA_REQUIRE(p.group > 0, "fp8_quantize: group must be positive");
  const int64_t G = (p.cols + p.group - 1) / p.group;
  const int64_t warps = p.rows * G;
  const int threads = 256;
  const int64_t blocks = (warps * 32 + threads - 1) / threads;
  fp8_quant_kernel<<<unsigned(blocks), threads, 0, stream>>>(p, G);
  DSINFER_CUDA_CHECK_LAUNCH();
}

}  // namespace dsinfer::gpu
