// UTF-8 validation: for text that crosses an API boundary into JSON (which must be valid UTF-8), and for the
// tokenizer's byte-level pre-tokenization and streaming decoder.
#pragma once
#include <cstddef>
#include <string_view>

namespace dsinfer {

// Length of the well-formed UTF-8 sequence starting at s[i] (Unicode Table 3-7: overlong forms, surrogates and code
// points above U+10FFFF are ill-formed), or 0 if it is ill-formed or cut off by the end of s. With `valid_prefix`,
// also reports how many bytes from i form a valid (possibly unfinished) prefix of a sequence.
size_t utf8_sequence(std::string_view s, size_t i, size_t* valid_prefix = nullptr);

// The offset of the first byte that does not start a well-formed UTF-8 sequence, or std::string_view::npos when `s`
// is valid.
size_t find_invalid_utf8(std::string_view s);

}  // namespace dsinfer
