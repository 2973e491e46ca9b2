// The CUDA backend's mla_attention and indexer_topk (cuda/attention/cuda_backend_attention.cu) against the CPU
// backend, through the Backend interface exactly as lib/model/ calls them: positions, block tables, index lists and
// the top-k output in backend memory (interface v2), out_scores on the host, fp32 views into backend matrices,
// including a q view that is not
// 16-byte aligned (the op copies it) and an output view narrower than its row stride. The kernels themselves are
// covered in depth by test_mla.cu and test_indexer.cu; this checks the glue. Tolerances as there: fp32 summation
// order for MLA (max|d| <= 2e-4·max|ref|), bit-exact scores and indices for the integer-valued indexer inputs.
// Packed FP8 KV caches (issue 19): kv_pack byte for byte against the CPU backend's (latent rows with full and partial
// 128-groups, ue8m0 on and off, indexer keys stored as e4m3 or quantized, strided and unaligned source views), the
// byte ops (copy_bytes, bytes_to_host/from_host), and mla_attention / indexer_topk reading caches each backend packed
// itself (paged, prefill and decode, dense and sparse) under the same tolerances as the F32 cache.
// Exits 77 without a CUDA device.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "backend/backend.hpp"
#include "backend/kv_format.hpp"
#include "dsinfer/error.hpp"
#include "util/dtype.hpp"
#include "attn_test_util.cuh"

using namespace dsinfer;
using namespace dsinfer::attn_test;

