// dsinfer — the version of the headers (DSINFER_VERSION_* macros, generated from CMake's project(VERSION)) and of
// the library actually loaded at run time.
#pragma once
#include "dsinfer/export.hpp"
#include "dsinfer/version.h"

namespace dsinfer {

// The loaded library's version text ("0.1.0"); equals DSINFER_VERSION_STRING when headers and library match.
DSINFER_CXX_API const char* version_string() noexcept;
// The loaded library's C++ ABI version (the number in libdsinfer.so.N); compare with DSINFER_CXX_ABI_VERSION.
DSINFER_CXX_API int cxx_abi_version() noexcept;

}  // namespace dsinfer
