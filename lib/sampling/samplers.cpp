// The sampler chain and the built-in samplers.
#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <numeric>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <unordered_map>

#include "dsinfer/sampler.hpp"
#include "util/json_input.hpp"
#include "util/softmax.hpp"

namespace dsinfer {

void Candidates::resize(size_t n) {
  ids.resize(n);
  logits.resize(n);
  if (has_probs) probs.resize(n);
  if (selected >= int64_t(n)) selected = -1;
}

namespace {

// sort_by_logit's order (higher logit first, ties by lower id) as one integer per candidate, ascending, beside the
// candidate's position. Sorting these keys instead of positions through a comparator that reads two arrays took
// a sort of V3.2's 129,280 ids from ~15 ms to ~9 (bench/bench_sampling). -0 and +0 get the same key, as they compare
// equal; for non-NaN logits and distinct ids the order is strict, so every algorithm that orders by it, whole or in
// part, gives the same sequence.
struct Ranked {
  uint64_t key;
  size_t pos;
  bool operator<(const Ranked& o) const { return key < o.key; }
};

// Candidate i's key.
Ranked rank_of(const Candidates& c, size_t i) {
  // Branch-free (the signs of a vocabulary's logits are a coin toss): + 0.0f turns -0 into +0; a negative float's
  // bits all flip, a positive one's sign bit is set, so that the unsigned order is the float order.
  const uint32_t b = std::bit_cast<uint32_t>(c.logits[i] + 0.0f);
  const uint32_t ordered = b ^ (uint32_t(int32_t(b) >> 31) | 0x80000000u);
  return {(uint64_t(~ordered) << 32) | (uint32_t(c.ids[i]) ^ 0x80000000u), i};  // higher logit, lower id first
}

// The keys of all candidates, in position order.
std::vector<Ranked> ranked(const Candidates& c) {
  std::vector<Ranked> r(c.size());
  for (size_t i = 0; i < c.size(); ++i) r[i] = rank_of(c, i);
  return r;
}

// Calls f(i) for each i, in order, with value[i] >= threshold: usually a few of a vocabulary, so groups of 8 values
// none of which passes are skipped after one test the compiler can vectorize, instead of a branch per value.
template <class F>
void for_each_at_least(const std::vector<float>& value, float threshold, F f) {
  size_t i = 0;
  for (; i + 8 <= value.size(); i += 8) {
    bool any = false;
    for (size_t j = i; j < i + 8; ++j) any |= value[j] >= threshold;
    if (!any) continue;
    for (size_t j = i; j < i + 8; ++j)
      if (value[j] >= threshold) f(j);
  }
  for (; i < value.size(); ++i)
    if (value[i] >= threshold) f(i);
}

// The keys of the candidates whose value (a logit or a probability) is at least `threshold`, in position order.
std::vector<Ranked> ranked_at_least(const Candidates& c, const std::vector<float>& value, float threshold) {
  uint32_t passing = 0;  // counted first (a vectorized pass), so the keys are allocated once at their size
  for (size_t i = 0; i < c.size(); ++i) passing += uint32_t(value[i] >= threshold);  // ids are int32: no overflow
  std::vector<Ranked> r;
  r.reserve(passing);
  for_each_at_least(value, threshold, [&](size_t i) { r.push_back(rank_of(c, i)); });
  return r;
}

// Keeps the candidates at order[0, n).pos, in that order. The arrays keep their capacity (a chain reuses them).
void keep_in_order(Candidates& c, const std::vector<Ranked>& order, size_t n) {
  auto gather = [&](auto& v) {
    std::remove_reference_t<decltype(v)> out(n);
    for (size_t i = 0; i < n; ++i) out[i] = v[order[i].pos];
    std::copy(out.begin(), out.end(), v.begin());
    v.resize(n);
  };
  gather(c.ids);
  gather(c.logits);
  if (c.has_probs) gather(c.probs);
  c.selected = -1;
  c.sorted = true;
}

// Puts `order` in order a block at a time (64, then 8x more each round; a block is a heap selection and sort over
// the rest while it is small against the rest, else a selection then a sort; once a block would reach half of the
// rest, the rest is sorted whole) until enough(i, position) says the i + 1 first suffice; returns how many those
// are (order.size() when it never says so). A cut among the first few hundred costs about one pass instead of a
// sort of all of them.
template <class Enough>
size_t order_until(std::vector<Ranked>& order, Enough enough) {
  for (size_t done = 0, block = 64; done < order.size(); done += block, block *= 8) {
    const size_t rest = order.size() - done;
    if (block >= rest / 2) block = rest;
    const auto first = order.begin() + std::ptrdiff_t(done);
    const auto last = first + std::ptrdiff_t(block);
    if (block <= rest / 16) {
      std::partial_sort(first, last, order.end());
    } else {
      if (last != order.end()) std::nth_element(first, last, order.end());
      std::sort(first, last);
    }
    for (auto it = first; it != last; ++it)
      if (enough(size_t(it - order.begin()), it->pos)) return size_t(it - order.begin()) + 1;
  }
  return order.size();
}

// The n highest candidates, highest first; the same as sort_by_logit() then resize(n), without ordering the rest:
// up to a 16th of them through a heap over one pass; more by a selection of the n-th highest on a copy of the
// floats, then ranking and sorting only the candidates that reach it.
void keep_highest(Candidates& c, size_t n) {
  if (n >= c.size()) {
    c.sort_by_logit();
    return;
  }
  if (!c.sorted && n > 0 && n <= c.size() / 16) {
    // A heap of the n best keys so far (its front the worst of them) over one pass; a group of 8 logits none of
    // which reaches the front's logit cannot enter, and is skipped after one test the compiler vectorizes. A copy
    // of the logits and a heap selection over the floats cost ~2.5x as much (bench/bench_sampling, top_k 40).
    std::vector<Ranked> heap(n);
    for (size_t i = 0; i < n; ++i) heap[i] = rank_of(c, i);
    std::make_heap(heap.begin(), heap.end());  // the highest key (the worst candidate) in front
    float worst = c.logits[heap.front().pos];
    auto offer = [&](size_t i) {
      const Ranked r = rank_of(c, i);
      if (!(r < heap.front())) return;
      std::pop_heap(heap.begin(), heap.end());
      heap.back() = r;
      std::push_heap(heap.begin(), heap.end());
      worst = c.logits[heap.front().pos];
    };
    size_t i = n;
    for (; i + 8 <= c.size(); i += 8) {
      bool may = false;  // !(l < worst): also true for a NaN on either side, which the keys then order
      for (size_t j = i; j < i + 8; ++j) may |= !(c.logits[j] < worst);
      if (!may) continue;
      for (size_t j = i; j < i + 8; ++j) offer(j);
    }
    for (; i < c.size(); ++i) offer(i);
    std::sort_heap(heap.begin(), heap.end());
    keep_in_order(c, heap, n);
  } else if (!c.sorted && n > 0) {
    std::vector<float> logits = c.logits;
    const auto nth_at = logits.begin() + std::ptrdiff_t(n - 1);
    std::nth_element(logits.begin(), nth_at, logits.end(), std::greater<float>());
    const float nth = *nth_at;
    std::vector<Ranked> order = ranked_at_least(c, c.logits, nth);
    std::sort(order.begin(), order.end());
    keep_in_order(c, order, n);
  }
  c.resize(n);
  c.has_probs = false;  // probs, where a sampler before had them, no longer sum to 1
}

}  // namespace

void Candidates::sort_by_logit() {
  if (sorted) return;
  std::vector<Ranked> order = ranked(*this);
  std::sort(order.begin(), order.end());
  keep_in_order(*this, order, order.size());
}

void Candidates::softmax() {
  probs.resize(ids.size());
  dsinfer::softmax(logits.data(), ids.size(), probs.data());  // util/softmax.hpp: the same bits on every CPU
  has_probs = true;
}

namespace {

[[noreturn]] void bad_param(const std::string& what) { throw Error(ErrorCode::InvalidArgument, what); }

template <class Derived>
struct Cloneable : Sampler {
  std::unique_ptr<Sampler> clone() const override { return std::make_unique<Derived>(static_cast<const Derived&>(*this)); }
  bool thread_compatible() const override { return true; }  // the built-ins hold only their own state
};

// The position of the highest of x[0, n), ties to the lowest id (kIds false: the ids are the positions). A NaN is
// never chosen unless it is x[0], which nothing compares above. One pass in 8 lanes, each keeping its best value, id
// and position, updated without a branch (bitwise & and |, then selects), then the lanes compared by the same rule:
// eight independent chains where one compare after another through a single best, branching on each, was the cost.
// Kept out of line: inlined into SamplerChain::sample the same loop measured 63 us against 52 (g++ 12).
template <bool kIds>
[[gnu::noinline]] size_t highest(const float* x, const int32_t* ids, size_t n) {
  if (n == 0) return 0;
  auto id = [&](size_t i) { return kIds ? ids[i] : int32_t(i); };
  float value[8];
  int32_t best[8];
  std::fill(value, value + 8, x[0]);
  std::fill(best, best + 8, id(0));
  int32_t at[8] = {};
  size_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (size_t j = 0; j < 8; ++j) {
      const float v = x[i + j];
      const int32_t d = id(i + j);
      // Positions only grow: a tie never wins there, so the id compare is needed only for given ids.
      const bool better = kIds ? (v > value[j]) | ((v == value[j]) & (d < best[j])) : v > value[j];
      value[j] = better ? v : value[j];
      best[j] = better ? d : best[j];
      at[j] = better ? int32_t(i + j) : at[j];
    }
  for (; i < n; ++i)  // the tail goes to lane 0
    if (x[i] > value[0] || (x[i] == value[0] && id(i) < best[0])) {
      value[0] = x[i];
      best[0] = id(i);
      at[0] = int32_t(i);
    }
  size_t pick = 0;
  for (size_t j = 1; j < 8; ++j)
    if (value[j] > value[pick] || (value[j] == value[pick] && best[j] < best[pick])) pick = j;
  return size_t(at[pick]);
}

struct Greedy : Cloneable<Greedy> {
  std::string name() const override { return "greedy"; }
  void apply(Candidates& c) override { c.selected = int64_t(highest<true>(c.logits.data(), c.ids.data(), c.size())); }
};

struct Dist : Cloneable<Dist> {
  explicit Dist(uint64_t seed) : seed(seed), rng(seed) {}
  uint64_t seed;
  std::mt19937_64 rng;  // a fixed algorithm: the same seed gives the same tokens on every platform
  std::string name() const override { return "dist"; }
  void apply(Candidates& c) override {
    if (!c.has_probs) c.softmax();
    const double u = double(rng() >> 11) * 0x1.0p-53;  // uniform in [0, 1), exactly, without <random>'s distributions
    double acc = 0;
    int64_t last_possible = -1;
    for (size_t i = 0; i < c.size(); ++i) {
      acc += c.probs[i];
      if (c.probs[i] > 0.0f) last_possible = int64_t(i);
      if (u < acc) {
        c.selected = int64_t(i);
        return;
      }
    }
    // Rounding left the sum just below u: the last candidate that has a probability (never one at 0, which a
    // constraint or a -inf bias excluded).
    if (last_possible < 0)
      throw Error(ErrorCode::InvalidArgument, "no candidate has a probability above 0 (every logit -inf or NaN)");
    c.selected = last_possible;
  }
  void reset() override { rng.seed(seed); }
};

struct Temperature : Cloneable<Temperature> {
  float t;
  std::string name() const override { return "temperature"; }
  void apply(Candidates& c) override {
    if (t == 0.0f) {  // keep only the best token(s): temperature 0 is greedy
      const float best = *std::max_element(c.logits.begin(), c.logits.end());
      keep_highest(c, size_t(std::count(c.logits.begin(), c.logits.end(), best)));
    } else if (t != 1.0f) {  // l / 1 is l: V3.2's default temperature leaves the logits as they are
      for (auto& l : c.logits) l /= t;
    }
    c.has_probs = false;
  }
};

struct TopK : Cloneable<TopK> {
  int64_t k;
  std::string name() const override { return "top_k"; }
  void apply(Candidates& c) override {
    if (k <= 0 || size_t(k) >= c.size()) return;
    keep_highest(c, size_t(k));
  }
};

struct TopP : Cloneable<TopP> {
  float p;
  size_t min_keep;
  std::string name() const override { return "top_p"; }
  void apply(Candidates& c) override {
    if (p >= 1.0f) return;
    // The probabilities over all candidates (normalized in their current order), summed highest first until they
    // reach p. Only the candidates that can be among those are put in order: a histogram of the probabilities by
    // binary exponent gives the lowest power of two t such that the candidates >= t hold at least p; the ordered
    // ones are those whose logit reaches the lowest logit among them, a prefix of the order that holds them all
    // (the softmax's exponential is within an ulp but not monotone: a higher logit can get a probability one ulp
    // lower), so the cut falls among them — unless the sum in order lands within rounding below p, where all are
    // ordered.
    c.softmax();
    double cum = 0;
    auto enough = [&](size_t i, size_t at) {
      cum += c.probs[at];
      return cum >= p && i + 1 >= min_keep;
    };
    if (c.sorted) {
      size_t n = c.size();
      for (size_t i = 0; i < c.size(); ++i)
        if (enough(i, i)) {
          n = i + 1;
          break;
        }
      c.resize(n);
      c.has_probs = false;
      return;
    }
    // Four histograms over alternate candidates, summed after: most probabilities share a few exponents, and one
    // histogram would chain every addition through the same few memory cells. (t only narrows what is ordered;
    // the cut itself is exact, so the histograms' rounding cannot change the result.)
    std::array<std::array<double, 256>, 4> mass{};
    const size_t n4 = c.size() / 4 * 4;
    for (size_t i = 0; i < n4; i += 4)
      for (size_t j = 0; j < 4; ++j) mass[j][(std::bit_cast<uint32_t>(c.probs[i + j]) >> 23) & 0xFF] += c.probs[i + j];
    for (size_t i = n4; i < c.size(); ++i) mass[0][(std::bit_cast<uint32_t>(c.probs[i]) >> 23) & 0xFF] += c.probs[i];
    float t = 0.0f;
    double above = 0;
    for (uint32_t e = 255; e > 0; --e)
      if ((above += (mass[0][e] + mass[1][e]) + (mass[2][e] + mass[3][e])) >= p) {
        t = std::bit_cast<float>(e << 23);
        break;
      }
    float lowest = std::numeric_limits<float>::infinity();  // the lowest logit with a probability >= t
    for_each_at_least(c.probs, t, [&](size_t i) { lowest = std::min(lowest, c.logits[i]); });
    std::vector<Ranked> order = ranked_at_least(c, c.logits, lowest);
    size_t n = order.size() >= min_keep ? order_until(order, enough) : order.size();
    if (!(cum >= p && n >= min_keep)) {
      cum = 0;
      order = ranked(c);
      n = order_until(order, enough);
    }
    keep_in_order(c, order, n);
    c.has_probs = false;
  }
};

struct MinP : Cloneable<MinP> {
  float p;
  size_t min_keep;
  std::string name() const override { return "min_p"; }
  void apply(Candidates& c) override {
    if (p <= 0.0f || c.size() == 0) return;
    // prob_i >= p · prob_max  <=>  logit_i >= logit_max + ln p
    const float cut = *std::max_element(c.logits.begin(), c.logits.end()) + std::log(p);
    const size_t above = size_t(std::count_if(c.logits.begin(), c.logits.end(), [cut](float l) { return l >= cut; }));
    if (c.sorted || above < min_keep) {
      keep_highest(c, std::max(above, min_keep));
      return;
    }
    std::vector<Ranked> order = ranked_at_least(c, c.logits, cut);
    std::sort(order.begin(), order.end());
    keep_in_order(c, order, order.size());
    c.has_probs = false;
  }
};

struct Typical : Cloneable<Typical> {
  float p;
  size_t min_keep;
  std::string name() const override { return "typical"; }
  void apply(Candidates& c) override {
    if (p >= 1.0f || c.size() == 0) return;
    c.softmax();
    double entropy = 0;
    for (float q : c.probs)
      if (q > 0) entropy -= q * std::log(double(q));
    // Keep the tokens whose surprise is closest to the entropy until their mass reaches p.
    std::vector<size_t> order(c.size());
    std::iota(order.begin(), order.end(), 0);
    auto dev = [&](size_t i) { return std::fabs(-std::log(double(c.probs[i])) - entropy); };
    std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return dev(a) < dev(b); });
    double cum = 0;
    size_t n = order.size();
    for (size_t i = 0; i < order.size(); ++i) {
      cum += c.probs[order[i]];
      if (cum >= p && i + 1 >= min_keep) {
        n = i + 1;
        break;
      }
    }
    Candidates out;
    for (size_t i = 0; i < n; ++i) {
      out.ids.push_back(c.ids[order[i]]);
      out.logits.push_back(c.logits[order[i]]);
    }
    c = std::move(out);
  }
};

