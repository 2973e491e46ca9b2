/* The installed header's version macros against the installed library's run-time version. */
#include <stdio.h>
#include <string.h>

#include "dsinfer.h"

int main(void) {
  if (dsinfer_abi_version() != DSINFER_ABI_VERSION) return 1;
  if (strcmp(dsinfer_version_string(), DSINFER_VERSION_STRING) != 0) return 2;
  if (DSINFER_VERSION_NUMBER != DSINFER_MAKE_VERSION(DSINFER_VERSION_MAJOR, DSINFER_VERSION_MINOR,
                                                      DSINFER_VERSION_PATCH)) return 3;
  printf("C: dsinfer %s, ABI %u\n", dsinfer_version_string(), (unsigned)dsinfer_abi_version());
  return 0;
}
