/* The distributed-run members appended to dsinfer_model_params (distributed, distributed_timeout_s) and the functions
 * around them, in every build: defaults, older struct sizes, refused values, the per-rank weight bytes of a model of
 * one process. Then, by the build (argv[2]): without MPI every distributed call is DSINFER_E_UNSUPPORTED naming MPI;
 * with MPI (run under `mpirun -np 1`) a distributed load of one rank is an ordinary model and rank 0 may not serve. */
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "c_check.h"
#include "dsinfer.h"

static dsinfer_status load(const char* dir, const dsinfer_model_params* p) {
  dsinfer_model* m = NULL;
  dsinfer_status st = dsinfer_model_load(dir, p, &m);
  if ((st == DSINFER_OK) != (m != NULL)) return DSINFER_E_INTERNAL; /* *out is set exactly on success */
  dsinfer_model_free(m);
  return st;
}

static int last_error_names(const char* what) { return strstr(dsinfer_last_error(), what) != NULL; }

/* What every build checks. `whole_bytes`: the weight bytes of the non-distributed model, for the caller. */
static int every_build(const char* dir, int64_t* whole_bytes) {
  dsinfer_model_params p;
  dsinfer_model* m = NULL;
  int32_t rank = 7, size = 7;
  const double bad_timeouts[] = {-1.0, NAN, 2e6, INFINITY};
  size_t i;

  /* Zero defaults: not distributed, the default timeout. */
  memset(&p, 0xff, sizeof p);
  DSINFER_MODEL_PARAMS_INIT(&p);
  CHECK(p.distributed == 0 && p.distributed_timeout_s == 0.0);

  /* A model of one process: one rank, holding every weight. */
  p.n_threads = 1;
  CHECK(dsinfer_model_load(dir, &p, &m) == DSINFER_OK);
  CHECK(dsinfer_model_distributed_ranks(m) == 1);
  *whole_bytes = dsinfer_model_rank_weight_bytes(m, 0);
  CHECK(*whole_bytes > 0);
  CHECK(dsinfer_model_rank_weight_bytes(m, 1) == 0 && dsinfer_model_rank_weight_bytes(m, -1) == 0);
  dsinfer_model_free(m);
  CHECK(dsinfer_model_distributed_ranks(NULL) == 0 && dsinfer_model_rank_weight_bytes(NULL, 0) == 0);

  /* An older caller: its struct ends before the distributed members, so whatever lies there is not read. */
  p.distributed = 5;
  p.distributed_timeout_s = -3;
  p.struct_size = offsetof(dsinfer_model_params, distributed);
  CHECK(load(dir, &p) == DSINFER_OK);
  /* One that covers `distributed` whole but not the timeout: the first is read, the second not. */
  p.struct_size = offsetof(dsinfer_model_params, distributed_timeout_s);
  CHECK(load(dir, &p) == DSINFER_E_INVALID_ARG);
  CHECK(last_error_names("distributed must be 0 or 1"));
  p.distributed = 0;
  CHECK(load(dir, &p) == DSINFER_OK);

  /* A timeout out of range is refused whatever `distributed` says, before MPI is asked anything. */
  DSINFER_MODEL_PARAMS_INIT(&p);
  p.n_threads = 1;
  for (i = 0; i < sizeof bad_timeouts / sizeof bad_timeouts[0]; ++i) {
    p.distributed_timeout_s = bad_timeouts[i];
    p.distributed = 0;
    CHECK(load(dir, &p) == DSINFER_E_INVALID_ARG);
    CHECK(last_error_names("distributed_timeout_s"));
    p.distributed = 1;
    CHECK(load(dir, &p) == DSINFER_E_INVALID_ARG);
    CHECK(last_error_names("distributed_timeout_s"));
    CHECK(dsinfer_model_run_worker(dir, &p) == DSINFER_E_INVALID_ARG);
    CHECK(last_error_names("distributed_timeout_s"));
  }
  /* The limits themselves are valid (not distributed here: the timeout is then only checked). */
  p.distributed = 0;
  p.distributed_timeout_s = 1e6;
  CHECK(load(dir, &p) == DSINFER_OK);
  p.distributed_timeout_s = 0.5;
  CHECK(load(dir, &p) == DSINFER_OK);

  /* run_worker is for distributed runs only; NULL arguments are refused. */
  p.distributed_timeout_s = 0;
  CHECK(dsinfer_model_run_worker(dir, &p) == DSINFER_E_INVALID_ARG);
  CHECK(last_error_names("distributed"));
  CHECK(dsinfer_model_run_worker(dir, NULL) == DSINFER_E_INVALID_ARG);
  p.distributed = 1;
  CHECK(dsinfer_model_run_worker(NULL, &p) == DSINFER_E_INVALID_ARG);
  CHECK(dsinfer_distributed_rank(NULL, &size) == DSINFER_E_INVALID_ARG);
  CHECK(dsinfer_distributed_rank(&rank, NULL) == DSINFER_E_INVALID_ARG);
  CHECK(rank == -1);
  return 0;
}

static int without_mpi(const char* dir) {
  dsinfer_model_params p;
  dsinfer_model* m = NULL;
  int32_t rank = 7, size = 7;
  DSINFER_MODEL_PARAMS_INIT(&p);
  p.n_threads = 1;
  p.distributed = 1;
  CHECK(dsinfer_model_load(dir, &p, &m) == DSINFER_E_UNSUPPORTED);
  CHECK(m == NULL);
  CHECK(last_error_names("MPI"));
  CHECK(dsinfer_model_run_worker(dir, &p) == DSINFER_E_UNSUPPORTED);
  CHECK(last_error_names("MPI"));
  CHECK(dsinfer_distributed_rank(&rank, &size) == DSINFER_E_UNSUPPORTED);
  CHECK(last_error_names("MPI"));
  CHECK(rank == -1 && size == 0);
  return 0;
}

/* Under `mpirun -np 1`. */
static int with_mpi(const char* dir, int64_t whole_bytes) {
  dsinfer_model_params p;
  dsinfer_model* m = NULL;
  int32_t rank = 7, size = 7;
  CHECK(dsinfer_distributed_rank(&rank, &size) == DSINFER_OK);
  CHECK(rank == 0 && size == 1);
  DSINFER_MODEL_PARAMS_INIT(&p);
  p.n_threads = 1;
  p.distributed = 1;
  p.distributed_timeout_s = 30;
  CHECK(dsinfer_model_load(dir, &p, &m) == DSINFER_OK);
  CHECK(dsinfer_model_distributed_ranks(m) == 1);
  CHECK(dsinfer_model_rank_weight_bytes(m, 0) == whole_bytes);
  dsinfer_model_free(m);
  CHECK(dsinfer_model_run_worker(dir, &p) == DSINFER_E_INVALID_ARG);
  CHECK(last_error_names("rank 0"));
  return 0;
}

int main(int argc, char** argv) {
  int64_t whole_bytes = 0;
  if (argc != 3 || (strcmp(argv[2], "mpi") != 0 && strcmp(argv[2], "no-mpi") != 0)) {
    fprintf(stderr, "usage: %s V32_TINY_DIR mpi|no-mpi (the build's DSINFER_MPI)\n", argv[0]);
    return 2;
  }
  if (every_build(argv[1], &whole_bytes) != 0) return 1;
  if (strcmp(argv[2], "mpi") == 0 ? with_mpi(argv[1], whole_bytes) != 0 : without_mpi(argv[1]) != 0) return 1;
  printf("distributed options OK (%s)\n", argv[2]);
  return 0;
}
