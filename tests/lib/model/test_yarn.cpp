// YaRN frequencies and the MLA softmax scale for the real DeepSeek-V3.2 config, against the values the spec
// computed (../shared/spec/dsv32-model.md §2.3–2.4).
#include <catch2/catch.hpp>

#include "model/deepseek_v32.hpp"

using namespace dsinfer;

TEST_CASE("YaRN inverse frequencies of the 671B config match the spec's table", "[yarn]") {
  ModelConfig c;
  c.qk_rope_head_dim = 64;
  c.qk_nope_head_dim = 128;
  c.rope_theta = 10000;
  c.rope_scaling.present = true;
  c.rope_scaling.factor = 40;
  c.rope_scaling.original_max_position_embeddings = 4096;
  c.rope_scaling.beta_fast = 32;
  c.rope_scaling.beta_slow = 1;
  c.rope_scaling.mscale = 1;
  c.rope_scaling.mscale_all_dim = 1;
  const std::vector<double> spec = {1, 0.7499, 0.5623, 0.4217, 0.3162, 0.2371, 0.1778, 0.1334, 0.1, 0.07499,
                                    0.05623, 0.03901, 0.02688, 0.01838, 0.01245, 0.008335, 0.0055, 0.003562,
                                    0.002249, 0.001371, 7.906e-4, 4.150e-4, 1.778e-4, 3.334e-5, 2.5e-5, 1.875e-5,
                                    1.406e-5, 1.054e-5, 7.906e-6, 5.928e-6, 4.446e-6, 3.334e-6};
  const auto inv = yarn_inv_freq(c);
  REQUIRE(inv.size() == 32);
  for (size_t j = 0; j < 32; ++j) CHECK(inv[j] == Approx(spec[j]).epsilon(1e-3));
  CHECK(mla_softmax_scale(c) == Approx(0.1352337789).epsilon(1e-7));
}

TEST_CASE("without rope_scaling the frequencies are plain RoPE and the scale is 1/sqrt(qk_head_dim)", "[yarn]") {
  ModelConfig c;
  c.qk_rope_head_dim = 8;
  c.qk_nope_head_dim = 8;
  c.rope_theta = 10000;
  const auto inv = yarn_inv_freq(c);
  CHECK(inv[0] == 1.0f);
  CHECK(inv[1] == Approx(0.1).epsilon(1e-6));
  CHECK(mla_softmax_scale(c) == Approx(0.25).epsilon(1e-7));
}
