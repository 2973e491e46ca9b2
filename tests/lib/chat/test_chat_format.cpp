// The chat format a checkpoint expects (lib/chat/chat_format.cpp): V3.2 is encoded, the V3 family is recognised and
// refused with its name, never prompted in V3.2's format.
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>

#include "dsinfer/chat.hpp"

using namespace dsinfer;
namespace fs = std::filesystem;

// Fragments with the features the detection reads: V3.1's template switches on `thinking` and writes </think>;
// R1's cuts past assistant content at </think>; V3's has neither.
constexpr const char* kV31Like =
    "{% if not thinking is defined %}{% set thinking = false %}{% endif %}"
    "{% if thinking %}{{'<think>'}}{% else %}{{'</think>'}}{% endif %}";
constexpr const char* kR1Like = "{% if '</think>' in content %}{% set content = content.split('</think>')[-1] %}{% endif %}";
constexpr const char* kV3Like = "{{'<｜Assistant｜>' + message['content'] + '<｜end▁of▁sentence｜>'}}";
// V3.2-Exp's V3.1-style template writes tool calls with the legacy tokens; a template for V3.2's own format would
// write DSML.
constexpr const char* kV32ExpLike =
    "{% if thinking %}{{'<think>'}}{% else %}{{'</think>'}}{% endif %}"
    "{{'<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>' + tool['function']['name'] + '<｜tool▁sep｜>'}}";
constexpr const char* kDsmlLike = "{{'<｜DSML｜function_calls>'}}";

TEST_CASE("chat format: told from model_type and chat_template", "[chat_format]") {
  CHECK(detect_chat_format("deepseek_v32", "") == ChatFormat::DeepseekV32);
  CHECK(detect_chat_format("deepseek_v32", kDsmlLike) == ChatFormat::DeepseekV32);
  CHECK(detect_chat_format("deepseek_v32", kV32ExpLike) == ChatFormat::DeepseekV32Exp);
  CHECK(std::string(chat_format_name(ChatFormat::DeepseekV32Exp)) == "deepseek-v3.2-exp");
  CHECK(detect_chat_format("deepseek_v3", "") == ChatFormat::DeepseekV3);
  CHECK(detect_chat_format("deepseek_v3", kV3Like) == ChatFormat::DeepseekV3);
  CHECK(detect_chat_format("deepseek_v3", kV31Like) == ChatFormat::DeepseekV31);
  CHECK(detect_chat_format("deepseek_v3", kR1Like) == ChatFormat::DeepseekR1);
  CHECK(detect_chat_format("llama", kV3Like) == ChatFormat::Unknown);
  CHECK(std::string(chat_format_name(ChatFormat::DeepseekR1)) == "deepseek-r1");
}

TEST_CASE("chat format: the V3 family is refused by name, V3.2 and unknown pass", "[chat_format]") {
  CHECK_NOTHROW(check_chat_format(ChatFormat::DeepseekV32));
  CHECK_NOTHROW(check_chat_format(ChatFormat::Unknown));
  for (ChatFormat f : {ChatFormat::DeepseekV3, ChatFormat::DeepseekV31, ChatFormat::DeepseekR1,
                       ChatFormat::DeepseekV32Exp}) {
    try {
      check_chat_format(f);
      FAIL("accepted " << chat_format_name(f));
    } catch (const Error& e) {
      CHECK(e.code() == ErrorCode::Unsupported);
      CHECK_THAT(e.what(), Catch::Contains(chat_format_name(f)));
    }
  }
}

TEST_CASE("chat format: from a checkpoint directory", "[chat_format]") {
  const fs::path dir = fs::temp_directory_path() / "dsinfer_test_chat_format";
  fs::create_directories(dir);
  std::ofstream(dir / "config.json") << R"({"model_type": "deepseek_v3"})";
  fs::remove(dir / "tokenizer_config.json");
  CHECK(checkpoint_chat_format(dir.string()) == ChatFormat::DeepseekV3);
  std::ofstream(dir / "tokenizer_config.json") << R"({"chat_template": "{% if '</think>' in content %}"})";
  CHECK(checkpoint_chat_format(dir.string()) == ChatFormat::DeepseekR1);
  // transformers' newer form: a list of named templates, "default" being the chat one.
  std::ofstream(dir / "tokenizer_config.json")
      << R"({"chat_template": [{"name": "tool_use", "template": "x"}, {"name": "default", "template": "{% if thinking %}</think>"}]})";
  CHECK(checkpoint_chat_format(dir.string()) == ChatFormat::DeepseekV31);
  // A named template whose name is not a string is not the default one (and no JSON library exception escapes).
  std::ofstream(dir / "tokenizer_config.json")
      << R"({"chat_template": [{"name": 5, "template": "x"}, {"name": "default", "template": "{% if thinking %}</think>"}]})";
  CHECK(checkpoint_chat_format(dir.string()) == ChatFormat::DeepseekV31);
  std::ofstream(dir / "config.json") << R"({"model_type": "deepseek_v32"})";
  CHECK(checkpoint_chat_format(dir.string()) == ChatFormat::DeepseekV32Exp);  // the V3.1-style template above
  fs::remove(dir / "tokenizer_config.json");
  CHECK(checkpoint_chat_format(dir.string()) == ChatFormat::DeepseekV32);
  std::ofstream(dir / "config.json") << "{not json";
  CHECK_THROWS_AS(checkpoint_chat_format(dir.string()), Error);
  fs::remove_all(dir);
  CHECK_THROWS_AS(checkpoint_chat_format(dir.string()), Error);
}
