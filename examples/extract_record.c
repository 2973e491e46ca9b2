/* Example (C ABI): extract a typed record with thinking on. The request's strict json_schema response format is
 * rendered into the prompt and enforced after </think>; the reasoning is free.
 *   extract_record_c MODEL_DIR [seed] */
#include <stdio.h>
#include <stdlib.h>

#include "dsinfer.h"

static const char* kRequest =
    "{\"messages\": [{\"role\": \"user\", \"content\": \"Extract the person from: Ada Lovelace, born 1815 in London, "
    "mathematician.\"}], \"max_reasoning_tokens\": 256,"
    " \"response_format\": {\"type\": \"json_schema\", \"json_schema\": {\"name\": \"person\", \"strict\": true,"
    " \"schema\": {\"type\": \"object\", \"properties\": {\"name\": {\"type\": \"string\", \"maxLength\": 40},"
    " \"birth_year\": {\"type\": \"integer\", \"minimum\": 0, \"maximum\": 2100},"
    " \"occupation\": {\"enum\": [\"mathematician\", \"physicist\", \"writer\", \"other\"]}},"
    " \"required\": [\"name\", \"birth_year\", \"occupation\"], \"additionalProperties\": false}}}}";

static int fail(const char* what, dsinfer_status st) {
  fprintf(stderr, "%s: %s: %s\n", what, dsinfer_status_name(st), dsinfer_last_error());
  return 1;
}

int main(int argc, char** argv) {
  dsinfer_model* m = NULL;
  dsinfer_tokenizer* t = NULL;
  dsinfer_session* s = NULL;
  dsinfer_constraint* c = NULL;
  dsinfer_sampler *chain = NULL, *dist = NULL;
  dsinfer_session_params sp;
  dsinfer_generate_params g;
  dsinfer_event ev;
  dsinfer_status st;
  if (argc < 2) {
    fprintf(stderr, "usage: %s MODEL_DIR [seed]\n", argv[0]);
    return 2;
  }
  if ((st = dsinfer_model_load(argv[1], NULL, &m)) != DSINFER_OK) return fail("load", st);
  if ((st = dsinfer_tokenizer_load(argv[1], &t)) != DSINFER_OK) return fail("tokenizer", st);
  DSINFER_SESSION_PARAMS_INIT(&sp);
  sp.thinking = 1;
  if ((st = dsinfer_session_create(m, t, &sp, &s)) != DSINFER_OK) return fail("session", st);
  dsinfer_sampler_chain_create(&chain);
  dsinfer_sampler_dist_create(argc > 2 ? strtoull(argv[2], NULL, 10) : 0, &dist);
  dsinfer_sampler_chain_add(chain, dist);
  dsinfer_session_set_sampler(s, chain);
  /* The constraint is compiled (and checked) before anything is generated. */
  if ((st = dsinfer_constraint_compile(t, kRequest, 1, &c)) != DSINFER_OK) return fail("constraint", st);
  if ((st = dsinfer_session_set_messages(s, kRequest)) != DSINFER_OK) return fail("messages", st);
  DSINFER_GENERATE_PARAMS_INIT(&g);
  g.max_tokens = 1024;
  g.constraint = c;
  if ((st = dsinfer_session_generate_start(s, &g)) != DSINFER_OK) return fail("start", st);
  printf("record: ");
  for (;;) {
    ev.struct_size = sizeof ev;
    if ((st = dsinfer_session_next_event(s, &ev)) != DSINFER_OK) return fail("next", st);
    if (ev.kind == DSINFER_EVENT_DONE) break;
    if (ev.kind == DSINFER_EVENT_CONTENT) fwrite(ev.text, 1, ev.text_len, stdout);
  }
  printf("\n");
  dsinfer_constraint_free(c);
  dsinfer_session_free(s);
  dsinfer_tokenizer_free(t);
  dsinfer_model_free(m);
  return 0;
}
