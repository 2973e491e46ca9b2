// The CUDA backend's attention ops (issue 8): MLA attention and the lightning indexer's top-k. Until those kernels
// land, both refuse with Unsupported so a model on the "cuda" backend fails loudly rather than computing garbage.
#include "cuda_backend.hpp"

#include "dsinfer/error.hpp"

namespace dsinfer {

void CudaBackend::indexer_topk(const IndexerTopkArgs&) {
  throw Error(ErrorCode::Unsupported, "cuda backend: indexer_topk is not yet on the GPU (issue 8)");
}

void CudaBackend::mla_attention(const MlaArgs&) {
  throw Error(ErrorCode::Unsupported, "cuda backend: mla_attention is not yet on the GPU (issue 8)");
}

}  // namespace dsinfer
