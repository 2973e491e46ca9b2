/* Four threads run sessions on one shared model and tokenizer through the C ABI; each must get the tokens it gets
 * when run alone. Built and run under ThreadSanitizer by scripts/test.sh (DSINFER_TSAN). */
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "c_session.h"
#include "dsinfer.h"

#define N_THREADS 4
#define N_TOKENS 6

static dsinfer_model* g_model;
static dsinfer_tokenizer* g_tok;

typedef struct job {
  int index;
  int32_t out[N_TOKENS];
  size_t n;
  dsinfer_status status;
} job;

static void* run_job(void* arg) {
  job* j = (job*)arg;
  dsinfer_session_params p;
  dsinfer_generate_params g;
  dsinfer_session* s = NULL;
  int32_t prompt[4];
  int k;
  for (k = 0; k < 4; ++k) prompt[k] = 10 + 37 * j->index + k;
  DSINFER_SESSION_PARAMS_INIT(&p);
  p.capacity = 64;
  DSINFER_GENERATE_PARAMS_INIT(&g);
  g.max_tokens = N_TOKENS;
  g.stop_at_eos = 0;
  j->status = dsinfer_session_create(g_model, g_tok, &p, &s);
  if (j->status == DSINFER_OK) j->status = dsinfer_session_prefill(s, prompt, 4);
  if (j->status == DSINFER_OK) j->status = generate_to_end(s, &g);
  if (j->status == DSINFER_OK) j->status = dsinfer_session_generated(s, j->out, N_TOKENS, &j->n);
  dsinfer_session_free(s);
  return NULL;
}

int main(int argc, char** argv) {
  job alone[N_THREADS], together[N_THREADS];
  pthread_t th[N_THREADS];
  dsinfer_model_params mp;
  int i;
  if (argc < 2) return 2;
  DSINFER_MODEL_PARAMS_INIT(&mp);
  mp.n_threads = 2;
  if (dsinfer_model_load(argv[1], &mp, &g_model) != DSINFER_OK || dsinfer_tokenizer_load(argv[1], &g_tok) != DSINFER_OK) {
    fprintf(stderr, "load failed: %s\n", dsinfer_last_error());
    return 1;
  }
  for (i = 0; i < N_THREADS; ++i) {
    alone[i].index = together[i].index = i;
    run_job(&alone[i]);
  }
  for (i = 0; i < N_THREADS; ++i) pthread_create(&th[i], NULL, run_job, &together[i]);
  for (i = 0; i < N_THREADS; ++i) pthread_join(th[i], NULL);
  for (i = 0; i < N_THREADS; ++i) {
    if (alone[i].status != DSINFER_OK || together[i].status != DSINFER_OK || alone[i].n != together[i].n ||
        memcmp(alone[i].out, together[i].out, sizeof alone[i].out) != 0) {
      fprintf(stderr, "thread %d differs or failed (%d / %d)\n", i, (int)alone[i].status, (int)together[i].status);
      return 1;
    }
  }
  printf("%d threads on one model: every session's tokens equal its tokens alone\n", N_THREADS);
  {
    /* The same four prompts through the engine, in one forward per step: the same tokens again. */
    dsinfer_session* ss[N_THREADS];
    dsinfer_session_params p;
    dsinfer_generate_params g;
    int32_t prompt[4], out[N_TOKENS];
    size_t n;
    int k;
    DSINFER_SESSION_PARAMS_INIT(&p);
    p.capacity = 64;
    DSINFER_GENERATE_PARAMS_INIT(&g);
    g.max_tokens = N_TOKENS;
    g.stop_at_eos = 0;
    for (i = 0; i < N_THREADS; ++i) {
      for (k = 0; k < 4; ++k) prompt[k] = 10 + 37 * i + k;
      dsinfer_session_create(g_model, g_tok, &p, &ss[i]);
      dsinfer_session_prefill(ss[i], prompt, 4);
    }
    if (dsinfer_engine_generate(g_model, ss, N_THREADS, &g, NULL, NULL) != DSINFER_OK) {
      fprintf(stderr, "engine: %s\n", dsinfer_last_error());
      return 1;
    }
    for (i = 0; i < N_THREADS; ++i) {
      dsinfer_session_generated(ss[i], out, N_TOKENS, &n);
      if (n != alone[i].n || memcmp(out, alone[i].out, sizeof out) != 0) {
        fprintf(stderr, "engine session %d differs\n", i);
        return 1;
      }
      dsinfer_session_free(ss[i]);
    }
    printf("the engine gives the same tokens\n");
  }
  dsinfer_tokenizer_free(g_tok);
  dsinfer_model_free(g_model);
  return 0;
}
