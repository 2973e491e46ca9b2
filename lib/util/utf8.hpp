// UTF-8 validation for text that crosses an API boundary into JSON (which must be valid UTF-8).
#pragma once
#include <cstddef>
#include <string_view>

namespace dsinfer {

// The offset of the first byte that does not start a well-formed UTF-8 sequence (overlong forms, surrogates and
// code points above U+10FFFF are ill-formed), or std::string_view::npos when `s` is valid.
size_t find_invalid_utf8(std::string_view s);

}  // namespace dsinfer
