// Composition of the absorbed MLA steps (see mla_attention.cuh). Workspace layout: q_abs [T,H,C] | o_lat [T,H,C] |
// split-K partials of mla_decode.
#include "mla_absorb.cuh"
#include "mla_attention.cuh"
#include "mla_decode.cuh"

namespace dsinfer::gpu::attn {

namespace {

MlaDecodeParams decode_params(const MlaAttentionParams& p) {
  MlaDecodeParams d;
  d.T = p.T;
  d.H = p.H;
  d.qabs_t = p.H * p.C;
  d.qabs_h = p.C;
  d.q_pe = p.q + p.dn;
  d.qpe_t = p.ld_q;
  d.qpe_h = p.dn + p.dr;
  d.cache = p.cache;
  d.blocks = p.blocks;
  d.query_seq = p.query_seq;
  d.seq_len = p.seq_len;
  d.n_keys = p.n_keys;
  d.positions = p.positions;
  d.indices = p.indices;
  d.n_indices = p.n_indices;
  d.max_list = p.max_list;
  d.softmax_scale = p.softmax_scale;
  d.num_splits = p.num_splits;
  d.num_sms = p.num_sms;
  d.kernel = p.kernel;
  return d;
}

size_t align16(size_t b) { return (b + 15) / 16 * 16; }

}  // namespace

size_t mla_attention_workspace_bytes(const MlaAttentionParams& p) {
  const size_t lat = align16(size_t(p.T * p.H * p.C) * sizeof(float));
  const MlaDecodeParams d = decode_params(p);
  return 2 * lat + mla_decode_workspace_bytes(p.T, p.H, p.C, mla_decode_num_splits(d));
}

cudaError_t launch_mla_attention(const MlaAttentionParams& p, cudaStream_t stream) {
  if (p.T <= 0) return cudaSuccess;
  if (p.cache.C != p.C || p.cache.R != p.dr || p.dn <= 0 || p.dv <= 0) return cudaErrorInvalidValue;
  // The attention kernel reads q_pe and the cache rows as float4.
  if (p.ld_q % 4 || p.dn % 4 || p.dr % 4 || reinterpret_cast<uintptr_t>(p.q) % 16) return cudaErrorMisalignedAddress;
  const size_t lat = align16(size_t(p.T * p.H * p.C) * sizeof(float));
  float* q_abs = static_cast<float*>(p.workspace);
  float* o_lat = reinterpret_cast<float*>(static_cast<char*>(p.workspace) + lat);
  float* split_ws = reinterpret_cast<float*>(static_cast<char*>(p.workspace) + 2 * lat);

  const bool fp8_absorb = p.wkv_b8.w8 && p.T <= p.fp8_absorb_max_t && p.C % 16 == 0 && p.dn <= 128;
  cudaError_t err;
  // q_abs[t,h,c] = Σ_d q[t, h*(dn+dr) + d] · wkv_b[h*(dn+dv) + d, c]
  if (fp8_absorb) {
    err = launch_absorb_q_fp8(p.wkv_b8, p.q, p.ld_q, p.T, p.H, p.dn, p.dr, p.dv, p.C, q_abs, stream);
  } else {
    StridedBatchedGemmParams g1;
    g1.batch = p.H, g1.M = p.T, g1.N = p.C, g1.K = p.dn;
    g1.A = p.q, g1.a_b = p.dn + p.dr, g1.a_m = p.ld_q, g1.a_k = 1;
    g1.B = p.wkv_b, g1.b_b = (p.dn + p.dv) * p.ld_w, g1.b_k = p.ld_w, g1.b_n = 1;
    g1.C = q_abs, g1.c_b = p.C, g1.c_m = p.H * p.C, g1.c_n = 1;
    err = launch_strided_batched_sgemm(g1, stream);
  }
  if (err != cudaSuccess) return err;

  MlaDecodeParams d = decode_params(p);
  d.q_abs = q_abs;
  d.o_lat = o_lat;
  d.workspace = split_ws;
  if ((err = launch_mla_decode(d, stream)) != cudaSuccess) return err;

  // out[t, h*dv + e] = Σ_c o_lat[t,h,c] · wkv_b[h*(dn+dv) + dn + e, c]
  if (fp8_absorb) return launch_absorb_out_fp8(p.wkv_b8, o_lat, p.T, p.H, p.dn, p.dv, p.C, p.out, p.ld_out, stream);
  StridedBatchedGemmParams g2;
  g2.batch = p.H, g2.M = p.T, g2.N = p.dv, g2.K = p.C;
  g2.A = o_lat, g2.a_b = p.C, g2.a_m = p.H * p.C, g2.a_k = 1;
  g2.B = p.wkv_b + p.dn * p.ld_w, g2.b_b = (p.dn + p.dv) * p.ld_w, g2.b_k = 1, g2.b_n = p.ld_w;
  g2.C = p.out, g2.c_b = p.dv, g2.c_m = p.ld_out, g2.c_n = 1;
  return launch_strided_batched_sgemm(g2, stream);
}

}  // namespace dsinfer::gpu::attn
