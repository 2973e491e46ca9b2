# xgrammar's C++ core (the grammar engine behind constrained decoding, lib/constraint), built from its source
# distribution on PyPI: a pinned version checked by sha256. The sdist carries everything the core needs (its
# sources, picojson, dlpack); the Python bindings and their tvm-ffi dependency are not built.
#
# Where the tarball comes from, in order: -DDSINFER_XGRAMMAR_SDIST=FILE; .deps/ in the source tree (shared by every
# build folder and by `pip install .`); else `python3 -m pip download` into .deps/ (the ordinary PyPI client).
set(DSINFER_XGRAMMAR_VERSION 0.2.8)
set(DSINFER_XGRAMMAR_SHA256 8305646fd2b319d6c3003f51a1665e54cbbe9cba1fb636bc41d0b46434ccbb80)
set(DSINFER_XGRAMMAR_SDIST "" CACHE FILEPATH "xgrammar-${DSINFER_XGRAMMAR_VERSION}.tar.gz (empty: use .deps/ or pip)")

set(_xg_name xgrammar-${DSINFER_XGRAMMAR_VERSION})
set(_xg_tarball "${DSINFER_XGRAMMAR_SDIST}")
if(NOT _xg_tarball)
  set(_xg_tarball "${PROJECT_SOURCE_DIR}/.deps/${_xg_name}.tar.gz")
  if(NOT EXISTS "${_xg_tarball}")
    find_package(Python3 REQUIRED COMPONENTS Interpreter)
    message(STATUS "Downloading ${_xg_name}.tar.gz from PyPI with pip")
    execute_process(
      COMMAND "${Python3_EXECUTABLE}" -m pip download --quiet --no-deps --no-binary xgrammar
              "xgrammar==${DSINFER_XGRAMMAR_VERSION}" -d "${PROJECT_SOURCE_DIR}/.deps"
      RESULT_VARIABLE _xg_rc ERROR_VARIABLE _xg_err)
    if(NOT _xg_rc EQUAL 0 OR NOT EXISTS "${_xg_tarball}")
      message(FATAL_ERROR "Could not download ${_xg_name}.tar.gz with pip (${_xg_err}). Fetch it with\n"
                          "  pip download --no-deps --no-binary xgrammar xgrammar==${DSINFER_XGRAMMAR_VERSION} -d .deps\n"
                          "or pass -DDSINFER_XGRAMMAR_SDIST=/path/to/${_xg_name}.tar.gz")
    endif()
  endif()
endif()
file(SHA256 "${_xg_tarball}" _xg_sha)
if(NOT _xg_sha STREQUAL DSINFER_XGRAMMAR_SHA256)
  message(FATAL_ERROR "${_xg_tarball}: sha256 ${_xg_sha}, expected ${DSINFER_XGRAMMAR_SHA256}")
endif()

# The patched sources are extracted once per tarball and patch level: beside the tarball in .deps/ (shared by every
# build folder and by `pip install .`, so that a compiler cache can reuse xgrammar's objects across them, as
# scripts/test.sh does with ccache), or in the build folder for a tarball given with DSINFER_XGRAMMAR_SDIST. They are
# extracted under a temporary name and renamed when complete, so builds configured at once never see half a tree.
set(_xg_patch_level 2)  # raise it when the patches below change
if(DSINFER_XGRAMMAR_SDIST)
  set(_xg_root "${PROJECT_BINARY_DIR}/_deps/${_xg_name}-dsinfer${_xg_patch_level}")
else()
  set(_xg_root "${PROJECT_SOURCE_DIR}/.deps/${_xg_name}-dsinfer${_xg_patch_level}")
