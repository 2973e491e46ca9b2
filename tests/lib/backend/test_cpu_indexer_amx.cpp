// The Amx family's indexer kernel (lib/backend/cpu/indexer_amx.cpp): its scores against exact sums, and what it keeps
// bit for bit (indexer_amx.hpp): the same score for a (query, key) whatever the batch, the split of the keys and the
// cache's dtype; the reference's score for keys and queries that bf16 cannot hold. Skips (exit 77, a CTest skip)
// where the CPU or the kernel does not run AMX tiles.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "backend/cpu/attention_kernels.hpp"
#include "catch_runner.hpp"
#include "backend/cpu/indexer_amx.hpp"
#include "backend/cpu/simd.hpp"
#include "backend/kv_format.hpp"
#include "util/dtype.hpp"

using namespace dsinfer;

namespace {

bool same_bits(const float* a, const float* b, size_t n) { return std::memcmp(a, b, n * sizeof(float)) == 0; }

// A random e4m3 code other than the NaN codes.
uint8_t e4m3_code(std::mt19937& gen) {
  uint8_t b;
  do b = uint8_t(gen()); while ((b & 0x7F) == 0x7F);
  return b;
}

// An index-key cache of `rows` rows in pages of P, in `dtype`, holding `values` (e4m3 values for FP8, given as their
// codes in `codes`) and `scales`; plus the same as an F32 cache.
struct KeyCache {
  std::vector<uint8_t> bytes;
  std::vector<float> values, scales;
  PackedKv packed;
};

KeyCache make_cache(std::mt19937& gen, KvDtype dtype, int64_t rows, int64_t P, int64_t D) {
  KeyCache c;
  c.bytes.assign(size_t((rows + P - 1) / P * P * kvfmt::index_key_bytes(dtype, D)), 0);
  c.packed.dtype = dtype;
  c.packed.data = c.bytes.data();
  c.packed.dim = D;
  c.packed.page_tokens = P;
  c.values.resize(size_t(rows * D));
  c.scales.resize(size_t(rows));
  std::normal_distribution<float> normal;
  for (int64_t r = 0; r < rows; ++r) {
    uint8_t* v = kvfmt::index_key_values(c.packed, r);
    for (int64_t d = 0; d < D; ++d) {
      if (dtype == KvDtype::FP8) {
        v[d] = e4m3_code(gen);
        c.values[size_t(r * D + d)] = e4m3_table()[v[d]];
      } else {
        const uint16_t h = f32_to_bf16(normal(gen));
        std::memcpy(v + 2 * d, &h, 2);
        c.values[size_t(r * D + d)] = bf16_to_f32(h);
      }
    }
    c.scales[size_t(r)] = 0.25f + float(gen() % 1000) / 500.0f;
    std::memcpy(kvfmt::index_key_scale(c.packed, r), &c.scales[size_t(r)], 4);
  }
  return c;
}

// Indexer arguments over a cache of S keys in shuffled blocks of bt, as packed bytes or as an F32 cache.
IndexerTopkArgs args_for(KeyCache& c, bool packed, int64_t S, int64_t H, int64_t D, const std::vector<int32_t>& table,
                         int64_t bt) {
  IndexerTopkArgs a;
  if (packed) {
    a.k_packed = c.packed;
  } else {
    a.k = Tensor2D{c.values.data(), int64_t(c.scales.size()), D, D};
    a.k_scale = Tensor2D{c.scales.data(), int64_t(c.scales.size()), 1, 1};
  }
  a.n_keys = S;
  a.block_table = table.data();
  a.block_tokens = bt;
  a.n_heads = H;
  a.head_dim = D;
  return a;
}

std::vector<int32_t> shuffled_table(std::mt19937& gen, int64_t blocks) {
  std::vector<int32_t> t(static_cast<size_t>(blocks), 0);
  for (size_t i = 0; i < t.size(); ++i) t[i] = int32_t(i);
  std::shuffle(t.begin(), t.end(), gen);
  return t;
}

std::vector<float> e4m3_query(std::mt19937& gen, int64_t n) {
  std::vector<float> q(static_cast<size_t>(n));
  for (auto& x : q) x = e4m3_table()[e4m3_code(gen)];
  return q;
}

}  // namespace

