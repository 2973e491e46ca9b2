// The vector attention kernels (lib/backend/cpu/attention_kernels.cpp) against their scalar references, bit for
// bit: the lightning indexer's scores and the absorbed MLA from FP8, BF16 and fp32 kv_b, over head counts that fill
// and do not fill the kernels' tiles, key counts around the key tiles, and a paged cache. The process's kernel
// family is the best this CPU runs; ctest runs this binary again with DSINFER_CPU_KERNELS=avx2.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <random>
#include <set>
#include <vector>

#include "backend/cpu/attention_kernels.hpp"
#include "backend/cpu/cpu_backend.hpp"
#include "backend/cpu/simd.hpp"
#include "backend/kv_format.hpp"
#include "util/dtype.hpp"

using namespace dsinfer;

namespace {

std::vector<float> normal(std::mt19937& gen, size_t n, float sd = 1.0f) {
  std::normal_distribution<float> nd(0.0f, sd);
  std::vector<float> v(n);
  for (auto& x : v) x = nd(gen);
  return v;
}

// A paged layout for S positions: blocks of 16 rows in a shuffled order.
std::vector<int32_t> shuffled_blocks(std::mt19937& gen, int64_t S, int64_t block_tokens) {
  std::vector<int32_t> table(size_t((S + block_tokens - 1) / block_tokens));
  for (size_t i = 0; i < table.size(); ++i) table[i] = int32_t(i);
  std::shuffle(table.begin(), table.end(), gen);
  return table;
}

// MlaArgs for two query rows over a paged cache (k_pe rows `rows`, block table `table` of bt-token blocks).
MlaArgs paged_mla_args(std::vector<float>& q, std::vector<float>& kpe, int64_t rows, const std::vector<int32_t>& table,
                       int64_t bt, int64_t S, int64_t H, int64_t dn, int64_t dr, int64_t dv, float scale, MlaMode mode) {
  MlaArgs a;
  a.q = Tensor2D{q.data(), 2, H * (dn + dr), H * (dn + dr)};
  a.k_pe = Tensor2D{kpe.data(), rows, dr, dr};
  a.n_keys = S;
  a.block_table = table.data();
  a.block_tokens = bt;
  a.n_heads = H;
  a.nope_dim = dn;
  a.rope_dim = dr;
  a.v_dim = dv;
  a.softmax_scale = scale;
  a.mode = mode;
  return a;
}

bool same_bits(const float* a, const float* b, size_t n) { return std::memcmp(a, b, n * sizeof(float)) == 0; }

// The indexer's scores of keys [0, n_keys) for query q (H heads of D) with head weights wt: the vector kernel's
// (after its query preparation) into `got`, the scalar reference's into `want`. Returns the prepared query, which
// points into `storage`, for more calls on sub-ranges.
IndexerQuery score_both(const std::vector<float>& q, const std::vector<float>& wt, const IndexerTopkArgs& a,
                        const WorkerScratch& scratch, std::vector<float>& storage, std::vector<float>& got,
                        std::vector<float>& want) {
  const int64_t H = a.n_heads, D = a.head_dim, S = a.n_keys;
  got.assign(size_t(S), 1.0f);
  want.assign(size_t(S), 2.0f);
  IndexerQuery prepared;
  storage.assign(size_t(indexer_query_floats(H, D)), 0.0f);
  indexer_prepare_query(q.data(), wt.data(), H, D, storage.data(), prepared);
  indexer_scores(prepared, a, 0, S, got.data(), scratch);
  indexer_scores_reference(q.data(), wt.data(), a, 0, S, want.data(), scratch);
  return prepared;
}

}  // namespace

