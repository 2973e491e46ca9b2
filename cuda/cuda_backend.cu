// The CUDA backend (see cuda_backend.hpp): memory, weights, and the host side of every op except attention and
// the indexer (cuda/attention/cuda_backend_attention.cu). Kernels live in cuda/kernels/, one family per file.
#include "cuda_backend.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "backend/cuda_options.hpp"
#include "common/check.cuh"
#include "dsinfer/error.hpp"
#include "kernels/fp8_quant.cuh"
#include "kernels/moe_permute.cuh"
#include "kernels/moe_router.cuh"
#include "kernels/skinny_gemm.cuh"

namespace dsinfer {

namespace {

using gpu::WeightKind;

// Scratch slots of this file (see CudaBackend::scratch).
enum Slot : int {
  kSlotXq, kSlotXs, kSlotXb, kSlotOut, kSlotSplitK,
  kSlotLogits, kSlotBias, kSlotRoundBf16,
  kSlotGroupWs, kSlotRowSrc, kSlotRowSeg, kSlotSlotRow,
  kSlotMoeX, kSlotMoeXs, kSlotMoeG, kSlotMoeU, kSlotMoeH, kSlotMoeHs, kSlotMoeY,
};

constexpr size_t kLtWorkspaceBytes = size_t(32) << 20;

[[noreturn]] void fail(ErrorCode code, const std::string& what) {
  throw Error(code, "cuda backend: " + what);
}

void require(bool ok, const char* what) {
  if (!ok) fail(ErrorCode::Internal, what);
}

int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

WeightKind kind_of(DType t, const std::string& name) {
  switch (t) {
    case DType::F32: return WeightKind::F32;
    case DType::BF16: return WeightKind::BF16;
    case DType::F16: return WeightKind::F16;
    case DType::F8_E4M3: return WeightKind::FP8;
    default:
      fail(ErrorCode::Unsupported, "weight " + name + " has dtype " + std::string(dtype_name(t)) +
                                       ", which the CUDA backend does not take");
  }
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// A device Tensor2D's 2-D copy geometry in bytes.
size_t pitch(const Tensor2D& t) { return size_t(t.ld) * sizeof(float); }

}  // namespace

CudaBackend::CudaBackend(const BackendOptions& opts, int device)
    : small_m_max_(opts.cuda.small_m_max),
      small_m_tensor_cores_(opts.cuda.small_m_tensor_cores),
      cublaslt_fp8_(opts.cuda.cublaslt_fp8),
      mla_tensor_cores_(opts.cuda.mla_kernel == kTensorCoreKernel),
      indexer_tensor_cores_(opts.cuda.indexer_kernel == kTensorCoreKernel) {
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess || count == 0)
    fail(ErrorCode::Device, std::string("no CUDA device is available (") +
                                (e == cudaSuccess ? "device count 0" : cudaGetErrorString(e)) + ")");
  device_ = device >= 0 ? device : opts.cuda.device;
  if (device_ >= count)
    fail(ErrorCode::InvalidArgument,
         "CUDA device " + std::to_string(device_) + " requested, this machine has " + std::to_string(count));
  DSINFER_CUDA_CHECK(cudaSetDevice(device_));
  DSINFER_CUDA_CHECK(cudaDeviceGetAttribute(&num_sms_, cudaDevAttrMultiProcessorCount, device_));
  // A blocking stream: Buffers are released on the legacy default stream (their release function cannot carry
  // the backend), which then orders after everything enqueued here.
  DSINFER_CUDA_CHECK(cudaStreamCreate(&stream_));
  cudaMemPool_t pool = nullptr;
  DSINFER_CUDA_CHECK(cudaDeviceGetDefaultMemPool(&pool, device_));
  uint64_t keep = UINT64_MAX;  // keep freed blocks cached in the pool instead of returning them at each sync
  DSINFER_CUDA_CHECK(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep));
  lt_ = std::make_unique<gpu::LtGemm>();
  DSINFER_CUDA_CHECK(cudaMalloc(&lt_workspace_, kLtWorkspaceBytes));
  lt_->set_workspace(lt_workspace_, kLtWorkspaceBytes);
}

CudaBackend::~CudaBackend() {
  // Errors cannot leave a destructor; a failing device at this point has already been reported by an op.
  cudaSetDevice(device_);
  if (stream_) cudaStreamSynchronize(stream_);
  for (auto& s : scratch_)
    if (s.ptr) cudaFreeAsync(s.ptr, stream_);
  if (stream_) cudaStreamSynchronize(stream_);
  for (auto& w : weights_) {
    if (w.data) cudaFree(w.data);
    if (w.scale) cudaFree(w.scale);
  }
  lt_.reset();
  if (lt_workspace_) cudaFree(lt_workspace_);
  if (stream_) cudaStreamDestroy(stream_);
}

void CudaBackend::synchronize() { DSINFER_CUDA_CHECK(cudaStreamSynchronize(stream_)); }

// --- memory ---

Buffer CudaBackend::allocate(size_t bytes, bool zero) {
  DSINFER_CUDA_CHECK(cudaSetDevice(device_));
  void* p = nullptr;
  const size_t n = std::max<size_t>(bytes, 1);
  DSINFER_CUDA_CHECK(cudaMallocAsync(&p, n, stream_));
  if (zero) DSINFER_CUDA_CHECK(cudaMemsetAsync(p, 0, n, stream_));
  return Buffer(p, bytes, [](void* q) { cudaFreeAsync(q, cudaStreamLegacy); });
}

BackendMemoryStats CudaBackend::memory_stats() const {
  BackendMemoryStats st;
  for (const Scratch& s : scratch_) st.scratch_bytes += s.ptr ? s.bytes : 0;
  return st;
}

