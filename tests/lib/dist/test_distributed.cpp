// Distributed runs (docs/distributed.md), started by CTest under `mpirun -np N` (N = 1, 2, 4): rank 0 runs every
// scenario on the distributed model and on an ordinary one-process model of the same checkpoint and checks that the
// logits are bitwise the same; the other ranks serve (Model::run_worker). Not Catch2: every rank must make the same
// loads in the same order, whatever a check found, so failures are counted and reported at the end.
#include <dsinfer/dsinfer.hpp>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <algorithm>
#include <cstring>
#include <sstream>
#include <thread>
#include <string>
#include <vector>

#include <unistd.h>

using namespace dsinfer;

namespace {

int failures = 0;
#define CHECK(cond)                                                            \
  do {                                                                         \
    if (!(cond)) {                                                             \
      std::fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
      ++failures;                                                              \
    }                                                                          \
  } while (0)

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

std::vector<int32_t> prompt(int n, int32_t vocab, int32_t seed) {
  std::vector<int32_t> ids;
  uint32_t x = uint32_t(seed) * 2654435761u + 1;
  for (int i = 0; i < n; ++i) {
    x = x * 1664525u + 1013904223u;
    ids.push_back(int32_t((x >> 8) % uint32_t(vocab)));
  }
  return ids;
}

int32_t argmax(const std::vector<float>& v, int64_t V) {
  int64_t best = 0;
  for (int64_t i = 1; i < V; ++i)
    if (v[size_t(i)] > v[size_t(best)]) best = i;
  return int32_t(best);
}

// Every scenario on `dist` (distributed) and `ref` (one process): each must give bitwise the same logits.
void scenarios(const Model& dist, const Model& ref, const std::string& name) {
  const int64_t V = ref.info().vocab_size;
  std::fprintf(stderr, "[rank 0] %s: %d ranks\n", name.c_str(), dist.info().distributed_ranks);
  // 1. A prompt longer than index_topk (DSA selects), all logits, both precisions; then greedy decode.
  for (Precision precision : {Precision::Fp8, Precision::Reference}) {
    EvalOptions o;
    o.precision = precision;
    o.all_logits = true;
    auto sd = dist.new_sequence(128), sr = ref.new_sequence(128);
    const auto ids = prompt(40, int32_t(V), 1);
    CHECK(same_bits(dist.eval(*sd, ids, o), ref.eval(*sr, ids, o)));
    o.all_logits = false;
    std::vector<float> ld = dist.eval(*sd, std::vector<int32_t>{7}, o), lr = ref.eval(*sr, std::vector<int32_t>{7}, o);
    for (int step = 0; step < 6; ++step) {
      CHECK(same_bits(ld, lr));
      const int32_t next = argmax(lr, V);
      ld = dist.eval(*sd, std::vector<int32_t>{next}, o);
      lr = ref.eval(*sr, std::vector<int32_t>{next}, o);
    }
    CHECK(same_bits(ld, lr));
  }
  // 2. A ragged batch (a prefill and decodes of forked and cut sequences), chunked prefill, save and restore.
  {
    EvalOptions o;
    auto a_d = dist.new_sequence(256), a_r = ref.new_sequence(256);
    const auto p = prompt(30, int32_t(V), 2);
    CHECK(same_bits(dist.eval(*a_d, p, o), ref.eval(*a_r, p, o)));
    auto b_d = dist.copy_sequence(*a_d), b_r = ref.copy_sequence(*a_r);
    b_d->truncate(20);
    b_r->truncate(20);
    auto c_d = dist.new_sequence(256), c_r = ref.new_sequence(256);
    const auto q = prompt(25, int32_t(V), 3);
    std::vector<int32_t> one = {11}, two = {12, 13};
    Model::BatchEntry ed[3], er[3];
    ed[0].sequence = a_d.get(); ed[0].ids = one;
    ed[1].sequence = b_d.get(); ed[1].ids = two; ed[1].exact_rows = true; ed[1].all_logits = true;
    ed[2].sequence = c_d.get(); ed[2].ids = q; ed[2].all_logits = true;
    er[0].sequence = a_r.get(); er[0].ids = one;
    er[1].sequence = b_r.get(); er[1].ids = two; er[1].exact_rows = true; er[1].all_logits = true;
    er[2].sequence = c_r.get(); er[2].ids = q; er[2].all_logits = true;
    dist.eval_batch(ed, o);
    ref.eval_batch(er, o);
    for (int i = 0; i < 3; ++i) CHECK(same_bits(ed[i].logits, er[i].logits));
    EvalOptions chunked = o;
    chunked.max_chunk_tokens = 16;
    auto d_d = dist.new_sequence(256), d_r = ref.new_sequence(256);
    const auto longp = prompt(70, int32_t(V), 4);
    CHECK(same_bits(dist.eval(*d_d, longp, chunked), ref.eval(*d_r, longp, chunked)));
    std::stringstream file;
    dist.save_sequence(*d_d, file);
    auto e_d = dist.load_sequence(file, 256);
    CHECK(e_d->size() == 70);
    CHECK(same_bits(dist.eval(*e_d, one, o), ref.eval(*d_r, one, o)));
    // An empty sequence restored (no rows to send): the ranks stay in step.
    std::stringstream empty_file;
    dist.save_sequence(*dist.new_sequence(8), empty_file);
    auto f_d = dist.load_sequence(empty_file, 64);
    auto f_r = ref.new_sequence(64);
    CHECK(f_d->size() == 0);
    CHECK(same_bits(dist.eval(*f_d, p, o), ref.eval(*f_r, p, o)));
    // A failing call fails on rank 0 and leaves every rank in step: the next calls still agree.
    bool threw = false;
    try {
      dist.eval(*e_d, std::vector<int32_t>{int32_t(V)}, o);
    } catch (const Error& e) {
      threw = e.code() == ErrorCode::InvalidArgument;
    }
    CHECK(threw);
    CHECK(same_bits(dist.eval(*a_d, two, o), ref.eval(*a_r, two, o)));
    dist.release_memory();
  }
  // 3. MTP drafting (the MTP layer is a MoE layer: its experts are shared out too).
  if (ref.info().has_mtp) {
    EvalOptions o;
    auto sd = dist.new_sequence(128), sr = ref.new_sequence(128);
    dist.enable_mtp(*sd, true);
    ref.enable_mtp(*sr, true);
    const auto p = prompt(24, int32_t(V), 5);
    CHECK(same_bits(dist.eval(*sd, p, o), ref.eval(*sr, p, o)));
    Model::DraftEntry dd[1], dr[1];
    dd[0].sequence = sd.get();
    dr[0].sequence = sr.get();
    for (int32_t t : {3, 9}) {
      dd[0].token = t;
      dr[0].token = t;
      dist.mtp_draft(dd, o);
      ref.mtp_draft(dr, o);
      CHECK(same_bits(dd[0].logits, dr[0].logits));
    }
    // MTP enabled on a sequence that already holds tokens (its MTP rows rebuilt), then a draft.
    auto td = dist.new_sequence(128), tr = ref.new_sequence(128);
    CHECK(same_bits(dist.eval(*td, p, o), ref.eval(*tr, p, o)));
    dist.enable_mtp(*td, true, p);
    ref.enable_mtp(*tr, true, p);
    dd[0].sequence = td.get();
    dr[0].sequence = tr.get();
    dist.mtp_draft(dd, o);
    ref.mtp_draft(dr, o);
    CHECK(same_bits(dd[0].logits, dr[0].logits));
    // Saved with its MTP state and restored (every rank gets the MTP rows from rank 0): the drafts go on alike.
    std::stringstream file;
    dist.save_sequence(*sd, file);
    auto ud = dist.load_sequence(file, 128);
    CHECK(dist.mtp_enabled(*ud));
    const std::vector<int32_t> next = {7};
    CHECK(same_bits(dist.eval(*ud, next, o), ref.eval(*sr, next, o)));
    dd[0].sequence = ud.get();
    dr[0].sequence = sr.get();
    dd[0].token = dr[0].token = 4;
    dist.mtp_draft(dd, o);
    ref.mtp_draft(dr, o);
    CHECK(same_bits(dd[0].logits, dr[0].logits));
  }
}

// The weight bytes each rank holds: the whole model less its routed experts and lm_head, plus the rank's consecutive
// share of them (experts [E·r/W, E·(r+1)/W) of every MoE layer, the MTP layer's included; its lm_head rows), from
// config.json.
void check_shares(const Model& dist, const Model& ref, const std::string& dir) {
  const ModelInfo& d = dist.info();
  const int W = d.distributed_ranks;
  CHECK(int(d.rank_weight_bytes.size()) == W);
  const int64_t whole = ref.info().rank_weight_bytes.at(0);
  CHECK(whole == ref.info().weight_bytes + ref.info().mtp_weight_bytes);
  std::ifstream f(dir + "/config.json");
  const nlohmann::json c = nlohmann::json::parse(f);
  const int64_t E = c["n_routed_experts"], D = c["hidden_size"], inner = c["moe_intermediate_size"];
  const int64_t moe_layers = int64_t(c["num_hidden_layers"]) - int64_t(c["first_k_dense_replace"]) +
                             (ref.info().has_mtp ? 1 : 0);
  const int64_t expert_bytes = 3 * inner * D * (ref.info().fp8_weights ? 1 : 2) * moe_layers;
  // The lm_head (BF16, not tied in these models) is split by vocab rows: ceil(V / W) per rank, the last the rest.
  const int64_t V = c["vocab_size"], per_rank = (V + W - 1) / W, lm_row_bytes = D * 2;
  // The attention projections by rows (docs/distributed.md), in every attention layer (the MTP layer's too): with
  // split heads, q_b's rows of a rank's heads; o_proj's rows of a rank's share of the hidden features. An FP8 weight
  // is split only where a rank's rows start on a 128-row scale block.
  const int64_t H = c["num_attention_heads"], qk = int64_t(c["qk_nope_head_dim"]) + int64_t(c["qk_rope_head_dim"]);
  const int64_t dv = c["v_head_dim"], q_rank = c["q_lora_rank"], wbytes = ref.info().fp8_weights ? 1 : 2;
  const int64_t attn_layers = int64_t(c["num_hidden_layers"]) + (ref.info().has_mtp ? 1 : 0);
  const bool fp8 = ref.info().fp8_weights;
  const bool split_q = d.attention_split_by_heads && (!fp8 || (H / W * qk) % 128 == 0);
  const bool split_o = W > 1 && D % W == 0 && (!fp8 || (D / W) % 128 == 0);
  const int64_t q_saved = split_q ? attn_layers * (H - H / W) * qk * q_rank * wbytes : 0;
  const int64_t o_saved = split_o ? attn_layers * (D - D / W) * H * dv * wbytes : 0;
  std::fprintf(stderr, "[rank 0] %s: q_b split %d, o_proj split %d\n", dir.c_str(), int(split_q), int(split_o));
  for (int r = 0; r < W; ++r) {
    const int64_t owned = E * (r + 1) / W - E * r / W;
    const int64_t vocab_rows = W == 1 ? V : std::min(V, per_rank * (r + 1)) - std::min(V, per_rank * r);
    const int64_t expected = whole - E * expert_bytes + owned * expert_bytes - V * lm_row_bytes +
                             vocab_rows * lm_row_bytes - q_saved - o_saved;
    CHECK(d.rank_weight_bytes[size_t(r)] == expected);
    if (d.rank_weight_bytes[size_t(r)] != expected) std::fprintf(stderr, "expected %lld\n", (long long)expected);
    std::fprintf(stderr, "[rank 0] %s: rank %d holds %lld of %lld weight bytes (%lld routed experts)\n", dir.c_str(), r,
                 (long long)d.rank_weight_bytes[size_t(r)], (long long)whole, (long long)owned);
  }
}

}  // namespace

