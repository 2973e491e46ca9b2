// ModelLoadParams::cuda (lib/backend/cuda_options.cpp): the checks of the option values, and the DSINFER_CUDA_*
// environment variables overriding them (valid values win with a warning, invalid ones are ignored with a warning).
// Needs no GPU: this is the CPU-side resolution the CUDA backend receives.
#include <catch2/catch.hpp>

#include <cstdlib>
#include <string>
#include <vector>

#include "backend/backend.hpp"
#include "backend/cuda_options.hpp"
#include "dsinfer/error.hpp"
#include "dsinfer/log.hpp"

using namespace dsinfer;

namespace {

const char* const kVars[] = {"DSINFER_CUDA_DEVICE",     "DSINFER_CUDA_SMALL_M",    "DSINFER_CUDA_MMA",
                             "DSINFER_CUDA_LT_FP8",     "DSINFER_CUDA_MLA_KERNEL", "DSINFER_CUDA_INDEXER_KERNEL"};

// Clears the variables on entry and exit, and records the warnings logged meanwhile.
struct CleanEnv {
  std::vector<std::string> warnings;
  CleanEnv() {
    for (const char* v : kVars) unsetenv(v);
    set_log_callback([this](LogLevel level, std::string_view m) {
      if (level == LogLevel::Warn) warnings.emplace_back(m);
    }, LogLevel::Warn);
  }
  ~CleanEnv() {
    set_log_callback(nullptr, LogLevel::Off);
    for (const char* v : kVars) unsetenv(v);
  }
  bool warned(std::string_view needle) const {
    for (const auto& w : warnings)
      if (w.find(needle) != std::string::npos) return true;
    return false;
  }
};

std::string check_message(const CudaOptions& o) {
  try {
    check_cuda_options(o);
  } catch (const Error& e) {
    CHECK(e.code() == ErrorCode::InvalidArgument);
    return e.what();
  }
  return "";
}

bool same(const CudaOptions& a, const CudaOptions& b) {
  return a.device == b.device && a.small_m_max == b.small_m_max && a.small_m_tensor_cores == b.small_m_tensor_cores &&
         a.cublaslt_fp8 == b.cublaslt_fp8 && a.mla_kernel == b.mla_kernel && a.indexer_kernel == b.indexer_kernel;
}

}  // namespace

TEST_CASE("cuda options: the defaults pass, each field out of range is named", "[cuda_options]") {
  CHECK(check_message(CudaOptions{}).empty());
  CudaOptions o;
  o.device = -1;
  CHECK(check_message(o).find("cuda.device") != std::string::npos);
  o = {};
  o.small_m_max = -1;
  CHECK(check_message(o).find("cuda.small_m_max must be 0 to 4096") != std::string::npos);
  o.small_m_max = CudaOptions::kMaxSmallM + 1;
  CHECK(check_message(o).find("cuda.small_m_max") != std::string::npos);
  o.small_m_max = CudaOptions::kMaxSmallM;
  CHECK(check_message(o).empty());
  o.small_m_max = 0;
  CHECK(check_message(o).empty());
  o = {};
  o.mla_kernel = "tc";  // the environment's abbreviation is not an option value
  CHECK(check_message(o).find("cuda.mla_kernel must be cuda-core or tensor-core, not \"tc\"") != std::string::npos);
  o.mla_kernel = "tensor-core";
  CHECK(check_message(o).empty());
  o.indexer_kernel = "fp8-mma";
  CHECK(check_message(o).find("cuda.indexer_kernel") != std::string::npos);
  o.indexer_kernel = "tensor-core";
  CHECK(check_message(o).empty());
}

TEST_CASE("cuda options: a refused value is quoted cut short and as text", "[cuda_options]") {
  CudaOptions o;
  o.indexer_kernel = std::string(100000, 'x') + "\xff";
  const std::string m = check_message(o);
  CHECK(m.find("cuda.indexer_kernel") != std::string::npos);
  CHECK(m.size() < 400);  // the value is quoted as an excerpt, not whole
  o = CudaOptions{};
  o.mla_kernel = "t\xff" "c";
  CHECK(check_message(o).find("t\uFFFDc") != std::string::npos);  // invalid UTF-8 never reaches a message
}

TEST_CASE("cuda options: without the variables, the options pass through unchanged", "[cuda_options]") {
  CleanEnv env;
  CudaOptions o;
  o.device = 3;
  o.small_m_max = 17;
  o.small_m_tensor_cores = false;
  o.mla_kernel = "tensor-core";
  const CudaOptions before = o;
  apply_cuda_env_overrides(o);
  CHECK(same(o, before));
  CHECK(env.warnings.empty());
  setenv("DSINFER_CUDA_SMALL_M", "", 1);  // empty counts as unset
  apply_cuda_env_overrides(o);
  CHECK(same(o, before));
  CHECK(env.warnings.empty());
}

