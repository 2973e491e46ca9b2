// tokenizer.json: BPE model, the DeepSeek family's pre-tokenizers (Sequence of Split regexes, ByteLevel), the
// ByteLevel decoder, added tokens and the TemplateProcessing post-processor, matching the `tokenizers` library
// token for token (checked on a 10,000-line corpus and three variant files by tests/lib/tokenizer). The regex classes
// are widened to the library's Unicode tables (unicode_classes.inc, from tests/reference/make_tokenizer_unicode.py).
#define PCRE2_CODE_UNIT_WIDTH 8
#include "util/utf8.hpp"
#include <fmt/format.h>
#include <pcre2.h>

#include <algorithm>
#include <atomic>
#include <array>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <queue>
#include <sstream>
#include <unordered_map>

#include "dsinfer/tokenizer.hpp"
#include "util/json_input.hpp"

namespace dsinfer {

namespace {

using json = nlohmann::json;

// ---- UTF-8 ---------------------------------------------------------------------------------------------------

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += char(cp);
  } else if (cp < 0x800) {
    out += char(0xC0 | (cp >> 6));
    out += char(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += char(0xE0 | (cp >> 12));
    out += char(0x80 | ((cp >> 6) & 0x3F));
    out += char(0x80 | (cp & 0x3F));
  } else {
    out += char(0xF0 | (cp >> 18));
    out += char(0x80 | ((cp >> 12) & 0x3F));
    out += char(0x80 | ((cp >> 6) & 0x3F));
    out += char(0x80 | (cp & 0x3F));
  }
}

// Decodes one code point of valid UTF-8 at s[i], advancing i.
uint32_t next_codepoint(std::string_view s, size_t& i) {
  const uint8_t c = uint8_t(s[i]);
  const size_t n = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
  uint32_t cp = n == 1 ? c : n == 2 ? (c & 0x1F) : n == 3 ? (c & 0x0F) : (c & 0x07);
  for (size_t k = 1; k < n; ++k) cp = (cp << 6) | (uint8_t(s[i + k]) & 0x3F);
  i += n;
  return cp;
}

// ---- byte-level alphabet (GPT-2): every byte as a printable code point -----------------------------------------

struct ByteLevelMap {
  std::array<std::string, 256> byte_to_str;  // UTF-8 of the code point standing for each byte
  std::unordered_map<uint32_t, uint8_t> cp_to_byte;
  ByteLevelMap() {
    uint32_t extra = 0;
    for (uint32_t b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      const uint32_t cp = printable ? b : 256 + extra++;
      append_utf8(byte_to_str[b], cp);
      cp_to_byte[cp] = uint8_t(b);
    }
  }
};
const ByteLevelMap& byte_level() {
  static const ByteLevelMap m;
  return m;
}

// ---- regexes (PCRE2 with Unicode properties) -------------------------------------------------------------------

// PCRE2 and the tokenizers library's Oniguruma carry Unicode tables of different ages, so recent characters (new
// emoji, scripts) fall in \p{S}/\p{L}/... for the library and nowhere for PCRE2, and the pre-tokenizer splits the text
// differently. The table (tests/reference/make_tokenizer_unicode.py asks both engines about every code point) lists
// what to add to each class, and the library's \s in full (PCRE2's also has U+180E).
struct ClassRange {
  char cls;
  uint32_t first, last;
};
constexpr ClassRange kOracleClasses[] = {
#include "unicode_classes.inc"
};

std::string class_ranges(char cls) {
  std::string out;
  for (const ClassRange& r : kOracleClasses)
    if (r.cls == cls) out += r.first == r.last ? fmt::format("\\x{{{:X}}}", r.first)
                                               : fmt::format("\\x{{{:X}}}-\\x{{{:X}}}", r.first, r.last);
  return out;
}

// Rewrites \p{L} \p{M} \p{N} \p{P} \p{S} (and \pL...) to include the table's code points, and \s / \S to the
// library's whitespace. Inside a bracket class the ranges are inserted in place; outside, the item becomes a class.
// \P{X} and \S inside a bracket class cannot be widened this way and are left to PCRE2's tables.
std::string align_unicode_classes(const std::string& re) {
  std::string out;
  bool in_class = false;
  size_t i = 0;
  while (i < re.size()) {
    const char c = re[i];
    if (c == '\\' && i + 1 < re.size()) {
      const char n = re[i + 1];
      if (n == 'Q') {  // literal text up to \E
        const size_t e = re.find("\\E", i + 2);
        const size_t end = e == std::string::npos ? re.size() : e + 2;
        out.append(re, i, end - i);
        i = end;
        continue;
      }
      if (n == 'p' || n == 'P') {
        std::string name;
        size_t end;
        if (i + 2 < re.size() && re[i + 2] == '{') {
          const size_t close = re.find('}', i + 3);
          if (close == std::string::npos) break;  // let PCRE2 report the error
          name = re.substr(i + 3, close - i - 3);
          end = close + 1;
        } else {
          name = re.substr(i + 2, 1);
          end = i + 3;
        }
        const std::string extra = name.size() == 1 ? class_ranges(name[0]) : std::string();
        if (extra.empty() || (n == 'P' && in_class)) {
          out.append(re, i, end - i);
        } else if (in_class) {
          out += "\\p{" + name + "}" + extra;
        } else {
          out += std::string(n == 'p' ? "[" : "[^") + "\\p{" + name + "}" + extra + "]";
        }
        i = end;
        continue;
      }
      if (n == 's' || (n == 'S' && !in_class)) {
        const std::string ws = class_ranges('s');
        out += in_class ? ws : (n == 's' ? "[" : "[^") + ws + "]";
        i += 2;
        continue;
      }
      out.append(re, i, 2);
      i += 2;
      continue;
    }
    if (c == '[' && !in_class) {
      in_class = true;
      out += c;
      ++i;
      if (i < re.size() && re[i] == '^') out += re[i++];
      if (i < re.size() && re[i] == ']') out += re[i++];  // a leading ']' is a literal
      continue;
    }
    if (c == '[' && in_class && i + 1 < re.size() && re[i + 1] == ':') {  // POSIX class [:name:]
      const size_t e = re.find(":]", i + 2);
      const size_t end = e == std::string::npos ? i + 1 : e + 2;
      out.append(re, i, end - i);
      i = end;
      continue;
    }
    if (c == ']' && in_class) in_class = false;
    out += c;
    ++i;
  }
  if (i < re.size()) out.append(re, i, std::string::npos);
  return out;
}

class Regex {
 public:
  Regex(const std::string& pattern, const std::string& where) {
    int err = 0;
    PCRE2_SIZE off = 0;
    const std::string aligned = align_unicode_classes(pattern);
    code_ = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(aligned.data()), aligned.size(), PCRE2_UTF | PCRE2_UCP, &err,
                          &off, nullptr);
    if (!code_) {
      // Report against the pattern as written in the file; the offset is the one PCRE2 gives.
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message(err, msg, sizeof msg);
      throw Error(ErrorCode::Format, fmt::format("{}: regex {} does not compile: {} (offset {})", where,
                                                 json_excerpt(json(pattern)), reinterpret_cast<const char*>(msg), off));
    }
    pcre2_jit_compile(code_, PCRE2_JIT_COMPLETE);  // best effort: falls back to the interpreter
  }
  ~Regex() { pcre2_code_free(code_); }
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // Calls fn(begin, end) for every non-overlapping match in s.
  template <class F>
  void for_each_match(std::string_view s, F&& fn) const {
    pcre2_match_data* md = pcre2_match_data_create_from_pattern(code_, nullptr);
    size_t off = 0;
    while (off <= s.size()) {
      // PCRE2_NO_UTF_CHECK: the text was validated once on entry to encode().
      const int rc = pcre2_match(code_, reinterpret_cast<PCRE2_SPTR>(s.data()), s.size(), off, PCRE2_NO_UTF_CHECK,
                                 md, nullptr);
      if (rc < 0) break;
      const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
      size_t b = ov[0], e = ov[1];
      if (e == b) {  // empty match: step over one character
        if (b >= s.size()) break;
        off = b + std::max<size_t>(1, utf8_sequence(s, b));
        continue;
      }
      fn(b, e);
      off = e;
    }
    pcre2_match_data_free(md);
  }

