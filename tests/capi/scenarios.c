/* The cross-front-door scenarios through the C ABI. The same scenarios run through the C++ API
 * (scenarios.cpp) and Python ctypes (examples/ctypes_scenarios.py); CTest requires the three outputs to be equal.
 *   scenarios MODEL_DIR BAD_MODEL_DIR */
#include <stdio.h>
#include <string.h>

#include "dsinfer.h"

static dsinfer_status force7(void* ud, dsinfer_candidates* c) {
  size_t i;
  (void)ud;
  for (i = 0; i < c->n; ++i)
    if (c->ids[i] == 7) c->selected = (int64_t)i;
  return DSINFER_OK;
}
static dsinfer_status fail(void* ud, dsinfer_candidates* c) {
  (void)ud;
  (void)c;
  return DSINFER_E_INVALID_ARG;
}

/* Runs a generation to its end; returns the status of the first failing call. */
static dsinfer_status run(dsinfer_session* s, int64_t max_tokens) {
  dsinfer_generate_params g;
  dsinfer_event ev;
  dsinfer_status st;
  DSINFER_GENERATE_PARAMS_INIT(&g);
  g.max_tokens = max_tokens;
  g.stop_at_eos = 0;
  st = dsinfer_session_generate_start(s, &g);
  if (st != DSINFER_OK) return st;
  for (;;) {
    ev.struct_size = sizeof ev;
    st = dsinfer_session_next_event(s, &ev);
    if (st != DSINFER_OK || ev.kind == DSINFER_EVENT_DONE) return st;
  }
}

static void print_generated(const char* name, dsinfer_session* s) {
  int32_t ids[64];
  size_t n = 0, i;
  dsinfer_session_generated(s, ids, 64, &n);
  printf("%s:", name);
  for (i = 0; i < n; ++i) printf("%s%d", i ? "," : " ", ids[i]);
  printf("\n");
}

static dsinfer_session* new_session(dsinfer_model* m, dsinfer_tokenizer* t) {
  dsinfer_session_params p;
  dsinfer_session* s = NULL;
  DSINFER_SESSION_PARAMS_INIT(&p);
  p.capacity = 256;
  p.precision = DSINFER_PRECISION_REFERENCE;
  dsinfer_session_create(m, t, &p, &s);
  return s;
}

int main(int argc, char** argv) {
  dsinfer_model* m = NULL;
  dsinfer_model* bad = NULL;
  dsinfer_tokenizer* t = NULL;
  dsinfer_session* s;
  dsinfer_sampler* sampler;
  dsinfer_sampler_iface iface;
  const int32_t prompt[5] = {0, 100, 200, 300, 400};
  const int32_t bad_ids[2] = {5, 99999};
  char* parsed = NULL;
  dsinfer_status st;
  if (argc < 3) return 2;
  if (dsinfer_model_load(argv[1], NULL, &m) != DSINFER_OK || dsinfer_tokenizer_load(argv[1], &t) != DSINFER_OK) {
    fprintf(stderr, "%s\n", dsinfer_last_error());
    return 1;
  }
  printf("load: %d\n", DSINFER_OK);

  s = new_session(m, t);
  dsinfer_session_prefill(s, prompt, 5);
  run(s, 16);
  print_generated("default16", s);
  dsinfer_session_free(s);

  st = dsinfer_model_load(argv[2], NULL, &bad);
  printf("bad_shard: %d %s\n", (int)st, bad == NULL ? "null" : "model");

  s = new_session(m, t);
  st = dsinfer_session_prefill(s, bad_ids, 2);
  printf("bad_token: %d\n", (int)st);
  dsinfer_session_free(s);

  st = dsinfer_chat_parse_completion("hi\n\n<｜DSML｜function_calls>\n<｜DSML｜invoke nam=\"f\">\n</｜DSML｜invoke>\n"
                                     "</｜DSML｜function_calls><｜end▁of▁sentence｜>", 0, &parsed);
  printf("malformed_tool: %d\n", (int)st);
  dsinfer_string_free(parsed);

  memset(&iface, 0, sizeof iface);
  iface.struct_size = sizeof iface;
  iface.apply = force7;
  iface.name = "force7";
  s = new_session(m, t);
  dsinfer_session_prefill(s, prompt, 5);
  dsinfer_sampler_custom_create(&iface, NULL, &sampler);
  dsinfer_session_set_sampler(s, sampler);
  run(s, 3);
  print_generated("force_token", s);
  dsinfer_session_free(s);

  iface.apply = fail;
  iface.name = "fails";
  s = new_session(m, t);
  dsinfer_session_prefill(s, prompt, 5);
  dsinfer_sampler_custom_create(&iface, NULL, &sampler);
  dsinfer_session_set_sampler(s, sampler);
  st = run(s, 3);
  printf("failing_sampler: %d\n", (int)st);
  dsinfer_session_free(s);

  dsinfer_tokenizer_free(t);
  dsinfer_model_free(m);
  return 0;
}
