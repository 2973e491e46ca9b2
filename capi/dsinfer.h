/* dsinfer — the C ABI (C99). Every entry point is prefixed dsinfer_ and named dsinfer_<object>_<verb>.
 *
 * Errors: fallible functions return a dsinfer_status; on failure dsinfer_last_error() returns a message for the
 * calling thread, valid until that thread's next dsinfer call. Nothing aborts on bad input.
 * Ownership: "Creates ... free with X" — the caller owns the result; "Borrows" — valid until the named event;
 * "Takes ownership on success" — on failure the caller still owns it. Every _free accepts NULL.
 * Threads: a model and a tokenizer are immutable after load and may be shared by any number of threads; a session
 * and a sampler are used by one thread at a time; dsinfer_session_cancel may be called from any thread.
 * Versioning: DSINFER_ABI_VERSION changes only when a breaking change is made (docs/abi.md); params structs begin
 * with struct_size, so older callers keep working when fields are appended.
 */
#ifndef DSINFER_H
#define DSINFER_H

#include <stddef.h>
#include <stdint.h>

/* DSINFER_VERSION_MAJOR/_MINOR/_PATCH/_STRING/_NUMBER and DSINFER_ABI_VERSION (generated from the build's version). */
#include "dsinfer/version.h"

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#define DSINFER_API __declspec(dllexport)
#else
#define DSINFER_API __attribute__((visibility("default")))
#endif

/* Status codes: values are pinned and only ever appended to. */
typedef enum dsinfer_status {
  DSINFER_OK = 0,
  DSINFER_E_INVALID_ARG = 1,   /* a bad parameter, token id, JSON field, sampler contract */
  DSINFER_E_IO = 2,            /* a file could not be opened or read */
  DSINFER_E_FORMAT = 3,        /* malformed file or text (truncated shard, bad JSON, malformed completion) */
  DSINFER_E_UNSUPPORTED = 4,   /* valid input this build does not handle */
  DSINFER_E_OUT_OF_MEMORY = 5, /* an allocation failed or the KV cache is full */
  DSINFER_E_DEVICE = 6,        /* a backend / device failure */
  DSINFER_E_CANCELLED = 7,     /* dsinfer_session_cancel stopped the operation */
  DSINFER_E_INTERNAL = 99      /* a bug in dsinfer */
} dsinfer_status;

typedef struct dsinfer_model dsinfer_model;         /* immutable after load; share across threads */
typedef struct dsinfer_tokenizer dsinfer_tokenizer; /* immutable after load; share across threads */
typedef struct dsinfer_session dsinfer_session;     /* one thread at a time */
typedef struct dsinfer_sampler dsinfer_sampler;     /* one thread at a time */
typedef struct dsinfer_constraint dsinfer_constraint; /* immutable after compile; share across threads */

/* The ABI version of the library (compare with DSINFER_ABI_VERSION) and its version text ("0.1.0"). */
DSINFER_API uint32_t dsinfer_abi_version(void);
DSINFER_API const char* dsinfer_version_string(void);
/* This thread's last error message; "" after a success. Borrows: valid until this thread's next dsinfer call. */
DSINFER_API const char* dsinfer_last_error(void);
/* The name of a status code ("invalid argument", ...). Static storage. */
DSINFER_API const char* dsinfer_status_name(dsinfer_status s);
/* Frees a string returned by dsinfer (dsinfer_*_decode, dsinfer_chat_encode, ...). NULL is a no-op. */
DSINFER_API void dsinfer_string_free(char* s);

/* -------------------------------------------------------------------------------------------------- log -- */
/* Severity, lowest first (pinned values; the C++ API's dsinfer::LogLevel, Python's dsinfer.LogLevel). */
typedef enum dsinfer_log_level {
  DSINFER_LOG_DEBUG = 0,
  DSINFER_LOG_INFO = 1,
  DSINFER_LOG_WARN = 2,
  DSINFER_LOG_ERROR = 3,
  DSINFER_LOG_OFF = 4
} dsinfer_log_level;
/* Receives one message (NUL-terminated, no trailing newline, borrowed for the call). It may be called from any thread
 * that calls into dsinfer, from several at once: make it thread-safe; it must not call dsinfer_set_log_callback. */