TEST_CASE("indexer scores: vector kernel equals the reference bit for bit", "[cpu][indexer][kernels]") {
  ScratchArena arena(1);
  const WorkerScratch scratch(arena, 0);
  INFO("kernel family " << int(cpu_kernel_isa()));
  std::mt19937 gen(7);
  for (int64_t H : {4, 16, 20, 64})
    for (int64_t D : {64, 7})
      for (bool paged : {false, true})
        for (bool scaled : {false, true}) {
          const int64_t S = 83, bt = 16;
          const auto table = shuffled_blocks(gen, S, bt);
          const int64_t rows = int64_t(table.size()) * bt;
          auto q = normal(gen, size_t(H * D)), k = normal(gen, size_t(rows * D)), wt = normal(gen, size_t(H));
          auto ks = normal(gen, size_t(rows));
          // Edge values: a key of zeros (every dot ±0), negative zeros, an exact zero query head.
          for (int64_t i = 0; i < D; ++i) k[size_t(5 * D + i)] = 0.0f, k[size_t(6 * D + i)] = -0.0f;
          for (int64_t i = 0; i < D; ++i) q[size_t(1 * D + i)] = 0.0f;
          IndexerTopkArgs a;
          a.k = Tensor2D{k.data(), rows, D, D};
          a.k_scale = scaled ? Tensor2D{ks.data(), rows, 1, 1} : Tensor2D{};
          a.n_keys = S;
          a.block_table = paged ? table.data() : nullptr;
          a.block_tokens = paged ? bt : 0;
          a.n_heads = H;
          a.head_dim = D;
          std::vector<float> got, want, storage;
          const IndexerQuery prepared = score_both(q, wt, a, scratch, storage, got, want);
          INFO("H " << H << " D " << D << " paged " << paged << " scaled " << scaled);
          REQUIRE(same_bits(got.data(), want.data(), size_t(S)));
          // A sub-range writes only its keys.
          std::vector<float> part(size_t(S), 9.0f);
          indexer_scores(prepared, a, 10, 13, part.data(), scratch);
          CHECK(part[9] == 9.0f);
          CHECK(part[13] == 9.0f);
          CHECK(same_bits(part.data() + 10, want.data() + 10, 3));
        }
}

TEST_CASE("indexer scores from an FP8 key cache: vector kernel equals the reference for every e4m3 code",
          "[cpu][indexer][kernels]") {
  // The packed cache's keys are decoded 16 bytes at a time in the vector kernel; every one of the 256 codes
  // (zeros of both signs, subnormals, ±448, and the NaN codes 0x7F / 0xFF that take the table) appears in the
  // keys, at every position within a 16-byte chunk, for queries of 4 heads (the 8-lane path) and of 16.
  ScratchArena arena(1);
  const WorkerScratch scratch(arena, 0);
  INFO("kernel family " << int(cpu_kernel_isa()));
  std::mt19937 gen(13);
  const int64_t D = 64, P = 16, S = 64;  // 64 keys of 64 bytes: 4096 bytes, every code 16 times
  const int64_t pages = S / P;
  std::vector<uint8_t> cache(size_t(pages * P * (D + 4)));
  std::vector<uint8_t> codes(size_t(S * D));
  for (size_t i = 0; i < codes.size(); ++i) codes[i] = uint8_t((i * 37 + i / 256) % 256);
  for (int64_t row = 0; row < S; ++row) {
    const int64_t page = row / P, off = row % P;
    uint8_t* page_base = cache.data() + page * P * (D + 4);
    std::memcpy(page_base + off * D, codes.data() + row * D, size_t(D));
    const float scale = 0.25f + float(row % 5);
    std::memcpy(page_base + P * D + off * 4, &scale, 4);
  }
  std::set<uint8_t> seen(codes.begin(), codes.end());
  REQUIRE(seen.size() == 256);
  for (int64_t H : {4, 16}) {
    auto q = normal(gen, size_t(H * D)), wt = normal(gen, size_t(H));
    IndexerTopkArgs a;
    a.k_packed.dtype = KvDtype::FP8;
    a.k_packed.data = cache.data();
    a.k_packed.dim = D;
    a.k_packed.page_tokens = P;
    a.n_keys = S;
    a.n_heads = H;
    a.head_dim = D;
    std::vector<float> got, want, storage;
    score_both(q, wt, a, scratch, storage, got, want);
    INFO("H " << H);
    CHECK(same_bits(got.data(), want.data(), size_t(S)));
    int nan = 0;
    for (float x : want) nan += std::isnan(x);
    CHECK(nan > 0);  // keys holding a NaN code score NaN on both sides
  }
}