struct Penalties : Cloneable<Penalties> {
  int64_t last_n;
  float repeat, frequency, presence;
  std::vector<int32_t> history;
  std::string name() const override { return "penalties"; }
  void apply(Candidates& c) override {
    if (history.empty()) return;
    std::unordered_map<int32_t, int> count;
    for (int32_t t : history) ++count[t];
    for (size_t i = 0; i < c.size(); ++i) {
      auto it = count.find(c.ids[i]);
      if (it == count.end()) continue;
      float& l = c.logits[i];
      l = l > 0 ? l / repeat : l * repeat;
      l -= float(it->second) * frequency + presence;
    }
    c.sorted = false;
    c.has_probs = false;
  }
  void accept(int32_t token) override {
    if (last_n == 0) return;
    history.push_back(token);
    if (last_n > 0 && int64_t(history.size()) > last_n) history.erase(history.begin());
  }
  void reset() override { history.clear(); }
};

struct LogitBias : Cloneable<LogitBias> {
  std::map<int32_t, float> bias;
  std::string name() const override { return "logit_bias"; }
  void apply(Candidates& c) override {
    for (size_t i = 0; i < c.size(); ++i) {
      auto it = bias.find(c.ids[i]);
      if (it != bias.end()) c.logits[i] += it->second;
    }
    c.sorted = false;
    c.has_probs = false;
  }
};

}  // namespace

