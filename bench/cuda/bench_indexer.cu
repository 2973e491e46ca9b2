// Lightning-indexer benchmarks on one GPU (issue 8): scores (64 heads x 128, ReLU-weighted head sum) in TFLOPS
// for decode over a paged cache (batch 1 / 128, contexts 8K-64K) and for a causal prefill, plus the radix-select
// top-k (k = 2048) per row. Both key-cache formats (the interface's F32 and the 132-byte FP8). cudaEvent timing,
// 2 warm-up runs, median of 10, markdown tables. Exits 77 without a device.
//
//   bench_indexer [--quick]
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <functional>
#include <numeric>
#include <random>
#include <vector>

#include "attn_bench_util.cuh"
#include "../../cuda/indexer/indexer_scores.cuh"
#include "../../cuda/indexer/indexer_topk.cuh"
#include "../../cuda/kv/kv_cache_formats.cuh"

using namespace dsinfer::gpu::attn;

using namespace dsinfer::attn_bench;

namespace {


constexpr int64_t kH = 64, kD = 128, kTopk = 2048;

struct Result {
  double score_ms, score_tflops, topk_ms;
};

// n_seqs sequences of ctx keys; q_per_seq queries each at positions ctx - q_per_seq .. ctx - 1.
Result run(IndexKeyFormat fmt, IndexerKernel kernel, int64_t n_seqs, int64_t ctx, int64_t q_per_seq) {
  const int64_t bt = 64, blocks_per = (ctx + bt - 1) / bt, rows = n_seqs * blocks_per * bt, T = n_seqs * q_per_seq;
  std::vector<int32_t> table(static_cast<size_t>(n_seqs * blocks_per)), pos, qseq, len(static_cast<size_t>(n_seqs), int32_t(ctx));
  std::iota(table.begin(), table.end(), 0);
  std::shuffle(table.begin(), table.end(), std::mt19937(1));
  for (int64_t s = 0; s < n_seqs; ++s)
    for (int64_t i = 0; i < q_per_seq; ++i) pos.push_back(int32_t(ctx - q_per_seq + i)), qseq.push_back(int32_t(s));
  int32_t *dtable, *dpos, *dqseq, *dlen, *dout;
  CUDA_OK(cudaMalloc(&dtable, table.size() * 4));
  CUDA_OK(cudaMalloc(&dpos, pos.size() * 4));
  CUDA_OK(cudaMalloc(&dqseq, qseq.size() * 4));
  CUDA_OK(cudaMalloc(&dlen, len.size() * 4));
  CUDA_OK(cudaMalloc(&dout, size_t(T * kTopk) * 4));
  CUDA_OK(cudaMemcpy(dtable, table.data(), table.size() * 4, cudaMemcpyHostToDevice));
  CUDA_OK(cudaMemcpy(dpos, pos.data(), pos.size() * 4, cudaMemcpyHostToDevice));
  CUDA_OK(cudaMemcpy(dqseq, qseq.data(), qseq.size() * 4, cudaMemcpyHostToDevice));
  CUDA_OK(cudaMemcpy(dlen, len.data(), len.size() * 4, cudaMemcpyHostToDevice));
  float *q, *w, *qs, *scores, *k = nullptr, *ks = nullptr;
  uint8_t* packed = nullptr;
  CUDA_OK(cudaMalloc(&q, size_t(T * kH * kD) * 4));
  CUDA_OK(cudaMalloc(&w, size_t(T * kH) * 4));
  CUDA_OK(cudaMalloc(&qs, size_t(T * kH) * 4));
  CUDA_OK(cudaMalloc(&scores, size_t(T * ctx) * 4));
  fill(q, size_t(T * kH * kD), 1, 8.0f);
  fill(w, size_t(T * kH), 2);
  fill(qs, size_t(T * kH), 3, 0.01f);
  if (fmt == IndexKeyFormat::F32) {
    CUDA_OK(cudaMalloc(&k, size_t(rows * kD) * 4));
    CUDA_OK(cudaMalloc(&ks, size_t(rows) * 4));
    fill(k, size_t(rows * kD), 4, 8.0f);
    fill(ks, size_t(rows), 5, 0.01f);
  } else {
    CUDA_OK(cudaMalloc(&packed, size_t(rows * index_key_bytes(kD))));
    const int64_t chunk = 65536;
    float* kn;
    int64_t* slots;
    CUDA_OK(cudaMalloc(&kn, size_t(chunk * kD) * 4));
    CUDA_OK(cudaMalloc(&slots, size_t(chunk) * 8));
    fill(kn, size_t(chunk * kD), 6, 8.0f);
    std::vector<int64_t> hs(static_cast<size_t>(chunk));
    for (int64_t r0 = 0; r0 < rows; r0 += chunk) {
      const int64_t n = std::min(chunk, rows - r0);
      std::iota(hs.begin(), hs.begin() + n, r0);
      CUDA_OK(cudaMemcpy(slots, hs.data(), size_t(n) * 8, cudaMemcpyHostToDevice));
      IndexKeyWriteParams wp;
      wp.format = IndexKeyFormat::FP8, wp.n = n, wp.D = kD, wp.k_new = kn, wp.ld_new = kD, wp.slots = slots,
      wp.packed = packed, wp.block_tokens = bt;
      CUDA_OK(launch_index_key_cache_write(wp, nullptr));
    }
    CUDA_OK(cudaDeviceSynchronize());
    cudaFree(kn), cudaFree(slots);
  }
  IndexerScoresParams sp;
  sp.T = T, sp.H = kH, sp.D = kD, sp.q = q, sp.q_t = kH * kD, sp.w = w, sp.w_t = kH, sp.q_scale = qs, sp.qs_t = kH;
  sp.head_scale = 1.0f / 90.5f;
  sp.keys.format = fmt, sp.keys.D = kD, sp.keys.k = k, sp.keys.ld_k = kD, sp.keys.scale = ks, sp.keys.ld_scale = 1,
  sp.keys.packed = packed, sp.keys.block_tokens = bt;
  sp.blocks = BlockTable{dtable, blocks_per, bt};
  sp.query_seq = dqseq, sp.seq_len = dlen, sp.n_keys = ctx, sp.positions = dpos, sp.max_keys = ctx;
  sp.scores = scores, sp.scores_t = ctx;
  sp.kernel = kernel;
  TopkParams tp;
  tp.T = T, tp.scores = scores, tp.scores_t = ctx, tp.query_seq = dqseq, tp.seq_len = dlen, tp.n_keys = ctx,
  tp.positions = dpos, tp.k = kTopk, tp.out = dout, tp.out_t = kTopk;
  const double sms = median_ms([&] { CUDA_OK(launch_indexer_scores(sp, nullptr)); });
  const double tms = median_ms([&] { CUDA_OK(launch_indexer_topk(tp, nullptr)); });
  double pairs = 0;
  for (int32_t p : pos) pairs += double(std::min<int64_t>(p + 1, ctx));
  const double flops = 2.0 * pairs * double(kH) * double(kD);
  cudaFree(q), cudaFree(w), cudaFree(qs), cudaFree(scores), cudaFree(k), cudaFree(ks), cudaFree(packed);
  cudaFree(dtable), cudaFree(dpos), cudaFree(dqseq), cudaFree(dlen), cudaFree(dout);
  return {sms, flops / (sms * 1e-3) / 1e12, tms};
}

}  // namespace