void* CudaBackend::scratch(int slot, size_t bytes) {
  require(slot >= 0 && slot < kScratchSlots, "scratch slot out of range");
  Scratch& s = scratch_[size_t(slot)];
  if (s.bytes < bytes || !s.ptr) {
    if (s.ptr) DSINFER_CUDA_CHECK(cudaFreeAsync(s.ptr, stream_));
    s.ptr = nullptr;
    const size_t n = std::max<size_t>(256, bytes + bytes / 4);  // grow with headroom
    DSINFER_CUDA_CHECK(cudaMallocAsync(&s.ptr, n, stream_));
    s.bytes = n;
  }
  return s.ptr;
}

void CudaBackend::fill_zero(Tensor2D x) {
  if (x.rows == 0 || x.cols == 0) return;
  DSINFER_CUDA_CHECK(cudaMemset2DAsync(x.data, pitch(x), 0, size_t(x.cols) * 4, size_t(x.rows), stream_));
}

void CudaBackend::copy(Tensor2D dst, Tensor2D src) {
  require(dst.rows == src.rows && dst.cols == src.cols, "copy shape mismatch");
  if (src.rows == 0 || src.cols == 0 || dst.data == src.data) return;
  DSINFER_CUDA_CHECK(cudaMemcpy2DAsync(dst.data, pitch(dst), src.data, pitch(src), size_t(src.cols) * 4,
                                       size_t(src.rows), cudaMemcpyDeviceToDevice, stream_));
}

void CudaBackend::to_host(float* dst, Tensor2D src) {
  if (src.rows == 0 || src.cols == 0) return;
  DSINFER_CUDA_CHECK(cudaMemcpy2DAsync(dst, size_t(src.cols) * 4, src.data, pitch(src), size_t(src.cols) * 4,
                                       size_t(src.rows), cudaMemcpyDeviceToHost, stream_));
  synchronize();
}

void CudaBackend::from_host(Tensor2D dst, const float* src) {
  if (dst.rows == 0 || dst.cols == 0) return;
  DSINFER_CUDA_CHECK(cudaMemcpy2DAsync(dst.data, pitch(dst), src, size_t(dst.cols) * 4, size_t(dst.cols) * 4,
                                       size_t(dst.rows), cudaMemcpyHostToDevice, stream_));
  synchronize();  // the caller may free or reuse `src` as soon as we return
}

// Packed KV cache bytes (fork's copy on write, save/restore): plain copies on the backend stream.
void CudaBackend::copy_bytes(void* dst, const void* src, size_t bytes) {
  if (bytes == 0 || dst == src) return;
  DSINFER_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream_));
}

void CudaBackend::bytes_to_host(void* dst, const void* src, size_t bytes) {
  if (bytes == 0) return;
  DSINFER_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, stream_));
  synchronize();
}

void CudaBackend::bytes_from_host(void* dst, const void* src, size_t bytes) {
  if (bytes == 0) return;
  DSINFER_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream_));
  synchronize();  // the caller may free or reuse `src` as soon as we return
}

// --- weights ---

const CudaBackend::DeviceWeight& CudaBackend::upload_weight(const Weight& w) {
  if (!w.present()) fail(ErrorCode::Internal, "weight " + w.name + " is absent");
  const int32_t at = handle_index(w, weights_.size());
  if (at >= 0) {
    const DeviceWeight& d = weights_[size_t(at)];
    if (d.host == w.data && d.rows == w.rows() && d.cols == w.cols() && d.dtype == w.dtype) return d;
  }
  kind_of(w.dtype, w.name);  // refuses dtypes the kernels cannot read
  DSINFER_CUDA_CHECK(cudaSetDevice(device_));
  DeviceWeight d;
  d.host = w.data;
  d.rows = w.rows();
  d.cols = w.cols();
  d.dtype = w.dtype;
  d.numel = w.numel();
  const size_t bytes = size_t(d.numel) * dtype_size(w.dtype);
  DSINFER_CUDA_CHECK(cudaMalloc(&d.data, std::max<size_t>(bytes, 16)));
  DSINFER_CUDA_CHECK(cudaMemcpy(d.data, w.data, bytes, cudaMemcpyHostToDevice));
  if (w.dtype == DType::F8_E4M3) {
    if (!w.scale_inv) fail(ErrorCode::Internal, "FP8 weight " + w.name + " has no scale");
    // cuBLASLt's BLK128x128_32F layout: per 128-row block, the K blocks contiguous, padded to a multiple of 4.
    const int64_t rb = (w.rows() + w.block - 1) / w.block, kb = (w.cols() + w.block - 1) / w.block;
    d.scale_ld = round_up(kb, 4);
    std::vector<float> s(size_t(rb * d.scale_ld), 0.0f);
    for (int64_t r = 0; r < rb; ++r) std::memcpy(&s[size_t(r * d.scale_ld)], w.scale_inv + r * kb, size_t(kb) * 4);
    DSINFER_CUDA_CHECK(cudaMalloc(&d.scale, s.size() * 4));
    DSINFER_CUDA_CHECK(cudaMemcpy(d.scale, s.data(), s.size() * 4, cudaMemcpyHostToDevice));
  }
  weights_.push_back(d);
  w.prepared = WeightHandle{id(), int32_t(weights_.size() - 1)};
  return weights_.back();
}

void CudaBackend::prepare_weight(const Weight& w) {
  if (w.present()) upload_weight(w);
}

gpu::DeviceTensorRef CudaBackend::device_weight(const Weight& w) {
  const DeviceWeight& d = upload_weight(w);
  gpu::DeviceTensorRef r;
  r.data = d.data;
  r.kind = kind_of(w.dtype, w.name);
  r.rows = w.rows();
  r.cols = w.cols();
  r.scale = d.scale;
  r.scale_ld = d.scale_ld;
  r.block = w.block;
  return r;
}

Matrix CudaBackend::dequantize(const Weight& w) {
  const gpu::DeviceTensorRef r = device_weight(w);
  Matrix m;
  m.buffer = allocate(size_t(r.rows * r.cols) * sizeof(float), false);
  m.view = Tensor2D{static_cast<float*>(m.buffer.data()), r.rows, r.cols, r.cols};
  gpu::decode_rows(r, nullptr, r.rows, m.view.data, m.view.ld, stream_);
  return m;
}

// --- elementwise ops ---

