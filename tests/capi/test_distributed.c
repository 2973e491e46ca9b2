/* A distributed run through the C ABI, under `mpirun -np 2`: rank 0 loads the checkpoint distributed and generates
 * greedily through a session, then compares the tokens with those of an ordinary load in the same process; rank 1
 * serves with dsinfer_model_run_worker until rank 0 frees its model. Every rank makes the same distributed calls in the
 * same order whatever a check found (a rank that stopped early would leave the other waiting), so rank 0 frees its
 * distributed model before it reports a failure. */
#include <stdio.h>
#include <string.h>

#include "c_check.h"
#include "c_session.h"
#include "dsinfer.h"

#define N_TOKENS 12

/* Greedy continuation of a fixed prompt through the session API: the ids generated into `out` (N_TOKENS). */
static dsinfer_status generate(const dsinfer_model* m, const dsinfer_tokenizer* tok, int32_t* out, size_t* n) {
  dsinfer_session_params sp;
  dsinfer_generate_params gp;
  dsinfer_session* s = NULL;
  dsinfer_sampler* greedy = NULL;
  const int32_t prompt[6] = {0, 1000, 2000, 77, 3000, 12};
  dsinfer_status st;
  *n = 0;
  DSINFER_SESSION_PARAMS_INIT(&sp);
  sp.capacity = 64;
  DSINFER_GENERATE_PARAMS_INIT(&gp);
  gp.max_tokens = N_TOKENS;
  gp.stop_at_eos = 0;
  st = dsinfer_session_create(m, tok, &sp, &s);
  if (st == DSINFER_OK && (st = dsinfer_sampler_greedy_create(&greedy)) == DSINFER_OK)
    if ((st = dsinfer_session_set_sampler(s, greedy)) != DSINFER_OK) dsinfer_sampler_free(greedy);
  if (st == DSINFER_OK) st = dsinfer_session_prefill(s, prompt, sizeof prompt / sizeof prompt[0]);
  if (st == DSINFER_OK) st = generate_to_end(s, &gp);
  if (st == DSINFER_OK) st = dsinfer_session_generated(s, out, N_TOKENS, n);
  dsinfer_session_free(s);
  return st;
}

static int rank0(const char* dir, const dsinfer_model_params* dist_params) {
  dsinfer_model *dist = NULL, *local = NULL;
  dsinfer_tokenizer* tok = NULL;
  dsinfer_model_params local_params;
  int32_t dist_ids[N_TOKENS], local_ids[N_TOKENS];
  size_t n_dist = 0, n_local = 0;
  int32_t ranks, split;
  int64_t bytes0, bytes1, bytes2, whole;
  dsinfer_status loaded, generated = DSINFER_E_INTERNAL;

  loaded = dsinfer_model_load(dir, dist_params, &dist);
  if (loaded == DSINFER_OK && (generated = dsinfer_tokenizer_load(dir, &tok)) == DSINFER_OK)
    generated = generate(dist, tok, dist_ids, &n_dist);
  if (loaded != DSINFER_OK || generated != DSINFER_OK) fprintf(stderr, "distributed: %s\n", dsinfer_last_error());
  ranks = dsinfer_model_distributed_ranks(dist);
  bytes0 = dsinfer_model_rank_weight_bytes(dist, 0);
  bytes1 = dsinfer_model_rank_weight_bytes(dist, 1);
  bytes2 = dsinfer_model_rank_weight_bytes(dist, 2);
  split = dsinfer_model_attention_split_by_heads(dist);
  dsinfer_model_free(dist); /* rank 1's dsinfer_model_run_worker returns */
  CHECK(loaded == DSINFER_OK && generated == DSINFER_OK);

  DSINFER_MODEL_PARAMS_INIT(&local_params);
  local_params.n_threads = 1;
  CHECK(dsinfer_model_load(dir, &local_params, &local) == DSINFER_OK);
  CHECK(generate(local, tok, local_ids, &n_local) == DSINFER_OK);
  whole = dsinfer_model_rank_weight_bytes(local, 0);
  dsinfer_model_free(local);
  dsinfer_tokenizer_free(tok);

  CHECK(n_dist == N_TOKENS && n_local == N_TOKENS);
  CHECK(memcmp(dist_ids, local_ids, sizeof dist_ids) == 0);
  CHECK(ranks == 2 && bytes2 == 0);
  CHECK(split == 1 && dsinfer_model_attention_split_by_heads(NULL) == 0); /* v32-tiny: 4 heads of 128 kv_b rows */
  /* Each rank holds its half of the routed experts and the replicated rest: less than the whole, more than half. */
  CHECK(bytes0 > whole / 2 && bytes0 < whole && bytes1 > whole / 2 && bytes1 < whole);
  return 0;
}

static int worker(const char* dir, const dsinfer_model_params* p) {
  dsinfer_model* m = NULL;
  /* Only rank 0 loads the model it uses (refused before anything collective, so rank 0 is not kept waiting). */
  const dsinfer_status loaded = dsinfer_model_load(dir, p, &m);
  const int names_rank = strstr(dsinfer_last_error(), "rank 1") != NULL;
  const dsinfer_status served = dsinfer_model_run_worker(dir, p);
  CHECK(served == DSINFER_OK);
  CHECK(loaded == DSINFER_E_INVALID_ARG && m == NULL && names_rank);
  return 0;
}

int main(int argc, char** argv) {
  dsinfer_model_params p;
  int32_t rank = -1, size = 0;
  int failed;
  if (argc != 2) {
    fprintf(stderr, "usage: mpirun -np 2 %s V32_TINY_DIR\n", argv[0]);
    return 2;
  }
  CHECK(dsinfer_distributed_rank(&rank, &size) == DSINFER_OK);
  CHECK(size == 2 && rank >= 0 && rank < 2);
  DSINFER_MODEL_PARAMS_INIT(&p);
  p.n_threads = 1; /* two ranks share this machine's cores */
  p.distributed = 1;
  p.distributed_timeout_s = 120;
  failed = rank == 0 ? rank0(argv[1], &p) : worker(argv[1], &p);
  if (!failed) printf("rank %d: distributed C OK\n", (int)rank);
  return failed;
}
