// The backend interface: device memory plus a small set of coarse, fused ops. The model (lib/model/) is written
// once against it; the CPU backend is the reference every other backend is tested against.
//
// Conventions: activations are fp32, row-major 2-D views ([rows, cols] with a row stride `ld` in elements) into
// memory the backend owns. Weights are checkpoint tensors as stored (`Weight`, zero-copy into the mapped shard);
// a backend may upload or re-layout them in `prepare_weight` at load time, never on the per-token path.
// Index data is backend memory too (interface v2): token ids, positions, block tables and the frequencies of RoPE
// are uploaded by the model once per step (once per load for the frequencies), and the ops' index outputs (the
// indexer's top-k, the router's choices) stay where the op wrote them for the next op to read, so nothing forces a
// round trip through the host between ops. Only the arguments documented as host memory (out_scores) are host
// pointers. On the CPU backend both are the same memory.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include <vector>

#include "backend/weight.hpp"
#include "dsinfer/cuda_options.hpp"

namespace dsinfer {

// The version of this interface. A backend reports the version it was compiled against (Backend::interface_version,
// declared right after name() and to stay there) and create_backend refuses one that differs, so that a backend
// built separately against another version of this header (the CUDA library of another build) is refused instead
// of being driven through a different vtable. Version 2 (issue 19): index data in backend memory, capabilities
// through supports(), weights prepared into backend-owned handles, a per-backend scratch arena.
constexpr int kBackendInterfaceVersion = 2;

// What a backend may or may not do; the model and the KV pool ask Backend::supports() instead of assuming.
enum class BackendFeature {
  KvCacheBf16,          // packed KV caches of KvDtype::BF16 (F32 caches are always supported)
  KvCacheFp8,           // packed KV caches of KvDtype::FP8
  MlaStoredKvB,         // mla_attention reads MlaArgs::wkv_b_stored itself: the model keeps no fp32 copy of kv_b
  MoeFusedSharedExpert, // moe_experts takes MoeExpertsArgs::shared (else the model runs the shared expert itself)
  MoeSlots,             // moe_experts has the slot mode and moe_combine is exact (expert parallelism)
};

// Activation view: [rows, cols] f32, row stride ld (>= cols) in elements.
struct Tensor2D {
  float* data = nullptr;
  int64_t rows = 0, cols = 0, ld = 0;

  float* row(int64_t r) const { return data + r * ld; }
  Tensor2D cols_slice(int64_t c0, int64_t n) const { return {data + c0, rows, n, ld}; }
  Tensor2D rows_slice(int64_t r0, int64_t n) const { return {data + r0 * ld, n, cols, ld}; }
};

// Memory owned by a backend; freed through the backend that made it.
class Buffer {
 public:
  Buffer() = default;
  Buffer(void* p, size_t bytes, void (*release)(void*)) : ptr_(p, release), bytes_(bytes) {}
  void* data() const { return ptr_.get(); }
  size_t bytes() const { return bytes_; }