// Runs f, which must fail with an Error: prints what it gave and after how long (the lines the CTest cases match),
// and returns the code and message. Then the caller checks them and leaves with exit_verdict.
struct Failure {
  ErrorCode code = ErrorCode::Ok;
  std::string message;
  double seconds = 0;
};
template <class F>
Failure expect_failure(const char* what, F&& f) {
  Failure out;
  const auto start = std::chrono::steady_clock::now();
  try {
    f();
  } catch (const Error& e) {
    out.code = e.code();
    out.message = e.what();
  }
  out.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::fprintf(stderr, "[rank 0] %s: %s after %.1f s: %s\n", what, error_code_name(out.code), out.seconds,
               out.message.c_str());
  return out;
}

// Rank 0's verdict, then an immediate exit: MPI cannot finalize while a peer is dead or was never joined.
[[noreturn]] void exit_verdict() {
  std::fprintf(stderr, "[rank 0] %d failure(s)\n", failures);
  std::fflush(stderr);
  std::_Exit(failures == 0 ? 0 : 1);
}

// `test_distributed MODELS_DIR --kill-worker PID_FILE`: rank 1 is killed (SIGKILL) while rank 0 holds the model;
// rank 0's next evaluation must fail with Error(Device) within the timeout, not hang. Exit status 0 when it did.
int kill_worker(const std::string& models, const std::string& pid_file, const Model::DistributedRank& place) {
  ModelLoadParams params;
  params.distributed = true;
  params.n_threads = 1;
  params.distributed_timeout_s = 5;
  const std::string dir = models + "/v32-tiny";
  if (place.rank != 0) {
    if (place.rank == 1) std::ofstream(pid_file) << getpid() << "\n";
    Model::run_worker(dir, params);
    return 0;
  }
  const auto model = Model::load(dir, params);  // returns once every rank has loaded: rank 1 wrote its pid
  long pid = 0;
  std::ifstream(pid_file) >> pid;
  CHECK(pid > 0);
  if (pid > 0) kill(pid_t(pid), SIGKILL);
  const Failure f = expect_failure("after killing rank 1", [&] {
    auto seq = model->new_sequence(64);  // (may already fail: the broadcast finds the peer gone)
    for (int i = 0; i < 100; ++i) model->eval(*seq, std::vector<int32_t>{int32_t(1 + i)});
  });
  CHECK(f.code == ErrorCode::Device);
  CHECK(f.seconds < 30);
  exit_verdict();
}

