// The demo's tools, as real code: a weather lookup over a table of cities (examples/data/weather.json, one day of
// the world the shipped model was trained in; training/make_demo_table.py writes it) and an exact integer
// calculator. Their JSON schemas are the ones the shipped model saw most in training (training/tools.py, the
// canonical variants). Used by examples/chat_with_tools.cpp.
#pragma once
#include <cmath>
#include <fstream>
#include <memory>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <stdexcept>
#include <string>

#include "dsinfer/chat.hpp"
#include "tool_loop.hpp"

namespace example {

inline const char* kDemoToolsJson = R"([
{"type": "function", "function": {"name": "get_weather", "description": "Get the current weather for a city.", "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "The city name, e.g. Paris."}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"], "description": "Temperature unit (default celsius)."}}, "required": ["city"]}}},
{"type": "function", "function": {"name": "calculate", "description": "Evaluate an arithmetic expression exactly.", "parameters": {"type": "object", "properties": {"expression": {"type": "string", "description": "An expression such as '17 + 25'."}}, "required": ["expression"]}}}
])";

// get_weather: {"city", "unit"?} -> the table's row for the city, as the training world's tool answers.
inline ToolFn weather_tool(const std::string& table_path) {
  std::ifstream f(table_path);
  if (!f) throw std::runtime_error("cannot open the weather table " + table_path);
  auto table = std::make_shared<nlohmann::json>(nlohmann::json::parse(f));
  return [table](const std::string& arguments) {
    const auto args = nlohmann::json::parse(arguments, nullptr, false);
    if (!args.is_object() || !args.contains("city") || !args["city"].is_string())
      return std::string(R"({"error": "expected {\"city\": string}"})");
    const std::string city = args["city"];
    const auto& cities = table->at("cities");
    if (!cities.contains(city)) return dsinfer::python_json_dumps(nlohmann::json({{"error", "unknown city " + city}}).dump());
    const auto& row = cities.at(city);
    nlohmann::ordered_json out = {{"city", city}, {"condition", row.at("condition")}};
    const bool fahrenheit = args.contains("unit") && args["unit"] == "fahrenheit";
    const int c = row.at("temperature_c");
    if (fahrenheit) out["temperature_f"] = int(std::lround(c * 9.0 / 5.0 + 32.0));
    else out["temperature_c"] = c;
    out["humidity"] = row.at("humidity");
    // Written as the training corpus writes tool results (Python's json.dumps: ", " and ": "), so the model reads
    // what it learned from.
    return dsinfer::python_json_dumps(out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
  };
}

// calculate: {"expression": "a op b"} with integers a, b and op one of + - * / -> {"result": n}, exact (division
// only when it has no remainder), or an error.
inline std::string calculate(const std::string& arguments) {
  const auto args = nlohmann::json::parse(arguments, nullptr, false);
  if (!args.is_object() || !args.contains("expression") || !args["expression"].is_string())
    return R"({"error": "expected {\"expression\": string}"})";
  std::istringstream in(args["expression"].get<std::string>());
  long long a = 0, b = 0;
  std::string op;
  if (!(in >> a >> op >> b) || op.size() != 1) return R"({"error": "expected 'a op b'"})";
  long long r = 0;
  bool ok = true;
  switch (op[0]) {
    case '+': ok = !__builtin_add_overflow(a, b, &r); break;
    case '-': ok = !__builtin_sub_overflow(a, b, &r); break;
    case '*': ok = !__builtin_mul_overflow(a, b, &r); break;
    case '/': ok = b != 0 && a % b == 0; r = ok ? a / b : 0; break;
    default: return R"({"error": "unknown operator"})";
  }
  if (!ok) return R"({"error": "no exact integer result"})";
  return dsinfer::python_json_dumps(nlohmann::json({{"result", r}}).dump());
}

}  // namespace example
