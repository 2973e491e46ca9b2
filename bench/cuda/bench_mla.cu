// MLA attention benchmarks on one GPU (issue 8): dense absorbed decode as achieved cache bandwidth against the
// measured device-to-device copy bandwidth, and sparse (top-k 2048) decode in TFLOPS. Times the latent-attention
// kernel itself (launch_mla_decode: split-K + combine), not the absorb GEMMs around it, so the numbers compare
// with FlashMLA's; a last table times the whole MlaArgs op per layer (batch 1/16/128, 8K context) as the backend
// runs it. cudaEvent timing, 2 warm-up runs, median of 10. Prints markdown tables. Exits 77 without a device.
//
//   bench_mla [--quick]      (--quick: one context per batch, for smoke runs)
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <functional>
#include <numeric>
#include <random>
#include <vector>

#include "attn_bench_util.cuh"
#include "../../cuda/attention/mla_attention.cuh"
#include "../../cuda/attention/mla_decode.cuh"
#include "../../cuda/kv/kv_cache_formats.cuh"

using namespace dsinfer::gpu::attn;

using namespace dsinfer::attn_bench;

namespace {


double copy_bandwidth_gbs() {
  const size_t bytes = size_t(4) << 30;
  void *a, *b;
  CUDA_OK(cudaMalloc(&a, bytes));
  CUDA_OK(cudaMalloc(&b, bytes));
  CUDA_OK(cudaMemset(a, 1, bytes));
  const double ms = median_ms([&] { CUDA_OK(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice)); });
  cudaFree(a);
  cudaFree(b);
  return 2.0 * double(bytes) / (ms * 1e-3) / 1e9;  // read + write
}

constexpr int64_t kH = 128, kC = 512, kR = 64;

struct Result {
  double ms, gbs, tflops;
};

