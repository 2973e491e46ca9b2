/* CHECK for the C tests of the C ABI: on a false condition, print where, what, and the thread's last dsinfer error
 * message, and return 1 from the test function (each test is a function returning 0 on success). */
#pragma once
#include <stdio.h>

#include "dsinfer.h"

#define CHECK(cond)                                                                  \
  do {                                                                               \
    if (!(cond)) {                                                                   \
      fprintf(stderr, "%s:%d: CHECK(%s) failed (%s)\n", __FILE__, __LINE__, #cond,   \
              dsinfer_last_error());                                                 \
      return 1;                                                                      \
    }                                                                                \
  } while (0)