SamplerChain& SamplerChain::add(std::unique_ptr<Sampler> s) {
  if (!s) throw Error(ErrorCode::InvalidArgument, "cannot add a null sampler to a chain");
  samplers_.push_back(std::move(s));
  return *this;
}

void SamplerChain::apply(Candidates& c) {
  for (auto& s : samplers_) {
    if (c.size() == 0) throw Error(ErrorCode::InvalidArgument, fmt::format("no candidates left before sampler \"{}\"", s->name()));
    try {
      s->apply(c);
    } catch (const Error& e) {
      throw Error(e.code(), fmt::format("sampler \"{}\" failed: {}", s->name(), e.what()));
    } catch (const std::exception& e) {
      throw Error(ErrorCode::InvalidArgument, fmt::format("sampler \"{}\" failed: {}", s->name(), e.what()));
    }
  }
}

void SamplerChain::accept(int32_t token) {
  for (auto& s : samplers_) s->accept(token);
}

void SamplerChain::reset() {
  for (auto& s : samplers_) s->reset();
}

bool SamplerChain::thread_compatible() const {
  return std::all_of(samplers_.begin(), samplers_.end(), [](const auto& s) { return s->thread_compatible(); });
}

std::unique_ptr<Sampler> SamplerChain::clone() const {
  auto c = std::make_unique<SamplerChain>();
  for (const auto& s : samplers_) c->add(s->clone());
  return c;
}