 private:
  pcre2_code* code_ = nullptr;
};

enum class SplitBehavior { Isolated, Removed, MergedWithPrevious, MergedWithNext, Contiguous };

struct PreTokenizerStep {
  enum Kind { Split, ByteLevel } kind;
  std::unique_ptr<Regex> regex;  // Split
  SplitBehavior behavior = SplitBehavior::Isolated;
};

// Spans of the text (byte offsets) that the pre-tokenizer makes into separate words.
using Span = std::pair<size_t, size_t>;

// One Split step over every current piece. The pieces of a piece are its matches and the gaps between them; the
// behaviours combine them as the tokenizers library's SplitDelimiterBehavior does (empty pieces are dropped).
void apply_split(const Regex& re, SplitBehavior beh, std::string_view text, std::vector<Span>& spans) {
  std::vector<Span> out;
  std::vector<std::pair<Span, bool>> parts;  // (span, is_match)
  for (const Span& sp : spans) {
    const std::string_view piece = text.substr(sp.first, sp.second - sp.first);
    parts.clear();
    size_t last = 0;
    re.for_each_match(piece, [&](size_t b, size_t e) {
      if (b > last) parts.push_back({{sp.first + last, sp.first + b}, false});
      parts.push_back({{sp.first + b, sp.first + e}, true});
      last = e;
    });
    if (last < piece.size()) parts.push_back({{sp.first + last, sp.second}, false});
    const size_t first_out = out.size();
    bool previous_match = false;
    switch (beh) {
      case SplitBehavior::Isolated:
        for (auto& p : parts) out.push_back(p.first);
        break;
      case SplitBehavior::Removed:
        for (auto& p : parts)
          if (!p.second) out.push_back(p.first);
        break;
      case SplitBehavior::MergedWithPrevious:  // a match joins the gap before it
        for (auto& p : parts) {
          if (p.second && !previous_match && out.size() > first_out) out.back().second = p.first.second;
          else out.push_back(p.first);
          previous_match = p.second;
        }
        break;
      case SplitBehavior::MergedWithNext: {  // a match joins the gap after it (the library folds from the right)
        std::vector<Span> rev;
        for (auto it = parts.rbegin(); it != parts.rend(); ++it) {
          if (it->second && !previous_match && !rev.empty()) rev.back().first = it->first.first;
          else rev.push_back(it->first);
          previous_match = it->second;
        }
        out.insert(out.end(), rev.rbegin(), rev.rend());
        break;
      }
      case SplitBehavior::Contiguous:  // runs of matches (and runs of gaps) become one piece
        for (size_t k = 0; k < parts.size(); ++k) {
          if (k > 0 && parts[k].second == previous_match) out.back().second = parts[k].first.second;
          else out.push_back(parts[k].first);
          previous_match = parts[k].second;
        }
        break;
    }
  }
  spans.swap(out);
}

