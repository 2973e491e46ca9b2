#include "backend/cuda_options.hpp"

#include <charconv>
#include <climits>
#include <cstdlib>
#include <string>

#include "dsinfer/error.hpp"
#include "util/json_input.hpp"
#include "util/log.hpp"

namespace dsinfer {
namespace {

bool is_kernel_name(const std::string& s) { return s == kCudaCoreKernel || s == kTensorCoreKernel; }

// The whole of s as a decimal integer in [lo, hi], else false.
bool parse_int(std::string_view s, int64_t lo, int64_t hi, int64_t* out) {
  int64_t v = 0;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size() || v < lo || v > hi) return false;
  *out = v;
  return true;
}

// The variable's value when set and non-empty, else nullptr.
const char* env_value(const char* name) {
  const char* v = std::getenv(name);
  return v && *v ? v : nullptr;
}

void log_override(const char* var, const char* value, const char* field, const std::string& option_value) {
  log_fmt(LogLevel::Warn, "cuda option {} = {} overridden by {}={}", field, option_value, var, value);
}

void log_ignored(const char* var, const char* value, const std::string& takes) {
  log_fmt(LogLevel::Warn, "{}={} ignored: it takes {}", var, excerpt(value), takes);
}

// The kernel name a variable's value stands for ("" if none): the option's names, or the variable's historical
// abbreviation for the tensor-core kernel.
std::string kernel_from_env(std::string_view v, std::string_view tensor_core_alias) {
  if (v == kCudaCoreKernel || v == kTensorCoreKernel) return std::string(v);
  if (v == tensor_core_alias) return std::string(kTensorCoreKernel);
  return "";
}

void override_bool(const char* var, const char* field, bool& value) {
  const char* e = env_value(var);
  if (!e) return;
  const std::string_view v(e);
  if (v != "0" && v != "1") return log_ignored(var, e, "0 or 1");
  log_override(var, e, field, value ? "true" : "false");
  value = v == "1";
}

void override_kernel(const char* var, const char* field, std::string_view tensor_core_alias, std::string& value) {
  const char* e = env_value(var);
  if (!e) return;
  const std::string k = kernel_from_env(e, tensor_core_alias);
  if (k.empty())
    return log_ignored(var, e, "cuda-core, tensor-core or " + std::string(tensor_core_alias));
  log_override(var, e, field, value);
  value = k;
}

}  // namespace

void check_cuda_options(const CudaOptions& o) {
  if (o.device < 0)
    throw Error(ErrorCode::InvalidArgument,
                "ModelLoadParams::cuda.device must be a device ordinal >= 0, got " + std::to_string(o.device));
  if (o.small_m_max < 0 || o.small_m_max > CudaOptions::kMaxSmallM)
    throw Error(ErrorCode::InvalidArgument, "ModelLoadParams::cuda.small_m_max must be 0 to " +
                                                std::to_string(CudaOptions::kMaxSmallM) + ", got " +
                                                std::to_string(o.small_m_max));
  if (!is_kernel_name(o.mla_kernel))
    throw Error(ErrorCode::InvalidArgument,
                "ModelLoadParams::cuda.mla_kernel must be cuda-core or tensor-core, not \"" + excerpt(o.mla_kernel) +
                    "\"");
  if (!is_kernel_name(o.indexer_kernel))
    throw Error(ErrorCode::InvalidArgument, "ModelLoadParams::cuda.indexer_kernel must be cuda-core or tensor-core, "
                                            "not \"" + excerpt(o.indexer_kernel) + "\"");
}

void apply_cuda_env_overrides(CudaOptions& o, bool device_named) {
  if (const char* e = env_value("DSINFER_CUDA_DEVICE"); e && !device_named) {
    int64_t v = 0;
    if (!parse_int(e, 0, INT_MAX, &v)) {
      log_ignored("DSINFER_CUDA_DEVICE", e, "a device ordinal >= 0");
    } else {
      log_override("DSINFER_CUDA_DEVICE", e, "device", std::to_string(o.device));
      o.device = int(v);
    }
  }
  if (const char* e = env_value("DSINFER_CUDA_SMALL_M")) {
    int64_t v = 0;
    if (!parse_int(e, 0, CudaOptions::kMaxSmallM, &v)) {
      log_ignored("DSINFER_CUDA_SMALL_M", e, "0 to " + std::to_string(CudaOptions::kMaxSmallM));
    } else {
      log_override("DSINFER_CUDA_SMALL_M", e, "small_m_max", std::to_string(o.small_m_max));
      o.small_m_max = v;
    }
  }
  override_bool("DSINFER_CUDA_MMA", "small_m_tensor_cores", o.small_m_tensor_cores);
  override_bool("DSINFER_CUDA_LT_FP8", "cublaslt_fp8", o.cublaslt_fp8);
  override_kernel("DSINFER_CUDA_MLA_KERNEL", "mla_kernel", "tc", o.mla_kernel);
  override_kernel("DSINFER_CUDA_INDEXER_KERNEL", "indexer_kernel", "mma", o.indexer_kernel);
}

}  // namespace dsinfer
