# DSINFER_FUZZ: the fuzz targets of tests/fuzz built with libFuzzer (docs/fuzzing.md, scripts/fuzz.sh). Everything
# is instrumented for libFuzzer's coverage feedback and checked by ASan+UBSan; a UBSan report aborts, so libFuzzer
# keeps the input that caused it. Without this option the same targets build as plain corpus-replay programs.
option(DSINFER_FUZZ "Build the fuzz targets (tests/fuzz) with libFuzzer, ASan and UBSan (clang only)" OFF)
if(DSINFER_FUZZ)
  if(NOT CMAKE_CXX_COMPILER_ID MATCHES "Clang")
    message(FATAL_ERROR "DSINFER_FUZZ needs clang (libFuzzer): configure with CC=clang CXX=clang++")
  endif()
  add_compile_options(-fsanitize=address,undefined,fuzzer-no-link -fno-sanitize-recover=undefined -g1 -O1
                      -fsanitize-coverage-ignorelist=${PROJECT_SOURCE_DIR}/tests/fuzz/coverage_ignorelist.txt)
  add_compile_definitions(DSINFER_NO_MULTIVERSION)
  add_link_options(-fsanitize=address,undefined)
endif()