// B sequences of `ctx` keys, one decode query each, paged in blocks of 64 (shuffled), cache in `format`.
Result run_decode(LatentFormat format, int64_t B, int64_t ctx, int64_t topk, int num_sms,
                  MlaKernel kernel = MlaKernel::Auto) {
  const int64_t bt = 64, blocks_per = (ctx + bt - 1) / bt, rows = B * blocks_per * bt;
  std::vector<int32_t> table(static_cast<size_t>(B * blocks_per));
  std::iota(table.begin(), table.end(), 0);
  std::shuffle(table.begin(), table.end(), std::mt19937(1));
  std::vector<int32_t> pos(static_cast<size_t>(B), int32_t(ctx - 1)), qseq(static_cast<size_t>(B)),
      len(static_cast<size_t>(B), int32_t(ctx));
  std::iota(qseq.begin(), qseq.end(), 0);
  std::vector<int32_t> idx;
  if (topk) {
    // Distinct positions spread over the context: i·m mod ctx for an odd m is a permutation when ctx is a power
    // of two (the contexts here are), sorted as the indexer returns them.
    idx.resize(static_cast<size_t>(B * topk));
    for (int64_t b = 0; b < B; ++b) {
      int32_t* row = idx.data() + b * topk;
      const uint64_t m = 2 * uint64_t(b) * 7919 + 40503;
      for (int64_t i = 0; i < topk; ++i) row[i] = int32_t((uint64_t(i) * m + uint64_t(b)) % uint64_t(ctx));
      std::sort(row, row + topk);
    }
  }
  int32_t *dtable, *dpos, *dqseq, *dlen, *didx = nullptr;
  CUDA_OK(cudaMalloc(&dtable, table.size() * 4));
  CUDA_OK(cudaMalloc(&dpos, size_t(B) * 4));
  CUDA_OK(cudaMalloc(&dqseq, size_t(B) * 4));
  CUDA_OK(cudaMalloc(&dlen, size_t(B) * 4));
  CUDA_OK(cudaMemcpy(dtable, table.data(), table.size() * 4, cudaMemcpyHostToDevice));
  CUDA_OK(cudaMemcpy(dpos, pos.data(), size_t(B) * 4, cudaMemcpyHostToDevice));
  CUDA_OK(cudaMemcpy(dqseq, qseq.data(), size_t(B) * 4, cudaMemcpyHostToDevice));
  CUDA_OK(cudaMemcpy(dlen, len.data(), size_t(B) * 4, cudaMemcpyHostToDevice));
  if (topk) {
    CUDA_OK(cudaMalloc(&didx, idx.size() * 4));
    CUDA_OK(cudaMemcpy(didx, idx.data(), idx.size() * 4, cudaMemcpyHostToDevice));
  }
  // Cache: written from f32 rows through the format's writer, a chunk of rows at a time.
  float *lat = nullptr, *kpe = nullptr;
  uint8_t* packed = nullptr;
  const int64_t rb = latent_row_bytes(format, kC, kR);
  if (format == LatentFormat::F32) {
    CUDA_OK(cudaMalloc(&lat, size_t(rows * kC) * 4));
    CUDA_OK(cudaMalloc(&kpe, size_t(rows * kR) * 4));
    fill(lat, size_t(rows * kC), 3);
    fill(kpe, size_t(rows * kR), 4);
  } else {
    CUDA_OK(cudaMalloc(&packed, size_t(rows * rb)));
    const int64_t chunk = 65536;
    float *c, *pe;
    int64_t* slots;
    CUDA_OK(cudaMalloc(&c, size_t(chunk * kC) * 4));
    CUDA_OK(cudaMalloc(&pe, size_t(chunk * kR) * 4));
    CUDA_OK(cudaMalloc(&slots, size_t(chunk) * 8));
    fill(c, size_t(chunk * kC), 5);
    fill(pe, size_t(chunk * kR), 6);
    std::vector<int64_t> hs(static_cast<size_t>(chunk));
    for (int64_t r0 = 0; r0 < rows; r0 += chunk) {
      const int64_t n = std::min(chunk, rows - r0);
      std::iota(hs.begin(), hs.begin() + n, r0);
      CUDA_OK(cudaMemcpy(slots, hs.data(), size_t(n) * 8, cudaMemcpyHostToDevice));
      LatentWriteParams w;
      w.format = format, w.n = n, w.C = kC, w.R = kR, w.c_new = c, w.ld_c = kC, w.kpe_new = pe, w.ld_pe = kR,
      w.slots = slots, w.packed = packed;
      CUDA_OK(launch_latent_cache_write(w, nullptr));
    }
    CUDA_OK(cudaDeviceSynchronize());
    cudaFree(c), cudaFree(pe), cudaFree(slots);
  }
  float *qabs, *qpe, *o;
  CUDA_OK(cudaMalloc(&qabs, size_t(B * kH * kC) * 4));
  CUDA_OK(cudaMalloc(&qpe, size_t(B * kH * kR) * 4));
  CUDA_OK(cudaMalloc(&o, size_t(B * kH * kC) * 4));
  fill(qabs, size_t(B * kH * kC), 7);
  fill(qpe, size_t(B * kH * kR), 8);

  MlaDecodeParams p;
  p.T = B, p.H = kH, p.q_abs = qabs, p.qabs_t = kH * kC, p.qabs_h = kC, p.q_pe = qpe, p.qpe_t = kH * kR, p.qpe_h = kR;
  p.cache.format = format, p.cache.C = kC, p.cache.R = kR, p.cache.latent = lat, p.cache.ld_latent = kC,
  p.cache.k_pe = kpe, p.cache.ld_rope = kR, p.cache.packed = packed;
  p.blocks = BlockTable{dtable, blocks_per, bt};
  p.query_seq = dqseq, p.seq_len = dlen, p.n_keys = ctx, p.positions = dpos;
  p.indices = didx, p.n_indices = topk, p.max_list = topk ? topk : ctx;
  p.softmax_scale = 0.135f, p.o_lat = o, p.num_sms = num_sms, p.kernel = kernel;
  float* ws = nullptr;
  const size_t wsb = mla_decode_workspace_bytes(B, kH, kC, mla_decode_num_splits(p));
  if (wsb) CUDA_OK(cudaMalloc(&ws, wsb));
  p.workspace = ws;
  const double ms = median_ms([&] { CUDA_OK(launch_mla_decode(p, nullptr)); });
  const int64_t keys = topk ? topk : ctx;
  const double bytes = double(B) * double(keys) *
                       double(format == LatentFormat::F32 ? (kC + kR) * 4 : rb);
  const double flops = 2.0 * double(B) * double(kH) * double(keys) * double(kC + kR + kC);
  cudaFree(ws), cudaFree(qabs), cudaFree(qpe), cudaFree(o), cudaFree(lat), cudaFree(kpe), cudaFree(packed);
  cudaFree(dtable), cudaFree(dpos), cudaFree(dqseq), cudaFree(dlen), cudaFree(didx);
  return {ms, bytes / (ms * 1e-3) / 1e9, flops / (ms * 1e-3) / 1e12};
}

