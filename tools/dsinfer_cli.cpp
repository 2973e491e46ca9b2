// dsinfer — command-line front end: run a DeepSeek-V3-family checkpoint.
//   dsinfer generate --model DIR (--ids 0,1234,... | --prompt TEXT) [--n N] [--precision fp8|reference] [--threads N]
//                    [--temperature T --top-p P --top-k K --min-p P --repeat-penalty R --seed S | --greedy]
//   dsinfer chat     --model DIR [--messages FILE|-] [--thinking] [--n N] ...
//   dsinfer prompt   --model DIR --messages FILE|- [--thinking] [--ids]
//   dsinfer logits   --model DIR --ids ... --out FILE [--precision fp8|reference] [--threads N]
//   dsinfer info     --model DIR
#include <fmt/format.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <numeric>
#include <set>
#include <string>
#include <vector>

#include <iostream>
#include <iterator>
#include <sstream>

#include <unistd.h>

#include "dsinfer/chat.hpp"
#include "dsinfer/constraint.hpp"
#include "dsinfer/dsinfer.hpp"
#include "dsinfer/tokenizer.hpp"
#include "cuda_flag.hpp"
#include "mpi_launch.hpp"
#include "parse_number.hpp"
#include "serve/serve.hpp"

namespace {

using dsinfer::Error;
using dsinfer::ErrorCode;

// Per-command usage (`dsinfer COMMAND --help`); `dsinfer --help` prints them all.
const std::vector<std::pair<std::string, std::string>> kCommandUsage = {
    {"generate",
     "  dsinfer generate [--model DIR] --ids ID,ID,... [--n N] [--precision fp8|reference] [--threads N]\n"
     "      prints the greedy continuation ids (N, default 32), comma-separated\n"
     "  dsinfer generate [--model DIR] --prompt TEXT [--n N] [SAMPLING] [--precision ...] [--threads N]\n"
     "      tokenizes TEXT (with the tokenizer's BOS) and streams the continuation as text (N, default 64)\n"},
    {"chat",
     "  dsinfer chat [--model DIR] [--thinking] [--n N] [SAMPLING] [--interactive] [--precision ...] [--threads N]\n"
     "      on a terminal (or with --interactive): a conversation, one user turn per line, replies streamed;\n"
     "      /reset starts over, /think toggles thinking mode, /tool TEXT answers a tool call, /system TEXT sets\n"
     "      the system prompt, /exit ends (N: tokens per reply, default 1024)\n"
     "  dsinfer chat [--model DIR] [--messages FILE|-] [--thinking] [--n N] [SAMPLING] [--precision ...]\n"
     "               [--threads N]\n"
     "      encodes {\"messages\": [...], \"tools\": [...]} (a file, or stdin) in DeepSeek-V3.2's format, streams the\n"
     "      reply (following the request's response_format / tool_choice when they enforce one), then\n"
     "      prints the parsed reply (reasoning, content, tool calls) on stderr; a reply that reaches N tokens\n"
     "      (default 64) is reported as cut at the limit (finish reason \"length\")\n"},
    {"prompt",
     "  dsinfer prompt [--model DIR] --messages FILE|- [--thinking] [--ids]\n"
     "      prints the exact encoded prompt for the messages (or its token ids)\n"},
    {"logits",
     "  dsinfer logits [--model DIR] --ids ID,ID,... --out FILE [--precision fp8|reference] [--threads N]\n"
     "      writes little-endian float32 logits [n_tokens, vocab] for every position to FILE\n"},
    {"info",
     "  dsinfer info [--model DIR] [--kv-cache-dtype auto|f32|bf16|fp8] [--ctx N]\n"
     "      prints what the checkpoint is, and the KV cache bytes per token (and of N tokens) before allocation\n"},
    {"serve",
     "  dsinfer serve [--model DIR] [--host 127.0.0.1] [--port 8000] [--api-key KEY] ...\n"
     "      an OpenAI-compatible HTTP server (dsinfer serve --help)\n"},
};

constexpr const char* kCommonUsage =
    "--model defaults to $DSINFER_MODEL, else models/dsinfer-v32-mini of the source tree when it is there.\n"
    "--threads N: CPU threads (0, the default, = all cores). Loading reports its progress on stderr.\n"
    "SAMPLING: text generation samples as the checkpoint's generation_config.json says (DeepSeek: temperature\n"
    "1.0, top_p 0.95); a flag overrides its value:\n"
    "  --temperature T (0 = greedy)  --top-p P  --top-k K (0 = off)  --min-p P (0 = off)\n"
    "  --repeat-penalty R (1 = off; over the last 64 tokens)  --seed S (default 0)  --greedy\n"
    "--log debug|info|warn|error: the library's log on stderr at that level (default: none; DSINFER_LOG too).\n"
    "--cpu-kernels auto|avx512|avx2|scalar: caps the CPU kernel family (bitwise-equal results; DSINFER_CPU_KERNELS);\n"
    "    amx: AVX-512 with the indexer's scores on AMX tiles (faster at long contexts, its own last bits).\n"
    "--speculative mtp[:K] (generate, chat): speculative decoding with the checkpoint's MTP module, up to K drafted\n"
    "  tokens per step (default 2, at most 16), fewer while drafts are rejected; the output is unchanged. The\n"
    "  acceptance is reported on stderr at the end.\n"
    "dsinfer --version prints the version.\n";

std::string usage(const std::string& command = "") {
  std::string text = "usage:\n";
  for (const auto& [name, u] : kCommandUsage)
    if (command.empty() || command == name) text += u;
  return text + kCommonUsage + dsinfer::tools::kBackendFlagsUsage;
}

struct UsageError : std::runtime_error {
  UsageError(const std::string& message, std::string command_ = "")
      : std::runtime_error(message), command(std::move(command_)) {}
  std::string command;  // whose usage to print ("" = all)
};
// `dsinfer COMMAND --help`.
struct HelpRequest {
  std::string command;
};

struct Args {
  std::string command;
  std::map<std::string, std::string> flags;
};

// Flags that take no value.
const std::set<std::string> kSwitches = {"thinking", "greedy", "interactive"};

Args parse_args(int argc, char** argv, const std::map<std::string, std::set<std::string>>& allowed) {
  if (argc < 2) throw UsageError("no command given");
  Args a;
  a.command = argv[1];
  auto it = allowed.find(a.command);
  if (it == allowed.end()) throw UsageError(fmt::format("unknown command \"{}\"", a.command));
  for (int i = 2; i < argc; ++i) {
    std::string f = argv[i];
    if (f == "-h") throw HelpRequest{a.command};
    if (f.rfind("--", 0) != 0) throw UsageError(fmt::format("unexpected argument \"{}\"", f));
    f = f.substr(2);
    if (f == "help") throw HelpRequest{a.command};
    if (!it->second.count(f)) throw UsageError(fmt::format("unknown flag --{} for \"{}\"", f, a.command), a.command);
    if (kSwitches.count(f) || (a.command == "prompt" && f == "ids")) {
      a.flags.insert_or_assign(f, std::string("1"));  // (not = "1": a false -Wrestrict in GCC 12)
      continue;
    }
    if (i + 1 >= argc) throw UsageError(fmt::format("flag --{} needs a value", f), a.command);
    a.flags[f] = argv[++i];
  }
  return a;
}

const std::string& required(const Args& a, const std::string& f) {
  auto it = a.flags.find(f);
  if (it == a.flags.end()) throw UsageError(fmt::format("\"{}\" needs --{}", a.command, f), a.command);
  return it->second;
}

int64_t parse_int(const std::string& flag, const std::string& s, int64_t lo, int64_t hi) {
  if (const auto v = dsinfer::tools::parse_number<int64_t>(s, lo, hi)) return *v;
  throw UsageError(fmt::format("--{} expects an integer in [{}, {}], got \"{}\"", flag, lo, hi, s));
}

double parse_float(const Args& a, const std::string& flag, double lo, double hi) {
  const std::string& s = a.flags.at(flag);
  if (const auto v = dsinfer::tools::parse_number<double>(s, lo, hi)) return *v;
  throw UsageError(fmt::format("--{} expects a number in [{}, {}], got \"{}\"", flag, lo, hi, s), a.command);
}

std::vector<int32_t> parse_ids(const std::string& s) {
  std::vector<int32_t> ids;
  size_t pos = 0;
  while (pos <= s.size()) {
    size_t comma = s.find(',', pos);
    if (comma == std::string::npos) comma = s.size();
    ids.push_back(int32_t(parse_int("ids", s.substr(pos, comma - pos), 0, INT32_MAX)));
    pos = comma + 1;
  }
  return ids;
}

// --speculative mtp[:K]: the draft count (0 = off).
int64_t speculative_tokens(const Args& a) {
  auto it = a.flags.find("speculative");
  if (it == a.flags.end()) return 0;
  const std::string& v = it->second;
  if (v == "mtp") return 2;
  if (v.rfind("mtp:", 0) == 0) return parse_int("speculative", v.substr(4), 1, dsinfer::Model::kMaxDraftTokens);
  throw UsageError(fmt::format("--speculative expects mtp or mtp:K (K from 1 to {}), got \"{}\"",
                               dsinfer::Model::kMaxDraftTokens, v), a.command);
}

void print_speculative_stats(const dsinfer::SpeculativeStats& st) {
  std::string by;
  for (size_t i = 0; i < st.drafted_at.size(); ++i)
    by += fmt::format("{}{}/{}", i ? " " : "", st.accepted_at[i], st.drafted_at[i]);
  fmt::print(stderr, "speculative: {} of {} drafted tokens accepted ({:.1f} %) in {} verifications, {} plain steps; "
             "accepted/drafted by position: {}\n", st.accepted, st.drafted, 100.0 * st.acceptance(), st.steps,
             st.plain_steps, by);
}

dsinfer::EvalOptions eval_options(const Args& a) {
  dsinfer::EvalOptions o;
  auto it = a.flags.find("precision");
  if (it != a.flags.end()) {
    if (it->second == "fp8") o.precision = dsinfer::Precision::Fp8;
    else if (it->second == "reference") o.precision = dsinfer::Precision::Reference;
    else throw UsageError(fmt::format("--precision expects fp8 or reference, got \"{}\"", it->second));
  }
  return o;
}

// --model, else $DSINFER_MODEL, else the model shipped in the source tree (the CLI's default, as the README says).
std::string model_dir(const Args& a) {
  auto it = a.flags.find("model");
  if (it != a.flags.end()) return it->second;
  if (const char* env = std::getenv("DSINFER_MODEL"); env && *env) return env;
  if (!std::filesystem::exists(std::filesystem::path(DSINFER_DEFAULT_MODEL) / "config.json"))
    throw UsageError(fmt::format("no --model given, $DSINFER_MODEL is unset and the default model {} is not there "
                                 "(give --model DIR: a DeepSeek-V3.2 / V3 checkpoint directory)",
                                 DSINFER_DEFAULT_MODEL));
  return DSINFER_DEFAULT_MODEL;
}

// Loads the model, reporting progress on stderr (a real checkpoint takes minutes to map and check): on a terminal
// one line redrawn in place, else a line at every tenth, so a log shows it is not hung.
std::unique_ptr<dsinfer::Model> load(const Args& a) {
  dsinfer::ModelLoadParams p;
  // 0 = every hardware thread (the library's default).
  if (a.flags.count("threads")) p.n_threads = int(parse_int("threads", a.flags.at("threads"), 0, 1024));
  if (a.flags.count("cpu-kernels")) p.cpu_kernels = a.flags.at("cpu-kernels");
  if (a.flags.count("backend")) p.backend = a.flags.at("backend");
  if (a.flags.count("cuda"))
    if (const std::string wrong = dsinfer::tools::apply_cuda_flag(a.flags.at("cuda"), p.cuda); !wrong.empty())
      throw UsageError(wrong, a.command);
  if (a.flags.count("kv-cache-dtype") &&
      !dsinfer::kv_cache_dtype_from_name(a.flags.at("kv-cache-dtype"), &p.kv_cache_dtype))
    throw UsageError("--kv-cache-dtype must be auto, f32, bf16 or fp8", a.command);
  const std::string dir = model_dir(a);
  dsinfer::tools::join_distributed_run(dir, p);  // under mpirun: a worker rank serves rank 0 here and is done
  const bool tty = isatty(STDERR_FILENO);
  int last_tenth = -1;
  p.progress = [&](double fraction, std::string_view stage) {
    const int tenth = int(fraction * 10);
    if (tty) {
      fmt::print(stderr, "\rloading {}: {:3d}% {:<24}", dir, int(fraction * 100), stage);
      if (fraction >= 1.0) fmt::print(stderr, "\n");
    } else if (tenth != last_tenth) {
      fmt::print(stderr, "loading {}: {}% {}\n", dir, int(fraction * 100), stage);
    }
    last_tenth = tenth;
  };
  auto model = dsinfer::Model::load(dir, p);
  return model;
}

// The sampling chain of a text generation: generation_config.json's values, each overridden by its flag; a repeat
// penalty first, then temperature, top-k, top-p, min-p (transformers' order) and the seeded draw. --greedy, or a
// temperature of 0, or a checkpoint with do_sample false and no sampling flag given, takes the most likely token.
std::unique_ptr<dsinfer::SamplerChain> sampling_chain(const Args& a) {
  auto chain = std::make_unique<dsinfer::SamplerChain>();
  if (a.flags.count("repeat-penalty")) {
    const float repeat = float(parse_float(a, "repeat-penalty", 1.0, 100.0));
    if (repeat != 1.0f) chain->add(dsinfer::make_penalties_sampler(64, repeat, 0.0f, 0.0f));
  }
  dsinfer::GenerationConfig g = dsinfer::load_generation_config(model_dir(a));
  bool sampling_flag = false;
  if (a.flags.count("temperature")) {
    g.temperature = float(parse_float(a, "temperature", 0.0, 100.0));
    sampling_flag = true;
  }
  if (a.flags.count("top-p")) {
    g.top_p = float(parse_float(a, "top-p", 1e-6, 1.0));
    sampling_flag = true;
  }
  if (a.flags.count("top-k")) {
    g.top_k = parse_int("top-k", a.flags.at("top-k"), 0, INT32_MAX);
    sampling_flag = true;
  }
  float min_p = 0.0f;
  if (a.flags.count("min-p")) {
    min_p = float(parse_float(a, "min-p", 0.0, 1.0));
    sampling_flag = true;
  }
  if (a.flags.count("greedy") || g.temperature == 0.0f || (!g.do_sample && !sampling_flag)) {
    chain->add(dsinfer::make_greedy_sampler());
    return chain;
  }
  const uint64_t seed = a.flags.count("seed") ? uint64_t(parse_int("seed", a.flags.at("seed"), 0, INT64_MAX)) : 0;
  if (g.temperature != 1.0f) chain->add(dsinfer::make_temperature_sampler(g.temperature));
  if (g.top_k > 0) chain->add(dsinfer::make_top_k_sampler(g.top_k));
  if (g.top_p < 1.0f) chain->add(dsinfer::make_top_p_sampler(g.top_p));
  if (min_p > 0.0f) chain->add(dsinfer::make_min_p_sampler(min_p));
  chain->add(dsinfer::make_dist_sampler(seed));
  return chain;
}

std::string read_messages(const Args& a) {
  auto it = a.flags.find("messages");
  const std::string path = it == a.flags.end() ? "-" : it->second;
  if (path == "-") return std::string(std::istreambuf_iterator<char>(std::cin), {});
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error(ErrorCode::Io, fmt::format("cannot open {}", path));
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

dsinfer::ThinkingMode thinking_mode(const Args& a) {
  return a.flags.count("thinking") ? dsinfer::ThinkingMode::Thinking : dsinfer::ThinkingMode::Chat;
}

std::string encode_request(const Args& a, const std::string& request) {
  dsinfer::check_chat_format(dsinfer::checkpoint_chat_format(model_dir(a)));  // V3-family checkpoints: refused
  dsinfer::ChatOptions o;
  o.thinking = thinking_mode(a);
  return dsinfer::encode_chat(dsinfer::chat_messages_from_json(request), o);
}

std::string encode_messages_file(const Args& a) { return encode_request(a, read_messages(a)); }

// Text in, text out: tokenize, decode while streaming the detokenized pieces, stop at eos.
// A chat request file's top-level response_format (json_object, strict json_schema, regex) and tool_choice
// (required, a named function) are enforced as the official API would: the reply follows them (constraint.hpp);
// with tools and tool_choice "auto" (the default) a call the model makes is held to the tools, as the server does
// (tools it cannot enforce exactly are then not enforced, with a warning).
int run_text(const Args& a) {
  const bool chat = a.command == "chat";
  const std::string request = chat ? read_messages(a) : std::string();
  const std::string text = chat ? encode_request(a, request) : required(a, "prompt");
  const int64_t n = a.flags.count("n") ? parse_int("n", a.flags.at("n"), 0, 1 << 20) : 64;
  auto tok = dsinfer::Tokenizer::load(model_dir(a));
  // A bad constraint is an error before the model is even loaded.
  std::unique_ptr<dsinfer::ConstraintSampler> constraint;
  if (chat) {
    const dsinfer::ConstraintSpec spec = dsinfer::constraint_from_request_json(request, thinking_mode(a));
    std::string tools_not_enforced;
    if (auto c = dsinfer::compile_request_constraint(*tok, spec, &tools_not_enforced))
      constraint = std::make_unique<dsinfer::ConstraintSampler>(std::move(c));
    if (!tools_not_enforced.empty())
      std::fprintf(stderr, "dsinfer: the tool calls are not enforced: %s\n", tools_not_enforced.c_str());
  }
  auto model = load(a);
  // A chat prompt already holds its BOS as text; a plain prompt gets the tokenizer's post-processor (BOS).
  const std::vector<int32_t> ids = tok->encode(text, /*add_special_tokens=*/!chat);
  // The sampler: the request's constraint first (it masks what cannot continue a valid reply), then the
  // checkpoint's recommended sampling (generation_config.json), or greedy.
  dsinfer::SamplerChain sampler;
  if (constraint) sampler.add(std::move(constraint));
  sampler.add(sampling_chain(a));
  dsinfer::EvalOptions opts = eval_options(a);
  std::vector<int32_t> generated;
  const int32_t eos = tok->eos_id();
  bool reached_eos = false;
  if (const int64_t k = speculative_tokens(a); k > 0) {
    // Through a Session, which owns speculative decoding: the same sampler chain, the same text.
    dsinfer::SessionParams sp;
    sp.capacity = int64_t(ids.size()) + n + 1;
    sp.eval = opts;
    sp.raw_text = true;
    sp.speculative.draft_tokens = k;
    dsinfer::Session session(*model, *tok, sp);
    auto chain = std::make_unique<dsinfer::SamplerChain>(std::move(sampler));
    session.set_sampler(std::move(chain));
    session.prefill(ids);
    dsinfer::GenerateParams gp;
    gp.max_tokens = n;
    const dsinfer::FinishReason reason = session.generate(gp, [](const dsinfer::ChatEvent& e) {
      if (e.kind == dsinfer::ChatEvent::Kind::ContentDelta) {
        fmt::print("{}", e.text);
        std::fflush(stdout);
      }
      return true;
    });
    fmt::print("\n");
    generated = session.generated();
    reached_eos = reason == dsinfer::FinishReason::Eos;
    print_speculative_stats(session.speculative_stats());
  } else {
  auto seq = model->new_sequence(int64_t(ids.size()) + n + 1);
  std::vector<float> logits = model->eval(*seq, ids, opts);
  dsinfer::Detokenizer detok(*tok);
  // Only ids the tokenizer knows: the embedding is padded beyond the vocabulary (129280 vs ~128815 for DeepSeek).
  const int64_t usable = std::min<int64_t>(tok->size(), model->info().vocab_size);
  for (int64_t i = 0; i < n; ++i) {
    const int32_t next = sampler.sample(logits, usable);
    sampler.accept(next);
    const std::string piece = detok.push(next);
    generated.push_back(next);
    if (next == eos) {
      reached_eos = true;
      break;
    }
    fmt::print("{}", piece);
    std::fflush(stdout);
    if (i + 1 < n) logits = model->eval(*seq, std::span<const int32_t>(&next, 1), opts);
  }
  fmt::print("{}\n", detok.finish());
  }
  // Why it ended, in OpenAI's words: "stop" (end of sentence) or "length" (the --n limit cut it).
  fmt::print(stderr, "finish_reason: {}\n", reached_eos ? "stop" : "length");
  if (chat && !reached_eos) {
    // An unfinished message cannot parse; that is the limit's doing, not a malformed reply.
    fmt::print(stderr, "the reply was cut at the token limit (--n {}) before its end\n", n);
  } else if (chat) {
    // Decoded whole: token by token, a character split across tokens would decode as U+FFFD.
    const std::string completion = tok->decode(generated);
    try {
      const auto msg = dsinfer::parse_completion(
          completion, a.flags.count("thinking") ? dsinfer::ThinkingMode::Thinking : dsinfer::ThinkingMode::Chat);
      std::string calls;
      for (const auto& c : msg.tool_calls)
        calls += fmt::format("{}{{\"name\": {}, \"arguments\": {}}}", calls.empty() ? "" : ", ",
                             dsinfer::python_json_dumps(nlohmann::json(c.name).dump()),
                             dsinfer::python_json_dumps(nlohmann::json(c.arguments).dump()));
      fmt::print(stderr, "parsed: reasoning {} bytes, content {} bytes, tool calls [{}]\n",
                 msg.reasoning_content.value_or("").size(), msg.content.value_or("").size(), calls);
    } catch (const Error& e) {
      fmt::print(stderr, "the reply is not a well-formed DeepSeek-V3.2 message: {}\n", e.what());
    }
  }
  return 0;
}

// `dsinfer chat` on a terminal (or with --interactive): a conversation. Each line typed is a user turn; the reply
// streams as it is generated (reasoning on stderr, content and tool calls on stdout) and joins the conversation, so
// the next turn continues it; the session re-evaluates only what changed. Commands: /reset (a new conversation),
// /think (thinking mode on/off), /tool TEXT (a tool's result, answering the last tool call), /system TEXT (the
// system prompt), /exit (or the end of input).
int run_interactive(const Args& a) {
  const int64_t n = a.flags.count("n") ? parse_int("n", a.flags.at("n"), 1, 1 << 20) : 1024;
  auto tok = dsinfer::Tokenizer::load(model_dir(a));
  auto model = load(a);
  dsinfer::SessionParams params;
  params.thinking = thinking_mode(a);
  params.eval = eval_options(a);
  params.capacity = 4096 + n;
  params.speculative.draft_tokens = speculative_tokens(a);
  auto session = std::make_unique<dsinfer::Session>(*model, *tok, params);
  session->set_sampler(sampling_chain(a));
  std::vector<dsinfer::ChatMessage> conversation;
  const bool tty = isatty(STDIN_FILENO);
  if (tty) fmt::print(stderr, "dsinfer chat: type a message; /reset /think /tool TEXT /system TEXT /exit\n");
  std::string line;
  while (true) {
    if (tty) fmt::print(stderr, "> ");
    if (!std::getline(std::cin, line) || line == "/exit" || line == "/quit") break;
    if (line.empty()) continue;
    if (line == "/reset") {
      conversation.clear();
      session->sampler().reset();
      fmt::print(stderr, "[new conversation]\n");
      continue;
    }
    if (line == "/think") {
      params.thinking = params.thinking == dsinfer::ThinkingMode::Thinking ? dsinfer::ThinkingMode::Chat
                                                                          : dsinfer::ThinkingMode::Thinking;
      session = session->fork(params);
      fmt::print(stderr, "[thinking mode {}]\n", params.thinking == dsinfer::ThinkingMode::Thinking ? "on" : "off");
      continue;
    }
    dsinfer::ChatMessage m;
    if (line.rfind("/system ", 0) == 0) {
      m.role = "system";
      m.content = line.substr(8);
      if (!conversation.empty() && conversation.front().role == "system") conversation.erase(conversation.begin());
      conversation.insert(conversation.begin(), m);
      fmt::print(stderr, "[system prompt set]\n");
      continue;
    }
    if (line.rfind("/tool ", 0) == 0) {
      m.role = "tool";
      m.content = line.substr(6);
      for (auto it = conversation.rbegin(); it != conversation.rend(); ++it)
        if (it->role == "assistant") {
          if (!it->tool_calls.empty()) m.tool_call_id = it->tool_calls.back().id;
          break;
        }
    } else if (line[0] == '/') {
      fmt::print(stderr, "[unknown command {}: /reset /think /tool TEXT /system TEXT /exit]\n", line);
      continue;
    } else {
      m.role = "user";
      m.content = line;
    }
    conversation.push_back(std::move(m));
    // A turn that fails (a tool result with no call to answer, a full cache) is reported and taken back; the
    // conversation goes on.
    try {
      session->set_messages(conversation);
      dsinfer::GenerateParams gp;
      gp.max_tokens = n;
      bool in_reasoning = false;
      const dsinfer::FinishReason reason = session->generate(gp, [&](const dsinfer::ChatEvent& e) {
        using Kind = dsinfer::ChatEvent::Kind;
        if (e.kind == Kind::ReasoningDelta) {
          if (!in_reasoning) fmt::print(stderr, "[thinking] ");
          in_reasoning = true;
          fmt::print(stderr, "{}", e.text);
        } else if (e.kind == Kind::ContentDelta) {
          if (in_reasoning) fmt::print(stderr, "\n");
          in_reasoning = false;
          fmt::print("{}", e.text);
        } else if (e.kind == Kind::ToolCallEnd) {
          fmt::print("[tool call {} {}]", e.name, e.arguments);
        }
        std::fflush(stdout);
        return true;
      });
      fmt::print("\n");
      std::fflush(stdout);
      if (reason == dsinfer::FinishReason::MaxTokens)
        fmt::print(stderr, "[the reply was cut at the token limit (--n {})]\n", n);
      conversation.push_back(session->reply());
    } catch (const Error& e) {
      fmt::print(stderr, "[error ({}): {}; the message was not added]\n", dsinfer::error_code_name(e.code()), e.what());
      conversation.pop_back();
      continue;
    }
    fmt::print(stderr, "[{} messages, {} tokens in context]\n", conversation.size(), session->tokens().size());
  }
  if (params.speculative.draft_tokens > 0) print_speculative_stats(session->speculative_stats());
  return 0;
}

int run(int argc, char** argv) {
  const std::map<std::string, std::set<std::string>> allowed = {
      {"generate", {"model", "ids", "prompt", "n", "precision", "threads", "seed", "greedy", "temperature", "top-p",
                    "top-k", "min-p", "repeat-penalty", "kv-cache-dtype", "log", "cpu-kernels", "speculative",
                    "backend", "cuda"}},
      {"chat", {"model", "messages", "thinking", "n", "precision", "threads", "seed", "greedy", "temperature",
                "top-p", "top-k", "min-p", "repeat-penalty", "interactive", "kv-cache-dtype", "log", "cpu-kernels",
                "speculative", "backend", "cuda"}},
      {"prompt", {"model", "messages", "thinking", "ids", "log"}},
      {"logits", {"model", "ids", "out", "precision", "threads", "kv-cache-dtype", "log", "cpu-kernels", "backend",
                  "cuda"}},
      {"info", {"model", "threads", "kv-cache-dtype", "ctx", "log", "cpu-kernels", "backend", "cuda"}},
  };
  if (argc >= 2 && (!std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h") || !std::strcmp(argv[1], "help"))) {
    std::fputs(usage(argc >= 3 ? argv[2] : "").c_str(), stdout);
    return 0;
  }
  if (argc >= 2 && (!std::strcmp(argv[1], "--version") || !std::strcmp(argv[1], "version"))) {
    // The library actually loaded (it may differ from the headers this program was built with).
    fmt::print("dsinfer {} (C++ ABI {}, C ABI {})\n", dsinfer::version_string(), dsinfer::cxx_abi_version(),
               DSINFER_ABI_VERSION);
    return 0;
  }
  const Args a = parse_args(argc, argv, allowed);
  if (a.flags.count("log")) {
    const std::string& name = a.flags.at("log");
    int level = -1;
    for (int l = int(dsinfer::LogLevel::Debug); l < int(dsinfer::LogLevel::Off); ++l)
      if (name == dsinfer::log_level_name(dsinfer::LogLevel(l))) level = l;
    if (level < 0) throw UsageError("--log expects debug, info, warn or error", a.command);
    dsinfer::set_log_callback(
        [](dsinfer::LogLevel l, std::string_view message) {
          fmt::print(stderr, "dsinfer {}: {}\n", dsinfer::log_level_name(l), message);
        },
        dsinfer::LogLevel(level));
  }
  if (a.command == "info") {
    auto model = load(a);
    const auto& i = model->info();
    fmt::print("model_type: {}\nindexer (DSA): {}\nfp8 weights: {}\nvocab: {}\nhidden: {}\nlayers: {}\n"
               "parameters: {}\nweight bytes: {}\n",
               i.model_type, i.has_indexer ? "yes" : "no", i.fp8_weights ? "yes" : "no", i.vocab_size,
               i.hidden_size, i.num_layers, i.parameter_count, i.weight_bytes);
    // KV cache memory, from the config alone (nothing is allocated for it here).
    fmt::print("kv cache: {}, {} bytes per token per layer{}, {} bytes per token\n",
               dsinfer::kv_cache_dtype_name(i.kv_cache_dtype), i.kv_bytes_per_token_layer,
               i.has_indexer ? fmt::format(" ({} of them the indexer key)", i.kv_index_bytes_per_token_layer) : "",
               i.kv_bytes_per_token);
    const dsinfer::ChatFormat chat_format = dsinfer::detect_chat_format(i.model_type, i.chat_template);
    fmt::print("chat format: {}{}\n", dsinfer::chat_format_name(chat_format),
               chat_format == dsinfer::ChatFormat::DeepseekV32 || chat_format == dsinfer::ChatFormat::Unknown
                   ? "" : " (not supported by chat/prompt: use --ids)");
    if (i.has_mtp)
      fmt::print("mtp module: yes ({} parameters, {} weight bytes, {} bytes read per draft; its cache {} bytes per "
                 "token)\n", i.mtp_parameter_count, i.mtp_weight_bytes, i.mtp_draft_weight_bytes,
                 i.kv_bytes_per_token_layer);
    else
      fmt::print("mtp module: no\n");
    if (i.distributed_ranks > 1) {  // under mpirun (docs/distributed.md)
      std::string held;
      for (const int64_t b : i.rank_weight_bytes) held += fmt::format("{}{}", held.empty() ? "" : " ", b);
      fmt::print("distributed: {} ranks, weight bytes held per rank: {}; attention split by heads: {}\n",
                 i.distributed_ranks, held, i.attention_split_by_heads ? "yes" : "no");
    }
    const int64_t ctx = a.flags.count("ctx") ? parse_int("ctx", a.flags.at("ctx"), 0, int64_t(1) << 40) : 0;
    if (ctx > 0) fmt::print("kv cache for {} tokens: {} bytes\n", ctx, model->kv_cache_bytes(ctx));
    return 0;
  }
  if (a.command == "prompt") {
    const std::string text = encode_messages_file(a);
    if (a.flags.count("ids")) {
      auto tok = dsinfer::Tokenizer::load(model_dir(a));
      const auto ids = tok->encode(text, false);
      std::string line;
      for (size_t i = 0; i < ids.size(); ++i) line += (i ? "," : "") + std::to_string(ids[i]);
      fmt::print("{}\n", line);
    } else {
      fmt::print("{}", text);
    }
    return 0;
  }
  if (a.command == "chat" && (a.flags.count("interactive") || (!a.flags.count("messages") && isatty(STDIN_FILENO))))
    return run_interactive(a);
  if (a.command == "chat" || (a.command == "generate" && a.flags.count("prompt"))) return run_text(a);
  for (const char* f : {"temperature", "top-p", "top-k", "min-p", "repeat-penalty", "seed"})
    if (a.flags.count(f))
      throw UsageError(fmt::format("--{} applies to text generation (--prompt, chat); --ids generates greedily", f),
                       a.command);
  const std::vector<int32_t> ids = parse_ids(required(a, "ids"));
  const dsinfer::EvalOptions opts = eval_options(a);
  if (a.command == "generate") {
    const int64_t n = a.flags.count("n") ? parse_int("n", a.flags.at("n"), 0, 1 << 20) : 32;
    const int64_t k = speculative_tokens(a);
    auto model = load(a);
    std::vector<int32_t> out;
    if (k > 0) {
      // Greedy through a speculating Session (the ids are the plain greedy ones); it needs the tokenizer.
      auto tok = dsinfer::Tokenizer::load(model_dir(a));
      dsinfer::SessionParams sp;
      sp.capacity = int64_t(ids.size()) + n + 1;
      sp.eval = opts;
      sp.raw_text = true;
      sp.speculative.draft_tokens = k;
      dsinfer::Session session(*model, *tok, sp);
      auto chain = std::make_unique<dsinfer::SamplerChain>();
      chain->add(dsinfer::make_greedy_sampler());
      session.set_sampler(std::move(chain));
      session.prefill(ids);
      dsinfer::GenerateParams gp;
      gp.max_tokens = n;
      gp.stop_at_eos = false;
      session.generate(gp);
      out = session.generated();
      print_speculative_stats(session.speculative_stats());
    } else {
      out = model->generate_greedy(ids, n, opts);
    }
    std::string line;
    for (size_t i = 0; i < out.size(); ++i) line += (i ? "," : "") + std::to_string(out[i]);
    fmt::print("{}\n", line);
    return 0;
  }
  // logits
  const std::string& path = required(a, "out");
  auto model = load(a);
  auto seq = model->new_sequence(int64_t(ids.size()));
  dsinfer::EvalOptions all = opts;
  all.all_logits = true;
  const auto logits = model->eval(*seq, ids, all);
  std::ofstream f(path, std::ios::binary);
  if (!f) throw Error(ErrorCode::Io, fmt::format("cannot open {} for writing", path));
  f.write(reinterpret_cast<const char*>(logits.data()), std::streamsize(logits.size() * sizeof(float)));
  if (!f) throw Error(ErrorCode::Io, fmt::format("failed writing {}", path));
  fmt::print(stderr, "wrote {} x {} float32 logits to {}\n", ids.size(), model->info().vocab_size, path);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc >= 2 && !std::strcmp(argv[1], "serve")) return dsinfer::serve::main(argc - 1, argv + 1);
  try {
    return run(argc, argv);
  } catch (const dsinfer::tools::WorkerDone&) {
    return 0;
  } catch (const HelpRequest& h) {
    std::fputs(usage(h.command).c_str(), stdout);
    return 0;
  } catch (const UsageError& e) {
    fmt::print(stderr, "dsinfer: {}\n{}", e.what(), usage(e.command));
    return 2;
  } catch (const Error& e) {
    fmt::print(stderr, "dsinfer: error ({}): {}\n", dsinfer::error_code_name(e.code()), e.what());
    return 1;
  } catch (const std::exception& e) {
    fmt::print(stderr, "dsinfer: error: {}\n", e.what());
    return 1;
  }
}
