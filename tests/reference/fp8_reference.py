#!/usr/bin/env python3
"""An emulation of DeepSeek-V3.2's FP8 numerics, written from the spec's formulas (../shared/spec/dsv32-model.md
§2-§6), as the independent check of dsinfer's `fp8` precision mode.

    python tests/reference/fp8_reference.py ops --out tests/golden/fp8_ops
    python tests/reference/fp8_reference.py e2e --preset v32-tiny --model build/models/v32-tiny \
        --golden tests/golden/v32-tiny --out tests/golden/fp8_e2e/v32-tiny
    python tests/reference/fp8_reference.py selfcheck --model build/models/v32-tiny --golden tests/golden/v32-tiny
    python tests/reference/fp8_reference.py noise --model build/models/v32-tiny --golden tests/golden/v32-tiny \
        --json tests/golden/fp8_e2e/v32-tiny/self_noise.json

`ops` writes op-level goldens (activation quantization, block-scaled FP8 GEMM, Hadamard, indexer scores and
top-k) from random inputs; `e2e` runs the whole forward in fp8 mode and reference mode on a small checkpoint and
writes both logits plus the size of the FP8 effect, the decisions it changes and the float32-vs-float64 self-noise;
`selfcheck` runs the emulation in reference mode and compares it with transformers' logits (the goldens of
hf_oracle.py), which checks this script's plumbing; `noise` re-runs the fp8 contract with other summation orders,
perturbations and deliberate contract breaks (the basis of the end-to-end tolerance in docs/numerics.md).

The contract emulated (docs/numerics.md): FP8 linears quantize each activation row per 1x128 group with
s = 2^ceil(log2(max(amax,1e-4)/448)) (ue8m0), q = e4m3(clamp(x/s)), and sum per 128-wide K block of e4m3 products
promoted with s * weight_scale_inv; the MLA latent is quantized-dequantized the same way before caching and the
rotated rope key rounded to bf16 (both as DeepSeek's reference and FlashMLA's FP8 cache hold them); the indexer applies half-split RoPE, a Hadamard transform, and quantizes q per head and k per token; everything else
is fp32 math (done here in float64, a more exact stand-in). No code of DeepSeek's or dsinfer's is used.
"""
import argparse
import json
import math
import os
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from hf_oracle import prompt_ids  # noqa: E402  (same prompts as the transformers goldens)

F64 = torch.float64


# ---------------------------------------------------------------------------------------------- primitives --
def e4m3(x):
    """Round to float8_e4m3fn (nearest even, saturating) and back, in x's dtype."""
    return x.clamp(-448.0, 448.0).to(torch.float32).to(torch.float8_e4m3fn).to(x.dtype)


def group_scale(amax, ue8m0, dtype=F64):
    """amax / 448 with amax floored at 1e-4, in float32; ue8m0 rounds up to a power of two (exactly, via frexp)."""
    s = (amax.to(torch.float32).clamp_min(1e-4) / 448.0).to(torch.float32)
    if not ue8m0:
        return s.to(dtype)
    m, e = torch.frexp(s)
    p = torch.where(m == 0.5, e - 1, e)
    return torch.ldexp(torch.ones_like(s, dtype=dtype), p.to(torch.int32))


# Positive finite e4m3 values (codes 0..126) and the rounding boundaries between neighbours.
E4M3_VALUES = torch.arange(127, dtype=torch.uint8).view(torch.float8_e4m3fn).to(F64)
E4M3_MIDPOINTS = (E4M3_VALUES[:-1] + E4M3_VALUES[1:]) / 2


class Stats:
    """Optional instrumentation of a forward pass (set STATS to an instance):
    - how close the scaled activations x/s come to an e4m3 rounding boundary (relative distance |y - b| / |y|),
      i.e. how often a perturbation of relative size eps in x would change a code;
    - whether each per-128 K-block sum of e4m3 products is exactly representable in fp32, and whether torch's
      fp32 matmul returns it exactly."""

    THRESHOLDS = (1e-7, 1e-6, 1e-5, 1e-4)

    def __init__(self):
        self.quantized = 0
        self.near = {t: 0 for t in self.THRESHOLDS}
        self.block_sums = 0
        self.block_sums_not_fp32 = 0
        self.block_sums_fp32_matmul_inexact = 0

    def boundary(self, y):
        y = y.abs().flatten().to(F64)
        y = y[(y > 0) & (y < 448)]
        i = torch.searchsorted(E4M3_MIDPOINTS, y)
        lo = E4M3_MIDPOINTS[(i - 1).clamp_min(0)]
        hi = E4M3_MIDPOINTS[i.clamp_max(len(E4M3_MIDPOINTS) - 1)]
        d = torch.minimum((y - lo).abs(), (y - hi).abs()) / y
        self.quantized += int(y.numel())
        for t in self.THRESHOLDS:
            self.near[t] += int((d < t).sum())

    def block(self, q, w8, part):
        self.block_sums += int(part.numel())
        self.block_sums_not_fp32 += int((part.to(torch.float32).to(F64) != part).sum())
        p32 = q.to(torch.float32) @ w8.to(torch.float32).T
        self.block_sums_fp32_matmul_inexact += int((p32.to(F64) != part).sum())

    def as_dict(self):
        return {"quantized_elements": self.quantized,
                "within_relative_distance_of_a_rounding_boundary": {f"{t:g}": n for t, n in self.near.items()},
                "k_block_sums": self.block_sums, "k_block_sums_not_representable_in_fp32": self.block_sums_not_fp32,
                "k_block_sums_inexact_with_fp32_matmul": self.block_sums_fp32_matmul_inexact}


