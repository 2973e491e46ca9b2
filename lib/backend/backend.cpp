#include "backend/backend.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <atomic>

#include "backend/cpu/cpu_backend.hpp"
#include "backend/cuda_options.hpp"
#include "dsinfer/error.hpp"
#include "util/dtype.hpp"
#include "util/json_input.hpp"

#include <vector>

namespace dsinfer {

Matrix Backend::matrix(int64_t rows, int64_t cols) {
  Matrix m;
  m.buffer = allocate(size_t(rows * cols) * sizeof(float));
  fill_zero(Tensor2D{static_cast<float*>(m.buffer.data()), rows, cols, cols});
  m.view = Tensor2D{static_cast<float*>(m.buffer.data()), rows, cols, cols};
  return m;
}

namespace {
[[noreturn]] void no_packed_kv(const Backend& b) {
  throw Error(ErrorCode::Unsupported,
              fmt::format("the {} backend has no packed (bf16/fp8) KV cache; use kv_cache_dtype f32", b.name()));
}
}  // namespace

void Backend::round_to_bf16(Tensor2D x) {
  std::vector<float> h(size_t(x.rows * x.cols));
  to_host(h.data(), x);
  for (float& v : h) v = bf16_to_f32(f32_to_bf16(v));
  from_host(x, h.data());
}

void moe_combine_host(const float* slots, int64_t slots_ld, const int32_t* expert_ids, int64_t top_k, float* out,
                      int64_t out_ld, int64_t rows, int64_t cols) {
  std::vector<int64_t> order(size_t(std::max<int64_t>(top_k, 0)));
  for (int64_t t = 0; t < rows; ++t) {
    const int32_t* ids = expert_ids + t * top_k;
    // The token's own slots by ascending expert id (top_k is small: an insertion sort).
    int64_t n = 0;
    for (int64_t i = 0; i < top_k; ++i) {
      if (ids[i] < 0) continue;
      int64_t j = n++;
      while (j > 0 && ids[order[size_t(j - 1)]] > ids[i]) {
        order[size_t(j)] = order[size_t(j - 1)];
        --j;
      }
      order[size_t(j)] = i;
    }
    float* o = out + t * out_ld;
    for (int64_t j = 0; j < n; ++j) {
      const float* s = slots + (t * top_k + order[size_t(j)]) * slots_ld;
      for (int64_t d = 0; d < cols; ++d) o[d] += s[d];
    }
  }
}

Backend::Backend() {
  static std::atomic<uint64_t> next_id{1};
  id_ = next_id.fetch_add(1, std::memory_order_relaxed);
}

void Backend::moe_combine(const MoeCombineArgs& a) {
  const int64_t T = a.out.rows, D = a.out.cols;
  std::vector<float> slots(size_t(a.slots.rows * a.slots.cols)), out(size_t(T * D));
  to_host(slots.data(), a.slots);
  to_host(out.data(), a.out);
  std::vector<int32_t> ids(size_t(T * a.top_k));
  bytes_to_host(ids.data(), a.expert_ids, ids.size() * sizeof(int32_t));
  moe_combine_host(slots.data(), a.slots.cols, ids.data(), a.top_k, out.data(), D, T, D);
  from_host(a.out, out.data());
}

void Backend::kv_pack(const KvPackArgs&) { no_packed_kv(*this); }


std::unique_ptr<Backend> create_backend(std::string_view name, const BackendOptions& opts) {
  if (name == "cpu") return std::make_unique<CpuBackend>(opts);
#ifdef DSINFER_HAVE_CUDA
  // "cuda" (device from the options) or "cuda:N"; make_cuda_backend is defined in cuda/cuda_backend_factory.cpp so
  // this file needs no CUDA header. It gets the options resolved against the environment and a device >= 0.
  std::unique_ptr<Backend> make_cuda_backend(const BackendOptions& opts, int device);
  const bool named = name.starts_with("cuda:") && name.size() > 5 && name.size() <= 14 &&
                     name.find_first_not_of("0123456789", 5) == std::string_view::npos;
  if (name == "cuda" || named) {
    check_cuda_options(opts.cuda);
    BackendOptions resolved = opts;
    apply_cuda_env_overrides(resolved.cuda, named);
    if (named) resolved.cuda.device = std::stoi(std::string(name.substr(5)));
    std::unique_ptr<Backend> b = make_cuda_backend(resolved, resolved.cuda.device);
    if (b->interface_version() != kBackendInterfaceVersion)
      throw Error(ErrorCode::Unsupported,
                  fmt::format("the {} backend was built for backend interface version {}, this library has {}",
                              b->name(), b->interface_version(), kBackendInterfaceVersion));
    return b;
  }
  throw Error(ErrorCode::InvalidArgument,
              fmt::format("unknown backend \"{}\" (this build has: cpu, cuda, cuda:N)", excerpt(name)));
#else
  throw Error(ErrorCode::InvalidArgument,
              fmt::format("unknown backend \"{}\" (this build has: cpu)", excerpt(name)));
#endif
}

}  // namespace dsinfer