int main(int argc, char** argv) {
  if (const int rc = dsinfer::bench::skip_without_device("bench_indexer")) return rc;
  const bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
  cudaDeviceProp prop;
  CUDA_OK(cudaGetDeviceProperties(&prop, 0));
  std::printf("# DSA lightning indexer (64 heads x 128, top-k 2048)\n");
  dsinfer::bench::print_device();
  std::printf("| key cache | kernel | case | queries | context | scores ms | scores TFLOPS | top-k ms |\n"
              "|---|---|---|---|---|---|---|---|\n");
  struct Shape {
    const char* what;
    int64_t n_seqs, ctx, q_per_seq;
  };
  std::vector<Shape> shapes = {{"decode", 1, 65536, 1}, {"decode", 128, 8192, 1}, {"decode", 128, 32768, 1},
                               {"decode", 128, 65536, 1}, {"prefill chunk", 1, 8192, 1024},
                               {"prefill from 0", 1, 4096, 4096}};
  if (quick) shapes = {{"decode", 128, 8192, 1}, {"prefill chunk", 1, 8192, 1024}};
  struct Variant {
    IndexKeyFormat f;
    IndexerKernel k;
  };
  for (const Variant& v : {Variant{IndexKeyFormat::FP8, IndexerKernel::Fp8Mma},
                           Variant{IndexKeyFormat::FP8, IndexerKernel::CudaCore},
                           Variant{IndexKeyFormat::F32, IndexerKernel::CudaCore}})
    for (const Shape& s : shapes) {
      const Result r = run(v.f, v.k, s.n_seqs, s.ctx, s.q_per_seq);
      std::printf("| %s | %s | %s | %lld | %lld | %.3f | %.1f | %.3f |\n", v.f == IndexKeyFormat::FP8 ? "fp8 132 B" : "f32",
                  v.k == IndexerKernel::Fp8Mma ? "e4m3 mma" : "fp32 CUDA cores", s.what,
                  (long long)(s.n_seqs * s.q_per_seq), (long long)s.ctx, r.score_ms, r.score_tflops, r.topk_ms);
      std::fflush(stdout);
    }
  std::printf("\n(FLOPs: 2·64·128 per visible (query, key) pair; the weighting and ReLU are not counted.)\n");
  return 0;
}