typedef void (*dsinfer_log_callback)(dsinfer_log_level level, const char* message, void* user_data);
/* Installs the process-wide log callback: messages at or above min_level go to callback(level, message, user_data).
 * NULL (or min_level DSINFER_LOG_OFF) silences the log again. Default: no callback, nothing is logged. The
 * environment variable DSINFER_LOG=debug|info|warn|error overrides min_level and, without a callback, writes the
 * messages to stderr. user_data is borrowed until the callback is replaced. */
DSINFER_API void dsinfer_set_log_callback(dsinfer_log_callback callback, dsinfer_log_level min_level, void* user_data);

/* ------------------------------------------------------------------------------------------------ model -- */
typedef enum dsinfer_precision { DSINFER_PRECISION_FP8 = 0, DSINFER_PRECISION_REFERENCE = 1 } dsinfer_precision;

typedef struct dsinfer_model_params {
  size_t struct_size;       /* sizeof(dsinfer_model_params): set by DSINFER_MODEL_PARAMS_INIT */
  int32_t n_threads;        /* CPU threads, 0 to 1024; 0 = all (else DSINFER_E_INVALID_ARG) */
  const char* backend;      /* "cpu" (NULL = "cpu") */
  int64_t kv_cache_tokens;  /* KV pool size in tokens, 0 to 2^31 - 1; 0 = 32768 (else DSINFER_E_INVALID_ARG) */
  /* Called during load with the fraction done and the stage; may be NULL. Runs on the loading thread. */
  void (*progress)(double fraction, const char* stage, void* user_data);
  void* progress_user_data;
  /* KV cache dtype: "auto" (NULL; fp8 for sequences evaluated in fp8 precision, f32 in reference precision),
   * "f32", "bf16" or "fp8" (DeepSeek's 656 + 132-byte format at V3.2's dimensions). */
  const char* kv_cache_dtype;
  /* Appended in 0.1 (ABI 1). Tokens per KV cache block, 0 to 65536; 0 = 64 (else DSINFER_E_INVALID_ARG). */
  int64_t kv_block_tokens;
  /* The CPU kernel family, a cap: "auto" (NULL), "avx512", "avx2" or "scalar"; the families compute bitwise-identical
   * results. "amx" asks for AVX-512 with the indexer's scores on AMX tiles, faster at long contexts, whose scores
   * differ from the others' in the last bits (docs/options.md). Fixed once per process by the first load that names
   * one: a later load naming another fails with DSINFER_E_INVALID_ARG. The environment variable DSINFER_CPU_KERNELS
   * overrides it. */
  const char* cpu_kernels;
  /* Appended after 0.1.0 (ABI 1 unchanged). The CUDA backend's device and kernel choices (docs/cuda.md); the CPU
   * backend ignores them. Defaults are what DSINFER_MODEL_PARAMS_INIT sets (an older caller's smaller struct gets
   * them too). A value out of range: DSINFER_E_INVALID_ARG naming the field. Each DSINFER_CUDA_* environment
   * variable named below, when set to a valid value, overrides its member (an invalid one is ignored, logged). */
  /* Device ordinal >= 0 for backend "cuda" ("cuda:N" wins); default 0. DSINFER_CUDA_DEVICE */
  int32_t cuda_device;
  /* GEMMs of up to this many rows run the skinny kernels, larger ones cuBLASLt; 0 to 4096, default 16.
   * DSINFER_CUDA_SMALL_M */
  int64_t cuda_small_m_max;
  /* 1 (default): the skinny FP8 GEMM may use its tensor-core form (after a start-up probe agrees); 0: never.
   * DSINFER_CUDA_MMA */
  int32_t cuda_small_m_tensor_cores;
  /* 1 (default): FP8 GEMMs above cuda_small_m_max may use cuBLASLt's block-scaled FP8; 0: never. DSINFER_CUDA_LT_FP8 */
  int32_t cuda_cublaslt_fp8;
  /* The MLA attention kernel: "cuda-core" (NULL; fp32) or "tensor-core" (bf16). DSINFER_CUDA_MLA_KERNEL */
  const char* cuda_mla_kernel;
  /* The indexer's score kernel: "cuda-core" (NULL; fp32) or "tensor-core" (e4m3, in fp8 precision).
   * DSINFER_CUDA_INDEXER_KERNEL */
  const char* cuda_indexer_kernel;
  /* Appended after 0.1.0 (ABI 1 unchanged). A distributed run over MPI (docs/distributed.md), 0 (default) or 1 (else
   * DSINFER_E_INVALID_ARG): every rank of `mpirun -np N` is started with the same checkpoint directory and params;
   * rank 0 calls dsinfer_model_load and uses the model as usual, every other rank calls dsinfer_model_run_worker.
   * Each rank keeps its share of the routed experts and of the attention heads; the results are bitwise those of one
   * process. CPU backend only. Errors:
   * DSINFER_E_UNSUPPORTED in a build without MPI (DSINFER_MPI); DSINFER_E_INVALID_ARG from dsinfer_model_load on a
   * rank other than 0. */
  int32_t distributed;
  /* Seconds a rank waits for its peers before the call fails with DSINFER_E_DEVICE (a rank died or hangs): 0 to 1e6,
   * 0 (default) = 120 s; negative, NaN or larger: DSINFER_E_INVALID_ARG (checked whatever `distributed` says).
   * DSINFER_DIST_TIMEOUT */
  double distributed_timeout_s;
} dsinfer_model_params;

