// Streaming, error-tolerant parsing of DeepSeek-V3.2 completions (reasoning, content, DSML tool calls) as text
// arrives. The grammar is the one parse_completion follows (lib/chat/completion_parser.cpp, dsml_grammar.hpp).
#include <fmt/format.h>

#include <set>

#include "chat/dsml_grammar.hpp"
#include "chat/py_json.hpp"
#include "util/json_input.hpp"
#include "dsinfer/chat.hpp"

namespace dsinfer {

namespace {

using namespace dsml;
using Kind = ChatEvent::Kind;

constexpr std::string_view kNameAttr = "name=\"";
constexpr std::string_view kNameClose = "\">\n";
constexpr std::string_view kParamNameOpen = "<｜DSML｜parameter name=\"";
constexpr std::string_view kParamStringAttr = "\" string=\"";
constexpr std::string_view kParamClose = "</｜DSML｜parameter";
constexpr std::string_view kLineEnd = ">\n";

// Length of the longest suffix of `s` that is a proper prefix of one of `markers`: those bytes must wait.
size_t holdback(std::string_view s, std::initializer_list<std::string_view> markers) {
  size_t keep = 0;
  for (std::string_view m : markers)
    for (size_t n = std::min(s.size(), m.size() - 1); n > keep; --n)
      if (s.substr(s.size() - n) == m.substr(0, n)) {
        keep = n;
        break;
      }
  return keep;
}

// dsml_name_problem for a name that grew by its last `added` bytes, whose earlier bytes were checked before: only the
// new bytes, and enough before them to catch a "｜DSML｜" that straddles the two, are searched (a name fed a byte at
// a time stays linear).
const char* name_problem_in_growth(std::string_view name, size_t added) {
  const size_t overlap = kDsml.size() - 1;
  const size_t from = name.size() - added;
  return dsml_name_problem(name.substr(from > overlap ? from - overlap : 0));
}

}  // namespace

struct ChatStreamParser::Impl {
  enum class State { Reasoning, Content, CallsOpen, InvokeOrEnd, InvokeSpace, InvokeName, ParamOrInvokeEnd, ParamName, ParamKind,
                     ParamValue, ParamEnd, InvokeEnd, Trailing, Done, Raw };
  State state;
  std::string buf;        // received, not yet consumed
  size_t consumed = 0;    // absolute offset of buf[0]
  std::string section;    // raw text of the current tool-call block, delivered as content if it turns out broken
  ChatMessage msg;
  bool error = false;
  // the tool call being parsed
  std::string name, param, args, raw_value;
  bool param_is_string = false;
  int n_params = 0;
  std::set<std::string> seen_params;
  bool blank_line_seen = false;

  explicit Impl(ThinkingMode m) : state(m == ThinkingMode::Thinking ? State::Reasoning : State::Content) {
    msg.role = "assistant";
    msg.content = "";
    msg.reasoning_content = "";
  }

  void consume(size_t n) {
    if (state != State::Reasoning && state != State::Content && state != State::Raw && state != State::Done)
      section.append(buf, 0, n);
    buf.erase(0, n);
    consumed += n;
  }
  void emit_text(Kind k, std::string_view t, std::vector<ChatEvent>& ev) {
    if (t.empty()) return;
    (k == Kind::ReasoningDelta ? *msg.reasoning_content : *msg.content) += t;
    ChatEvent e;
    e.kind = k;
    e.text = t;
    ev.push_back(std::move(e));
  }
  void emit_args(std::string_view t, std::vector<ChatEvent>& ev) {
    args += t;
    ChatEvent e;
    e.kind = Kind::ToolArgsDelta;
    e.tool_index = int32_t(msg.tool_calls.size());
    e.text = t;
    ev.push_back(std::move(e));
  }
  void report(size_t offset, const std::string& what, std::vector<ChatEvent>& ev) {
    error = true;
    ChatEvent e;
    e.kind = Kind::Error;
    e.text = what;
    e.offset = offset;
    ev.push_back(std::move(e));
  }
  // A broken tool-call block: report it, hand its raw text back as content and read the rest as content.
  void fail(const std::string& what, std::vector<ChatEvent>& ev) {
    report(consumed, what, ev);
    std::string raw = section + buf;
    consumed += buf.size();
    section.clear();
    buf.clear();
    state = State::Raw;
    emit_text(Kind::ContentDelta, raw, ev);
  }

