/* The CUDA options appended to dsinfer_model_params (cuda_device ... cuda_indexer_kernel): DSINFER_MODEL_PARAMS_INIT
 * sets the C++ defaults, a caller's struct from before them still loads (whatever bytes follow its struct_size),
 * and a value out of range is DSINFER_E_INVALID_ARG with a message naming the member. No GPU needed: the values are
 * checked before any backend is made, and the CPU backend ignores valid ones. */
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "c_check.h"
#include "dsinfer.h"

static dsinfer_status load(const char* dir, const dsinfer_model_params* p) {
  dsinfer_model* m = NULL;
  dsinfer_status st = dsinfer_model_load(dir, p, &m);
  dsinfer_model_free(m);
  return st;
}

/* Every CUDA member set to a value that would be refused. */
static void garbage_cuda_members(dsinfer_model_params* p) {
  p->cuda_device = -3;
  p->cuda_small_m_max = -5;
  p->cuda_small_m_tensor_cores = 7;
  p->cuda_cublaslt_fp8 = 9;
  p->cuda_mla_kernel = "bogus";
  p->cuda_indexer_kernel = "bogus";
}

int main(int argc, char** argv) {
  dsinfer_model_params p;
  if (argc < 2) return 2;
  p.n_threads = 1;

  /* The defaults are those of dsinfer::CudaOptions. */
  DSINFER_MODEL_PARAMS_INIT(&p);
  CHECK(p.cuda_device == 0 && p.cuda_small_m_max == 16 && p.cuda_small_m_tensor_cores == 1 &&
        p.cuda_cublaslt_fp8 == 1 && p.cuda_mla_kernel == NULL && p.cuda_indexer_kernel == NULL);
  p.n_threads = 1;
  CHECK(load(argv[1], &p) == DSINFER_OK);

  /* An older caller: its struct ends before the CUDA members, so whatever lies there is not read. */
  DSINFER_MODEL_PARAMS_INIT(&p);
  p.n_threads = 1;
  garbage_cuda_members(&p);
  p.struct_size = offsetof(dsinfer_model_params, cuda_device);
  CHECK(load(argv[1], &p) == DSINFER_OK);
  /* One that covers cuda_small_m_tensor_cores whole but not cuda_cublaslt_fp8: the first is read, the next not. */
  p.struct_size = offsetof(dsinfer_model_params, cuda_cublaslt_fp8);
  p.cuda_device = 0;
  p.cuda_small_m_max = 64;
  CHECK(load(argv[1], &p) == DSINFER_E_INVALID_ARG);
  CHECK(strstr(dsinfer_last_error(), "cuda_small_m_tensor_cores") != NULL);
  p.cuda_small_m_tensor_cores = 0;
  CHECK(load(argv[1], &p) == DSINFER_OK);

  /* Each member out of range is refused, naming it. */
  DSINFER_MODEL_PARAMS_INIT(&p);
  p.n_threads = 1;
  p.cuda_mla_kernel = "tc";
  CHECK(load(argv[1], &p) == DSINFER_E_INVALID_ARG);
  CHECK(strstr(dsinfer_last_error(), "mla_kernel") != NULL);
  CHECK(strstr(dsinfer_last_error(), "tensor-core") != NULL);
  p.cuda_mla_kernel = "tensor-core";
  p.cuda_indexer_kernel = "mma";
  CHECK(load(argv[1], &p) == DSINFER_E_INVALID_ARG);
  CHECK(strstr(dsinfer_last_error(), "indexer_kernel") != NULL);
  p.cuda_indexer_kernel = "cuda-core";
  p.cuda_small_m_max = 4097;
  CHECK(load(argv[1], &p) == DSINFER_E_INVALID_ARG);
  CHECK(strstr(dsinfer_last_error(), "small_m_max") != NULL);
  p.cuda_small_m_max = 0;
  p.cuda_device = -1;
  CHECK(load(argv[1], &p) == DSINFER_E_INVALID_ARG);
  CHECK(strstr(dsinfer_last_error(), "device") != NULL);
  p.cuda_device = 0;
  p.cuda_cublaslt_fp8 = 2;
  CHECK(load(argv[1], &p) == DSINFER_E_INVALID_ARG);
  CHECK(strstr(dsinfer_last_error(), "cuda_cublaslt_fp8") != NULL);

  /* Valid values other than the defaults: the CPU backend ignores them. */
  p.cuda_cublaslt_fp8 = 0;
  p.cuda_small_m_tensor_cores = 0;
  p.cuda_device = 1;
  CHECK(load(argv[1], &p) == DSINFER_OK);
  printf("cuda options OK\n");
  return 0;
}
