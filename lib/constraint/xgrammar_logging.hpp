// What xgrammar said while compiling (see xgrammar_logging.cpp). Private to lib/constraint.
#pragma once
#include <stdexcept>
#include <string>
#include <vector>

namespace dsinfer::constraint_detail {
// A failed check inside xgrammar (XGRAMMAR_CHECK / LOG(FATAL)).
struct XgrammarFatal : std::runtime_error {
  using std::runtime_error::runtime_error;
};
// The warnings xgrammar logged on this thread since they were last cleared.
std::vector<std::string>& xgrammar_warnings();
}  // namespace dsinfer::constraint_detail
