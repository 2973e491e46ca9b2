// Runs Catch2 over the executable's test cases (its implementation: tests/catch_runner.cpp).
#pragma once

namespace dsinfer::test {

int run_catch(int argc, char** argv);

}  // namespace dsinfer::test
