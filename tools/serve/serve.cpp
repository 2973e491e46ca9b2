// `dsinfer serve`: HTTP (cpp-httplib) in front of the Scheduler. Routes, authentication, error objects, SSE
// streaming and client-disconnect detection live here; the protocol is openai::Completion's, the batching the
// Scheduler's.
#include "serve.hpp"

#include <arpa/inet.h>
#include <dirent.h>
#include <fmt/format.h>
#include <httplib.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>

#include <atomic>
#include <charconv>
#include <cstring>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "dsinfer/dsinfer.hpp"
#include "dsinfer/openai.hpp"
#include "dsinfer/sampler.hpp"
#include "dsinfer/tokenizer.hpp"
#include "cuda_flag.hpp"
#include "mpi_launch.hpp"
#include "parse_number.hpp"
#include "metrics.hpp"
#include "scheduler.hpp"

namespace dsinfer::serve {

namespace {

constexpr const char* kUsage =
    "usage: dsinfer serve [--model DIR] [--host 127.0.0.1] [--port 8000] [--api-key KEY] [--threads N]\n"
    "                     [--max-sessions 16] [--max-queue 64] [--ctx 4096] [--served-model-name NAME]\n"
    "                     [--prefix-cache 16] [--max-body-bytes 8388608] [--precision fp8|reference]\n"
    "                     [--drain-seconds 30] [--max-step-prompt-tokens 256] [--speculative mtp[:K]]\n"
    "                     [--backend cpu|cuda|cuda:N] [--cuda KEY=VALUE,...]\n"
    "                     [--cpu-kernels auto|amx|avx512|avx2|scalar]\n"
    "  An OpenAI-compatible server: POST /v1/chat/completions, /v1/completions, /tokenize, /detokenize,\n"
    "  /reset_prefix_cache; GET /v1/models, /health, /metrics. --api-key (or DSINFER_API_KEY) protects all but\n"
    "  /health and /metrics. SIGTERM/SIGINT: stop accepting, finish running requests (at most --drain-seconds),\n"
    "  exit 0. --model defaults to $DSINFER_MODEL, else the model shipped with dsinfer. --speculative mtp[:K]:\n"
    "  speculative decoding with the checkpoint's MTP module (up to K drafts per step, default 2; same output).\n";

struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct Options {
  std::string model, host = "127.0.0.1", api_key, served_name, precision = "fp8", backend = "cpu",
      cpu_kernels = "auto";
  CudaOptions cuda;
  int port = 8000, threads = 0, max_sessions = 16, max_queue = 64, prefix_cache = 16, drain_seconds = 30;
  int64_t ctx = 4096, max_body = 8 << 20, step_prompt_tokens = 256;
  int64_t speculative = 0;  // drafts per step (0 = off)
};

int64_t to_int(const std::string& flag, const std::string& s, int64_t lo, int64_t hi) {
  if (const auto v = dsinfer::tools::parse_number<int64_t>(s, lo, hi)) return *v;
  throw UsageError(fmt::format("--{} expects an integer in [{}, {}], got \"{}\"", flag, lo, hi, s));
}

Options parse_options(int argc, char** argv) {
  static const std::set<std::string> known = {"model", "host", "port", "api-key", "threads", "max-sessions",
                                              "max-queue", "ctx", "served-model-name", "prefix-cache",
                                              "max-body-bytes", "precision", "drain-seconds",
                                              "max-step-prompt-tokens", "speculative", "backend", "cuda",
                                              "cpu-kernels"};
  std::map<std::string, std::string> f;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--help" || a == "-h") throw UsageError("");
    if (a.rfind("--", 0) != 0) throw UsageError(fmt::format("unexpected argument \"{}\"", a));
    a = a.substr(2);
    if (!known.count(a)) throw UsageError(fmt::format("unknown flag --{} for \"serve\"", a));
    if (i + 1 >= argc) throw UsageError(fmt::format("flag --{} needs a value", a));
    f[a] = argv[++i];
  }
  Options o;
  if (f.count("model")) o.model = f["model"];
  else if (const char* m = std::getenv("DSINFER_MODEL"); m && *m) o.model = m;
  else o.model = DSINFER_DEFAULT_MODEL;  // the shipped model, as for the other commands
  if (f.count("host")) o.host = f["host"];
  if (f.count("port")) o.port = int(to_int("port", f["port"], 0, 65535));
  if (f.count("api-key")) o.api_key = f["api-key"];
  else if (const char* k = std::getenv("DSINFER_API_KEY")) o.api_key = k;
  if (f.count("threads")) o.threads = int(to_int("threads", f["threads"], 1, 1024));
  if (f.count("max-sessions")) o.max_sessions = int(to_int("max-sessions", f["max-sessions"], 1, 4096));
  if (f.count("max-queue")) o.max_queue = int(to_int("max-queue", f["max-queue"], 0, 1 << 20));
  if (f.count("ctx")) o.ctx = to_int("ctx", f["ctx"], 16, 1 << 24);
  if (f.count("prefix-cache")) o.prefix_cache = int(to_int("prefix-cache", f["prefix-cache"], 0, 4096));
  if (f.count("max-body-bytes")) o.max_body = to_int("max-body-bytes", f["max-body-bytes"], 1024, int64_t(1) << 32);
  if (f.count("max-step-prompt-tokens"))
    o.step_prompt_tokens = to_int("max-step-prompt-tokens", f["max-step-prompt-tokens"], 1, int64_t(1) << 30);
  if (f.count("drain-seconds")) o.drain_seconds = int(to_int("drain-seconds", f["drain-seconds"], 0, 86400));
  if (f.count("precision")) {
    o.precision = f["precision"];
    if (o.precision != "fp8" && o.precision != "reference")
      throw UsageError(fmt::format("--precision expects fp8 or reference, got \"{}\"", o.precision));
  }
  if (f.count("served-model-name")) o.served_name = f["served-model-name"];
  if (f.count("backend")) o.backend = f["backend"];
  if (f.count("cpu-kernels")) o.cpu_kernels = f["cpu-kernels"];  // checked by the load, as for the other commands
  if (f.count("cuda"))
    if (const std::string wrong = tools::apply_cuda_flag(f["cuda"], o.cuda); !wrong.empty()) throw UsageError(wrong);
  if (f.count("speculative")) {
    const std::string& v = f["speculative"];
    if (v == "mtp") o.speculative = 2;
    else if (v.rfind("mtp:", 0) == 0) o.speculative = to_int("speculative", v.substr(4), 1, Model::kMaxDraftTokens);
    else throw UsageError(fmt::format("--speculative expects mtp or mtp:K, got \"{}\"", v));
  }
  return o;
}

// --- client disconnects -------------------------------------------------------------------------------------
// cpp-httplib does not hand a handler its socket; the connection's socket is the one open descriptor whose local
// and peer addresses are the request's. Once found, poll() tells whether the peer has closed its side.
bool same_endpoint(const sockaddr_storage& a, const std::string& addr, int port) {
  char buf[INET6_ADDRSTRLEN] = {};
  int p = -1;
  if (a.ss_family == AF_INET) {
    const auto* s = reinterpret_cast<const sockaddr_in*>(&a);
    inet_ntop(AF_INET, &s->sin_addr, buf, sizeof buf);
    p = ntohs(s->sin_port);
  } else if (a.ss_family == AF_INET6) {
    const auto* s = reinterpret_cast<const sockaddr_in6*>(&a);
    inet_ntop(AF_INET6, &s->sin6_addr, buf, sizeof buf);
    p = ntohs(s->sin6_port);
  } else {
    return false;
  }
  return p == port && addr == buf;
}

int connection_socket(const httplib::Request& req) {
  DIR* d = opendir("/proc/self/fd");
  if (!d) return -1;
  int found = -1;
  while (dirent* e = readdir(d)) {
    int fd = -1;
    auto [p, ec] = std::from_chars(e->d_name, e->d_name + std::strlen(e->d_name), fd);
    if (ec != std::errc() || fd < 0) continue;
    sockaddr_storage local{}, peer{};
    socklen_t ll = sizeof local, pl = sizeof peer;
    if (getsockname(fd, reinterpret_cast<sockaddr*>(&local), &ll) != 0) continue;
    if (getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &pl) != 0) continue;
    if (same_endpoint(local, req.local_addr, req.local_port) && same_endpoint(peer, req.remote_addr, req.remote_port)) {
      found = fd;
      break;
    }
  }
  closedir(d);
  return found;
}