 private:
  std::unique_ptr<void, void (*)(void*)> ptr_{nullptr, [](void*) {}};
  size_t bytes_ = 0;
};

// A Buffer holding an fp32 matrix, with its view.
struct Matrix {
  Buffer buffer;
  Tensor2D view;
};

// How a linear layer treats its input (spec §4.3, §6).
struct LinearQuant {
  // Quantize the activation per 1x128 group to e4m3 before the GEMM. Only applies to F8_E4M3 weights: with any
  // other weight dtype the GEMM is a plain fp32 x·Wᵀ (the reference's bf16 linears never quantize).
  bool fp8_activations = false;
  bool ue8m0 = true;  // activation scales rounded up to powers of two (quantization_config.scale_fmt == "ue8m0")
};

enum class RopeLayout {
  Interleaved,  // pairs (2j, 2j+1): MLA q_pe and k_pe
  HalfSplit,    // pairs (j, j + d/2): the indexer's q and k
};

struct RopeArgs {
  Tensor2D x;                    // [T, n_heads*head_dim], rotated in place
  int64_t n_heads = 1;
  int64_t head_dim = 0;          // stride between heads inside a row
  int64_t rope_offset = 0;       // first rotated element inside each head
  int64_t rope_dim = 0;          // rotated elements per head (even)
  const float* inv_freq = nullptr;  // [rope_dim/2] YaRN-corrected frequencies
  const int32_t* positions = nullptr;  // [T] absolute positions
  RopeLayout layout = RopeLayout::Interleaved;
};

// Lightning-indexer scores and causal top-k (spec §4.2, §4.4):
//   I[t,s] = k_scale[s] · Σ_h w[t,h] · head_scale · q_scale[t,h] · ReLU(q[t,h,:]·k[s,:])   for s ∈ [0, pos[t]]
// and the top min(topk, pos[t]+1) positions of each row, padded with -1.
// Logical cache position -> row of a (possibly paged) cache tensor.
inline int64_t cache_row(const int32_t* block_table, int64_t block_tokens, int64_t pos) {
  return block_table ? int64_t(block_table[pos / block_tokens]) * block_tokens + pos % block_tokens : pos;
}

// KV cache storage (docs/architecture.md, "KV cache formats"). F32 keeps a cache tensor as a Tensor2D; the packed
// dtypes keep bytes in the layouts of kv_format.hpp (FP8: FlashMLA's "FP8 with scale" latent row and DeepGEMM's
// paged indexer key), which the ops that read the cache decode themselves.
enum class KvDtype : uint8_t { F32, BF16, FP8 };

// A cache tensor stored in a packed dtype: the latent (MLA: latent then rope key per row) or the indexer key
// (paged: pages of page_tokens rows). Row r is physical row r of the pool, as Tensor2D rows are for F32.
struct PackedKv {
  KvDtype dtype = KvDtype::F32;  // F32: not packed (the op's Tensor2D fields hold the cache)
  uint8_t* data = nullptr;
  int64_t dim = 0;               // latent: kv_lora_rank; index key: head dim
  int64_t rope_dim = 0;          // latent only: rope dims stored after the latent (and its scales)
  int64_t page_tokens = 0;       // index key only: rows per page (the pool's block)
  bool packed() const { return dtype != KvDtype::F32; }
};

struct IndexerTopkArgs {
  Tensor2D q;                    // [T, Hi*D] (post-RoPE; in fp8 mode post-Hadamard e4m3 values, unscaled)
  Tensor2D q_scale;              // [T, Hi] per (token, head) quantization scale; empty (data null) = 1
  Tensor2D w;                    // [T, Hi] head weights (x·weights_projᵀ)
  float head_scale = 1.0f;       // constant folded into w (Hi^-0.5 · D^-0.5)
  Tensor2D k;                    // [rows, D] indexer keys: logical position s is row row_of(s)
  Tensor2D k_scale;              // [rows, 1] per-key scale (same rows); empty = 1
  PackedKv k_packed;             // when packed(): the keys and their scales are here instead (k, k_scale unused)
  int64_t n_keys = 0;            // S: logical positions 0..S-1 exist
  const int32_t* block_table = nullptr;  // paged cache: row_of(s) = block_table[s / block_tokens] * block_tokens
  int64_t block_tokens = 0;              //   + s % block_tokens; null: row_of(s) = s
  int64_t n_heads = 0, head_dim = 0;
  const int32_t* positions = nullptr;  // [T] absolute position of each query, each < n_keys
  int64_t topk = 0;
  int32_t* out_indices = nullptr;  // [T, topk] selected key positions, -1 = none
  float* out_scores = nullptr;     // [T, S] host memory, may be null: the raw scores (tests, debugging)
};

enum class MlaMode {
  Mha,       // expand the latent through W_UK/W_UV per head (the reference's prefill form)
  Absorbed,  // fold W_UK into q and W_UV after attention: 576-wide dot over the latent (decode form)
};

// Multi-head latent attention over the cached latent (spec §3.3–§3.4, §4.6). Causal: query t sees cache rows
// [0, pos[t]]; with `indices`, only the listed rows (one set per query, shared by all heads).
struct MlaArgs {
  Tensor2D q;                    // [T, H*(dn+dr)], per head [nope | rope], rope already applied
  Tensor2D latent;               // [rows, kvr] cached c (after kv_norm): logical position s is row row_of(s)
  Tensor2D k_pe;                 // [rows, dr] cached rotated rope key (same rows)
  PackedKv latent_packed;        // when packed(): latent and rope key are here (latent, k_pe: data null, shapes set)
  int64_t n_keys = 0;            // S: logical positions 0..S-1 exist
  const int32_t* block_table = nullptr;  // paged cache, as in IndexerTopkArgs; null: row_of(s) = s
  int64_t block_tokens = 0;
  Tensor2D wkv_b;                // [H*(dn+dv), kvr] fp32 (dequantized once at load); data null when the backend
                                 // reads the stored weight (BackendFeature::MlaStoredKvB), rows/cols still set
  const Weight* wkv_b_stored = nullptr;  // the same weight as stored (may be null); a backend may read it instead
                                         // of wkv_b where that is cheaper, with the same fp32 values (w8·scale)
  int64_t n_heads = 0, nope_dim = 0, rope_dim = 0, v_dim = 0;
  float softmax_scale = 0.0f;
  const int32_t* positions = nullptr;  // [T], each < n_keys
  const int32_t* indices = nullptr;    // [T, n_indices], -1 = unused slot; null = dense causal
  int64_t n_indices = 0;
  MlaMode mode = MlaMode::Absorbed;
  Tensor2D out;                  // [T, H*dv]
};

struct MoeRouteArgs {
  Tensor2D x;                    // [T, hidden]
  const Weight* gate = nullptr;  // [E, hidden]
  const Weight* bias = nullptr;  // [E] e_score_correction_bias, may be null / absent
  int64_t n_experts = 0, n_group = 1, topk_group = 1, top_k = 0;
  bool sigmoid = true;           // scoring_func: sigmoid (V3) or softmax (V2)
  bool normalize = true;         // norm_topk_prob
  float routed_scale = 1.0f;
  int32_t* out_experts = nullptr;  // [T, top_k]
  float* out_weights = nullptr;    // [T, top_k]
};

struct ExpertWeights {          // one routed expert's SwiGLU: down(silu(gate·x) ⊙ up·x)
  const Weight* gate = nullptr;  // [inner, hidden]
  const Weight* up = nullptr;    // [inner, hidden]
  const Weight* down = nullptr;  // [hidden, inner]
};

struct MoeExpertsArgs {
  Tensor2D x;                    // [T, hidden]
  std::span<const ExpertWeights> experts;  // indexed by expert id
  const int32_t* expert_ids = nullptr;  // [T, top_k]
  const float* weights = nullptr;       // [T, top_k]
  int64_t top_k = 0;
  LinearQuant quant;
  Tensor2D out;                  // [T, hidden]: out = Σ_i w_i · Expert_i(x)   (overwritten)
  // The shared expert(s) as one SwiGLU, or null. Only given to a backend that supports MoeFusedSharedExpert:
  // it then adds Shared(x) to out, unweighted, after the routed experts (spec §5.3).
  const ExpertWeights* shared = nullptr;
  // Slot mode (expert parallelism, docs/distributed.md), when slots.data is set: `out` and `shared` are unused;
  // each (token t, slot i) whose expert id is >= 0 gets its weighted output w_i · Expert_i(x_t), rounded to fp32
  // exactly as the summing form rounds each term, in row t * top_k + i of slots [T * top_k, hidden]. Slots whose id
  // is -1 (an expert another rank owns; its weights may be absent) are skipped and their rows left as they are.
  // moe_combine then adds the slots up in the summing form's order.
  Tensor2D slots;
};

// out[t] += the slot rows of token t (row t * top_k + i of slots) in ascending order of their expert id, skipping
// ids < 0: the summing form of moe_experts continued from the given out, term for term, so that ranks that own
// consecutive expert ranges and add their slots one after another get bitwise the one-process sum.
struct MoeCombineArgs {
  Tensor2D slots;                       // [T * top_k, hidden]
  const int32_t* expert_ids = nullptr;  // [T, top_k], -1 = not this rank's
  int64_t top_k = 0;
  Tensor2D out;                         // [T, hidden], accumulated into
};

// Backend::kv_pack: rows src (and for the latent the rope keys, for an indexer key the scales) into physical rows
// [row0, row0 + src.rows) of a packed cache tensor.
struct KvPackArgs {
  PackedKv dst;
  bool latent = true;      // MLA latent row (src: c [n, dim], extra: rope key [n, rope_dim]) or indexer key
                           // (src: k [n, dim], extra: scales [n, 1], empty = 1)
  Tensor2D src, extra;
  int64_t row0 = 0;
  // FP8 latent: c is quantized per 128 channels here, with the scale rule of fp8_quantize (ue8m0 or not), giving
  // the values fp8_quantize(..., dequantize=true) gives. FP8 indexer key: when key_is_e4m3, src already holds
  // e4m3 values and extra their scales (fp8 precision), stored as they are; else the key is quantized here as one
  // group with the given scale folded into the stored one.
  bool ue8m0 = true;
  bool key_is_e4m3 = false;
};

// One output of Backend::linear_many: out = x · wᵀ.
struct LinearOut {
  const Weight* w = nullptr;
  Tensor2D out;
};

// What a backend holds besides weights, KV caches and live activations; release_memory() gives both back.
struct BackendMemoryStats {
  size_t scratch_bytes = 0;            // the ops' working buffers, kept between calls (grow-only)
  size_t cached_activation_bytes = 0;  // freed activation buffers kept for reuse
};

class Backend {
 public:
  Backend();
  virtual ~Backend() = default;
  Backend(const Backend&) = delete;
  Backend& operator=(const Backend&) = delete;
  virtual std::string_view name() const = 0;
  // Unique among the backends of this process, never reused: identifies the issuer of a WeightHandle.
  uint64_t id() const { return id_; }
  // kBackendInterfaceVersion as this backend's code saw it when it was compiled (inline: compiled into the backend).
  virtual int interface_version() const { return kBackendInterfaceVersion; }
  // Whether this backend has a capability (BackendFeature). Default: none.
  virtual bool supports(BackendFeature f) const { return false; }
  // Whether KV caches of dtype `d` can live in this backend (F32 always; the packed ones per supports()).
  bool supports_kv_dtype(KvDtype d) const {
    return d == KvDtype::F32 || supports(d == KvDtype::BF16 ? BackendFeature::KvCacheBf16 : BackendFeature::KvCacheFp8);
  }

