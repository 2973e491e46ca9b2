// Completion text -> reasoning, content and tool calls, as DeepSeek's parse_message_from_completion_text does it.
// Like the official parser this one is strict: it reports where the text leaves the format instead of repairing
// it (the streaming, tolerant parser of issue 4 builds on the same grammar). Where DeepSeek's regexes and loop
// accept more than the format (dsml_grammar.hpp; the list at parse_completion in dsinfer/chat.hpp), this parser
// refuses it, so that it and the stream parser accept the same completions.
#define PCRE2_CODE_UNIT_WIDTH 8
#include <fmt/format.h>
#include <pcre2.h>

#include <map>
#include <memory>
#include <mutex>
#include <unordered_set>
#include <vector>

#include "chat/dsml_grammar.hpp"
#include "chat/py_json.hpp"
#include "dsinfer/chat.hpp"
#include "util/json_input.hpp"
#include "util/utf8.hpp"

namespace dsinfer {

namespace {

using namespace dsml;

[[noreturn]] void malformed(size_t offset, const std::string& what) {
  throw Error(ErrorCode::Format, fmt::format("completion text is not in DeepSeek-V3.2's format at byte {}: {}", offset, what));
}

struct Stop {
  size_t next;              // offset just after the stop string (or the end)
  std::string_view before;  // text from the start offset to the stop string
  std::string_view stop;    // the stop string found; empty if none
};

// The official _read_until_stop: the earliest of the stop strings at or after `from`. The parser only moves
// forward, so the next occurrence of each stop string is remembered until the parser passes it: a stop string
// that appears once at the end (the invoke close after 40k parameters) is searched for once, not once per
// parameter, which keeps the parse linear in the text.
class StopScanner {
 public:
  explicit StopScanner(std::string_view text) : text_(text) {}

  Stop read_until(size_t from, std::initializer_list<std::string_view> stops) {
    size_t best = std::string_view::npos;
    std::string_view which;
    for (std::string_view s : stops) {
      const size_t p = next_occurrence(s, from);
      if (p != std::string_view::npos && p < best) {
        best = p;
        which = s;
      }
    }
    if (best == std::string_view::npos) return {text_.size(), text_.substr(from), {}};
    return {best + which.size(), text_.substr(from, best - from), which};
  }

 private:
  size_t next_occurrence(std::string_view stop, size_t from) {
    for (auto& [s, pos] : found_)
      if (s.data() == stop.data()) {
        if (pos == std::string_view::npos || pos >= from) return pos;  // none left, or still ahead
        return pos = text_.find(stop, from);
      }
    found_.emplace_back(stop, text_.find(stop, from));
    return found_.back().second;
  }

  std::string_view text_;
  std::vector<std::pair<std::string_view, size_t>> found_;  // a handful of fixed stop strings, keyed by address
};

// Python re.findall(pattern, s, re.DOTALL) with an anchored pattern: the capture groups of the single match, or
// nothing. PCRE2's "$" matches at the end or before a final newline, as Python's does.
bool match_groups(const char* pattern, std::string_view s, std::vector<std::string>& groups) {
  // A few fixed patterns, compiled once and freed at exit (LeakSanitizer checks every test for leaks).
  static std::map<std::string, std::unique_ptr<pcre2_code, void (*)(pcre2_code*)>> compiled;
  static std::mutex mu;
  pcre2_code* re;
  {
    std::lock_guard<std::mutex> lock(mu);
    auto it = compiled.find(pattern);
    if (it == compiled.end()) {
      int err;
      PCRE2_SIZE off;
      pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern), PCRE2_ZERO_TERMINATED,
                                       PCRE2_UTF | PCRE2_UCP | PCRE2_DOTALL, &err, &off, nullptr);
      if (!code) throw Error(ErrorCode::Internal, fmt::format("completion pattern {} does not compile", pattern));
      it = compiled.emplace(pattern, std::unique_ptr<pcre2_code, void (*)(pcre2_code*)>(code, pcre2_code_free)).first;
    }
    re = it->second.get();
  }
  pcre2_match_data* md = pcre2_match_data_create_from_pattern(re, nullptr);
  const int rc = pcre2_match(re, reinterpret_cast<PCRE2_SPTR>(s.data()), s.size(), 0, 0, md, nullptr);
  groups.clear();
  if (rc > 0) {
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
    for (int g = 1; g < rc; ++g) groups.emplace_back(s.substr(ov[2 * g], ov[2 * g + 1] - ov[2 * g]));
  }
  pcre2_match_data_free(md);
  return rc > 0;
}

}  // namespace