void CudaBackend::embed(const Weight& table, std::span<const int32_t> ids, Tensor2D out) {
  require(out.rows == int64_t(ids.size()) && out.cols == table.cols(), "embed shape mismatch");
  // The ids are device memory (interface v2): the model checked them against the vocabulary before uploading.
  if (ids.empty()) return;
  const gpu::DeviceTensorRef r = device_weight(table);
  gpu::decode_rows(r, ids.data(), int64_t(ids.size()), out.data, out.ld, stream_);
}

void CudaBackend::add_rms_norm(Tensor2D residual, Tensor2D x, const Weight& w, float eps, Tensor2D out) {
  require(w.numel() == residual.cols && out.cols == residual.cols && out.rows == residual.rows &&
              (!x.data || (x.rows == residual.rows && x.cols == residual.cols)),
          "add_rms_norm shape mismatch");
  gpu::rms_norm_rows(residual.data, residual.ld, x.data, x.ld, device_weight(w), eps, out.data, out.ld,
                     residual.rows, residual.cols, stream_);
}

void CudaBackend::rms_norm(Tensor2D x, const Weight& w, float eps, Tensor2D out) {
  require(w.numel() == x.cols && out.cols == x.cols && out.rows == x.rows, "rms_norm shape mismatch");
  gpu::rms_norm_rows(x.data, x.ld, nullptr, 0, device_weight(w), eps, out.data, out.ld, x.rows, x.cols, stream_);
}

void CudaBackend::layer_norm(Tensor2D x, const Weight& w, const Weight& b, float eps, Tensor2D out) {
  require(w.numel() == x.cols && b.numel() == x.cols && out.rows == x.rows && out.cols == x.cols,
          "layer_norm shape mismatch");
  gpu::layer_norm_rows(x.data, x.ld, device_weight(w), device_weight(b), eps, out.data, out.ld, x.rows, x.cols,
                       stream_);
}

void CudaBackend::silu_mul(Tensor2D gate, Tensor2D up, Tensor2D out) {
  require(gate.rows == up.rows && gate.cols == up.cols && out.rows == gate.rows && out.cols == gate.cols,
          "silu_mul shape mismatch");
  gpu::silu_mul_rows(gate.data, gate.ld, up.data, up.ld, out.data, out.ld, gate.rows, gate.cols, stream_);
}

void CudaBackend::add(Tensor2D acc, Tensor2D x) {
  require(acc.rows == x.rows && acc.cols == x.cols, "add shape mismatch");
  gpu::add_rows(acc.data, acc.ld, x.data, x.ld, x.rows, x.cols, stream_);
}

void CudaBackend::rope(const RopeArgs& a) {
  require(a.rope_dim % 2 == 0 && a.rope_offset + a.rope_dim <= a.head_dim, "rope dims");
  if (a.x.rows == 0 || a.rope_dim == 0) return;
  gpu::RopeParams p;
  p.x = a.x.data;
  p.ldx = a.x.ld;
  p.rows = a.x.rows;
  p.n_heads = a.n_heads;
  p.head_dim = a.head_dim;
  p.rope_offset = a.rope_offset;
  p.rope_dim = a.rope_dim;
  p.positions = a.positions;  // device memory (interface v2), as is inv_freq
  p.inv_freq = a.inv_freq;
  p.interleaved = a.layout == RopeLayout::Interleaved;
  gpu::rope_rows(p, stream_);
}

// The activation cast of the BF16 GEMM path, then the row decoder reading the bf16 values back: round to nearest
// even, and exact on the way back (every bf16 value is an fp32 value), without the default's host round trip.
void CudaBackend::round_to_bf16(Tensor2D x) {
  if (x.rows == 0 || x.cols == 0) return;
  auto* b = static_cast<uint16_t*>(scratch(kSlotRoundBf16, size_t(x.rows * x.cols) * 2));
  gpu::f32_to_bf16_rows(x.data, x.ld, b, x.cols, x.rows, x.cols, stream_);
  gpu::DeviceTensorRef r;
  r.data = b;
  r.kind = WeightKind::BF16;
  r.rows = x.rows;
  r.cols = x.cols;
  gpu::decode_rows(r, nullptr, x.rows, x.data, x.ld, stream_);
}

void CudaBackend::hadamard(Tensor2D x, int64_t n) {
  require(n > 0 && (n & (n - 1)) == 0 && x.cols % n == 0, "hadamard size must be a power of two dividing cols");
  gpu::hadamard_rows(x.data, x.ld, x.rows, x.cols, n, stream_);
}

void CudaBackend::fp8_quantize(Tensor2D x, int64_t group, bool ue8m0, bool dequantize, Tensor2D out,
                               Tensor2D scales) {
  require(out.rows == x.rows && out.cols == x.cols && group > 0, "fp8_quantize shape");
  const int64_t G = (x.cols + group - 1) / group;
  require(!scales.data || (scales.rows == x.rows && scales.cols == G), "fp8_quantize scales shape");
  gpu::Fp8QuantParams p;
  p.x = x.data;
  p.ldx = x.ld;
  p.rows = x.rows;
  p.cols = x.cols;
  p.group = int(group);
  p.ue8m0 = ue8m0;
  p.qf = out.data;
  p.ldqf = out.ld;
  p.qf_dequant = dequantize;
  p.scales = scales.data;
  p.s_row = scales.ld;
  p.s_grp = 1;
  gpu::fp8_quantize_rows(p, stream_);
}

// --- linear ---

void CudaBackend::skinny_batched(const std::vector<gpu::SkinnyGemmParams>& ps, bool use_mma) {
  for (size_t i = 0; i < ps.size(); i += gpu::kSkinnyMaxBatch) {
    const int n = int(std::min<size_t>(gpu::kSkinnyMaxBatch, ps.size() - i));
    const size_t ws = gpu::skinny_gemm_batched_workspace(&ps[i], n, num_sms_, use_mma);
    void* w = ws ? scratch(kSlotSplitK, ws) : nullptr;
    gpu::skinny_gemm_batched(&ps[i], n, w, num_sms_, stream_, use_mma);
  }
}

