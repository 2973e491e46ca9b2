// dsinfer — command-line front end: run a DeepSeek-V3-family checkpoint.
//   dsinfer generate --model DIR (--ids 0,1234,... | --prompt TEXT) [--n N] [--precision fp8|reference] [--threads N]
//   dsinfer chat     --model DIR [--messages FILE|-] [--thinking] [--n N] ...
//   dsinfer prompt   --model DIR --messages FILE|- [--thinking] [--ids]
//   dsinfer logits   --model DIR --ids ... --out FILE [--precision fp8|reference] [--threads N]
//   dsinfer info     --model DIR
#include <fmt/format.h>

#include <charconv>
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

#include "dsinfer/chat.hpp"
#include "dsinfer/constraint.hpp"
#include "dsinfer/dsinfer.hpp"
#include "dsinfer/tokenizer.hpp"
#include "serve/serve.hpp"

namespace {

using dsinfer::Error;
using dsinfer::ErrorCode;

constexpr const char* kUsage =
    "usage:\n"
    "  dsinfer generate [--model DIR] --ids ID,ID,... [--n N] [--precision fp8|reference] [--threads N]\n"
    "      prints the greedy continuation ids (N, default 32), comma-separated\n"
    "  dsinfer generate [--model DIR] --prompt TEXT [--n N] [--seed S] [--greedy] [--precision ...] [--threads N]\n"
    "      tokenizes TEXT (with the tokenizer's BOS) and streams the continuation as text\n"
    "  dsinfer chat [--model DIR] [--messages FILE|-] [--thinking] [--n N] [--seed S] [--greedy] [--precision ...]\n"
    "               [--threads N]\n"
    "      encodes {\"messages\": [...], \"tools\": [...]} (a file, or stdin) in DeepSeek-V3.2's format, streams the\n"
    "      reply (following the request's response_format / tool_choice when they enforce one), then\n"
    "      prints the parsed reply (reasoning, content, tool calls) as JSON on stderr\n"
    "  dsinfer prompt [--model DIR] --messages FILE|- [--thinking] [--ids]\n"
    "      prints the exact encoded prompt for the messages (or its token ids)\n"
    "  dsinfer logits [--model DIR] --ids ID,ID,... --out FILE [--precision fp8|reference] [--threads N]\n"
    "      writes little-endian float32 logits [n_tokens, vocab] for every position to FILE\n"
    "  dsinfer info [--model DIR] [--kv-cache-dtype auto|f32|bf16|fp8] [--ctx N]   (N: KV bytes of N tokens)\n"
    "      prints what the checkpoint is\n"
    "  dsinfer serve [--model DIR] [--host 127.0.0.1] [--port 8000] [--api-key KEY] ...\n"
    "      an OpenAI-compatible HTTP server (dsinfer serve --help)\n"
    "--model defaults to $DSINFER_MODEL, else models/dsinfer-v32-mini of the source tree when it is there.\n"
    "Text generation samples as the checkpoint's generation_config.json says (DeepSeek: temperature 1.0,\n"
    "top_p 0.95) with --seed (default 0); --greedy takes the most likely token instead.\n";

struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct Args {
  std::string command;
  std::map<std::string, std::string> flags;
};

// Flags that take no value.
const std::set<std::string> kSwitches = {"thinking", "greedy"};

Args parse_args(int argc, char** argv, const std::map<std::string, std::set<std::string>>& allowed) {
  if (argc < 2) throw UsageError("no command given");
  Args a;
  a.command = argv[1];
  auto it = allowed.find(a.command);
  if (it == allowed.end()) throw UsageError(fmt::format("unknown command \"{}\"", a.command));
  for (int i = 2; i < argc; ++i) {
    std::string f = argv[i];
    if (f.rfind("--", 0) != 0) throw UsageError(fmt::format("unexpected argument \"{}\"", f));
    f = f.substr(2);
    if (!it->second.count(f)) throw UsageError(fmt::format("unknown flag --{} for \"{}\"", f, a.command));
    if (kSwitches.count(f) || (a.command == "prompt" && f == "ids")) {
      a.flags[f] = "1";
      continue;
    }
    if (i + 1 >= argc) throw UsageError(fmt::format("flag --{} needs a value", f));
    a.flags[f] = argv[++i];
  }
  return a;
}

const std::string& required(const Args& a, const std::string& f) {
  auto it = a.flags.find(f);
  if (it == a.flags.end()) throw UsageError(fmt::format("\"{}\" needs --{}", a.command, f));
  return it->second;
}

int64_t parse_int(const std::string& flag, const std::string& s, int64_t lo, int64_t hi) {
  int64_t v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size() || v < lo || v > hi)
    throw UsageError(fmt::format("--{} expects an integer in [{}, {}], got \"{}\"", flag, lo, hi, s));
  return v;
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

std::unique_ptr<dsinfer::Model> load(const Args& a) {
  dsinfer::ModelLoadParams p;
  if (a.flags.count("threads")) p.n_threads = int(parse_int("threads", a.flags.at("threads"), 1, 1024));
  if (a.flags.count("kv-cache-dtype") &&
      !dsinfer::kv_cache_dtype_from_name(a.flags.at("kv-cache-dtype"), &p.kv_cache_dtype))
    throw UsageError("--kv-cache-dtype must be auto, f32, bf16 or fp8");
  return dsinfer::Model::load(model_dir(a), p);
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
  dsinfer::ChatOptions o;
  o.thinking = thinking_mode(a);
  return dsinfer::encode_chat(dsinfer::chat_messages_from_json(request), o);
}

std::string encode_messages_file(const Args& a) { return encode_request(a, read_messages(a)); }

// Text in, text out: tokenize, decode while streaming the detokenized pieces, stop at eos.
// A chat request file's top-level response_format (json_object, strict json_schema, regex) and tool_choice
// (required, a named function) are enforced as the official API would: the reply follows them (constraint.hpp).
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
    if (spec.enforces())
      constraint = std::make_unique<dsinfer::ConstraintSampler>(dsinfer::Constraint::compile(*tok, spec));
  }
  auto model = load(a);
  // A chat prompt already holds its BOS as text; a plain prompt gets the tokenizer's post-processor (BOS).
  const std::vector<int32_t> ids = tok->encode(text, /*add_special_tokens=*/!chat);
  // The sampler: the request's constraint first (it masks what cannot continue a valid reply), then the
  // checkpoint's recommended sampling (generation_config.json), or greedy.
  dsinfer::SamplerChain sampler;
  if (constraint) sampler.add(std::move(constraint));
  if (a.flags.count("greedy")) {
    sampler.add(dsinfer::make_greedy_sampler());
  } else {
    const uint64_t seed = a.flags.count("seed") ? uint64_t(parse_int("seed", a.flags.at("seed"), 0, INT64_MAX)) : 0;
    sampler.add(dsinfer::make_default_chain(dsinfer::load_generation_config(model_dir(a)), seed));
  }
  auto seq = model->new_sequence(int64_t(ids.size()) + n + 1);
  dsinfer::EvalOptions opts = eval_options(a);
  std::vector<float> logits = model->eval(*seq, ids, opts);
  dsinfer::Detokenizer detok(*tok);
  std::vector<int32_t> generated;
  const int32_t eos = tok->eos_id();
  // Only ids the tokenizer knows: the embedding is padded beyond the vocabulary (129280 vs ~128815 for DeepSeek).
  const int64_t usable = std::min<int64_t>(tok->size(), model->info().vocab_size);
  for (int64_t i = 0; i < n; ++i) {
    const int32_t next = sampler.sample(logits, usable);
    sampler.accept(next);
    const std::string piece = detok.push(next);
    generated.push_back(next);
    if (next == eos) break;
    fmt::print("{}", piece);
    std::fflush(stdout);
    if (i + 1 < n) logits = model->eval(*seq, std::span<const int32_t>(&next, 1), opts);
  }
  fmt::print("{}\n", detok.finish());
  if (chat) {
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

int run(int argc, char** argv) {
  const std::map<std::string, std::set<std::string>> allowed = {
      {"generate", {"model", "ids", "prompt", "n", "precision", "threads", "seed", "greedy", "kv-cache-dtype"}},
      {"chat", {"model", "messages", "thinking", "n", "precision", "threads", "seed", "greedy", "kv-cache-dtype"}},
      {"prompt", {"model", "messages", "thinking", "ids"}},
      {"logits", {"model", "ids", "out", "precision", "threads", "kv-cache-dtype"}},
      {"info", {"model", "threads", "kv-cache-dtype", "ctx"}},
  };
  if (argc >= 2 && (!std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h") || !std::strcmp(argv[1], "help"))) {
    std::fputs(kUsage, stdout);
    return 0;
  }
  const Args a = parse_args(argc, argv, allowed);
  if (a.command == "info") {
    auto model = load(a);
    const auto& i = model->info();
    fmt::print("model_type: {}\nindexer (DSA): {}\nfp8 weights: {}\nvocab: {}\nhidden: {}\nlayers: {}\n"
               "parameters: {}\nweight bytes: {}\n",
               i.model_type, i.has_indexer ? "yes" : "no", i.fp8_weights ? "yes" : "no", i.vocab_size,
               i.hidden_size, i.num_layers, i.parameter_count, i.weight_bytes);
    // KV cache memory, from the config alone (nothing is allocated for it here).
    fmt::print("kv cache: {}, {} bytes per token per layer, {} bytes per token\n",
               dsinfer::kv_cache_dtype_name(i.kv_cache_dtype), i.kv_bytes_per_token_layer, i.kv_bytes_per_token);
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
  if (a.command == "chat" || (a.command == "generate" && a.flags.count("prompt"))) return run_text(a);
  const std::vector<int32_t> ids = parse_ids(required(a, "ids"));
  const dsinfer::EvalOptions opts = eval_options(a);
  if (a.command == "generate") {
    const int64_t n = a.flags.count("n") ? parse_int("n", a.flags.at("n"), 0, 1 << 20) : 32;
    auto model = load(a);
    const auto out = model->generate_greedy(ids, n, opts);
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
  } catch (const UsageError& e) {
    fmt::print(stderr, "dsinfer: {}\n{}", e.what(), kUsage);
    return 2;
  } catch (const Error& e) {
    fmt::print(stderr, "dsinfer: error ({}): {}\n", dsinfer::error_code_name(e.code()), e.what());
    return 1;
  } catch (const std::exception& e) {
    fmt::print(stderr, "dsinfer: error: {}\n", e.what());
    return 1;
  }
}
