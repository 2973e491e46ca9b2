// The literal pieces of DeepSeek-V3.2's prompt and DSML tool-call format (spec §10), shared by the encoder, the
// completion parser and the streaming parser.
#pragma once
#include <string_view>

namespace dsinfer::dsml {

inline constexpr std::string_view kBos = "<｜begin▁of▁sentence｜>";
inline constexpr std::string_view kEos = "<｜end▁of▁sentence｜>";
inline constexpr std::string_view kThinkStart = "<think>";
inline constexpr std::string_view kThinkEnd = "</think>";
inline constexpr std::string_view kDsml = "｜DSML｜";
inline constexpr std::string_view kUser = "<｜User｜>";
inline constexpr std::string_view kAssistant = "<｜Assistant｜>";
inline constexpr std::string_view kFunctionCallsBegin = "<｜DSML｜function_calls>";
inline constexpr std::string_view kFunctionCallsEnd = "</｜DSML｜function_calls>";
inline constexpr std::string_view kToolCallsStart = "\n\n<｜DSML｜function_calls";  // what a completion emits
inline constexpr std::string_view kInvokeOpen = "<｜DSML｜invoke";
inline constexpr std::string_view kInvokeClose = "</｜DSML｜invoke";
inline constexpr std::string_view kParameterOpen = "<｜DSML｜parameter";
inline constexpr std::string_view kParameterCloseTail = "/｜DSML｜parameter";  // the parser reads up to this
inline constexpr std::string_view kFunctionResultsBegin = "<function_results>";
inline constexpr std::string_view kFunctionResultsEnd = "</function_results>";

// Where the strict parser (parse_completion) and the streaming one (ChatStreamParser) read the format more narrowly
// than DeepSeek's parser, so that both accept exactly the same completions (the list is in include/dsinfer/chat.hpp,
// at parse_completion). DeepSeek's regexes let a name run over '">\n' and the next marker, take any Unicode
// space before name=, and drop a newline before </｜DSML｜parameter; a stream cannot decide those without waiting
// for the end of the invocation, and none of them is what the model was trained to write.

// The whitespace allowed between "<｜DSML｜invoke" and "name=": ASCII only (the model writes one space; DeepSeek's
// "\s*" would also take Unicode spaces).
inline bool is_invoke_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

// Why a tool or parameter name cannot be read back from DSML, or nullptr when it can. DSML writes names between
// quotes without escaping, so a quote or a line break in a name is the model leaving the format, and ｜DSML｜ inside
// one is a marker, as it is inside content.
inline const char* dsml_name_problem(std::string_view name) {
  if (name.find('"') != std::string_view::npos) return "a quote";
  if (name.find('\n') != std::string_view::npos) return "a line break";
  if (name.find(kDsml) != std::string_view::npos) return "\"｜DSML｜\"";
  return nullptr;
}

}  // namespace dsinfer::dsml
