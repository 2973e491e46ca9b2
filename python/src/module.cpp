// The Python extension `dsinfer._dsinfer`: a thin pybind11 layer over the C++ API. Heavy work runs with the GIL
// released; Python samplers and progress callbacks take it back only for their call.
#include <pybind11/functional.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "dsinfer/chat.hpp"
#include "dsinfer/constraint.hpp"
#include "dsinfer/dsinfer.hpp"
#include "dsinfer/openai.hpp"
#include "dsinfer/sampler.hpp"
#include "dsinfer/session.hpp"
#include "dsinfer/tokenizer.hpp"
#include "dsinfer/version.hpp"

#include <mutex>
#include <thread>

namespace py = pybind11;
using namespace dsinfer;

namespace {

// One Python exception class per ErrorCode, all deriving from dsinfer.Error (created in __init__.py and handed
// to the module through _set_error_classes).
// Deliberately leaked: a static py::dict would be released after the interpreter has shut down.
py::dict& error_classes() {
  static auto* d = new py::dict();
  return *d;
}

// A Python exception raised inside a callback the core made on this thread (a sampler's apply or accept). The core
// sees an Error and unwinds; the front door (translate) then raises the original exception itself when `propagate`
// is set, else the Error's class with the original as __cause__. Raw references, this thread's own: a thread_local
// py::object would be released at thread exit without the GIL.
struct StashedPyError {
  PyObject* type = nullptr;
  PyObject* value = nullptr;
  PyObject* trace = nullptr;
  bool propagate = false;
};
thread_local StashedPyError g_stashed;

void clear_stashed_python_error() {  // with the GIL
  Py_CLEAR(g_stashed.type);
  Py_CLEAR(g_stashed.value);
  Py_CLEAR(g_stashed.trace);
}

void stash_python_error(py::error_already_set& e, bool propagate) {  // with the GIL
  clear_stashed_python_error();
  e.restore();
  PyErr_Fetch(&g_stashed.type, &g_stashed.value, &g_stashed.trace);
  PyErr_NormalizeException(&g_stashed.type, &g_stashed.value, &g_stashed.trace);
  if (g_stashed.trace && g_stashed.value) PyException_SetTraceback(g_stashed.value, g_stashed.trace);
  g_stashed.propagate = propagate;
}

[[noreturn]] void rethrow_as_python(const Error& e) {
  if (g_stashed.value && g_stashed.propagate) {
    PyErr_Restore(g_stashed.type, g_stashed.value, g_stashed.trace);  // steals the references
    g_stashed = StashedPyError{};
    throw py::error_already_set();
  }
  const int code = int(e.code());
  py::dict& classes = error_classes();
  py::object cls = classes.contains(py::int_(code)) ? classes[py::int_(code)] : classes[py::int_(int(ErrorCode::Internal))];
  PyErr_SetObject(cls.ptr(), py::make_tuple(code, e.what()).ptr());
  if (g_stashed.value) {
    PyObject *type, *value, *trace;
    PyErr_Fetch(&type, &value, &trace);
    PyErr_NormalizeException(&type, &value, &trace);
    Py_INCREF(g_stashed.value);
    PyException_SetCause(value, g_stashed.value);  // steals the reference
    PyErr_Restore(type, value, trace);
    clear_stashed_python_error();
  }
  throw py::error_already_set();
}

// A Python object with apply(candidates) (and optionally accept(token)) as a sampler.
class PySampler final : public Sampler {
 public:
  explicit PySampler(py::object obj) : obj_(std::move(obj)) {}
  ~PySampler() override {
    py::gil_scoped_acquire gil;
    obj_ = py::object();
  }
  std::string name() const override {
    py::gil_scoped_acquire gil;
    return py::str(obj_.get_type().attr("__name__"));
  }
  void apply(Candidates& c) override {
    py::gil_scoped_acquire gil;
    // NumPy arrays that Python owns, copied in and (after the call) back: a sampler that keeps c.ids or c.logits
    // past the call keeps its own arrays, never a view of candidates that the next step frees or reuses.
    py::array_t<int32_t> ids(py::ssize_t(c.size()));
    py::array_t<float> logits(py::ssize_t(c.size()));
    std::memcpy(ids.mutable_data(), c.ids.data(), c.size() * sizeof(int32_t));
    std::memcpy(logits.mutable_data(), c.logits.data(), c.size() * sizeof(float));
    py::object view = py::module_::import("types").attr("SimpleNamespace")(
        py::arg("ids") = ids, py::arg("logits") = logits, py::arg("selected") = c.selected, py::arg("n") = c.size());
    try {
      obj_.attr("apply")(view);
    } catch (py::error_already_set& e) {
      // The core sees an Error and unwinds; the front door then raises the sampler's own exception, its type
      // preserved (a ValueError stays a ValueError, KeyboardInterrupt stays KeyboardInterrupt).
      stash_python_error(e, true);
      throw Error(ErrorCode::InvalidArgument, std::string("Python sampler raised: ") + e.what());
    }
    // The sampler edits the arrays in place (arrays it binds to c.ids / c.logits instead are not read, as before).
    size_t n;
    int64_t sel;
    try {
      n = view.attr("n").cast<size_t>();
      sel = view.attr("selected").cast<int64_t>();
    } catch (const py::cast_error&) {
      throw Error(ErrorCode::InvalidArgument, "a Python sampler must leave c.n and c.selected integers (n >= 0)");
    }
    if (n > c.size()) throw Error(ErrorCode::InvalidArgument, "a sampler may not grow the candidates");
    std::memcpy(c.ids.data(), ids.data(), c.size() * sizeof(int32_t));
    std::memcpy(c.logits.data(), logits.data(), c.size() * sizeof(float));
    c.resize(n);
    c.sorted = false;
    c.has_probs = false;
    c.selected = sel >= 0 && sel < int64_t(n) ? sel : -1;
  }
  void accept(int32_t token) override {
    py::gil_scoped_acquire gil;
    try {
      if (py::hasattr(obj_, "accept")) obj_.attr("accept")(token);
    } catch (py::error_already_set& e) {
      // The core reports this as an Error; the front door raises the Python exception itself (its own type).
      stash_python_error(e, true);
      throw Error(ErrorCode::InvalidArgument, std::string("Python sampler's accept raised: ") + e.what());
    }
  }
  std::unique_ptr<Sampler> clone() const override {
    py::gil_scoped_acquire gil;
    return std::make_unique<PySampler>(py::module_::import("copy").attr("deepcopy")(obj_));
  }

