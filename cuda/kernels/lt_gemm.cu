// cuBLASLt GEMM wrapper (see lt_gemm.hpp).
#include <algorithm>
#include <cstdint>
#include <string>

#include "common/check.cuh"
#include "kernels/lt_gemm.hpp"

namespace dsinfer::gpu {

LtGemm::LtGemm() { DSINFER_CUBLAS_CHECK(cublasLtCreate(&handle_)); }

LtGemm::~LtGemm() {
  for (auto& [k, p] : plans_) {
    if (p.a) cublasLtMatrixLayoutDestroy(p.a);
    if (p.b) cublasLtMatrixLayoutDestroy(p.b);
    if (p.d) cublasLtMatrixLayoutDestroy(p.d);
    if (p.desc) cublasLtMatmulDescDestroy(p.desc);
  }
  if (handle_) cublasLtDestroy(handle_);
  if (bf16_out_) cudaFree(bf16_out_);
}

namespace {
// Largest power of two (≤ 256) dividing the address.
int alignment(const void* p) {
  const uintptr_t v = reinterpret_cast<uintptr_t>(p);
  int a = 1;
  while (a < 256 && v % uintptr_t(2 * a) == 0) a *= 2;
  return a;
}
// out[m, n] (row stride ldo) = float(d[m * N + n]) for the bf16 D of a bf16_out plan.
__global__ void widen_bf16_kernel(const uint16_t* d, int64_t N, int64_t M, float* out, int64_t ldo) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < N * M; i += int64_t(gridDim.x) * blockDim.x)
    out[(i / N) * ldo + i % N] = __uint_as_float(uint32_t(d[i]) << 16);
}

}  // namespace

LtGemm::Plan& LtGemm::plan(const LtGemmArgs& a) {
  const int al_w = alignment(a.w), al_x = alignment(a.x), al_d = alignment(a.out);
  const Key key{int(a.kind), a.N, a.M, a.K, a.ldw, a.ldx, a.ldo, al_w, al_x, al_d};
  auto it = plans_.find(key);
  if (it != plans_.end()) return it->second;
  Plan& p = plans_[key];
  const cudaDataType_t ab = a.kind == LtKind::Fp8Block ? CUDA_R_8F_E4M3
                            : a.kind == LtKind::Bf16   ? CUDA_R_16BF
                                                       : CUDA_R_32F;
  DSINFER_CUBLAS_CHECK(cublasLtMatmulDescCreate(&p.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t opT = CUBLAS_OP_T, opN = CUBLAS_OP_N;
  DSINFER_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSA, &opT, sizeof(opT)));
  DSINFER_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSB, &opN, sizeof(opN)));
  if (a.kind == LtKind::Fp8Block) {
    const cublasLtMatmulMatrixScale_t am = CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F;
    const cublasLtMatmulMatrixScale_t bm = CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F;
    DSINFER_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_A_SCALE_MODE, &am, sizeof(am)));
    DSINFER_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_B_SCALE_MODE, &bm, sizeof(bm)));
    // The heuristic may look at the scale pointers' presence; real ones are set before every run.
    const void* dummy = a.w_scale;
    DSINFER_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &dummy, sizeof(dummy)));
    dummy = a.x_scale;
    DSINFER_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &dummy, sizeof(dummy)));
  }
  DSINFER_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.a, ab, uint64_t(a.K), uint64_t(a.N), a.ldw));
  DSINFER_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.b, ab, uint64_t(a.K), uint64_t(a.M), a.ldx));
  DSINFER_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.d, CUDA_R_32F, uint64_t(a.N), uint64_t(a.M), a.ldo));
  p.ok = heuristic(p, al_w, al_x, al_d);
  if (!p.ok && a.kind == LtKind::Fp8Block) {
    cublasLtMatrixLayoutDestroy(p.d);
    p.d = nullptr;
    DSINFER_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.d, CUDA_R_16BF, uint64_t(a.N), uint64_t(a.M), a.N));
    p.bf16_out = true;
    p.ok = heuristic(p, al_w, al_x, 256);
  }
  return p;
}

bool LtGemm::heuristic(Plan& p, int al_w, int al_x, int al_d) {
  cublasLtMatmulPreference_t pref = nullptr;
  DSINFER_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
  const uint64_t ws = workspace_bytes_;
  DSINFER_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)));
  const uint32_t al[3] = {uint32_t(al_w), uint32_t(al_x), uint32_t(al_d)};
  DSINFER_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al[0], 4));
  DSINFER_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al[1], 4));
  DSINFER_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al[2], 4));
  DSINFER_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al[2], 4));
  cublasLtMatmulHeuristicResult_t res{};
  int n = 0;
  const cublasStatus_t st =
      cublasLtMatmulAlgoGetHeuristic(handle_, p.desc, p.a, p.b, p.d, p.d, pref, 1, &res, &n);
  cublasLtMatmulPreferenceDestroy(pref);
  const bool ok = st == CUBLAS_STATUS_SUCCESS && n > 0 && res.state == CUBLAS_STATUS_SUCCESS;
  if (ok) p.algo = res.algo;
  return ok;
}

bool LtGemm::supported(const LtGemmArgs& a) { return plan(a).ok; }

void LtGemm::run(const LtGemmArgs& a, cudaStream_t stream) {
  Plan& p = plan(a);
  if (!p.ok)
    throw_device_error(ErrorCode::Unsupported,
                       "cuBLASLt has no algorithm for kind " + std::to_string(int(a.kind)) + " N=" +
                           std::to_string(a.N) + " M=" + std::to_string(a.M) + " K=" + std::to_string(a.K) +
                           " (ldw " + std::to_string(a.ldw) + ", ldx " + std::to_string(a.ldx) + ", ldo " +
                           std::to_string(a.ldo) + ")",
                       __FILE__, __LINE__);
  if (a.kind == LtKind::Fp8Block) {
    DSINFER_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &a.w_scale, sizeof(a.w_scale)));
    DSINFER_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &a.x_scale, sizeof(a.x_scale)));
  }
  const float alpha = 1.0f, beta = 0.0f;
  if (!p.bf16_out) {
    DSINFER_CUBLAS_CHECK(cublasLtMatmul(handle_, p.desc, &alpha, a.w, p.a, a.x, p.b, &beta, a.out, p.d, a.out, p.d,
                                        &p.algo, workspace_, workspace_bytes_, stream));
    return;
  }
  const size_t bytes = size_t(a.N) * size_t(a.M) * 2;
  if (bf16_out_bytes_ < bytes) {
    DSINFER_CUDA_CHECK(cudaStreamSynchronize(stream));  // the old buffer may still be in use
    if (bf16_out_) DSINFER_CUDA_CHECK(cudaFree(bf16_out_));
    bf16_out_ = nullptr;
    DSINFER_CUDA_CHECK(cudaMalloc(&bf16_out_, bytes));
    bf16_out_bytes_ = bytes;
  }
  DSINFER_CUBLAS_CHECK(cublasLtMatmul(handle_, p.desc, &alpha, a.w, p.a, a.x, p.b, &beta, bf16_out_, p.d, bf16_out_,
                                      p.d, &p.algo, workspace_, workspace_bytes_, stream));
  const int64_t total = a.N * a.M;
  widen_bf16_kernel<<<unsigned(std::min<int64_t>((total + 255) / 256, 65535)), 256, 0, stream>>>(
      static_cast<const uint16_t*>(bf16_out_), a.N, a.M, a.out, a.ldo);
  DSINFER_CUDA_CHECK_LAUNCH();
}

}  // namespace dsinfer::gpu
