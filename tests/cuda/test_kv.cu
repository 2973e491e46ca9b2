// GPU paged-cache writers (cuda/kv/) against host references built from the CPU backend's own scalar definitions:
// the 656-byte FP8 latent row (and its partial-group form for a latent width not a multiple of 128), the BF16 row,
// the FP8-simulated F32 latent (== CpuBackend::fp8_quantize with dequantize=true), and the 132-byte FP8 indexer key
// in DeepGEMM's paged layout. Every byte must match: these are deterministic roundings (e4m3 RNE with saturation,
// bf16 RNE, power-of-two scales), not approximations.
// The read side (load_latent4 / load_index_key4) is checked against the host dequantization, exactly as well.
// Exits 77 (CTest SKIP_RETURN_CODE) without a CUDA device.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <numeric>
#include <random>
#include <vector>

#include "../../cuda/kv/kv_cache_formats.cuh"
#include "backend/backend.hpp"
#include "backend/cpu/cpu_backend.hpp"
#include "util/dtype.hpp"
#include "attn_test_util.cuh"

using namespace dsinfer;
using namespace dsinfer::gpu::attn;
using namespace dsinfer::attn_test;

namespace {

// Rows with very different magnitudes per 128-group (including an all-zero group: amax floor 1e-4, and values
// that land exactly on e4m3 rounding ties after scaling).
std::vector<float> make_rows(std::mt19937& rng, int64_t n, int64_t width) {
  std::vector<float> v(static_cast<size_t>(n * width));
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  for (int64_t r = 0; r < n; ++r)
    for (int64_t c = 0; c < width; ++c) {
      const int64_t g = c / 128;
      float mag = std::ldexp(1.0f, int((r * 7 + g * 3) % 13) - 6);
      float x = u(rng) * mag;
      if ((r + g) % 5 == 4) x = 0.0f;                   // whole group zero
      if (c % 37 == 5) x = mag * (1.0f + 1.0f / 16.0f); // a tie between two e4m3 neighbours after scaling
      v[size_t(r * width + c)] = x;
    }
  return v;
}

__global__ void read_latent_kernel(LatentCacheView v, const int64_t* rows, int64_t n, float* out) {
  const int64_t w = v.C + v.R;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < n * (w / 4); e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t t = e / (w / 4), i = (e % (w / 4)) * 4;
    const float4 f = load_latent4(v, rows[t], int(i));
    out[t * w + i] = f.x, out[t * w + i + 1] = f.y, out[t * w + i + 2] = f.z, out[t * w + i + 3] = f.w;
  }
}

__global__ void read_index_key_kernel(IndexKeyCacheView v, const int64_t* rows, int64_t n, float* out) {
  const int64_t w = v.D + 1;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < n * (v.D / 4); e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t t = e / (v.D / 4), i = (e % (v.D / 4)) * 4;
    const float4 f = load_index_key4(v, rows[t], int(i));
    out[t * w + i] = f.x, out[t * w + i + 1] = f.y, out[t * w + i + 2] = f.z, out[t * w + i + 3] = f.w;
    if (i == 0) out[t * w + v.D] = load_index_scale(v, rows[t]);
  }
}

// Physical rows for n tokens in a pool of n_blocks blocks: a shuffled block table, as the paged cache hands out.
std::vector<int64_t> paged_slots(std::mt19937& rng, int64_t n, int64_t block_tokens, int64_t n_blocks) {
  std::vector<int32_t> blocks(static_cast<size_t>(n_blocks));
  std::iota(blocks.begin(), blocks.end(), 0);
  std::shuffle(blocks.begin(), blocks.end(), rng);
  std::vector<int64_t> slots(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) slots[size_t(i)] = int64_t(blocks[size_t(i / block_tokens)]) * block_tokens + i % block_tokens;
  return slots;
}

