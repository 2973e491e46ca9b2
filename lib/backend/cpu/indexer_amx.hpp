// The lightning indexer's scores on AMX tiles: the one kernel of the Amx CPU family (simd.hpp), which is never chosen
// unless asked for (cpu_kernels "amx").
//
// Why a family of its own: in fp8 precision the indexer's queries and keys are e4m3 values, which bf16 holds exactly,
// as it holds the product of two of them (8 significant bits). TDPBF16PS multiplies them exactly and accumulates in
// fp32, but rounds its sums its own way (docs/design-log.md: no order of fp32 additions reproduces it), so these
// scores differ from the other families' (attention_kernels.hpp) in the last bits, and the top-k can differ between
// keys whose scores nearly tie. What it keeps: each (query, key) score is a function of the query and the key alone —
// not of the batch, the queries beside it, the split of the keys over threads, or the cache's dtype (an FP8 cache
// and an f32 cache holding the same values give the same bits) — so decode equals prefill, chunked prefill equals
// whole prefill, and speculative decoding equals plain decoding, bit for bit, within this family.
//
// Per (query, key), with the query's heads padded to NC chunks of 16 and D a multiple of 32:
//   C[h]   = TDPBF16PS over the dims, 32 at a time in order, from +0 (the key's values times head h's);
//   lane l = relu(C[l]) · w[l], then + relu(C[16c + l]) · w[16c + l] for c = 1 .. NC-1 (fused multiply-adds);
//   score  = sum16(lanes) · key scale, sum16 the fixed tree of indexer_amx.cpp's sum16_of_16.
// A query with a value that is not bf16-exact (reference precision) has no tiles (IndexerQuery::qB null) and takes
// the other families' kernels; a key with one (an e4m3 NaN code, an f32 cache of other values) is scored by
// indexer_scores_reference.
#pragma once
#include <cstdint>

#include "backend/cpu/attention_kernels.hpp"

namespace dsinfer {

// Halfwords of a query's tiles, for `padded` heads of `dim` values.
inline int64_t indexer_amx_query_halves(int64_t padded, int64_t dim) { return padded * dim; }

// q.qB ← q's heads as TDPBF16PS B tiles in `storage` (indexer_amx_query_halves of them) when every value is
// bf16-exact and the shape suits (dim a multiple of 32, at most 64 heads); else q.qB ← null. q's other fields must
// be set (indexer_prepare_query calls this in the Amx family).
void indexer_amx_prepare_query(IndexerQuery& q, uint16_t* storage);

// indexer_scores_many on AMX tiles, for queries that all have tiles: false, with nothing written, when one has none.
// The CPU must run the Amx family (cpu_amx_available).
bool indexer_scores_amx(const IndexerQuery* const* qs, int nq, const IndexerTopkArgs& a, int64_t s0,
                        const int64_t* ends, float* const* scores, WorkerScratch scratch);

}  // namespace dsinfer
