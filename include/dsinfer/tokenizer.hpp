// dsinfer — Hugging Face tokenizer.json (byte-level BPE, the DeepSeek family's configuration).
#pragma once
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "dsinfer/export.hpp"
#include "dsinfer/error.hpp"

namespace dsinfer {

// A loaded tokenizer. Immutable after load: encode/decode are const and safe to call from many threads at once
// (the internal BPE cache is guarded by a mutex).
class DSINFER_CXX_API Tokenizer {
 public:
  // Loads `path`/tokenizer.json (+ tokenizer_config.json beside it when present) or the tokenizer.json file itself.
  // Errors: Io (missing file), Format (malformed JSON or fields; the message names the file and field),
  // Unsupported (a model/normalizer/pre-tokenizer/decoder type this library does not implement, named).
  static std::unique_ptr<Tokenizer> load(const std::string& path);
  ~Tokenizer();

  // Token ids of `text` (UTF-8), equal to the tokenizers library's encode(text, add_special_tokens).ids.
  // Added/special tokens in the text are matched first (leftmost-longest, honouring their lstrip, rstrip,
  // single_word and normalized flags) and never split; the text between goes through the pre-tokenizer and BPE.
  // add_special_tokens applies tokenizer.json's post-processor (DeepSeek's prepends BOS); tokenizer_config.json's
  // add_bos_token is reported by add_bos_token() and not applied here (DeepSeek's chat encoder writes BOS itself).
  // Threads: safe to call concurrently.
  // Errors: InvalidArgument for text that is not valid UTF-8 (the message gives the byte offset).
  std::vector<int32_t> encode(std::string_view text, bool add_special_tokens = false) const;

  // Text of `ids`; bytes that do not form valid UTF-8 become U+FFFD (as the tokenizers library does).
  // Threads: safe to call concurrently.
  // Errors: InvalidArgument for an id < 0 or >= size() (models pad their embedding beyond the tokenizer).
  std::string decode(std::span<const int32_t> ids, bool skip_special_tokens = false) const;

  int64_t size() const;                            // vocabulary + added tokens
  int32_t token_to_id(std::string_view token) const;  // -1 if unknown
  std::string id_to_token(int32_t id) const;       // throws InvalidArgument for an id outside [0, size())
  bool is_special(int32_t id) const;
  int32_t bos_id() const;                          // from tokenizer_config.json; -1 if none
  int32_t eos_id() const;                          // -1 if none
  bool add_bos_token() const;                      // tokenizer_config.json "add_bos_token"

  // The raw bytes token `id` decodes to (before UTF-8 validation); used by the streaming Detokenizer.
  std::string token_bytes(int32_t id) const;

  // A number no other Tokenizer object of this process has had: a key for caches built from one tokenizer (the
  // constraint compiler's vocabulary index), which an address is not once a tokenizer is freed.
  uint64_t instance_id() const;

 private:
  struct Impl;
  explicit Tokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Streaming detokenization: feed ids one at a time, get back the text they completed. Never returns half a UTF-8
// character; the concatenation of every push() and finish() equals Tokenizer::decode of all the ids.
// Borrows the tokenizer (it must outlive this object). Use from one thread at a time.
class DSINFER_CXX_API Detokenizer {
 public:
  explicit Detokenizer(const Tokenizer& tok, bool skip_special_tokens = false);
  std::string push(int32_t id);  // throws InvalidArgument for an id outside [0, size())
  std::string finish();          // flushes bytes still waiting for the rest of a character (as U+FFFD)

 private:
  const Tokenizer& tok_;
  bool skip_special_;
  std::string pending_;
};

// Replaces every maximal ill-formed subsequence with U+FFFD (the Unicode "substitution of maximal subparts"
// practice, which Rust's String::from_utf8_lossy and so the tokenizers library follow).
DSINFER_CXX_API std::string utf8_lossy(std::string_view bytes);

}  // namespace dsinfer
