/* A C session samples with the checkpoint's generation_config.json unless told otherwise: its default chain gives
 * the tokens of the explicit chain temperature 1.0 -> top_p 0.95 -> dist(0) (v32-tiny's generation_config.json),
 * not greedy's. */
#include <stdio.h>
#include <string.h>

#include "c_session.h"
#include "dsinfer.h"

#define N_TOKENS 24

static dsinfer_model* g_model;
static dsinfer_tokenizer* g_tok;

/* 0 = default chain, 1 = explicit generation_config chain, 2 = greedy. */
static dsinfer_status run(int which, int32_t* out, size_t* n) {
  dsinfer_session_params p;
  dsinfer_generate_params g;
  dsinfer_session* s = NULL;
  dsinfer_sampler *chain = NULL, *stage = NULL;
  const int32_t prompt[3] = {0, 1000, 2000};
  dsinfer_status st;
  DSINFER_SESSION_PARAMS_INIT(&p);
  p.capacity = 64;
  DSINFER_GENERATE_PARAMS_INIT(&g);
  g.max_tokens = N_TOKENS;
  g.stop_at_eos = 0;
  st = dsinfer_session_create(g_model, g_tok, &p, &s);
  if (st == DSINFER_OK && which != 0) {
    st = dsinfer_sampler_chain_create(&chain);
    if (st == DSINFER_OK && which == 1) {
      if ((st = dsinfer_sampler_temperature_create(1.0f, &stage)) == DSINFER_OK) st = dsinfer_sampler_chain_add(chain, stage);
      if (st == DSINFER_OK && (st = dsinfer_sampler_top_p_create(0.95f, &stage)) == DSINFER_OK)
        st = dsinfer_sampler_chain_add(chain, stage);
      if (st == DSINFER_OK && (st = dsinfer_sampler_dist_create(0, &stage)) == DSINFER_OK)
        st = dsinfer_sampler_chain_add(chain, stage);
    } else if (st == DSINFER_OK) {
      if ((st = dsinfer_sampler_greedy_create(&stage)) == DSINFER_OK) st = dsinfer_sampler_chain_add(chain, stage);
    }
    if (st == DSINFER_OK) st = dsinfer_session_set_sampler(s, chain);
  }
  if (st == DSINFER_OK) st = dsinfer_session_prefill(s, prompt, 3);
  if (st == DSINFER_OK) st = generate_to_end(s, &g);
  if (st == DSINFER_OK) st = dsinfer_session_generated(s, out, N_TOKENS, n);
  dsinfer_session_free(s);
  return st;
}

int main(int argc, char** argv) {
  dsinfer_model_params mp;
  int32_t by_default[N_TOKENS], configured[N_TOKENS], greedy[N_TOKENS];
  size_t n0 = 0, n1 = 0, n2 = 0;
  if (argc < 2) return 2;
  DSINFER_MODEL_PARAMS_INIT(&mp);
  mp.n_threads = 2;
  if (dsinfer_model_load(argv[1], &mp, &g_model) != DSINFER_OK || dsinfer_tokenizer_load(argv[1], &g_tok) != DSINFER_OK) {
    fprintf(stderr, "load failed: %s\n", dsinfer_last_error());
    return 1;
  }
  if (run(0, by_default, &n0) != DSINFER_OK || run(1, configured, &n1) != DSINFER_OK ||
      run(2, greedy, &n2) != DSINFER_OK) {
    fprintf(stderr, "generation failed: %s\n", dsinfer_last_error());
    return 1;
  }
  if (n0 != N_TOKENS || n1 != N_TOKENS || memcmp(by_default, configured, sizeof by_default) != 0) {
    fprintf(stderr, "the default chain is not generation_config.json's\n");
    return 1;
  }
  if (n2 == N_TOKENS && memcmp(by_default, greedy, sizeof greedy) == 0) {
    fprintf(stderr, "the default chain samples greedily\n");
    return 1;
  }
  printf("the default sampler is the checkpoint's generation_config.json\n");
  dsinfer_tokenizer_free(g_tok);
  dsinfer_model_free(g_model);
  return 0;
}