DSINFER_API void dsinfer_model_params_init(dsinfer_model_params* p, size_t struct_size);
#define DSINFER_MODEL_PARAMS_INIT(p) dsinfer_model_params_init((p), sizeof *(p))

/* Loads a Hugging Face checkpoint directory. On OK *out is new: free with dsinfer_model_free. On error *out is NULL.
 * params may be NULL (defaults). */
DSINFER_API dsinfer_status dsinfer_model_load(const char* dir, const dsinfer_model_params* params, dsinfer_model** out);
DSINFER_API void dsinfer_model_free(dsinfer_model* m);
DSINFER_API int64_t dsinfer_model_vocab_size(const dsinfer_model* m);
/* 1 when the checkpoint's MTP module is loaded (speculative decoding possible), 0 otherwise or for NULL. */
DSINFER_API int dsinfer_model_has_mtp(const dsinfer_model* m);
/* KV cache memory, known before allocation: bytes one token takes in all layers in the model's default (fp8
 * precision) cache dtype, of those the indexer keys' (with their scales; 0 without an indexer: what a decode step's
 * key scan reads of each cached token), and the bytes a context of `tokens` tokens needs (whole blocks). 0 for NULL. */
DSINFER_API int64_t dsinfer_model_kv_bytes_per_token(const dsinfer_model* m);
DSINFER_API int64_t dsinfer_model_kv_index_bytes_per_token(const dsinfer_model* m);
DSINFER_API int64_t dsinfer_model_kv_cache_bytes(const dsinfer_model* m, int64_t tokens);
/* What the backend holds besides the weights and the KV caches: the ops' scratch (grow-only buffers, sized by the
 * largest step so far) and freed activation buffers kept for reuse; 0 for NULL. dsinfer_model_release_memory gives
 * both back, with the free KV blocks' pages (what a long-running server calls when idle; it waits for a running
 * evaluation and changes no result). Errors: DSINFER_E_INVALID_ARG (NULL). */
DSINFER_API int64_t dsinfer_model_scratch_bytes(const dsinfer_model* m);
DSINFER_API int64_t dsinfer_model_cached_activation_bytes(const dsinfer_model* m);
DSINFER_API dsinfer_status dsinfer_model_release_memory(const dsinfer_model* m);
/* A distributed model's ranks (1 for a model of one process, 0 for NULL), and the weight bytes rank `rank` holds (the
 * main model and the MTP module: its share of the routed experts plus the replicated rest; for one process, the bytes
 * it holds); 0 for NULL or a rank outside [0, ranks). */
