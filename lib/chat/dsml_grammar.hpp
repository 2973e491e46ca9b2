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

}  // namespace dsinfer::dsml