struct AddedToken {
  int32_t id;
  std::string content;
  bool special, single_word, lstrip, rstrip, normalized;
};

// Rust's char::is_whitespace, which the library's lstrip/rstrip use: the same code points as its regex \s.
bool is_rust_whitespace(uint32_t cp) {
  for (const ClassRange& r : kOracleClasses)
    if (r.cls == 's' && cp >= r.first && cp <= r.last) return true;
  return false;
}

// The added tokens of one matching pass: leftmost-longest, non-overlapping, as the library's Aho-Corasick automaton.
struct AddedMatcher {
  std::array<std::vector<const AddedToken*>, 256> by_first_byte;  // longest first
  bool empty = true;
  void add(const AddedToken& a) {
    if (a.content.empty()) return;
    by_first_byte[uint8_t(a.content[0])].push_back(&a);
    empty = false;
  }
  void sort() {
    for (auto& list : by_first_byte)
      std::stable_sort(list.begin(), list.end(), [](const AddedToken* x, const AddedToken* y) {
        return x->content.size() > y->content.size();
      });
  }
};

// A piece of the input after added-token matching: an added token's id, or text (id -1) for the pre-tokenizer.
struct Piece {
  int32_t id;
  size_t begin, end;
};

struct TemplateItem {
  bool sequence;              // the input ids ($A)
  std::vector<int32_t> ids;   // or these special-token ids
};

}  // namespace

std::string utf8_lossy(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    size_t valid = 0;
    const size_t n = utf8_sequence(s, i, &valid);
    if (n) {
      out.append(s.substr(i, n));
      i += n;
    } else {
      out += "\xEF\xBF\xBD";  // U+FFFD for the maximal ill-formed subpart
      i += std::max<size_t>(valid, 1);
    }
  }
  return out;
}

struct Tokenizer::Impl {
  std::string source;
  std::unordered_map<std::string, int32_t> vocab;
  std::vector<std::string> id_to_token;  // vocab and added tokens; "" for holes
  std::vector<uint8_t> special;          // per id
  std::vector<uint8_t> added;            // per id
  std::unordered_map<uint64_t, std::pair<int32_t, int32_t>> merges;  // (left id, right id) -> (rank, merged id)
  bool ignore_merges = false;
  std::vector<PreTokenizerStep> steps;
  bool byte_level_decoder = false;
  std::vector<AddedToken> added_tokens;
  // The library matches tokens with normalized=false on the input first, then normalized=true ones on the text
  // between (after the normalizer, which DeepSeek's files do not have).
  AddedMatcher raw_matcher, normalized_matcher;
  std::unique_ptr<Regex> word_char;  // single_word: the regex crate's \w, which the library uses
  std::vector<TemplateItem> single_template;
  bool has_template = false;
  int32_t bos = -1, eos = -1;
  bool add_bos = false;
  uint64_t instance_id = 0;
  mutable std::mutex cache_mutex;
  mutable std::unordered_map<std::string, std::vector<int32_t>> cache;

  [[noreturn]] void fail(const std::string& msg) const { throw Error(ErrorCode::Format, fmt::format("{}: {}", source, msg)); }

  static uint64_t pair_key(int32_t a, int32_t b) { return (uint64_t(uint32_t(a)) << 32) | uint32_t(b); }

