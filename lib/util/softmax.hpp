// Softmax with the same bits on every CPU: the sampler chain's probabilities (Candidates::softmax) and CPU attention.
#pragma once
#include <cstddef>

namespace dsinfer {

// out[i] = e_i / S with e_i = exp(x[i] - max x) and S the sum of the e_i, for x[0, n); out may be x. Defined
// operation by operation so that the AVX2 path and the portable one give identical bits (a seed gives the same
// tokens on every machine, whatever its libm): e_i by softmax_exp (below); S in double as 8 partial sums over the
// positions i mod 8, added as ((s0 + s4) + (s2 + s6)) + ((s1 + s5) + (s3 + s7)); out[i] = float(double(e_i) * R)
// with R = 1 / S in double (one division, not one per value). A NaN in x is skipped by the max and gives NaN
// probabilities; all -inf gives NaN (no candidate is possible).
void softmax(const float* x, size_t n, float* out);

// exp(x) for x <= 0 (x - max in a softmax), within 1 ulp of the true value (0.94 at worst over every float argument
// from ln(FLT_MIN) to 0); 0 below ln(FLT_MIN) = -87.34 and for -inf. Computed as 2^k · p(r) with k = round(x / ln 2),
// r = x - k·ln 2 in two fused steps (|r| <= ln 2 / 2) and p the Taylor polynomial of degree 7 (truncation error 5e-9
// relative), by Horner's rule in fused multiply-adds. Not monotone: 2,878 of the 1.1e9 steps from one float
// argument to the next go down by an ulp, so an order by probability can differ from the order by logit there
// (top_p orders by logit and does not assume it).
float softmax_exp(float x);

namespace softmax_detail {
void softmax_portable(const float* x, size_t n, float* out);  // the definition above, one value at a time
bool softmax_avx2(const float* x, size_t n, float* out);      // false where the CPU lacks AVX2 + FMA (nothing written)
}  // namespace softmax_detail

}  // namespace dsinfer
