// Reading a checkpoint's chat_template (tokenizer_config.json): what ModelInfo::chat_template holds and what
// checkpoint_chat_format inspects, read by one function.
#pragma once
#include <string>

namespace dsinfer {

// DIR/tokenizer_config.json's chat_template: a string, or (newer transformers) a list of {"name", "template"} where
// "default" is the chat one. "" when the file or the key is absent. Errors: Error(Format) for malformed JSON.
std::string read_chat_template(const std::string& dir);

}  // namespace dsinfer