DSINFER_API int32_t dsinfer_model_distributed_ranks(const dsinfer_model* m);
DSINFER_API int64_t dsinfer_model_rank_weight_bytes(const dsinfer_model* m, int32_t rank);
/* 1 when each rank of a distributed model runs attention for its share of the heads, 0 when every rank computes every
 * head (heads that do not divide evenly among the ranks, or FP8 kv_b rows off a 128-row block), for one process
 * and for NULL. */
DSINFER_API int32_t dsinfer_model_attention_split_by_heads(const dsinfer_model* m);

/* Distributed runs (dsinfer_model_params.distributed, docs/distributed.md). Both fail with DSINFER_E_UNSUPPORTED in a
 * build without MPI (the message says how to build with it).
 * dsinfer_distributed_rank: this process's rank in MPI_COMM_WORLD and the number of ranks; starts MPI if the
 * application has not (dsinfer then finalizes it at exit). Any thread. On error *rank is -1 and *size 0;
 * DSINFER_E_DEVICE when MPI cannot start. */
DSINFER_API dsinfer_status dsinfer_distributed_rank(int32_t* rank, int32_t* size);
/* What every rank but 0 calls instead of dsinfer_model_load, with the same dir and params (distributed = 1): loads
 * this rank's share of the checkpoint and serves rank 0's model until rank 0 frees it, then returns DSINFER_OK. It
 * blocks the calling thread all that time (the progress callback runs on it). Errors: DSINFER_E_INVALID_ARG (params
 * refused as by dsinfer_model_load, distributed = 0 (NULL params included), or called on rank 0); a load error on
 * this rank (rank 0's dsinfer_model_load then fails too, naming the rank); DSINFER_E_DEVICE when the communication
 * with rank 0 fails (a peer died or timed out in the middle of an operation). */
DSINFER_API dsinfer_status dsinfer_model_run_worker(const char* dir, const dsinfer_model_params* params);

/* -------------------------------------------------------------------------------------------- tokenizer -- */
/* Loads DIR/tokenizer.json (+ tokenizer_config.json). Creates: free with dsinfer_tokenizer_free. */
DSINFER_API dsinfer_status dsinfer_tokenizer_load(const char* path, dsinfer_tokenizer** out);
DSINFER_API void dsinfer_tokenizer_free(dsinfer_tokenizer* t);
DSINFER_API int64_t dsinfer_tokenizer_size(const dsinfer_tokenizer* t);
DSINFER_API int32_t dsinfer_tokenizer_eos_id(const dsinfer_tokenizer* t);
/* Encodes UTF-8 text. Writes up to `capacity` ids into `ids` (may be NULL when capacity is 0) and the full count
 * into *n_ids: call once with capacity 0 to size the buffer. */
DSINFER_API dsinfer_status dsinfer_tokenizer_encode(const dsinfer_tokenizer* t, const char* text, size_t text_len,
                                                    int add_special_tokens, int32_t* ids, size_t capacity,
                                                    size_t* n_ids);
/* Decodes ids. On OK *out is a new NUL-terminated string: free with dsinfer_string_free. */
DSINFER_API dsinfer_status dsinfer_tokenizer_decode(const dsinfer_tokenizer* t, const int32_t* ids, size_t n_ids,
                                                    int skip_special_tokens, char** out);
/* Token lookups. The id of a token's text (its vocabulary entry, e.g. "<｜end▁of▁sentence｜>"), -1 if unknown or for
 * NULL arguments; the bos id from tokenizer_config.json, -1 if none; whether an id is a special (added, special)
 * token, 0 for ids outside [0, size). */
DSINFER_API int32_t dsinfer_tokenizer_token_to_id(const dsinfer_tokenizer* t, const char* token);
DSINFER_API int32_t dsinfer_tokenizer_bos_id(const dsinfer_tokenizer* t);
DSINFER_API int dsinfer_tokenizer_is_special(const dsinfer_tokenizer* t, int32_t id);
/* The vocabulary entry of an id. On OK *out is new: free with dsinfer_string_free. DSINFER_E_INVALID_ARG for an id
 * outside [0, size). */
DSINFER_API dsinfer_status dsinfer_tokenizer_id_to_token(const dsinfer_tokenizer* t, int32_t id, char** out);

