#include <fmt/format.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "dsinfer/chat.hpp"
#include "util/chat_template_file.hpp"
#include "util/json_input.hpp"

namespace dsinfer {

const char* chat_format_name(ChatFormat format) {
  switch (format) {
    case ChatFormat::DeepseekV32: return "deepseek-v3.2";
    case ChatFormat::DeepseekV32Exp: return "deepseek-v3.2-exp";
    case ChatFormat::DeepseekV3: return "deepseek-v3";
    case ChatFormat::DeepseekV31: return "deepseek-v3.1";
    case ChatFormat::DeepseekR1: return "deepseek-r1";
    case ChatFormat::Unknown: return "unknown";
  }
  return "unknown";
}

ChatFormat detect_chat_format(std::string_view model_type, std::string_view chat_template) {
  if (model_type == "deepseek_v32") {
    // V3.2 ships no chat_template (its prompt is encoding_dsv32's); V3.2-Exp, the same architecture, shipped a
    // V3.1-style template with the legacy <｜tool▁calls▁begin｜> tokens. A template that writes DSML is taken to
    // render V3.2's own format.
    if (chat_template.empty() || chat_template.find("｜DSML｜") != std::string_view::npos) return ChatFormat::DeepseekV32;
    return ChatFormat::DeepseekV32Exp;
  }
  if (model_type != "deepseek_v3") return ChatFormat::Unknown;
  // The released templates differ in how they treat reasoning: V3.1's takes a `thinking` variable (and renders
  // "<think>" or "</think>" after the assistant tag); R1's drops what precedes "</think>" in past assistant turns;
  // V3's knows neither. A deepseek_v3 checkpoint without a template is still of the V3 family.
  const bool mentions_think_end = chat_template.find("</think>") != std::string_view::npos;
  if (mentions_think_end && chat_template.find("thinking") != std::string_view::npos) return ChatFormat::DeepseekV31;
  if (mentions_think_end) return ChatFormat::DeepseekR1;
  return ChatFormat::DeepseekV3;
}

namespace {
nlohmann::json read_json_file(const std::filesystem::path& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error(ErrorCode::Io, fmt::format("cannot open {}", path.string()));
  std::ostringstream text;
  text << f.rdbuf();
  try {
    return parse_json_input(text.str());
  } catch (const JsonInputError& e) {
    throw Error(ErrorCode::Format, fmt::format("{}: {}", path.string(), e.what()));
  }
}
}  // namespace

ChatFormat checkpoint_chat_format(const std::string& dir) {
  const nlohmann::json config = read_json_file(std::filesystem::path(dir) / "config.json");
  const std::string model_type =
      config.is_object() && config.contains("model_type") && config["model_type"].is_string()
          ? config["model_type"].get<std::string>() : std::string();
  return detect_chat_format(model_type, read_chat_template(dir));
}

void check_chat_format(ChatFormat format) {
  switch (format) {
    case ChatFormat::DeepseekV32:
    case ChatFormat::Unknown: return;
    case ChatFormat::DeepseekV32Exp:
      throw Error(ErrorCode::Unsupported,
                  "this checkpoint is of the deepseek-v3.2-exp family (config.json model_type deepseek_v32 with a "
                  "tokenizer_config.json chat_template that does not write DSML), whose chat format (V3.1-style, "
                  "legacy tool-call tokens) dsinfer does not write yet; dsinfer encodes chats only in DeepSeek-V3.2's "
                  "format. Render the prompt with the checkpoint's own template and pass token ids or raw text.");
    case ChatFormat::DeepseekV3:
    case ChatFormat::DeepseekV31:
    case ChatFormat::DeepseekR1:
      throw Error(ErrorCode::Unsupported,
                  std::string("this checkpoint is of the ") + chat_format_name(format) +
                      " family (config.json model_type deepseek_v3), whose chat format (its tokenizer_config.json "
                      "chat_template) dsinfer does not write yet; dsinfer encodes chats only in DeepSeek-V3.2's "
                      "format. Render the prompt with the checkpoint's own template and pass token ids or raw text.");
  }
}

}  // namespace dsinfer