void CudaBackend::skinny(const gpu::SkinnyGemmParams& p, bool use_mma) {
  if (p.M == 0 || p.N == 0) return;
  skinny_batched({p}, use_mma);
}

bool CudaBackend::small_mma_enabled() {
  if (mma_state_ != 0) return mma_state_ > 0;
  mma_state_ = -1;
  if (!small_m_tensor_cores_) return false;
  // Probe: the tensor-core kernel against the CUDA-core kernel on random e4m3 operands, one and five token tiles,
  // with distinct scales per (row, group) and per weight block.
  constexpr int64_t N = 256, K = 1024, G = K / 128, Mmax = 37;
  std::vector<uint8_t> wq(size_t(N * K)), xq(size_t(Mmax * K));
  uint64_t r = 0x13198A2E03707344ull;
  auto next = [&] { r ^= r << 13; r ^= r >> 7; r ^= r << 17; return r; };
  for (auto* v : {&wq, &xq})
    for (auto& b : *v) {
      b = uint8_t(next() >> 24);
      if ((b & 0x7f) >= 0x70) b &= 0xb7;
    }
  std::vector<float> ws(size_t(2 * G)), xs(size_t(Mmax * G));
  for (auto& v : ws) v = std::ldexp(1.0f, -int(next() % 6) - 6);
  for (auto& v : xs) v = std::ldexp(1.0f, -int(next() % 9));
  const size_t bytes = wq.size() + xq.size() + (ws.size() + xs.size() + 2 * size_t(Mmax * N)) * 4;
  char* d = nullptr;
  DSINFER_CUDA_CHECK(cudaMalloc(&d, bytes + 1024));
  auto* d_w = reinterpret_cast<uint8_t*>(d);
  auto* d_x = d_w + wq.size();
  auto* d_ws = reinterpret_cast<float*>(d_x + xq.size());
  float* d_xs = d_ws + ws.size();
  float* d_ref = d_xs + xs.size();
  float* d_got = d_ref + Mmax * N;
  bool ok = true;
  try {
    DSINFER_CUDA_CHECK(cudaMemcpy(d_w, wq.data(), wq.size(), cudaMemcpyHostToDevice));
    DSINFER_CUDA_CHECK(cudaMemcpy(d_x, xq.data(), xq.size(), cudaMemcpyHostToDevice));
    DSINFER_CUDA_CHECK(cudaMemcpy(d_ws, ws.data(), ws.size() * 4, cudaMemcpyHostToDevice));
    DSINFER_CUDA_CHECK(cudaMemcpy(d_xs, xs.data(), xs.size() * 4, cudaMemcpyHostToDevice));
    for (const int64_t M : {int64_t(3), Mmax}) {
      gpu::SkinnyGemmParams p;
      p.w = d_w; p.w_kind = WeightKind::FP8; p.N = N; p.K = K; p.w_scale = d_ws; p.w_scale_ld = G;
      p.M = M; p.x_q8 = d_x; p.ldx = K; p.x_scale = d_xs; p.xs_m = G; p.xs_g = 1;
      p.out = d_ref; p.ldo = N;
      skinny(p, false);
      p.out = d_got;
      skinny(p, true);
      std::vector<float> ref(size_t(M * N)), got(size_t(M * N));
      DSINFER_CUDA_CHECK(cudaMemcpyAsync(ref.data(), d_ref, ref.size() * 4, cudaMemcpyDeviceToHost, stream_));
      DSINFER_CUDA_CHECK(cudaMemcpyAsync(got.data(), d_got, got.size() * 4, cudaMemcpyDeviceToHost, stream_));
      synchronize();
      double ss = 0, worst = 0;
      for (size_t i = 0; i < ref.size(); ++i) {
        ss += double(ref[i]) * ref[i];
        worst = std::max(worst, double(std::fabs(ref[i] - got[i])));
      }
      const double rms = std::sqrt(ss / double(ref.size()));
      ok = ok && rms > 0 && worst <= 5e-3 * rms && std::isfinite(worst);
    }
  } catch (const Error&) {
    ok = false;
  }
  cudaFree(d);
  if (!ok)
    std::fprintf(stderr, "dsinfer cuda backend: the tensor-core skinny FP8 kernel disagrees with the CUDA-core "
                         "kernel; using the CUDA-core kernel\n");
  mma_state_ = ok ? 1 : -1;
  return ok;
}

