// dsinfer — command-line front end: run a DeepSeek-V3-family checkpoint.
//   dsinfer generate --model DIR --ids 0,1234,... [--n N] [--precision fp8|reference] [--threads N]
//   dsinfer logits   --model DIR --ids ... --out FILE [--precision fp8|reference] [--threads N]
//   dsinfer info     --model DIR
#include <fmt/format.h>

#include <charconv>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "dsinfer/dsinfer.hpp"

namespace {

using dsinfer::Error;
using dsinfer::ErrorCode;

constexpr const char* kUsage =
    "usage:\n"
    "  dsinfer generate --model DIR --ids ID,ID,... [--n N] [--precision fp8|reference] [--threads N]\n"
    "      prints the greedy continuation ids (N, default 32), comma-separated\n"
    "  dsinfer logits --model DIR --ids ID,ID,... --out FILE [--precision fp8|reference] [--threads N]\n"
    "      writes little-endian float32 logits [n_tokens, vocab] for every position to FILE\n"
    "  dsinfer info --model DIR\n"
    "      prints what the checkpoint is\n";

struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct Args {
  std::string command;
  std::map<std::string, std::string> flags;
};

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

std::unique_ptr<dsinfer::Model> load(const Args& a) {
  dsinfer::ModelLoadParams p;
  if (a.flags.count("threads")) p.n_threads = int(parse_int("threads", a.flags.at("threads"), 1, 1024));
  return dsinfer::Model::load(required(a, "model"), p);
}

int run(int argc, char** argv) {
  const std::map<std::string, std::set<std::string>> allowed = {
      {"generate", {"model", "ids", "n", "precision", "threads"}},
      {"logits", {"model", "ids", "out", "precision", "threads"}},
      {"info", {"model", "threads"}},
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
    return 0;
  }
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