STATS = None


def act_quant(x, group, ue8m0):
    """x [..., K] -> (q e4m3 values [..., K], scales [..., ceil(K/group)]), in x's dtype."""
    K = x.shape[-1]
    G = -(-K // group)
    pad = G * group - K
    xp = torch.nn.functional.pad(x, (0, pad)).reshape(*x.shape[:-1], G, group)
    s = group_scale(xp.abs().amax(dim=-1), ue8m0, x.dtype)
    y = xp.to(torch.float32).to(x.dtype) / s.unsqueeze(-1)
    if STATS is not None:
        STATS.boundary(y)
    q = e4m3(y)
    return q.reshape(*x.shape[:-1], G * group)[..., :K], s


def hadamard(x):
    n = x.shape[-1]
    idx = torch.arange(n)
    sign = torch.tensor([[(-1.0) ** bin(int(i) & int(j)).count("1") for j in idx] for i in idx], dtype=x.dtype)
    return x @ sign.T / math.sqrt(n)


def dot(a, b, order="matmul"):
    """a [M,K] · b [N,K]ᵀ with a chosen summation order (the orders differ only in rounding, i.e. in float32)."""
    if order == "matmul":
        return a @ b.T
    if order == "transposed":
        return (b @ a.T).T
    if order == "sequential":
        return (a[:, None, :] * b[None]).cumsum(-1)[..., -1]
    if order == "reversed":
        return (a[:, None, :] * b[None]).flip(-1).cumsum(-1)[..., -1]
    raise ValueError(order)


class Linear:
    """A checkpoint weight: FP8 codes + block scales, or a high-precision tensor."""

    def __init__(self, w, scale=None):
        self.w, self.scale = w, scale  # w: float8 tensor or float tensor; scale: [ceil(N/128), ceil(K/128)]

    def dequant(self, dtype=F64):
        if self.scale is None:
            return self.w.to(dtype)
        N, K = self.w.shape
        s = self.scale.to(dtype).repeat_interleave(128, 0).repeat_interleave(128, 1)[:N, :K]
        return self.w.to(dtype) * s

    def __call__(self, x, fp8, ue8m0, order="matmul"):
        """y = x·Wᵀ in x's dtype; for an FP8 weight in fp8 mode, quantized activations and per-K-block sums."""
        dt = x.dtype
        if not (fp8 and self.scale is not None):
            return dot(x, self.dequant(dt), order)
        K = x.shape[-1]
        G = -(-K // 128)
        q, s = act_quant(x, 128, ue8m0)
        w8 = self.w.to(dt)
        out = 0
        for g in range(G):
            k0, k1 = g * 128, min(K, (g + 1) * 128)
            part = dot(q[..., k0:k1], w8[:, k0:k1], order)  # sum of e4m3 products of one K block
            if STATS is not None and dt == F64:
                STATS.block(q[..., k0:k1], w8[:, k0:k1], part)
            ws = self.scale[:, g].to(dt).repeat_interleave(128)[: w8.shape[0]]
            out = out + part * s[..., g:g + 1] * ws
        return out


# ------------------------------------------------------------------------------------------------ the model --
def load(model_dir):
    from safetensors.torch import load_file
    with open(os.path.join(model_dir, "config.json")) as f:
        cfg = json.load(f)
    with open(os.path.join(model_dir, "model.safetensors.index.json")) as f:
        shards = sorted(set(json.load(f)["weight_map"].values()))
    raw = {}
    for s in shards:
        raw.update(load_file(os.path.join(model_dir, s)))
    return cfg, raw


class Emulation:
    """The forward pass. fp8 selects the mode; dtype is the arithmetic of everything but the e4m3 rounding (float64 for
    the goldens; float32 to measure what another fp32 summation order does); force = the `decisions` of another run
    to reuse its indexer top-k sets and expert choices instead of computing them."""

    VARIANTS = ("no_latent_quant", "plain_scale", "no_hadamard", "unquantized_indexer")

    def __init__(self, cfg, raw, fp8, index_topk=None, dtype=F64, force=None, noise=None, variant=None,
                 order="matmul"):
        self.c, self.raw, self.fp8, self.dt, self.force, self.order = cfg, raw, fp8, dtype, force, order
        # noise = (relative size, seed): every linear output is multiplied by (1 + size * N(0,1)), a statistical
        # model of another fp32 summation order. variant = one deliberate departure from the contract (to size
        # what the end-to-end tolerance must catch).
        self.noise = None if noise is None else (noise[0], torch.Generator().manual_seed(noise[1]))
        assert variant is None or variant in self.VARIANTS
        self.variant = variant
        self.decisions = {"indexer": {}, "moe": {}}  # layer -> per-token selected key sets / expert lists
        q = cfg.get("quantization_config") or {}
        self.ue8m0 = q.get("scale_fmt", "ue8m0") == "ue8m0" and variant != "plain_scale"
        self.topk = index_topk or cfg.get("index_topk")
        d = cfg["qk_rope_head_dim"]
        base = float(cfg.get("rope_theta", 10000))
        rs = cfg.get("rope_scaling") or {}
        freq = [1.0 / base ** (2 * j / d) for j in range(d // 2)]
        if rs.get("type", rs.get("rope_type")) == "yarn" and rs.get("factor", 1) > 1:
            L0, fac = rs["original_max_position_embeddings"], rs["factor"]
            corr = lambda r: d * math.log(L0 / (r * 2 * math.pi)) / (2 * math.log(base))  # noqa: E731
            low = max(math.floor(corr(rs.get("beta_fast", 32))), 0)
            high = min(math.ceil(corr(rs.get("beta_slow", 1))), d - 1)
            ramp = [min(max((j - low) / (high - low), 0.0), 1.0) for j in range(d // 2)]
            freq = [f / fac * r + f * (1 - r) for f, r in zip(freq, ramp)]
            m = 0.1 * rs.get("mscale_all_dim", 0) * math.log(fac) + 1.0 if rs.get("mscale_all_dim") else 1.0
        else:
            m = 1.0
        self.freq = torch.tensor(freq, dtype=F64)
        self.scale = (cfg["qk_nope_head_dim"] + d) ** -0.5 * m * m

    def W(self, name):
        w = self.raw[name]
        s = self.raw.get(name + "_scale_inv")
        return Linear(w, s)

    def vec(self, name):
        return self.raw[name].to(self.dt)

    def lin(self, name, x):
        y = self.W(name)(x, self.fp8, self.ue8m0, self.order)
        if self.noise is not None:
            y = y * (1 + self.noise[0] * torch.randn(y.shape, generator=self.noise[1], dtype=y.dtype))
        return y

    def rms(self, x, name):
        return x / torch.sqrt((x * x).mean(-1, keepdim=True) + self.c["rms_norm_eps"]) * self.vec(name)

    def rope(self, x, pos, interleaved):
        """x [T, ..., d]: rotate pairs by pos * freq."""
        ang = pos.to(F64)[:, None] * self.freq[None, :]
        while ang.dim() < x.dim():
            ang = ang.unsqueeze(1)
        c, s = torch.cos(ang).to(x.dtype), torch.sin(ang).to(x.dtype)
        h = x.shape[-1] // 2
        if interleaved:
            x0, x1 = x[..., 0::2], x[..., 1::2]
            out = torch.empty_like(x)
            out[..., 0::2], out[..., 1::2] = x0 * c - x1 * s, x0 * s + x1 * c
            return out
        x0, x1 = x[..., :h], x[..., h:]
        return torch.cat([x0 * c - x1 * s, x0 * s + x1 * c], dim=-1)

    def indexer(self, p, x, qr, pos):
        c = self.c
        Hi, Di, dr = c["index_n_heads"], c["index_head_dim"], c["qk_rope_head_dim"]
        T = x.shape[0]
        q = self.lin(p + "wq_b.weight", qr).reshape(T, Hi, Di)
        k = self.lin(p + "wk.weight", x)
        mu = k.mean(-1, keepdim=True)
        var = ((k - mu) ** 2).mean(-1, keepdim=True)
        k = (k - mu) / torch.sqrt(var + 1e-6) * self.vec(p + "k_norm.weight") + self.vec(p + "k_norm.bias")
        q = torch.cat([self.rope(q[..., :dr], pos, False), q[..., dr:]], -1)
        k = torch.cat([self.rope(k[:, None, :dr], pos, False)[:, 0], k[:, dr:]], -1)
        w = (x @ self.vec(p + "weights_proj.weight").T) * Hi ** -0.5 * Di ** -0.5
        if self.fp8 and self.variant != "unquantized_indexer":
            if self.variant != "no_hadamard":
                q, k = hadamard(q), hadamard(k)
            q, qs = act_quant(q, Di, self.ue8m0)  # one group per (token, head)
            k, ks = act_quant(k, Di, self.ue8m0)  # one group per token
            w = w * qs[..., 0]
            ks = ks[:, 0]
        else:
            ks = torch.ones(T, dtype=self.dt)
        scores = torch.einsum("thd,sd->tsh", q, k).clamp_min(0)  # ReLU(q·k) per head
        I = (scores * w[:, None, :]).sum(-1) * ks[None, :]
        sel = []
        for t in range(T):
            vis = int(pos[t]) + 1
            kk = min(self.topk, vis)
            order = sorted(range(vis), key=lambda s: (-float(I[t, s]), s))
            sel.append(sorted(order[:kk]))
        return sel, I

    def attention(self, L, x, pos):
        c = self.c
        p = f"model.layers.{L}.self_attn."
        H, dn, dr, dv, C = (c["num_attention_heads"], c["qk_nope_head_dim"], c["qk_rope_head_dim"], c["v_head_dim"],
                            c["kv_lora_rank"])
        T = x.shape[0]
        qr = self.rms(self.lin(p + "q_a_proj.weight", x), p + "q_a_layernorm.weight")
        q = self.lin(p + "q_b_proj.weight", qr).reshape(T, H, dn + dr)
        q = torch.cat([q[..., :dn], self.rope(q[..., dn:], pos, True)], -1)
        kv = self.lin(p + "kv_a_proj_with_mqa.weight", x)
        lat = self.rms(kv[:, :C], p + "kv_a_layernorm.weight")
        if self.fp8 and self.variant != "no_latent_quant":  # the simulated FP8 latent cache
            qv, s = act_quant(lat, 128, self.ue8m0)
            lat = qv * s.repeat_interleave(128, -1)[:, :C]
        kpe = self.rope(kv[:, None, C:], pos, True)[:, 0]
        if self.fp8:  # the rope key is cached in bf16 (the reference's pe_cache; FlashMLA's FP8 row, spec §3.5)
            kpe = kpe.to(torch.bfloat16).to(self.dt)
        mask = torch.full((T, T), float("-inf"), dtype=self.dt)
        if "index_topk" in c and T > self.topk:
            sel, _ = self.indexer(p + "indexer.", x, qr, pos)
            # Record (and optionally override) the real choices: rows with more visible keys than index_topk.
            real = [t for t in range(T) if int(pos[t]) + 1 > self.topk]
            if self.force is not None:
                for t in real:
                    sel[t] = self.force["indexer"][L][t]
            self.decisions["indexer"][L] = {t: sel[t] for t in real}
            for t, ss in enumerate(sel):
                mask[t, ss] = 0.0
        else:
            if "index_topk" in c:
                self.indexer(p + "indexer.", x, qr, pos)
            mask = torch.zeros((T, T), dtype=self.dt)
        mask = mask + torch.triu(torch.full((T, T), float("-inf"), dtype=self.dt), 1)
        wkv = self.W(p + "kv_b_proj.weight").dequant(self.dt).reshape(H, dn + dv, C)
        k_nope = torch.einsum("sc,hdc->shd", lat, wkv[:, :dn])
        v = torch.einsum("sc,hdc->shd", lat, wkv[:, dn:])
        sc = (torch.einsum("thd,shd->ths", q[..., :dn], k_nope) + torch.einsum("thd,sd->ths", q[..., dn:], kpe))
        sc = sc * self.scale + mask[:, None, :]
        o = torch.einsum("ths,shd->thd", torch.softmax(sc, -1), v).reshape(T, H * dv)
        return self.lin(p + "o_proj.weight", o)

    def mlp(self, p, x):
        g, u = self.lin(p + "gate_proj.weight", x), self.lin(p + "up_proj.weight", x)
        return self.lin(p + "down_proj.weight", torch.nn.functional.silu(g) * u)

    def moe(self, L, x):
        c = self.c
        p = f"model.layers.{L}.mlp."
        E, G, kg, K = c["n_routed_experts"], c["n_group"], c["topk_group"], c["num_experts_per_tok"]
        sc = torch.sigmoid(x @ self.vec(p + "gate.weight").T)
        choice = sc + self.vec(p + "gate.e_score_correction_bias")
        out = torch.zeros_like(x)
        self.decisions["moe"][L] = {}
        for t in range(x.shape[0]):
            ch = choice[t].clone()
            gs = ch.reshape(G, E // G).topk(2, -1).values.sum(-1)
            keep = sorted(range(G), key=lambda g: (-float(gs[g]), g))[:kg]
            for g in range(G):
                if g not in keep:
                    ch[g * (E // G):(g + 1) * (E // G)] = float("-inf")
            idx = sorted(range(E), key=lambda e: (-float(ch[e]), e))[:K]
            if self.force is not None:
                idx = self.force["moe"][L][t]
            self.decisions["moe"][L][t] = sorted(idx)
            w = sc[t, idx] / sc[t, idx].sum() * c["routed_scaling_factor"]
            for e, we in zip(idx, w):
                out[t] += we * self.mlp(f"{p}experts.{e}.", x[t:t + 1])[0]
        return out + self.mlp(p + "shared_experts.", x)

    def forward(self, ids):
        c = self.c
        pos = torch.arange(len(ids))
        h = self.raw["model.embed_tokens.weight"].to(self.dt)[torch.tensor(ids)]
        res = torch.zeros_like(h)
        for L in range(c["num_hidden_layers"]):
            res = res + h
            h = self.attention(L, self.rms(res, f"model.layers.{L}.input_layernorm.weight"), pos)
            res = res + h
            x = self.rms(res, f"model.layers.{L}.post_attention_layernorm.weight")
            h = self.moe(L, x) if L >= c["first_k_dense_replace"] else self.mlp(f"model.layers.{L}.mlp.", x)
        x = self.rms(res + h, "model.norm.weight")
        return (x @ self.raw["lm_head.weight"].to(self.dt).T).to(torch.float32).numpy()


# --------------------------------------------------------------------------------------------------- modes --
def rel_err_rows(a, b):
    """Per row: max|a-b| / max|b|."""
    return np.abs(a - b).max(-1) / np.abs(b).max(-1)


def golden_prompts(golden_dir, dense=False):
    with open(os.path.join(golden_dir, "meta.json")) as f:
        meta = json.load(f)
    return [p for p in meta["prompts"] if dense or "dense" not in p["name"]], meta


def cmd_selfcheck(args):
    cfg, raw = load(args.model)
    prompts, _ = golden_prompts(args.golden, dense=True)
    for p in prompts:
        emu = Emulation(cfg, raw, fp8=False, index_topk=p.get("index_topk"))
        ref = np.fromfile(os.path.join(args.golden, p["logits_file"]), "<f4").reshape(p["shape"])
        got = emu.forward(p["ids"])
        print(f"reference-mode emulation vs transformers, {p['name']}: worst max|Δ|/max|ref| = "
              f"{rel_err_rows(got, ref).max():.3g}")


def count_differences(a, b):
    """(decisions compared, decisions that differ) for the indexer and the router, over layers x tokens."""
    out = {}
    for kind in ("indexer", "moe"):
        total = differ = 0
        for L, per_tok in a[kind].items():
            for t, chosen in per_tok.items():
                total += 1
                differ += sorted(chosen) != sorted(b[kind][L][t])
        out[kind] = [total, differ]
    return out


def effect(a, b):
    r = rel_err_rows(a, b)
    return {"mean_rel": float(r.mean()), "max_rel": float(r.max()), "max_abs": float(np.abs(a - b).max()),
            "rows_within_1e-4": int((r <= 1e-4).sum()), "rows": int(r.size)}


def cmd_e2e(args):
    global STATS
    cfg, raw = load(args.model)
    prompts, meta = golden_prompts(args.golden)
    os.makedirs(args.out, exist_ok=True)
    out = {"preset": args.preset, "checkpoint_sha256": meta["checkpoint_sha256"],
           "made_by": f"tests/reference/fp8_reference.py e2e --preset {args.preset}",
           "torch": torch.__version__,
           "format": "logits_file / reference_logits_file: raw little-endian float32 [n, vocab], row-major; "
                     "fp8 mode and reference mode of the float64 emulation",
           "prompts": []}
    for p in prompts:
        ids = p["ids"]
        STATS = Stats()
        e8 = Emulation(cfg, raw, fp8=True)
        fp8 = e8.forward(ids)
        stats = STATS.as_dict()
        STATS = None
        er = Emulation(cfg, raw, fp8=False)
        ref = er.forward(ids)
        # The FP8 effect with the reference run's indexer and router decisions imposed: quantization alone.
        pinned = Emulation(cfg, raw, fp8=True, force=er.decisions).forward(ids)
        # The same contract in float32 arithmetic (torch's fp32 summation orders): the self-noise of the contract.
        e8_32 = Emulation(cfg, raw, fp8=True, dtype=torch.float32)
        fp8_32 = e8_32.forward(ids)
        er_32 = Emulation(cfg, raw, fp8=False, dtype=torch.float32)
        ref_32 = er_32.forward(ids)
        fname, rname = f"{p['name']}.fp8.logits.f32", f"{p['name']}.ref.logits.f32"
        fp8.astype("<f4").tofile(os.path.join(args.out, fname))
        ref.astype("<f4").tofile(os.path.join(args.out, rname))
        eff = effect(fp8, ref)
        rec = {"name": p["name"], "ids": ids, "logits_file": fname, "reference_logits_file": rname,
               "shape": list(fp8.shape),
               "fp8_vs_reference_mean_rel": eff["mean_rel"], "fp8_vs_reference_max_rel": eff["max_rel"],
               "fp8_vs_reference_max_abs": eff["max_abs"],
               "fp8_vs_reference_decisions_differ": count_differences(e8.decisions, er.decisions),
               "fp8_vs_reference_with_reference_decisions": effect(pinned, ref),
               "fp8_float32_vs_float64": effect(fp8_32, fp8),
               "fp8_float32_vs_float64_decisions_differ": count_differences(e8_32.decisions, e8.decisions),
               "reference_float32_vs_float64": effect(ref_32, ref),
               "fp8_quantization_stats": stats}
        out["prompts"].append(rec)
        print(f"{args.preset} {p['name']}: FP8 effect mean {eff['mean_rel']:.3g} max {eff['max_rel']:.3g} "
              f"(max|Δ|/max|ref| per row), max|Δ| {eff['max_abs']:.3g}; decisions [compared, differ] "
              f"{rec['fp8_vs_reference_decisions_differ']}; with reference decisions: "
              f"mean {rec['fp8_vs_reference_with_reference_decisions']['mean_rel']:.3g}")
        print(f"    fp8 float32 vs float64: {rec['fp8_float32_vs_float64']} decisions "
              f"{rec['fp8_float32_vs_float64_decisions_differ']}; reference: {rec['reference_float32_vs_float64']}")
        print(f"    {stats}")
    with open(os.path.join(args.out, "meta.json"), "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")


def cmd_noise(args):
    """The self-noise of the fp8 contract (many perturbed runs) and the size of deliberate contract breaks, both
    measured against the float64 fp8 emulation, with the per-prompt statistics the C++ end-to-end test uses."""
    cfg, raw = load(args.model)
    prompts, _ = golden_prompts(args.golden)
    base = {p["name"]: Emulation(cfg, raw, fp8=True).forward(p["ids"]) for p in prompts}
    runs = [(f"float32_{o}", dict(dtype=torch.float32, order=o))
            for o in ("matmul", "transposed", "sequential", "reversed")]
    runs += [(f"noise{args.size:g}_seed{i}", dict(noise=(args.size, i))) for i in range(args.seeds)]
    runs += [(v, dict(variant=v)) for v in Emulation.VARIANTS]
    result = {}
    for label, kw in runs:
        row = {}
        for p in prompts:
            e = effect(Emulation(cfg, raw, fp8=True, **kw).forward(p["ids"]), base[p["name"]])
            row[p["name"]] = e
        result[label] = row
        print(label, "  ".join(f"{n}: mean {e['mean_rel']:.3g} max {e['max_rel']:.3g} "
                               f"tight {e['rows_within_1e-4']}/{e['rows']}" for n, e in row.items()), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"made_by": f"tests/reference/fp8_reference.py noise --seeds {args.seeds} --size {args.size:g}",
                       "what": "each run vs the float64 fp8 emulation (the golden): float32_<order> = the whole "
                               "contract in float32 with the FP8 K-block sums in that order; noise<size>_seed<i> = "
                               "float64 with every linear output times (1 + size*N(0,1)); the rest = deliberate "
                               "departures from the contract. mean_rel/max_rel: over rows of max|Δ|/max|golden|",
                       "runs": result}, f, indent=1)
            f.write("\n")


def indexer_case(g, name, T, S, Hi, D, topk, save):
    """Random post-RoPE q [T,Hi,D], k [S,D], head weights [T,Hi]; the queries are the last T of S positions."""
    q = torch.randn(T, Hi, D, generator=g)
    k = torch.randn(S, D, generator=g)
    w = torch.randn(T, Hi, generator=g)
    pos = torch.arange(S - T, S)
    qh, kh = hadamard(q.to(F64)), hadamard(k.to(F64))
    q8, qs = act_quant(qh, D, True)
    k8, ks = act_quant(kh, D, True)
    head_scale = Hi ** -0.5 * D ** -0.5
    I = (torch.einsum("thd,sd->tsh", q8, k8).clamp_min(0) * (w.to(F64) * head_scale * qs[..., 0])[:, None, :]).sum(-1)
    I = I * ks[:, 0][None, :]
    idx = np.full((T, topk), -1, np.int32)
    for t in range(T):
        vis = int(pos[t]) + 1
        order = sorted(range(vis), key=lambda s: (-float(I[t, s]), s))[:topk]
        idx[t, :len(order)] = sorted(order)
        I[t, vis:] = float("-inf")
    pre = "indexer" if name == "indexer" else name
    return {"op": "indexer", "name": name, "T": T, "S": S, "heads": Hi, "dim": D, "topk": topk,
            "head_scale": head_scale, "positions": pos.tolist(),
            "q": save(pre + "_q", q.numpy(), "f32"), "k": save(pre + "_k", k.numpy(), "f32"),
            "w": save(pre + "_w", w.numpy(), "f32"),
            "q8": save(pre + "_q8", q8.to(torch.float32).numpy(), "f32"),
            "q_scale": save(pre + "_qs", qs[..., 0].to(torch.float32).numpy(), "f32"),
            "k8": save(pre + "_k8", k8.to(torch.float32).numpy(), "f32"),
            "k_scale": save(pre + "_ks", ks[:, 0].to(torch.float32).numpy(), "f32"),
            "scores": save(pre + "_scores", I.to(torch.float32).numpy(), "f32"),
            "topk_indices": save(pre + "_topk", idx, "i32")}


def cmd_ops(args):
    g = torch.Generator().manual_seed(1234)
    os.makedirs(args.out, exist_ok=True)
    cases = []

    def save(name, arr, dtype):
        fname = f"{name}.{dtype}"
        np.ascontiguousarray(arr).astype({"f32": "<f4", "u8": "u1", "i32": "<i4"}[dtype]).tofile(
            os.path.join(args.out, fname))
        return fname

    # (a) activation quantization: edge rows + random rows; partial last group.
    for K in (200, 320):
        x = torch.randn(6, K, generator=g, dtype=torch.float32) * 3
        x[0] = 0.0                                   # all zero: amax floor
        x[1] = torch.randn(K, generator=g) * 1e-6    # tiny values: amax floor
        x[2, :] = 2.0 ** torch.randint(-8, 8, (K,), generator=g).to(torch.float32)  # powers of two
        x[3] = torch.randn(K, generator=g) * 440     # near the e4m3 max
        for ue8m0 in (True, False):
            q, s = act_quant(x.to(F64), 128, ue8m0)
            codes = q.to(torch.float32).to(torch.float8_e4m3fn).view(torch.uint8).numpy()
            name = f"act_quant_K{K}_{'ue8m0' if ue8m0 else 'plain'}"
            cases.append({"op": "act_quant", "name": name, "rows": 6, "cols": K, "group": 128, "ue8m0": ue8m0,
                          "x": save(name + "_x", x.numpy(), "f32"), "q_e4m3": save(name + "_q", codes, "u8"),
                          "scales": save(name + "_s", s.to(torch.float32).numpy(), "f32")})
    # (b) block-scaled FP8 GEMM with partial edge blocks.
    for M, N, K in ((5, 200, 320), (1, 160, 256), (3, 64, 96)):
        x = torch.randn(M, K, generator=g) * 2
        w = (torch.randn(N, K, generator=g) * 50).clamp(-448, 448).to(torch.float8_e4m3fn)
        sc = torch.rand(-(-N // 128), -(-K // 128), generator=g) * 0.01 + 0.001
        y = Linear(w, sc)(x.to(F64), True, True)
        name = f"fp8_gemm_M{M}_N{N}_K{K}"
        cases.append({"op": "fp8_gemm", "name": name, "M": M, "N": N, "K": K, "ue8m0": True,
                      "x": save(name + "_x", x.numpy(), "f32"), "w_e4m3": save(name + "_w", w.view(torch.uint8).numpy(), "u8"),
                      "scale_inv": save(name + "_scale", sc.numpy(), "f32"),
                      "y": save(name + "_y", y.to(torch.float32).numpy(), "f32")})
    # (c) Hadamard.
    for n in (64, 128):
        x = torch.randn(3, n, generator=g)
        name = f"hadamard_{n}"
        cases.append({"op": "hadamard", "name": name, "rows": 3, "n": n, "x": save(name + "_x", x.numpy(), "f32"),
                      "y": save(name + "_y", hadamard(x.to(F64)).to(torch.float32).numpy(), "f32")})
    # (d) indexer: post-RoPE fp32 q, k -> Hadamard -> FP8 -> weighted ReLU scores -> causal top-k.
    cases.append(indexer_case(g, "indexer", T=6, S=12, Hi=4, D=64, topk=5, save=save))
    # (e) hand-made activation rows at the edges of the contract, K = 250 (group 1 has 122 columns).
    K = 250
    x = (torch.rand(6, K, generator=g, dtype=torch.float64) - 0.5).to(torch.float32)
    ties = [1.0625, 1.1875, 17.0, 2.0 ** -10, 3 * 2.0 ** -10, -1.0625, 440.0, 432.0, -272.0, 0.0]
    x[0, :len(ties)] = torch.tensor(ties)
    x[0, 20] = 448.0                       # amax exactly 448: s = 1 under both rules; ties round to even codes
    x[0, 128:] *= 50
    x[0, 130] = -56.0                      # amax = 448 * 2^-3 exactly: ue8m0 s = 2^-3 (ceil of an exact log2)
    x[1, :128] *= 1000
    x[1, 5] = 448.0 * 32 * (1 + 2.0 ** -20)  # just above 448 * 2^5: ue8m0 s = 2^6
    x[1, 128:] *= 1e-4
    x[1, 200] = 1e-4                       # amax exactly at the floor
    x[2, :128] *= 1e-4
    x[2, 3] = 5e-5                         # amax below the floor: s = 1e-4 / 448
    x[2, 128:] = 0.0
    x[2, 249] = -3e4                       # one nonzero element, in the last (partial) group's last column
    x[3] = torch.exp2(torch.rand(K, generator=g) * 30 - 20) * torch.sign(torch.randn(K, generator=g))  # 2^-20..2^10
    x[4] = torch.exp2(torch.randint(-12, 9, (K,), generator=g).to(torch.float32)) * 3  # 3 * 2^k
    x[5, :128] = 448.0 * (1 - 2.0 ** -24)  # amax just below 448: ue8m0 s = 1, plain x/s -> 448 after clamping
    x[5, 128:] = torch.linspace(-300, 300, K - 128)
    for ue8m0 in (True, False):
        q, s = act_quant(x.to(F64), 128, ue8m0)
        codes = q.to(torch.float32).to(torch.float8_e4m3fn).view(torch.uint8).numpy()
        name = f"act_quant_edges_K{K}_{'ue8m0' if ue8m0 else 'plain'}"
        cases.append({"op": "act_quant", "name": name, "rows": 6, "cols": K, "group": 128, "ue8m0": ue8m0,
                      "x": save(name + "_x", x.numpy(), "f32"), "q_e4m3": save(name + "_q", codes, "u8"),
                      "scales": save(name + "_s", s.to(torch.float32).numpy(), "f32")})
    # (f) the indexer at DeepSeek's head dim (128), more heads and keys than top-k.
    cases.append(indexer_case(g, "indexer_D128", T=5, S=40, Hi=16, D=128, topk=32, save=save))
    with open(os.path.join(args.out, "manifest.json"), "w") as f:
        json.dump({"made_by": "tests/reference/fp8_reference.py ops", "torch": torch.__version__,
                   "format": "raw little-endian arrays, row-major; f32 = float32, u8 = e4m3 codes, i32 = int32",
                   "cases": cases}, f, indent=1)
        f.write("\n")
    print(f"wrote {len(cases)} op cases to {args.out}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("ops")
    a.add_argument("--out", required=True)
    b = sub.add_parser("e2e")
    b.add_argument("--preset", required=True)
    b.add_argument("--model", required=True)
    b.add_argument("--golden", required=True)
    b.add_argument("--out", required=True)
    n = sub.add_parser("noise")
    n.add_argument("--model", required=True)
    n.add_argument("--golden", required=True)
    n.add_argument("--seeds", type=int, default=16)
    n.add_argument("--size", type=float, default=1e-6)
    n.add_argument("--json")
    c = sub.add_parser("selfcheck")
    c.add_argument("--model", required=True)
    c.add_argument("--golden", required=True)
    args = ap.parse_args()
    torch.set_num_threads(2)
    {"ops": cmd_ops, "e2e": cmd_e2e, "selfcheck": cmd_selfcheck, "noise": cmd_noise}[args.cmd](args)


if __name__ == "__main__":
    main()