TEST_CASE("amx indexer: scores within a few ulps of the exact sums, not the fp32 chain's bits", "[cpu][indexer][amx]") {
  ScratchArena arena(1);
  const WorkerScratch scratch(arena, 0);
  std::mt19937 gen(21);
  int64_t differing = 0, scored = 0;
  for (auto [H, D] : {std::pair<int64_t, int64_t>{16, 64}, {64, 128}, {8, 32}, {20, 96}, {48, 64}}) {
    const int64_t S = 83, bt = 16;
    const auto table = shuffled_table(gen, (S + bt - 1) / bt);
    KeyCache cache = make_cache(gen, KvDtype::FP8, int64_t(table.size()) * bt, bt, D);
    const IndexerTopkArgs a = args_for(cache, true, S, H, D, table, bt);
    const auto q = e4m3_query(gen, H * D);
    std::vector<float> wt(static_cast<size_t>(H));
    std::normal_distribution<float> normal;
    for (auto& w : wt) w = normal(gen);
    std::vector<float> storage(static_cast<size_t>(indexer_query_floats(H, D))), got(static_cast<size_t>(S)),
        ref(static_cast<size_t>(S));
    IndexerQuery prepared;
    indexer_prepare_query(q.data(), wt.data(), H, D, storage.data(), prepared);
    INFO("H " << H << " D " << D);
    REQUIRE(prepared.qB != nullptr);
    indexer_scores(prepared, a, 0, S, got.data(), scratch);
    indexer_scores_reference(q.data(), wt.data(), a, 0, S, ref.data(), scratch);
    for (int64_t s = 0; s < S; ++s) {
      const int64_t row = cache_row(table.data(), bt, s);
      double exact = 0, magnitude = 0;  // products of e4m3 values summed in double: exact at these sizes
      for (int64_t h = 0; h < H; ++h) {
        double dot = 0, abs_dot = 0;
        for (int64_t d = 0; d < D; ++d) {
          const double p = double(q[size_t(h * D + d)]) * double(cache.values[size_t(row * D + d)]);
          dot += p;
          abs_dot += std::fabs(p);
        }
        exact += double(wt[size_t(h)]) * std::max(dot, 0.0);
        magnitude += std::fabs(double(wt[size_t(h)])) * abs_dot;
      }
      exact *= cache.scales[size_t(row)];
      magnitude *= cache.scales[size_t(row)];
      INFO("key " << s);
      CHECK(std::fabs(double(got[size_t(s)]) - exact) <= 1e-6 * magnitude);
      differing += std::memcmp(&got[size_t(s)], &ref[size_t(s)], 4) != 0;
      ++scored;
    }
  }
  // The tiles ran (the other families give the reference's bits): their sums round their own way.
  CHECK(differing > 0);
  INFO(differing << " of " << scored << " scores differ from the fp32 chain's");
}

TEST_CASE("amx indexer: the same bits from any batch, split of the keys and cache dtype", "[cpu][indexer][amx]") {
  ScratchArena arena(1);
  const WorkerScratch scratch(arena, 0);
  std::mt19937 gen(5);
  const int64_t H = 16, D = 64, S = 150, bt = 32;
  const auto table = shuffled_table(gen, (S + bt - 1) / bt);
  std::normal_distribution<float> normal;
  for (KvDtype dtype : {KvDtype::FP8, KvDtype::BF16}) {
    KeyCache cache = make_cache(gen, dtype, int64_t(table.size()) * bt, bt, D);
    const IndexerTopkArgs packed = args_for(cache, true, S, H, D, table, bt);
    const IndexerTopkArgs f32 = args_for(cache, false, S, H, D, table, bt);
    constexpr int kQueries = 3;
    std::vector<float> q[kQueries], wt[kQueries], storage[kQueries], alone[kQueries], together[kQueries];
    IndexerQuery prepared[kQueries];
    const IndexerQuery* qs[kQueries];
    float* rows[kQueries];
    const int64_t ends[kQueries] = {S, 77, 5};  // each query sees the keys up to its own position
    for (int i = 0; i < kQueries; ++i) {
      q[i] = e4m3_query(gen, H * D);
      wt[i].resize(size_t(H));
      for (auto& w : wt[i]) w = normal(gen);
      storage[i].resize(size_t(indexer_query_floats(H, D)));
      indexer_prepare_query(q[i].data(), wt[i].data(), H, D, storage[i].data(), prepared[i]);
      REQUIRE(prepared[i].qB != nullptr);
      alone[i].assign(size_t(S), 0.0f);
      together[i].assign(size_t(S), 0.0f);
      indexer_scores(prepared[i], packed, 0, ends[i], alone[i].data(), scratch);
      qs[i] = &prepared[i];
      rows[i] = together[i].data();
    }
    INFO("dtype " << int(dtype));
    indexer_scores_many(qs, kQueries, packed, 0, ends, rows, scratch);
    for (int i = 0; i < kQueries; ++i) CHECK(same_bits(alone[i].data(), together[i].data(), size_t(ends[i])));
    // Keys split at a point inside a 16-key tile and inside a block.
    std::vector<float> split(size_t(S), 0.0f), from_f32(size_t(S), 0.0f);
    indexer_scores(prepared[0], packed, 0, 37, split.data(), scratch);
    indexer_scores(prepared[0], packed, 37, S, split.data(), scratch);
    CHECK(same_bits(split.data(), alone[0].data(), size_t(S)));
    // A sub-range writes only its keys.
    std::vector<float> part(size_t(S), 9.0f);
    indexer_scores(prepared[0], packed, 10, 13, part.data(), scratch);
    CHECK(part[9] == 9.0f);
    CHECK(part[13] == 9.0f);
    CHECK(same_bits(part.data() + 10, alone[0].data() + 10, 3));
    // An F32 cache holding the same values and scales.
    indexer_scores(prepared[0], f32, 0, S, from_f32.data(), scratch);
    CHECK(same_bits(from_f32.data(), alone[0].data(), size_t(S)));
  }
}