/* Streaming detokenization: push ids one at a time and get the text they completed, never half a UTF-8 character;
 * everything pushed plus the final flush equals dsinfer_tokenizer_decode of all the ids. Borrows the tokenizer (it
 * must outlive the detokenizer). One thread at a time. Creates: free with dsinfer_detokenizer_free. */
typedef struct dsinfer_detokenizer dsinfer_detokenizer;
DSINFER_API dsinfer_status dsinfer_detokenizer_create(const dsinfer_tokenizer* t, int skip_special_tokens,
                                                      dsinfer_detokenizer** out);
DSINFER_API void dsinfer_detokenizer_free(dsinfer_detokenizer* d);
/* On OK *out is a new (possibly empty) string: free with dsinfer_string_free. */
DSINFER_API dsinfer_status dsinfer_detokenizer_push(dsinfer_detokenizer* d, int32_t id, char** out);
/* Flushes bytes still waiting for the rest of a character (as U+FFFD). *out as above. */
DSINFER_API dsinfer_status dsinfer_detokenizer_finish(dsinfer_detokenizer* d, char** out);

/* ------------------------------------------------------------------------------------------------- chat -- */
/* Encodes {"messages": [...], "tools": [...]} (OpenAI form) in DeepSeek-V3.2's format. On OK *out is new: free with
 * dsinfer_string_free. */
DSINFER_API dsinfer_status dsinfer_chat_encode(const char* messages_json, int thinking, char** out);
/* Parses a completion into {"role", "content", "reasoning_content", "tool_calls"} JSON. Creates *out as above. */
DSINFER_API dsinfer_status dsinfer_chat_parse_completion(const char* text, int thinking, char** out);

/* ---------------------------------------------------------------------------------------------- sampler -- */
/* The candidates a sampler works on, valid only during the call. Samplers may reorder and shrink n. */
typedef struct dsinfer_candidates {
  size_t struct_size;
  int32_t* ids;
  float* logits;
  size_t n;
  int64_t selected; /* index into the arrays; -1 until a selector sets it */
} dsinfer_candidates;

typedef struct dsinfer_sampler_iface {
  size_t struct_size;
  /* Required. Return DSINFER_OK, or an error status to fail the sampling step. */
  dsinfer_status (*apply)(void* user_data, dsinfer_candidates* c);
  void (*accept)(void* user_data, int32_t token); /* optional */
  void (*free)(void* user_data);                  /* optional: called when the sampler is freed */
  const char* name;                               /* for error messages */
  /* Appended in 0.1 (ABI 1), optional. clone: a new user_data with the same parameters and state (what
   * dsinfer_session_fork needs: without it forking a session whose chain holds this sampler fails with
   * DSINFER_E_UNSUPPORTED); NULL on failure. The clone is freed with `free` like the original. reset: forget
   * history (accepted tokens, RNG position), keep parameters. */
  void* (*clone)(void* user_data);
  void (*reset)(void* user_data);
} dsinfer_sampler_iface;

/* Built-ins. Each creates a sampler: free with dsinfer_sampler_free, or give it to a chain. */
DSINFER_API dsinfer_status dsinfer_sampler_chain_create(dsinfer_sampler** out);
DSINFER_API dsinfer_status dsinfer_sampler_greedy_create(dsinfer_sampler** out);
DSINFER_API dsinfer_status dsinfer_sampler_dist_create(uint64_t seed, dsinfer_sampler** out);
DSINFER_API dsinfer_status dsinfer_sampler_temperature_create(float t, dsinfer_sampler** out);
DSINFER_API dsinfer_status dsinfer_sampler_top_k_create(int64_t k, dsinfer_sampler** out);
DSINFER_API dsinfer_status dsinfer_sampler_top_p_create(float p, dsinfer_sampler** out);
DSINFER_API dsinfer_status dsinfer_sampler_min_p_create(float p, dsinfer_sampler** out);
DSINFER_API dsinfer_status dsinfer_sampler_penalties_create(int64_t last_n, float repeat, float frequency,
                                                            float presence, dsinfer_sampler** out);
