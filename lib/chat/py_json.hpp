// JSON text exactly as Python's json.dumps(value, ensure_ascii=False) writes it: the official DeepSeek encoder
// renders tool schemas, response formats and non-string tool arguments that way, so the prompt depends on it.
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

namespace dsinfer {

using ojson = nlohmann::ordered_json;  // keeps object keys in document order, as Python dicts do

// Parses JSON text as Python's json.loads sees it, for what json.dumps will print: integers too large for 64 bits
// keep their digits (Python ints are unbounded; nlohmann would round them to a double) and come back as a binary
// value that py_dumps prints verbatim. Nesting is bounded as for every JSON input (util/json_input.hpp).
// Errors: JsonInputError (syntax, a number out of range such as 1e400, nesting deeper than kMaxJsonDepth).
ojson py_parse(std::string_view text);
std::string py_dumps(const ojson& v);
// The inside of a JSON string as json.dumps writes it (no surrounding quotes); works on any byte chunk, so a
// string can be escaped piece by piece as it streams.
std::string py_escape(std::string_view s);
std::string py_float_repr(double x);  // repr(float): shortest round-trip digits, Python's layout
// Whether `text` is one JSON value (RFC 8259: no NaN or Infinity, numbers finite as doubles; any nesting, since
// nothing is built): what a DSML parameter with string="false" must hold, checked the same way by both completion
// parsers.
inline bool is_json_value(std::string_view text) { return ojson::accept(text); }
// Python's truthiness of a JSON value: null, false, 0, 0.0, "", [] and {} are false.
bool py_truthy(const ojson& v);

}  // namespace dsinfer