CudaBackend::Fp8ScaleLayout CudaBackend::fp8_scale_layout() {
  if (fp8_layout_ != Fp8ScaleLayout::Unknown) return fp8_layout_;
  fp8_layout_ = Fp8ScaleLayout::None;  // stays None if the probe fails in any way
  if (!cublaslt_fp8_) return fp8_layout_;
  // Probe: N = 256 (two weight row blocks), K = 512 (four K blocks: no padding question), M = 8 rows with
  // distinct power-of-two scales per (row, group), so any misread scale shows.
  constexpr int64_t N = 256, K = 512, M = 8, G = K / 128;
  std::vector<uint8_t> wq(size_t(N * K)), xq(size_t(M * K));
  uint64_t r = 0x243F6A8885A308D3ull;
  auto next = [&] { r ^= r << 13; r ^= r >> 7; r ^= r << 17; return r; };
  for (auto* v : {&wq, &xq})
    for (auto& b : *v) {
      b = uint8_t(next() >> 24);
      if ((b & 0x7f) >= 0x70) b &= 0xb7;  // no NaN, moderate magnitudes
    }
  std::vector<float> ws(size_t(2 * G)), xs_tok(size_t(G * M)), xs_row(size_t(M * G));
  for (auto& v : ws) v = std::ldexp(1.0f, -int(next() % 6) - 6);
  for (int64_t m = 0; m < M; ++m)
    for (int64_t g = 0; g < G; ++g) {
      const float v = std::ldexp(1.0f, -int((m * G + g) % 9));
      xs_tok[size_t(g * M + m)] = v;
      xs_row[size_t(m * G + g)] = v;
    }
  const size_t bytes = wq.size() + xq.size() + (ws.size() + xs_tok.size() + xs_row.size() + 2 * size_t(M * N)) * 4;
  char* d = nullptr;
  DSINFER_CUDA_CHECK(cudaMalloc(&d, bytes + 1024));
  auto* d_w = reinterpret_cast<uint8_t*>(d);
  auto* d_x = d_w + wq.size();
  auto* d_ws = reinterpret_cast<float*>(d_x + xq.size());
  float* d_tok = d_ws + ws.size();
  float* d_row = d_tok + xs_tok.size();
  float* d_ref = d_row + xs_row.size();
  float* d_out = d_ref + M * N;
  Fp8ScaleLayout found = Fp8ScaleLayout::None;
  try {
    DSINFER_CUDA_CHECK(cudaMemcpy(d_w, wq.data(), wq.size(), cudaMemcpyHostToDevice));
    DSINFER_CUDA_CHECK(cudaMemcpy(d_x, xq.data(), xq.size(), cudaMemcpyHostToDevice));
    DSINFER_CUDA_CHECK(cudaMemcpy(d_ws, ws.data(), ws.size() * 4, cudaMemcpyHostToDevice));
    DSINFER_CUDA_CHECK(cudaMemcpy(d_tok, xs_tok.data(), xs_tok.size() * 4, cudaMemcpyHostToDevice));
    DSINFER_CUDA_CHECK(cudaMemcpy(d_row, xs_row.data(), xs_row.size() * 4, cudaMemcpyHostToDevice));
    gpu::SkinnyGemmParams p;
    p.w = d_w; p.w_kind = WeightKind::FP8; p.N = N; p.K = K; p.w_scale = d_ws; p.w_scale_ld = G;
    p.M = M; p.x_q8 = d_x; p.ldx = K; p.x_scale = d_row; p.xs_m = G; p.xs_g = 1;
    p.out = d_ref; p.ldo = N;
    skinny(p);
    std::vector<float> ref(size_t(M * N)), got(size_t(M * N));
    DSINFER_CUDA_CHECK(cudaMemcpyAsync(ref.data(), d_ref, ref.size() * 4, cudaMemcpyDeviceToHost, stream_));
    synchronize();
    double ss = 0;
    for (float v : ref) ss += double(v) * v;
    const double rms = std::sqrt(ss / double(ref.size()));
    for (const Fp8ScaleLayout layout : {Fp8ScaleLayout::TokenMajor, Fp8ScaleLayout::RowMajor}) {
      gpu::LtGemmArgs la;
      la.kind = gpu::LtKind::Fp8Block;
      la.N = N; la.M = M; la.K = K;
      la.w = d_w; la.ldw = K; la.x = d_x; la.ldx = K;
      la.w_scale = d_ws; la.x_scale = layout == Fp8ScaleLayout::TokenMajor ? d_tok : d_row;
      la.out = d_out; la.ldo = N;
      if (!lt_->supported(la)) break;
      lt_->run(la, stream_);
      DSINFER_CUDA_CHECK(cudaMemcpyAsync(got.data(), d_out, got.size() * 4, cudaMemcpyDeviceToHost, stream_));
      synchronize();
      double worst = 0;
      for (size_t i = 0; i < ref.size(); ++i) worst = std::max(worst, double(std::fabs(ref[i] - got[i])));
      if (rms > 0 && worst <= 1e-2 * rms) {
        found = layout;
        break;
      }
    }
  } catch (const Error&) {
    found = Fp8ScaleLayout::None;
  }
  cudaFree(d);
  if (found != Fp8ScaleLayout::TokenMajor)
    std::fprintf(stderr, "dsinfer cuda backend: cuBLASLt block-scaled FP8 %s\n",
                 found == Fp8ScaleLayout::RowMajor ? "reads row-major activation scales; using that layout"
                                                   : "is unavailable or disagrees with the reference; FP8 linears "
                                                     "use the skinny kernel at every size");
  fp8_layout_ = found;
  return fp8_layout_;
}

void CudaBackend::fp8_gemm_prequantized(const uint8_t* xq, const float* x_scale, int64_t xs_m, int64_t xs_g,
                                        int64_t M, int64_t K, const Weight& w, float* out, int64_t ldo,
                                        LinearPath path) {
  const gpu::DeviceTensorRef r = device_weight(w);
  const int64_t N = r.rows, Mp = round_up(M, 4), G = (K + 127) / 128;
  bool use_lt = path == LinearPath::CublasLt || (path == LinearPath::Auto && M > small_m_max_);
  if (use_lt) {
    const Fp8ScaleLayout layout = fp8_scale_layout();
    gpu::LtGemmArgs la;
    la.kind = gpu::LtKind::Fp8Block;
    la.N = N; la.M = Mp; la.K = K;
    la.w = r.data; la.ldw = K;
    la.x = xq; la.ldx = K;
    la.w_scale = r.scale; la.x_scale = x_scale;
    // The padding rows of D must not land in the caller's rows: with M % 4 != 0, D goes to scratch and M rows
    // are copied out.
    la.out = Mp == M ? out : static_cast<float*>(scratch(kSlotOut, size_t(Mp * N) * 4));
    la.ldo = Mp == M ? ldo : N;
    const bool scales_fit = (layout == Fp8ScaleLayout::TokenMajor && xs_m == 1 && xs_g == Mp) ||
                            (layout == Fp8ScaleLayout::RowMajor && xs_m == G && xs_g == 1);
    // cuBLASLt's FP8 needs 16-byte aligned rows and scale segments.
    use_lt = scales_fit && K % 128 == 0 && N % 4 == 0 && la.ldo % 4 == 0 && aligned16(la.out) && aligned16(xq) &&
             aligned16(x_scale) && lt_->supported(la);
    if (!use_lt && path == LinearPath::CublasLt)
      fail(ErrorCode::Unsupported, "cuBLASLt FP8 block-scaled GEMM unavailable for " + w.name);
    if (use_lt) {
      lt_->run(la, stream_);
      if (Mp != M)
        DSINFER_CUDA_CHECK(cudaMemcpy2DAsync(out, size_t(ldo) * 4, la.out, size_t(N) * 4, size_t(N) * 4, size_t(M),
                                             cudaMemcpyDeviceToDevice, stream_));
      return;
    }
  }
  gpu::SkinnyGemmParams p;
  p.w = r.data; p.w_kind = WeightKind::FP8; p.N = N; p.K = K;
  p.w_scale = r.scale; p.w_scale_ld = r.scale_ld;
  p.M = M; p.x_q8 = xq; p.ldx = K;
  p.x_scale = x_scale; p.xs_m = xs_m; p.xs_g = xs_g;
  p.out = out; p.ldo = ldo;
  const bool mma_ok = gpu::skinny_fp8_mma_eligible(&p, 1);
  if (path == LinearPath::SkinnyMma && !mma_ok)
    fail(ErrorCode::Unsupported, "the tensor-core skinny kernel does not take " + w.name + " at M=" + std::to_string(M));
  skinny(p, mma_ok && (path == LinearPath::SkinnyMma || (path == LinearPath::Auto && small_mma_enabled())));
}

