// The main of the CPU test executables.
#include "catch_runner.hpp"

int main(int argc, char** argv) { return dsinfer::test::run_catch(argc, argv); }
