/* The C log callback and the load options that replaced environment knobs: quiet by default, the callback gets a
 * load's messages at or above its level with its user_data, NULL silences it again; kv_block_tokens and cpu_kernels
 * are checked and applied. */
#include <stdio.h>
#include <string.h>

#include "c_check.h"
#include "dsinfer.h"

typedef struct Seen {
  int count, below_min, loaded;
  char last[512];
} Seen;

static void on_log(dsinfer_log_level level, const char* message, void* user_data) {
  Seen* seen = (Seen*)user_data;
  seen->count++;
  if (level < DSINFER_LOG_INFO) seen->below_min++;
  if (strncmp(message, "loaded ", 7) == 0) seen->loaded++;
  strncpy(seen->last, message, sizeof seen->last - 1);
}

static dsinfer_status load(const char* dir, const dsinfer_model_params* p) {
  dsinfer_model* m = NULL;
  dsinfer_status st = dsinfer_model_load(dir, p, &m);
  dsinfer_model_free(m);
  return st;
}

int main(int argc, char** argv) {
  Seen seen;
  dsinfer_model_params p;
  if (argc < 2) return 2;
  memset(&seen, 0, sizeof seen);

  /* Quiet by default: nothing reaches a callback that is not installed (and nothing may crash). */
  CHECK(load(argv[1], NULL) == DSINFER_OK);

  dsinfer_set_log_callback(on_log, DSINFER_LOG_INFO, &seen);
  CHECK(load(argv[1], NULL) == DSINFER_OK);
  CHECK(seen.loaded == 1);
  CHECK(seen.below_min == 0);
  CHECK(strstr(seen.last, "layers") != NULL);

  /* NULL silences it. */
  dsinfer_set_log_callback(NULL, DSINFER_LOG_DEBUG, NULL);
  seen.count = 0;
  CHECK(load(argv[1], NULL) == DSINFER_OK);
  CHECK(seen.count == 0);

  /* Above the threshold only: a load logs nothing at error level. */
  dsinfer_set_log_callback(on_log, DSINFER_LOG_ERROR, &seen);
  CHECK(load(argv[1], NULL) == DSINFER_OK);
  CHECK(seen.count == 0);
  dsinfer_set_log_callback(NULL, DSINFER_LOG_OFF, NULL);

  /* kv_block_tokens: checked, and it sets the block size (a context's bytes come in whole blocks). */
  DSINFER_MODEL_PARAMS_INIT(&p);
  CHECK(p.kv_block_tokens == 0 && p.cpu_kernels == NULL);
  p.kv_block_tokens = 70000;
  CHECK(load(argv[1], &p) == DSINFER_E_INVALID_ARG);
  CHECK(strstr(dsinfer_last_error(), "kv_block_tokens") != NULL);
  {
    dsinfer_model *a = NULL, *b = NULL;
    p.kv_block_tokens = 16;
    CHECK(dsinfer_model_load(argv[1], &p, &a) == DSINFER_OK);
    p.kv_block_tokens = 0; /* 64 */
    CHECK(dsinfer_model_load(argv[1], &p, &b) == DSINFER_OK);
    CHECK(dsinfer_model_kv_cache_bytes(a, 1) * 4 == dsinfer_model_kv_cache_bytes(b, 1));
    /* v32-tiny, fp8: 4 layers of a 196-byte latent row and a 68-byte indexer key (64 e4m3 and a scale). */
    CHECK(dsinfer_model_kv_bytes_per_token(a) == 4 * (196 + 68));
    CHECK(dsinfer_model_kv_index_bytes_per_token(a) == 4 * 68);
    CHECK(dsinfer_model_kv_index_bytes_per_token(NULL) == 0);
    /* The backend's memory: an evaluation leaves scratch behind, release gives it back; NULL is refused. */
    {
      dsinfer_tokenizer* t = NULL;
      dsinfer_session* s = NULL;
      const int32_t ids[4] = {1, 2, 3, 4};
      CHECK(dsinfer_tokenizer_load(argv[1], &t) == DSINFER_OK);
      CHECK(dsinfer_session_create(a, t, NULL, &s) == DSINFER_OK);
      CHECK(dsinfer_session_prefill(s, ids, 4) == DSINFER_OK);
      CHECK(dsinfer_model_scratch_bytes(a) > 0);
      dsinfer_session_free(s);
      dsinfer_tokenizer_free(t);
    }
    CHECK(dsinfer_model_release_memory(a) == DSINFER_OK);
    CHECK(dsinfer_model_scratch_bytes(a) == 0 && dsinfer_model_cached_activation_bytes(a) == 0);
    CHECK(dsinfer_model_release_memory(NULL) == DSINFER_E_INVALID_ARG);
    CHECK(dsinfer_model_scratch_bytes(NULL) == 0);
    dsinfer_model_free(a);
    dsinfer_model_free(b);
  }

  /* cpu_kernels: a name outside the list is refused before anything is read. */
  DSINFER_MODEL_PARAMS_INIT(&p);
  p.cpu_kernels = "sse9";
  CHECK(load(argv[1], &p) == DSINFER_E_INVALID_ARG);
  CHECK(strstr(dsinfer_last_error(), "cpu_kernels") != NULL);
  /* A refused name is quoted at a bounded length, however long (here 100,000 bytes). */
  {
    static char long_name[100001];
    memset(long_name, 'x', sizeof long_name - 1);
    const char** fields[] = {&p.cpu_kernels, &p.kv_cache_dtype, &p.backend};
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; ++i) {
      DSINFER_MODEL_PARAMS_INIT(&p);
      *fields[i] = long_name;
      CHECK(load(argv[1], &p) == DSINFER_E_INVALID_ARG);
      CHECK(strstr(dsinfer_last_error(), "xxx...") != NULL);
      CHECK(strlen(dsinfer_last_error()) < 1000);
    }
  }
  DSINFER_MODEL_PARAMS_INIT(&p);
  p.cpu_kernels = "auto";
  CHECK(load(argv[1], &p) == DSINFER_OK);
  printf("log callback and load options OK\n");
  return 0;
}
