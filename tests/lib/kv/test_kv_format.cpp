// The packed KV cache formats byte for byte: the CPU backend's kv_pack and kv_format.hpp's decoding against
// tests/golden/kv_layout/kv_layout.json, which tests/reference/make_kv_layout_golden.py writes from FlashMLA's
// documented formulas (the 656-byte latent row at DeepSeek-V3.2's dimensions) and the 132-byte indexer key.
#include <catch2/catch.hpp>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "backend/backend.hpp"
#include "backend/kv_format.hpp"
#include "kv/kv_cache.hpp"

using namespace dsinfer;
using json = nlohmann::json;
namespace fs = std::filesystem;

namespace {

std::vector<uint8_t> unhex(const std::string& s) {
  std::vector<uint8_t> out(s.size() / 2);
  for (size_t i = 0; i < out.size(); ++i) out[i] = uint8_t(std::stoi(s.substr(2 * i, 2), nullptr, 16));
  return out;
}

std::vector<float> unhex_f32(const std::string& s) {
  const auto b = unhex(s);
  std::vector<float> f(b.size() / 4);
  std::memcpy(f.data(), b.data(), b.size());
  return f;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * 4) == 0;
}

json golden() {
  std::ifstream f(fs::path(DSINFER_SOURCE_DIR) / "tests" / "golden" / "kv_layout" / "kv_layout.json");
  REQUIRE(f.good());
  return json::parse(f);
}

}  // namespace

TEST_CASE("packed KV rows match FlashMLA's documented layout byte for byte", "[kv][format]") {
  auto be = create_backend("cpu", BackendOptions{1});
  const json g = golden();
  int latent_cases = 0, index_cases = 0;
  for (const json& c : g.at("cases")) {
    INFO(c.at("name").get<std::string>());
    const int64_t n = c.at("rows"), dim = c.at("dim");
    const KvDtype dtype = c.at("dtype") == "fp8" ? KvDtype::FP8 : KvDtype::BF16;
    const std::vector<uint8_t> want = unhex(c.at("packed"));
    std::vector<uint8_t> got(want.size(), 0xAB);
    PackedKv p;
    p.dtype = dtype;
    p.data = got.data();
    p.dim = dim;
    KvPackArgs a;
    a.dst = p;
    a.ue8m0 = true;
    std::vector<float> src, extra;
    if (c.at("kind") == "latent") {
      const int64_t R = c.at("rope_dim");
      p.rope_dim = a.dst.rope_dim = R;
      CHECK(kvfmt::latent_row_bytes(dtype, dim, R) == c.at("row_bytes").get<int64_t>());
      if (dtype == KvDtype::FP8 && dim == 512 && R == 64) CHECK(kvfmt::latent_row_bytes(dtype, dim, R) == 656);
      src = unhex_f32(c.at("latent_f32"));
      extra = unhex_f32(c.at("rope_f32"));
      a.latent = true;
      a.src = Tensor2D{src.data(), n, dim, dim};
      a.extra = Tensor2D{extra.data(), n, R, R};
      be->kv_pack(a);
      CHECK(got == want);
      // Decoding gives FlashMLA's dequantized values exactly.
      std::vector<float> lat(size_t(n * dim)), rope(size_t(n * R));
      for (int64_t r = 0; r < n; ++r) kvfmt::decode_latent_row(p, r, lat.data() + r * dim, rope.data() + r * R);
      CHECK(same_bits(lat, unhex_f32(c.at("decoded_latent_f32"))));
      CHECK(same_bits(rope, unhex_f32(c.at("decoded_rope_f32"))));
      ++latent_cases;
    } else {
      p.page_tokens = a.dst.page_tokens = c.at("page_tokens");
      CHECK(kvfmt::index_key_bytes(dtype, dim) * p.page_tokens == int64_t(want.size()));
      if (dim == 128) CHECK(kvfmt::index_key_bytes(dtype, dim) == 132);
      src = unhex_f32(c.at("key_f32"));
      a.latent = false;
      a.key_is_e4m3 = false;  // quantized by kv_pack, one group per key
      a.src = Tensor2D{src.data(), n, dim, dim};
      be->kv_pack(a);
      CHECK(got == want);
      std::vector<float> key(size_t(n * dim)), scale(static_cast<size_t>(n));
      for (int64_t r = 0; r < n; ++r) scale[size_t(r)] = kvfmt::decode_index_key(p, r, key.data() + r * dim);
      CHECK(same_bits(key, unhex_f32(c.at("decoded_key_f32"))));
      CHECK(same_bits(scale, unhex_f32(c.at("decoded_scale_f32"))));
      ++index_cases;
    }
  }
  CHECK(latent_cases == 4);
  CHECK(index_cases == 2);
}

TEST_CASE("an FP8 latent row decodes to what fp8_quantize's quantize-dequantize keeps", "[kv][format]") {
  // The property the FP8 cache's bitwise equality with the f32 cache rests on, over random rows of every magnitude.
  auto be = create_backend("cpu", BackendOptions{1});
  const int64_t C = 192, R = 16, n = 64;  // a partial last group too
  std::vector<float> x(size_t(n * C)), rope(size_t(n * R), 0.5f);
  uint32_t state = 12345;
  for (size_t i = 0; i < x.size(); ++i) {
    state = state * 1664525u + 1013904223u;
    const float u = float(int32_t(state >> 8) - (1 << 23)) / float(1 << 23);
    x[i] = u * std::ldexp(1.0f, int(i / size_t(C)) % 40 - 20);  // rows from 2^-20 to 2^19
  }
  for (bool ue8m0 : {true, false}) {
    std::vector<uint8_t> bytes(size_t(n * kvfmt::latent_row_bytes(KvDtype::FP8, C, R)));
    KvPackArgs a;
    a.dst = PackedKv{KvDtype::FP8, bytes.data(), C, R, 0};
    a.src = Tensor2D{x.data(), n, C, C};
    a.extra = Tensor2D{rope.data(), n, R, R};
    a.ue8m0 = ue8m0;
    be->kv_pack(a);
    std::vector<float> qd(x.size()), decoded(x.size()), r(static_cast<size_t>(R));
    be->fp8_quantize(Tensor2D{x.data(), n, C, C}, 128, ue8m0, true, Tensor2D{qd.data(), n, C, C}, Tensor2D{});
    for (int64_t i = 0; i < n; ++i) kvfmt::decode_latent_row(a.dst, i, decoded.data() + i * C, r.data());
    INFO("ue8m0 " << ue8m0);
    CHECK(same_bits(decoded, qd));
  }
}

TEST_CASE("bytes per token per layer: 788 in fp8 at DeepSeek-V3.2's dimensions", "[kv][format]") {
  ModelConfig v32;
  v32.variant = ModelVariant::V32;
  v32.kv_lora_rank = 512;
  v32.qk_rope_head_dim = 64;
  v32.index_head_dim = 128;
  CHECK(KvBlockPool::bytes_per_token_layer(v32, KvDtype::FP8) == 656 + 132);
  CHECK(KvBlockPool::bytes_per_token_layer(v32, KvDtype::BF16) == 1152 + 260);
  CHECK(KvBlockPool::bytes_per_token_layer(v32, KvDtype::F32) == 2304 + 516);
  ModelConfig v3 = v32;  // V3: no indexer key
  v3.variant = ModelVariant::V3;
  CHECK(KvBlockPool::bytes_per_token_layer(v3, KvDtype::FP8) == 656);
}