void test_latent_formats(int64_t C, int64_t R, int64_t n, int64_t block_tokens, bool ue8m0 = true) {
  std::mt19937 rng(unsigned(C * 131 + R + n + ue8m0));
  const int64_t n_blocks = (n + block_tokens - 1) / block_tokens + 3, rows = n_blocks * block_tokens;
  const std::vector<float> c = make_rows(rng, n, C), pe = make_rows(rng, n, R);
  const std::vector<int64_t> slots = paged_slots(rng, n, block_tokens, n_blocks);
  DevBuf<float> dc(c), dpe(pe);
  DevBuf<int64_t> dslots(slots);

  // FP8 656-byte rows.
  {
    const int64_t rb = latent_row_bytes(LatentFormat::FP8, C, R);
    CHECK(C != 512 || R != 64 || rb == 656, "row bytes %lld", (long long)rb);
    DevBuf<uint8_t> packed(static_cast<size_t>(rows * rb));
    LatentWriteParams p;
    p.format = LatentFormat::FP8, p.n = n, p.C = C, p.R = R, p.c_new = dc.p, p.ld_c = C, p.kpe_new = dpe.p,
    p.ld_pe = R, p.slots = dslots.p, p.packed = packed.p, p.ue8m0 = ue8m0;
    CUDA_OK(launch_latent_cache_write(p, nullptr));
    CUDA_OK(cudaDeviceSynchronize());
    const std::vector<uint8_t> got = packed.host();
    int64_t bad = 0;
    std::vector<float> deq(static_cast<size_t>(n * (C + R)));
    const int64_t G = (C + 127) / 128;  // the last group may be partial (C = 64: v32-micro)
    for (int64_t t = 0; t < n; ++t) {
      const uint8_t* row = got.data() + slots[size_t(t)] * rb;
      for (int64_t g = 0; g < G; ++g) {
        const int64_t m = std::min<int64_t>(128, C - g * 128);
        float amax = 0.0f;
        for (int64_t i = 0; i < m; ++i) amax = std::max(amax, std::fabs(c[size_t(t * C + g * 128 + i)]));
        const float s = fp8_group_scale(amax, ue8m0);
        float gs;
        std::memcpy(&gs, row + C + g * 4, 4);
        if (gs != s) ++bad;
        for (int64_t i = 0; i < m; ++i) {
          const float x = c[size_t(t * C + g * 128 + i)];
          const uint8_t want = f32_to_e4m3(std::clamp(x / s, -448.0f, 448.0f));
          if (row[g * 128 + i] != want) ++bad;
          deq[size_t(t * (C + R) + g * 128 + i)] = e4m3_to_f32(want) * s;
        }
      }
      for (int64_t i = 0; i < R; ++i) {
        uint16_t b;
        std::memcpy(&b, row + C + G * 4 + i * 2, 2);
        if (b != f32_to_bf16(pe[size_t(t * R + i)])) ++bad;
        deq[size_t(t * (C + R) + C + i)] = bf16_to_f32(f32_to_bf16(pe[size_t(t * R + i)]));
      }
    }
    CHECK(bad == 0, "FP8 latent C=%lld R=%lld ue8m0=%d: %lld bytes/scales differ", (long long)C, (long long)R,
          int(ue8m0), (long long)bad);
    LatentCacheView v;
    v.format = LatentFormat::FP8, v.C = C, v.R = R, v.packed = packed.p;
    DevBuf<float> back(static_cast<size_t>(n * (C + R)));
    read_latent_kernel<<<64, 256>>>(v, dslots.p, n, back.p);
    CUDA_OK(cudaDeviceSynchronize());
    CHECK(back.host() == deq, "FP8 latent read-back differs from the host dequantization");
  }
  // BF16 rows.
  {
    const int64_t rb = latent_row_bytes(LatentFormat::BF16, C, R);
    DevBuf<uint8_t> packed(static_cast<size_t>(rows * rb));
    LatentWriteParams p;
    p.format = LatentFormat::BF16, p.n = n, p.C = C, p.R = R, p.c_new = dc.p, p.ld_c = C, p.kpe_new = dpe.p,
    p.ld_pe = R, p.slots = dslots.p, p.packed = packed.p;
    CUDA_OK(launch_latent_cache_write(p, nullptr));
    CUDA_OK(cudaDeviceSynchronize());
    const std::vector<uint8_t> got = packed.host();
    int64_t bad = 0;
    std::vector<float> deq(static_cast<size_t>(n * (C + R)));
    for (int64_t t = 0; t < n; ++t)
      for (int64_t i = 0; i < C + R; ++i) {
        const float x = i < C ? c[size_t(t * C + i)] : pe[size_t(t * R + i - C)];
        uint16_t b;
        std::memcpy(&b, got.data() + slots[size_t(t)] * rb + i * 2, 2);
        if (b != f32_to_bf16(x)) ++bad;
        deq[size_t(t * (C + R) + i)] = bf16_to_f32(f32_to_bf16(x));
      }
    CHECK(bad == 0, "BF16 latent: %lld values differ", (long long)bad);
    LatentCacheView v;
    v.format = LatentFormat::BF16, v.C = C, v.R = R, v.packed = packed.p;
    DevBuf<float> back(static_cast<size_t>(n * (C + R)));
    read_latent_kernel<<<64, 256>>>(v, dslots.p, n, back.p);
    CUDA_OK(cudaDeviceSynchronize());
    CHECK(back.host() == deq, "BF16 latent read-back differs");
  }
  // F32 with and without the FP8 simulation; the simulated values must equal CpuBackend::fp8_quantize.
  for (bool sim : {false, true}) {
    const int64_t ld_lat = C + 4, ld_pe = R + 8;  // strided destinations, as views into wider buffers would be
    DevBuf<float> lat(static_cast<size_t>(rows * ld_lat)), kpe(static_cast<size_t>(rows * ld_pe));
    LatentWriteParams p;
    p.format = LatentFormat::F32, p.n = n, p.C = C, p.R = R, p.c_new = dc.p, p.ld_c = C, p.kpe_new = dpe.p,
    p.ld_pe = R, p.slots = dslots.p, p.latent = lat.p, p.ld_latent = ld_lat, p.k_pe = kpe.p, p.ld_rope = ld_pe,
    p.simulate_fp8 = sim;
    CUDA_OK(launch_latent_cache_write(p, nullptr));
    CUDA_OK(cudaDeviceSynchronize());
    std::vector<float> want = c;
    if (sim) {
      auto cpu = create_backend("cpu");
      Tensor2D x{want.data(), n, C, C};
      cpu->fp8_quantize(x, 128, true, true, x, Tensor2D{});
    }
    const std::vector<float> gl = lat.host(), gp = kpe.host();
    int64_t bad = 0;
    for (int64_t t = 0; t < n; ++t) {
      const int64_t r = slots[size_t(t)];
      if (std::memcmp(&gl[size_t(r * ld_lat)], &want[size_t(t * C)], size_t(C) * 4)) ++bad;
      if (std::memcmp(&gp[size_t(r * ld_pe)], &pe[size_t(t * R)], size_t(R) * 4)) ++bad;
    }
    CHECK(bad == 0, "F32 latent (simulate_fp8=%d): %lld rows differ", int(sim), (long long)bad);
  }
}