  // --- memory ---
  // zero=false leaves the contents undefined (the CPU backend then commits pages only as they are written; the
  // KV pool relies on it).
  virtual Buffer allocate(size_t bytes, bool zero = true) = 0;
  // The contents of [p, p + bytes) of a buffer from allocate() are no longer needed (a free KV block): a backend may
  // give the memory back to the system; it reads as undefined until written again. Default: nothing.
  virtual void discard(void* p, size_t bytes) {}
  // Gives memory kept for reuse (recycled activation buffers) back to the system; called between forwards, e.g.
  // when a server goes idle. Default: nothing.
  virtual void release_memory() {}
  virtual BackendMemoryStats memory_stats() const { return {}; }
  Matrix matrix(int64_t rows, int64_t cols);  // zero-filled fp32 [rows, cols]
  virtual void fill_zero(Tensor2D x) = 0;
  virtual void copy(Tensor2D dst, Tensor2D src) = 0;
  virtual void to_host(float* dst, Tensor2D src) = 0;          // dst: host [rows, cols] dense
  virtual void from_host(Tensor2D dst, const float* src) = 0;  // src: host [rows, cols] dense
  // Packed KV caches (KvDtype BF16 / FP8). A backend that does not support a dtype (supports_kv_dtype) is never
  // given one (the KV pool refuses it with an error naming the backend).
  virtual void kv_pack(const KvPackArgs& a);
  // Raw bytes: packed caches, and the index data of a step (uploaded by the model, downloaded where a distributed run
  // needs the routing on the host). bytes_from_host's source may be reused as soon as it returns.
  virtual void copy_bytes(void* dst, const void* src, size_t bytes) = 0;  // both in backend memory
  virtual void bytes_to_host(void* dst, const void* src, size_t bytes) = 0;
  virtual void bytes_from_host(void* dst, const void* src, size_t bytes) = 0;
  // Called once per weight at load time (a GPU backend uploads here; the CPU backend repacks linear weights): the
  // backend keeps what it made in a table of its own, released with the backend, and records the entry in
  // w.prepared (WeightHandle), where the ops find it.
  virtual void prepare_weight(const Weight& w) {}
  // The same with how the model reads the weight, so a backend can skip work for weights never passed to linear()
  // (embedding rows, weights the model dequantizes once, the router). Defaults to the one-argument form.
  enum class WeightUse { Linear, Other };
  virtual void prepare_weight(const Weight& w, WeightUse use) { prepare_weight(w); }
  // Dequantizes any supported weight dtype to an fp32 matrix [rows, cols] (load time only).
  virtual Matrix dequantize(const Weight& w) = 0;

