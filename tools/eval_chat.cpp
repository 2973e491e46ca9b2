// eval_chat — scores a chat model on held-out conversations, through dsinfer's own sessions.
//   eval_chat --model DIR --data heldout.jsonl [--n N] [--precision fp8|reference] [--sampling greedy|default]
//             [--seed S] [--threads T] [--max-tokens N] [--grammar on|off] [--out results.json]
//             [--expect results.json --tolerance P]
//
// Each line of the data file is a conversation {"thinking", "unseen_tools", "tools", "messages", "checks"} written by
// training/generate_data.py. For every checked assistant turn i the session is given messages[0, i) (the reference
// conversation up to that turn, so one mistake does not spoil the next check), generates a reply and is scored:
//   tool_calls  the reply calls exactly the expected tools with exactly the expected arguments (as JSON values; the
//               order of parallel calls does not matter) — split by seen and unseen tools
//   answer      no tool call, and the reply states every expected value (substring)
//   no_tool     a request no listed tool can serve: no tool call, and a non-empty reply
//   chat        no tool call, and the reply holds the expected words (a capital, or "know" in "I don't know")
//   json        the reply is JSON equal to the expected object (a response_format conversation)
// and every reply must be well-formed (the streaming DSML parser reported no error, and the generation ended on
// its own rather than at --max-tokens). --grammar on (the default) enforces what the request asks, as the server does
// with the same request: a conversation with tools is generated under ConstraintSpec::TextOrToolCalls (tool_choice
// "auto": a call parses and names a declared tool with valid arguments), one whose system message carries a
// response_format under that format's JSON schema; off: the model's own output (--tool-grammar is the older name).
// Prints rates as percentages; --out writes them as JSON; --expect compares with recorded rates and exits 1 when one
// differs from its record by more than --tolerance points.
// --sampling greedy is argmax decoding; default is the checkpoint's generation_config.json sampling, conversation i
// seeded with S + i.
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cmath>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "dsinfer/chat.hpp"
#include "dsinfer/constraint.hpp"
#include "dsinfer/dsinfer.hpp"
#include "dsinfer/session.hpp"
#include "dsinfer/tokenizer.hpp"
#include "parse_number.hpp"

namespace {

using json = nlohmann::json;
// The prompt side keeps every object's keys in document order, as the training corpus and an OpenAI client give
// them (nlohmann::json sorts keys: a tool list would reach the model as {"description", "name", "parameters"} with
// its properties alphabetical, which no conversation in training looks like). The checks compare JSON values.
using ojson = nlohmann::ordered_json;

struct Rate {
  int64_t ok = 0, total = 0;
  void add(bool good) {
    ok += good;
    total += 1;
  }
  double percent() const { return total ? 100.0 * double(ok) / double(total) : 0.0; }
};

struct Args {
  std::string model, data, out, expect, precision = "fp8", sampling = "greedy", grammar = "on";
  int64_t n = -1, threads = 2, max_tokens = 256;
  uint64_t seed = 1;
  double tolerance = 5.0;
};

// A numeric flag's value, or an error naming the flag.
template <class T>
T number(const std::string& flag, const std::string& v, T lo, T hi) {
  if (const auto x = dsinfer::tools::parse_number<T>(v, lo, hi)) return *x;
  throw std::runtime_error(fmt::format("{} expects a number from {} to {}, got \"{}\"", flag, lo, hi, v));
}

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    if (i + 1 >= argc) throw std::runtime_error("missing value for " + k);
    const std::string v = argv[++i];
    if (k == "--model") a.model = v;
    else if (k == "--data") a.data = v;
    else if (k == "--out") a.out = v;
    else if (k == "--expect") a.expect = v;
    else if (k == "--precision") a.precision = v;
    else if (k == "--sampling") a.sampling = v;
    else if (k == "--grammar" || k == "--tool-grammar") a.grammar = v;
    else if (k == "--n") a.n = number<int64_t>(k, v, 0, INT64_MAX);
    else if (k == "--threads") a.threads = number<int64_t>(k, v, 1, 1024);
    else if (k == "--max-tokens") a.max_tokens = number<int64_t>(k, v, 1, int64_t(1) << 20);
    else if (k == "--seed") a.seed = number<uint64_t>(k, v, 0, UINT64_MAX);
    else if (k == "--tolerance") a.tolerance = number<double>(k, v, 0.0, 100.0);
    else throw std::runtime_error("unknown flag " + k);
  }
  if (a.model.empty() || a.data.empty()) throw std::runtime_error("--model and --data are required");
  if (a.precision != "fp8" && a.precision != "reference") throw std::runtime_error("--precision fp8|reference");
  if (a.sampling != "greedy" && a.sampling != "default") throw std::runtime_error("--sampling greedy|default");
  if (a.grammar != "on" && a.grammar != "off") throw std::runtime_error("--grammar on|off");
  return a;
}

