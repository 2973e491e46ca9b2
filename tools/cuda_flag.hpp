// `--backend` and `--cuda KEY=VALUE,...`, shared by `dsinfer COMMAND` and `dsinfer serve`: the fields of
// dsinfer::CudaOptions by name. Values are range-checked by Model::load (which names the field); here only the
// syntax, integers and the 0|1 of the switches.
#pragma once
#include <fmt/format.h>

#include <climits>
#include <string>
#include <string_view>

#include "dsinfer/cuda_options.hpp"
#include "parse_number.hpp"

namespace dsinfer::tools {

constexpr const char* kBackendFlagsUsage =
    "--backend cpu|cuda|cuda:N: where the model runs (default cpu; cuda in a build with the CUDA backend).\n"
    "--cuda KEY=VALUE[,KEY=VALUE...]: the CUDA backend's options (docs/cuda.md; the CPU backend ignores them):\n"
    "  device=N (for --backend cuda; default 0)  small_m_max=N (0 to 4096, default 64: GEMMs of up to N rows run\n"
    "  the skinny kernels)  small_m_tensor_cores=0|1  cublaslt_fp8=0|1  mla_kernel=cuda-core|tensor-core\n"
    "  indexer_kernel=cuda-core|tensor-core. DSINFER_CUDA_DEVICE, _SMALL_M, _MMA, _LT_FP8, _MLA_KERNEL and\n"
    "  _INDEXER_KERNEL in the environment override them.\n";

// Applies the --cuda list to o; returns what is wrong with it ("" when nothing is).
inline std::string apply_cuda_flag(std::string_view list, CudaOptions& o) {
  size_t pos = 0;
  while (pos <= list.size()) {
    size_t comma = list.find(',', pos);
    if (comma == std::string_view::npos) comma = list.size();
    const std::string_view item = list.substr(pos, comma - pos);
    pos = comma + 1;
    const size_t eq = item.find('=');
    if (eq == std::string_view::npos)
      return fmt::format("--cuda expects KEY=VALUE items separated by commas, got \"{}\"", item);
    const std::string_view key = item.substr(0, eq), value = item.substr(eq + 1);
    if (key == "device" || key == "small_m_max") {
      const int64_t hi = key == "device" ? INT_MAX : CudaOptions::kMaxSmallM;
      const auto n = parse_number<int64_t>(value, 0, hi);
      if (!n) return fmt::format("--cuda {} expects an integer in [0, {}], got \"{}\"", key, hi, value);
      if (key == "device") o.device = int(*n);
      else o.small_m_max = *n;
    } else if (key == "small_m_tensor_cores" || key == "cublaslt_fp8") {
      if (value != "0" && value != "1") return fmt::format("--cuda {} expects 0 or 1, got \"{}\"", key, value);
      (key == "cublaslt_fp8" ? o.cublaslt_fp8 : o.small_m_tensor_cores) = value == "1";
    } else if (key == "mla_kernel") {
      o.mla_kernel = std::string(value);
    } else if (key == "indexer_kernel") {
      o.indexer_kernel = std::string(value);
    } else {
      return fmt::format("--cuda: unknown option \"{}\" (device, small_m_max, small_m_tensor_cores, cublaslt_fp8, "
                         "mla_kernel, indexer_kernel)", key);
    }
  }
  return "";
}

}  // namespace dsinfer::tools