int32_t SamplerChain::sample(std::span<const float> logits, int64_t n_usable) {
  if (samplers_.empty()) throw Error(ErrorCode::InvalidArgument, "the sampler chain is empty: it needs a selector (greedy or dist)");
  n_usable = std::min<int64_t>(n_usable, int64_t(logits.size()));
  if (n_usable <= 0) throw Error(ErrorCode::InvalidArgument, "no token ids to sample from");
  // A greedy chain (temperature 0, tool use, evaluation) picks straight from the logits: the candidate arrays would
  // be ids and a copy of the logits, 1 MB written at V3.2's vocabulary, for the same answer.
  if (samplers_.size() == 1 && dynamic_cast<const Greedy*>(samplers_[0].get()))
    return int32_t(highest<false>(logits.data(), nullptr, size_t(n_usable)));
  // The candidate arrays are the chain's, reused from call to call: fresh ones for V3.2's 129,280 ids are 1 MB that
  // the allocator would map (or grow the heap by) and give back on every call, page faults included.
  Candidates& c = candidates_;
  c.ids.resize(size_t(n_usable));
  std::iota(c.ids.begin(), c.ids.end(), 0);
  c.logits.assign(logits.begin(), logits.begin() + n_usable);
  c.probs.clear();
  c.sorted = c.has_probs = false;
  c.selected = -1;
  apply(c);
  if (c.selected < 0 || c.selected >= int64_t(c.size()))
    throw Error(ErrorCode::InvalidArgument,
                fmt::format("the sampler chain ended without selecting a token: its last sampler is \"{}\", not a "
                            "selector (greedy or dist)", samplers_.back()->name()));
  return c.ids[size_t(c.selected)];
}