  // --- ops ---
  virtual void embed(const Weight& table, std::span<const int32_t> ids, Tensor2D out) = 0;  // ids: backend memory
  // residual += x (fp32), then out = RMSNorm(residual) · w. With x.data == nullptr: out = RMSNorm(residual) · w.
  virtual void add_rms_norm(Tensor2D residual, Tensor2D x, const Weight& w, float eps, Tensor2D out) = 0;
  virtual void rms_norm(Tensor2D x, const Weight& w, float eps, Tensor2D out) = 0;
  virtual void layer_norm(Tensor2D x, const Weight& w, const Weight& b, float eps, Tensor2D out) = 0;
  // out[T,N] = x[T,K] · Wᵀ for W [N,K] of dtype F32/BF16/F16/F8_E4M3 (+128x128 scale_inv).
  virtual void linear(Tensor2D x, const Weight& w, Tensor2D out, const LinearQuant& q) = 0;
  // Several linears of the same input (the projections that all read one normed hidden state): each output exactly
  // as linear() computes it; a backend may quantize x once and run them as one parallel loop.
  virtual void linear_many(Tensor2D x, std::span<const LinearOut> outs, const LinearQuant& q) {
    for (const LinearOut& o : outs) linear(x, *o.w, o.out, q);
  }
  virtual void silu_mul(Tensor2D gate, Tensor2D up, Tensor2D out) = 0;  // out = silu(gate) ⊙ up
  virtual void add(Tensor2D acc, Tensor2D x) = 0;                         // acc += x
  virtual void rope(const RopeArgs& a) = 0;
  // In place on each contiguous run of `n` (power of two) elements of every row: v = n^-1/2 · H_n · v.
  virtual void hadamard(Tensor2D x, int64_t n) = 0;
  // Per row, per group of `group` columns (last may be partial): s = amax/448 (amax floored at 1e-4; rounded up
  // to a power of two if ue8m0), q = e4m3(clamp(x/s)). Writes q (dequantize=false) or q·s (dequantize=true)
  // into `out` (may alias x) and, unless `scales` is empty, the scales into `scales` [rows, ceil(cols/group)].
  virtual void fp8_quantize(Tensor2D x, int64_t group, bool ue8m0, bool dequantize, Tensor2D out,
                            Tensor2D scales) = 0;
  // In place: every element rounded to the nearest bf16 value (ties to even), kept as fp32. Default: through host
  // memory (a backend overrides it where that matters).
  virtual void round_to_bf16(Tensor2D x);
  virtual void indexer_topk(const IndexerTopkArgs& a) = 0;
  virtual void mla_attention(const MlaArgs& a) = 0;
  virtual void moe_route(const MoeRouteArgs& a) = 0;
  virtual void moe_experts(const MoeExpertsArgs& a) = 0;
  // Expert parallelism (BackendFeature::MoeSlots; a distributed run refuses a backend without it). Default: the sum
  // through host memory.
  virtual void moe_combine(const MoeCombineArgs& a);