TEST_CASE("absorbed MLA: vector kernel from FP8, BF16 or fp32 kv_b equals the reference bit for bit",
          "[cpu][mla][kernels]") {
  INFO("kernel family " << int(cpu_kernel_isa()));
  ScratchArena arena(1);
  const WorkerScratch scratch(arena, 0);
  std::mt19937 gen(11);
  struct Dims {
    int64_t H, dn, dr, dv, C;
  };
  for (const Dims dims : {Dims{4, 16, 16, 24, 128}, Dims{5, 64, 32, 64, 256}, Dims{3, 8, 16, 5, 48}}) {
    const int64_t H = dims.H, dn = dims.dn, dr = dims.dr, dv = dims.dv, C = dims.C, R = H * (dn + dv);
    // kv_b in the three forms, all with the same fp32 values.
    std::vector<uint8_t> w8(size_t(R * C));
    for (auto& b : w8) do b = uint8_t(gen() & 0xff); while ((b & 0x7f) == 0x7f);
    const int64_t blk = 128, GR = (R + blk - 1) / blk, GC = (C + blk - 1) / blk;
    std::vector<float> sc(size_t(GR * GC));
    std::uniform_real_distribution<float> u(1e-3f, 3e-2f);
    for (auto& s : sc) s = u(gen);
    const Weight fp8{"kv_b_proj.weight", DType::F8_E4M3, {R, C}, w8.data(), sc.data()};
    std::vector<uint16_t> bf(size_t(R * C));
    for (auto& v : bf) v = f32_to_bf16(normal(gen, 1, 0.05f)[0]);
    const Weight bf16{"kv_b_proj.weight", DType::BF16, {R, C}, reinterpret_cast<const uint8_t*>(bf.data()), nullptr};
    CpuBackend be({1});
    const int64_t S = 45, bt = 16;
    const auto table = shuffled_blocks(gen, S, bt);
    const int64_t rows = int64_t(table.size()) * bt;
    auto q = normal(gen, size_t(2 * H * (dn + dr))), lat = normal(gen, size_t(rows * C)), kpe = normal(gen, size_t(rows * dr));
    for (const Weight* w : {&fp8, &bf16}) {
      Matrix copy = be.dequantize(*w);
      for (bool stored : {true, false})
        for (int64_t n : {1, 3, 4, 5, 37}) {
          std::vector<int32_t> keys(static_cast<size_t>(n));
          for (int64_t j = 0; j < n; ++j) keys[size_t(j)] = int32_t((j * 7 + 3) % S);
          MlaArgs a = paged_mla_args(q, kpe, rows, table, bt, S, H, dn, dr, dv, 0.1f, MlaMode::Absorbed);
          a.latent = Tensor2D{lat.data(), rows, C, C};
          std::vector<float> got(size_t(2 * H * dv), 1.0f), want(size_t(2 * H * dv), 2.0f);
          a.wkv_b = copy.view;
          a.out = Tensor2D{want.data(), 2, H * dv, H * dv};
          mla_absorbed_reference(a, keys.data(), n, 1, 0, H, scratch);
          if (stored) {
            a.wkv_b = Tensor2D{nullptr, R, C, C};
            a.wkv_b_stored = w;
          }
          INFO("H " << H << " C " << C << " " << dtype_name(w->dtype) << (stored ? " stored" : " fp32 copy") << " n " << n);
          CHECK(mla_absorbed_vectorized(a) == (cpu_kernel_isa() != CpuIsa::Scalar));
          if (!mla_absorbed_vectorized(a) && stored) continue;  // the reference reads only the fp32 copy
          a.out = Tensor2D{got.data(), 2, H * dv, H * dv};
          mla_absorbed(a, keys.data(), n, 1, 0, H, scratch);
          REQUIRE(same_bits(got.data() + H * dv, want.data() + H * dv, size_t(H * dv)));
          CHECK(got[0] == 1.0f);  // row 0 untouched
          // Heads split at any boundary give the same bits.
          std::vector<float> split(size_t(2 * H * dv), 3.0f);
          a.out = Tensor2D{split.data(), 2, H * dv, H * dv};
          mla_absorbed(a, keys.data(), n, 1, 0, 1, scratch);
          mla_absorbed(a, keys.data(), n, 1, 1, H, scratch);
          REQUIRE(same_bits(split.data() + H * dv, want.data() + H * dv, size_t(H * dv)));
        }
    }
  }
}