// The whole MlaArgs op (absorb GEMM, attention, W_UV GEMM) for B decode queries of one layer at V3.2 dims, F32
// cache as the backend interface holds it: the per-layer attention latency the model sees (indexer excluded).
double run_full_op(int64_t B, int64_t ctx, int64_t topk, MlaKernel kernel, int num_sms, bool fp8_kvb) {
  const int64_t dn = 128, dv = 128, bt = 64, blocks_per = (ctx + bt - 1) / bt, rows = B * blocks_per * bt;
  std::vector<int32_t> table(static_cast<size_t>(B * blocks_per)), pos(static_cast<size_t>(B), int32_t(ctx - 1)),
      qseq(static_cast<size_t>(B)), len(static_cast<size_t>(B), int32_t(ctx)), idx;
  std::iota(table.begin(), table.end(), 0);
  std::iota(qseq.begin(), qseq.end(), 0);
  if (topk) {
    idx.resize(static_cast<size_t>(B * topk));
    for (int64_t b = 0; b < B; ++b)
      for (int64_t i = 0; i < topk; ++i) idx[size_t(b * topk + i)] = int32_t((i * 2654435761u) % uint32_t(ctx));
  }
  auto dev_i32 = [](const std::vector<int32_t>& h) {
    int32_t* d = nullptr;
    CUDA_OK(cudaMalloc(&d, std::max<size_t>(h.size(), 1) * 4));
    if (!h.empty()) CUDA_OK(cudaMemcpy(d, h.data(), h.size() * 4, cudaMemcpyHostToDevice));
    return d;
  };
  int32_t *dtable = dev_i32(table), *dpos = dev_i32(pos), *dqseq = dev_i32(qseq), *dlen = dev_i32(len),
          *didx = dev_i32(idx);
  float *lat, *kpe, *q, *w, *out;
  CUDA_OK(cudaMalloc(&lat, size_t(rows * kC) * 4));
  CUDA_OK(cudaMalloc(&kpe, size_t(rows * kR) * 4));
  CUDA_OK(cudaMalloc(&q, size_t(B * kH * (dn + kR)) * 4));
  CUDA_OK(cudaMalloc(&w, size_t(kH * (dn + dv) * kC) * 4));
  CUDA_OK(cudaMalloc(&out, size_t(B * kH * dv) * 4));
  fill(lat, size_t(rows * kC), 11), fill(kpe, size_t(rows * kR), 12), fill(q, size_t(B * kH * (dn + kR)), 13);
  fill(w, size_t(kH * (dn + dv) * kC), 14);
  MlaAttentionParams p;
  p.T = B, p.H = kH, p.dn = dn, p.dr = kR, p.dv = dv, p.C = kC, p.q = q, p.ld_q = kH * (dn + kR), p.wkv_b = w,
  p.ld_w = kC;
  p.cache.format = LatentFormat::F32, p.cache.C = kC, p.cache.R = kR, p.cache.latent = lat, p.cache.ld_latent = kC,
  p.cache.k_pe = kpe, p.cache.ld_rope = kR;
  p.blocks = BlockTable{dtable, blocks_per, bt};
  p.query_seq = dqseq, p.seq_len = dlen, p.n_keys = ctx, p.positions = dpos;
  p.indices = topk ? didx : nullptr, p.n_indices = topk, p.max_list = topk ? topk : ctx;
  p.softmax_scale = 0.135f, p.out = out, p.ld_out = kH * dv, p.num_sms = num_sms, p.kernel = kernel;
  uint8_t* w8 = nullptr;
  float* w8s = nullptr;
  if (fp8_kvb) {  // kv_b as stored: e4m3 bytes (values irrelevant here) and block scales
    const int64_t wr = kH * (dn + dv);
    CUDA_OK(cudaMalloc(&w8, size_t(wr * kC)));
    CUDA_OK(cudaMemset(w8, 0x38, size_t(wr * kC)));
    CUDA_OK(cudaMalloc(&w8s, size_t((wr / 128) * 4) * 4));
    fill(w8s, size_t((wr / 128) * 4), 15);
    p.wkv_b8 = Fp8AbsorbWeight{w8, w8s, 4};
  }
  void* ws;
  CUDA_OK(cudaMalloc(&ws, std::max<size_t>(mla_attention_workspace_bytes(p), 16)));
  p.workspace = ws;
  const double ms = median_ms([&] { CUDA_OK(launch_mla_attention(p, nullptr)); });
  cudaFree(ws), cudaFree(lat), cudaFree(kpe), cudaFree(q), cudaFree(w), cudaFree(out), cudaFree(w8), cudaFree(w8s);
  cudaFree(dtable), cudaFree(dpos), cudaFree(dqseq), cudaFree(dlen), cudaFree(didx);
  return ms;
}