  // Expects the literal `lit` at the start of buf: true when consumed, false when more text is needed; a
  // mismatch fails the block.
  bool expect(std::string_view lit, const char* what, std::vector<ChatEvent>& ev) {
    const size_t n = std::min(buf.size(), lit.size());
    if (buf.compare(0, n, lit, 0, n) != 0) {
      fail(fmt::format("expected {}", what), ev);
      return false;
    }
    if (buf.size() < lit.size()) return false;
    consume(lit.size());
    return true;
  }

  // Reads up to `close` into out (not consuming close). Returns true when close was found.
  bool read_until(std::string_view close, std::string& out) {
    const size_t p = buf.find(close);
    if (p == std::string::npos) {
      const size_t take = buf.size() - holdback(buf, {close});  // a partial `close` at the end waits
      out.append(buf, 0, take);
      consume(take);
      return false;
    }
    out.append(buf, 0, p);
    consume(p);
    return true;
  }

  void run(std::vector<ChatEvent>& ev) {
    for (;;) {
      const State before = state;
      const size_t size_before = buf.size();
      step(ev);
      if (state == before && buf.size() == size_before) return;  // needs more text
    }
  }

  void step(std::vector<ChatEvent>& ev) {
    switch (state) {
      case State::Reasoning: {
        const size_t end = buf.find(kThinkEnd), calls = buf.find(kToolCallsStart);
        if (calls != std::string::npos && (end == std::string::npos || calls < end)) {
          // The official parser requires </think> before any tool call; keep the text as reasoning and go on.
          report(consumed + calls, "a tool call inside the reasoning (no </think> before it)", ev);
        }
        if (end != std::string::npos) {
          emit_text(Kind::ReasoningDelta, std::string_view(buf).substr(0, end), ev);
          consume(end + kThinkEnd.size());
          state = State::Content;
          return;
        }
        const size_t keep = holdback(buf, {kThinkEnd});
        emit_text(Kind::ReasoningDelta, std::string_view(buf).substr(0, buf.size() - keep), ev);
        consume(buf.size() - keep);
        return;
      }
      case State::Content: {
        const size_t calls = buf.find(kToolCallsStart), eos = buf.find(kEos);
        if (calls != std::string::npos && (eos == std::string::npos || calls < eos)) {
          emit_text(Kind::ContentDelta, std::string_view(buf).substr(0, calls), ev);
          consume(calls);
          section.clear();
          state = State::CallsOpen;
          consume(kToolCallsStart.size());
          return;
        }
        if (eos != std::string::npos) {
          emit_text(Kind::ContentDelta, std::string_view(buf).substr(0, eos), ev);
          consume(eos + kEos.size());
          state = State::Done;
          return;
        }
        const size_t keep = holdback(buf, {kToolCallsStart, kEos});
        emit_text(Kind::ContentDelta, std::string_view(buf).substr(0, buf.size() - keep), ev);
        consume(buf.size() - keep);
        return;
      }
      case State::CallsOpen:
        if (expect(kLineEnd, "\">\\n\" after <｜DSML｜function_calls", ev)) state = State::InvokeOrEnd;
        return;
      case State::InvokeOrEnd: {
        // Either another invocation or the end of the block.
        if (buf.compare(0, std::min(buf.size(), kInvokeOpen.size()), kInvokeOpen, 0,
                        std::min(buf.size(), kInvokeOpen.size())) == 0) {
          if (buf.size() >= kInvokeOpen.size()) {
            consume(kInvokeOpen.size());
            state = State::InvokeSpace;
          }
          return;
        }
        const std::string end = std::string(kFunctionCallsEnd);
        if (expect(end, "<｜DSML｜invoke name=\"…\"> or </｜DSML｜function_calls>", ev)) {
          state = State::Trailing;
          section.clear();
        }
        return;
      }
      case State::InvokeSpace: {
        // The official pattern takes any run of spaces between "invoke" and name= (ASCII here: dsml_grammar.hpp).
        size_t n = 0;
        while (n < buf.size() && is_invoke_space(buf[n])) ++n;
        consume(n);
        if (buf.empty()) return;
        if (expect(kNameAttr, "name=\"…\" in <｜DSML｜invoke", ev)) {
          name.clear();
          state = State::InvokeName;
        }
        return;
      }
      case State::InvokeName: {
        std::string part;
        const bool done = read_until(kNameClose, part);
        name += part;
        if (const char* why = name_problem_in_growth(name, part.size())) {
          fail(fmt::format("unknown attribute or malformed name in <｜DSML｜invoke>: the name contains {}", why), ev);
          return;
        }
        if (!done) return;
        consume(kNameClose.size());
        ChatEvent e;
        e.kind = Kind::ToolCallBegin;
        e.tool_index = int32_t(msg.tool_calls.size());
        e.name = name;
        ev.push_back(std::move(e));
        args.clear();
        n_params = 0;
        seen_params.clear();
        blank_line_seen = false;
        emit_args("{", ev);
        state = State::ParamOrInvokeEnd;
        return;
      }
      case State::ParamOrInvokeEnd: {
        // An invocation without parameters renders as `name="f">\n\n</｜DSML｜invoke>`: the official parser's
        // name pattern ends in `\n$`, which also matches before one final newline, so one blank line is allowed.
        if (n_params == 0 && !blank_line_seen && !buf.empty() && buf[0] == '\n') {
          consume(1);
          blank_line_seen = true;
          return;
        }
        const size_t n = std::min(buf.size(), kParamNameOpen.size());
        if (buf.compare(0, n, kParamNameOpen, 0, n) == 0) {
          if (buf.size() >= kParamNameOpen.size()) {
            consume(kParamNameOpen.size());
            param.clear();
            state = State::ParamName;
          }
          return;
        }
        if (expect(kInvokeClose, "<｜DSML｜parameter or </｜DSML｜invoke", ev)) state = State::InvokeEnd;
        return;
      }
      case State::ParamName: {
        std::string part;
        const bool done = read_until(kParamStringAttr, part);
        param += part;
        if (const char* why = name_problem_in_growth(param, part.size())) {
          fail(fmt::format("unknown attribute or malformed name in <｜DSML｜parameter>: the name contains {}", why), ev);
          return;
        }
        if (!done) return;
        consume(kParamStringAttr.size());
        if (!seen_params.insert(param).second) report(consumed, fmt::format("duplicate parameter \"{}\"", param), ev);
        state = State::ParamKind;
        return;
      }
      case State::ParamKind: {
        for (std::string_view kind : {std::string_view("true\">"), std::string_view("false\">")}) {
          const size_t n = std::min(buf.size(), kind.size());
          if (buf.compare(0, n, kind, 0, n) == 0) {
            if (buf.size() < kind.size()) return;
            consume(kind.size());
            param_is_string = kind[0] == 't';
            raw_value.clear();
            emit_args(fmt::format("{}{}: {}", n_params ? ", " : "", py_dumps(ojson(param)), param_is_string ? "\"" : ""), ev);
            ++n_params;
            state = State::ParamValue;
            return;
          }
        }
        fail("string=\"true\" or string=\"false\" expected in <｜DSML｜parameter>", ev);
        return;
      }
      case State::ParamValue: {
        // The value ends at the first "/｜DSML｜parameter", as in the strict parser, which must follow a '<' (a
        // trailing '<' is always held back, so the '<' of the closing tag is still in buf).
        size_t p = buf.find(kParameterCloseTail);
        if (p != std::string::npos) {
          if (p == 0 || buf[p - 1] != '<') {
            fail("\"/｜DSML｜parameter\" without the '<' of </｜DSML｜parameter> in a parameter value", ev);
            return;
          }
          --p;
        }
        const size_t take = p != std::string::npos ? p : buf.size() - holdback(buf, {kParamClose, kParameterCloseTail});
        const std::string_view chunk = std::string_view(buf).substr(0, take);
        raw_value += chunk;
        if (!chunk.empty()) emit_args(param_is_string ? py_escape(chunk) : std::string(chunk), ev);
        consume(take);
        if (p == std::string::npos) return;
        consume(kParamClose.size());
        if (param_is_string) {
          emit_args("\"", ev);
        } else {
          if (!is_json_value(raw_value))
            report(consumed, fmt::format("parameter \"{}\" has string=\"false\" but its value is not JSON: {}", param,
                                         excerpt(raw_value, 80)), ev);
        }
        state = State::ParamEnd;
        return;
      }
      case State::ParamEnd:
        if (expect(kLineEnd, "\">\\n\" after a parameter", ev)) state = State::ParamOrInvokeEnd;
        return;
      case State::InvokeEnd:
        if (expect(kLineEnd, "\">\\n\" after </｜DSML｜invoke", ev)) {
          emit_args("}", ev);
          ChatEvent e;
          e.kind = Kind::ToolCallEnd;
          e.tool_index = int32_t(msg.tool_calls.size());
          e.name = name;
          e.arguments = args;
          ev.push_back(e);
          msg.tool_calls.push_back({"", name, args});
          state = State::InvokeOrEnd;
        }
        return;
      case State::Trailing: {
        if (buf.empty()) return;
        const size_t n = std::min(buf.size(), kEos.size());
        if (buf.compare(0, n, kEos, 0, n) != 0) {
          report(consumed, "text after the function calls", ev);
          state = State::Raw;
          return;
        }
        if (buf.size() >= kEos.size()) {
          consume(kEos.size());
          state = State::Done;
        }
        return;
      }
      case State::Done:
        if (!buf.empty()) {
          report(consumed, "text after <｜end▁of▁sentence｜>", ev);
          state = State::Raw;
        }
        return;
      case State::Raw:
        emit_text(Kind::ContentDelta, buf, ev);
        consume(buf.size());
        return;
    }
  }
};

ChatStreamParser::ChatStreamParser(ThinkingMode thinking) : impl_(std::make_unique<Impl>(thinking)) {}
ChatStreamParser::~ChatStreamParser() = default;
ChatStreamParser::ChatStreamParser(ChatStreamParser&&) noexcept = default;

void ChatStreamParser::feed(std::string_view piece, std::vector<ChatEvent>& events) {
  impl_->buf += piece;
  impl_->run(events);
}

void ChatStreamParser::finish(std::vector<ChatEvent>& events) {
  Impl& p = *impl_;
  p.run(events);
  using S = Impl::State;
  switch (p.state) {
    case S::Reasoning:
      p.emit_text(Kind::ReasoningDelta, p.buf, events);
      p.consume(p.buf.size());
      p.report(p.consumed, "the reasoning was not closed with </think>", events);
      break;
    case S::Content:
      p.emit_text(Kind::ContentDelta, p.buf, events);  // a held-back partial marker is plain text after all
      p.consume(p.buf.size());
      break;
    case S::Trailing:
      // Held back as the start of <｜end▁of▁sentence｜>, which never came: text after the function calls.
      if (!p.buf.empty()) p.report(p.consumed, "text after the function calls", events);
      [[fallthrough]];
    case S::Done:
    case S::Raw:
      if (!p.buf.empty()) {
        p.emit_text(Kind::ContentDelta, p.buf, events);
        p.consume(p.buf.size());
      }
      break;
    default:
      p.fail("the completion ended inside a tool-call block", events);
      break;
  }
  for (std::string_view tok : {kBos, kEos, kThinkStart, kThinkEnd, kDsml})
    if (p.msg.content->find(tok) != std::string::npos || p.msg.reasoning_content->find(tok) != std::string::npos) {
      if (!p.error) p.report(0, fmt::format("special token {} inside the text", tok), events);
      break;
    }
}

const ChatMessage& ChatStreamParser::message() const { return impl_->msg; }
bool ChatStreamParser::had_error() const { return impl_->error; }

}  // namespace dsinfer
