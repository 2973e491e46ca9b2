// Weight handles (backend interface v2, issue 19): a backend finds what it prepared for a weight through
// Weight::prepared, never by the weight's address. The prepared copy is what the ops read; a Weight copied and
// re-pointed at other bytes, a weight whose memory was freed and reused, and a handle another backend issued all
// read the weight's own bytes.
#include <catch2/catch.hpp>

#include <cstring>
#include <random>
#include <vector>

#include "backend/cpu/cpu_backend.hpp"
#include "util/dtype.hpp"

using namespace dsinfer;

namespace {

constexpr int64_t N = 256, K = 384, T = 3;

struct Fp8Bytes {
  std::vector<uint8_t> w8;
  std::vector<float> scale;
};

Fp8Bytes random_fp8(uint32_t seed) {
  std::mt19937 gen(seed);
  Fp8Bytes b;
  b.w8.resize(size_t(N * K));
  for (auto& x : b.w8) {
    do x = uint8_t(gen() & 0xff); while ((x & 0x7f) == 0x7f);  // no NaN
  }
  b.scale.resize(size_t(((N + 127) / 128) * ((K + 127) / 128)));
  for (auto& s : b.scale) s = 1e-3f * float(1 + gen() % 16);
  return b;
}

Weight weight_of(const Fp8Bytes& b) {
  return Weight{"model.layers.0.mlp.up_proj.weight", DType::F8_E4M3, {N, K}, b.w8.data(), b.scale.data()};
}

// x · wᵀ on `be` with FP8 activations, as the model runs a linear.
std::vector<float> apply(CpuBackend& be, const Weight& w) {
  Matrix x = be.matrix(T, K), out = be.matrix(T, N);
  for (int64_t i = 0; i < T * K; ++i) x.view.data[i] = float((i * 37) % 23) * 0.125f - 1.0f;
  be.linear(x.view, w, out.view, LinearQuant{true, true});
  return std::vector<float>(out.view.data, out.view.data + T * N);
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

}  // namespace

TEST_CASE("weight handles: the prepared copy is found by handle, and only for the bytes it was made from") {
  CpuBackend be({2}), other({2});
  const Fp8Bytes a = random_fp8(1), b = random_fp8(2);
  const Weight wa = weight_of(a), wb = weight_of(b);
  const std::vector<float> want_a = apply(other, wa), want_b = apply(other, wb);  // unprepared: read from the bytes
  REQUIRE_FALSE(same_bits(want_a, want_b));

  Weight prepared = weight_of(a);
  CHECK(prepared.prepared.backend_id == 0);
  be.prepare_weight(prepared, Backend::WeightUse::Linear);
  CHECK(prepared.prepared.backend_id == be.id());
  CHECK(prepared.prepared.index == 0);
  CHECK(same_bits(apply(be, prepared), want_a));  // the packed copy gives the same bits as the bytes
  be.prepare_weight(prepared, Backend::WeightUse::Linear);  // preparing again reuses the entry
  CHECK(prepared.prepared.index == 0);

  SECTION("the ops read the prepared copy") {
    // Overwriting the bytes behind a prepared weight (never done to a checkpoint) shows which copy the op reads.
    Fp8Bytes scratch = a;
    Weight w = weight_of(scratch);
    be.prepare_weight(w, Backend::WeightUse::Linear);
    scratch.w8 = b.w8;  // same size: the vector keeps its storage, so w.data still points at it (the packed copy
                        // holds the e4m3 bytes; the block scales are read where they are)
    REQUIRE(w.data == scratch.w8.data());
    CHECK(same_bits(apply(be, w), want_a));
  }
  SECTION("a copy re-pointed at other bytes carries a stale handle, which is ignored") {
    Weight copy = prepared;
    copy.data = b.w8.data();
    copy.scale_inv = b.scale.data();
    CHECK(same_bits(apply(be, copy), want_b));
  }
  SECTION("a weight whose memory was freed and reused at the same address is not served the old copy") {
    // What identity by address got wrong: the same bytes' address, another weight (no handle of its own).
    std::vector<uint8_t> bytes = a.w8;
    std::vector<float> scales = a.scale;
    Weight w{"w", DType::F8_E4M3, {N, K}, bytes.data(), scales.data()};
    be.prepare_weight(w, Backend::WeightUse::Linear);
    std::memcpy(bytes.data(), b.w8.data(), bytes.size());  // "freed and reused": new contents, same address
    std::memcpy(scales.data(), b.scale.data(), scales.size() * sizeof(float));
    const Weight fresh{"w2", DType::F8_E4M3, {N, K}, bytes.data(), scales.data()};
    CHECK(same_bits(apply(be, fresh), want_b));
  }
  SECTION("another backend's handle is no handle") {
    CHECK(same_bits(apply(other, prepared), want_a));
    Fp8Bytes scratch = a;
    Weight w = weight_of(scratch);
    be.prepare_weight(w, Backend::WeightUse::Linear);
    scratch.w8 = b.w8;
    scratch.scale = b.scale;
    CHECK(same_bits(apply(other, w), want_b));  // `other` reads the bytes, not be's copy
  }
  SECTION("a handle whose shape no longer matches is ignored") {
    Weight rows = prepared;
    rows.shape = {128, K};  // the first 128 rows: same start address, another shape
    Matrix x = be.matrix(T, K), out = be.matrix(T, 128), ref = other.matrix(T, 128);
    for (int64_t i = 0; i < T * K; ++i) x.view.data[i] = float(i % 7) - 3.0f;
    Matrix xo = other.matrix(T, K);
    std::memcpy(xo.view.data, x.view.data, size_t(T * K) * sizeof(float));
    be.linear(x.view, rows, out.view, LinearQuant{true, true});
    other.linear(xo.view, rows, ref.view, LinearQuant{true, true});
    CHECK(std::memcmp(out.view.data, ref.view.data, size_t(T * 128) * sizeof(float)) == 0);
  }
}

TEST_CASE("backend ids are unique and features are asked for") {
  CpuBackend a({1}), b({1});
  CHECK(a.id() != b.id());
  CHECK(a.id() != 0);
  CHECK(a.interface_version() == kBackendInterfaceVersion);
  for (BackendFeature f : {BackendFeature::KvCacheBf16, BackendFeature::KvCacheFp8, BackendFeature::MlaStoredKvB,
                           BackendFeature::MoeFusedSharedExpert, BackendFeature::MoeSlots})
    CHECK(a.supports(f));
  CHECK(a.supports_kv_dtype(KvDtype::F32));
  CHECK(a.supports_kv_dtype(KvDtype::BF16));
}
