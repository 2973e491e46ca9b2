// The SIMD GEMM kernels (lib/backend/cpu/fp8_gemm.cpp, dense_gemm.cpp) against the scalar definitions of their sum
// orders (fp8_gemm_reference, dense_gemm_reference). FP8: bitwise equal over shapes that exercise every kernel path (decode tiles of 1/2 rows and
// 1/2/4 panels, the converted-panel prefill tiles of 1..6 rows), partial K blocks, partial panels, partial
// 128-row scale blocks, every e4m3 byte but NaN (subnormals included) and thread splits.
#include <catch2/catch.hpp>

#include <cstring>
#include <random>
#include <vector>

#include "backend/cpu/cpu_backend.hpp"
#include "backend/cpu/dense_gemm.hpp"
#include "backend/cpu/fp8_gemm.hpp"
#include "util/dtype.hpp"
#include "dsinfer/error.hpp"
#include "util/thread_pool.hpp"

using namespace dsinfer;

namespace {

struct Fp8Case {
  std::vector<uint8_t> w8;
  std::vector<float> scale;
  Weight w;
};

// Each of T tokens routed to two distinct random experts of E, with weights w0 and w1 (top_k = 2).
std::pair<std::vector<int32_t>, std::vector<float>> route_to_two(std::mt19937& gen, int64_t T, int64_t E, float w0,
                                                                 float w1) {
  std::vector<int32_t> ids(size_t(T * 2));
  std::vector<float> wts(size_t(T * 2));
  for (int64_t t = 0; t < T; ++t) {
    ids[size_t(t * 2)] = int32_t(gen() % E);
    ids[size_t(t * 2 + 1)] = int32_t((ids[size_t(t * 2)] + 1 + gen() % (E - 1)) % E);
    wts[size_t(t * 2)] = w0;
    wts[size_t(t * 2 + 1)] = w1;
  }
  return {ids, wts};
}

Fp8Case random_weight(std::mt19937& gen, int64_t N, int64_t K) {
  Fp8Case c;
  c.w8.resize(size_t(N * K));
  for (auto& b : c.w8) {
    do b = uint8_t(gen() & 0xff); while ((b & 0x7f) == 0x7f);
  }
  const int64_t GN = (N + 127) / 128, GK = (K + 127) / 128;
  std::uniform_real_distribution<float> u(1e-4f, 3e-2f);
  c.scale.resize(size_t(GN * GK));
  for (auto& s : c.scale) s = u(gen);
  c.w = Weight{"model.layers.0.mlp.up_proj.weight", DType::F8_E4M3, {N, K}, c.w8.data(), c.scale.data()};
  return c;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

}  // namespace

TEST_CASE("FP8 GEMM kernels equal the scalar sum order bit for bit", "[cpu][fp8][kernels]") {
  INFO("best kernel on this machine: " << fp8_gemm_isa());
  std::mt19937 gen(7);
  CpuBackend be({1});
  for (int threads : {1, 3}) {
    ThreadPool pool(threads);
    for (int64_t N : {16, 70, 112, 288}) {  // 1, 4+1, 4+3 and 4·4+2 panels of 16 rows
      for (int64_t K : {128, 300, 1024}) {
        Fp8Case c = random_weight(gen, N, K);
        const PackedFp8Weight packed = pack_fp8_weight(c.w);
        const int64_t G = (K + 127) / 128;
        for (int64_t T : {1, 2, 3, 5, 7, 8, 13, 70, 111}) {
          // Activations quantized the way linear() does, with a stride wider than K.
          const int64_t ldx = K + 5;
          std::vector<float> x(size_t(T * ldx)), xq(size_t(T * ldx)), xs(size_t(T * G));
          std::normal_distribution<float> nd(0.0f, 2.0f);
          for (auto& v : x) v = nd(gen);
          be.fp8_quantize(Tensor2D{x.data(), T, K, ldx}, 128, true, false, Tensor2D{xq.data(), T, K, ldx},
                          Tensor2D{xs.data(), T, G, G});
          const int64_t ldy = N + 3;
          std::vector<float> ref(size_t(T * ldy), -7.0f), best(ref), avx2(ref), scalar(ref);
          fp8_gemm_reference(xq.data(), ldx, xs.data(), G, T, c.w, ref.data(), ldy);
          fp8_gemm(xq.data(), ldx, xs.data(), G, T, packed, best.data(), ldy, pool);
          fp8_gemm(xq.data(), ldx, xs.data(), G, T, packed, avx2.data(), ldy, pool, Fp8Kernel::Avx2);
          fp8_gemm(xq.data(), ldx, xs.data(), G, T, packed, scalar.data(), ldy, pool, Fp8Kernel::Scalar);
          INFO("threads " << threads << " N " << N << " K " << K << " T " << T);
          REQUIRE(same_bits(best, ref));  // columns past N (the stride's padding) untouched too
          REQUIRE(same_bits(avx2, ref));
          REQUIRE(same_bits(scalar, ref));
        }
      }
    }
  }
}

TEST_CASE("an FP8 weight holding an e4m3 NaN is refused with its name and position", "[cpu][fp8][kernels]") {
  std::mt19937 gen(3);
  Fp8Case c = random_weight(gen, 40, 256);
  c.w8[size_t(17 * 256 + 200)] = 0xff;
  try {
    (void)pack_fp8_weight(c.w);
    FAIL("no error");
  } catch (const Error& e) {
    REQUIRE(e.code() == ErrorCode::Format);
    REQUIRE(std::string(e.what()).find("model.layers.0.mlp.up_proj.weight holds a NaN (byte 0xff) at row 17, "
                                       "column 200") != std::string::npos);
  }
}

TEST_CASE("a prepared (repacked) FP8 weight and an unprepared one give the same linear", "[cpu][fp8][kernels]") {
  std::mt19937 gen(5);
  Fp8Case c = random_weight(gen, 96, 384);
  CpuBackend prepared({2}), plain({2});
  prepared.prepare_weight(c.w);
  Matrix x = plain.matrix(3, 384);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (int64_t i = 0; i < 3 * 384; ++i) x.view.data[i] = nd(gen);
  Matrix a = prepared.matrix(3, 96), b = plain.matrix(3, 96);
  prepared.linear(x.view, c.w, a.view, LinearQuant{true, true});
  plain.linear(x.view, c.w, b.view, LinearQuant{true, true});
  REQUIRE(std::memcmp(a.view.data, b.view.data, 3 * 96 * sizeof(float)) == 0);
  // The checkpoint bytes are still readable after prepare (the pages were handed back, not discarded).
  REQUIRE(c.w8[size_t(95 * 384 + 383)] == c.w.data[95 * 384 + 383]);
}

TEST_CASE("dense GEMM kernels (BF16, F16, F32 weights) equal the scalar FMA chain bit for bit", "[cpu][kernels]") {
  std::mt19937 gen(9);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (DType dt : {DType::BF16, DType::F16, DType::F32}) {
    for (int threads : {1, 3}) {
      ThreadPool pool(threads);
      for (int64_t N : {16, 45, 160}) {  // 1, 3 and 4+4+2 panels of 16 rows
        for (int64_t K : {64, 130, 700}) {
          const size_t es = dt == DType::F32 ? 4 : 2;
          std::vector<uint8_t> data(size_t(N * K) * es);
          for (int64_t i = 0; i < N * K; ++i) {
            const float v = nd(gen) * 0.05f;
            if (dt == DType::F32) std::memcpy(&data[size_t(i) * 4], &v, 4);
            else {
              // Random half/bfloat16 bit patterns that are finite numbers.
              uint16_t h = dt == DType::BF16 ? f32_to_bf16(v) : uint16_t(gen() & 0x7bff);
              if (dt == DType::F16 && (gen() & 1)) h |= 0x8000;
              std::memcpy(&data[size_t(i) * 2], &h, 2);
            }
          }
          Weight w{"lm_head.weight", dt, {N, K}, data.data(), nullptr};
          const PackedDenseWeight packed = pack_dense_weight(w);
          for (int64_t T : {1, 2, 3, 7, 8, 11, 70, 111}) {
            const int64_t ldx = K + 3, ldy = N + 2;
            std::vector<float> x(size_t(T * ldx));
            for (auto& v : x) v = nd(gen);
            std::vector<float> ref(size_t(T * ldy), -7.0f), best(ref), avx2(ref), scalar(ref);
            dense_gemm_reference(x.data(), ldx, T, w, ref.data(), ldy);
            dense_gemm(x.data(), ldx, T, packed, best.data(), ldy, pool);
            dense_gemm(x.data(), ldx, T, packed, avx2.data(), ldy, pool, DenseKernel::Avx2);
            REQUIRE(same_bits(avx2, ref));
            dense_gemm(x.data(), ldx, T, packed, scalar.data(), ldy, pool, DenseKernel::Scalar);
            INFO("dtype " << dtype_name(dt) << " threads " << threads << " N " << N << " K " << K << " T " << T);
            REQUIRE(same_bits(best, ref));
            REQUIRE(same_bits(scalar, ref));
          }
        }
      }
    }
  }
}

TEST_CASE("the fused FP8 MoE (prepared experts) equals expert-by-expert linears bit for bit", "[cpu][fp8][kernels]") {
  std::mt19937 gen(21);
  const int64_t E = 6, D = 256, inner = 176, top_k = 2;
  std::vector<Fp8Case> gate, up, down;
  std::vector<ExpertWeights> experts;
  for (int64_t e = 0; e < E; ++e) {
    gate.push_back(random_weight(gen, inner, D));
    up.push_back(random_weight(gen, inner, D));
    down.push_back(random_weight(gen, D, inner));
  }
  for (int64_t e = 0; e < E; ++e) experts.push_back({&gate[size_t(e)].w, &up[size_t(e)].w, &down[size_t(e)].w});
  CpuBackend fused({3}), plain({2});
  for (int64_t e = 0; e < E; ++e)
    for (const Weight* w : {experts[size_t(e)].gate, experts[size_t(e)].up, experts[size_t(e)].down})
      fused.prepare_weight(*w);
  for (int64_t T : {1, 3, 17}) {
    Matrix x = plain.matrix(T, D);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    for (int64_t i = 0; i < T * D; ++i) x.view.data[i] = nd(gen);
    const auto [ids, wts] = route_to_two(gen, T, E, 0.7f, 0.45f);
    Matrix a = fused.matrix(T, D), b = plain.matrix(T, D);
    MoeExpertsArgs args{x.view, experts, ids.data(), wts.data(), top_k, LinearQuant{true, true}, a.view};
    fused.moe_experts(args);
    args.out = b.view;
    plain.moe_experts(args);
    INFO("T " << T);
    REQUIRE(std::memcmp(a.view.data, b.view.data, size_t(T * D) * sizeof(float)) == 0);
  }
}

TEST_CASE("MLA reading the stored kv_b (FP8 or BF16, no fp32 copy) equals reading the fp32 copy, bit for bit",
          "[cpu][mla][kernels]") {
  std::mt19937 gen(33);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  const int64_t H = 4, dn = 16, dr = 8, dv = 24, C = 256, S = 37;
  Fp8Case kvb8 = random_weight(gen, H * (dn + dv), C);
  std::vector<uint16_t> bf(size_t(H * (dn + dv) * C));
  for (auto& v : bf) v = f32_to_bf16(nd(gen) * 0.05f);
  Weight kvb16{"kv_b_proj.weight", DType::BF16, {H * (dn + dv), C}, reinterpret_cast<const uint8_t*>(bf.data()), nullptr};
  CpuBackend be({2});
  REQUIRE(be.supports(BackendFeature::MlaStoredKvB));
  Matrix q = be.matrix(2, H * (dn + dr)), lat = be.matrix(S, C), kpe = be.matrix(S, dr);
  for (Matrix* m : {&q, &lat, &kpe})
    for (int64_t i = 0; i < m->view.rows * m->view.cols; ++i) m->view.data[i] = nd(gen);
  const std::vector<int32_t> positions = {30, 36};
  std::vector<int32_t> indices = {0, 3, 7, 29, -1, 12, 1, 2, 36, 35, 5, -1};
  for (const Weight* kvb : {static_cast<const Weight*>(&kvb8.w), static_cast<const Weight*>(&kvb16)}) {
    Matrix wkv_b = be.dequantize(*kvb);
    for (MlaMode mode : {MlaMode::Absorbed, MlaMode::Mha})
      for (bool sparse : {false, true}) {
        Matrix with = be.matrix(2, H * dv), without = be.matrix(2, H * dv);
        MlaArgs a;
        a.q = q.view;
        a.latent = lat.view;
        a.k_pe = kpe.view;
        a.n_keys = S;
        a.wkv_b = wkv_b.view;
        a.n_heads = H;
        a.nope_dim = dn;
        a.rope_dim = dr;
        a.v_dim = dv;
        a.softmax_scale = 0.125f;
        a.positions = positions.data();
        a.indices = sparse ? indices.data() : nullptr;
        a.n_indices = sparse ? 6 : 0;
        a.mode = mode;
        a.out = without.view;
        be.mla_attention(a);  // the fp32 copy only
        a.wkv_b = Tensor2D{nullptr, wkv_b.view.rows, wkv_b.view.cols, wkv_b.view.cols};
        a.wkv_b_stored = kvb;
        a.out = with.view;
        be.mla_attention(a);  // the stored weight only
        INFO(dtype_name(kvb->dtype) << (mode == MlaMode::Mha ? " mha" : " absorbed") << " sparse " << sparse);
        REQUIRE(std::memcmp(with.view.data, without.view.data, size_t(2 * H * dv) * sizeof(float)) == 0);
      }
  }
}

TEST_CASE("the shared expert inside the fused MoE, and linear_many, equal the separate linears bit for bit",
          "[cpu][fp8][kernels]") {
  std::mt19937 gen(23);
  const int64_t E = 5, D = 256, inner = 176, shared_inner = 352, top_k = 2;
  std::vector<Fp8Case> gate, up, down;
  for (int64_t e = 0; e < E; ++e) {
    gate.push_back(random_weight(gen, inner, D));
    up.push_back(random_weight(gen, inner, D));
    down.push_back(random_weight(gen, D, inner));
  }
  Fp8Case sg = random_weight(gen, shared_inner, D), su = random_weight(gen, shared_inner, D),
          sd = random_weight(gen, D, shared_inner);
  std::vector<ExpertWeights> experts;
  for (int64_t e = 0; e < E; ++e) experts.push_back({&gate[size_t(e)].w, &up[size_t(e)].w, &down[size_t(e)].w});
  const ExpertWeights shared{&sg.w, &su.w, &sd.w};
  CpuBackend fused({3}), plain({2});
  REQUIRE(fused.supports(BackendFeature::MoeFusedSharedExpert));
  for (const auto& ew : experts)
    for (const Weight* w : {ew.gate, ew.up, ew.down}) fused.prepare_weight(*w);
  for (const Weight* w : {shared.gate, shared.up, shared.down}) fused.prepare_weight(*w);
  const LinearQuant q{true, true};
  for (int64_t T : {1, 3, 17}) {
    Matrix x = plain.matrix(T, D);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    for (int64_t i = 0; i < T * D; ++i) x.view.data[i] = nd(gen);
    const auto [ids, wts] = route_to_two(gen, T, E, 0.6f, 0.3f);
    // Fused: routed and shared experts in one call. Separate: the routed experts, then the shared SwiGLU added.
    Matrix a = fused.matrix(T, D), b = plain.matrix(T, D);
    MoeExpertsArgs args{x.view, experts, ids.data(), wts.data(), top_k, q, a.view};
    args.shared = &shared;
    fused.moe_experts(args);
    args.shared = nullptr;
    args.out = b.view;
    plain.moe_experts(args);
    Matrix g = plain.matrix(T, shared_inner), u = plain.matrix(T, shared_inner), y = plain.matrix(T, D);
    plain.linear(x.view, *shared.gate, g.view, q);
    plain.linear(x.view, *shared.up, u.view, q);
    plain.silu_mul(g.view, u.view, g.view);
    plain.linear(g.view, *shared.down, y.view, q);
    plain.add(b.view, y.view);
    INFO("T " << T);
    REQUIRE(std::memcmp(a.view.data, b.view.data, size_t(T * D) * sizeof(float)) == 0);

    // linear_many over three prepared weights of one input vs three linear calls.
    Matrix o1 = fused.matrix(T, inner), o2 = fused.matrix(T, shared_inner), o3 = fused.matrix(T, inner);
    const LinearOut outs[3] = {{&gate[0].w, o1.view}, {&sg.w, o2.view}, {&up[1].w, o3.view}};
    fused.linear_many(x.view, outs, q);
    for (const LinearOut& o : outs) {
      Matrix want = plain.matrix(T, o.w->rows());
      plain.linear(x.view, *o.w, want.view, q);
      REQUIRE(std::memcmp(o.out.data, want.view.data, size_t(T * o.w->rows()) * sizeof(float)) == 0);
    }
  }
}

TEST_CASE("the fused MoE over prepared BF16 experts (shared one included) equals expert-by-expert linears bit for bit",
          "[cpu][kernels]") {
  std::mt19937 gen(29);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  const int64_t E = 4, D = 128, inner = 80, shared_inner = 160, top_k = 2;
  std::vector<std::vector<uint16_t>> store;
  std::vector<Weight> ws;
  ws.reserve(size_t(3 * E + 3));
  auto bf16_weight = [&](int64_t n, int64_t k) -> const Weight& {
    store.emplace_back(size_t(n * k));
    for (auto& v : store.back()) v = f32_to_bf16(nd(gen) * 0.1f);
    ws.push_back(Weight{"expert.weight", DType::BF16, {n, k}, reinterpret_cast<const uint8_t*>(store.back().data()), nullptr});
    return ws.back();
  };
  store.reserve(size_t(3 * E + 3));
  std::vector<ExpertWeights> experts;
  for (int64_t e = 0; e < E; ++e) {
    const Weight& g = bf16_weight(inner, D);
    const Weight& u = bf16_weight(inner, D);
    const Weight& d = bf16_weight(D, inner);
    experts.push_back({&g, &u, &d});
  }
  const Weight& sgw = bf16_weight(shared_inner, D);
  const Weight& suw = bf16_weight(shared_inner, D);
  const Weight& sdw = bf16_weight(D, shared_inner);
  const ExpertWeights shared{&sgw, &suw, &sdw};
  CpuBackend fused({3}), plain({2});
  for (const Weight& w : ws) fused.prepare_weight(w);
  for (bool fp8_mode : {true, false})
    for (int64_t T : {1, 5}) {
      Matrix x = plain.matrix(T, D);
      for (int64_t i = 0; i < T * D; ++i) x.view.data[i] = nd(gen);
      std::vector<int32_t> ids(size_t(T * top_k));
      std::vector<float> wts(size_t(T * top_k), 0.5f);
      for (int64_t t = 0; t < T; ++t) {
        ids[size_t(t * top_k)] = int32_t(t % E);
        ids[size_t(t * top_k + 1)] = int32_t((t + 1 + gen() % (E - 1)) % E);
      }
      Matrix a = fused.matrix(T, D), b = plain.matrix(T, D);
      MoeExpertsArgs args{x.view, experts, ids.data(), wts.data(), top_k, LinearQuant{fp8_mode, true}, a.view};
      args.shared = &shared;
      fused.moe_experts(args);
      args.out = b.view;
      plain.moe_experts(args);
      INFO("T " << T << " fp8 mode " << fp8_mode);
      REQUIRE(std::memcmp(a.view.data, b.view.data, size_t(T * D) * sizeof(float)) == 0);
    }
}