std::unique_ptr<Sampler> make_greedy_sampler() { return std::make_unique<Greedy>(); }
std::unique_ptr<Sampler> make_dist_sampler(uint64_t seed) { return std::make_unique<Dist>(seed); }

std::unique_ptr<Sampler> make_temperature_sampler(float t) {
  if (!(t >= 0.0f) || !std::isfinite(t)) bad_param(fmt::format("temperature must be a finite number >= 0, got {}", t));
  auto s = std::make_unique<Temperature>();
  s->t = t;
  return s;
}

std::unique_ptr<Sampler> make_top_k_sampler(int64_t k) {
  auto s = std::make_unique<TopK>();
  s->k = k;
  return s;
}

std::unique_ptr<Sampler> make_top_p_sampler(float p, size_t min_keep) {
  if (!(p > 0.0f && p <= 1.0f)) bad_param(fmt::format("top_p must be in (0, 1], got {}", p));
  auto s = std::make_unique<TopP>();
  s->p = p;
  s->min_keep = std::max<size_t>(1, min_keep);
  return s;
}

std::unique_ptr<Sampler> make_min_p_sampler(float p, size_t min_keep) {
  if (!(p >= 0.0f && p <= 1.0f)) bad_param(fmt::format("min_p must be in [0, 1], got {}", p));
  auto s = std::make_unique<MinP>();
  s->p = p;
  s->min_keep = std::max<size_t>(1, min_keep);
  return s;
}

