// Speculative decoding (issue 18): with MTP drafts (v32-tiny-mtp) or a test drafter, a session's output, logits and
// caches are bitwise those of plain decoding, across block sizes, precisions, forks and restores; rejected drafts
// leave no trace in any cache (main, indexer, MTP).
#include <catch2/catch.hpp>
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <sstream>
#include <unistd.h>

#include "dsinfer/session.hpp"

using namespace dsinfer;
namespace fs = std::filesystem;

namespace {
const fs::path kModels = fs::path(DSINFER_MODELS_DIR);

struct Fixture {
  std::unique_ptr<Model> model;
  std::unique_ptr<Tokenizer> tok;
  explicit Fixture(const std::string& preset = "v32-tiny-mtp", int64_t block_tokens = 64) {
    ModelLoadParams p;
    p.n_threads = 2;
    p.kv_block_tokens = block_tokens;
    model = Model::load((kModels / preset).string(), p);
    tok = Tokenizer::load((kModels / preset).string());
  }
};

std::unique_ptr<SamplerChain> greedy_chain() {
  auto chain = std::make_unique<SamplerChain>();
  chain->add(make_greedy_sampler());
  return chain;
}

const std::vector<int32_t> kPrompt = {0, 1200, 33, 904, 2711, 15, 388, 1999, 73, 2048, 5, 640, 3001, 12, 907};

std::string file_bytes(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

// Session state as bytes: the cache (every layer: latents, rope keys, indexer keys), tokens, logits, pending id —
// without the MTP state a speculating session also saves (a plain session has none): the file as a session that
// does not speculate writes it after restoring it.
std::string state_bytes(const Model& model, const Tokenizer& tok, const Session& s, const std::string& tag) {
  const fs::path p = fs::temp_directory_path() / fmt::format("dsinfer-spec-{}-{}.bin", ::getpid(), tag);
  s.save(p.string());
  SessionParams plain;
  plain.capacity = s.tokens().size() + 16;
  Session r(model, tok, plain);
  r.restore(p.string());
  r.save(p.string());
  std::string b = file_bytes(p);
  fs::remove(p);
  return b;
}

struct Run {
  std::vector<int32_t> ids;
  std::string state;
  SpeculativeStats stats;
};

Run generate(const Fixture& f, SessionParams sp, int64_t n, bool greedy = true,
             const std::vector<int32_t>& prompt = kPrompt) {
  Session s(*f.model, *f.tok, sp);
  if (greedy) s.set_sampler(greedy_chain());
  s.prefill(prompt);
  GenerateParams g;
  g.max_tokens = n;
  g.stop_at_eos = false;
  s.generate(g);
  return {s.generated(), state_bytes(*f.model, *f.tok, s, "run"), s.speculative_stats()};
}

SessionParams spec_params(int64_t k, bool adaptive = false, Precision pr = Precision::Fp8) {
  SessionParams p;
  p.capacity = 256;
  p.eval.precision = pr;
  p.speculative.draft_tokens = k;
  p.speculative.adaptive = adaptive;
  return p;
}

// A drafter that proposes the known continuation `truth` (after the prompt), wrong at every `wrong`-th position.
SpeculativeParams oracle(const std::vector<int32_t>& truth, size_t prompt_len, int64_t k, int wrong) {
  SpeculativeParams sp;
  sp.draft_tokens = k;
  sp.adaptive = false;
  sp.drafter = [truth, prompt_len, wrong](std::span<const int32_t> ctx, int32_t, int64_t max, std::vector<int32_t>& out) {
    const size_t at = ctx.size() + 1 - prompt_len;  // index in truth of the first draft
    for (int64_t i = 0; i < max && at + size_t(i) < truth.size(); ++i) {
      const size_t j = at + size_t(i);
      out.push_back(wrong > 0 && (j * 7) % size_t(wrong) == 1 ? (truth[j] + 1) % 4000 : truth[j]);
    }
  };
  return sp;
}

}  // namespace

TEST_CASE("speculation needs an MTP module or a drafter, and a draft count in range", "[speculative]") {
  Fixture plain("v32-tiny");
  SessionParams p = spec_params(2);
  CHECK_THROWS_AS(Session(*plain.model, *plain.tok, p), Error);
  p.speculative.draft_tokens = Model::kMaxDraftTokens + 1;
  Fixture f;
  CHECK_THROWS_AS(Session(*f.model, *f.tok, p), Error);
  p.speculative.draft_tokens = -1;
  CHECK_THROWS_AS(Session(*f.model, *f.tok, p), Error);
  p.speculative = oracle({}, 0, 2, 0);
  CHECK_NOTHROW(Session(*plain.model, *plain.tok, p));
}

TEST_CASE("greedy with MTP speculation is bitwise plain greedy (block sizes, precisions)", "[speculative]") {
  for (int64_t block : {int64_t(1), int64_t(16), int64_t(64)}) {
    Fixture f("v32-tiny-mtp", block);
    for (Precision pr : {Precision::Fp8, Precision::Reference}) {
      const Run want = generate(f, spec_params(0, false, pr), 40);
      for (int64_t k : {int64_t(1), int64_t(3)}) {
        INFO("block " << block << ", precision " << int(pr) << ", k " << k);
        const Run got = generate(f, spec_params(k, false, pr), 40);
        CHECK(got.ids == want.ids);
        CHECK(got.state == want.state);  // caches, tokens and logits bitwise
        CHECK(got.stats.steps > 0);
        CHECK(got.stats.drafted > 0);
        CHECK(got.stats.drafted_at.size() == size_t(k));
      }
    }
  }
}

TEST_CASE("accepted and rejected drafts leave the caches as plain decoding does", "[speculative]") {
  for (int64_t block : {int64_t(1), int64_t(16)}) {
    Fixture f("v32-tiny-mtp", block);
    for (Precision pr : {Precision::Fp8, Precision::Reference}) {
    const Run want = generate(f, spec_params(0, false, pr), 48);
    for (int wrong : {0, 3, 5}) {
      for (int64_t k : {int64_t(1), int64_t(2), int64_t(4)}) {
        INFO("block " << block << ", precision " << int(pr) << ", wrong " << wrong << ", k " << k);
        SessionParams p = spec_params(k, false, pr);
        p.speculative = oracle(want.ids, kPrompt.size(), k, wrong);
        const Run got = generate(f, p, 48);
        CHECK(got.ids == want.ids);
        CHECK(got.state == want.state);
        CHECK(got.stats.accepted > 0);
        if (wrong == 0) CHECK(got.stats.accepted == got.stats.drafted);
        if (wrong > 0) CHECK(got.stats.accepted < got.stats.drafted);
        int64_t sum = 0;
        for (int64_t a : got.stats.accepted_at) sum += a;
        CHECK(sum == got.stats.accepted);
      }
    }
    }
  }
}

TEST_CASE("seeded sampling with speculation draws exactly the plain tokens", "[speculative]") {
  // The session's chain samples every token from the main model's logits as it would without speculation (one
  // draw per token), so the same seed gives the same tokens: the target distribution, exactly.
  Fixture f;
  SessionParams plain = spec_params(0);
  plain.seed = 1234;
  const Run want = generate(f, plain, 40, /*greedy=*/false);
  SessionParams p = spec_params(3);
  p.seed = 1234;
  const Run got = generate(f, p, 40, false);
  CHECK(got.ids == want.ids);
  CHECK(got.state == want.state);
  // And with an oracle drafter, so that drafts are accepted while sampling.
  p.speculative = oracle(want.ids, kPrompt.size(), 3, 4);
  const Run o = generate(f, p, 40, false);
  CHECK(o.ids == want.ids);
  CHECK(o.state == want.state);
  CHECK(o.stats.accepted > 0);
}

TEST_CASE("speculating sessions fork, share blocks and restore like plain ones", "[speculative]") {
  Fixture f("v32-tiny-mtp", 16);
  auto run = [&](const SessionParams& sp) {
    std::vector<std::vector<int32_t>> out;
    Session s(*f.model, *f.tok, sp);
    s.set_sampler(greedy_chain());
    s.prefill(kPrompt);
    GenerateParams g;
    g.max_tokens = 20;
    g.stop_at_eos = false;
    s.generate(g);
    out.push_back(s.generated());
    // A fork shares the parent's blocks (copy on write): both go on, each as if alone.
    auto child = s.fork();
    child->generate(g);
    out.push_back(child->generated());
    s.generate(g);
    out.push_back(s.generated());
    // Save and restore into a new session (the MTP cache is rebuilt from the tokens).
    const fs::path p = fs::temp_directory_path() / fmt::format("dsinfer-spec-fork-{}.bin", ::getpid());
    s.save(p.string());
    Session r(*f.model, *f.tok, sp);
    r.set_sampler(greedy_chain());
    r.restore(p.string());
    fs::remove(p);
    r.generate(g);
    out.push_back(r.generated());
    out.push_back(std::vector<int32_t>(r.tokens()));
    out.push_back(std::vector<int32_t>(child->tokens()));
    return out;
  };
  const auto want = run(spec_params(0));
  CHECK(run(spec_params(2)) == want);
  CHECK(run(spec_params(4, /*adaptive=*/true)) == want);
}

TEST_CASE("a restored speculating session goes on as the saved one", "[speculative]") {
  // The MTP state goes through Session::save/restore: the restored session saves the same file (a rebuilt MTP
  // state would differ: its rows would see zero hidden states), and both go on alike. That restored drafts are
  // bitwise the saved session's is test_mtp's "a saved sequence keeps its MTP state".
  Fixture f("v32-tiny-mtp", 16);
  const SessionParams sp = spec_params(2);
  Session s(*f.model, *f.tok, sp);
  s.set_sampler(greedy_chain());
  s.prefill(kPrompt);
  GenerateParams g;
  g.max_tokens = 16;
  g.stop_at_eos = false;
  s.generate(g);
  const fs::path p = fs::temp_directory_path() / fmt::format("dsinfer-spec-restore-{}.bin", ::getpid());
  s.save(p.string());
  Session r(*f.model, *f.tok, sp);
  r.set_sampler(greedy_chain());
  r.restore(p.string());
  const std::string saved = file_bytes(p);
  r.save(p.string());
  CHECK(file_bytes(p) == saved);
  fs::remove(p);
  s.reset_speculative_stats();
  s.generate(g);
  r.generate(g);
  CHECK(r.generated() == s.generated());
  CHECK(r.speculative_stats().drafted_at == s.speculative_stats().drafted_at);
  CHECK(state_bytes(*f.model, *f.tok, r, "restored") == state_bytes(*f.model, *f.tok, s, "saved"));
}

TEST_CASE("deferred MTP rows give the drafts of rows run every step", "[speculative]") {
  // Sequence A runs its MTP rows with every one-token evaluation; sequence B defers them (EvalOptions::defer_mtp)
  // through a cut among the deferred rows, past the 64-row limit (a catch-up inside an evaluation), into a copy
  // (which carries the deferred rows), and a draft (which runs them first). Every draft must be bitwise A's.
  Fixture f;
  EvalOptions o, od;
  od.defer_mtp = true;
  auto a = f.model->new_sequence(256), b = f.model->new_sequence(256);
  f.model->enable_mtp(*a, true);
  f.model->enable_mtp(*b, true);
  f.model->eval(*a, kPrompt, o);
  f.model->eval(*b, kPrompt, o);
  auto one = [&](Sequence& s, int32_t t, const EvalOptions& opts) {
    return f.model->eval(s, std::span<const int32_t>(&t, 1), opts);
  };
  auto drafts_equal = [&](Sequence& x, Sequence& y) {
    Model::DraftEntry dx, dy;
    dx.sequence = &x;
    dy.sequence = &y;
    dx.token = dy.token = 500;
    bool equal = true;
    for (int step = 0; step < 2; ++step) {
      f.model->mtp_draft(std::span<Model::DraftEntry>(&dx, 1), o);
      f.model->mtp_draft(std::span<Model::DraftEntry>(&dy, 1), o);
      equal = equal && !dx.logits.empty() && dx.logits == dy.logits;
      dx.token = dy.token = 601 + step;
    }
    return equal;
  };
  for (int32_t i = 0; i < 20; ++i) CHECK(one(*a, 100 + 7 * i, o) == one(*b, 100 + 7 * i, od));
  a->truncate(a->size() - 5);  // among B's 20 deferred rows
  b->truncate(b->size() - 5);
  CHECK(drafts_equal(*a, *b));  // runs B's 15 deferred rows
  for (int32_t i = 0; i < 80; ++i) CHECK(one(*a, 300 + 3 * i, o) == one(*b, 300 + 3 * i, od));  // 64 rows wait at most
  auto c = f.model->copy_sequence(*b);
  auto a2 = f.model->copy_sequence(*a);
  CHECK(drafts_equal(*a, *b));
  CHECK(drafts_equal(*a2, *c));
  // A forward that does not defer runs the waiting rows first.
  for (int32_t i = 0; i < 3; ++i) CHECK(one(*a, 900 + i, o) == one(*b, 900 + i, od));
  CHECK(one(*a, 950, o) == one(*b, 950, o));
  CHECK(drafts_equal(*a, *b));
}

TEST_CASE("a rejected draft leaves the MTP state as if never proposed", "[speculative]") {
  // Model level: sequence A decodes tokens one at a time; sequence B verifies [next, d1, d2, d3] in one exact-rows
  // forward and is cut back after d1 (d2, d3 rejected). Both then hold the same tokens: their next logits and
  // their MTP drafts (which read the MTP cache and the pending hidden state) must be bitwise equal.
  Fixture f;
  EvalOptions o;
  auto a = f.model->new_sequence(64), b = f.model->new_sequence(64);
  f.model->enable_mtp(*a, true);
  f.model->enable_mtp(*b, true);
  f.model->eval(*a, kPrompt, o);
  f.model->eval(*b, kPrompt, o);
  const std::vector<int32_t> verify = {100, 200, 300, 400};
  for (int i = 0; i < 2; ++i) f.model->eval(*a, std::span<const int32_t>(&verify[size_t(i)], 1), o);
  // B drafts first (rows that must vanish), then verifies.
  Model::DraftEntry d;
  d.sequence = b.get();
  d.token = 100;
  f.model->mtp_draft(std::span<Model::DraftEntry>(&d, 1), o);
  d.token = 7;
  f.model->mtp_draft(std::span<Model::DraftEntry>(&d, 1), o);
  Model::BatchEntry e;
  e.sequence = b.get();
  e.ids = verify;
  e.all_logits = true;
  e.exact_rows = true;
  f.model->eval_batch(std::span<Model::BatchEntry>(&e, 1), o);
  b->truncate(int64_t(kPrompt.size()) + 2);
  REQUIRE(a->size() == b->size());
  std::ostringstream sa, sb;
  f.model->save_sequence(*a, sa);
  f.model->save_sequence(*b, sb);
  CHECK(sa.str() == sb.str());
  Model::DraftEntry da, db;
  da.sequence = a.get();
  db.sequence = b.get();
  da.token = db.token = 500;
  for (int step = 0; step < 3; ++step) {
    f.model->mtp_draft(std::span<Model::DraftEntry>(&da, 1), o);
    f.model->mtp_draft(std::span<Model::DraftEntry>(&db, 1), o);
    CHECK(da.logits == db.logits);
    da.token = db.token = 600 + step;
  }
  // And the next evaluation (which forgets the drafts) gives both the same logits and MTP state again.
  const int32_t next = 321;
  CHECK(f.model->eval(*a, std::span<const int32_t>(&next, 1), o) == f.model->eval(*b, std::span<const int32_t>(&next, 1), o));
  da.token = db.token = 9;
  f.model->mtp_draft(std::span<Model::DraftEntry>(&da, 1), o);
  f.model->mtp_draft(std::span<Model::DraftEntry>(&db, 1), o);
  CHECK(da.logits == db.logits);
}

TEST_CASE("sessions stepped together by an engine each speculate and get their plain tokens", "[speculative][engine]") {
  Fixture f("v32-tiny-mtp", 16);
  const std::vector<std::vector<int32_t>> prompts = {
      kPrompt, {0, 9, 8, 7, 6, 5, 4, 3, 2, 1000, 2000, 3000}, {0, 3333, 17, 42, 4000, 12, 12, 12, 99, 100}};
  std::vector<Run> want;
  for (const auto& p : prompts) want.push_back(generate(f, spec_params(0), 30, true, p));
  SessionParams plain_seeded = spec_params(0);
  plain_seeded.seed = 77;
  const Run want_seeded = generate(f, plain_seeded, 30, false, prompts[0]);

  std::vector<std::unique_ptr<Session>> sessions;
  std::vector<SessionParams> params = {spec_params(2), spec_params(3), spec_params(0), spec_params(2, true)};
  params[1].speculative = oracle(want[1].ids, prompts[1].size(), 3, 4);
  params[3].seed = 77;
  for (size_t i = 0; i < params.size(); ++i) {
    sessions.push_back(std::make_unique<Session>(*f.model, *f.tok, params[i]));
    if (i < 3) sessions.back()->set_sampler(greedy_chain());
    sessions.back()->prefill(prompts[i < 3 ? i : 0]);
  }
  std::vector<Session*> ptrs;
  for (auto& s : sessions) ptrs.push_back(s.get());
  GenerateParams g;
  g.max_tokens = 30;
  g.stop_at_eos = false;
  Engine engine(*f.model);
  engine.generate(ptrs, g);
  for (size_t i = 0; i < 3; ++i) {
    INFO("session " << i);
    CHECK(sessions[i]->generated() == want[i].ids);
    CHECK(state_bytes(*f.model, *f.tok, *sessions[i], "engine") == want[i].state);
  }
  CHECK(sessions[3]->generated() == want_seeded.ids);
  CHECK(state_bytes(*f.model, *f.tok, *sessions[3], "engine-seeded") == want_seeded.state);
  CHECK(sessions[0]->speculative_stats().drafted > 0);
  CHECK(sessions[1]->speculative_stats().accepted > 0);
  CHECK(sessions[2]->speculative_stats().drafted == 0);
}

TEST_CASE("a verification is never split into multi-token chunks", "[speculative]") {
  // With max_chunk_tokens 2 a 4-token verification would be chunked into 2-token MHA forwards (other numerics in
  // reference precision); exact rows are evaluated whole.
  Fixture f;
  SessionParams plain = spec_params(0, false, Precision::Reference);
  plain.eval.max_chunk_tokens = 2;
  const Run want = generate(f, plain, 24);
  SessionParams p = spec_params(3, false, Precision::Reference);
  p.eval.max_chunk_tokens = 2;
  p.speculative = oracle(want.ids, kPrompt.size(), 3, 0);
  const Run got = generate(f, p, 24);
  CHECK(got.ids == want.ids);
  CHECK(got.state == want.state);
  CHECK(got.stats.accepted == got.stats.drafted);
}

TEST_CASE("the MTP caches count in the model's KV memory", "[speculative]") {
  Fixture f;
  const int64_t before = f.model->kv_cache_stats().bytes_used;
  Session s(*f.model, *f.tok, spec_params(2));
  s.prefill(kPrompt);
  const int64_t with_mtp = f.model->kv_cache_stats().bytes_used;
  Session plain(*f.model, *f.tok, spec_params(0));
  plain.prefill(kPrompt);
  const int64_t both = f.model->kv_cache_stats().bytes_used;
  // The speculating session holds its main blocks and its MTP blocks: more than the plain session's main blocks.
  CHECK(with_mtp - before > both - with_mtp);
}

namespace {
// Chi-square critical values at alpha = 0.001, by degrees of freedom 1..10.
constexpr double kChi2Critical001[] = {10.828, 13.816, 16.266, 18.467, 20.515, 22.458, 24.322, 26.124, 27.877, 29.588};

// Pearson's statistic of the observed counts against the expected probabilities, over the categories expected at
// least 5 times (the others merged into one); returns it and the degrees of freedom.
std::pair<double, int> chi_square(const std::map<int32_t, int64_t>& observed, const std::map<int32_t, double>& expected,
                                  int64_t n) {
  double stat = 0, merged_e = 0;
  int64_t merged_o = 0, categories = 0;
  for (const auto& [token, p] : expected) {
    const auto it = observed.find(token);
    const int64_t o = it == observed.end() ? 0 : it->second;
    if (p * double(n) >= 5) {
      stat += (double(o) - p * double(n)) * (double(o) - p * double(n)) / (p * double(n));
      ++categories;
    } else {
      merged_e += p * double(n);
      merged_o += o;
    }
  }
  for (const auto& [token, o] : observed)  // drawn outside the target's support: counted with the merged ones
    if (!expected.count(token)) merged_o += o;
  if (merged_e > 0) {
    stat += (double(merged_o) - merged_e) * (double(merged_o) - merged_e) / merged_e;
    ++categories;
  }
  return {stat, int(categories) - 1};
}
}  // namespace

TEST_CASE("speculative sampling reproduces the target distribution (chi-square at alpha 0.001)", "[speculative]") {
  // The bitwise test above shows the same seed draws the same tokens; this one checks the distribution itself, as
  // issue 18 asks. The sampler chain is top-k 8 then a seeded draw (temperature 1). The first token x0 is drawn
  // from the prompt's logits; the token after it, x1, from the logits of the verification forward, while the
  // drafter proposes the most likely x1 (accepted when the draw equals it, rejected otherwise). Over 1,500 seeds,
  // the x1 of the runs whose x0 is the likeliest first token v must follow p(· | prompt, v) computed from plain
  // logits; and the same samples must fail against the distribution after another first token (the test has power).
  Fixture f;
  constexpr int64_t kTopK = 8;
  auto chain = [&](uint64_t seed) {
    auto c = std::make_unique<SamplerChain>();
    c->add(make_top_k_sampler(kTopK));
    c->add(make_dist_sampler(seed));
    return c;
  };
  // The chain's distribution after `ids`: softmax over the top-k logits.
  auto target_after = [&](const std::vector<int32_t>& ids) {
    Session s(*f.model, *f.tok, spec_params(0));
    s.prefill(ids);
    const std::vector<float>& lg = s.last_logits();
    std::vector<int32_t> order(lg.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = int32_t(i);
    std::partial_sort(order.begin(), order.begin() + kTopK, order.end(),
                      [&](int32_t a, int32_t b) { return lg[size_t(a)] > lg[size_t(b)]; });
    double z = 0;
    for (int64_t i = 0; i < kTopK; ++i) z += std::exp(double(lg[size_t(order[size_t(i)])] - lg[size_t(order[0])]));
    std::map<int32_t, double> p;
    for (int64_t i = 0; i < kTopK; ++i)
      p[order[size_t(i)]] = std::exp(double(lg[size_t(order[size_t(i)])] - lg[size_t(order[0])])) / z;
    return std::make_pair(p, order);
  };
  const auto [first, first_order] = target_after(kPrompt);
  const int32_t v = first_order[0], other = first_order[1];
  std::vector<int32_t> after_v = kPrompt, after_other = kPrompt;
  after_v.push_back(v);
  after_other.push_back(other);
  const auto [target, target_order] = target_after(after_v);
  const auto wrong = target_after(after_other).first;
  const int32_t likely_x1 = target_order[0];

  SessionParams p = spec_params(2, /*adaptive=*/false);
  p.speculative.drafter = [likely_x1](std::span<const int32_t>, int32_t, int64_t max, std::vector<int32_t>& out) {
    for (int64_t i = 0; i < max; ++i) out.push_back(likely_x1);
  };
  Session base(*f.model, *f.tok, p);
  base.prefill(kPrompt);
  std::map<int32_t, int64_t> counts;
  int64_t n = 0, accepted = 0, rejected = 0;
  for (uint64_t seed = 1; seed <= 1500; ++seed) {
    auto s = base.fork();
    s->set_sampler(chain(seed));
    GenerateParams g;
    g.max_tokens = 3;  // x0, then x1 (and x2) from the verification of [x0, drafts]
    g.stop_at_eos = false;
    s->generate(g);
    const std::vector<int32_t>& ids = s->generated();
    REQUIRE(ids.size() == 3);
    accepted += s->speculative_stats().accepted;
    rejected += s->speculative_stats().drafted - s->speculative_stats().accepted;
    if (ids[0] != v) continue;
    ++counts[ids[1]];
    ++n;
  }
  INFO("runs with x0 = v: " << n << ", drafts accepted " << accepted << ", rejected " << rejected);
  REQUIRE(n >= 200);
  CHECK(accepted > 0);
  CHECK(rejected > 0);
  const auto [stat, df] = chi_square(counts, target, n);
  INFO("chi-square " << stat << " with " << df << " degrees of freedom");
  REQUIRE(df >= 1);
  REQUIRE(df <= 10);
  CHECK(stat < kChi2Critical001[df - 1]);
  const auto [wrong_stat, wrong_df] = chi_square(counts, wrong, n);
  INFO("against the wrong target: chi-square " << wrong_stat << " with " << wrong_df << " degrees of freedom");
  REQUIRE(wrong_df >= 1);
  CHECK(wrong_stat > kChi2Critical001[std::min(wrong_df, 10) - 1]);
}