 private:
  py::object obj_;
};

struct PyConstraint {
  std::shared_ptr<Tokenizer> tok;  // the vocabulary the constraint was compiled for stays alive with it
  std::shared_ptr<const Constraint> c;
};
struct PyConstraintSampler {
  std::shared_ptr<Tokenizer> tok;
  std::unique_ptr<ConstraintSampler> s;
};

// Builds a chain from Python: built-ins arrive as ("name", params...) tuples, anything else is a Python sampler.
std::unique_ptr<SamplerChain> make_chain(const py::list& items) {
  auto chain = std::make_unique<SamplerChain>();
  for (const auto& it : items) {
    if (py::isinstance<py::tuple>(it)) {
      const auto t = it.cast<py::tuple>();
      const std::string kind = t[0].cast<std::string>();
      if (kind == "greedy") chain->add(make_greedy_sampler());
      else if (kind == "dist") chain->add(make_dist_sampler(t[1].cast<uint64_t>()));
      else if (kind == "temperature") chain->add(make_temperature_sampler(t[1].cast<float>()));
      else if (kind == "top_k") chain->add(make_top_k_sampler(t[1].cast<int64_t>()));
      else if (kind == "top_p") chain->add(make_top_p_sampler(t[1].cast<float>()));
      else if (kind == "min_p") chain->add(make_min_p_sampler(t[1].cast<float>()));
      else if (kind == "typical") chain->add(make_typical_sampler(t[1].cast<float>()));
      else if (kind == "logit_bias") chain->add(make_logit_bias_sampler(t[1].cast<std::map<int32_t, float>>()));
      else if (kind == "penalties")
        chain->add(make_penalties_sampler(t[1].cast<int64_t>(), t[2].cast<float>(), t[3].cast<float>(), t[4].cast<float>()));
      else throw Error(ErrorCode::InvalidArgument, "unknown built-in sampler \"" + kind + "\"");
    } else if (py::isinstance<PyConstraint>(it)) {
      chain->add(std::make_unique<ConstraintSampler>(it.cast<const PyConstraint&>().c));
    } else {
      chain->add(std::make_unique<PySampler>(py::reinterpret_borrow<py::object>(it)));
    }
  }
  return chain;
}

py::object event_to_python(const ChatEvent& e) {
  using K = ChatEvent::Kind;
  const char* kind = e.kind == K::ContentDelta     ? "content"
                     : e.kind == K::ReasoningDelta ? "reasoning"
                     : e.kind == K::ToolCallBegin  ? "tool_call_begin"
                     : e.kind == K::ToolArgsDelta  ? "tool_args"
                     : e.kind == K::ToolCallEnd    ? "tool_call_end"
                                                   : "error";
  py::dict d;
  d["kind"] = kind;
  d["text"] = py::bytes(e.text).attr("decode")("utf-8", "replace");
  d["tool_index"] = e.tool_index;
  d["name"] = e.name;
  d["arguments"] = e.arguments;
  d["offset"] = e.offset;
  return std::move(d);
}

py::dict message_to_python(const ChatMessage& m) {
  py::dict d;
  d["role"] = m.role;
  d["content"] = m.content.value_or("");
  d["reasoning_content"] = m.reasoning_content.value_or("");
  py::list calls;
  for (const auto& c : m.tool_calls) {
    py::dict fn;
    fn["name"] = c.name;
    fn["arguments"] = c.arguments;
    py::dict call;
    call["type"] = "function";
    call["function"] = fn;
    calls.append(call);
  }
  d["tool_calls"] = calls;
  return d;
}

template <class F>
auto translate(F&& f) -> decltype(f()) {
  clear_stashed_python_error();  // from an earlier call whose Error the core handled itself
  try {
    return f();
  } catch (const Error& e) {
    rethrow_as_python(e);
  }
}

// "fp8" or "reference"; anything else is refused rather than read as fp8.
Precision precision_from_name(const std::string& name) {
  if (name == "fp8") return Precision::Fp8;
  if (name == "reference") return Precision::Reference;
  throw Error(ErrorCode::InvalidArgument, "precision must be \"fp8\" or \"reference\", not \"" + name + "\"");
}

struct PyModel {
  std::shared_ptr<Model> model;
};
struct PyTokenizer {
  std::shared_ptr<Tokenizer> tok;
};
// Which thread is inside a call on a Session. A Session is used from one thread at a time (its calls release the
// GIL, so two Python threads would otherwise run it at once and corrupt its cache): a call from a second thread
// raises instead. The same thread may read the session again from inside a call (a sampler reading tokens), not
// change it.
struct SessionUse {
  std::mutex mutex;
  std::thread::id owner;
  int depth = 0;
};
class SessionUseGuard {
 public:
  SessionUseGuard(SessionUse& u, bool changes) : u_(u) {
    std::lock_guard<std::mutex> lock(u_.mutex);
    if (u_.depth > 0 && (u_.owner != std::this_thread::get_id() || changes))
      throw Error(ErrorCode::InvalidArgument,
                  u_.owner != std::this_thread::get_id()
                      ? "this Session is in use by another thread (use a Session from one thread at a time; "
                        "only cancel() may come from any thread)"
                      : "this Session cannot be changed from inside one of its own calls (a sampler callback)");
    u_.owner = std::this_thread::get_id();
    ++u_.depth;
  }
  ~SessionUseGuard() {
    std::lock_guard<std::mutex> lock(u_.mutex);
    --u_.depth;
  }
  SessionUseGuard(const SessionUseGuard&) = delete;
  SessionUseGuard& operator=(const SessionUseGuard&) = delete;

