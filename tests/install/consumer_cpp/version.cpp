// The installed headers' version against the loaded libdsinfer's, and the umbrella header's reach.
#include <cstdio>
#include <cstring>

#include <dsinfer/dsinfer.hpp>

int main() {
  if (std::strcmp(dsinfer::version_string(), DSINFER_VERSION_STRING) != 0) return 1;
  if (dsinfer::cxx_abi_version() != DSINFER_CXX_ABI_VERSION) return 2;
  // The umbrella header declares the whole API: sessions, samplers, chat encoding, tokenizers.
  dsinfer::SessionParams session_params;
  auto chain = dsinfer::make_default_chain(dsinfer::GenerationConfig{}, 1);
  dsinfer::ChatOptions chat_options;
  (void)session_params, (void)chat_options;
  std::printf("C++: dsinfer %s, C++ ABI %d, chain of %zu samplers\n", dsinfer::version_string(),
              dsinfer::cxx_abi_version(), chain->size());
  return 0;
}
