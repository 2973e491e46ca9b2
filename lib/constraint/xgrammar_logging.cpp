// xgrammar's logging hooks (built into the dsinfer_xgrammar target with XGRAMMAR_LOG_CUSTOMIZE=1): nothing is
// printed. A fatal message becomes an exception (xgrammar's own checks on bad input); a warning is kept for the
// compiling thread, because xgrammar reports the parts of a schema it cannot enforce (an unsupported keyword, an
// ignored length bound, a oneOf it would treat as anyOf) only as warnings, and dsinfer refuses such constraints.
#include <stdexcept>
#include <string>
#include <vector>

#include "constraint/xgrammar_logging.hpp"

namespace dsinfer::constraint_detail {
std::vector<std::string>& xgrammar_warnings() {
  thread_local std::vector<std::string> warnings;
  return warnings;
}
}  // namespace dsinfer::constraint_detail

namespace xgrammar {

[[noreturn]] void LogFatalImpl(const std::string& file, int lineno, const std::string& message) {
  throw dsinfer::constraint_detail::XgrammarFatal(message);
}

void LogMessageImpl(const std::string& file, int lineno, int level, const std::string& message) {
  if (level >= 2) dsinfer::constraint_detail::xgrammar_warnings().push_back(message);  // 2: WARNING
}

}  // namespace xgrammar