 private:
  SessionUse& u_;
};

struct PySession {
  std::shared_ptr<Model> model;  // keep the model and tokenizer alive as long as the session
  std::shared_ptr<Tokenizer> tok;
  std::unique_ptr<Session> s;
  std::unique_ptr<SessionUse> use = std::make_unique<SessionUse>();
  ThinkingMode thinking = ThinkingMode::Chat;  // the session's mode (SessionParams::thinking)
};

// dsinfer.Client's request: the server's protocol (openai::LocalCompletion) on a private engine.
struct PyLocalCompletion {
  std::shared_ptr<Model> model;
  std::shared_ptr<Tokenizer> tok;
  std::unique_ptr<openai::LocalCompletion> c;
};

// openai::ApiError as dsinfer.APIError(status, body JSON) (the class comes from __init__.py).
py::object& api_error_class() {
  static auto* cls = new py::object();
  return *cls;
}

template <class F>
auto translate_api(F&& f) -> decltype(f()) {
  try {
    return translate(std::forward<F>(f));
  } catch (const openai::ApiError& e) {
    PyErr_SetObject(api_error_class().ptr(), py::make_tuple(e.status(), e.json()).ptr());
    throw py::error_already_set();
  }
}

// Model.load's keyword arguments and their defaults, given to `def` (a generic function that registers a function
// with them): Model.load and dsinfer.run_worker, which a distributed run's other ranks call with the same options,
// take one list.
template <class Def>
void with_load_options(Def&& def) {
  def(py::arg("progress") = py::none(), py::arg("n_threads") = 0, py::arg("kv_cache_tokens") = 0,
      py::arg("kv_cache_dtype") = "auto", py::arg("kv_block_tokens") = 64, py::arg("cpu_kernels") = "auto",
      py::arg("backend") = "cpu", py::arg("cuda_device") = CudaOptions{}.device,
      py::arg("cuda_small_m_max") = CudaOptions{}.small_m_max,
      py::arg("cuda_small_m_tensor_cores") = CudaOptions{}.small_m_tensor_cores,
      py::arg("cuda_cublaslt_fp8") = CudaOptions{}.cublaslt_fp8, py::arg("cuda_mla_kernel") = CudaOptions{}.mla_kernel,
      py::arg("cuda_indexer_kernel") = CudaOptions{}.indexer_kernel,
      py::arg("distributed") = ModelLoadParams{}.distributed,
      py::arg("distributed_timeout_s") = ModelLoadParams{}.distributed_timeout_s);
}

// f(path, ModelLoadParams) as a function of (path, the options of with_load_options), errors translated.
template <class F>
auto taking_load_options(F f) {
  return [f](const std::string& path, py::object progress, int n_threads, int64_t kv_cache_tokens,
             const std::string& kv_cache_dtype, int64_t kv_block_tokens, const std::string& cpu_kernels,
             const std::string& backend, int cuda_device, int64_t cuda_small_m_max, bool cuda_small_m_tensor_cores,
             bool cuda_cublaslt_fp8, const std::string& cuda_mla_kernel, const std::string& cuda_indexer_kernel,
             bool distributed, double distributed_timeout_s) {
    ModelLoadParams p;
    p.backend = backend;
    p.cuda.device = cuda_device;
    p.cuda.small_m_max = cuda_small_m_max;
    p.cuda.small_m_tensor_cores = cuda_small_m_tensor_cores;
    p.cuda.cublaslt_fp8 = cuda_cublaslt_fp8;
    p.cuda.mla_kernel = cuda_mla_kernel;
    p.cuda.indexer_kernel = cuda_indexer_kernel;
    p.n_threads = n_threads;
    p.kv_cache_tokens = kv_cache_tokens;
    p.kv_block_tokens = kv_block_tokens;
    p.cpu_kernels = cpu_kernels;
    if (!kv_cache_dtype_from_name(kv_cache_dtype, &p.kv_cache_dtype))
      throw py::value_error("kv_cache_dtype must be auto, f32, bf16 or fp8");
    if (!progress.is_none())
      p.progress = [progress](double f, std::string_view stage) {
        py::gil_scoped_acquire gil;
        progress(f, std::string(stage));
      };
    p.distributed = distributed;
    p.distributed_timeout_s = distributed_timeout_s;
    return translate([&] { return f(path, p); });
  };
}

}  // namespace