// A reply's calls against the expected ones, as a multiset of (name, arguments as JSON values).
bool same_calls(const std::vector<dsinfer::ToolCall>& got, const json& want) {
  if (got.size() != want.size()) return false;
  std::vector<std::pair<std::string, json>> a, b;
  for (const auto& c : got) {
    json args = json::parse(c.arguments, nullptr, false);
    if (args.is_discarded()) return false;
    a.emplace_back(c.name, std::move(args));
  }
  for (const auto& c : want) b.emplace_back(c.at("name").get<std::string>(), c.at("arguments"));
  auto key = [](const std::pair<std::string, json>& p) { return p.first + "\x1f" + p.second.dump(); };
  std::sort(a.begin(), a.end(), [&](auto& x, auto& y) { return key(x) < key(y); });
  std::sort(b.begin(), b.end(), [&](auto& x, auto& y) { return key(x) < key(y); });
  return a == b;
}

bool contains_all(const std::string& text, const json& words) {
  for (const auto& w : words)
    if (text.find(w.get<std::string>()) == std::string::npos) return false;
  return true;
}

// The response_format a conversation's system message carries (where an OpenAI request has it at the top level: the
// encoder attaches it there), as JSON, or "" for none.
std::string response_format(const ojson& messages) {
  std::string format;
  for (const auto& m : messages)
    if (m.value("role", "") == "system" && m.contains("response_format")) format = m["response_format"].dump();
  return format;
}

}  // namespace