void CudaBackend::linear(Tensor2D x, const Weight& w, Tensor2D out, const LinearQuant& q) {
  linear_path(x, w, out, q, LinearPath::Auto);
}

void CudaBackend::linear_path(Tensor2D x, const Weight& w, Tensor2D out, const LinearQuant& q, LinearPath path) {
  const int64_t T = x.rows, K = x.cols, N = w.rows();
  if (w.cols() != K || out.rows != T || out.cols != N)
    fail(ErrorCode::Internal, "linear " + w.name + ": x [" + std::to_string(T) + ", " + std::to_string(K) +
                                  "] · Wᵀ [" + std::to_string(N) + ", " + std::to_string(w.cols()) + "] -> out [" +
                                  std::to_string(out.rows) + ", " + std::to_string(out.cols) + "]");
  require(out.data != x.data, "linear output must not alias its input");
  if (T == 0 || N == 0) return;
  const gpu::DeviceTensorRef r = device_weight(w);
  if (w.dtype == DType::F8_E4M3 && w.block != 128)
    fail(ErrorCode::Unsupported, "FP8 weight " + w.name + " has block " + std::to_string(w.block) +
                                     ", only 128 is supported");
  if (q.fp8_activations && w.dtype == DType::F8_E4M3) {
    // DeepSeek's FP8 GEMM (spec §6): activations quantized per 1x128 group, scales token-major ([G][Mp]) as
    // cuBLASLt's VEC128_32F wants, padding rows zero.
    const int64_t G = (K + 127) / 128, Mp = round_up(T, 4);
    const bool may_lt = path == LinearPath::CublasLt || (path == LinearPath::Auto && T > small_m_max_);
    const bool row_major = may_lt && fp8_scale_layout() == Fp8ScaleLayout::RowMajor;
    const int64_t xs_m = row_major ? G : 1, xs_g = row_major ? 1 : Mp;
    auto* xq = static_cast<uint8_t*>(scratch(kSlotXq, size_t(Mp * K)));
    auto* xs = static_cast<float*>(scratch(kSlotXs, size_t(G * Mp) * 4));
    if (Mp != T) {
      DSINFER_CUDA_CHECK(cudaMemsetAsync(xq + T * K, 0, size_t((Mp - T) * K), stream_));
      DSINFER_CUDA_CHECK(cudaMemsetAsync(xs, 0, size_t(G * Mp) * 4, stream_));
    }
    gpu::Fp8QuantParams p;
    p.x = x.data; p.ldx = x.ld; p.rows = T; p.cols = K; p.group = 128; p.ue8m0 = q.ue8m0;
    p.q8 = xq; p.ldq8 = K;
    p.scales = xs; p.s_row = xs_m; p.s_grp = xs_g;
    gpu::fp8_quantize_rows(p, stream_);
    fp8_gemm_prequantized(xq, xs, xs_m, xs_g, T, K, w, out.data, out.ld, path);
    return;
  }
  // Plain fp32 x·Wᵀ with the weight as stored (FP8 without activation quantization: the reference numerics).
  const bool lt_dtype = w.dtype == DType::BF16 || w.dtype == DType::F32;
  bool use_lt = lt_dtype && (path == LinearPath::CublasLt || (path == LinearPath::Auto && T > small_m_max_));
  if (use_lt) {
    gpu::LtGemmArgs la;
    la.N = N; la.M = T; la.K = K;
    la.w = r.data; la.ldw = K;
    la.out = out.data; la.ldo = out.ld;
    if (w.dtype == DType::BF16) {
      // cuBLASLt takes bf16 x bf16: the activations are rounded to bf16 (the reference's bf16 linears do the
      // same); the skinny path keeps them fp32.
      auto* xb = static_cast<uint16_t*>(scratch(kSlotXb, size_t(T * K) * 2));
      gpu::f32_to_bf16_rows(x.data, x.ld, xb, K, T, K, stream_);
      la.kind = gpu::LtKind::Bf16;
      la.x = xb;
      la.ldx = K;
    } else {
      la.kind = gpu::LtKind::Fp32;
      la.x = x.data;
      la.ldx = x.ld;
    }
    use_lt = lt_->supported(la);
    if (use_lt) {
      lt_->run(la, stream_);
      return;
    }
    if (path == LinearPath::CublasLt) fail(ErrorCode::Unsupported, "cuBLASLt GEMM unavailable for " + w.name);
  }
  gpu::SkinnyGemmParams p;
  p.w = r.data; p.w_kind = r.kind; p.N = N; p.K = K;
  p.w_scale = r.scale; p.w_scale_ld = r.scale_ld;
  p.M = T; p.x_f32 = x.data; p.ldx = x.ld;
  p.out = out.data; p.ldo = out.ld;
  skinny(p);
}

// --- MoE ---