namespace {

// A matrix on `b` holding `host` [rows, cols].
Matrix put(Backend& b, const std::vector<float>& host, int64_t rows, int64_t cols) {
  Matrix m = b.matrix(rows, cols);
  b.from_host(m.view, host.data());
  return m;
}
std::vector<float> get(Backend& b, Tensor2D t) {
  std::vector<float> v(static_cast<size_t>(t.rows * t.cols));
  b.to_host(v.data(), t);
  return v;
}

// Index data on `b` (positions, block tables, index lists, top-k output: backend memory in interface v2).
Buffer put_index(Backend& b, const std::vector<int32_t>& host) {
  Buffer buf = b.allocate(std::max<size_t>(host.size(), 1) * 4, /*zero=*/false);
  if (!host.empty()) b.bytes_from_host(buf.data(), host.data(), host.size() * 4);
  return buf;
}
const int32_t* i32(const Buffer& buf) { return static_cast<const int32_t*>(buf.data()); }

// A packed cache buffer on `b`, zero-filled (both backends then agree on the bytes no row was written to).
struct PackedBuf {
  Buffer buf;
  size_t bytes = 0;
  uint8_t* data() const { return static_cast<uint8_t*>(buf.data()); }
};
PackedBuf packed_buf(Backend& b, size_t bytes) {
  PackedBuf p;
  p.buf = b.allocate(bytes, /*zero=*/true);
  p.bytes = bytes;
  return p;
}
std::vector<uint8_t> bytes_of(Backend& b, const void* p, size_t n) {
  std::vector<uint8_t> v(n);
  b.bytes_to_host(v.data(), p, n);
  return v;
}

// Describes the first byte where two packed buffers differ: which row, which part of it, both values.
// `latent`: rows of row_bytes (e4m3 | scales | bf16 rope); else pages of page_tokens keys then their scales.
void report_bytes(const char* what, const std::vector<uint8_t>& want, const std::vector<uint8_t>& got, bool latent,
                  int64_t C, int64_t R, int64_t page_tokens) {
  int64_t n_bad = 0, first = -1;
  for (size_t i = 0; i < want.size(); ++i)
    if (want[i] != got[i]) {
      if (first < 0) first = int64_t(i);
      ++n_bad;
    }
  if (n_bad == 0) {
    std::printf("%-48s %zu bytes equal\n", what, want.size());
    return;
  }
  std::string where;
  char buf[160];
  if (latent) {
    const int64_t rb = kvfmt::latent_row_bytes(KvDtype::FP8, C, R), row = first / rb, off = first % rb;
    const int64_t G = kvfmt::latent_scales(C);
    std::snprintf(buf, sizeof buf, "row %lld, %s byte %lld", (long long)row,
                  off < C ? "e4m3" : off < C + 4 * G ? "scale" : "rope", (long long)off);
  } else {
    const int64_t pb = page_tokens * (C + 4), page = first / pb, off = first % pb;
    std::snprintf(buf, sizeof buf, "page %lld, %s of token %lld", (long long)page,
                  off < page_tokens * C ? "key byte" : "scale byte",
                  (long long)(off < page_tokens * C ? off / C : (off - page_tokens * C) / 4));
  }
  where = buf;
  CHECK(n_bad == 0, "%s: %lld of %zu bytes differ; first at %lld (%s): cpu 0x%02x, cuda 0x%02x", what,
        (long long)n_bad, want.size(), (long long)first, where.c_str(), want[size_t(first)], got[size_t(first)]);
}

// Rows with very different magnitudes per 128-group, all-zero groups and e4m3 rounding ties after scaling (as
// test_kv.cu makes them).
std::vector<float> varied_rows(std::mt19937& rng, int64_t n, int64_t width) {
  std::vector<float> v(static_cast<size_t>(n * width));
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  for (int64_t r = 0; r < n; ++r)
    for (int64_t c = 0; c < width; ++c) {
      const int64_t g = c / 128;
      const float mag = std::ldexp(1.0f, int((r * 7 + g * 3) % 13) - 6);
      float x = u(rng) * mag;
      if ((r + g) % 5 == 4) x = 0.0f;
      if (c % 37 == 5) x = mag * (1.0f + 1.0f / 16.0f);
      v[size_t(r * width + c)] = x;
    }
  return v;
}

// kv_pack on both backends from the same rows, in two calls (rows [row0, row0 + n1) then the rest, as the paged
// cache writes a run per block), with source views that are strided (and, for `unaligned`, not 16-byte aligned);
// the whole buffers must be equal byte for byte. Then the byte ops on the CUDA buffer.
void check_kv_pack_latent(Backend& cpu, Backend& gpu, int64_t C, int64_t R, int64_t n, int64_t row0, bool ue8m0,
                          bool unaligned) {
  std::mt19937 rng(unsigned(C * 3 + R + n + row0 + ue8m0 * 7 + unaligned * 11));
  const int64_t rows = row0 + n + 5, rb = kvfmt::latent_row_bytes(KvDtype::FP8, C, R);
  const std::vector<float> c = varied_rows(rng, n, C), pe = varied_rows(rng, n, R);
  // c at column offset 1 of [n, C + 5] (rows not 16-byte aligned: kv_pack copies them first) or at offset 0 of
  // [n, C + 4] (aligned, strided: read in place); pe at offset 2 of [n, R + 3].
  const int64_t cw = unaligned ? C + 5 : C + 4, cofs = unaligned ? 1 : 0, pw = R + 3;
  std::vector<float> cwide(static_cast<size_t>(n * cw), 9.0f), pwide(static_cast<size_t>(n * pw), 9.0f);
  for (int64_t r = 0; r < n; ++r) {
    std::copy_n(&c[size_t(r * C)], C, &cwide[size_t(r * cw + cofs)]);
    std::copy_n(&pe[size_t(r * R)], R, &pwide[size_t(r * pw + 2)]);
  }
  std::vector<uint8_t> out[2];
  Backend* bes[2] = {&cpu, &gpu};
  PackedBuf gpu_buf;
  for (int i = 0; i < 2; ++i) {
    Backend& b = *bes[i];
    Matrix mc = put(b, cwide, n, cw), mp = put(b, pwide, n, pw);
    PackedBuf pb = packed_buf(b, size_t(rows * rb));
    KvPackArgs a;
    a.dst = PackedKv{KvDtype::FP8, pb.data(), C, R, 0};
    a.latent = true;
    a.ue8m0 = ue8m0;
    const int64_t n1 = n / 2;
    for (auto [r0, m] : {std::pair<int64_t, int64_t>{0, n1}, {n1, n - n1}}) {
      a.src = mc.view.cols_slice(cofs, C).rows_slice(r0, m);
      a.extra = mp.view.cols_slice(2, R).rows_slice(r0, m);
      a.row0 = row0 + r0;
      b.kv_pack(a);
    }
    out[i] = bytes_of(b, pb.data(), pb.bytes);
    if (i == 1) gpu_buf = std::move(pb);
  }
  char what[128];
  std::snprintf(what, sizeof what, "kv_pack fp8 latent C=%lld R=%lld ue8m0=%d%s", (long long)C, (long long)R,
                int(ue8m0), unaligned ? " unaligned" : "");
  report_bytes(what, out[0], out[1], true, C, R, 0);

  // copy_bytes (rows [row0, row0 + n) to the start of a second buffer) and bytes_from_host round trip.
  PackedBuf copy = packed_buf(gpu, gpu_buf.bytes);
  gpu.copy_bytes(copy.data(), gpu_buf.data() + row0 * rb, size_t(n * rb));
  const std::vector<uint8_t> copied = bytes_of(gpu, copy.data(), size_t(n * rb));
  CHECK(std::equal(copied.begin(), copied.end(), out[0].begin() + row0 * rb), "copy_bytes: rows differ");
  PackedBuf up = packed_buf(gpu, gpu_buf.bytes);
  gpu.bytes_from_host(up.data() + 3, out[0].data() + 3, out[0].size() - 3);
  std::vector<uint8_t> back = bytes_of(gpu, up.data(), up.bytes);
  CHECK(std::equal(back.begin() + 3, back.end(), out[0].begin() + 3), "bytes_from_host/bytes_to_host round trip");
}

// Indexer keys: `e4m3` = fp8 precision (src holds e4m3 values, extra their scales, stored as they are); else the
// key is quantized by kv_pack as one group, with (scales) or without a given scale folded in.
void check_kv_pack_index(Backend& cpu, Backend& gpu, int64_t D, int64_t page, int64_t n, int64_t row0, bool e4m3,
                         bool scales, bool ue8m0) {
  std::mt19937 rng(unsigned(D + page * 5 + n + row0 + e4m3 * 13 + scales * 17 + ue8m0));
  const int64_t n_pages = (row0 + n + page - 1) / page + 1, kb = kvfmt::index_key_bytes(KvDtype::FP8, D);
  std::vector<float> k = varied_rows(rng, n, D), sc(static_cast<size_t>(n));
  if (e4m3)
    for (auto& x : k) {
      uint8_t b;
      do b = uint8_t(rng()); while ((b & 0x7f) == 0x7f);  // every e4m3 code but NaN
      x = e4m3_to_f32(b);
    }
  for (auto& x : sc) x = std::ldexp(1.0f, int(rng() % 9) - 6);
  std::vector<uint8_t> out[2];
  Backend* bes[2] = {&cpu, &gpu};
  for (int i = 0; i < 2; ++i) {
    Backend& b = *bes[i];
    Matrix mk = put(b, k, n, D), ms = put(b, sc, n, 1);
    PackedBuf pb = packed_buf(b, size_t(n_pages * page * kb));
    KvPackArgs a;
    a.dst = PackedKv{KvDtype::FP8, pb.data(), D, 0, page};
    a.latent = false;
    a.ue8m0 = ue8m0;
    a.key_is_e4m3 = e4m3;
    const int64_t n1 = std::min<int64_t>(n, page - row0 % page);  // the first run ends at a page boundary
    for (auto [r0, m] : {std::pair<int64_t, int64_t>{0, n1}, {n1, n - n1}}) {
      if (m == 0) continue;
      a.src = mk.view.rows_slice(r0, m);
      a.extra = scales ? ms.view.rows_slice(r0, m) : Tensor2D{};
      a.row0 = row0 + r0;
      b.kv_pack(a);
    }
    out[i] = bytes_of(b, pb.data(), pb.bytes);
  }
  char what[128];
  std::snprintf(what, sizeof what, "kv_pack fp8 index key D=%lld %s%s ue8m0=%d", (long long)D,
                e4m3 ? "e4m3" : "quantized", scales ? "+scale" : "", int(ue8m0));
  report_bytes(what, out[0], out[1], false, D, 0, page);
}

struct MlaShape {
  const char* name;
  int64_t H, C, R, dn, dv, S, T0, T, block_tokens, topk;
  MlaMode mode;
};

// tol: max|d| <= tol·max|ref| (2e-4: fp32 reordering; 3e-2: the bf16 tensor-core kernel, see test_mla.cu).
// fp8_kvb: kv_b also handed over as stored (MlaArgs::wkv_b_stored, random e4m3 bytes + block scales), the fp32
// copy being its dequantization on each backend: decode-sized calls then read the e4m3 weight on the GPU.
// kv FP8: the cache is packed by each backend's kv_pack from the same f32 rows (MlaArgs::latent_packed); latent and
// k_pe then carry only their shapes, as lib/model/ passes them.
void check_mla(Backend& cpu, Backend& gpu, const MlaShape& c, double tol = 2e-4, bool fp8_kvb = false,
               KvDtype kv = KvDtype::F32) {
  std::mt19937 rng(unsigned(c.H + c.S + c.T + c.topk));
  std::normal_distribution<float> nd(0.0f, 1.0f);
  const int64_t H = c.H, C = c.C, R = c.R, dn = c.dn, dv = c.dv, S = c.S, T = c.T;
  const int64_t bt = c.block_tokens > 0 ? c.block_tokens : 1;
  const int64_t n_blocks = (S + bt - 1) / bt + 2, rows = c.block_tokens > 0 ? n_blocks * bt : S;
  std::vector<int32_t> table(static_cast<size_t>(n_blocks));
  std::iota(table.begin(), table.end(), 0);
  std::shuffle(table.begin(), table.end(), rng);
  auto randv = [&](size_t n, float s) {
    std::vector<float> v(n);
    for (auto& x : v) x = nd(rng) * s;
    return v;
  };
  // q lives at column offset 1 of a wider matrix: its rows are not 16-byte aligned.
  const int64_t qc = H * (dn + R);
  const std::vector<float> qwide = randv(size_t(T * (qc + 3)), 1.0f), lat = randv(size_t(rows * C), 1.0f),
                           kpe = randv(size_t(rows * R), 1.0f), wkv = randv(size_t(H * (dn + dv) * C), 0.05f);
  std::vector<int32_t> pos(static_cast<size_t>(T));
  std::iota(pos.begin(), pos.end(), int32_t(c.T0));
  std::vector<int32_t> idx;
  if (c.topk) {
    idx.assign(static_cast<size_t>(T * c.topk), -1);
    for (int64_t t = 0; t < T; ++t) {
      std::vector<int32_t> all(static_cast<size_t>(pos[size_t(t)] + 1));
      std::iota(all.begin(), all.end(), 0);
      std::shuffle(all.begin(), all.end(), rng);
      const int64_t take = std::min<int64_t>(int64_t(all.size()), c.topk - 3);
      std::copy_n(all.begin(), take, idx.begin() + t * c.topk);
    }
  }
  // The stored FP8 kv_b: e4m3 codes except NaN, scales in [2^-13, 2^-11] (values up to ~0.2).
  const int64_t wr = H * (dn + dv);
  std::vector<uint8_t> w8(static_cast<size_t>(wr * C));
  std::vector<float> w8s(static_cast<size_t>(((wr + 127) / 128) * ((C + 127) / 128)));
  for (auto& x : w8) {
    do x = uint8_t(rng()); while ((x & 0x7f) == 0x7f);
  }
  for (auto& x : w8s) x = std::ldexp(1.0f + float(rng() % 1000) / 1000.0f, -13 + int(rng() % 2));
  Weight stored;
  stored.name = "kv_b_proj";
  stored.dtype = DType::F8_E4M3;
  stored.shape = {wr, C};
  stored.data = w8.data();
  stored.scale_inv = w8s.data();
  stored.block = 128;
  std::vector<float> out[2];
  Backend* bes[2] = {&cpu, &gpu};
  for (int i = 0; i < 2; ++i) {
    Backend& b = *bes[i];
    Matrix mq = put(b, qwide, T, qc + 3), ml = put(b, lat, rows, C), mk = put(b, kpe, rows, R),
           mw = fp8_kvb ? b.dequantize(stored) : put(b, wkv, wr, C), mo = b.matrix(T, H * dv + 5);
    MlaArgs a;
    a.q = mq.view.cols_slice(1, qc);
    a.latent = ml.view;
    a.k_pe = mk.view;
    PackedBuf pb;
    if (kv == KvDtype::FP8) {
      pb = packed_buf(b, size_t(rows * kvfmt::latent_row_bytes(KvDtype::FP8, C, R)));
      KvPackArgs k;
      k.dst = PackedKv{KvDtype::FP8, pb.data(), C, R, 0};
      k.src = ml.view;
      k.extra = mk.view;
      b.kv_pack(k);
      a.latent_packed = k.dst;
      a.latent = Tensor2D{nullptr, rows, C, C};
      a.k_pe = Tensor2D{nullptr, rows, R, R};
    }
    const Buffer table_b = put_index(b, table), pos_b = put_index(b, pos), idx_b = put_index(b, idx);
    a.n_keys = S;
    a.block_table = c.block_tokens > 0 ? i32(table_b) : nullptr;
    a.block_tokens = bt;
    a.wkv_b = mw.view;
    a.wkv_b_stored = fp8_kvb ? &stored : nullptr;
    a.n_heads = H, a.nope_dim = dn, a.rope_dim = R, a.v_dim = dv;
    a.softmax_scale = 0.1352337789f;
    a.positions = i32(pos_b);
    a.indices = c.topk ? i32(idx_b) : nullptr;
    a.n_indices = c.topk;
    a.mode = c.mode;
    a.out = mo.view.cols_slice(2, H * dv);
    b.mla_attention(a);
    out[i] = get(b, a.out);
  }
  double max_ref = 0, max_err = 0;
  for (size_t i = 0; i < out[0].size(); ++i) {
    max_ref = std::max(max_ref, std::fabs(double(out[0][i])));
    const double d = std::fabs(double(out[0][i]) - double(out[1][i]));
    max_err = std::isfinite(out[1][i]) ? std::max(max_err, d) : INFINITY;
  }
  size_t worst = 0;  // the element with the largest difference (a non-finite CUDA value first)
  double worst_d = -1;
  for (size_t i = 0; i < out[0].size(); ++i) {
    const double d = std::isfinite(out[1][i]) ? std::fabs(double(out[0][i]) - double(out[1][i])) : INFINITY;
    if (d > worst_d) worst = i, worst_d = d;
  }
  CHECK(max_err <= tol * max_ref + 1e-7, "%s: max|d| %.3g, max|ref| %.3g (tolerance %.1e relative); worst at query "
        "%zu, column %zu: cpu %.7g, cuda %.7g", c.name, max_err, max_ref, tol, worst / size_t(H * dv),
        worst % size_t(H * dv), double(out[0][worst]), double(out[1][worst]));
  // (The weight's bytes may be freed now: the backends find their copies through its handle, which dies with it,
  // so a later case whose weight lands at the same address gets a fresh copy.)
  std::printf("%-48s max|d|/max|ref| %.2e\n", c.name, max_ref > 0 ? max_err / max_ref : max_err);
}

// kv FP8: the keys are packed by each backend's kv_pack (IndexerTopkArgs::k_packed): with scales (fp8 precision)
// stored as e4m3 values with their scales, without (reference precision) quantized by kv_pack. The integer inputs
// stay exact either way (|k| <= 3 scales to 128·k, an e4m3 value), so scores must still agree bit for bit.
void check_indexer(Backend& cpu, Backend& gpu, int64_t H, int64_t D, int64_t S, int64_t T0, int64_t T, int64_t topk,
                   int64_t block_tokens, bool scales, KvDtype kv = KvDtype::F32) {
  std::mt19937 rng(unsigned(H + D + S + T + topk));
  std::uniform_int_distribution<int> small(-3, 3), wi(-2, 2);
  const int64_t bt = block_tokens > 0 ? block_tokens : 1;
  const int64_t n_blocks = (S + bt - 1) / bt + 1;
  // A packed cache is paged in pages of page_tokens rows even without a block table.
  const int64_t page = block_tokens > 0 ? block_tokens : 64;
  const int64_t rows = block_tokens > 0 ? n_blocks * bt : kv == KvDtype::FP8 ? (S + page - 1) / page * page : S;
  std::vector<int32_t> table(static_cast<size_t>(n_blocks));
  std::iota(table.begin(), table.end(), 0);
  std::shuffle(table.begin(), table.end(), rng);
  // Integer-valued inputs with power-of-two scales: exact in fp32 in any order (see test_indexer.cu).
  std::vector<float> q(static_cast<size_t>(T * H * D)), w(static_cast<size_t>(T * H)), qs(static_cast<size_t>(T * H)),
      k(static_cast<size_t>(rows * D)), ks(static_cast<size_t>(rows));
  for (auto& x : q) x = float(small(rng));
  for (auto& x : k) x = float(small(rng));
  for (auto& x : w) x = float(wi(rng));
  for (auto& x : qs) x = std::ldexp(1.0f, int(rng() % 3) - 1);
  for (auto& x : ks) x = std::ldexp(1.0f, int(rng() % 3) - 1);
  std::vector<int32_t> pos(static_cast<size_t>(T));
  std::iota(pos.begin(), pos.end(), int32_t(T0));
  std::vector<int32_t> idx[2];
  std::vector<float> sc[2];
  Backend* bes[2] = {&cpu, &gpu};
  for (int i = 0; i < 2; ++i) {
    Backend& b = *bes[i];
    Matrix mq = put(b, q, T, H * D), mw = put(b, w, T, H), mqs = put(b, qs, T, H), mk = put(b, k, rows, D),
           mks = put(b, ks, rows, 1);
    idx[i].assign(static_cast<size_t>(T * topk), 7);
    sc[i].assign(static_cast<size_t>(T * S), 0.0f);
    IndexerTopkArgs a;
    a.q = mq.view;
    a.q_scale = scales ? mqs.view : Tensor2D{};
    a.w = mw.view;
    a.head_scale = 0.25f;
    a.k = mk.view;
    a.k_scale = scales ? mks.view : Tensor2D{};
    PackedBuf pb;
    if (kv == KvDtype::FP8) {
      pb = packed_buf(b, size_t(rows * kvfmt::index_key_bytes(KvDtype::FP8, D)));
      KvPackArgs k;
      k.dst = PackedKv{KvDtype::FP8, pb.data(), D, 0, page};
      k.latent = false;
      k.src = mk.view;
      k.extra = scales ? mks.view : Tensor2D{};
      k.key_is_e4m3 = scales;
      b.kv_pack(k);
      a.k_packed = k.dst;
      a.k = Tensor2D{nullptr, rows, D, D};
      a.k_scale = scales ? Tensor2D{nullptr, rows, 1, 1} : Tensor2D{};
    }
    const Buffer table_b = put_index(b, table), pos_b = put_index(b, pos), out_b = put_index(b, idx[i]);
    a.n_keys = S;
    a.block_table = block_tokens > 0 ? i32(table_b) : nullptr;
    a.block_tokens = bt;
    a.n_heads = H, a.head_dim = D;
    a.positions = i32(pos_b);
    a.topk = topk;
    a.out_indices = static_cast<int32_t*>(out_b.data());
    a.out_scores = sc[i].data();
    b.indexer_topk(a);
    b.bytes_to_host(idx[i].data(), out_b.data(), idx[i].size() * 4);
  }
  const char* kvn = kv == KvDtype::FP8 ? "fp8" : "f32";
  size_t bad_idx = 0, bad_sc = 0, first_sc = 0;
  for (size_t i = 0; i < idx[0].size(); ++i) bad_idx += idx[0][i] != idx[1][i];
  for (size_t i = sc[0].size(); i-- > 0;)  // backwards: first_sc ends at the first difference
    if (std::memcmp(&sc[0][i], &sc[1][i], 4)) first_sc = i, ++bad_sc;
  CHECK(bad_idx == 0, "indexer H=%lld D=%lld S=%lld T=%lld kv=%s: %zu of %zu index slots differ", (long long)H,
        (long long)D, (long long)S, (long long)T, kvn, bad_idx, idx[0].size());
  CHECK(bad_sc == 0, "indexer kv=%s: %zu out_scores differ; first at query %zu key %zu: cpu %.9g, cuda %.9g", kvn,
        bad_sc, first_sc / size_t(S), first_sc % size_t(S), double(sc[0][first_sc]), double(sc[1][first_sc]));
  std::printf("indexer_topk H=%-3lld D=%-3lld S=%-5lld T=%-5lld k=%-5lld paged=%d kv=%s %s\n", (long long)H,
              (long long)D, (long long)S, (long long)T, (long long)topk, int(block_tokens > 0), kvn,
              bad_idx || bad_sc ? "FAILED" : "ok");
}

}  // namespace

