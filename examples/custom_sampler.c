/* Example (C): a user sampler in a chain with built-ins — it bans one token and counts its calls; then a sampler
 * that fails, and the error it produces.
 *   example_custom_sampler_c MODEL_DIR */
#include <stdio.h>

#include "dsinfer.h"

typedef struct ban_state {
  int32_t banned;
  int calls;
} ban_state;

/* Moves the banned token out of the candidates (swap with the last one, shrink by one). */
static dsinfer_status ban_apply(void* ud, dsinfer_candidates* c) {
  ban_state* st = (ban_state*)ud;
  size_t i;
  st->calls++;
  for (i = 0; i < c->n; ++i)
    if (c->ids[i] == st->banned) {
      c->ids[i] = c->ids[c->n - 1];
      c->logits[i] = c->logits[c->n - 1];
      c->n--;
      break;
    }
  return DSINFER_OK;
}

static dsinfer_status always_fails(void* ud, dsinfer_candidates* c) {
  (void)ud;
  (void)c;
  return DSINFER_E_INVALID_ARG;
}

static dsinfer_status generate(dsinfer_session* s, int64_t n) {
  dsinfer_generate_params g;
  dsinfer_event ev;
  dsinfer_status st;
  DSINFER_GENERATE_PARAMS_INIT(&g);
  g.max_tokens = n;
  g.stop_at_eos = 0;
  if ((st = dsinfer_session_generate_start(s, &g)) != DSINFER_OK) return st;
  do {
    ev.struct_size = sizeof ev;
    st = dsinfer_session_next_event(s, &ev);
  } while (st == DSINFER_OK && ev.kind != DSINFER_EVENT_DONE);
  return st;
}

int main(int argc, char** argv) {
  dsinfer_model* model = NULL;
  dsinfer_tokenizer* tok = NULL;
  dsinfer_session* s = NULL;
  dsinfer_sampler *chain = NULL, *ban = NULL, *topk = NULL, *dist = NULL, *bad = NULL;
  dsinfer_sampler_iface iface = {sizeof(dsinfer_sampler_iface), ban_apply, NULL, NULL, "ban"};
  ban_state state;
  const int32_t prompt[3] = {0, 100, 200};
  int32_t out[16];
  size_t n = 0, i;
  dsinfer_status st;
  if (argc < 2) return 2;
  if (dsinfer_model_load(argv[1], NULL, &model) || dsinfer_tokenizer_load(argv[1], &tok) ||
      dsinfer_session_create(model, tok, NULL, &s)) {
    fprintf(stderr, "%s\n", dsinfer_last_error());
    return 1;
  }
  dsinfer_session_prefill(s, prompt, 3);
  /* Find what greedy would pick first, then ban it. */
  dsinfer_sampler_greedy_create(&chain);
  dsinfer_session_set_sampler(s, chain); /* the session owns it now */
  {
    dsinfer_session* probe = NULL;
    dsinfer_session_fork(s, &probe);
    generate(probe, 1);
    dsinfer_session_generated(probe, out, 16, &n);
    dsinfer_session_free(probe);
  }
  state.banned = out[0];
  state.calls = 0;
  dsinfer_sampler_chain_create(&chain);
  dsinfer_sampler_custom_create(&iface, &state, &ban);
  dsinfer_sampler_top_k_create(5, &topk);
  dsinfer_sampler_dist_create(42, &dist);
  dsinfer_sampler_chain_add(chain, ban); /* the chain takes ownership of each on success */
  dsinfer_sampler_chain_add(chain, topk);
  dsinfer_sampler_chain_add(chain, dist);
  dsinfer_session_set_sampler(s, chain);
  generate(s, 8);
  dsinfer_session_generated(s, out, 16, &n);
  printf("banned %d; %d calls; tokens:", state.banned, state.calls);
  for (i = 0; i < n; ++i) {
    printf(" %d", out[i]);
    if (out[i] == state.banned) return 1;
  }
  printf("\n");

  iface.apply = always_fails;
  iface.name = "always_fails";
  dsinfer_sampler_custom_create(&iface, NULL, &bad);
  dsinfer_session_set_sampler(s, bad);
  st = generate(s, 2);
  printf("failing sampler: status %d (%s): %s\n", (int)st, dsinfer_status_name(st), dsinfer_last_error());
  dsinfer_session_free(s);
  dsinfer_tokenizer_free(tok);
  dsinfer_model_free(model);
  return st == DSINFER_E_INVALID_ARG ? 0 : 1;
}