TEST_CASE("absorbed MLA from a packed FP8 or BF16 latent cache: vector kernel equals the reference bit for bit",
          "[cpu][mla][kernels]") {
  // The vector kernels decode the cache's rows 16 values at a time; every e4m3 code but the NaN codes, and tails
  // shorter than 16 (C 200: a 72-value second group; rope 20), appear; then a NaN code in one key's row (its chunk
  // takes the table), which makes every output NaN on both sides.
  INFO("kernel family " << int(cpu_kernel_isa()));
  ScratchArena arena(1);
  const WorkerScratch scratch(arena, 0);
  std::mt19937 gen(17);
  struct Dims {
    int64_t H, dn, dr, dv, C;
  };
  for (const Dims dims : {Dims{4, 16, 16, 24, 128}, Dims{3, 8, 16, 5, 48}, Dims{2, 16, 20, 16, 200}})
    for (KvDtype dtype : {KvDtype::FP8, KvDtype::BF16}) {
      const int64_t H = dims.H, dn = dims.dn, dr = dims.dr, dv = dims.dv, C = dims.C, R = H * (dn + dv);
      const int64_t S = 40, bt = 16;
      const auto table = shuffled_blocks(gen, S, bt);
      const int64_t rows = int64_t(table.size()) * bt;
      PackedKv packed;
      packed.dtype = dtype;
      packed.dim = C;
      packed.rope_dim = dr;
      std::vector<uint8_t> bytes(size_t(rows * kvfmt::latent_row_bytes(dtype, C, dr)));
      packed.data = bytes.data();
      size_t code = 0;
      for (int64_t r = 0; r < rows; ++r) {
        uint8_t* b = kvfmt::latent_row(packed, r);
        if (dtype == KvDtype::FP8) {
          for (int64_t i = 0; i < C; ++i) {
            b[i] = uint8_t(code++ * 37 % 256);
            if ((b[i] & 0x7F) == 0x7F) b[i] -= 1;  // NaN codes below
          }
          for (int64_t g = 0; g < kvfmt::latent_scales(C); ++g) {
            const float scale = 0.01f + float(gen() % 100) / 1000.0f;
            std::memcpy(b + C + 4 * g, &scale, 4);
          }
          b += C + 4 * kvfmt::latent_scales(C);
        } else {
          for (int64_t i = 0; i < C; ++i) {
            const uint16_t h = f32_to_bf16(normal(gen, 1)[0]);
            std::memcpy(b + 2 * i, &h, 2);
          }
          b += 2 * C;
        }
        for (int64_t i = 0; i < dr; ++i) {
          const uint16_t h = f32_to_bf16(normal(gen, 1)[0]);
          std::memcpy(b + 2 * i, &h, 2);
        }
      }
      std::vector<float> kpe_unused, kvb = normal(gen, size_t(R * C), 0.05f), q = normal(gen, size_t(2 * H * (dn + dr)));
      MlaArgs a = paged_mla_args(q, kpe_unused, rows, table, bt, S, H, dn, dr, dv, 0.1f, MlaMode::Absorbed);
      a.k_pe = Tensor2D{nullptr, rows, dr, dr};
      a.latent = Tensor2D{nullptr, rows, C, C};
      a.latent_packed = packed;
      a.wkv_b = Tensor2D{kvb.data(), R, C, C};
      for (int64_t n : {1, 5, 37}) {
        std::vector<int32_t> keys(static_cast<size_t>(n));
        for (int64_t j = 0; j < n; ++j) keys[size_t(j)] = int32_t((j * 7 + 3) % S);
        std::vector<float> got(size_t(2 * H * dv), 1.0f), want(size_t(2 * H * dv), 2.0f);
        a.out = Tensor2D{want.data(), 2, H * dv, H * dv};
        mla_absorbed_reference(a, keys.data(), n, 1, 0, H, scratch);
        a.out = Tensor2D{got.data(), 2, H * dv, H * dv};
        mla_absorbed(a, keys.data(), n, 1, 0, H, scratch);
        INFO("H " << H << " C " << C << " dr " << dr << " dtype " << int(dtype) << " n " << n);
        CHECK(same_bits(got.data() + H * dv, want.data() + H * dv, size_t(H * dv)));
        CHECK(!std::isnan(want[size_t(H * dv)]));
      }
      if (dtype != KvDtype::FP8) continue;
      kvfmt::latent_row(packed, cache_row(table.data(), bt, 3))[C - 1] = 0xFF;  // key 3 is selected first
      const int32_t keys[2] = {3, 4};
      std::vector<float> got(size_t(2 * H * dv), 1.0f), want(size_t(2 * H * dv), 2.0f);
      a.out = Tensor2D{want.data(), 2, H * dv, H * dv};
      mla_absorbed_reference(a, keys, 2, 1, 0, H, scratch);
      a.out = Tensor2D{got.data(), 2, H * dv, H * dv};
      mla_absorbed(a, keys, 2, 1, 0, H, scratch);
      CHECK(std::isnan(want[size_t(H * dv)]));
      CHECK(same_bits(got.data() + H * dv, want.data() + H * dv, size_t(H * dv)));
    }
}

