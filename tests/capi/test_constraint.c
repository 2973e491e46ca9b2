/* Constraints through the C ABI: bad ones are clear errors from dsinfer_constraint_compile, before anything is
 * generated; a good one enforces, a request without a format does not; the stage goes into a chain.
 *   test_capi_constraint TOKENIZER_DIR */
#include <stdio.h>
#include <string.h>

#include "dsinfer.h"

static int failures = 0;

static void expect(const dsinfer_tokenizer* t, const char* request, dsinfer_status want, const char* in_message) {
  dsinfer_constraint* c = NULL;
  dsinfer_status st = dsinfer_constraint_compile(t, request, 0, &c);
  if (st != want || (in_message && !strstr(dsinfer_last_error(), in_message)) || (st != DSINFER_OK && c != NULL)) {
    printf("FAIL %s: got %s (%s)\n", request, dsinfer_status_name(st), dsinfer_last_error());
    ++failures;
  }
  dsinfer_constraint_free(c);
}

int main(int argc, char** argv) {
  dsinfer_tokenizer* t = NULL;
  dsinfer_constraint* c = NULL;
  dsinfer_sampler *chain = NULL, *stage = NULL;
  if (argc < 2 || dsinfer_tokenizer_load(argv[1], &t) != DSINFER_OK) {
    printf("cannot load the tokenizer: %s\n", dsinfer_last_error());
    return 1;
  }
  expect(t, "{\"response_format\": {\"type\": \"json_schema\", \"json_schema\": {\"strict\": true, \"schema\": "
            "{\"type\": \"array\", \"uniqueItems\": true}}}}", DSINFER_E_UNSUPPORTED, "uniqueItems");
  expect(t, "{\"response_format\": {\"type\": \"regex\", \"regex\": \"[^\\\\s\\\\S]\"}}", DSINFER_E_INVALID_ARG,
         "no text matches");
  expect(t, "{\"response_format\": {\"type\": \"regex\", \"regex\": \"(a\"}}", DSINFER_E_INVALID_ARG, "regex");
  expect(t, "{\"tool_choice\": \"required\"}", DSINFER_E_INVALID_ARG, "no tools");
  expect(t, "{\"response_format\": ", DSINFER_E_INVALID_ARG, "not valid JSON");
  expect(t, "{\"response_format\": {\"type\": \"json_object\"}}", DSINFER_OK, NULL);

  if (dsinfer_constraint_compile(t, "{\"messages\": []}", 0, &c) != DSINFER_OK || dsinfer_constraint_enforces(c)) {
    printf("FAIL a request without a format enforces something\n");
    ++failures;
  }
  dsinfer_constraint_free(c);
  c = NULL;
  if (dsinfer_constraint_compile(t, "{\"response_format\": {\"type\": \"json_object\"}}", 1, &c) != DSINFER_OK ||
      !dsinfer_constraint_enforces(c) || dsinfer_sampler_chain_create(&chain) != DSINFER_OK ||
      dsinfer_sampler_constraint_create(c, &stage) != DSINFER_OK || dsinfer_sampler_chain_add(chain, stage) != DSINFER_OK) {
    printf("FAIL json_object as a chain stage: %s\n", dsinfer_last_error());
    ++failures;
  }
  dsinfer_constraint_free(c); /* the stage keeps what it needs */
  dsinfer_sampler_free(chain);
  dsinfer_tokenizer_free(t);
  printf("%s\n", failures ? "constraint C ABI: failures" : "constraint C ABI: all checks passed");
  return failures ? 1 : 0;
}
