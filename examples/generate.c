/* Example (C): chat generation through the C ABI with streamed events.
 *   example_generate_c MODEL_DIR "question" */
#include <stdio.h>
#include <string.h>

#include "dsinfer.h"

static void progress(double f, const char* stage, void* ud) {
  (void)ud;
  fprintf(stderr, "\rloading %3.0f%% %-28s%s", f * 100, stage, f >= 1.0 ? "\n" : "");
}

static int fail(const char* what) {
  fprintf(stderr, "%s failed: %s\n", what, dsinfer_last_error());
  return 1;
}

int main(int argc, char** argv) {
  dsinfer_model_params mp;
  dsinfer_session_params sp;
  dsinfer_generate_params gp;
  dsinfer_model* model = NULL;
  dsinfer_tokenizer* tok = NULL;
  dsinfer_session* s = NULL;
  dsinfer_event ev;
  char messages[1024];
  int rc = 0;
  if (argc < 3) {
    fprintf(stderr, "usage: %s MODEL_DIR \"question\"\n", argv[0]);
    return 2;
  }
  DSINFER_MODEL_PARAMS_INIT(&mp);
  mp.progress = progress;
  if (dsinfer_model_load(argv[1], &mp, &model) != DSINFER_OK) return fail("model load");
  if (dsinfer_tokenizer_load(argv[1], &tok) != DSINFER_OK) return fail("tokenizer load");
  DSINFER_SESSION_PARAMS_INIT(&sp);
  if (dsinfer_session_create(model, tok, &sp, &s) != DSINFER_OK) return fail("session create");
  /* The question goes into OpenAI-style JSON (a real program would escape it properly). */
  snprintf(messages, sizeof messages, "{\"messages\": [{\"role\": \"user\", \"content\": \"%s\"}]}", argv[2]);
  if (dsinfer_session_set_messages(s, messages) != DSINFER_OK) return fail("set messages");
  DSINFER_GENERATE_PARAMS_INIT(&gp);
  gp.max_tokens = 32;
  if (dsinfer_session_generate_start(s, &gp) != DSINFER_OK) return fail("generate");
  for (;;) {
    ev.struct_size = sizeof ev;
    if (dsinfer_session_next_event(s, &ev) != DSINFER_OK) {
      rc = fail("next event");
      break;
    }
    if (ev.kind == DSINFER_EVENT_DONE) break;
    if (ev.kind == DSINFER_EVENT_CONTENT || ev.kind == DSINFER_EVENT_REASONING) fwrite(ev.text, 1, ev.text_len, stdout);
    if (ev.kind == DSINFER_EVENT_TOOL_CALL_END) printf("\n[tool call %s %s]\n", ev.name, ev.arguments);
  }
  printf("\n");
  dsinfer_session_free(s);
  dsinfer_tokenizer_free(tok);
  dsinfer_model_free(model);
  return rc;
}
