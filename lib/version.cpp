// The library's version at run time, from the same generated header the public headers carry.
#include "dsinfer/version.hpp"

namespace dsinfer {

const char* version_string() noexcept { return DSINFER_VERSION_STRING; }
int cxx_abi_version() noexcept { return DSINFER_CXX_ABI_VERSION; }

}  // namespace dsinfer