void CudaBackend::moe_route(const MoeRouteArgs& a) {
  const int64_t T = a.x.rows, E = a.n_experts, K = a.top_k;
  require(a.gate && a.gate->rows() == E && a.gate->cols() == a.x.cols && E % a.n_group == 0, "moe_route shapes");
  if (T == 0) return;
  // Router logits in fp32 (spec §5.2): fp32 activations against the gate as stored, through the skinny kernel
  // at every T so the selection sees the same fp32 logits whatever the batch.
  const gpu::DeviceTensorRef g = device_weight(*a.gate);
  auto* logits = static_cast<float*>(scratch(kSlotLogits, size_t(T * E) * 4));
  gpu::SkinnyGemmParams p;
  p.w = g.data; p.w_kind = g.kind; p.N = E; p.K = a.x.cols;
  p.w_scale = g.scale; p.w_scale_ld = g.scale_ld;
  p.M = T; p.x_f32 = a.x.data; p.ldx = a.x.ld;
  p.out = logits; p.ldo = E;
  if (g.kind == WeightKind::FP8 && a.gate->block != 128)
    fail(ErrorCode::Unsupported, "FP8 router gate with block != 128");
  skinny(p);

  const float* bias = nullptr;
  if (a.bias && a.bias->present()) {
    require(a.bias->numel() == E, "moe_route bias size");
    gpu::DeviceTensorRef b = device_weight(*a.bias);
    if (b.kind == WeightKind::F32) {
      bias = static_cast<const float*>(b.data);
    } else {
      b.rows = 1;
      b.cols = E;
      auto* bf = static_cast<float*>(scratch(kSlotBias, size_t(E) * 4));
      gpu::decode_rows(b, nullptr, 1, bf, E, stream_);
      bias = bf;
    }
  }
  gpu::MoeRouterParams rp;
  rp.logits = logits;
  rp.bias = bias;
  rp.T = T;
  rp.E = int(E);
  rp.n_group = int(a.n_group);
  rp.topk_group = int(a.topk_group);
  rp.top_k = int(K);
  rp.sigmoid = a.sigmoid;
  rp.normalize = a.normalize;
  rp.routed_scale = a.routed_scale;
  rp.out_ids = a.out_experts;  // device memory (interface v2): moe_experts reads them there, no round trip
  rp.out_weights = a.out_weights;
  gpu::moe_router(rp, stream_);
}

