"""How far MoE's output may move when only gate/up carry rounding noise, with tests/cuda/test_cuda_moe.cpp's weights.

moe_experts re-quantizes SwiGLU(gate, up) to e4m3 before the down projection. cuBLASLt's FP8 GEMM (Hopper tensor
cores, fp32 promotion every 128-wide K block) does not sum exactly as the CPU does, so a few h values land on the
other side of an e4m3 rounding boundary. The test's weights take every e4m3 code with equal probability (values
log-uniform over 2^-9..448 times a block scale), so a handful of products dominate each output and one flipped
h element can move an output element by a sizeable share of the RMS while the cosine barely changes.

This script rebuilds the small case of the test (D 256, inner 128, 8 experts, top-2, 600 tokens) in float64 with
the same weight and activation distributions and prints, for relative noise eps on gate and up, the largest
|difference| over the output RMS and the cosine. Measured (numpy 2.4.6): eps 1e-5 -> 0.12, 1e-4 -> 0.13,
1e-3 -> 0.59 of the RMS; cosine >= 0.99994 throughout. Run: python3 tests/reference/moe_requant_sensitivity.py
"""
import numpy as np

rng = np.random.default_rng(0)


def e4m3_decode(c):
    """The value of e4m3 (OCP, fn) code c, NaN for the two NaN codes."""
    sign = -1.0 if c & 0x80 else 1.0
    e, m = (c >> 3) & 0xF, c & 7
    if e == 15 and m == 7:
        return np.nan
    return sign * (m / 8.0) * 2.0**-6 if e == 0 else sign * (1 + m / 8.0) * 2.0 ** (e - 7)


CODES = np.array([e4m3_decode(c) for c in range(256)])
FINITE = np.sort(np.unique(CODES[~np.isnan(CODES)]))


def to_e4m3(x):
    """Nearest e4m3 value (saturating)."""
    x = np.clip(x, -448, 448)
    i = np.clip(np.searchsorted(FINITE, x), 1, len(FINITE) - 1)
    lo, hi = FINITE[i - 1], FINITE[i]
    return np.where(np.abs(x - lo) <= np.abs(hi - x), lo, hi)


def quantize_rows(x):
    """1 x 128 groups, power-of-two scales (ue8m0), as moe_experts quantizes activations."""
    out = np.empty_like(x)
    for g in range(0, x.shape[1], 128):
        block = x[:, g:g + 128]
        amax = np.abs(block).max(1, keepdims=True)
        scale = np.where(amax == 0, 1.0, 2.0 ** np.ceil(np.log2(np.maximum(amax / 448.0, 1e-30))))
        out[:, g:g + 128] = to_e4m3(block / scale) * scale
    return out


def fp8_weight(n, k):
    """Uniform random e4m3 codes (NaN codes drawn again) times 128x128 block scales in [2^-12, 2^-8]."""
    codes = rng.integers(0, 256, size=(n, k))
    while ((codes & 0x7F) == 0x7F).any():
        redraw = (codes & 0x7F) == 0x7F
        codes[redraw] = rng.integers(0, 256, size=int(redraw.sum()))
    scales = rng.uniform(2.0**-12, 2.0**-8, size=((n + 127) // 128, (k + 127) // 128))
    return CODES[codes] * np.kron(scales, np.ones((128, 128)))[:n, :k]


def main():
    T, D, inner, E, K = 600, 256, 128, 8, 2
    gate = [fp8_weight(inner, D) for _ in range(E)]
    up = [fp8_weight(inner, D) for _ in range(E)]
    down = [fp8_weight(D, inner) for _ in range(E)]
    xq = quantize_rows(rng.standard_normal((T, D)))
    ids = np.array([rng.permutation(E)[:K] for _ in range(T)])
    weights = rng.uniform(0.05, 1.0, size=(T, K))

    def moe(eps):
        out = np.zeros((T, D))
        for t in range(T):
            for k in range(K):
                e = ids[t, k]
                g, u = gate[e] @ xq[t], up[e] @ xq[t]
                if eps:
                    g = g * (1 + eps * rng.standard_normal(g.shape))
                    u = u * (1 + eps * rng.standard_normal(u.shape))
                h = quantize_rows((g / (1 + np.exp(-g)) * u)[None, :])[0]
                out[t] += weights[t, k] * (down[e] @ h)
        return out

    ref = moe(0.0)
    rms = np.sqrt((ref**2).mean())
    for eps in (1e-6, 1e-5, 1e-4, 1e-3):
        got = moe(eps)
        d = np.abs(got - ref)
        cos = (got * ref).sum() / np.sqrt((got**2).sum() * (ref**2).sum())
        print(f"gate/up relative noise {eps:g}: max|d|/rms {d.max() / rms:.3g}, cosine {cos:.9f}")


if __name__ == "__main__":
    main()
