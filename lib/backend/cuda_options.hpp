// The CUDA backend's options (dsinfer/cuda_options.hpp) resolved against the environment, in one place and without
// any CUDA header: create_backend applies this before it constructs the CUDA backend, which then reads only the
// resolved options (it never looks at the environment itself).
#pragma once
#include <string_view>

#include "dsinfer/cuda_options.hpp"

namespace dsinfer {

// Throws Error(InvalidArgument) naming the first field out of range (ModelLoadParams::cuda.<field>) and what it
// takes.
void check_cuda_options(const CudaOptions& o);

// Each DSINFER_CUDA_* variable that is set (non-empty) to a valid value replaces its field, with a warning in the
// log; a value that is not valid is ignored, with a warning that says what the variable takes (an environment
// meant for measurements must not stop a program from loading). device_named: the backend name gave the device
// ("cuda:N"), which wins over DSINFER_CUDA_DEVICE, so the variable is not consulted.
void apply_cuda_env_overrides(CudaOptions& o, bool device_named = false);

// The two kernel names of CudaOptions::mla_kernel and indexer_kernel.
inline constexpr std::string_view kCudaCoreKernel = "cuda-core";
inline constexpr std::string_view kTensorCoreKernel = "tensor-core";

}  // namespace dsinfer
