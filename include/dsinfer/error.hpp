// dsinfer — errors as values with a code and a precise message.
#pragma once
#include <stdexcept>
#include <string>

#include "dsinfer/export.hpp"

namespace dsinfer {

// Numeric values are pinned: the C ABI (dsinfer_status) uses the same numbers. Append only.
enum class ErrorCode : int {
  Ok = 0,
  InvalidArgument = 1,  // a bad parameter, flag, token id or shape supplied by the caller
  Io = 2,               // a file could not be opened, read or mapped
  Format = 3,           // a file or text is malformed (truncated shard, bad header, bad JSON)
  Unsupported = 4,      // valid input that this build does not handle (dtype, architecture)
  OutOfMemory = 5,      // an allocation or the KV cache is full
  Device = 6,           // a backend/device failure (CUDA, cuBLASLt)
  Cancelled = 7,        // the caller cancelled the operation
  Internal = 99,        // a bug in dsinfer
};

DSINFER_CXX_API const char* error_code_name(ErrorCode code) noexcept;

// Every failure inside dsinfer is thrown as an Error; the front doors turn it into a status + message.
class DSINFER_CXX_API Error : public std::runtime_error {
 public:
  Error(ErrorCode code, const std::string& message) : std::runtime_error(message), code_(code) {}
  ErrorCode code() const noexcept { return code_; }

 private:
  ErrorCode code_;
};

}  // namespace dsinfer
