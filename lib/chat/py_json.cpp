#include "chat/py_json.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <vector>

#include "util/json_input.hpp"

namespace dsinfer {

namespace {

// Marks a binary value made by py_parse: the decimal digits of an integer beyond 64 bits.
constexpr std::uint8_t kBigIntSubtype = 0x42;

// nlohmann's DOM builder, except that an integer literal too large for (u)int64, which nlohmann hands over as a
// double, is kept as its literal text.
struct PySax : nlohmann::detail::json_sax_dom_parser<ojson> {
  using Base = nlohmann::detail::json_sax_dom_parser<ojson>;
  using Base::Base;
  bool number_float(double v, const std::string& lexeme) {
    if (lexeme.find_first_of(".eE") == std::string::npos) {
      ojson::binary_t digits(std::vector<std::uint8_t>(lexeme.begin(), lexeme.end()), kBigIntSubtype);
      return Base::binary(digits);
    }
    return Base::number_float(v, lexeme);
  }
};

void escape_into(std::string_view s, std::string& out) {
  for (unsigned char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default:
        if (c < 0x20) out += fmt::format("\\u{:04x}", c);
        else out += char(c);  // ensure_ascii=False: everything else, non-ASCII included, as is
    }
  }
}

void dump_string(const std::string& s, std::string& out) {
  out += '"';
  escape_into(s, out);
  out += '"';
}

void dump(const ojson& v, std::string& out) {
  switch (v.type()) {
    case ojson::value_t::null: out += "null"; return;
    case ojson::value_t::boolean: out += v.get<bool>() ? "true" : "false"; return;
    case ojson::value_t::number_integer: out += std::to_string(v.get<int64_t>()); return;
    case ojson::value_t::number_unsigned: out += std::to_string(v.get<uint64_t>()); return;
    case ojson::value_t::number_float: out += py_float_repr(v.get<double>()); return;
    case ojson::value_t::string: dump_string(v.get_ref<const std::string&>(), out); return;
    case ojson::value_t::array: {
      out += '[';
      bool first = true;
      for (const auto& e : v) {
        if (!first) out += ", ";
        first = false;
        dump(e, out);
      }
      out += ']';
      return;
    }
    case ojson::value_t::object: {
      out += '{';
      bool first = true;
      for (const auto& [k, e] : v.items()) {
        if (!first) out += ", ";
        first = false;
        dump_string(k, out);
        out += ": ";
        dump(e, out);
      }
      out += '}';
      return;
    }
    case ojson::value_t::binary: {
      const auto& b = v.get_binary();
      out.append(b.begin(), b.end());
      return;
    }
    default: out += "null"; return;
  }
}

}  // namespace

std::string py_float_repr(double x) {
  if (std::isnan(x)) return "NaN";
  if (std::isinf(x)) return x > 0 ? "Infinity" : "-Infinity";
  if (x == 0) return std::signbit(x) ? "-0.0" : "0.0";
  // Shortest round-trip digits, then Python's repr layout: fixed notation for decimal exponents in [-4, 16),
  // otherwise d.ddde±XX with at least two exponent digits.
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof buf, x, std::chars_format::scientific);
  std::string s(buf, res.ptr);
  std::string sign;
  if (s[0] == '-') {
    sign = "-";
    s.erase(0, 1);
  }
  const size_t e = s.find('e');
  std::string digits = s.substr(0, e);
  const int exp10 = std::stoi(s.substr(e + 1));
  digits.erase(std::remove(digits.begin(), digits.end(), '.'), digits.end());
  if (exp10 < -4 || exp10 >= 16) {
    std::string m = digits.substr(0, 1);
    if (digits.size() > 1) m += "." + digits.substr(1);
    return sign + m + fmt::format("e{}{:02d}", exp10 < 0 ? '-' : '+', std::abs(exp10));
  }
  std::string out;
  if (exp10 < 0) {
    out = "0." + std::string(size_t(-exp10 - 1), '0') + digits;
  } else if (size_t(exp10) + 1 >= digits.size()) {
    out = digits + std::string(size_t(exp10) + 1 - digits.size(), '0') + ".0";
  } else {
    out = digits.substr(0, size_t(exp10) + 1) + "." + digits.substr(size_t(exp10) + 1);
  }
  return sign + out;
}

std::string py_escape(std::string_view s) {
  std::string out;
  escape_into(s, out);
  return out;
}

ojson py_parse(std::string_view text) {
  check_json_depth(text);
  ojson j;
  PySax sax(j, true);
  try {
    ojson::sax_parse(text, &sax);
  } catch (const nlohmann::json::exception& e) {
    throw JsonInputError(json_error_reason(e));
  }
  return j;
}

std::string py_dumps(const ojson& v) {
  std::string out;
  dump(v, out);
  return out;
}

bool py_truthy(const ojson& v) {
  switch (v.type()) {
    case ojson::value_t::null: return false;
    case ojson::value_t::boolean: return v.get<bool>();
    case ojson::value_t::number_integer: return v.get<int64_t>() != 0;
    case ojson::value_t::number_unsigned: return v.get<uint64_t>() != 0;
    case ojson::value_t::number_float: return v.get<double>() != 0.0;
    case ojson::value_t::string: return !v.get_ref<const std::string&>().empty();
    case ojson::value_t::array:
    case ojson::value_t::object: return !v.empty();
    case ojson::value_t::binary: return true;  // a big integer from py_parse, never 0
    default: return false;
  }
}

}  // namespace dsinfer
