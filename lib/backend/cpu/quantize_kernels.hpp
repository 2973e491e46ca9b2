// FP8 e4m3 quantization of one activation group (DeepSeek's act_quant, spec §6): the group's scale from its largest
// magnitude, then every element divided by it, clamped to ±448 and rounded to the nearest e4m3 value. It runs
// before every FP8 GEMM of a decode step, on the thread that would otherwise leave the others waiting, so it has
// vector versions; they compute exactly the scalar reference's values (the division is IEEE in both, the rounding
// works on the bits), and tests/lib/backend/test_cpu_quantize.cpp compares them bit for bit.
#pragma once
#include <cstdint>

#include "backend/cpu/simd.hpp"

namespace dsinfer {

// Quantizes x[0, n) as one group: s = fp8_group_scale(max |x|, ue8m0); out[k] = e4m3(clamp(x[k] / s, ±448)), times
// s when `dequantize` (the cache's quantize-dequantize). Returns s. out may be x. A group holding a NaN goes through
// the reference whatever the kernel (the vector max would not skip it as std::max does).
float fp8_quantize_group(const float* x, int64_t n, bool ue8m0, bool dequantize, float* out,
                         CpuIsa isa = cpu_vector_isa());
float fp8_quantize_group_reference(const float* x, int64_t n, bool ue8m0, bool dequantize, float* out);

}  // namespace dsinfer
