/* What several C tests of the C ABI do with a session: run a generation to its end. */
#pragma once
#include "dsinfer.h"

/* Starts a generation on s and takes its events until DSINFER_EVENT_DONE. Returns the status of the first call that
 * failed, else DSINFER_OK. */
static inline dsinfer_status generate_to_end(dsinfer_session* s, const dsinfer_generate_params* g) {
  dsinfer_event ev;
  dsinfer_status st = dsinfer_session_generate_start(s, g);
  while (st == DSINFER_OK) {
    ev.struct_size = sizeof ev;
    st = dsinfer_session_next_event(s, &ev);
    if (st == DSINFER_OK && ev.kind == DSINFER_EVENT_DONE) break;
  }
  return st;
}
