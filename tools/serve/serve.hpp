// `dsinfer serve`: an OpenAI-compatible HTTP server over the public C++ API.
#pragma once

namespace dsinfer::serve {
// argv[0] is "serve"; returns the process exit code (0 after a clean SIGTERM/SIGINT drain, 2 for usage errors).
int main(int argc, char** argv);
}  // namespace dsinfer::serve