TEST_CASE("amx indexer: NaN codes and queries that bf16 cannot hold take the reference", "[cpu][indexer][amx]") {
  ScratchArena arena(1);
  const WorkerScratch scratch(arena, 0);
  std::mt19937 gen(9);
  const int64_t H = 16, D = 64, S = 40, bt = 16;
  const auto table = shuffled_table(gen, (S + bt - 1) / bt);
  KeyCache cache = make_cache(gen, KvDtype::FP8, int64_t(table.size()) * bt, bt, D);
  const IndexerTopkArgs a = args_for(cache, true, S, H, D, table, bt);
  std::normal_distribution<float> normal;
  std::vector<float> wt(static_cast<size_t>(H));
  for (auto& w : wt) w = normal(gen);
  std::vector<float> storage(static_cast<size_t>(indexer_query_floats(H, D))), got(static_cast<size_t>(S)),
        ref(static_cast<size_t>(S)), clean(static_cast<size_t>(S));

  auto q = e4m3_query(gen, H * D);
  IndexerQuery prepared;
  indexer_prepare_query(q.data(), wt.data(), H, D, storage.data(), prepared);
  REQUIRE(prepared.qB != nullptr);
  indexer_scores(prepared, a, 0, S, clean.data(), scratch);
  // NaN codes in key 5 (the first block's run) and key 21 (5 keys into the second block's run, in the same batch of
  // keys): those two get the reference's scores, every other key keeps the tiles' bits.
  for (const int64_t key : {5, 21}) kvfmt::index_key_values(cache.packed, cache_row(table.data(), bt, key))[3] = 0xFF;
  indexer_scores(prepared, a, 0, S, got.data(), scratch);
  indexer_scores_reference(q.data(), wt.data(), a, 0, S, ref.data(), scratch);
  for (const int64_t key : {5, 21}) {
    CHECK(std::isnan(ref[size_t(key)]));
    CHECK(same_bits(&got[size_t(key)], &ref[size_t(key)], 1));
  }
  for (int64_t s = 0; s < S; ++s)
    if (s != 5 && s != 21) CHECK(same_bits(&got[size_t(s)], &clean[size_t(s)], 1));

  // An F32 cache key that bf16 cannot hold: the reference's score for it, the tiles' for the others.
  const IndexerTopkArgs f32 = args_for(cache, false, S, H, D, table, bt);
  cache.values[size_t(cache_row(table.data(), bt, 9) * D + 7)] = 1.0f + 1.0f / 1024.0f / 1024.0f;
  std::vector<float> from_f32(static_cast<size_t>(S));
  indexer_scores(prepared, f32, 0, S, from_f32.data(), scratch);
  indexer_scores_reference(q.data(), wt.data(), f32, 0, S, ref.data(), scratch);
  CHECK(same_bits(&from_f32[9], &ref[9], 1));
  CHECK(same_bits(&from_f32[10], &got[10], 1));

  // A query of values bf16 cannot hold (reference precision) gets no tiles: the other families' bits.
  for (auto& x : q) x = normal(gen);
  indexer_prepare_query(q.data(), wt.data(), H, D, storage.data(), prepared);
  CHECK(prepared.qB == nullptr);
  indexer_scores(prepared, a, 0, S, got.data(), scratch);
  indexer_scores_reference(q.data(), wt.data(), a, 0, S, ref.data(), scratch);
  CHECK(same_bits(got.data(), ref.data(), size_t(S)));
}

TEST_CASE("amx indexer: the family is asked for by name and runs the AVX-512 kernels elsewhere", "[cpu][amx]") {
  CHECK(cpu_kernel_isa() == CpuIsa::Amx);
  CHECK(cpu_vector_isa() == CpuIsa::Avx512);
  CHECK(std::string(cpu_isa_name(CpuIsa::Amx)) == "amx");
  CHECK(cpu_best_isa() == CpuIsa::Avx512);  // "auto" never picks it
}

int main(int argc, char** argv) {
  if (!(cpu_amx_available() && fix_cpu_kernel_isa("amx") == CpuIsa::Amx)) {
    std::printf("skipped: this CPU or kernel does not run AMX tiles (AMX-TILE, AMX-BF16, AVX512-BF16, VBMI)\n");
    return 77;
  }
  return dsinfer::test::run_catch(argc, argv);
}