 protected:
  // The table entry of w.prepared when this backend issued it (index < n_entries), else -1. The caller then
  // checks that the entry was made from w's bytes and shape.
  int32_t handle_index(const Weight& w, size_t n_entries) const {
    const WeightHandle& h = w.prepared;
    return h.backend_id == id_ && h.index >= 0 && size_t(h.index) < n_entries ? h.index : -1;
  }

 private:
  uint64_t id_;
};

// MoeCombineArgs' sum over host memory (the CPU backend's moe_combine, and the default one after a copy).
void moe_combine_host(const float* slots, int64_t slots_ld, const int32_t* expert_ids, int64_t top_k, float* out,
                      int64_t out_ld, int64_t rows, int64_t cols);

struct BackendOptions {
  int n_threads = 0;  // 0 = all hardware threads
  // The CUDA backend's device and kernel choices (the CPU backend ignores them). create_backend checks them, then
  // lets the DSINFER_CUDA_* environment variables override them (backend/cuda_options.hpp); the CUDA backend
  // receives the resolved values.
  CudaOptions cuda;
};

// "cpu" (always) and "cuda" or "cuda:N" (when built with DSINFER_CUDA; N names the device and wins over
// opts.cuda.device and DSINFER_CUDA_DEVICE). Throws Error(InvalidArgument) for an unknown name or invalid
// opts.cuda.
std::unique_ptr<Backend> create_backend(std::string_view name, const BackendOptions& opts = {});

}  // namespace dsinfer