bool peer_gone(int fd) {
  if (fd < 0) return false;
  pollfd p{fd, POLLRDHUP, 0};
  return poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL));
}

// --- the server ----------------------------------------------------------------------------------------------
enum class State { Loading, Ready, Draining };

// The model's load parameters from the options (the same on every rank of a distributed run).
ModelLoadParams model_params(const Options& o) {
  ModelLoadParams p;
  p.n_threads = o.threads;
  p.backend = o.backend;
  p.cuda = o.cuda;
  p.cpu_kernels = o.cpu_kernels;
  // Every slot may fill its context, cached conversations hold theirs, and copy-on-write takes a block per
  // fork: pages are committed only as blocks are written, so this costs address space until used.
  p.kv_cache_tokens = (int64_t(o.max_sessions) + o.prefix_cache + 2) * o.ctx + int64_t(o.max_sessions) * 128;
  p.distributed = tools::launched_as_ranks();
  return p;
}

class Server {
 public:
  explicit Server(Options o) : opt_(std::move(o)) {}

  int run() {
    // SIGTERM/SIGINT are taken by one thread with sigwait (blocked everywhere else); SIGPIPE never kills us.
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sigs, nullptr);
    signal(SIGPIPE, SIG_IGN);

    setup_routes();
    const int pool = opt_.max_sessions + opt_.max_queue + 16;
    http_.new_task_queue = [pool] { return new httplib::ThreadPool(size_t(pool)); };
    http_.set_payload_max_length(size_t(opt_.max_body));
    http_.set_keep_alive_max_count(100000);
    http_.set_tcp_nodelay(true);
    int listen_fd = -1;
    http_.set_socket_options([&listen_fd](int s) {
      httplib::default_socket_options(s);
      listen_fd = s;
    });
    const int port = opt_.port == 0 ? http_.bind_to_any_port(opt_.host) : (http_.bind_to_port(opt_.host, opt_.port) ? opt_.port : -1);
    if (port < 0) throw Error(ErrorCode::Io, fmt::format("cannot listen on {}:{}", opt_.host, opt_.port));
    // cpp-httplib listens with a backlog of 5; a burst of clients connecting at once needs more.
    if (listen_fd >= 0) ::listen(listen_fd, 1024);
    fmt::print(stderr, "dsinfer serve: listening on http://{}:{} (loading {})\n", opt_.host, port, opt_.model);
    std::fflush(stderr);

