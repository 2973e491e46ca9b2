/* Speculative decoding through the C ABI (issue 18): the appended dsinfer_session_params fields switch it on, the
 * greedy output is the plain one, the stats are readable (also into an older, smaller struct), a caller whose
 * struct predates the fields gets no speculation, and a checkpoint without an MTP module is refused. */
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "c_session.h"
#include "dsinfer.h"

#define N_TOKENS 24

static dsinfer_model *g_mtp, *g_plain;
static dsinfer_tokenizer* g_tok;

static int fail(const char* what, dsinfer_status st) {
  fprintf(stderr, "FAIL: %s: %s (%s)\n", what, dsinfer_status_name(st), dsinfer_last_error());
  return 1;
}

/* Greedy generation; params_size < sizeof(dsinfer_session_params) plays an older caller. */
static dsinfer_status run(dsinfer_model* m, int32_t draft_tokens, size_t params_size, int32_t* out, size_t* n,
                          dsinfer_speculative_stats* stats) {
  dsinfer_session_params p;
  dsinfer_generate_params g;
  dsinfer_session* s = NULL;
  dsinfer_sampler* greedy = NULL;
  const int32_t prompt[5] = {0, 1000, 2000, 77, 3000};
  dsinfer_status st;
  DSINFER_SESSION_PARAMS_INIT(&p);
  p.capacity = 128;
  p.speculative_draft_tokens = draft_tokens;
  p.speculative_adaptive = 0;
  p.struct_size = params_size;
  DSINFER_GENERATE_PARAMS_INIT(&g);
  g.max_tokens = N_TOKENS;
  g.stop_at_eos = 0;
  st = dsinfer_session_create(m, g_tok, &p, &s);
  if (st == DSINFER_OK && (st = dsinfer_sampler_greedy_create(&greedy)) == DSINFER_OK)
    if ((st = dsinfer_session_set_sampler(s, greedy)) != DSINFER_OK) dsinfer_sampler_free(greedy);
  if (st == DSINFER_OK) st = dsinfer_session_prefill(s, prompt, 5);
  if (st == DSINFER_OK) st = generate_to_end(s, &g);
  if (st == DSINFER_OK) st = dsinfer_session_generated(s, out, N_TOKENS, n);
  if (st == DSINFER_OK && stats) st = dsinfer_session_speculative_stats(s, stats);
  dsinfer_session_free(s);
  return st;
}

int main(int argc, char** argv) {
  int32_t plain[N_TOKENS], spec[N_TOKENS], old[N_TOKENS];
  size_t n0 = 0, n1 = 0, n2 = 0;
  dsinfer_speculative_stats stats, old_stats;
  dsinfer_status st;
  const size_t before = offsetof(dsinfer_session_params, speculative_draft_tokens);
  if (argc != 3) {
    fprintf(stderr, "usage: %s V32_TINY_MTP_DIR V32_TINY_DIR\n", argv[0]);
    return 2;
  }
  if ((st = dsinfer_model_load(argv[1], NULL, &g_mtp)) != DSINFER_OK) return fail("load MTP model", st);
  if ((st = dsinfer_model_load(argv[2], NULL, &g_plain)) != DSINFER_OK) return fail("load plain model", st);
  if ((st = dsinfer_tokenizer_load(argv[1], &g_tok)) != DSINFER_OK) return fail("load tokenizer", st);
  if (dsinfer_model_has_mtp(g_mtp) != 1 || dsinfer_model_has_mtp(g_plain) != 0 || dsinfer_model_has_mtp(NULL) != 0) {
    fprintf(stderr, "FAIL: dsinfer_model_has_mtp\n");
    return 1;
  }
  if ((st = run(g_mtp, 0, sizeof(dsinfer_session_params), plain, &n0, NULL)) != DSINFER_OK) return fail("plain", st);
  memset(&stats, 0, sizeof stats);
  stats.struct_size = sizeof stats;
  if ((st = run(g_mtp, 3, sizeof(dsinfer_session_params), spec, &n1, &stats)) != DSINFER_OK) return fail("speculative", st);
  if (n0 != N_TOKENS || n1 != N_TOKENS || memcmp(plain, spec, sizeof plain) != 0) {
    fprintf(stderr, "FAIL: speculative greedy differs from plain greedy\n");
    return 1;
  }
  if (stats.struct_size != sizeof stats || stats.steps <= 0 || stats.drafted <= 0 || stats.drafted_at[0] <= 0 ||
      stats.drafted_at[3] != 0) {
    fprintf(stderr, "FAIL: stats steps %lld drafted %lld\n", (long long)stats.steps, (long long)stats.drafted);
    return 1;
  }
  /* An older caller: params without the speculative fields (off), stats struct with only struct_size and steps. */
  memset(&old_stats, 0x55, sizeof old_stats);
  old_stats.struct_size = offsetof(dsinfer_speculative_stats, drafted);
  if ((st = run(g_mtp, 3, before, old, &n2, &old_stats)) != DSINFER_OK) return fail("older caller", st);
  if (n2 != N_TOKENS || memcmp(plain, old, sizeof plain) != 0 || old_stats.steps != 0 ||
      old_stats.struct_size != offsetof(dsinfer_speculative_stats, drafted) || old_stats.drafted != 0x5555555555555555LL) {
    fprintf(stderr, "FAIL: an older caller's structs\n");
    return 1;
  }
  st = run(g_plain, 2, sizeof(dsinfer_session_params), old, &n2, NULL);
  if (st != DSINFER_E_UNSUPPORTED) return fail("a checkpoint without MTP must be refused", st);
  printf("speculative C ABI: %lld drafted, %lld accepted over %lld steps; plain output reproduced\n",
         (long long)stats.drafted, (long long)stats.accepted, (long long)stats.steps);
  dsinfer_tokenizer_free(g_tok);
  dsinfer_model_free(g_mtp);
  dsinfer_model_free(g_plain);
  return 0;
}
