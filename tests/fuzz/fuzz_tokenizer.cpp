// tokenizer.json. The input up to its first NUL byte is the file (JSON cannot hold a raw NUL); what follows is text
// to encode. A loaded tokenizer must encode that text and a fixed one, and decode every id it produced.
#include <cstring>

#include "dsinfer/error.hpp"
#include "dsinfer/tokenizer.hpp"
#include "fuzz_input.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace dsinfer;
  const std::string_view in = fuzz::as_text(data, size);
  const size_t nul = in.find('\0');
  const std::string_view file = in.substr(0, nul);
  const std::string_view text = nul == std::string_view::npos ? std::string_view() : in.substr(nul + 1);
  std::unique_ptr<Tokenizer> tok;
  try {
    tok = Tokenizer::load(fuzz::write_file("tokenizer.json", file));
  } catch (const Error&) {
    return 0;
  }
  for (std::string_view t : {text, std::string_view("Hello, world! 123 <think> x\n\n  y\xc3\xa9")}) {
    try {
      const std::vector<int32_t> ids = tok->encode(t, true);
      for (int32_t id : ids)
        if (id < 0 || id >= tok->size()) __builtin_trap();  // an id outside the table would index out of bounds
      (void)tok->decode(ids, false);
      (void)tok->decode(ids, true);
    } catch (const Error&) {  // e.g. text that is not UTF-8
    }
  }
  return 0;
}