DSINFER_API dsinfer_status dsinfer_sampler_typical_create(float p, dsinfer_sampler** out); /* p in (0, 1] */
/* Adds biases[i] to the logit of ids[i] (OpenAI's logit_bias: -100 all but bans a token). Biases must be finite and
 * ids >= 0 (else DSINFER_E_INVALID_ARG). The arrays are copied. */
DSINFER_API dsinfer_status dsinfer_sampler_logit_bias_create(const int32_t* ids, const float* biases, size_t n,
                                                             dsinfer_sampler** out);
/* A user sampler. iface is copied; user_data is borrowed until the sampler's free callback runs. iface->struct_size
 * must cover `apply` (else DSINFER_E_INVALID_ARG); members past it are NULL. apply's return value is checked: a
 * value that is no dsinfer_status fails the step with DSINFER_E_INVALID_ARG naming the sampler. */
DSINFER_API dsinfer_status dsinfer_sampler_custom_create(const dsinfer_sampler_iface* iface, void* user_data,
                                                         dsinfer_sampler** out);
/* --------------------------------------------------------------------------------------------- constraint -- */
/* Compiles what an OpenAI-style request body enforces, from its top-level fields: response_format (json_object;
 * json_schema with "strict": true; {"type": "regex", "regex": ...}), tools with tool_choice "required" or
 * {"type": "function", "function": {"name": ...}}, tools with tool_choice "auto" (the default: text, or a tool-call
 * block held to the tools), parallel_tool_calls, max_reasoning_tokens; other keys (messages, ...) are ignored.
 * With `thinking` the reasoning is free and the constraint starts after </think>. A request that enforces nothing
 * gives a constraint that enforces nothing (dsinfer_constraint_enforces returns 0). Errors, before anything is
 * generated: DSINFER_E_INVALID_ARG (malformed schema, regex or tools, a tool_choice naming an undeclared
 * tool, a constraint no text satisfies, over the limits: 1 MiB, nesting 64), DSINFER_E_UNSUPPORTED (a JSON Schema
 * keyword that cannot be enforced exactly). Creates: free with dsinfer_constraint_free. The tokenizer is borrowed
 * only during the call. */
DSINFER_API dsinfer_status dsinfer_constraint_compile(const dsinfer_tokenizer* t, const char* request_json,
                                                      int thinking, dsinfer_constraint** out);
DSINFER_API void dsinfer_constraint_free(dsinfer_constraint* c);
DSINFER_API int dsinfer_constraint_enforces(const dsinfer_constraint* c);
/* The constraint as a sampler chain stage (put it first in the chain): it removes every candidate that cannot continue
 * a valid output. The constraint is borrowed only during the call. */
DSINFER_API dsinfer_status dsinfer_sampler_constraint_create(const dsinfer_constraint* c, dsinfer_sampler** out);

/* Appends `s` to `chain`. Takes ownership of s on success; on failure the caller still owns it. A chain cannot be
 * added to itself (DSINFER_E_INVALID_ARG). */
DSINFER_API dsinfer_status dsinfer_sampler_chain_add(dsinfer_sampler* chain, dsinfer_sampler* s);
/* A copy with the same parameters and state (RNG included). Creates: free with dsinfer_sampler_free.
 * DSINFER_E_UNSUPPORTED for a user sampler without a clone callback. */
DSINFER_API dsinfer_status dsinfer_sampler_clone(const dsinfer_sampler* s, dsinfer_sampler** out);
/* Forgets history (accepted tokens, the draw's RNG goes back to its seed), keeps parameters. */
DSINFER_API void dsinfer_sampler_reset(dsinfer_sampler* s);
DSINFER_API void dsinfer_sampler_free(dsinfer_sampler* s);