  // Applies merges lowest rank first, equal ranks left to right, as the HF library does: the symbols form a linked
  // list and candidate pairs wait in a min-heap keyed (rank, position); a popped pair whose symbols have changed
  // since it was pushed is stale and skipped. O(n log n) in the word length, where rescanning the word for each
  // merge was O(n x merges) (an 80 KB word took seconds).
  void merge_word(std::vector<int32_t>& syms) const {
    const size_t n = syms.size();
    if (n < 2) return;
    struct Candidate {
      int32_t rank;
      uint32_t pos;          // the left symbol
      int32_t left, right;   // the pair when pushed, to detect staleness
      bool operator>(const Candidate& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
    };
    std::vector<int64_t> prev(n), next(n);
    for (size_t i = 0; i < n; ++i) {
      prev[i] = int64_t(i) - 1;
      next[i] = i + 1 < n ? int64_t(i) + 1 : -1;
    }
    std::vector<uint8_t> alive(n, 1);
    std::priority_queue<Candidate, std::vector<Candidate>, std::greater<Candidate>> heap;
    auto push = [&](int64_t i) {
      if (i < 0 || next[size_t(i)] < 0) return;
      const int32_t a = syms[size_t(i)], b = syms[size_t(next[size_t(i)])];
      auto it = merges.find(pair_key(a, b));
      if (it != merges.end()) heap.push({it->second.first, uint32_t(i), a, b});
    };
    for (size_t i = 0; i + 1 < n; ++i) push(int64_t(i));
    while (!heap.empty()) {
      const Candidate c = heap.top();
      heap.pop();
      const size_t i = c.pos;
      if (!alive[i] || next[i] < 0 || syms[i] != c.left || syms[size_t(next[i])] != c.right) continue;
      const size_t j = size_t(next[i]);
      syms[i] = merges.at(pair_key(c.left, c.right)).second;
      alive[j] = 0;
      next[i] = next[j];
      if (next[j] >= 0) prev[size_t(next[j])] = int64_t(i);
      push(prev[i]);
      push(int64_t(i));
    }
    size_t k = 0;
    for (size_t i = 0; i < n; ++i)
      if (alive[i]) syms[k++] = syms[i];
    syms.resize(k);
  }

  void bpe_word(const std::string& word, std::vector<int32_t>& out) const {
    {
      std::lock_guard<std::mutex> lock(cache_mutex);
      auto it = cache.find(word);
      if (it != cache.end()) {
        out.insert(out.end(), it->second.begin(), it->second.end());
        return;
      }
    }
    std::vector<int32_t> syms;
    auto whole = vocab.find(word);
    if (ignore_merges && whole != vocab.end()) {
      syms.push_back(whole->second);
    } else {
      for (size_t i = 0; i < word.size();) {
        const size_t n = std::max<size_t>(1, utf8_sequence(word, i));
        auto it = vocab.find(word.substr(i, n));
        if (it != vocab.end()) syms.push_back(it->second);  // no unk token: unknown symbols are dropped, as HF does
        i += n;
      }
      merge_word(syms);
    }
    out.insert(out.end(), syms.begin(), syms.end());
    if (word.size() > 256) return;  // long words are rare and would make the cache's memory unbounded
    std::lock_guard<std::mutex> lock(cache_mutex);
    if (cache.size() > 200000) cache.clear();  // bounded: a pathological input cannot grow it without limit
    cache.emplace(word, std::move(syms));
  }

  void encode_segment(std::string_view text, std::vector<int32_t>& out) const {
    std::vector<Span> spans = {{0, text.size()}};
    bool bytes_mapped = false;
    for (const auto& step : steps) {
      if (step.kind == PreTokenizerStep::ByteLevel) bytes_mapped = true;
      else apply_split(*step.regex, step.behavior, text, spans);
    }
    const auto& bl = byte_level();
    std::string word;
    for (const Span& sp : spans) {
      if (sp.second == sp.first) continue;
      word.clear();
      if (bytes_mapped) {
        for (size_t i = sp.first; i < sp.second; ++i) word += bl.byte_to_str[uint8_t(text[i])];
      } else {
        word.assign(text.substr(sp.first, sp.second - sp.first));
      }
      bpe_word(word, out);
    }
  }

  // Splits text[begin, end) into added tokens and the text between, as the library's AddedVocabulary does:
  // leftmost-longest matches, scanning on past a match that single_word rejects; lstrip/rstrip take the
  // whitespace beside a token into it (lstrip never reaches back into the previous piece).
  void match_added(const AddedMatcher& m, std::string_view text, size_t begin, size_t end,
                   std::vector<Piece>& out) const {
    if (m.empty) {
      out.push_back({-1, begin, end});
      return;
    }
    size_t start_offset = begin, i = begin;
    while (i < end) {
      const AddedToken* hit = nullptr;
      for (const AddedToken* a : m.by_first_byte[uint8_t(text[i])])
        if (a->content.size() <= end - i && text.compare(i, a->content.size(), a->content) == 0) {
          hit = a;
          break;
        }
      if (!hit) {
        ++i;
        continue;
      }
      size_t start = i, stop = i + hit->content.size();
      i = stop;
      if (hit->single_word && ((start > begin && is_word_char_before(text, begin, start)) ||
                               (stop < end && is_word_char_at(text, stop)))) {
        continue;
      }
      if (hit->lstrip) {
        size_t k = start;
        while (k > start_offset) {
          size_t b = k - 1;
          while (b > begin && (uint8_t(text[b]) & 0xC0) == 0x80) --b;
          size_t q = b;
          if (!is_rust_whitespace(next_codepoint(text, q))) break;
          k = b;
        }
        start = k;
      }
      if (hit->rstrip) {
        while (stop < end) {
          size_t q = stop;
          if (!is_rust_whitespace(next_codepoint(text, q))) break;
          stop = q;
        }
        i = stop;
      }
      if (start > start_offset) out.push_back({-1, start_offset, start});
      out.push_back({hit->id, start, stop});
      start_offset = stop;
    }
    if (start_offset < end) out.push_back({-1, start_offset, end});
  }

  bool is_word_char_at(std::string_view text, size_t i) const {
    size_t q = i;
    next_codepoint(text, q);
    bool yes = false;
    word_char->for_each_match(text.substr(i, q - i), [&](size_t, size_t) { yes = true; });
    return yes;
  }
  bool is_word_char_before(std::string_view text, size_t begin, size_t i) const {
    size_t b = i - 1;
    while (b > begin && (uint8_t(text[b]) & 0xC0) == 0x80) --b;
    return is_word_char_at(text, b);
  }

  void check_id(int32_t id) const {
    if (id < 0 || id >= int32_t(id_to_token.size()))
      throw Error(ErrorCode::InvalidArgument,
                  fmt::format("token id {} is out of range: the tokenizer has {} tokens (ids 0..{})", id,
                              id_to_token.size(), id_to_token.size() - 1));
  }

  std::string token_bytes(int32_t id) const {
    check_id(id);
    const std::string& tok = id_to_token[size_t(id)];
    if (!byte_level_decoder) return tok;
    // ByteLevel decoder: map each character back to its byte; a token with a character outside the byte alphabet
    // (e.g. an added token such as "<｜User｜>") contributes its own UTF-8 bytes unchanged.
    const auto& bl = byte_level();
    std::string out;
    for (size_t i = 0; i < tok.size();) {
      const uint32_t cp = next_codepoint(tok, i);
      auto it = bl.cp_to_byte.find(cp);
      if (it == bl.cp_to_byte.end()) return tok;
      out += char(it->second);
    }
    return out;
  }
};

namespace {

// The most entries (vocab plus added tokens) a tokenizer.json may have, and so the largest token id + 1
// (docs/errors.md); DeepSeek's has 129280.
constexpr int64_t kMaxTokenizerEntries = int64_t(1) << 24;

json read_json_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error(ErrorCode::Io, fmt::format("cannot open {}", path));
  std::ostringstream ss;
  ss << f.rdbuf();
  try {
    return parse_json_input(ss.str());
  } catch (const JsonInputError& e) {
    throw Error(ErrorCode::Format, fmt::format("{}: not valid JSON: {}", path, e.what()));
  }
}

// o[key] when it is present and not null, else `def`; any other type is a Format error naming the file and key
// (nlohmann's value() would throw its own type_error, which is not an input error to the caller).
bool flag_at(const json& o, const char* key, bool def, const std::string& where) {
  if (!o.is_object() || !o.contains(key) || o[key].is_null()) return def;
  if (!o[key].is_boolean())
    throw Error(ErrorCode::Format, fmt::format("{}: \"{}\" must be true or false, found {}", where, key, json_excerpt(o[key])));
  return o[key].get<bool>();
}
std::string string_at(const json& o, const char* key, const std::string& def, const std::string& where) {
  if (!o.is_object() || !o.contains(key) || o[key].is_null()) return def;
  if (!o[key].is_string())
    throw Error(ErrorCode::Format, fmt::format("{}: \"{}\" must be a string, found {}", where, key, json_excerpt(o[key])));
  return o[key].get<std::string>();
}
// A token id from the file: an integer in [0, limit), where limit is the number of entries (docs/errors.md), so
// the id table stays as large as the file's contents and no id is truncated to 32 bits.
int32_t token_id_at(const json& v, int64_t limit, const std::string& where, const std::string& what) {
  if (!v.is_number_integer() || (v.is_number_unsigned() && v.get<uint64_t>() >= uint64_t(limit)) ||
      v.get<int64_t>() < 0 || v.get<int64_t>() >= limit)
    throw Error(ErrorCode::Format, fmt::format("{}: {} has id {}, outside [0, {}) (ids must be below the number of "
                                               "tokens in the file)", where, what, json_excerpt(v), limit));
  return int32_t(v.get<int64_t>());
}

std::string type_of(const json& j) {
  return j.is_object() && j.contains("type") && j["type"].is_string() ? j["type"].get<std::string>() : "";
}

}  // namespace

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {
  static std::atomic<uint64_t> next_instance{1};
  impl_->instance_id = next_instance++;
}
Tokenizer::~Tokenizer() = default;