int main() {
  int n_dev = 0;
  if (cudaGetDeviceCount(&n_dev) != cudaSuccess || n_dev == 0) {
    std::printf("SKIP: no CUDA device\n");
    return 77;
  }
  auto cpu = create_backend("cpu");
  auto gpu = create_backend("cuda");
  check_mla(*cpu, *gpu, {"tiny decode, paged", 4, 128, 32, 64, 64, 45, 44, 1, 16, 0, MlaMode::Absorbed});
  check_mla(*cpu, *gpu, {"tiny prefill, contiguous, CPU MHA", 16, 256, 32, 64, 64, 120, 0, 120, 0, 0, MlaMode::Mha});
  check_mla(*cpu, *gpu, {"tiny sparse prefill chunk, paged", 16, 256, 32, 64, 64, 300, 250, 50, 16, 16,
                         MlaMode::Mha});
  check_mla(*cpu, *gpu, {"V3.2 decode 4K, paged", 128, 512, 64, 128, 128, 4096, 4095, 1, 64, 0, MlaMode::Absorbed});
  check_mla(*cpu, *gpu, {"V3.2 sparse decode 3 queries, paged", 128, 512, 64, 128, 128, 6000, 5997, 3, 64, 2048,
                         MlaMode::Absorbed});
  check_indexer(*cpu, *gpu, 8, 64, 100, 0, 100, 16, 16, true);
  check_indexer(*cpu, *gpu, 16, 64, 500, 300, 200, 256, 0, false);
  check_indexer(*cpu, *gpu, 64, 128, 5000, 4990, 10, 2048, 64, true);
  // kv_b as stored FP8: decode-sized calls stream the e4m3 weight (the absorb kernels of mla_absorb_fp8.cu);
  // 40 queries exceed the 32-query limit and take the fp32 GEMMs over the same values.
  check_mla(*cpu, *gpu, {"V3.2 decode 4K, stored FP8 kv_b", 128, 512, 64, 128, 128, 4096, 4095, 1, 64, 0,
                         MlaMode::Absorbed}, 2e-4, true);
  check_mla(*cpu, *gpu, {"V3.2 sparse, 9 queries, stored FP8 kv_b", 128, 512, 64, 128, 128, 6000, 5991, 9, 64,
                         2048, MlaMode::Absorbed}, 2e-4, true);
  check_mla(*cpu, *gpu, {"tiny prefill 40, stored FP8 kv_b", 16, 256, 32, 64, 64, 40, 0, 40, 16, 0, MlaMode::Mha},
            2e-4, true);
  check_mla(*cpu, *gpu, {"tiny decode, stored FP8 kv_b", 4, 128, 32, 64, 64, 45, 44, 1, 16, 0, MlaMode::Absorbed},
            2e-4, true);
  {
    // The opt-in tensor-core paths (CudaOptions::indexer_kernel / mla_kernel): the e4m3 indexer kernel is exact on
    // these integer inputs; the bf16 MLA kernel is held to the bf16 bound.
    BackendOptions tc;
    tc.cuda.indexer_kernel = "tensor-core";
    tc.cuda.mla_kernel = "tensor-core";
    auto gpu_tc = create_backend("cuda", tc);
    check_indexer(*cpu, *gpu_tc, 64, 128, 5000, 4990, 10, 2048, 64, true);
    check_indexer(*cpu, *gpu_tc, 8, 64, 100, 0, 100, 16, 16, true);
    check_mla(*cpu, *gpu_tc, {"V3.2 decode 4K, paged, bf16 tensor cores", 128, 512, 64, 128, 128, 4096, 4095, 1, 64,
                              0, MlaMode::Absorbed}, 3e-2);
    check_mla(*cpu, *gpu_tc, {"V3.2 sparse decode, bf16 tensor cores", 128, 512, 64, 128, 128, 6000, 5997, 3, 64,
                              2048, MlaMode::Absorbed}, 3e-2);
  }
  // Packed FP8 caches (issue 19). kv_pack byte for byte: V3.2 (656-byte rows, 132-byte keys), v32-tiny (128/32,
  // a 196-byte row: 4-byte aligned), v32-micro (64/32: one partial 128-group), ue8m0 off, unaligned sources.
  check_kv_pack_latent(*cpu, *gpu, 512, 64, 300, 70, true, false);
  check_kv_pack_latent(*cpu, *gpu, 512, 64, 33, 0, false, true);
  check_kv_pack_latent(*cpu, *gpu, 128, 32, 37, 3, true, true);
  check_kv_pack_latent(*cpu, *gpu, 64, 32, 21, 16, true, false);
  check_kv_pack_latent(*cpu, *gpu, 64, 32, 9, 1, false, true);
  check_kv_pack_index(*cpu, *gpu, 128, 64, 300, 70, true, true, true);
  check_kv_pack_index(*cpu, *gpu, 128, 64, 100, 5, false, false, true);
  check_kv_pack_index(*cpu, *gpu, 128, 64, 100, 5, false, true, false);
  check_kv_pack_index(*cpu, *gpu, 64, 16, 77, 9, true, true, true);
  check_kv_pack_index(*cpu, *gpu, 32, 16, 40, 0, false, false, true);  // v32-micro's index_head_dim
  // Attention and the indexer over those caches, CUDA vs CPU: decode and prefill (CPU MHA form), dense and sparse,
  // paged with shuffled block tables.
  const KvDtype fp8 = KvDtype::FP8;
  check_mla(*cpu, *gpu, {"fp8 cache: tiny decode, paged", 4, 128, 32, 64, 64, 45, 44, 1, 16, 0, MlaMode::Absorbed},
            2e-4, false, fp8);
  check_mla(*cpu, *gpu, {"fp8 cache: tiny prefill, paged, CPU MHA", 16, 128, 32, 64, 64, 120, 0, 120, 16, 0,
                         MlaMode::Mha}, 2e-4, false, fp8);
  check_mla(*cpu, *gpu, {"fp8 cache: tiny sparse prefill chunk, paged", 16, 256, 32, 64, 64, 300, 250, 50, 16, 16,
                         MlaMode::Mha}, 2e-4, false, fp8);
  check_mla(*cpu, *gpu, {"fp8 cache: micro prefill (partial group), paged", 2, 64, 32, 32, 32, 40, 0, 40, 16, 0,
                         MlaMode::Mha}, 2e-4, false, fp8);
  check_mla(*cpu, *gpu, {"fp8 cache: micro sparse decode, paged", 2, 64, 32, 32, 32, 70, 69, 1, 16, 8,
                         MlaMode::Absorbed}, 2e-4, false, fp8);
  check_mla(*cpu, *gpu, {"fp8 cache: V3.2 decode 4K, paged", 128, 512, 64, 128, 128, 4096, 4095, 1, 64, 0,
                         MlaMode::Absorbed}, 2e-4, false, fp8);
  check_mla(*cpu, *gpu, {"fp8 cache: V3.2 sparse decode 3 queries, paged", 128, 512, 64, 128, 128, 6000, 5997, 3, 64,
                         2048, MlaMode::Absorbed}, 2e-4, false, fp8);
  check_mla(*cpu, *gpu, {"fp8 cache: V3.2 decode, stored FP8 kv_b", 128, 512, 64, 128, 128, 4096, 4095, 1, 64, 0,
                         MlaMode::Absorbed}, 2e-4, true, fp8);
  check_indexer(*cpu, *gpu, 8, 64, 100, 0, 100, 16, 16, true, fp8);
  check_indexer(*cpu, *gpu, 8, 64, 100, 0, 100, 16, 16, false, fp8);
  check_indexer(*cpu, *gpu, 4, 32, 70, 60, 10, 8, 16, true, fp8);  // v32-micro's indexer
  check_indexer(*cpu, *gpu, 16, 64, 500, 300, 200, 256, 0, false, fp8);
  check_indexer(*cpu, *gpu, 64, 128, 5000, 4990, 10, 2048, 64, true, fp8);
  {
    BackendOptions tc;
    tc.cuda.indexer_kernel = "tensor-core";
    tc.cuda.mla_kernel = "tensor-core";
    auto gpu_tc = create_backend("cuda", tc);
    check_indexer(*cpu, *gpu_tc, 64, 128, 5000, 4990, 10, 2048, 64, true, fp8);
    check_mla(*cpu, *gpu_tc, {"fp8 cache: V3.2 decode 4K, paged, bf16 tensor cores", 128, 512, 64, 128, 128, 4096,
                              4095, 1, 64, 0, MlaMode::Absorbed}, 3e-2, false, fp8);
  }
  CHECK(gpu->supports_kv_dtype(KvDtype::FP8) && gpu->supports_kv_dtype(KvDtype::F32) &&
            !gpu->supports_kv_dtype(KvDtype::BF16),
        "the CUDA backend should hold f32 and fp8 KV caches (bf16 not yet)");

  // Errors arrive as dsinfer::Error, never as a crash: a head count the kernels do not support.
  bool threw = false;
  try {
    check_indexer(*cpu, *gpu, 65, 128, 10, 9, 1, 4, 0, true);
  } catch (const Error& e) {
    threw = e.code() == ErrorCode::Unsupported;
  }
  CHECK(threw, "65 indexer heads should be refused with Unsupported");
  if (g_failures) {
    std::printf("%d check(s) failed\n", g_failures);
    return 1;
  }
  std::printf("test_mla_backend: all checks passed\n");
  return 0;
}