std::unique_ptr<Sampler> make_typical_sampler(float p, size_t min_keep) {
  if (!(p > 0.0f && p <= 1.0f)) bad_param(fmt::format("typical_p must be in (0, 1], got {}", p));
  auto s = std::make_unique<Typical>();
  s->p = p;
  s->min_keep = std::max<size_t>(1, min_keep);
  return s;
}

std::unique_ptr<Sampler> make_penalties_sampler(int64_t last_n, float repeat, float frequency, float presence) {
  if (last_n < -1) bad_param(fmt::format("penalty last_n must be >= -1 (-1 = whole history), got {}", last_n));
  if (!(repeat >= 1.0f && std::isfinite(repeat))) bad_param(fmt::format("repetition penalty must be >= 1, got {}", repeat));
  if (!(frequency >= -2.0f && frequency <= 2.0f)) bad_param(fmt::format("frequency penalty must be in [-2, 2], got {}", frequency));
  if (!(presence >= -2.0f && presence <= 2.0f)) bad_param(fmt::format("presence penalty must be in [-2, 2], got {}", presence));
  auto s = std::make_unique<Penalties>();
  s->last_n = last_n;
  s->repeat = repeat;
  s->frequency = frequency;
  s->presence = presence;
  return s;
}

std::unique_ptr<Sampler> make_logit_bias_sampler(std::map<int32_t, float> bias) {
  for (const auto& [id, b] : bias)
    if (id < 0 || !std::isfinite(b)) bad_param(fmt::format("logit bias {} for token {} is invalid", b, id));
  auto s = std::make_unique<LogitBias>();
  s->bias = std::move(bias);
  return s;
}

GenerationConfig load_generation_config(const std::string& dir) {
  GenerationConfig g;
  const auto path = std::filesystem::path(dir) / "generation_config.json";
  if (!std::filesystem::exists(path)) return g;
  std::ifstream f(path);
  std::ostringstream text;
  text << f.rdbuf();
  nlohmann::json j;
  try {
    j = parse_json_input(text.str());
  } catch (const JsonInputError& e) {
    throw Error(ErrorCode::Format, fmt::format("{}: not valid JSON: {}", path.string(), e.what()));
  }
  try {
    g.do_sample = j.value("do_sample", g.do_sample);
    g.temperature = j.value("temperature", g.temperature);
    g.top_p = j.value("top_p", g.top_p);
    g.top_k = j.value("top_k", g.top_k);
  } catch (const nlohmann::json::exception& e) {
    throw Error(ErrorCode::Format, fmt::format("{}: {}", path.string(), e.what()));
  }
  return g;
}

std::unique_ptr<SamplerChain> make_default_chain(const GenerationConfig& g, uint64_t seed) {
  auto chain = std::make_unique<SamplerChain>();
  if (!g.do_sample) {
    chain->add(make_greedy_sampler());
    return chain;
  }
  // transformers' order for these settings: temperature, then top-k, then top-p, then sampling.
  chain->add(make_temperature_sampler(g.temperature));
  if (g.top_k > 0) chain->add(make_top_k_sampler(g.top_k));
  if (g.top_p < 1.0f) chain->add(make_top_p_sampler(g.top_p));
  chain->add(make_dist_sampler(seed));
  return chain;
}

}  // namespace dsinfer