PYBIND11_MODULE(_dsinfer, m) {
  m.doc() = "dsinfer: DeepSeek-V3.2-architecture inference (C++ core)";
  m.attr("__version__") = DSINFER_VERSION_STRING;  // CMakeLists.txt's project(VERSION), as the package metadata
  m.def("_set_error_classes", [](py::dict classes) { error_classes() = classes; });
  // The log callback (dsinfer.set_log_callback wraps it with LogLevel values). The Python function is held by a
  // holder that takes the GIL to drop it: the library may release its last copy on any thread.
  m.def("_set_log_callback", [](py::object callback, int min_level) {
    if (callback.is_none() || min_level < int(LogLevel::Debug) || min_level >= int(LogLevel::Off)) {
      set_log_callback(nullptr, LogLevel::Off);
      return;
    }
    struct Holder {
      py::object fn;
      explicit Holder(py::object f) : fn(std::move(f)) {}
      ~Holder() {
        if (!Py_IsInitialized()) {  // the interpreter is gone: leak the reference rather than touch it
          fn.release();
          return;
        }
        py::gil_scoped_acquire gil;
        fn = py::object();
      }
    };
    auto holder = std::make_shared<Holder>(std::move(callback));
    set_log_callback(
        [holder](LogLevel level, std::string_view message) {
          if (!Py_IsInitialized()) return;
          py::gil_scoped_acquire gil;
          try {
            holder->fn(int(level), py::str(message.data(), message.size()));
          } catch (py::error_already_set& e) {
            // A failing log callback must not fail the operation it reports on: Python's unraisable hook shows it.
            e.discard_as_unraisable("dsinfer log callback");
          }
        },
        LogLevel(min_level));
  });

  py::class_<PyModel> model_class(m, "Model", "A loaded checkpoint (config.json + safetensors). Immutable after load "
                                              "and safe to share between threads; evaluations on one model are "
                                              "serialized.");
  const auto load = [](const std::string& path, const ModelLoadParams& p) {
    std::unique_ptr<Model> model;
    {
      py::gil_scoped_release nogil;
      model = Model::load(path, p);
    }
    return PyModel{std::shared_ptr<Model>(std::move(model))};
  };
  with_load_options([&](auto... options) {
    model_class.def_static(
        "load", taking_load_options(load), py::arg("path"), options...,
        "Loads a Hugging Face checkpoint directory. progress(fraction, stage) is called during the load; "
        "n_threads 0 = all cores; kv_cache_tokens (0 = 32768) and kv_block_tokens size the KV cache pool; "
        "kv_cache_dtype 'auto', 'f32', 'bf16' or 'fp8'; cpu_kernels 'auto', 'avx512', 'avx2' or 'scalar' caps the CPU "
        "kernel family ('amx': AVX-512 with the indexer on AMX tiles, its own last bits; fixed once per process; "
        "docs/options.md). backend 'cpu', or 'cuda' / 'cuda:N' in a CUDA build. The cuda_* options tune the CUDA "
        "backend (the CPU backend ignores them; docs/cuda.md): cuda_device "
        "(>= 0; 'cuda:N' wins), cuda_small_m_max (0 to 4096: GEMMs of up to that many rows run the skinny kernels), "
        "cuda_small_m_tensor_cores and cuda_cublaslt_fp8 (allow those kernels), cuda_mla_kernel and "
        "cuda_indexer_kernel ('cuda-core' or 'tensor-core'); each DSINFER_CUDA_* environment variable overrides its "
        "option. distributed=True: a distributed run over MPI (docs/distributed.md): every rank of `mpirun -np N` "
        "is started with the same path and options; rank 0 calls Model.load and uses the model as usual, every "
        "other rank calls dsinfer.run_worker. distributed_timeout_s: how long a rank waits for its peers (0 to 1e6; "
        "0 = 120 s; DSINFER_DIST_TIMEOUT overrides it). Raises IoError, FormatError, UnsupportedError (distributed "
        "in a build without MPI), DeviceError, InvalidArgumentError naming the file, tensor or option.");
  });
  // Distributed runs: what the ranks other than 0 call. They block with the GIL released (a worker serves until
  // rank 0's model is gone).
  m.def("distributed_rank", [] {
    const Model::DistributedRank place = translate([] {
      py::gil_scoped_release nogil;
      return Model::distributed_rank();
    });
    return py::make_tuple(place.rank, place.size);
  }, "(rank, size): this process's rank in MPI_COMM_WORLD and the number of ranks; starts MPI if the application has "
     "not. Raises UnsupportedError in a build without MPI (the default wheel), DeviceError when MPI cannot start.");
  with_load_options([&](auto... options) {
    m.def("run_worker", taking_load_options([](const std::string& path, const ModelLoadParams& p) {
      py::gil_scoped_release nogil;
      Model::run_worker(path, p);
    }), py::arg("path"), options...,
          "What every rank of a distributed run but 0 calls instead of Model.load, with the same path and options "
          "(distributed=True): loads this rank's share of the checkpoint and serves rank 0's model until rank 0 "
          "drops it, then returns None. Raises UnsupportedError in a build without MPI, InvalidArgumentError "
          "(options as Model.load, distributed=False, or called on rank 0), the load's errors (rank 0's Model.load "
          "then fails too, naming the rank), DeviceError when the communication with rank 0 fails.");
  });
  model_class
      .def_property_readonly("info", [](const PyModel& pm) {
        const auto& i = pm.model->info();
        py::dict d;
        d["model_type"] = i.model_type;
        d["has_indexer"] = i.has_indexer;
        d["fp8_weights"] = i.fp8_weights;
        d["vocab_size"] = i.vocab_size;
        d["hidden_size"] = i.hidden_size;
        d["num_layers"] = i.num_layers;
        d["parameter_count"] = i.parameter_count;
        // The checkpoint's sampling defaults (generation_config.json; greedy without it), what sessions use.
        d["generation"] = py::dict(py::arg("do_sample") = i.generation.do_sample,
                                   py::arg("temperature") = i.generation.temperature,
                                   py::arg("top_p") = i.generation.top_p, py::arg("top_k") = i.generation.top_k);
        d["kv_cache_dtype"] = kv_cache_dtype_name(i.kv_cache_dtype);
        d["kv_bytes_per_token_layer"] = i.kv_bytes_per_token_layer;
        d["kv_bytes_per_token"] = i.kv_bytes_per_token;
        d["kv_index_bytes_per_token_layer"] = i.kv_index_bytes_per_token_layer;
        d["chat_format"] = chat_format_name(detect_chat_format(i.model_type, i.chat_template));
        d["has_mtp"] = i.has_mtp;  // the MTP module (speculative decoding)
        d["mtp_parameter_count"] = i.mtp_parameter_count;
        d["mtp_weight_bytes"] = i.mtp_weight_bytes;
        // A distributed run's ranks and the weight bytes each holds (index = rank); one process: 1 and [its bytes].
        d["distributed_ranks"] = i.distributed_ranks;
        d["rank_weight_bytes"] = i.rank_weight_bytes;
        d["attention_split_by_heads"] = i.attention_split_by_heads;
        return d;
      }, "What the checkpoint is: model_type, sizes, generation (its sampling defaults), chat_format "
         "('deepseek-v3.2'; the V3 family's are named and refused by chats), KV cache dtype and bytes per token, "
         "distributed_ranks and rank_weight_bytes (the weight bytes each rank holds; one process: [its bytes]), "
         "attention_split_by_heads (each rank runs attention for its share of the heads).")
      .def("kv_cache_bytes", [](const PyModel& pm, int64_t tokens, const std::string& dtype) {
        KvCacheDtype d;
        if (!kv_cache_dtype_from_name(dtype, &d)) throw py::value_error("dtype must be auto, f32, bf16 or fp8");
        return translate([&] { return pm.model->kv_cache_bytes(tokens, d); });
      }, py::arg("tokens"), py::arg("dtype") = "auto",
         "KV cache bytes a context of `tokens` tokens needs (whole blocks, all layers), before allocation")
      .def("backend_memory_stats", [](const PyModel& pm) {
        const auto st = pm.model->backend_memory_stats();
        py::dict d;
        d["scratch_bytes"] = st.scratch_bytes;
        d["cached_activation_bytes"] = st.cached_activation_bytes;
        return d;
      }, "What the backend holds besides weights and KV caches: scratch_bytes (the ops' grow-only buffers) and "
         "cached_activation_bytes (freed activation buffers kept for reuse); release_memory() gives both back")
      .def("release_memory", [](const PyModel& pm) {
        translate([&] {
          py::gil_scoped_release nogil;  // waits for a running evaluation
          pm.model->release_memory();
        });
      }, "Gives the backend's scratch, cached activation buffers and the free KV blocks' pages back to the system; "
         "no result changes")
      .def("logits", [](const PyModel& pm, const std::vector<int32_t>& ids, const std::string& precision) {
        return translate([&] {
          EvalOptions o;
          o.precision = precision_from_name(precision);
          o.all_logits = true;
          std::vector<float> out;
          {
            py::gil_scoped_release nogil;
            auto seq = pm.model->new_sequence(int64_t(std::max<size_t>(ids.size(), 1)));
            out = pm.model->eval(*seq, ids, o);
          }
          const py::ssize_t V = pm.model->info().vocab_size;
          py::array_t<float> a({py::ssize_t(ids.size()), V});
          std::memcpy(a.mutable_data(), out.data(), out.size() * sizeof(float));
          return a;
        });
      }, py::arg("ids"), py::arg("precision") = "fp8",
         "Logits of every id of a fresh sequence, a NumPy float32 array [len(ids), vocab_size]; precision 'fp8' "
         "(DeepSeek's numerics) or 'reference' (transformers').");

  py::class_<PyTokenizer>(m, "Tokenizer", "A checkpoint's tokenizer (tokenizer.json + tokenizer_config.json): byte-level "
                                          "BPE exactly as the tokenizers library runs it. Immutable; share freely.")
      .def_static("load", [](const std::string& path) {
        return translate([&] { return PyTokenizer{std::shared_ptr<Tokenizer>(Tokenizer::load(path))}; });
      }, py::arg("path"), "Loads PATH/tokenizer.json (and tokenizer_config.json beside it), or that file itself.")
      .def("encode", [](const PyTokenizer& t, const std::string& text, bool add_special_tokens) {
        return translate([&] { return t.tok->encode(text, add_special_tokens); });
      }, py::arg("text"), py::arg("add_special_tokens") = false,
         "Token ids of `text`; add_special_tokens applies the post-processor (DeepSeek's prepends bos).")
      .def("decode", [](const PyTokenizer& t, const std::vector<int32_t>& ids, bool skip_special_tokens) {
        return translate([&] { return py::bytes(t.tok->decode(ids, skip_special_tokens)).attr("decode")("utf-8"); });
      }, py::arg("ids"), py::arg("skip_special_tokens") = false,
         "The text of `ids` (InvalidArgumentError for an id outside [0, len(tokenizer))).")
      .def("__len__", [](const PyTokenizer& t) { return t.tok->size(); }, "Vocabulary plus added tokens.")
      .def("token_to_id", [](const PyTokenizer& t, const std::string& token) { return t.tok->token_to_id(token); },
           py::arg("token"), "The id of a vocabulary entry (e.g. '<｜end▁of▁sentence｜>'), -1 if there is none.")
      .def("id_to_token", [](const PyTokenizer& t, int32_t id) {
        return translate([&] { return py::bytes(t.tok->id_to_token(id)).attr("decode")("utf-8", "replace"); });
      }, py::arg("id"), "The vocabulary entry of an id (InvalidArgumentError outside [0, len(tokenizer))).")
      .def("is_special", [](const PyTokenizer& t, int32_t id) { return translate([&] { return t.tok->is_special(id); }); },
           py::arg("id"), "Whether `id` is a special (added) token such as bos/eos.")
      .def_property_readonly("eos_id", [](const PyTokenizer& t) { return t.tok->eos_id(); },
                             "The end-of-sentence id (-1 if none).")
      .def_property_readonly("bos_id", [](const PyTokenizer& t) { return t.tok->bos_id(); },
                             "The begin-of-sentence id from tokenizer_config.json (-1 if none).");

  struct PyDetokenizer {
    std::shared_ptr<Tokenizer> tok;  // kept alive: the Detokenizer borrows it
    std::unique_ptr<Detokenizer> d;
  };
  py::class_<PyDetokenizer>(m, "Detokenizer",
                            "Streaming detokenization: push ids one at a time and get the text they completed, never "
                            "half a UTF-8 character. Everything pushed plus finish() equals Tokenizer.decode of all ids.")
      .def(py::init([](const PyTokenizer& t, bool skip_special_tokens) {
             return PyDetokenizer{t.tok, std::make_unique<Detokenizer>(*t.tok, skip_special_tokens)};
           }), py::arg("tokenizer"), py::arg("skip_special_tokens") = false)
      .def("push", [](PyDetokenizer& d, int32_t id) {
        return translate([&] { return py::bytes(d.d->push(id)).attr("decode")("utf-8"); });
      }, py::arg("id"), "The text `id` completes ('' while a character is still incomplete).")
      .def("finish", [](PyDetokenizer& d) {
        return translate([&] { return py::bytes(d.d->finish()).attr("decode")("utf-8"); });
      }, "Flushes bytes still waiting for the rest of a character (as U+FFFD).");

  m.def("encode_chat", [](const std::string& messages_json, bool thinking) {
    return translate([&] {
      ChatOptions o;
      o.thinking = thinking ? ThinkingMode::Thinking : ThinkingMode::Chat;
      return encode_chat(chat_messages_from_json(messages_json), o);
    });
  });
  m.def("parse_completion", [](const std::string& text, bool thinking) {
    return translate([&] { return message_to_python(parse_completion(text, thinking ? ThinkingMode::Thinking : ThinkingMode::Chat)); });
  });

  py::class_<PyConstraint>(m, "Constraint")
      .def_static("_from_request_json", [](const PyTokenizer& tok, const std::string& request, bool thinking) {
        return translate([&] {
          const ConstraintSpec spec = constraint_from_request_json(request, thinking ? ThinkingMode::Thinking : ThinkingMode::Chat);
          py::gil_scoped_release nogil;
          return PyConstraint{tok.tok, Constraint::compile(*tok.tok, spec)};
        });
      })
      .def_static("_from_spec", [](const PyTokenizer& tok, const std::string& kind, const std::string& schema,
                                   const std::string& regex, const std::string& tools, const std::string& tool_name,
                                   bool parallel, bool thinking, int64_t max_reasoning_tokens) {
        return translate([&] {
          ConstraintSpec spec;
          using K = ConstraintSpec::Kind;
          if (kind == "json_schema") spec.kind = K::JsonSchema;
          else if (kind == "json_object") spec.kind = K::JsonObject;
          else if (kind == "regex") spec.kind = K::Regex;
          else if (kind == "tool_calls") spec.kind = K::ToolCalls;
          else if (kind != "none") throw Error(ErrorCode::InvalidArgument, "unknown constraint kind \"" + kind + "\"");
          spec.json_schema = schema;
          spec.regex = regex;
          spec.tools_json = tools;
          spec.tool_name = tool_name;
          spec.parallel_tool_calls = parallel;
          spec.thinking = thinking ? ThinkingMode::Thinking : ThinkingMode::Chat;
          spec.max_reasoning_tokens = max_reasoning_tokens;
          py::gil_scoped_release nogil;
          return PyConstraint{tok.tok, Constraint::compile(*tok.tok, spec)};
        });
      })
      .def_property_readonly("kind", [](const PyConstraint& c) {
        using K = ConstraintSpec::Kind;
        switch (c.c->spec().kind) {
          case K::JsonSchema: return "json_schema";
          case K::JsonObject: return "json_object";
          case K::Regex: return "regex";
          case K::ToolCalls: return "tool_calls";
          default: return "none";
        }
      })
      .def_property_readonly("enforces", [](const PyConstraint& c) { return c.c->spec().enforces(); })
      .def_property_readonly("thinking", [](const PyConstraint& c) { return c.c->spec().thinking == ThinkingMode::Thinking; })
      .def_property_readonly("compile_ms", [](const PyConstraint& c) { return c.c->compile_ms(); })
      .def("sampler", [](const PyConstraint& c) {
        return translate([&] { return PyConstraintSampler{c.tok, std::make_unique<ConstraintSampler>(c.c)}; });
      });

  py::class_<PyConstraintSampler>(m, "ConstraintSampler",
                                  "A constraint's matcher for your own decoding loop (Constraint.sampler()): which "
                                  "tokens may come next, and the state after each accepted token.")
      .def("allowed_tokens", [](PyConstraintSampler& s) {
        return translate([&] {
          Candidates c;
          const int64_t n = s.s->constraint().vocab_size();
          c.ids.resize(size_t(n));
          c.logits.assign(size_t(n), 0.0f);
          for (int64_t i = 0; i < n; ++i) c.ids[size_t(i)] = int32_t(i);
          s.s->apply(c);
          py::array_t<int32_t> a(py::ssize_t(c.size()));
          std::memcpy(a.mutable_data(), c.ids.data(), c.size() * sizeof(int32_t));
          return a;
        });
      }, "The token ids allowed next, a NumPy int32 array.")
      .def("accept", [](PyConstraintSampler& s, int32_t token) { translate([&] { s.s->accept(token); }); },
           py::arg("token"), "Advances past `token` (InvalidArgumentError for a token that is not allowed).")
      .def("reset", [](PyConstraintSampler& s) { s.s->reset(); }, "Back to the start of the output.")
      .def_property_readonly("complete", [](const PyConstraintSampler& s) { return s.s->complete(); },
                             "Whether the output so far is a complete match (it may still continue).")
      .def_property_readonly("terminated", [](const PyConstraintSampler& s) { return s.s->terminated(); },
                             "Whether nothing may follow (the output is complete and ends here).")
      .def_property_readonly("in_reasoning", [](const PyConstraintSampler& s) { return s.s->in_reasoning(); },
                             "Whether the output is still in the free reasoning before </think> (thinking mode).");

  py::class_<PySession>(m, "Session")
      .def(py::init([](const PyModel& model, const PyTokenizer& tok, int64_t capacity, const std::string& precision,
                       bool thinking, uint64_t seed, int64_t speculative, bool speculative_adaptive) {
             SessionParams p;
             p.seed = seed;
             p.speculative.draft_tokens = speculative;
             p.speculative.adaptive = speculative_adaptive;
             p.capacity = capacity;
             p.thinking = thinking ? ThinkingMode::Thinking : ThinkingMode::Chat;
             return translate([&] {
               p.eval.precision = precision_from_name(precision);
               return PySession{model.model, tok.tok, std::make_unique<Session>(*model.model, *tok.tok, p),
                               std::make_unique<SessionUse>(), p.thinking};
             });
           }),
           py::arg("model"), py::arg("tokenizer"), py::arg("capacity") = 4096, py::arg("precision") = "fp8",
           py::arg("thinking") = false, py::arg("seed") = 0, py::arg("speculative") = 0,
           py::arg("speculative_adaptive") = true)
      .def_property_readonly("speculative_stats", [](const PySession& s) {
        return translate([&] {
          SessionUseGuard use(*s.use, false);
          const SpeculativeStats& st = s.s->speculative_stats();
          py::dict d;
          d["steps"] = st.steps;
          d["drafted"] = st.drafted;
          d["accepted"] = st.accepted;
          d["plain_steps"] = st.plain_steps;
          d["acceptance"] = st.acceptance();
          d["drafted_at"] = st.drafted_at;
          d["accepted_at"] = st.accepted_at;
          return d;
        });
      })
      .def("set_sampler", [](PySession& s, const py::list& items) {
        translate([&] {
          SessionUseGuard use(*s.use, true);
          s.s->set_sampler(make_chain(items));
        });
      })
      .def("prefill", [](PySession& s, const std::vector<int32_t>& ids) {
        translate([&] {
          SessionUseGuard use(*s.use, true);
          py::gil_scoped_release nogil;
          s.s->prefill(ids);
        });
      })
      .def("_set_messages_json", [](PySession& s, const std::string& json) {
        translate([&] {
          const auto msgs = chat_messages_from_json(json);
          SessionUseGuard use(*s.use, true);
          py::gil_scoped_release nogil;
          s.s->set_messages(msgs);
        });
      })
      .def("_start", [](PySession& s, int64_t max_tokens, std::vector<std::string> stop, bool stop_at_eos,
                        const PyConstraint* constraint) {
        GenerateParams g;
        g.max_tokens = max_tokens;
        g.stop = std::move(stop);
        g.stop_at_eos = stop_at_eos;
        if (constraint) g.constraint = constraint->c;
        translate([&] {
          SessionUseGuard use(*s.use, true);
          s.s->start(g);
        });
      }, py::arg("max_tokens"), py::arg("stop"), py::arg("stop_at_eos"), py::arg("constraint") = nullptr)
      .def("_next", [](PySession& s) -> py::object {
        return translate([&]() -> py::object {
          ChatEvent e;
          bool more;
          {
            SessionUseGuard use(*s.use, true);
            py::gil_scoped_release nogil;
            more = s.s->next(e);
          }
          if (!more) return py::none();
          return event_to_python(e);
        });
      })
      // (the constraint or None, why the tools are not enforced or ""): tools under tool_choice "auto" that cannot be
      // enforced exactly are served unenforced, as the server does; Session.chat_stream warns.
      .def("_constraint", [](PySession& s, const std::string& request) -> py::object {
        return translate([&]() -> py::object {
          // In the session's mode: a thinking session's max_reasoning_tokens is enforced even without a format.
          const ConstraintSpec spec = constraint_from_request_json(request, s.thinking);
          std::string tools_not_enforced;
          std::shared_ptr<const Constraint> c = compile_request_constraint(*s.tok, spec, &tools_not_enforced);
          py::object constraint = py::none();
          if (c) constraint = py::cast(PyConstraint{s.tok, std::move(c)});
          return py::make_tuple(constraint, tools_not_enforced);
        });
      })
      .def("cancel", [](PySession& s) { s.s->cancel(); })
      .def_property_readonly("generated", [](const PySession& s) {
        return translate([&] {
          SessionUseGuard use(*s.use, false);
          return s.s->generated();
        });
      })
      .def_property_readonly("generated_text", [](const PySession& s) {
        return translate([&] {
          SessionUseGuard use(*s.use, false);
          return s.s->generated_text();
        });
      })
      .def_property_readonly("reply", [](const PySession& s) {
        return translate([&] {
          SessionUseGuard use(*s.use, false);
          return message_to_python(s.s->reply());
        });
      })
      .def_property_readonly("finish_reason", [](const PySession& s) -> py::object {
        switch (s.s->finish_reason()) {
          case FinishReason::Eos: return py::str("eos");
          case FinishReason::StopString: return py::str("stop");
          case FinishReason::MaxTokens: return py::str("length");
          default: return py::none();
        }
      })
      .def_property_readonly("last_prefill_tokens", [](const PySession& s) { return s.s->last_prefill_tokens(); })
      .def_property_readonly("tokens", [](const PySession& s) {
        return translate([&] {
          SessionUseGuard use(*s.use, false);
          return s.s->tokens();
        });
      })
      .def_property_readonly("last_logits", [](const PySession& s) {
        return translate([&] {
          SessionUseGuard use(*s.use, false);
          const auto& l = s.s->last_logits();
          py::array_t<float> a(py::ssize_t(l.size()));
          std::memcpy(a.mutable_data(), l.data(), l.size() * sizeof(float));
          return a;
        });
      })
      .def("fork", [](const PySession& s) {
        return translate([&] {
          SessionUseGuard use(*s.use, false);
          return PySession{s.model, s.tok, s.s->fork(), std::make_unique<SessionUse>(), s.thinking};
        });
      })
      .def("save", [](const PySession& s, const std::string& path) {
        translate([&] {
          SessionUseGuard use(*s.use, false);
          s.s->save(path);
        });
      })
      .def("restore", [](PySession& s, const std::string& path) {
        translate([&] {
          SessionUseGuard use(*s.use, true);
          s.s->restore(path);
        });
      });

  // Engine::generate over Python sessions: one forward per step for all of them. on_event(i, event) runs with the GIL.
  m.def("_engine_generate", [](const PyModel& pm, const std::vector<PySession*>& sessions, int64_t max_tokens,
                               std::vector<std::string> stop, bool stop_at_eos, py::object on_event) {
    translate([&] {
      std::vector<std::unique_ptr<SessionUseGuard>> uses;
      std::vector<Session*> ss;
      for (PySession* s : sessions) {
        if (!s) throw Error(ErrorCode::InvalidArgument, "Engine.generate: a session is None");
        if (s->model != pm.model) throw Error(ErrorCode::InvalidArgument, "Engine.generate: a session of another model");
        uses.push_back(std::make_unique<SessionUseGuard>(*s->use, true));
        ss.push_back(s->s.get());
      }
      GenerateParams g;
      g.max_tokens = max_tokens;
      g.stop = std::move(stop);
      g.stop_at_eos = stop_at_eos;
      std::function<void(size_t, const ChatEvent&)> cb;
      if (!on_event.is_none())
        cb = [&on_event](size_t i, const ChatEvent& e) {
          py::gil_scoped_acquire gil;
          try {
            on_event(i, event_to_python(e));
          } catch (py::error_already_set& err) {
            stash_python_error(err, true);  // the callback's own exception, raised as it is
            throw Error(ErrorCode::InvalidArgument, std::string("on_event raised: ") + err.what());
          }
        };
      Engine engine(*pm.model);
      py::gil_scoped_release nogil;
      engine.generate(ss, g, cb);
    });
  }, py::arg("model"), py::arg("sessions"), py::arg("max_tokens"), py::arg("stop"), py::arg("stop_at_eos"),
     py::arg("on_event"));

  // The OpenAI-shaped call (dsinfer.Client): request bodies and replies as JSON text, exactly the server's.
  m.def("_set_api_error_class", [](py::object cls) { api_error_class() = cls; });
  py::class_<PyLocalCompletion>(m, "_LocalCompletion")
      .def(py::init([](const PyModel& pm, const PyTokenizer& pt, const std::string& endpoint, const std::string& body,
                       const std::string& model_id, int64_t context, py::object generation) {
             return translate_api([&] {
               openai::Defaults d;
               d.model_id = model_id;
               d.context = context;
               d.any_model_name = true;
               // The checkpoint's sampling defaults (read at load), or those of the folder given.
               d.generation = generation.is_none() ? pm.model->info().generation
                                                   : load_generation_config(generation.cast<std::string>());
               const auto ep = endpoint == "chat" ? openai::Endpoint::ChatCompletions : openai::Endpoint::Completions;
               openai::Request r;
               {
                 py::gil_scoped_release nogil;
                 r = openai::parse_request(ep, body, *pt.tok, d);
               }
               return PyLocalCompletion{pm.model, pt.tok,
                                        std::make_unique<openai::LocalCompletion>(std::move(r), *pm.model, *pt.tok, d)};
             });
           }),
           py::arg("model"), py::arg("tokenizer"), py::arg("endpoint"), py::arg("body"), py::arg("model_id"),
           py::arg("context"), py::arg("generation_config_dir") = py::none())
      .def("next", [](PyLocalCompletion& c) {
        return translate_api([&] {
          std::vector<std::string> chunks;
          bool more;
          {
            py::gil_scoped_release nogil;
            more = c.c->next(chunks);
          }
          return py::make_tuple(chunks, more);
        });
      })
      .def("reply", [](const PyLocalCompletion& c) { return c.c->completion().reply(); })
      .def_property_readonly("stream", [](const PyLocalCompletion& c) { return c.c->completion().request().stream; });
}
