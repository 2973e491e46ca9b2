// dsinfer — DSINFER_CXX_API marks what libdsinfer.so exports: the classes and functions of the public C++ API.
// The library is compiled with hidden visibility, so everything else (the core under lib/, xgrammar, fmt) stays
// private to it; docs/abi.md says what the C++ ABI promises.
#pragma once

// The C++ API uses C++20 (std::span among others); say so instead of failing deep inside a
// header. C programs use the C API instead: <dsinfer.h> and libdsinfer_c.
#if (defined(_MSVC_LANG) && _MSVC_LANG < 202002L) || (!defined(_MSVC_LANG) && __cplusplus < 202002L)
#error "dsinfer's C++ API needs C++20: compile with -std=c++20 (CMake: dsinfer::dsinfer requires cxx_std_20)"
#endif

#if defined(_WIN32)
#define DSINFER_CXX_API
#else
#define DSINFER_CXX_API __attribute__((visibility("default")))
#endif
