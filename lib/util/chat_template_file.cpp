#include "util/chat_template_file.hpp"

#include <fmt/format.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "dsinfer/error.hpp"
#include "util/json_input.hpp"

namespace dsinfer {

std::string read_chat_template(const std::string& dir) {
  const auto path = std::filesystem::path(dir) / "tokenizer_config.json";
  if (!std::filesystem::exists(path)) return {};
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error(ErrorCode::Io, fmt::format("cannot open {}", path.string()));
  std::ostringstream text;
  text << f.rdbuf();
  nlohmann::json j;
  try {
    j = parse_json_input(text.str());
  } catch (const JsonInputError& e) {
    throw Error(ErrorCode::Format, fmt::format("{}: {}", path.string(), e.what()));
  }
  if (!j.is_object() || !j.contains("chat_template")) return {};
  const nlohmann::json& t = j["chat_template"];
  if (t.is_string()) return t.get<std::string>();
  if (t.is_array())
    for (const auto& e : t)
      if (e.is_object() && e.contains("name") && e["name"] == "default" && e.contains("template") &&
          e["template"].is_string())
        return e["template"].get<std::string>();
  return {};
}

}  // namespace dsinfer
