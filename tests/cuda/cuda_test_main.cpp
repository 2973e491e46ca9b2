// The main of the Catch2 CUDA test executables (test_cuda_*.cpp): skip (exit 77, a CTest skip) without a device,
// else run Catch2 (its implementation: tests/catch_runner.cpp, shared with the CPU tests).
#include <string>

#include "catch_runner.hpp"
#include "cuda_test_util.hpp"

int main(int argc, char** argv) {
  const std::string path = argc > 0 ? argv[0] : "test";
  const std::string name = path.substr(path.find_last_of('/') + 1);
  if (const int rc = dsinfer::cuda_test::skip_without_device(name.c_str())) return rc;
  return dsinfer::test::run_catch(argc, argv);
}