// `test_distributed MODELS_DIR --no-workers`: the other ranks never call run_worker; rank 0's load must fail with
// Error(Device) saying they did not join, after its 3 s timeout, instead of waiting forever.
int no_workers(const std::string& models, const Model::DistributedRank& place) {
  if (place.rank != 0) {
    std::this_thread::sleep_for(std::chrono::seconds(20));  // alive, but never joining (mpirun ends it sooner)
    std::_Exit(0);
  }
  ModelLoadParams params;
  params.distributed = true;
  params.n_threads = 1;
  params.distributed_timeout_s = 3;
  const Failure f = expect_failure("without workers", [&] { Model::load(models + "/v32-tiny", params); });
  CHECK(f.code == ErrorCode::Device);
  CHECK(f.message.find("did not join") != std::string::npos);
  CHECK(f.seconds < 20);
  exit_verdict();
}

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: mpirun -np N test_distributed MODELS_DIR [--kill-worker PID_FILE | --no-workers]\n");
    return 2;
  }
  const std::string models = argv[1];
  const Model::DistributedRank place = Model::distributed_rank();
  if (argc == 4 && std::string(argv[2]) == "--kill-worker") return kill_worker(models, argv[3], place);
  if (argc == 3 && std::string(argv[2]) == "--no-workers") return no_workers(models, place);
  ModelLoadParams params;
  params.distributed = true;
  params.n_threads = 1;  // the ranks share the machine's cores
  params.kv_cache_tokens = 4096;
  if (place.rank != 0) {
    // A worker that calls load instead is told what to do (a local check: no rank waits for it).
    bool threw = false;
    try {
      Model::load(models + "/v32-tiny", params);
    } catch (const Error& e) {
      threw = e.code() == ErrorCode::InvalidArgument && std::string(e.what()).find("run_worker") != std::string::npos;
    }
    CHECK(threw);
  }
  for (const char* name : {"v32-tiny-mtp", "v3-tiny", "v32-tiny-bf16"}) {
    const std::string dir = models + "/" + name;
    try {
      if (place.rank != 0) {
        Model::run_worker(dir, params);
        continue;
      }
      ModelLoadParams one = params;
      one.distributed = false;
      const auto ref = Model::load(dir, one);
      const auto dist = Model::load(dir, params);
      CHECK(dist->info().distributed_ranks == place.size);
      // The small models' 4 heads of 128 kv_b rows split over 2 and 4 ranks (each rank a whole 128-row block); 3
      // ranks compute every head (and split 16 experts and 4096 vocab rows unevenly).
      CHECK(dist->info().attention_split_by_heads == (place.size > 1 && 4 % place.size == 0));
      CHECK(dist->fingerprint() == ref->fingerprint());
      check_shares(*dist, *ref, dir);
      scenarios(*dist, *ref, name);
    } catch (const Error& e) {
      std::fprintf(stderr, "[rank %d] %s: %s\n", place.rank, name, e.what());
      ++failures;
    }
  }
  std::fprintf(stderr, "[rank %d] %d failure(s)\n", place.rank, failures);
  return failures == 0 ? 0 : 1;
}
