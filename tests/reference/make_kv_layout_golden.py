#!/usr/bin/env python3
"""Golden bytes of the packed KV cache formats (lib/backend/kv_format.hpp), from the formulas FlashMLA documents.

Written from the formats' descriptions, not from dsinfer's code:
  * FlashMLA's "FP8 with scale" latent row (its tests/quant.py, layout V32_FP8Sparse): per token, d_nope e4m3
    bytes, then one fp32 scale per tile of 128 channels, then d_rope bf16. scale = 2^ceil(log2(max(amax/448,
    1e-4))), e4m3 = round-to-nearest-even(x / scale); dequantized x = e4m3 · scale. At DeepSeek-V3.2's dimensions
    (512, 64) that is 656 bytes.
  * The BF16 latent row: d_nope + d_rope bf16 (FlashMLA's bf16 cache, 1152 bytes at 512/64).
  * The indexer key (spec §4.7, DeepGEMM's paged layout): a page of P tokens holds P·D e4m3 bytes, then P fp32
    scales; one scale per key, DeepSeek's act_quant rule (amax floored at 1e-4, /448, rounded up to a power of two).

One difference between the two scale rules: FlashMLA floors amax/448 at 1e-4, DeepSeek's act_quant (which dsinfer's
fp8 precision and its FP8 cache follow, so that the cache equals the reference's simulated one) floors amax at
1e-4. They agree whenever a group's amax >= 0.0448; every latent group here is kept above that (asserted), and
docs/architecture.md states the difference.

e4m3 (OCP E4M3FN: bias 7, no infinities, max 448) is decoded from its bit fields and encoded by nearest value with
ties to the even code, both here from the definition. Needs numpy only. Output: tests/golden/kv_layout/kv_layout.json
(inputs, expected bytes and expected decoded values, all as hex of little-endian arrays).

  python3 tests/reference/make_kv_layout_golden.py --out tests/golden/kv_layout
"""
import argparse
import json
import math
import os

import numpy as np

TILE = 128


def e4m3_decode(b):
    sign = -1.0 if b & 0x80 else 1.0
    e, m = (b >> 3) & 0xF, b & 0x7
    if e == 0xF and m == 0x7:
        return math.nan
    if e == 0:
        return sign * m * 2.0 ** -9
    return sign * (1.0 + m / 8.0) * 2.0 ** (e - 7)


E4M3 = [e4m3_decode(b) for b in range(256)]
FINITE = [b for b in range(256) if not math.isnan(E4M3[b])]


def e4m3_encode(x):
    """Nearest e4m3 value, ties to the even code (|x| <= 448 here)."""
    x = float(x)
    assert abs(x) <= 448.0
    best = None
    for b in FINITE:
        if (b & 0x80) != (0x80 if math.copysign(1.0, x) < 0 else 0):
            continue
        d = abs(E4M3[b] - x)
        if best is None or d < best[0] or (d == best[0] and b % 2 == 0 and best[1] % 2 == 1):
            best = (d, b)
    return best[1]


def f32(x):
    return np.float32(x)


def bf16_bits(x):
    """Round-to-nearest-even fp32 -> bf16 bits."""
    u = int(np.array([x], dtype=np.float32).view(np.uint32)[0])
    u += 0x7FFF + ((u >> 16) & 1)
    return (u >> 16) & 0xFFFF


def bf16_value(bits):
    return float(np.array([bits << 16], dtype=np.uint32).view(np.float32)[0])


def pow2_ceil(v):
    return f32(2.0 ** math.ceil(math.log2(v)))


def flashmla_scale(amax):
    return pow2_ceil(max(float(f32(amax) / f32(448.0)), 1e-4))


def act_quant_scale(amax):
    return pow2_ceil(float(f32(max(float(amax), 1e-4)) / f32(448.0)))


def hexf32(a):
    return np.asarray(a, dtype=np.float32).tobytes().hex()


def latent_fp8(rows, rope):
    """FlashMLA V32_FP8Sparse rows for any d_nope (partial last tile) and d_rope."""
    out, deq = bytearray(), []
    for x, r in zip(rows, rope):
        C = len(x)
        tiles = (C + TILE - 1) // TILE
        codes, scales, values = [], [], []
        for t in range(tiles):
            g = x[t * TILE:(t + 1) * TILE]
            amax = float(np.max(np.abs(g)))
            assert amax >= 0.0448, "a group where the FlashMLA and act_quant scale rules differ"
            s = flashmla_scale(amax)
            assert s == act_quant_scale(amax)
            for v in g:
                c = e4m3_encode(float(f32(v) / s))
                codes.append(c)
                values.append(f32(E4M3[c]) * s)
            scales.append(s)
        out += bytes(codes) + np.asarray(scales, dtype=np.float32).tobytes()
        rb = [bf16_bits(v) for v in r]
        out += np.asarray(rb, dtype=np.uint16).tobytes()
        deq.append((values, [bf16_value(b) for b in rb]))
    return bytes(out), deq