TEST_CASE("cuda options: each variable overrides its field, with a warning", "[cuda_options]") {
  CleanEnv env;
  setenv("DSINFER_CUDA_DEVICE", "2", 1);
  setenv("DSINFER_CUDA_SMALL_M", "128", 1);
  setenv("DSINFER_CUDA_MMA", "0", 1);
  setenv("DSINFER_CUDA_LT_FP8", "0", 1);
  setenv("DSINFER_CUDA_MLA_KERNEL", "tc", 1);
  setenv("DSINFER_CUDA_INDEXER_KERNEL", "mma", 1);
  CudaOptions o;
  apply_cuda_env_overrides(o);
  CHECK(o.device == 2);
  CHECK(o.small_m_max == 128);
  CHECK(!o.small_m_tensor_cores);
  CHECK(!o.cublaslt_fp8);
  CHECK(o.mla_kernel == "tensor-core");
  CHECK(o.indexer_kernel == "tensor-core");
  CHECK(env.warnings.size() == 6);
  CHECK(env.warned("cuda option small_m_max = 16 overridden by DSINFER_CUDA_SMALL_M=128"));
  CHECK(env.warned("DSINFER_CUDA_MLA_KERNEL=tc"));
  CHECK(check_message(o).empty());  // what the environment gives is always a valid option

  // The option's own names work too, and a variable can switch a field back on.
  setenv("DSINFER_CUDA_MMA", "1", 1);
  setenv("DSINFER_CUDA_LT_FP8", "1", 1);
  setenv("DSINFER_CUDA_MLA_KERNEL", "cuda-core", 1);
  setenv("DSINFER_CUDA_INDEXER_KERNEL", "tensor-core", 1);
  CudaOptions p;
  p.small_m_tensor_cores = false;
  p.cublaslt_fp8 = false;
  p.mla_kernel = "tensor-core";
  apply_cuda_env_overrides(p);
  CHECK(p.small_m_tensor_cores);
  CHECK(p.cublaslt_fp8);
  CHECK(p.mla_kernel == "cuda-core");
  CHECK(p.indexer_kernel == "tensor-core");

  // "cuda:N" names the device: DSINFER_CUDA_DEVICE is not consulted.
  CudaOptions q;
  apply_cuda_env_overrides(q, /*device_named=*/true);
  CHECK(q.device == 0);
}

TEST_CASE("cuda options: an invalid value in the environment is ignored with a warning", "[cuda_options]") {
  CleanEnv env;
  setenv("DSINFER_CUDA_DEVICE", "-1", 1);
  setenv("DSINFER_CUDA_SMALL_M", "64k", 1);
  setenv("DSINFER_CUDA_MMA", "off", 1);
  setenv("DSINFER_CUDA_LT_FP8", "no", 1);
  setenv("DSINFER_CUDA_MLA_KERNEL", "flash", 1);
  setenv("DSINFER_CUDA_INDEXER_KERNEL", "tc", 1);  // the MLA variable's abbreviation, not the indexer's
  CudaOptions o;
  o.device = 1;
  const CudaOptions before = o;
  apply_cuda_env_overrides(o);
  CHECK(same(o, before));
  CHECK(env.warnings.size() == 6);
  CHECK(env.warned("DSINFER_CUDA_SMALL_M=64k ignored: it takes 0 to 4096"));
  CHECK(env.warned("DSINFER_CUDA_MMA=off ignored: it takes 0 or 1"));
  CHECK(env.warned("DSINFER_CUDA_INDEXER_KERNEL=tc ignored: it takes cuda-core, tensor-core or mma"));
  setenv("DSINFER_CUDA_SMALL_M", "4097", 1);  // past the options' range too
  env.warnings.clear();
  apply_cuda_env_overrides(o);
  CHECK(o.small_m_max == 16);
  CHECK(env.warned("DSINFER_CUDA_SMALL_M=4097 ignored"));
}

TEST_CASE("cuda options: create_backend checks them; the CPU backend ignores valid ones", "[cuda_options]") {
  CleanEnv env;
  BackendOptions bo;
  bo.n_threads = 1;
  bo.cuda.small_m_max = 8;
  bo.cuda.mla_kernel = "tensor-core";
  CHECK(create_backend("cpu", bo)->name() == "cpu");
  bo.cuda.mla_kernel = "bogus";
  // A "cuda" backend (in a CUDA build) refuses the value before it looks for a device; without CUDA the name is
  // unknown. Either way: InvalidArgument, never a device error.
  try {
    create_backend("cuda", bo);
    FAIL("cuda backend with a bad option was created");
  } catch (const Error& e) {
    CHECK(e.code() == ErrorCode::InvalidArgument);
  }
}