const char* fmt_name(LatentFormat f) {
  return f == LatentFormat::F32 ? "f32 (2304 B/token)" : f == LatentFormat::BF16 ? "bf16 (1152 B/token)" : "fp8 (656 B/token)";
}
const char* kernel_name(LatentFormat f, MlaKernel k) {
  MlaDecodeParams p;
  p.cache.format = f, p.cache.C = kC, p.cache.R = kR, p.kernel = k;
  return mla_decode_kernel_for(p) == MlaKernel::TensorCore ? "bf16 mma" : "fp32 CUDA cores";
}

}  // namespace

int main(int argc, char** argv) {
  if (const int rc = dsinfer::bench::skip_without_device("bench_mla")) return rc;
  const bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
  cudaDeviceProp prop;
  CUDA_OK(cudaGetDeviceProperties(&prop, 0));
  std::printf("# MLA attention (absorbed, %lld heads, 576/512)\n", (long long)kH);
  dsinfer::bench::print_device();
  const double copy = copy_bandwidth_gbs();
  std::printf("measured D2D copy bandwidth (read+write): %.0f GB/s\n\n", copy);

  std::printf("## Dense decode\n\n| cache | kernel | batch | context | ms | cache GB/s | %% of copy | TFLOPS |\n"
              "|---|---|---|---|---|---|---|---|\n");
  const std::vector<int64_t> ctxs = quick ? std::vector<int64_t>{4096} : std::vector<int64_t>{4096, 16384, 65536};
  struct Variant {
    LatentFormat f;
    MlaKernel k;
  };
  const Variant dense[] = {{LatentFormat::FP8, MlaKernel::Auto}, {LatentFormat::BF16, MlaKernel::Auto},
                           {LatentFormat::F32, MlaKernel::Auto}, {LatentFormat::FP8, MlaKernel::CudaCore}};
  for (const Variant& v : dense)
    for (int64_t B : {64, 128})
      for (int64_t ctx : ctxs) {
        if (v.k == MlaKernel::CudaCore && (B != 64 || ctx != 4096)) continue;  // one comparison point
        const Result r = run_decode(v.f, B, ctx, 0, prop.multiProcessorCount, v.k);
        std::printf("| %s | %s | %lld | %lld | %.3f | %.0f | %.1f | %.1f |\n", fmt_name(v.f), kernel_name(v.f, v.k),
                    (long long)B, (long long)ctx, r.ms, r.gbs, 100.0 * r.gbs / copy, r.tflops);
        std::fflush(stdout);
      }
  std::printf("\n## Sparse decode (top-k 2048)\n\n| cache | kernel | batch | context | ms | TFLOPS |\n"
              "|---|---|---|---|---|---|\n");
  for (const Variant& v : {Variant{LatentFormat::FP8, MlaKernel::Auto}, Variant{LatentFormat::BF16, MlaKernel::Auto},
                           Variant{LatentFormat::F32, MlaKernel::Auto}})
    for (int64_t ctx : quick ? std::vector<int64_t>{8192} : std::vector<int64_t>{8192, 65536}) {
      const Result r = run_decode(v.f, 128, ctx, 2048, prop.multiProcessorCount, v.k);
      std::printf("| %s | %s | 128 | %lld | %.3f | %.1f |\n", fmt_name(v.f), kernel_name(v.f, v.k), (long long)ctx,
                  r.ms, r.tflops);
      std::fflush(stdout);
    }
  std::printf("\n(FLOPs count 576-wide q·k plus 512-wide p·v per head and key, as FlashMLA does.)\n");
  std::printf("\n## Whole op per layer (absorb GEMM + attention + W_UV GEMM, F32 cache as the backend holds it)\n\n"
              "| batch | context | top-k | attention kernel | kv_b read as | ms |\n|---|---|---|---|---|---|\n");
  for (int64_t B : {1, 16, 128})
    for (int64_t topk : {int64_t(0), int64_t(2048)})
      for (MlaKernel k : {MlaKernel::CudaCore, MlaKernel::TensorCore})
        for (bool fp8_kvb : {false, true}) {
          if (fp8_kvb && B > 32) continue;  // the e4m3 absorb path serves decode-sized calls only
          const int64_t ctx = 8192;
          const double ms = run_full_op(B, ctx, topk, k, prop.multiProcessorCount, fp8_kvb);
          std::printf("| %lld | %lld | %s | %s | %s | %.3f |\n", (long long)B, (long long)ctx, topk ? "2048" : "dense",
                      k == MlaKernel::TensorCore ? "bf16 mma" : "fp32 CUDA cores", fp8_kvb ? "e4m3" : "fp32", ms);
          std::fflush(stdout);
        }
  return 0;
}