    std::thread signals([&] {
      int sig = 0;
      sigwait(&sigs, &sig);
      on_signal(sig);
    });
    std::thread loader([&] { load(); });
    http_.listen_after_bind();
    loader.join();
    if (loaded_failed_) {
      pthread_kill(signals.native_handle(), SIGTERM);
      signals.join();
      return 1;
    }
    signals.join();
    scheduler_.reset();
    fmt::print(stderr, "dsinfer serve: stopped\n");
    return 0;
  }

 private:
  Options opt_;
  httplib::Server http_;
  std::atomic<State> state_{State::Loading};
  std::atomic<double> progress_{0.0};
  std::atomic<bool> loaded_failed_{false};
  std::unique_ptr<Model> model_;
  std::unique_ptr<Tokenizer> tok_;
  openai::Defaults defaults_;
  Metrics metrics_;
  std::unique_ptr<Scheduler> scheduler_;
  int64_t created_ = std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();

  void load() {
    try {
      ModelLoadParams p = model_params(opt_);
      int last = -1;
      p.progress = [&](double f, std::string_view stage) {
        progress_ = f;
        const int pct = int(f * 100);
        if (pct / 10 != last / 10 || f >= 1.0) {
          last = pct;
          fmt::print(stderr, "dsinfer serve: loading {:3d}% {}\n", pct, stage);
          std::fflush(stderr);
        }
      };
      auto model = Model::load(opt_.model, p);
      auto tok = Tokenizer::load(opt_.model);
      defaults_.generation = load_generation_config(opt_.model);
      defaults_.context = opt_.ctx;
      defaults_.max_n = std::min(16, opt_.max_sessions);
      defaults_.model_id = opt_.served_name.empty() ? opt_.model : opt_.served_name;
      // Clients send whatever name they were configured with; only a server given a name insists on it.
      defaults_.any_model_name = opt_.served_name.empty();
      if (opt_.speculative > 0 && !model->info().has_mtp)
        throw Error(ErrorCode::Unsupported, "--speculative mtp needs the checkpoint's MTP module, and it has none");
      defaults_.speculative_draft_tokens = opt_.speculative;
      model_ = std::move(model);
      tok_ = std::move(tok);
      SchedulerOptions so;
      so.max_sessions = opt_.max_sessions;
      so.max_queue = opt_.max_queue;
      so.prefix_cache_entries = opt_.prefix_cache;
      so.max_step_prompt_tokens = opt_.step_prompt_tokens;
      scheduler_ = std::make_unique<Scheduler>(*model_, so, metrics_);
      if (state_.exchange(State::Ready) == State::Draining) state_ = State::Draining;
      fmt::print(stderr, "dsinfer serve: ready ({} layers, vocab {}, context {}, {} sessions, queue {})\n",
                 model_->info().num_layers, tok_->size(), opt_.ctx, opt_.max_sessions, opt_.max_queue);
      std::fflush(stderr);
    } catch (const std::exception& e) {
      fmt::print(stderr, "dsinfer serve: loading {} failed: {}\n", opt_.model, e.what());
      loaded_failed_ = true;
      // stop() only stops a listener that runs: a load that fails at once may come before listen_after_bind.
      while (!http_.is_running()) std::this_thread::sleep_for(std::chrono::milliseconds(5));
      http_.stop();
    }
  }

  void on_signal(int sig) {
    if (loaded_failed_) return;
    fmt::print(stderr, "dsinfer serve: {} received, draining (at most {} s)\n", sig == SIGINT ? "SIGINT" : "SIGTERM",
               opt_.drain_seconds);
    std::fflush(stderr);
    const State was = state_.exchange(State::Draining);
    if (was == State::Ready && scheduler_) {
      if (!scheduler_->wait_idle(std::chrono::seconds(opt_.drain_seconds))) {
        fmt::print(stderr, "dsinfer serve: drain timed out; cancelling what still runs\n");
        scheduler_->cancel_all();
        scheduler_->wait_idle(std::chrono::seconds(5));
      }
    } else if (was == State::Loading) {
      // The load cannot be interrupted; nothing has been served.
      fmt::print(stderr, "dsinfer serve: stopped while loading\n");
      std::fflush(stderr);
      std::_Exit(0);
    }
    // Let the last streams write their final chunks before the listener and the connections close.
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    http_.stop();
  }

  static void json_reply(httplib::Response& res, int status, const std::string& body) {
    res.status = status;
    res.set_content(body, "application/json");
  }

  void require_ready() {
    const State s = state_;
    if (s == State::Ready) return;
    throw openai::ApiError(503, "server_error", "",
                           s == State::Loading ? "the model is still loading" : "the server is shutting down");
  }

  void setup_routes() {
    http_.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
      if (opt_.api_key.empty() || req.path == "/health" || req.path == "/metrics")
        return httplib::Server::HandlerResponse::Unhandled;
      if (req.get_header_value("Authorization") == "Bearer " + opt_.api_key)
        return httplib::Server::HandlerResponse::Unhandled;
      json_reply(res, 401, openai::ApiError(401, "invalid_request_error", "",
                                            "Incorrect API key provided (send \"Authorization: Bearer KEY\").",
                                            "invalid_api_key").json());
      return httplib::Server::HandlerResponse::Handled;
    });
    http_.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
      try {
        std::rethrow_exception(ep);
      } catch (const openai::ApiError& e) {
        json_reply(res, e.status(), e.json());
        if (e.status() == 503) res.set_header("Retry-After", "1");
      } catch (const std::exception& e) {
        json_reply(res, 500, openai::ApiError(500, "server_error", "", e.what()).json());
      } catch (...) {
        json_reply(res, 500, openai::ApiError(500, "server_error", "", "unknown error").json());
      }
    });
    // Errors cpp-httplib answers itself (413, 404, malformed HTTP) get an OpenAI error object too.
    http_.set_error_handler(httplib::Server::HandlerWithResponse([this](const httplib::Request& req, httplib::Response& res) {
      if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
      std::string msg;
      if (res.status == 413) msg = fmt::format("the request body is larger than {} bytes", opt_.max_body);
      else if (res.status == 404) msg = fmt::format("no route for {} {}", req.method, req.path);
      else msg = fmt::format("HTTP error {}", res.status);
      json_reply(res, res.status, openai::ApiError(res.status, "invalid_request_error", "", msg).json());
      return httplib::Server::HandlerResponse::Handled;
    }));
    http_.set_logger([this](const httplib::Request& req, const httplib::Response& res) {
      // Paths as labels only for the routes there are: a client probing random paths must not grow the metrics.
      static const std::set<std::string> routes = {"/health", "/metrics", "/v1/models", "/tokenize", "/detokenize",
                                                   "/reset_prefix_cache", "/v1/chat/completions", "/v1/completions"};
      metrics_.request_done(routes.count(req.path) ? req.path : "other", res.status);
    });

    http_.Get("/health", [this](const httplib::Request&, httplib::Response& res) {
      const State s = state_;
      nlohmann::ordered_json j;
      j["status"] = s == State::Ready ? "ready" : s == State::Loading ? "loading" : "draining";
      if (s == State::Loading) j["progress"] = double(progress_);
      json_reply(res, s == State::Ready ? 200 : 503, j.dump());
    });
    http_.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
      res.set_content(metrics_.text(state_ == State::Ready), "text/plain; version=0.0.4");
    });
    http_.Get("/v1/models", [this](const httplib::Request&, httplib::Response& res) {
      require_ready();
      json_reply(res, 200, openai::models_reply(defaults_, created_));
    });
    http_.Post("/tokenize", [this](const httplib::Request& req, httplib::Response& res) {
      require_ready();
      json_reply(res, 200, openai::tokenize_reply(req.body, *tok_, defaults_));
    });
    http_.Post("/detokenize", [this](const httplib::Request& req, httplib::Response& res) {
      require_ready();
      json_reply(res, 200, openai::detokenize_reply(req.body, *tok_));
    });
    http_.Post("/reset_prefix_cache", [this](const httplib::Request&, httplib::Response& res) {
      require_ready();
      scheduler_->reset_prefix_cache();
      json_reply(res, 200, "{}");
    });
    http_.Post("/v1/chat/completions", [this](const httplib::Request& req, httplib::Response& res) {
      generate(openai::Endpoint::ChatCompletions, req, res);
    });
    http_.Post("/v1/completions", [this](const httplib::Request& req, httplib::Response& res) {
      generate(openai::Endpoint::Completions, req, res);
    });
  }

  void generate(openai::Endpoint ep, const httplib::Request& req, httplib::Response& res) {
    require_ready();
    openai::Request r = openai::parse_request(ep, req.body, *tok_, defaults_);
    const bool stream = r.stream;
    auto job = std::make_shared<Job>(std::make_unique<openai::Completion>(std::move(r), *model_, *tok_, defaults_));
    if (!scheduler_->submit(job)) {
      const int wait = scheduler_->retry_after_seconds();
      res.set_header("Retry-After", std::to_string(wait));
      json_reply(res, 429, openai::ApiError(429, "rate_limit_error", "",
                                            fmt::format("the server's queue is full ({} requests waiting); retry "
                                                        "in {} s", opt_.max_queue, wait),
                                            "rate_limit_exceeded").json());
      return;
    }
    const int fd = connection_socket(req);
    if (!stream) {
      std::unique_lock<std::mutex> lock(job->mutex);
      bool cancelled = false;
      while (!job->done) {
        job->cv.wait_for(lock, std::chrono::milliseconds(50));
        if (!job->done && !cancelled && peer_gone(fd)) {
          cancelled = true;
          lock.unlock();  // cancel() completes a queued job under its lock
          scheduler_->cancel(job);
          lock.lock();
        }
      }
      json_reply(res, job->status, job->body);
      return;
    }
    res.set_header("Cache-Control", "no-cache");
    res.set_header("X-Accel-Buffering", "no");
    Scheduler* sched = scheduler_.get();
    res.set_chunked_content_provider(
        "text/event-stream",
        [job, fd, sched](size_t, httplib::DataSink& sink) {
          std::deque<std::string> chunks;
          bool done = false;
          int status = 200;
          std::string body;
          {
            std::unique_lock<std::mutex> lock(job->mutex);
            job->cv.wait_for(lock, std::chrono::milliseconds(250), [&] { return !job->chunks.empty() || job->done; });
            chunks.swap(job->chunks);
            done = job->done;
            status = job->status;
            if (done) body = job->body;
          }
          std::string out;
          for (const auto& c : chunks) out += "data: " + c + "\n\n";
          // A failure after the stream began is an error event (as vLLM sends it), then the end marker.
          if (done && status != 200) out += "data: " + body + "\n\n";
          if (done) out += "data: [DONE]\n\n";
          if (peer_gone(fd) || (!out.empty() && !sink.write(out.data(), out.size()))) {
            sched->cancel(job);
            return false;
          }
          if (done) sink.done();
          return true;
        },
        [job, sched](bool success) {
          if (!success) sched->cancel(job);
        });
  }
};

}  // namespace

int main(int argc, char** argv) {
  Options o;
  try {
    o = parse_options(argc, argv);
  } catch (const UsageError& e) {
    if (*e.what()) fmt::print(stderr, "dsinfer serve: {}\n", e.what());
    std::fputs(kUsage, *e.what() ? stderr : stdout);
    std::fputs(tools::kBackendFlagsUsage, *e.what() ? stderr : stdout);
    return *e.what() ? 2 : 0;
  }
  try {
    // Under mpirun (docs/distributed.md): rank 0 serves HTTP; the other ranks hold their share of the model.
    ModelLoadParams p = model_params(o);
    try {
      tools::join_distributed_run(o.model, p);
    } catch (const tools::WorkerDone&) {
      return 0;
    }
    Server s(std::move(o));
    return s.run();
  } catch (const std::exception& e) {
    fmt::print(stderr, "dsinfer serve: error: {}\n", e.what());
    return 1;
  }
}

}  // namespace dsinfer::serve