/* ---------------------------------------------------------------------------------------------- session -- */
typedef struct dsinfer_session_params {
  size_t struct_size;
  int64_t capacity;              /* KV capacity in tokens; 0 = 4096 */
  dsinfer_precision precision;
  int thinking;                  /* render and parse in thinking mode */
  /* Appended in 0.1 (ABI 1): the seed of the default chain's draw (the checkpoint's sampling defaults). 0 default. */
  uint64_t seed;
  /* Appended in 0.2 (ABI 1): speculative decoding with the checkpoint's MTP module (docs/speculative.md). At most
   * this many drafted tokens per step, 0 (the default) = off, at most 16; DSINFER_E_UNSUPPORTED at session creation
   * when the checkpoint has no MTP module (dsinfer_model_has_mtp). The output is unchanged: token for token what
   * decoding without speculation gives, for every sampler. */
  int32_t speculative_draft_tokens;
  int32_t speculative_adaptive;  /* default 1: fewer or no drafts while acceptance is low, none for good where the
                                    session's timings show drafts cannot gain 10 %; 0 = always the maximum */
} dsinfer_session_params;
DSINFER_API void dsinfer_session_params_init(dsinfer_session_params* p, size_t struct_size);
#define DSINFER_SESSION_PARAMS_INIT(p) dsinfer_session_params_init((p), sizeof *(p))

typedef struct dsinfer_generate_params {
  size_t struct_size;
  int64_t max_tokens;  /* 0 = 256 */
  int stop_at_eos;     /* default 1 */
  /* Appended in 0.1 (ABI 1): the answer follows this constraint (the session's thinking mode decides where the answer
   * starts); the generation ends when the output is complete. NULL = none. Borrowed only during generate_start /
   * engine_generate. */
  const dsinfer_constraint* constraint;
  /* Appended in 0.1 (ABI 1): stop strings. The generation ends when the text contains one of them; the reply ends
   * before it (DSINFER_FINISH_STOP). n_stop strings, each NUL-terminated and non-empty; copied during the call. */
  const char* const* stop;
  size_t n_stop;
} dsinfer_generate_params;
DSINFER_API void dsinfer_generate_params_init(dsinfer_generate_params* p, size_t struct_size);
#define DSINFER_GENERATE_PARAMS_INIT(p) dsinfer_generate_params_init((p), sizeof *(p))

typedef enum dsinfer_event_kind {
  DSINFER_EVENT_DONE = 0,
  DSINFER_EVENT_CONTENT = 1,
  DSINFER_EVENT_REASONING = 2,
  DSINFER_EVENT_TOOL_CALL_BEGIN = 3,
  DSINFER_EVENT_TOOL_ARGS = 4,
  DSINFER_EVENT_TOOL_CALL_END = 5,
  DSINFER_EVENT_ERROR = 6 /* malformed model output; text says what, offset where; generation goes on */
} dsinfer_event_kind;

typedef struct dsinfer_event {
  size_t struct_size;
  dsinfer_event_kind kind;
  const char* text;      /* borrowed until the next call on the session; NUL-terminated */
  size_t text_len;
  int32_t tool_index;
  const char* name;      /* tool name (TOOL_CALL_BEGIN / END) */
  const char* arguments; /* complete arguments JSON (TOOL_CALL_END) */
  size_t offset;         /* ERROR: byte offset in the completion */
} dsinfer_event;

/* Creates a session over a model and tokenizer (both borrowed: they must outlive it). Free with
 * dsinfer_session_free. The default sampler is the checkpoint's: generation_config.json's temperature, top_k and
 * top_p with a draw seeded 0 (greedy without the file); set a greedy chain for argmax decoding. */
DSINFER_API dsinfer_status dsinfer_session_create(const dsinfer_model* m, const dsinfer_tokenizer* t,
                                                  const dsinfer_session_params* p, dsinfer_session** out);
DSINFER_API void dsinfer_session_free(dsinfer_session* s);
/* Takes ownership of `sampler` on success. */
DSINFER_API dsinfer_status dsinfer_session_set_sampler(dsinfer_session* s, dsinfer_sampler* sampler);
DSINFER_API dsinfer_status dsinfer_session_prefill(dsinfer_session* s, const int32_t* ids, size_t n_ids);
/* {"messages": [...], "tools": [...]}: appends only what differs from the cache. */
DSINFER_API dsinfer_status dsinfer_session_set_messages(dsinfer_session* s, const char* messages_json);
DSINFER_API dsinfer_status dsinfer_session_generate_start(dsinfer_session* s, const dsinfer_generate_params* p);
/* Fills *ev with the next event; kind DONE when the generation has ended. Set ev->struct_size = sizeof *ev before the
 * call: the library writes only that many bytes and sets struct_size to the bytes it wrote (DSINFER_E_INVALID_ARG
 * when it does not cover `kind`). */
