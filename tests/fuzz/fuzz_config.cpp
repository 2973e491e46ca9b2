// config.json: every input either parses into a config whose sizes are within the documented bounds, or is refused
// with dsinfer::Error.
#include "checkpoint/hf_config.hpp"
#include "dsinfer/error.hpp"
#include "fuzz_input.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace dsinfer;
  try {
    const ModelConfig c = parse_hf_config_text(std::string(fuzz::as_text(data, size)), "config.json");
    // What the forward pass multiplies must not overflow (the bounds of docs/errors.md).
    if (c.vocab_size <= 0 || c.vocab_size > kMaxConfigDim || c.hidden_size > kMaxConfigDim ||
        c.num_hidden_layers > kMaxConfigDim || c.n_routed_experts > kMaxConfigDim)
      __builtin_trap();
    volatile int64_t sink = c.qk_head_dim() * c.num_attention_heads * c.hidden_size;
    (void)sink;
  } catch (const Error&) {
  }
  return 0;
}