std::unique_ptr<Tokenizer> Tokenizer::load(const std::string& path) {
  namespace fs = std::filesystem;
  const fs::path file = fs::is_directory(path) ? fs::path(path) / "tokenizer.json" : fs::path(path);
  auto impl = std::make_unique<Impl>();
  Impl& t = *impl;
  t.source = file.string();
  const json j = read_json_file(t.source);
  if (!j.is_object()) t.fail("the top level must be a JSON object");
  auto unsupported = [&](const std::string& what) {
    throw Error(ErrorCode::Unsupported, fmt::format("{}: {}", t.source, what));
  };

  // model
  if (!j.contains("model") || !j["model"].is_object()) t.fail("missing the \"model\" object");
  const json& m = j["model"];
  const std::string mtype = string_at(m, "type", "BPE", t.source + " (model)");
  if (mtype != "BPE") unsupported(fmt::format("model type \"{}\" is not supported (BPE only)", mtype));
  if (!m.contains("vocab") || !m["vocab"].is_object()) t.fail("\"model.vocab\" must be an object of token -> id");
  if (m.contains("byte_fallback") && m["byte_fallback"].is_boolean() && m["byte_fallback"].get<bool>())
    unsupported("BPE byte_fallback is not supported");
  t.ignore_merges = flag_at(m, "ignore_merges", false, t.source + " (model)");
  const json& aj = j.contains("added_tokens") && !j["added_tokens"].is_null() ? j["added_tokens"] : json::array();
  if (!aj.is_array()) t.fail("\"added_tokens\" must be a list");
  // Ids are bounded by the number of entries: the id table is sized by the largest id, so one entry with id 10^8
  // would otherwise cost gigabytes. Holes stay possible (an added token may repeat a vocab entry) but bounded.
  const int64_t id_limit = std::min<int64_t>(int64_t(m["vocab"].size() + aj.size()), kMaxTokenizerEntries);
  int32_t max_id = -1;
  for (const auto& [tok, idj] : m["vocab"].items()) {
    const int32_t id = token_id_at(idj, id_limit, t.source, fmt::format("\"model.vocab\" entry \"{}\"", excerpt(tok)));
    t.vocab[tok] = id;
    max_id = std::max(max_id, id);
  }
  for (const auto& a : aj) {
    if (!a.is_object() || !a.contains("id") || !a["id"].is_number_integer() || !a.contains("content") ||
        !a["content"].is_string())
      t.fail(fmt::format("added token {} needs an integer \"id\" and a string \"content\"", json_excerpt(a)));
    const std::string where = t.source + " (added_tokens)";
    const bool special = flag_at(a, "special", false, where);
    t.added_tokens.push_back({token_id_at(a["id"], id_limit, t.source, fmt::format("added token {}", json_excerpt(a))),
                              a["content"].get<std::string>(), special, flag_at(a, "single_word", false, where),
                              flag_at(a, "lstrip", false, where), flag_at(a, "rstrip", false, where),
                              flag_at(a, "normalized", !special, where)});
    max_id = std::max(max_id, t.added_tokens.back().id);
  }
  t.id_to_token.assign(size_t(max_id + 1), "");
  t.special.assign(size_t(max_id + 1), 0);
  t.added.assign(size_t(max_id + 1), 0);
  for (const auto& [tok, id] : t.vocab) t.id_to_token[size_t(id)] = tok;
  for (const auto& a : t.added_tokens) {
    t.id_to_token[size_t(a.id)] = a.content;
    t.special[size_t(a.id)] = a.special;
    t.added[size_t(a.id)] = 1;
    t.vocab.emplace(a.content, a.id);
  }
  for (const auto& a : t.added_tokens) (a.normalized ? t.normalized_matcher : t.raw_matcher).add(a);
  t.raw_matcher.sort();
  t.normalized_matcher.sort();
  t.word_char = std::make_unique<Regex>("[\\p{Alphabetic}\\p{M}\\p{Nd}\\p{Pc}\\p{Join_Control}]", "word characters");

  // merges: "a b" strings (older files) or ["a", "b"] pairs (newer files)
  const json& mj = m.contains("merges") ? m["merges"] : json::array();
  if (!mj.is_array()) t.fail("\"model.merges\" must be a list");
  int32_t rank = 0;
  for (const auto& e : mj) {
    std::string a, b;
    if (e.is_string()) {
      const std::string s = e.get<std::string>();
      const size_t sp = s.find(' ', 1);
      if (sp == std::string::npos) t.fail(fmt::format("merge \"{}\" is not two tokens separated by a space", excerpt(s)));
      a = s.substr(0, sp);
      b = s.substr(sp + 1);
    } else if (e.is_array() && e.size() == 2 && e[0].is_string() && e[1].is_string()) {
      a = e[0].get<std::string>();
      b = e[1].get<std::string>();
    } else {
      t.fail(fmt::format("merge {} is neither \"a b\" nor [\"a\", \"b\"]", json_excerpt(e)));
    }
    auto ia = t.vocab.find(a), ib = t.vocab.find(b), im = t.vocab.find(a + b);
    if (ia == t.vocab.end() || ib == t.vocab.end() || im == t.vocab.end())
      t.fail(fmt::format("merge #{} (\"{}\" + \"{}\") uses or makes a token missing from the vocabulary", rank,
                         excerpt(a), excerpt(b)));
    t.merges.emplace(Impl::pair_key(ia->second, ib->second), std::make_pair(rank++, im->second));
  }

  // normalizer: DeepSeek has none (an empty Sequence)
  if (j.contains("normalizer") && !j["normalizer"].is_null()) {
    const json& n = j["normalizer"];
    const std::string ty = type_of(n);
    if (ty != "Sequence" || !n.contains("normalizers") || !n["normalizers"].is_array() || !n["normalizers"].empty())
      unsupported(fmt::format("normalizer {} is not supported (none or an empty Sequence only)",
                              ty == "Sequence" && n.contains("normalizers") && !n["normalizers"].empty()
                                  ? "\"" + type_of(n["normalizers"][0]) + "\" inside a Sequence"
                                  : "\"" + ty + "\""));
  }

  // pre-tokenizer
  std::function<void(const json&)> add_pre = [&](const json& p) {
    const std::string ty = type_of(p);
    if (ty == "Sequence") {
      if (!p.contains("pretokenizers") || !p["pretokenizers"].is_array()) t.fail("Sequence pre-tokenizer without a list");
      for (const auto& q : p["pretokenizers"]) add_pre(q);
    } else if (ty == "Split") {
      if (flag_at(p, "invert", false, t.source + " (Split pre-tokenizer)")) unsupported("Split pre-tokenizer with invert=true is not supported");
      const json& pat = p.contains("pattern") ? p["pattern"] : json();
      std::string re;
      if (pat.is_object() && pat.contains("Regex") && pat["Regex"].is_string()) {
        re = pat["Regex"].get<std::string>();
      } else if (pat.is_object() && pat.contains("String") && pat["String"].is_string()) {
        // A literal: quote it for the regex engine.
        re = "\\Q" + pat["String"].get<std::string>() + "\\E";
      } else {
        t.fail("Split pre-tokenizer needs a pattern {\"Regex\": ...} or {\"String\": ...}");
      }
      const std::string beh = string_at(p, "behavior", "Isolated", t.source + " (Split pre-tokenizer)");
      SplitBehavior b = SplitBehavior::Isolated;  // every other behavior is refused below
      if (beh == "Isolated") b = SplitBehavior::Isolated;
      else if (beh == "Removed") b = SplitBehavior::Removed;
      else if (beh == "MergedWithPrevious") b = SplitBehavior::MergedWithPrevious;
      else if (beh == "MergedWithNext") b = SplitBehavior::MergedWithNext;
      else if (beh == "Contiguous") b = SplitBehavior::Contiguous;
      else unsupported(fmt::format("Split behavior \"{}\" is not supported", beh));
      PreTokenizerStep s{PreTokenizerStep::Split, std::make_unique<Regex>(re, t.source + " (Split pattern)"), b};
      t.steps.push_back(std::move(s));
    } else if (ty == "ByteLevel") {
      if (flag_at(p, "add_prefix_space", false, t.source + " (ByteLevel pre-tokenizer)")) unsupported("ByteLevel pre-tokenizer with add_prefix_space=true is not supported");
      if (flag_at(p, "use_regex", true, t.source + " (ByteLevel pre-tokenizer)")) {
        // GPT-2's word pattern, applied before the byte mapping.
        const std::string gpt2 = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
        t.steps.push_back({PreTokenizerStep::Split, std::make_unique<Regex>(gpt2, t.source), SplitBehavior::Isolated});
      }
      t.steps.push_back({PreTokenizerStep::ByteLevel, nullptr, SplitBehavior::Isolated});
    } else if (ty == "Digits") {
      // The library's Digits splits on char::is_numeric (general category N), each digit alone or runs of them.
      const std::string re = flag_at(p, "individual_digits", false, t.source + " (Digits pre-tokenizer)") ? "\\p{N}" : "\\p{N}+";
      t.steps.push_back({PreTokenizerStep::Split, std::make_unique<Regex>(re, t.source), SplitBehavior::Isolated});
    } else {
      unsupported(fmt::format("pre-tokenizer type \"{}\" is not supported (Sequence, Split, ByteLevel, Digits)", ty));
    }
  };
  if (j.contains("pre_tokenizer") && !j["pre_tokenizer"].is_null()) add_pre(j["pre_tokenizer"]);

  // decoder
  if (j.contains("decoder") && !j["decoder"].is_null()) {
    const std::string ty = type_of(j["decoder"]);
    if (ty != "ByteLevel") unsupported(fmt::format("decoder type \"{}\" is not supported (ByteLevel only)", ty));
    t.byte_level_decoder = true;
  }

  // post-processor: TemplateProcessing (DeepSeek's prepends BOS), ByteLevel (offsets only: no effect on ids), or a
  // Sequence of them, the shape Llama-3-style files have.
  std::function<void(const json&)> add_post = [&](const json& pp) {
    const std::string ty = type_of(pp);
    if (ty == "Sequence") {
      if (!pp.contains("processors") || !pp["processors"].is_array()) t.fail("Sequence post_processor without a \"processors\" list");
      for (const auto& q : pp["processors"]) add_post(q);
    } else if (ty == "TemplateProcessing") {
      if (t.has_template) unsupported("more than one TemplateProcessing post-processor is not supported");
      t.has_template = true;
      std::map<std::string, std::vector<int32_t>> sp_ids;
      if (pp.contains("special_tokens") && pp["special_tokens"].is_object())
        for (const auto& [name, v] : pp["special_tokens"].items()) {
          if (!v.is_object() || !v.contains("ids") || !v["ids"].is_array())
            t.fail(fmt::format("post_processor special token \"{}\" has no \"ids\" list", name));
          auto& ids = sp_ids[name];
          for (const auto& id : v["ids"])
            ids.push_back(token_id_at(id, int64_t(t.id_to_token.size()), t.source,
                                               fmt::format("post_processor special token \"{}\"", excerpt(name))));
        }
      const json single = pp.contains("single") ? pp["single"] : json::array();
      if (!single.is_array()) t.fail("post_processor \"single\" must be a list");
      for (const auto& item : single) {
        if (item.is_object() && item.contains("Sequence")) {
          t.single_template.push_back({true, {}});
        } else if (item.is_object() && item.contains("SpecialToken") && item["SpecialToken"].is_object()) {
          const std::string name = string_at(item["SpecialToken"], "id", "", t.source + " (post_processor)");
          auto it = sp_ids.find(name);
          if (it == sp_ids.end()) t.fail(fmt::format("post_processor names special token \"{}\" without its ids", excerpt(name)));
          t.single_template.push_back({false, it->second});
        } else {
          t.fail(fmt::format("post_processor template item {} is not understood", json_excerpt(item)));
        }
      }
    } else if (ty != "ByteLevel") {
      unsupported(fmt::format("post-processor type \"{}\" is not supported (TemplateProcessing, ByteLevel, Sequence)", ty));
    }
  };
  if (j.contains("post_processor") && !j["post_processor"].is_null()) add_post(j["post_processor"]);

  // tokenizer_config.json: bos/eos and add_bos_token
  const fs::path cfg_path = file.parent_path() / "tokenizer_config.json";
  if (fs::exists(cfg_path)) {
    const json c = read_json_file(cfg_path.string());
    auto token_id = [&](const char* key) -> int32_t {
      if (!c.contains(key) || c[key].is_null()) return -1;
      const std::string content =
          c[key].is_string() ? c[key].get<std::string>() : string_at(c[key], "content", "", cfg_path.string() + " (" + key + ")");
      auto it = t.vocab.find(content);
      if (it == t.vocab.end())
        throw Error(ErrorCode::Format, fmt::format("{}: \"{}\" is \"{}\", which is not a token", cfg_path.string(), key, excerpt(content)));
      return it->second;
    };
    t.bos = token_id("bos_token");
    t.eos = token_id("eos_token");
    t.add_bos = flag_at(c, "add_bos_token", false, cfg_path.string());
  }
  return std::unique_ptr<Tokenizer>(new Tokenizer(std::move(impl)));
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_special_tokens) const {
  const Impl& t = *impl_;
  for (size_t i = 0; i < text.size();) {
    const size_t n = utf8_sequence(text, i);
    if (!n)
      throw Error(ErrorCode::InvalidArgument,
                  fmt::format("text to encode is not valid UTF-8: bad byte 0x{:02X} at offset {}", uint8_t(text[i]), i));
    i += n;
  }
  std::vector<int32_t> ids;
  // Added tokens first, never split; the text between them goes through the pre-tokenizer.
  std::vector<Piece> pieces, gaps;
  t.match_added(t.raw_matcher, text, 0, text.size(), pieces);
  if (!t.normalized_matcher.empty) {
    gaps.swap(pieces);
    for (const Piece& p : gaps) {
      if (p.id >= 0) pieces.push_back(p);
      else t.match_added(t.normalized_matcher, text, p.begin, p.end, pieces);
    }
  }
  for (const Piece& p : pieces) {
    if (p.id >= 0) ids.push_back(p.id);
    else if (p.end > p.begin) t.encode_segment(text.substr(p.begin, p.end - p.begin), ids);
  }
  if (!add_special_tokens || !t.has_template) return ids;
  std::vector<int32_t> out;
  for (const auto& item : t.single_template) {
    if (item.sequence) out.insert(out.end(), ids.begin(), ids.end());
    else out.insert(out.end(), item.ids.begin(), item.ids.end());
  }
  return out;
}