TEST_CASE("absorbed MLA through the backend agrees with the MHA form (dense and sparse, stored FP8 kv_b)",
          "[cpu][mla][kernels]") {
  std::mt19937 gen(5);
  const int64_t H = 4, dn = 64, dr = 32, dv = 64, C = 128, R = H * (dn + dv), S = 40, T = 3;
  std::vector<uint8_t> w8(size_t(R * C));
  for (auto& b : w8) do b = uint8_t(gen() & 0xff); while ((b & 0x7f) == 0x7f);
  std::vector<float> sc(size_t(((R + 127) / 128) * 1), 0.01f);
  const Weight fp8{"kv_b_proj.weight", DType::F8_E4M3, {R, C}, w8.data(), sc.data()};
  CpuBackend be({2});
  auto q = normal(gen, size_t(T * H * (dn + dr))), lat = normal(gen, size_t(S * C)), kpe = normal(gen, size_t(S * dr));
  const std::vector<int32_t> positions = {5, 20, 39};
  const std::vector<int32_t> indices = {0, 3, 5, -1, 7, 19, 20, 2, 39, 1, 11, 30};
  for (bool sparse : {false, true}) {
    std::vector<float> absorbed(size_t(T * H * dv)), mha(size_t(T * H * dv));
    MlaArgs a;
    a.q = Tensor2D{q.data(), T, H * (dn + dr), H * (dn + dr)};
    a.latent = Tensor2D{lat.data(), S, C, C};
    a.k_pe = Tensor2D{kpe.data(), S, dr, dr};
    a.n_keys = S;
    a.wkv_b = Tensor2D{nullptr, R, C, C};
    a.wkv_b_stored = &fp8;
    a.n_heads = H;
    a.nope_dim = dn;
    a.rope_dim = dr;
    a.v_dim = dv;
    a.softmax_scale = 0.05f;
    a.positions = positions.data();
    a.indices = sparse ? indices.data() : nullptr;
    a.n_indices = sparse ? 4 : 0;
    a.mode = MlaMode::Absorbed;
    a.out = Tensor2D{absorbed.data(), T, H * dv, H * dv};
    be.mla_attention(a);
    a.mode = MlaMode::Mha;
    a.out = Tensor2D{mha.data(), T, H * dv, H * dv};
    be.mla_attention(a);
    double worst = 0, scale = 0;
    for (size_t i = 0; i < mha.size(); ++i) {
      worst = std::max(worst, std::abs(double(absorbed[i]) - mha[i]));
      scale = std::max(scale, std::abs(double(mha[i])));
    }
    INFO("sparse " << sparse << " worst " << worst << " of " << scale);
    CHECK(worst <= 1e-5 * scale);
  }
}