void test_index_keys(int64_t D, int64_t n, int64_t block_tokens, bool ue8m0) {
  std::mt19937 rng(unsigned(D * 7 + n + ue8m0));
  const int64_t n_blocks = (n + block_tokens - 1) / block_tokens + 2, rows = n_blocks * block_tokens;
  const std::vector<float> k = make_rows(rng, n, D);
  const std::vector<int64_t> slots = paged_slots(rng, n, block_tokens, n_blocks);
  DevBuf<float> dk(k);
  DevBuf<int64_t> dslots(slots);
  DevBuf<uint8_t> packed(static_cast<size_t>(rows * index_key_bytes(D)));
  IndexKeyWriteParams p;
  p.format = IndexKeyFormat::FP8, p.n = n, p.D = D, p.k_new = dk.p, p.ld_new = D, p.ue8m0 = ue8m0, p.slots = dslots.p,
  p.packed = packed.p, p.block_tokens = block_tokens;
  CUDA_OK(launch_index_key_cache_write(p, nullptr));
  CUDA_OK(cudaDeviceSynchronize());
  const std::vector<uint8_t> got = packed.host();
  CHECK(D != 128 || index_key_bytes(D) == 132, "132-byte key");
  int64_t bad = 0;
  std::vector<float> deq(static_cast<size_t>(n * (D + 1)));
  for (int64_t t = 0; t < n; ++t) {
    const int64_t r = slots[size_t(t)], page = r / block_tokens, off = r % block_tokens;
    const uint8_t* pg = got.data() + page * block_tokens * (D + 4);
    float amax = 0.0f;
    for (int64_t i = 0; i < D; ++i) amax = std::max(amax, std::fabs(k[size_t(t * D + i)]));
    const float s = fp8_group_scale(amax, ue8m0);
    float gs;
    std::memcpy(&gs, pg + block_tokens * D + off * 4, 4);
    if (gs != s) ++bad;
    for (int64_t i = 0; i < D; ++i) {
      const uint8_t want = f32_to_e4m3(std::clamp(k[size_t(t * D + i)] / s, -448.0f, 448.0f));
      if (pg[off * D + i] != want) ++bad;
      deq[size_t(t * (D + 1) + i)] = e4m3_to_f32(want);
    }
    deq[size_t(t * (D + 1) + D)] = s;
  }
  CHECK(bad == 0, "FP8 index key D=%lld ue8m0=%d: %lld differ", (long long)D, int(ue8m0), (long long)bad);
  IndexKeyCacheView v;
  v.format = IndexKeyFormat::FP8, v.D = D, v.packed = packed.p, v.block_tokens = block_tokens;
  DevBuf<float> back(static_cast<size_t>(n * (D + 1)));
  read_index_key_kernel<<<64, 256>>>(v, dslots.p, n, back.p);
  CUDA_OK(cudaDeviceSynchronize());
  CHECK(back.host() == deq, "FP8 index key read-back differs");

  // F32 layout (the backend interface): values and scales copied as given.
  std::vector<float> sc(static_cast<size_t>(n));
  for (auto& x : sc) x = std::ldexp(1.0f, int(rng() % 9) - 4);
  DevBuf<float> dsc(sc), kk(static_cast<size_t>(rows * D)), ks(static_cast<size_t>(rows));
  IndexKeyWriteParams q;
  q.format = IndexKeyFormat::F32, q.n = n, q.D = D, q.k_new = dk.p, q.ld_new = D, q.scale_new = dsc.p,
  q.slots = dslots.p, q.k = kk.p, q.ld_k = D, q.scale = ks.p;
  CUDA_OK(launch_index_key_cache_write(q, nullptr));
  CUDA_OK(cudaDeviceSynchronize());
  const std::vector<float> gk = kk.host(), gs = ks.host();
  bad = 0;
  for (int64_t t = 0; t < n; ++t) {
    const int64_t r = slots[size_t(t)];
    if (std::memcmp(&gk[size_t(r * D)], &k[size_t(t * D)], size_t(D) * 4) || gs[size_t(r)] != sc[size_t(t)]) ++bad;
  }
  CHECK(bad == 0, "F32 index key: %lld rows differ", (long long)bad);
}

}  // namespace

int main() {
  int n_dev = 0;
  if (cudaGetDeviceCount(&n_dev) != cudaSuccess || n_dev == 0) {
    std::printf("SKIP: no CUDA device\n");
    return 77;
  }
  test_latent_formats(512, 64, 300, 64);  // V3.2: the 656-byte row
  test_latent_formats(128, 32, 37, 16);   // v32-tiny dims
  test_latent_formats(256, 32, 1, 1);
  test_latent_formats(64, 32, 21, 16);    // v32-micro dims: one partial 128-group (a 132-byte FP8 row)
  test_latent_formats(512, 64, 40, 64, /*ue8m0=*/false);
  test_index_keys(128, 300, 64, true);    // V3.2: 132 bytes
  test_index_keys(128, 50, 64, false);
  test_index_keys(64, 77, 16, true);      // v32-tiny dims
  if (g_failures) {
    std::printf("%d check(s) failed\n", g_failures);
    return 1;
  }
  std::printf("test_kv: all checks passed\n");
  return 0;
}