endif()
if(NOT EXISTS "${_xg_root}")
  string(RANDOM LENGTH 8 _xg_tag)
  set(_xg_tmp "${_xg_root}.tmp-${_xg_tag}")
  file(ARCHIVE_EXTRACT INPUT "${_xg_tarball}" DESTINATION "${_xg_tmp}")
  set(_xg_src "${_xg_tmp}/${_xg_name}")
  # Fixes found by tests/lib/constraint and tests/python/test_constraint.py, applied to the extracted sources (each
  # must be found, so a new version cannot pass through silently).
  function(_xg_patch file old new)
    file(READ "${_xg_src}/${file}" text)
    string(FIND "${text}" "${old}" at)
    if(at EQUAL -1)
      message(FATAL_ERROR "${_xg_src}/${file}: the text to patch was not found:\n${old}")
    endif()
    string(REPLACE "${old}" "${new}" text "${text}")
    file(WRITE "${_xg_src}/${file}" "${text}")
  endfunction()
  # 1. A string with minLength/maxLength allowed raw control characters U+0000-U+001F, which JSON forbids (the
  #    unbounded string rule excludes them).
  _xg_patch(cpp/json_schema_converter.cc
    [=[builder_.AddCharacterClass({{'"', '"'}, {'\\', '\\'}, {'\r', '\r'}, {'\n', '\n'}}, true);
      int32_t body = Repeat(]=]
    [=[builder_.AddCharacterClass({{0, 0x1f}, {'"', '"'}, {'\\', '\\'}, {'\r', '\r'}, {'\n', '\n'}}, true);
      int32_t body = Repeat(]=])
  # 2, 3. Character classes accepted the UTF-8 encodings of the UTF-16 surrogates U+D800-U+DFFF (ED A0..BF xx), which
  #    are not characters: the output was not valid UTF-8. Both places that turn codepoint ranges into byte edges
  #    (grammar rules, regexes) now leave them out.
  _xg_patch(cpp/grammar_functor.cc
    [=[void GrammarFSMBuilderImpl::AddCodepointRange(int from, int to, uint32_t low, uint32_t high) {
]=]
    [=[void GrammarFSMBuilderImpl::AddCodepointRange(int from, int to, uint32_t low, uint32_t high) {
  if (low <= 0xDFFF && high >= 0xD800) {  // dsinfer: surrogates are not characters
    if (low < 0xD800) AddCodepointRange(from, to, low, 0xD7FF);
    if (high > 0xDFFF) AddCodepointRange(from, to, 0xE000, high);
    return;
  }
]=])
  _xg_patch(cpp/fsm_builder.cc
    [=[    FSM* fsm, int from, int to, const std::vector<CodepointRange>& ranges
) {
  for (const auto& [low, high] : ranges) {]=]
    [=[    FSM* fsm, int from, int to, const std::vector<CodepointRange>& ranges_in
) {
  std::vector<CodepointRange> ranges;  // dsinfer: without the surrogates, which are not characters
  for (const auto& [lo, hi] : ranges_in) {
    if (lo <= 0xDFFF && hi >= 0xD800) {
      if (lo < 0xD800) ranges.push_back({lo, 0xD7FF});
      if (hi > 0xDFFF) ranges.push_back({0xE000, hi});
    } else {
      ranges.push_back({lo, hi});
    }
  }
  for (const auto& [low, high] : ranges) {]=])
  file(RENAME "${_xg_src}" "${_xg_root}" RESULT _xg_renamed)  # (fails harmlessly when another build was first)
  file(REMOVE_RECURSE "${_xg_tmp}")
endif()

file(GLOB _xg_sources "${_xg_root}/cpp/*.cc" "${_xg_root}/cpp/support/*.cc" "${_xg_root}/cpp/converter_ext/*.cc")
# Our logging hooks are part of the target (XGRAMMAR_LOG_CUSTOMIZE): xgrammar prints nothing, its fatal checks throw
# and its warnings are collected (lib/constraint/xgrammar_logging.cpp).
add_library(dsinfer_xgrammar STATIC ${_xg_sources} "${PROJECT_SOURCE_DIR}/lib/constraint/xgrammar_logging.cpp")
# Its own language level and no warnings of ours (it is not our code); -O2 like the rest of the release build.
set_target_properties(dsinfer_xgrammar PROPERTIES CXX_STANDARD 17 POSITION_INDEPENDENT_CODE ON)
target_compile_options(dsinfer_xgrammar PRIVATE -w)
# Sanitizer builds (scripts/test.sh): under AddressSanitizer xgrammar stays instrumented (hostile schemas reach it)
# but without debug info, a fifth of its compile time there (reports still name its functions); under
# ThreadSanitizer it is not instrumented at all: no test of that build compiles a grammar, and instrumented it
# compiled in 1.8x the time.
if(DSINFER_ASAN)
  target_compile_options(dsinfer_xgrammar PRIVATE -g0)
endif()
if(DSINFER_TSAN)
  target_compile_options(dsinfer_xgrammar PRIVATE -fno-sanitize=thread -g0)
endif()
target_compile_definitions(dsinfer_xgrammar PUBLIC XGRAMMAR_ENABLE_CPPTRACE=0 XGRAMMAR_ENABLE_INTERNAL_CHECK=0
                                                   XGRAMMAR_LOG_CUSTOMIZE=1)
target_include_directories(dsinfer_xgrammar SYSTEM PUBLIC "${_xg_root}/include" "${_xg_root}/3rdparty/picojson"
                                                          "${_xg_root}/3rdparty/dlpack/include")
target_include_directories(dsinfer_xgrammar PRIVATE "${PROJECT_SOURCE_DIR}/lib")
target_link_libraries(dsinfer_xgrammar PUBLIC Threads::Threads)