int main(int argc, char** argv) {
  Args args;
  try {
    args = parse(argc, argv);
  } catch (const std::exception& e) {
    fmt::print(stderr, "eval_chat: {}\n(see the comment at the top of tools/eval_chat.cpp)\n", e.what());
    return 2;
  }
  try {
    dsinfer::ModelLoadParams lp;
    lp.n_threads = args.threads;
    auto model = dsinfer::Model::load(args.model, lp);
    auto tok = dsinfer::Tokenizer::load(args.model);
    const auto gen_cfg = dsinfer::load_generation_config(args.model);
    std::ifstream in(args.data);
    if (!in) throw std::runtime_error("cannot open " + args.data);

    std::map<std::string, Rate> rates;
    Rate well_formed;
    int64_t conversations = 0, generated_tokens = 0;
    std::vector<json> failures;
    const auto t0 = std::chrono::steady_clock::now();
    std::string line;
    while (std::getline(in, line) && (args.n < 0 || conversations < args.n)) {
      if (line.empty()) continue;
      const json conv = json::parse(line);
      const ojson doc = ojson::parse(line);
      const bool thinking = conv.at("thinking").get<bool>();
      const bool unseen = conv.at("unseen_tools").get<bool>();
      dsinfer::SessionParams sp;
      sp.capacity = 4096;
      sp.eval.precision = args.precision == "fp8" ? dsinfer::Precision::Fp8 : dsinfer::Precision::Reference;
      sp.thinking = thinking ? dsinfer::ThinkingMode::Thinking : dsinfer::ThinkingMode::Chat;
      dsinfer::Session session(*model, *tok, sp);
      // A Session samples as the checkpoint's generation_config.json says unless told otherwise: greedy must be set.
      if (args.sampling == "default") {
        session.set_sampler(dsinfer::make_default_chain(gen_cfg, args.seed + conversations));
      } else {
        auto chain = std::make_unique<dsinfer::SamplerChain>();
        chain->add(dsinfer::make_greedy_sampler());
        session.set_sampler(std::move(chain));
      }
      const ojson& msgs = doc.at("messages");
      std::shared_ptr<const dsinfer::Constraint> grammar;
      if (args.grammar == "on") {
        const bool tools = !doc.at("tools").empty();
        const std::string format = response_format(msgs);
        if (tools || !format.empty())
          grammar = dsinfer::Constraint::compile(
              *tok, dsinfer::constraint_from_request(format, tools ? doc.at("tools").dump() : "",
                                                     tools ? "\"auto\"" : "", true, sp.thinking));
      }
      for (const auto& [index, ocheck] : doc.at("checks").items()) {  // in turn order, as written
        const size_t i = std::stoul(index);
        const json check = json::parse(ocheck.dump());
        ojson prefix = {{"messages", ojson(std::vector<ojson>(msgs.begin(), msgs.begin() + long(i)))},
                        {"tools", doc.at("tools")}};
        session.set_messages(dsinfer::chat_messages_from_json(prefix.dump()));
        dsinfer::GenerateParams gp;
        gp.max_tokens = args.max_tokens;
        gp.constraint = grammar;
        bool parse_error = false;
        const auto finish = session.generate(gp, [&](const dsinfer::ChatEvent& e) {
          parse_error |= e.kind == dsinfer::ChatEvent::Kind::Error;
          return true;
        });
        generated_tokens += int64_t(session.generated().size());
        const dsinfer::ChatMessage& reply = session.reply();
        const std::string content = reply.content.value_or("");
        const bool formed = !parse_error && finish != dsinfer::FinishReason::MaxTokens;
        well_formed.add(formed);
        const std::string kind = check.at("kind").get<std::string>();
        bool good = false;
        std::string name = kind;
        if (kind == "tool_calls") {
          good = formed && same_calls(reply.tool_calls, check.at("calls"));
          name = unseen ? "tool_calls_unseen" : "tool_calls_seen";
        } else if (kind == "answer") {
          good = formed && reply.tool_calls.empty() && contains_all(content, check.at("must_contain"));
        } else if (kind == "no_tool") {
          good = formed && reply.tool_calls.empty() && !content.empty();
        } else if (kind == "chat") {
          good = formed && reply.tool_calls.empty() && !content.empty() && contains_all(content, check.at("must_contain"));
        } else if (kind == "json") {
          const json got = json::parse(content, nullptr, false);
          good = formed && !got.is_discarded() && got == check.at("expect");
        }
        rates[name].add(good);
        if (!good && failures.size() < 200)
          failures.push_back({{"conversation", conversations}, {"turn", i}, {"kind", name},
                              {"expected", check}, {"generated", session.generated_text()}});
      }
      ++conversations;
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    json result = {{"model", args.model}, {"data", args.data}, {"conversations", conversations},
                   {"precision", args.precision}, {"sampling", args.sampling}, {"seed", args.seed},
                   {"grammar", args.grammar},
                   {"generated_tokens", generated_tokens}, {"seconds", seconds}};
    auto report = [&](const std::string& key, const Rate& r) {
      result["rates"][key] = {{"percent", r.percent()}, {"ok", r.ok}, {"total", r.total}};
      fmt::print("{:<20} {:6.2f} %  ({} / {})\n", key, r.percent(), r.ok, r.total);
    };
    fmt::print("{} conversations, {} precision, {} sampling, {:.0f} s, {} tokens generated\n", conversations,
               args.precision, args.sampling, seconds, generated_tokens);
    for (const auto& [k, r] : rates) report(k, r);
    report("well_formed", well_formed);
    result["failures"] = failures;
    if (!args.out.empty()) std::ofstream(args.out) << result.dump(1) << "\n";
    if (!args.expect.empty()) {
      std::ifstream ef(args.expect);
      if (!ef) throw std::runtime_error("cannot open " + args.expect);
      const json want = json::parse(ef);
      bool ok = true;
      for (const auto& [k, v] : want.at("rates").items()) {
        const double got = result["rates"].contains(k) ? result["rates"][k]["percent"].get<double>() : 0.0;
        const double rec = v.at("percent").get<double>();
        const bool pass = std::abs(got - rec) <= args.tolerance;
        ok &= pass;
        fmt::print("{:<20} measured {:6.2f} % vs recorded {:6.2f} %: {}\n", k, got, rec, pass ? "ok" : "OUTSIDE");
      }
      if (!ok) return 1;
    }
  } catch (const dsinfer::Error& e) {
    fmt::print(stderr, "eval_chat: {} ({})\n", e.what(), dsinfer::error_code_name(e.code()));
    return 1;
  } catch (const std::exception& e) {
    fmt::print(stderr, "eval_chat: {}\n", e.what());
    return 1;
  }
  return 0;
}
