// dsinfer — choosing the next token: a chain of samplers (itself a sampler), built-ins, and user samplers.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "dsinfer/export.hpp"
#include "dsinfer/error.hpp"

namespace dsinfer {

// The candidate tokens a sampler works on (structure of arrays). Samplers may shrink and reorder them.
struct DSINFER_CXX_API Candidates {
  std::vector<int32_t> ids;
  std::vector<float> logits;
  std::vector<float> probs;  // valid only when has_probs
  bool sorted = false;       // by logit, highest first
  bool has_probs = false;    // probs == softmax(logits) of the current candidates
  int64_t selected = -1;     // index into the arrays, set by a selector (greedy, dist)

  size_t size() const { return ids.size(); }
  void resize(size_t n);     // keeps the first n (of the current order)
  void sort_by_logit();      // highest first; sets sorted
  void softmax();            // fills probs from logits; sets has_probs
};

// A sampler: apply() may throw dsinfer::Error to fail the sampling step (the chain reports which sampler failed).
// accept() sees every token the session commits; reset() clears history but keeps parameters.
class DSINFER_CXX_API Sampler {
 public:
  virtual ~Sampler() = default;
  virtual std::string name() const = 0;
  virtual void apply(Candidates& c) = 0;
  virtual void accept(int32_t token) {}
  virtual void reset() {}
  virtual std::unique_ptr<Sampler> clone() const = 0;  // a copy with the same parameters and state (RNG included)
  // Whether apply/accept/reset touch nothing but this object's own state, so that an Engine may run them on one of
  // its worker threads while other sessions' samplers run on others. Default false: a sampler that says nothing is
  // called only from the thread stepping the engine, one session at a time (user samplers, C and Python callbacks).
  // The built-ins, constraints and chains made only of such samplers say true.
  virtual bool thread_compatible() const { return false; }
};

// Samplers applied in order; the last one to run must select a token (greedy or dist), else sample() fails with
// InvalidArgument. Owns what is added to it.
class DSINFER_CXX_API SamplerChain : public Sampler {
 public:
  SamplerChain& add(std::unique_ptr<Sampler> s);
  std::string name() const override { return "chain"; }
  void apply(Candidates& c) override;
  void accept(int32_t token) override;
  void reset() override;
  std::unique_ptr<Sampler> clone() const override;
  bool thread_compatible() const override;  // every sampler in it is
  size_t size() const { return samplers_.size(); }

  // Builds candidates from logits[0, n_usable) — ids at or beyond the tokenizer size are never candidates — runs
  // the chain and returns the selected id. Does not call accept(). Errors: InvalidArgument (no selector, empty
  // candidates, a sampler's own failure, named), or whatever a user sampler throws as dsinfer::Error.
  int32_t sample(std::span<const float> logits, int64_t n_usable);

 private:
  std::vector<std::unique_ptr<Sampler>> samplers_;
  Candidates candidates_;  // sample()'s arrays, kept from call to call
};

// Built-ins. Parameters are range-checked (InvalidArgument naming the parameter and its range).
DSINFER_CXX_API std::unique_ptr<Sampler> make_greedy_sampler();
DSINFER_CXX_API std::unique_ptr<Sampler> make_dist_sampler(uint64_t seed);  // samples from softmax; seeded, reproducible
DSINFER_CXX_API std::unique_ptr<Sampler> make_temperature_sampler(float t);  // t >= 0; t == 0 keeps only the best token
DSINFER_CXX_API std::unique_ptr<Sampler> make_top_k_sampler(int64_t k);                // k <= 0: no-op
DSINFER_CXX_API std::unique_ptr<Sampler> make_top_p_sampler(float p, size_t min_keep = 1);  // p in (0, 1]
DSINFER_CXX_API std::unique_ptr<Sampler> make_min_p_sampler(float p, size_t min_keep = 1);  // p in [0, 1]
DSINFER_CXX_API std::unique_ptr<Sampler> make_typical_sampler(float p, size_t min_keep = 1);  // p in (0, 1]
// repeat >= 1 divides positive logits (multiplies negative ones) of tokens seen in the last `last_n` accepted tokens;
// frequency and presence in [-2, 2] subtract count·frequency + (count > 0)·presence (OpenAI's definition).
DSINFER_CXX_API
std::unique_ptr<Sampler> make_penalties_sampler(int64_t last_n, float repeat, float frequency, float presence);
DSINFER_CXX_API std::unique_ptr<Sampler> make_logit_bias_sampler(std::map<int32_t, float> bias);

// generation_config.json defaults (DeepSeek-V3.2 ships temperature 1.0, top_p 0.95, do_sample true).
struct DSINFER_CXX_API GenerationConfig {
  bool do_sample = true;
  float temperature = 1.0f;
  float top_p = 1.0f;
  int64_t top_k = 0;
};
// Reads DIR/generation_config.json; defaults when the file is absent. Errors: Format for malformed JSON or values.
DSINFER_CXX_API GenerationConfig load_generation_config(const std::string& dir);
// temperature -> top_k -> top_p -> dist(seed) (transformers' order), or greedy when do_sample is false.
DSINFER_CXX_API std::unique_ptr<SamplerChain> make_default_chain(const GenerationConfig& g, uint64_t seed);

}  // namespace dsinfer