void CudaBackend::moe_experts(const MoeExpertsArgs& a) {
  const int64_t T = a.x.rows, D = a.x.cols, E = int64_t(a.experts.size()), K = a.top_k;
  require(a.out.rows == T && a.out.cols == D, "moe_experts out shape");
  if (T == 0) return;
  require(K >= 1 && K <= 32, "moe_experts: top_k must be in [1, 32]");
  // Launch shapes (rows per expert) come from a host copy of the routing: the one synchronization of a MoE layer,
  // until a grouped GEMM takes its shapes from device memory. The device builds the same grouping with CUB from the
  // ids where they are (stable sort: identical order).
  route_host_.resize(size_t(T * K));
  bytes_to_host(route_host_.data(), a.expert_ids, route_host_.size() * sizeof(int32_t));
  std::vector<int64_t> count(size_t(E), 0), poff(size_t(E) + 1, 0);
  for (int64_t i = 0; i < T * K; ++i) {
    const int32_t e = route_host_[size_t(i)];
    require(e >= 0 && e < E, "expert id out of range");
    ++count[size_t(e)];
  }
  for (int64_t e = 0; e < E; ++e) poff[size_t(e) + 1] = poff[size_t(e)] + round_up(count[size_t(e)], gpu::kMoeSegmentPad);
  const int64_t Rp = poff[size_t(E)];

  int64_t inner = -1;
  bool fast = a.quant.fp8_activations && D % 128 == 0;
  for (int64_t e = 0; e < E; ++e) {
    if (!count[size_t(e)]) continue;
    const ExpertWeights& ew = a.experts[size_t(e)];
    require(ew.gate && ew.up && ew.down && ew.gate->present() && ew.up->present() && ew.down->present(),
            "moe_experts: a chosen expert has no weights");
    if (inner < 0) inner = ew.gate->rows();
    require(ew.gate->rows() == inner && ew.up->rows() == inner && ew.down->cols() == inner &&
                ew.gate->cols() == D && ew.up->cols() == D && ew.down->rows() == D,
            "moe_experts: expert shapes differ");
    for (const Weight* w : {ew.gate, ew.up, ew.down})
      fast = fast && w->dtype == DType::F8_E4M3 && w->block == 128;
  }
  fast = fast && inner % 128 == 0;

  const int32_t* d_ids = a.expert_ids;
  const float* d_w = a.weights;
  gpu::MoeGroupingParams gp;
  gp.expert_ids = d_ids;
  gp.S = T * K;
  gp.top_k = int(K);
  gp.E = int(E);
  gp.rows_padded = Rp;
  gp.row_src = static_cast<int32_t*>(scratch(kSlotRowSrc, size_t(Rp) * 4));
  gp.row_seg = static_cast<int2*>(scratch(kSlotRowSeg, size_t(Rp) * 8));
  gp.slot_row = static_cast<int32_t*>(scratch(kSlotSlotRow, size_t(T * K) * 4));
  const size_t gws = gpu::moe_grouping_workspace(T * K, int(E));
  gpu::moe_group_by_expert(gp, scratch(kSlotGroupWs, gws), gws, stream_);

  auto* y = static_cast<float*>(scratch(kSlotMoeY, size_t(Rp * D) * 4));
  auto* gb = static_cast<float*>(scratch(kSlotMoeG, size_t(Rp * inner) * 4));
  auto* ub = static_cast<float*>(scratch(kSlotMoeU, size_t(Rp * inner) * 4));
  if (fast) {
    // Each token quantized once per chosen expert straight into its grouped row (spec §6: 1x128 e4m3).
    const int64_t G1 = D / 128, G2 = inner / 128;
    // Scales per expert segment in the layout cuBLASLt reads (token-major inside each segment, or row-major);
    // the skinny kernel takes either.
    const bool may_lt = *std::max_element(count.begin(), count.end()) > small_m_max_;
    const bool row_major = may_lt && fp8_scale_layout() == Fp8ScaleLayout::RowMajor;
    auto* xq = static_cast<uint8_t*>(scratch(kSlotMoeX, size_t(Rp * D)));
    auto* xs = static_cast<float*>(scratch(kSlotMoeXs, size_t(Rp * G1) * 4));
    gpu::Fp8QuantParams qp;
    qp.x = a.x.data; qp.ldx = a.x.ld; qp.row_src = gp.row_src;
    qp.rows = Rp; qp.cols = D; qp.group = 128; qp.ue8m0 = a.quant.ue8m0;
    qp.q8 = xq; qp.ldq8 = D; qp.scales = xs;
    if (row_major) { qp.s_row = G1; qp.s_grp = 1; } else { qp.row_seg = gp.row_seg; }
    gpu::fp8_quantize_rows(qp, stream_);
    // Experts with few rows go through the skinny kernel, batched (gate and up of up to 8 experts per launch);
    // experts with many rows through cuBLASLt one by one.
    auto expert_problem = [&](const Weight& w, const uint8_t* xq_e, const float* xs_e, int64_t sm, int64_t sg,
                              int64_t c, int64_t K, float* out_e, int64_t ldo) {
      const gpu::DeviceTensorRef r = device_weight(w);
      gpu::SkinnyGemmParams p;
      p.w = r.data; p.w_kind = WeightKind::FP8; p.N = r.rows; p.K = K;
      p.w_scale = r.scale; p.w_scale_ld = r.scale_ld;
      p.M = c; p.x_q8 = xq_e; p.ldx = K; p.x_scale = xs_e; p.xs_m = sm; p.xs_g = sg;
      p.out = out_e; p.ldo = ldo;
      return p;
    };
    std::vector<gpu::SkinnyGemmParams> batch;
    for (int64_t e = 0; e < E; ++e) {
      const int64_t c = count[size_t(e)], o = poff[size_t(e)], pc = poff[size_t(e) + 1] - o;
      if (!c) continue;
      const ExpertWeights& ew = a.experts[size_t(e)];
      const int64_t sm = row_major ? G1 : 1, sg = row_major ? 1 : pc;
      if (c > small_m_max_) {
        fp8_gemm_prequantized(xq + o * D, xs + o * G1, sm, sg, c, D, *ew.gate, gb + o * inner, inner, LinearPath::Auto);
        fp8_gemm_prequantized(xq + o * D, xs + o * G1, sm, sg, c, D, *ew.up, ub + o * inner, inner, LinearPath::Auto);
      } else {
        batch.push_back(expert_problem(*ew.gate, xq + o * D, xs + o * G1, sm, sg, c, D, gb + o * inner, inner));
        batch.push_back(expert_problem(*ew.up, xq + o * D, xs + o * G1, sm, sg, c, D, ub + o * inner, inner));
      }
    }
    skinny_batched(batch, small_mma_enabled());
    // SwiGLU fused into the quantization of the down projection's input; padding rows become zero.
    auto* hq = static_cast<uint8_t*>(scratch(kSlotMoeH, size_t(Rp * inner)));
    auto* hs = static_cast<float*>(scratch(kSlotMoeHs, size_t(Rp * G2) * 4));
    gpu::Fp8QuantParams hp;
    hp.x = gb; hp.ldx = inner; hp.up = ub; hp.ldup = inner; hp.row_src = gp.row_src;
    hp.rows = Rp; hp.cols = inner; hp.group = 128; hp.ue8m0 = a.quant.ue8m0;
    hp.q8 = hq; hp.ldq8 = inner; hp.scales = hs;
    if (row_major) { hp.s_row = G2; hp.s_grp = 1; } else { hp.row_seg = gp.row_seg; }
    gpu::fp8_quantize_rows(hp, stream_);
    batch.clear();
    for (int64_t e = 0; e < E; ++e) {
      const int64_t c = count[size_t(e)], o = poff[size_t(e)], pc = poff[size_t(e) + 1] - o;
      if (!c) continue;
      const Weight& down = *a.experts[size_t(e)].down;
      const int64_t sm = row_major ? G2 : 1, sg = row_major ? 1 : pc;
      if (c > small_m_max_)
        fp8_gemm_prequantized(hq + o * inner, hs + o * G2, sm, sg, c, inner, down, y + o * D, D, LinearPath::Auto);
      else
        batch.push_back(expert_problem(down, hq + o * inner, hs + o * G2, sm, sg, c, inner, y + o * D, D));
    }
    skinny_batched(batch, small_mma_enabled());
  } else {
    // Any other dtype or the fp32-activation numerics: gather rows, then the generic linear per expert.
    auto* xg = static_cast<float*>(scratch(kSlotMoeX, size_t(Rp * D) * 4));
    gpu::gather_rows_f32(a.x.data, a.x.ld, gp.row_src, Rp, D, xg, D, stream_);
    for (int64_t e = 0; e < E; ++e) {
      const int64_t c = count[size_t(e)], o = poff[size_t(e)];
      if (!c) continue;
      const ExpertWeights& ew = a.experts[size_t(e)];
      const Tensor2D xe{xg + o * D, c, D, D}, ge{gb + o * inner, c, inner, inner}, ue{ub + o * inner, c, inner, inner};
      linear(xe, *ew.gate, ge, a.quant);
      linear(xe, *ew.up, ue, a.quant);
      silu_mul(ge, ue, ge);
      linear(ge, *ew.down, Tensor2D{y + o * D, c, D, D}, a.quant);
    }
  }
  gpu::MoeCombineParams cp;
  cp.y = y; cp.ldy = D; cp.slot_row = gp.slot_row; cp.expert_ids = d_ids; cp.weights = d_w;
  cp.T = T; cp.D = D; cp.top_k = int(K); cp.out = a.out.data; cp.ldo = a.out.ld;
  gpu::moe_combine(cp, stream_);
}

}  // namespace dsinfer
