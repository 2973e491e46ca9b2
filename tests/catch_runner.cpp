// Catch2's implementation (its runner, reporters, matchers), without a main: one object shared by every test
// executable, the CPU ones (test_main.cpp) and the CUDA ones (tests/cuda/cuda_test_main.cpp). It is most of a test
// executable's compile time, so tests/CMakeLists.txt compiles it without optimization: how fast Catch2 itself runs
// does not matter, the code under test is compiled as everywhere else.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include "catch_runner.hpp"

int dsinfer::test::run_catch(int argc, char** argv) { return Catch::Session().run(argc, argv); }