TEST_CASE("a decode query's latent rows gathered by several threads give one thread's bits", "[cpu][mla][kernels]") {
  // One query (a decode step) over a packed FP8 latent cache: with several threads its selected rows are decoded
  // once, split over the threads, when they are many (here 200 or 300 rows of 288 values), and by each thread for its
  // own head blocks when few (12 rows); every form gives the single-threaded op's bits, which are the reference's.
  INFO("kernel family " << int(cpu_kernel_isa()));
  std::mt19937 gen(23);
  const int64_t H = 16, dn = 32, dr = 32, dv = 32, C = 256, R = H * (dn + dv), S = 300, bt = 64;
  const auto table = shuffled_blocks(gen, S, bt);
  const int64_t rows = int64_t(table.size()) * bt;
  PackedKv packed;
  packed.dtype = KvDtype::FP8;
  packed.dim = C;
  packed.rope_dim = dr;
  std::vector<uint8_t> bytes(size_t(rows * kvfmt::latent_row_bytes(KvDtype::FP8, C, dr)));
  packed.data = bytes.data();
  for (int64_t r = 0; r < rows; ++r) {
    uint8_t* b = kvfmt::latent_row(packed, r);
    for (int64_t i = 0; i < C; ++i) do b[i] = uint8_t(gen()); while ((b[i] & 0x7F) == 0x7F);
    for (int64_t g = 0; g < kvfmt::latent_scales(C); ++g) {
      const float scale = 0.001f + float(gen() % 100) / 10000.0f;
      std::memcpy(b + C + 4 * g, &scale, 4);
    }
    for (int64_t i = 0; i < dr; ++i) {
      const uint16_t h = f32_to_bf16(normal(gen, 1)[0]);
      std::memcpy(b + C + 4 * kvfmt::latent_scales(C) + 2 * i, &h, 2);
    }
  }
  std::vector<float> kpe_unused, kvb = normal(gen, size_t(R * C), 0.05f), q = normal(gen, size_t(2 * H * (dn + dr)));
  MlaArgs a = paged_mla_args(q, kpe_unused, rows, table, bt, S, H, dn, dr, dv, 0.1f, MlaMode::Absorbed);
  a.q.rows = 1;
  a.k_pe = Tensor2D{nullptr, rows, dr, dr};
  a.latent = Tensor2D{nullptr, rows, C, C};
  a.latent_packed = packed;
  a.wkv_b = Tensor2D{kvb.data(), R, C, C};
  const int32_t position = int32_t(S - 1);
  a.positions = &position;
  std::vector<int32_t> indices(static_cast<size_t>(S));
  for (int64_t i = 0; i < S; ++i) indices[size_t(i)] = int32_t((i * 7 + 3) % S);
  CpuBackend one({1}), three({3});
  for (const int64_t n : {int64_t(0), int64_t(12), int64_t(200)}) {  // 0: dense, every key
    a.indices = n ? indices.data() : nullptr;
    a.n_indices = n;
    std::vector<float> single(size_t(H * dv), 1.0f), split(size_t(H * dv), 2.0f);
    a.out = Tensor2D{single.data(), 1, H * dv, H * dv};
    one.mla_attention(a);
    a.out = Tensor2D{split.data(), 1, H * dv, H * dv};
    three.mla_attention(a);
    INFO("keys " << (n ? n : S));
    CHECK(same_bits(split.data(), single.data(), single.size()));
    CHECK(!std::isnan(single[0]));
  }
}

TEST_CASE("MHA-form MLA: vector kernel equals the reference bit for bit", "[cpu][mla][kernels]") {
  INFO("kernel family " << int(cpu_kernel_isa()));
  ScratchArena arena(1);
  const WorkerScratch scratch(arena, 0);
  std::mt19937 gen(13);
  struct Dims {
    int64_t H, dn, dr, dv;
  };
  for (const Dims dims : {Dims{4, 64, 32, 64}, Dims{3, 16, 16, 48}, Dims{2, 128, 64, 128}}) {
    const int64_t H = dims.H, dn = dims.dn, dr = dims.dr, dv = dims.dv, S = 45, bt = 16;
    const auto table = shuffled_blocks(gen, S, bt);
    const int64_t rows = int64_t(table.size()) * bt;
    auto q = normal(gen, size_t(2 * H * (dn + dr))), kv = normal(gen, size_t(S * H * (dn + dv)));
    auto kpe = normal(gen, size_t(rows * dr));
    for (int64_t n : {1, 3, 4, 5, 37}) {
      std::vector<int32_t> keys(static_cast<size_t>(n));
      for (int64_t j = 0; j < n; ++j) keys[size_t(j)] = int32_t((j * 11 + 2) % S);
      MlaArgs a = paged_mla_args(q, kpe, rows, table, bt, S, H, dn, dr, dv, 0.07f, MlaMode::Mha);
      std::vector<float> got(size_t(2 * H * dv), 1.0f), want(size_t(2 * H * dv), 2.0f);
      for (int64_t h = 0; h < H; ++h) {
        a.out = Tensor2D{want.data(), 2, H * dv, H * dv};
        mla_mha_reference(a, kv.data(), keys.data(), n, 1, h, scratch);
        a.out = Tensor2D{got.data(), 2, H * dv, H * dv};
        mla_mha(a, kv.data(), keys.data(), n, 1, h, scratch);
      }
      INFO("H " << H << " dn " << dn << " dv " << dv << " n " << n);
      REQUIRE(same_bits(got.data() + H * dv, want.data() + H * dv, size_t(H * dv)));
      CHECK(got[0] == 1.0f);
    }
  }
}
