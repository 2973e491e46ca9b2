// dsinfer — loading a DeepSeek-V3-family checkpoint and evaluating token sequences on it.
#pragma once
#include <cstdint>
#include <functional>
#include <iosfwd>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "dsinfer/cuda_options.hpp"
#include "dsinfer/export.hpp"
#include "dsinfer/error.hpp"
#include "dsinfer/sampler.hpp"

namespace dsinfer {

// The arithmetic a forward pass follows (docs/numerics.md).
enum class Precision {
  Reference,  // fp32 activations, FP8 weights dequantized, no activation or indexer quantization
              // (what Hugging Face transformers computes)
  Fp8,        // DeepSeek's reference numerics: 1x128 power-of-two activation quantization into FP8 GEMMs,
              // FP8-simulated latent cache, Hadamard + FP8 indexer
};

// How the KV cache stores a sequence's cached tokens (docs/architecture.md, "KV cache formats").
enum class KvCacheDtype {
  Auto,  // fp8 for a sequence first evaluated in fp8 precision (f32 where the backend has no fp8 cache), f32 for
         // one first evaluated in reference precision
  F32,   // fp32 values (reference precision: transformers parity)
  Bf16,  // bf16 latent, rope key and indexer key (fp32 indexer scales)
  Fp8,   // DeepSeek's deployment format: FlashMLA's latent row (e4m3 latent, a power-of-two fp32 scale per 128
         // channels, bf16 rope key; 656 bytes at V3.2's dimensions) and the e4m3 indexer key with its fp32 scale
         // (132 bytes). In fp8 precision it gives bitwise the logits of the f32 cache.
};
DSINFER_CXX_API const char* kv_cache_dtype_name(KvCacheDtype d);  // "auto", "f32", "bf16", "fp8"
DSINFER_CXX_API bool kv_cache_dtype_from_name(std::string_view s, KvCacheDtype* out);

// Which of the two exactly equivalent MLA forms computes attention.
// Auto: absorbed for decode rows; in multi-token steps MHA for rows that attend every earlier token and absorbed
// for rows past index_topk (DSA: a fixed number of selected tokens). Decided per position, so chunking never
// changes a result.
enum class AttentionForm { Auto, Mha, Absorbed };

struct DSINFER_CXX_API ModelLoadParams {
  std::string backend = "cpu";  // "cpu", or "cuda" when built with it
  int n_threads = 0;            // CPU threads, 0 to 1024; 0 = all hardware threads (at most 1024)
  // The KV cache pool shared by all sequences of the model: tokens it holds (0 = 32768; at most 2^31 - 1) and tokens
  // per block (0 = 64; at most 65536). Pages are committed as they are used, so a large pool costs address space,
  // not memory, until it fills. Values past the limits: Error(InvalidArgument) before anything is read.
  int64_t kv_cache_tokens = 0;
  int64_t kv_block_tokens = 64;
  // The KV cache dtype of new sequences (Model::new_sequence may choose another per sequence). Sequences of different
  // dtypes live in separate pools of kv_cache_tokens tokens each, made when first used.
  KvCacheDtype kv_cache_dtype = KvCacheDtype::Auto;
  // Called during load with the fraction done [0, 1] and the stage; may be empty. Runs on the loading thread.
  std::function<void(double fraction, std::string_view stage)> progress;
  // The CPU kernel family, as a cap: "auto" (the best this CPU runs), "avx512", "avx2" or "scalar" (a cap above what
  // the CPU runs gives the best it runs). The families compute bitwise-identical results; only speed differs. "amx"
  // asks for AVX-512 with the lightning indexer's scores on AMX tiles (where the CPU has them, else the best family):
  // faster at long contexts, its indexer scores differ from the others' in the last bits. The
  // family is fixed once per process, by the first load that names one (or by the first evaluation): a later load
  // naming a different one throws Error(InvalidArgument). Environment override: DSINFER_CPU_KERNELS.
  std::string cpu_kernels = "auto";
  // The CUDA backend's kernel choices and device (dsinfer/cuda_options.hpp, docs/cuda.md); the CPU backend ignores
  // them. Each has an environment variable that overrides it (DSINFER_CUDA_DEVICE, DSINFER_CUDA_SMALL_M, ...).
  CudaOptions cuda;
  // A distributed run over MPI (docs/distributed.md; a build with DSINFER_MPI): every rank of `mpirun -np N` is
  // started with the same checkpoint directory and parameters; rank 0 calls Model::load and uses the model as
  // usual, every other rank calls Model::run_worker, which serves rank 0's model until rank 0 destroys it. Each rank
  // keeps only its share of the routed experts (expert parallelism); the results are bitwise those of one process.
  // CPU backend only. Errors: Unsupported without MPI; InvalidArgument when Model::load runs on a rank other than 0.
  bool distributed = false;
  // How long a rank waits for its peers before the call fails with Error(Device) (a rank died or hangs); 0 = 120 s.
  // Environment override: DSINFER_DIST_TIMEOUT (seconds).
  double distributed_timeout_s = 0;
};

struct DSINFER_CXX_API ModelInfo {
  std::string model_type;   // "deepseek_v32", "deepseek_v3"
  bool has_indexer = false; // DeepSeek Sparse Attention present
  bool fp8_weights = false; // quantization_config says fp8
  int64_t vocab_size = 0, hidden_size = 0, num_layers = 0, index_topk = 0;
  int64_t bos_token_id = 0;
  std::vector<int64_t> eos_token_ids;
  // The checkpoint's sampling defaults: generation_config.json (DeepSeek-V3.2: temperature 1.0, top_p 0.95), or
  // greedy (do_sample false) without the file, as transformers does. Every front door samples with them unless
  // told otherwise: a Session's default chain, the C API's and Python's sessions, the CLI, the server.
  GenerationConfig generation;
  // tokenizer_config.json's chat_template ("" without one): with model_type it tells the chat format the checkpoint
  // expects (dsinfer::detect_chat_format; V3.2 ships none, the V3 family each its own).
  std::string chat_template;
  int64_t parameter_count = 0;  // tensors bound for the forward pass
  int64_t weight_bytes = 0;     // their bytes as stored
  // The weight bytes one single-token decode step reads: every weight once, except the embedding (one row) and
  // the routed experts (top_k of each MoE layer's: its routed bytes × top_k / n_routed_experts). What a decode step
  // streams from memory, so tok/s times this is the read bandwidth decode achieves.
  int64_t decode_weight_bytes = 0;
  // Of those, the routed experts' (top_k of n_routed_experts in each MoE layer): the part that grows when a step
  // evaluates several rows, since each row picks its own experts and the step reads their union (a speculative
  // verification: docs/speculative.md). n_routed_experts / experts_per_token: config.json's n_routed_experts and
  // num_experts_per_tok (0 for a model without MoE layers).
  int64_t decode_routed_expert_bytes = 0;
  int64_t n_routed_experts = 0, experts_per_token = 0;
  // Of decode_weight_bytes, the indexer's query weights (wq_b, weights_proj, every layer): a step reads them only
  // when one of its sequences sees more than index_topk keys (until then top-k keeps every key and ranking is
  // skipped).
  int64_t indexer_query_bytes = 0;
  // KV cache memory (known before anything is allocated): the dtype a sequence evaluated in fp8 precision gets with
  // the load parameters (never Auto), and the bytes one token takes in it, in one layer and in all layers.
  // Model::kv_cache_bytes gives the bytes of a context of any length and dtype.
  KvCacheDtype kv_cache_dtype = KvCacheDtype::F32;
  int64_t kv_bytes_per_token_layer = 0;
  int64_t kv_bytes_per_token = 0;
  // Of kv_bytes_per_token_layer, the indexer key's with its scale (0 without an indexer). A decode step reads it for
  // every cached token once the sequence sees more than index_topk keys (the indexer's scan), and the rest (the
  // latent row) for the index_topk tokens selected, or for every token while it sees at most index_topk.
  int64_t kv_index_bytes_per_token_layer = 0;
  // The multi-token-prediction module (DeepSeek's layer num_hidden_layers, spec §7): loaded when config.json's
  // num_nextn_predict_layers > 0 and the checkpoint stores it. Its tensors are not in parameter_count /
  // weight_bytes above; a sequence with MTP on (Model::enable_mtp) also holds kv_bytes_per_token_layer per token
  // for the MTP layer's own cache. mtp_draft_weight_bytes: what one draft row reads (the layer with top_k of its
  // routed experts, and the shared lm_head).
  bool has_mtp = false;
  int64_t mtp_parameter_count = 0;
  int64_t mtp_weight_bytes = 0;
  int64_t mtp_draft_weight_bytes = 0;
  // A distributed run (ModelLoadParams::distributed): its ranks, and the weight bytes each rank holds (index = rank;
  // the main model and the MTP module, its share of the routed experts plus the replicated rest). The counts above
  // are the whole model's. One process: 1 and {the bytes this process holds}.
  int distributed_ranks = 1;
  std::vector<int64_t> rank_weight_bytes;
  // Whether each rank runs attention for its share of the heads (else every rank computes every head): when the
  // heads divide evenly among the ranks and, with FP8 kv_b, a rank's rows start on a 128-row block.
  bool attention_split_by_heads = false;
};

struct DSINFER_CXX_API EvalOptions {
  Precision precision = Precision::Fp8;
  bool all_logits = false;   // logits for every new token, else only for the last one
  int64_t index_topk = 0;    // 0 = the config's index_topk; larger values make attention dense
  AttentionForm attention = AttentionForm::Auto;
  // Long prompts: eval() and a one-entry eval_batch() evaluate a sequence's new tokens in forwards of at most this
  // many tokens (never leaving a 1-token chunk, which would take the decode form), so activation memory is bounded
  // by the chunk, not the prompt. The logits are bitwise those of any other chunking. 0 = 512 for a model with an
  // indexer (V3.2: on the benchmark model as fast as 2048 at 4K and 32K tokens, with 98 MB less peak memory), 2048
  // without one (V3: each chunk's MHA form expands the whole cache).
  int64_t max_chunk_tokens = 0;
  // Sequences with MTP enabled: keep the MTP rows of these tokens to run later, batched, with the next draft or
  // evaluation that does not defer (at most 64 rows wait; beyond that they run now). Results are unaffected; what
  // speculative decoding uses while it drafts nothing, so plain steps skip the MTP layer.
  bool defer_mtp = false;
};

class Model;

// The cached state of one token sequence (the KV cache). Use from one thread at a time.
class DSINFER_CXX_API Sequence {
 public:
  ~Sequence();
  int64_t size() const;      // tokens evaluated so far
  int64_t capacity() const;  // tokens it can hold
  KvCacheDtype kv_cache_dtype() const;  // how its cache is stored now (Auto until its first evaluation decides)
  void truncate(int64_t n);  // forget tokens from position n on (n <= size())