DSINFER_API dsinfer_status dsinfer_session_next_event(dsinfer_session* s, dsinfer_event* ev);
/* Why the last generation ended (pinned values). */
typedef enum dsinfer_finish_reason {
  DSINFER_FINISH_NONE = 0,   /* none yet, running, cancelled or failed */
  DSINFER_FINISH_EOS = 1,    /* the model ended its reply (an eos token) */
  DSINFER_FINISH_STOP = 2,   /* a stop string */
  DSINFER_FINISH_LENGTH = 3  /* max_tokens */
} dsinfer_finish_reason;
DSINFER_API dsinfer_finish_reason dsinfer_session_finish_reason(const dsinfer_session* s);
/* Token counts (usage): every token in the session's cache, and how many the last prefill / set_messages evaluated
 * (the rest of the prompt was reused from the cache). The last generation's count is dsinfer_session_generated's
 * *n. 0 for NULL. */
DSINFER_API int64_t dsinfer_session_n_tokens(const dsinfer_session* s);
DSINFER_API int64_t dsinfer_session_last_prefill_tokens(const dsinfer_session* s);
/* Any thread: the running dsinfer_session_next_event returns DSINFER_E_CANCELLED. */
DSINFER_API void dsinfer_session_cancel(dsinfer_session* s);
/* The ids of the last generation: writes up to capacity, the count into *n. */
DSINFER_API dsinfer_status dsinfer_session_generated(const dsinfer_session* s, int32_t* ids, size_t capacity, size_t* n);
/* What speculative decoding did in the session (since it was created). Set out->struct_size = sizeof *out before the
 * call: the library writes only that many bytes (the fields it covers). Positions past DSINFER_MAX_DRAFT_TOKENS do
 * not occur. */
#define DSINFER_MAX_DRAFT_TOKENS 16
typedef struct dsinfer_speculative_stats {
  size_t struct_size;
  int64_t steps;        /* verifications: main-model forwards over drafted tokens */
  int64_t drafted;      /* drafted tokens checked */
  int64_t accepted;     /* of which accepted */
  int64_t plain_steps;  /* decode steps without drafts (back-off, or no room) */
  int64_t drafted_at[DSINFER_MAX_DRAFT_TOKENS];   /* by draft position: 0 = the first draft of a step */
  int64_t accepted_at[DSINFER_MAX_DRAFT_TOKENS];
} dsinfer_speculative_stats;
DSINFER_API dsinfer_status dsinfer_session_speculative_stats(const dsinfer_session* s, dsinfer_speculative_stats* out);
/* Creates a session sharing this one's cache: free with dsinfer_session_free. */
DSINFER_API dsinfer_status dsinfer_session_fork(const dsinfer_session* s, dsinfer_session** out);
DSINFER_API dsinfer_status dsinfer_session_save(const dsinfer_session* s, const char* path);
DSINFER_API dsinfer_status dsinfer_session_restore(dsinfer_session* s, const char* path);

/* ----------------------------------------------------------------------------------------------- engine -- */
/* Generates with every session at once, one forward per step for all of them (each gets exactly the tokens it
 * would get alone). The sessions must belong to `m`, hold a prompt, and share one precision. on_event (may be NULL)
 * receives each session's events, the event borrowed for the duration of the call; it runs on the calling thread.
 * Errors end the whole call; every session stays usable. */
DSINFER_API dsinfer_status dsinfer_engine_generate(const dsinfer_model* m, dsinfer_session* const* sessions,
                                                   size_t n_sessions, const dsinfer_generate_params* p,
                                                   void (*on_event)(size_t session_index, const dsinfer_event* ev,
                                                                    void* user_data),
                                                   void* user_data);

#ifdef __cplusplus
}
#endif

#endif /* DSINFER_H */