def latent_bf16(rows, rope):
    out, deq = bytearray(), []
    for x, r in zip(rows, rope):
        a, b = [bf16_bits(v) for v in x], [bf16_bits(v) for v in r]
        out += np.asarray(a + b, dtype=np.uint16).tobytes()
        deq.append(([bf16_value(v) for v in a], [bf16_value(v) for v in b]))
    return bytes(out), deq


def index_fp8_page(keys):
    """One page of P = len(keys) tokens: P·D e4m3 bytes, then P fp32 scales."""
    codes, scales, values = bytearray(), [], []
    for k in keys:
        s = act_quant_scale(float(np.max(np.abs(k))))
        cs = [e4m3_encode(float(f32(v) / s)) for v in k]
        codes += bytes(cs)
        scales.append(s)
        values.append([E4M3[c] for c in cs])
    return bytes(codes) + np.asarray(scales, dtype=np.float32).tobytes(), values, scales


def latent_case(name, dtype, C, R, n, rng):
    rows = []
    for i in range(n):
        x = rng.standard_normal(C).astype(np.float32)
        # Group magnitudes from 0.05 to 600 (scales 2^-13 .. 2^1), so the rows cover small and > 448 amax.
        for t in range(0, C, TILE):
            x[t:t + TILE] *= f32([0.05, 1.0, 37.0, 600.0][(t // TILE + i) % 4])
        rows.append(x)
    if C >= 16:  # a crafted row: ties to even in normals and subnormals, zeros, the top value, negative zero
        x = np.zeros(C, dtype=np.float32)
        special = [448.0, 1.0625, 1.1875, -2.125, 2.0 ** -10 * 3, 2.0 ** -11, -(2.0 ** -11) * 3, 0.0, -0.0, 17.0,
                   -448.0, 0.013671875, 5.5e-3, 240.0, 232.0, -0.75]
        for t in range(0, C, TILE):
            m = min(TILE, C - t)
            x[t:t + m] = np.resize(np.asarray(special, dtype=np.float32), m)
        rows.append(x)
    rope = [rng.standard_normal(R).astype(np.float32) * f32(3.0) for _ in rows]
    packed, deq = latent_fp8(rows, rope) if dtype == "fp8" else latent_bf16(rows, rope)
    return {
        "name": name, "kind": "latent", "dtype": dtype, "dim": C, "rope_dim": R, "rows": len(rows),
        "row_bytes": len(packed) // len(rows),
        "latent_f32": hexf32(np.concatenate(rows)), "rope_f32": hexf32(np.concatenate(rope)),
        "packed": packed.hex(),
        "decoded_latent_f32": hexf32(np.concatenate([np.asarray(v, dtype=np.float32) for v, _ in deq])),
        "decoded_rope_f32": hexf32(np.concatenate([np.asarray(r, dtype=np.float32) for _, r in deq])),
    }


def index_case(name, D, P, rng):
    keys = [rng.standard_normal(D).astype(np.float32) * f32(s) for s in [0.3, 2.0, 900.0, 1e-5][:P]]
    keys += [rng.standard_normal(D).astype(np.float32) for _ in range(P - len(keys))]
    page, values, scales = index_fp8_page(keys)
    return {
        "name": name, "kind": "index_key", "dtype": "fp8", "dim": D, "page_tokens": P, "rows": P,
        "key_f32": hexf32(np.concatenate(keys)), "packed": page.hex(),
        "decoded_key_f32": hexf32(np.concatenate([np.asarray(v, dtype=np.float32) for v in values])),
        "decoded_scale_f32": hexf32(scales),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    rng = np.random.default_rng(20261203)
    cases = [
        latent_case("fp8 latent, DeepSeek-V3.2 dims (656-byte rows)", "fp8", 512, 64, 4, rng),
        latent_case("fp8 latent, v32-tiny dims", "fp8", 128, 32, 3, rng),
        latent_case("fp8 latent, partial last tile", "fp8", 200, 16, 2, rng),
        latent_case("bf16 latent, DeepSeek-V3.2 dims (1152-byte rows)", "bf16", 512, 64, 2, rng),
        index_case("fp8 indexer key page, DeepSeek-V3.2 dims (132 bytes per token)", 128, 4, rng),
        index_case("fp8 indexer key page, v32-tiny dims", 64, 3, rng),
    ]
    assert cases[0]["row_bytes"] == 656 and cases[3]["row_bytes"] == 1152
    assert len(bytes.fromhex(cases[4]["packed"])) == 4 * 132
    os.makedirs(a.out, exist_ok=True)
    meta = {"generator": "tests/reference/make_kv_layout_golden.py", "numpy": np.__version__, "cases": cases}
    with open(os.path.join(a.out, "kv_layout.json"), "w") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")
    print(f"wrote {len(cases)} cases to {a.out}/kv_layout.json")


if __name__ == "__main__":
    main()