 private:
  friend class Model;
  struct Impl;
  explicit Sequence(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// A loaded model: immutable after load and safe to share between threads; evaluations on one model are
// serialized (the CPU backend runs one op at a time over its thread pool).
class DSINFER_CXX_API Model {
 public:
  // Loads a Hugging Face checkpoint directory (config.json + safetensors). Every tensor is checked before any
  // compute. Throws Error (Io, Format, Unsupported, InvalidArgument) with a message naming file, tensor and key.
  static std::unique_ptr<Model> load(const std::string& dir, const ModelLoadParams& params = {});
  // Distributed runs (ModelLoadParams::distributed, docs/distributed.md). distributed_rank(): this process's rank
  // and the number of ranks (starts MPI if the application has not). run_worker(): what every rank but 0 calls
  // instead of load: loads this rank's share of the checkpoint and serves rank 0's model until it is destroyed
  // (then returns). Both throw Error(Unsupported) in a build without MPI; run_worker rethrows a load error after
  // telling rank 0 (whose load then fails naming the rank) and Error(Device) when rank 0 stops answering.
  struct DistributedRank {
    int rank = 0, size = 1;
  };
  static DistributedRank distributed_rank();
  static void run_worker(const std::string& dir, const ModelLoadParams& params);
  ~Model();

  const ModelInfo& info() const;

  // A new empty sequence with room for `capacity` tokens, its cache in `dtype` (Auto: ModelLoadParams'
  // kv_cache_dtype). Ownership: the caller's; it must not outlive the model. Throws Error(Unsupported) for a dtype
  // the backend cannot hold.
  std::unique_ptr<Sequence> new_sequence(int64_t capacity, KvCacheDtype dtype = KvCacheDtype::Auto) const;
  // The KV cache bytes a sequence of `tokens` tokens holds in `dtype` (Auto: info().kv_cache_dtype), whole blocks
  // of kv_block_tokens, all layers: what a context of that length needs, before anything is allocated.
  int64_t kv_cache_bytes(int64_t tokens, KvCacheDtype dtype = KvCacheDtype::Auto) const;

  // Appends `ids` to the sequence and returns their logits, row-major [n, vocab_size] with n = ids.size() when
  // opts.all_logits, else [1, vocab_size] for the last id. Errors (the sequence is left unchanged):
  // InvalidArgument for an id outside [0, vocab_size) or empty ids; OutOfMemory when the sequence is full.
  std::vector<float> eval(Sequence& seq, std::span<const int32_t> ids, const EvalOptions& opts = {}) const;

  // Several sequences in one forward (a ragged batch: prefill chunks and single decode tokens may mix). Each
  // entry's logits are exactly what eval() would give for it alone. Validates every entry before evaluating any;
  // on error no sequence changes. Unlike eval(), which returns a new vector every call, the logits go into vectors
  // the caller owns: a caller that keeps its entries from step to step reuses their storage (the allocation-free
  // decode path, tests/lib/model/test_decode_allocations.cpp).
  struct BatchEntry {
    Sequence* sequence = nullptr;
    std::span<const int32_t> ids;
    bool all_logits = false;
    std::vector<float> logits;  // out: resized to [n or 1, vocab_size]; its storage is reused when large enough
    // Every id is computed bitwise as n one-token evals would compute it (the decode attention form, row by row),
    // not as one multi-token chunk: how speculative decoding verifies drafted tokens without changing any result.
    bool exact_rows = false;
    // This entry's MTP rows wait for its next draft (EvalOptions::defer_mtp for this sequence alone; either one
    // defers): how an Engine lets a session that drafts nothing this step skip the MTP layer.
    bool defer_mtp = false;
  };
  void eval_batch(std::span<BatchEntry> entries, const EvalOptions& opts = {}) const;

  // A new sequence holding `src`'s cached tokens, sharing their cache blocks (copy on write): a common prefix is
  // stored once. capacity >= src.size(); 0 = src's capacity.
  std::unique_ptr<Sequence> copy_sequence(const Sequence& src, int64_t capacity = 0) const;
  // Writes / reads a sequence's cache (with its MTP state when enable_mtp is on: its rows, the hidden state the next
  // draft reads, deferred rows): a versioned binary format checked against this model's fingerprint; versions 1 and 2
  // (no MTP state) are still read. Errors: Io, Format (not a dsinfer sequence file, other version, truncated,
  // inconsistent sizes), InvalidArgument (saved from a different model).
  void save_sequence(const Sequence& seq, std::ostream& out) const;
  std::unique_ptr<Sequence> load_sequence(std::istream& in, int64_t capacity = 0) const;
  struct KvCacheStats {
    int64_t blocks_total = 0, blocks_used = 0, block_tokens = 0;
    int64_t bytes_per_block = 0;  // all layers, in info().kv_cache_dtype
    int64_t bytes_per_token = 0;  // all layers, in info().kv_cache_dtype
    int64_t bytes_used = 0;       // the blocks in use, every dtype's pool (and the MTP layer's caches)
  };
  KvCacheStats kv_cache_stats() const;
  // What the backend holds besides the weights and the KV caches: the ops' scratch (grow-only buffers, sized by the
  // largest step run so far) and freed activation buffers kept for reuse. release_memory() gives both back.
  struct BackendMemoryStats {
    int64_t scratch_bytes = 0;
    int64_t cached_activation_bytes = 0;
  };
  BackendMemoryStats backend_memory_stats() const;
  // Gives memory the model keeps for reuse back to the system: the pages of free KV cache blocks, recycled
  // activation buffers and the ops' scratch (CPU backend). Nothing observable changes; the next forward may run a
  // little slower while it touches fresh pages. What a long-running server calls when it goes idle. Waits for a
  // running evaluation.
  void release_memory() const;
  // Identifies the checkpoint: its config and a hash of sampled weight bytes.
  const std::string& fingerprint() const;
  // The CPU threads the model was loaded to use (ModelLoadParams::n_threads; 0 resolved to the hardware's count).
  // An Engine samples its sessions on as many (docs/threading.md).
  int host_threads() const;

  // Speculative decoding with the MTP module (info().has_mtp). enable_mtp(seq, tokens) gives the sequence an MTP
  // cache: from then on every evaluation also runs the MTP layer over the new tokens (a small part of a forward).
  // `tokens` are the ids the sequence holds (size() of them; empty for an empty sequence): a sequence enabled when
  // it already holds tokens, with no MTP state of its own, gets MTP rows computed without the main model's hidden
  // states (weaker drafts until the context moves on; results are unaffected). on = false drops the MTP state.
  // Errors: Unsupported (no MTP module), InvalidArgument (tokens do not match size()).
  void enable_mtp(Sequence& seq, bool on, std::span<const int32_t> tokens = {}, const EvalOptions& opts = {}) const;
  // Drafts one token further for each entry's sequence: the MTP module at the position after the sequence's last
  // token, fed `token` (the token that follows it: sampled from the last logits, or the previous draft), returns its
  // logits [vocab] (the distribution of the token after `token`). Successive calls chain (vLLM's k-step drafting
  // with one module); the next eval_batch or truncate of the sequence forgets the chain.
  // Errors: Unsupported (no MTP module), InvalidArgument (MTP not enabled, empty sequence, id out of range),
  // OutOfMemory (more than kMaxDraftTokens chained).
  static constexpr int64_t kMaxDraftTokens = 16;
  struct DraftEntry {
    Sequence* sequence = nullptr;
    int32_t token = 0;
    std::vector<float> logits;  // out: [vocab_size]
  };
  void mtp_draft(std::span<DraftEntry> entries, const EvalOptions& opts = {}) const;
  bool mtp_enabled(const Sequence& seq) const;

  // Greedy continuation of `prompt` by `n_new` tokens (stops early at an eos id when stop_at_eos). With
  // n_usable > 0 only ids below it are chosen (the tokenizer's size: the embedding is padded beyond it).
  std::vector<int32_t> generate_greedy(std::span<const int32_t> prompt, int64_t n_new, const EvalOptions& opts = {},
                                       bool stop_at_eos = false, int64_t n_usable = 0) const;

 private:
  struct Impl;
  explicit Model(std::unique_ptr<Impl> impl);
  static std::unique_ptr<Model> load_shard(const std::string& dir, const ModelLoadParams& params, bool worker);
  // load_sequence's MTP part (version 3 files), on rank 0 and, from its broadcast, on every worker.
  void install_mtp_state(Sequence& seq, int64_t rows, std::vector<uint8_t>& row_bytes, std::vector<float> pending,
                         std::vector<int32_t> deferred_ids, std::vector<float> deferred_hidden) const;
  std::unique_ptr<Impl> impl_;
};

}  // namespace dsinfer