std::string Tokenizer::decode(std::span<const int32_t> ids, bool skip_special_tokens) const {
  std::string bytes;
  for (int32_t id : ids) {
    impl_->check_id(id);
    if (skip_special_tokens && impl_->special[size_t(id)]) continue;
    bytes += impl_->token_bytes(id);
  }
  return utf8_lossy(bytes);
}

int64_t Tokenizer::size() const { return int64_t(impl_->id_to_token.size()); }

int32_t Tokenizer::token_to_id(std::string_view token) const {
  auto it = impl_->vocab.find(std::string(token));
  return it == impl_->vocab.end() ? -1 : it->second;
}

std::string Tokenizer::id_to_token(int32_t id) const {
  impl_->check_id(id);
  return impl_->id_to_token[size_t(id)];
}

bool Tokenizer::is_special(int32_t id) const {
  impl_->check_id(id);
  return impl_->special[size_t(id)];
}

int32_t Tokenizer::bos_id() const { return impl_->bos; }
int32_t Tokenizer::eos_id() const { return impl_->eos; }
bool Tokenizer::add_bos_token() const { return impl_->add_bos; }
std::string Tokenizer::token_bytes(int32_t id) const { return impl_->token_bytes(id); }
uint64_t Tokenizer::instance_id() const { return impl_->instance_id; }