ChatMessage parse_completion(std::string_view text, ThinkingMode thinking) {
  if (const size_t bad = find_invalid_utf8(text); bad != std::string_view::npos)
    throw Error(ErrorCode::InvalidArgument, fmt::format("completion text is not valid UTF-8 at byte {}", bad));
  StopScanner scan(text);
  auto read_until = [&](size_t from, std::initializer_list<std::string_view> stops) { return scan.read_until(from, stops); };
  ChatMessage msg;
  msg.role = "assistant";
  std::string reasoning, content;
  size_t i = 0;
  if (thinking == ThinkingMode::Thinking) {
    const Stop s = read_until(i, {kThinkEnd, kToolCallsStart});
    if (s.stop != kThinkEnd) malformed(s.next - s.stop.size(), "the reasoning does not end with </think>");
    reasoning = s.before;
    i = s.next;
  }
  Stop s = read_until(i, {kEos, kToolCallsStart});
  content = s.before;
  i = s.next;
  std::string_view stop = s.stop;
  if (s.stop == kToolCallsStart) {
    // Invocations until </｜DSML｜function_calls>.
    while (i < text.size()) {
      const size_t at = i;
      Stop t = read_until(i, {kInvokeOpen, kFunctionCallsEnd});
      if (t.before != ">\n") malformed(at, "expected \">\\n\" before an invoke or the end of the function calls");
      i = t.next;
      stop = t.stop;
      if (t.stop == kFunctionCallsEnd) break;
      if (t.stop.empty()) malformed(i, "the function calls are not closed with </｜DSML｜function_calls>");
      const size_t name_at = i;
      Stop n = read_until(i, {kParameterOpen, kInvokeClose});
      std::vector<std::string> g;
      // DeepSeek's pattern is ^\s*name="(.*?)">\n$; the space is ASCII here and the name is checked below (both as
      // the stream parser reads them). "\n\n?\z" is what "\n$" matches: an invocation without parameters has a blank
      // line before </｜DSML｜invoke.
      // (\x0b, not \v: in PCRE2 \v is any vertical space, U+2028 included.)
      if (!match_groups("^[ \\t\\n\\r\\f\\x0b]*name=\"(.*?)\">\\n\\n?\\z", n.before, g))
        malformed(name_at, "malformed invoke name");
      if (const char* why = dsml_name_problem(g[0]))
        malformed(name_at, fmt::format("the invoke name \"{}\" contains {}", excerpt(g[0]), why));
      ToolCall call;
      call.name = g[0];
      i = n.next;
      stop = n.stop;
      // Arguments JSON written as the official decode_dsml_to_arguments does: string="true" values are JSON-quoted,
      // string="false" values are inserted as written.
      std::vector<std::pair<std::string, std::string>> args;
      std::unordered_set<std::string> arg_names;
      while (stop == kParameterOpen) {
        const size_t param_at = i;
        Stop p = read_until(i, {kParameterCloseTail});
        // DeepSeek's pattern ends in "<$", which also takes "<\n" before /｜DSML｜parameter and drops the newline;
        // here the value ends right before </｜DSML｜parameter, as the stream parser reads it.
        if (!match_groups("^ name=\"(.*?)\" string=\"(true|false)\">(.*?)<\\z", p.before, g))
          malformed(param_at, "malformed parameter");
        if (const char* why = dsml_name_problem(g[0]))
          malformed(param_at, fmt::format("the parameter name \"{}\" contains {}", excerpt(g[0]), why));
        if (!arg_names.insert(g[0]).second) malformed(param_at, fmt::format("duplicate parameter \"{}\"", excerpt(g[0])));
        // DeepSeek's decoder inserts a string="false" value as written, JSON or not; the arguments must be JSON.
        if (g[1] == "false" && !is_json_value(g[2]))
          malformed(param_at, fmt::format("parameter \"{}\" has string=\"false\" but its value is not JSON: {}",
                                          excerpt(g[0]), excerpt(g[2], 80)));
        args.emplace_back(g[0], g[1] == "true" ? py_dumps(ojson(g[2])) : g[2]);
        i = p.next;
        const size_t tail_at = i;
        Stop q = read_until(i, {kParameterOpen, kInvokeClose});
        if (q.before != ">\n") malformed(tail_at, "expected \">\\n\" after a parameter");
        i = q.next;
        stop = q.stop;
      }
      std::string json = "{";
      for (size_t k = 0; k < args.size(); ++k) {
        if (k) json += ", ";
        json += py_dumps(ojson(args[k].first)) + ": " + args[k].second;
      }
      call.arguments = json + "}";
      msg.tool_calls.push_back(std::move(call));
    }
    // DeepSeek's loop also ends when the text does, which accepts calls cut off after an invocation; a cut-off
    // block (the token limit, a stop string) may miss parameters and calls, so it is not a complete message.
    if (stop != kFunctionCallsEnd) malformed(text.size(), "the function calls are not closed with </｜DSML｜function_calls>");
    const size_t tail_at = i;
    Stop e = read_until(i, {kEos});
    if (!e.before.empty()) malformed(tail_at, "unexpected text after the function calls");
    i = e.next;
    stop = e.stop;
  } else if (s.stop != kEos) {
    malformed(text.size(), "the message does not end with <｜end▁of▁sentence｜>");
  }
  if (i != text.size() || !(stop == kEos || stop.empty())) malformed(i, "unexpected text at the end");
  for (std::string_view tok : {kBos, kEos, kThinkStart, kThinkEnd, kDsml}) {
    if (content.find(tok) != std::string::npos) malformed(0, fmt::format("special token {} inside the content", tok));
    if (reasoning.find(tok) != std::string::npos) malformed(0, fmt::format("special token {} inside the reasoning", tok));
  }
  msg.content = content;
  msg.reasoning_content = reasoning;
  return msg;
}

}  // namespace dsinfer
