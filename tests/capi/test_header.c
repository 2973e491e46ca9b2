/* The C ABI header compiles as strict C99 and its basic calls work from C. */
#include <stdio.h>
#include <string.h>

#include "dsinfer.h"

int main(void) {
  dsinfer_model* m = (dsinfer_model*)1;
  dsinfer_model_params p;
  dsinfer_status st;
  if (dsinfer_abi_version() != DSINFER_ABI_VERSION) return 1;
  DSINFER_MODEL_PARAMS_INIT(&p);
  if (p.struct_size != sizeof p || p.n_threads != 0) return 2;
  st = dsinfer_model_load("/nonexistent/model", &p, &m);
  if (st != DSINFER_E_IO || m != NULL) return 3;
  if (strstr(dsinfer_last_error(), "/nonexistent/model") == NULL) return 4;
  if (dsinfer_model_load(NULL, NULL, &m) != DSINFER_E_INVALID_ARG) return 5;
  dsinfer_model_free(NULL); /* NULL is a no-op */
  dsinfer_session_free(NULL);
  dsinfer_sampler_free(NULL);
  dsinfer_string_free(NULL);
  printf("C header ok: abi %u, version %s, status 2 is \"%s\"\n", dsinfer_abi_version(), dsinfer_version_string(),
         dsinfer_status_name(DSINFER_E_IO));
  return 0;
}