Detokenizer::Detokenizer(const Tokenizer& tok, bool skip_special_tokens) : tok_(tok), skip_special_(skip_special_tokens) {}

std::string Detokenizer::push(int32_t id) {
  if (skip_special_ && tok_.is_special(id)) return {};
  pending_ += tok_.token_bytes(id);
  // Emit everything except a trailing, still-valid but unfinished UTF-8 sequence (at most 3 bytes): those bytes
  // may become a character when the next token arrives.
  size_t keep = 0;
  for (size_t back = 1; back <= std::min<size_t>(3, pending_.size()); ++back) {
    const size_t i = pending_.size() - back;
    const uint8_t c = uint8_t(pending_[i]);
    if ((c & 0xC0) == 0x80) continue;  // continuation byte: look further back for the lead byte
    size_t valid = 0;
    const size_t n = utf8_sequence(pending_, i, &valid);
    if (n == 0 && valid == back && c >= 0xC2 && c <= 0xF4) keep = back;  // a valid prefix cut by the end
    break;
  }
  std::string out = utf8_lossy(std::string_view(pending_).substr(0, pending_.size() - keep));
  pending_.erase(0, pending_.size() - keep);
  return out;
}

std::string Detokenizer::finish() {
  std::string out = utf8_lossy(pending_);
  pending_.clear();
  return out;
}

}  // namespace dsinfer
