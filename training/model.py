"""DeepSeek-V3.2 in PyTorch for training the shipped small model, written from the spec
(../shared/spec/dsv32-model.md) and dsinfer's numerics contract (docs/numerics.md).

One module, two numerics:
- reference (fp8=False): fp32 everywhere, weights as given, the indexer without Hadamard or FP8 — what
  transformers computes and what dsinfer's `--precision reference` computes;
- fp8 (fp8=True): DeepSeek's inference numerics as dsinfer's fp8 mode runs them, simulated for training
  (quantization-aware training): FP8 e4m3 weights in 128x128 blocks (scale = block amax / 448), activations quantized
  per 1x128 group with power-of-two (ue8m0) scales before every FP8 linear, the latent quantize-dequantized before
  it is cached, the indexer's q and k Hadamard-transformed and quantized, BF16 weights rounded to BF16. Gradients
  pass through every rounding unchanged (straight-through estimator).

Parts: MLA with q-LoRA and the compressed latent, YaRN RoPE (interleaved in MLA, half-split in the indexer), the DSA
lightning indexer with top-k selection, the sigmoid group-limited MoE router with a selection-only bias and a
shared expert, dense leading layers, and the MTP module (spec §7). Training hooks: the indexer's KL targets
(spec §12), per-expert loads for the bias update, and the sequence-wise balance loss.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

E4M3_MAX = 448.0


# --------------------------------------------------------------------------------------------- numerics --
class _StraightThrough(torch.autograd.Function):
    """fn(x) in the forward pass; the gradient passes through unchanged (straight-through estimator)."""

    @staticmethod
    def forward(ctx, x, fn):
        return fn(x)

    @staticmethod
    def backward(ctx, grad):
        return grad, None


def ste(x, fn):
    return _StraightThrough.apply(x, fn)


def round_e4m3(x):
    return x.clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn).to(torch.float32)


def pow2_ceil(s):
    """The smallest power of two >= s (s > 0): exact, through frexp as dsinfer computes it."""
    m, e = torch.frexp(s)
    return torch.where(m == 0.5, s, torch.ldexp(torch.ones_like(s), e))


def quant_act(x, group=128):
    """Quantize-dequantize the last dimension in groups of `group` (the last may be shorter): amax floored at 1e-4,
    scale amax/448 rounded up to a power of two, e4m3 round to nearest even."""
    k = x.shape[-1]
    pad = (-k) % group
    xp = F.pad(x, (0, pad)) if pad else x
    g = xp.reshape(*xp.shape[:-1], -1, group)
    amax = g.abs().amax(-1, keepdim=True).clamp_min(1e-4)
    s = pow2_ceil(amax / E4M3_MAX)
    q = round_e4m3(g / s) * s
    q = q.reshape(xp.shape)
    return q[..., :k] if pad else q


def quant_weight_blocks(w, block=128):
    """Per 128x128 block: scale = amax/448 (fp32), value e4m3(w/scale)*scale, as the exporter writes it."""
    n, k = w.shape
    pn, pk = (-n) % block, (-k) % block
    wp = F.pad(w, (0, pk, 0, pn))
    b = wp.reshape(wp.shape[0] // block, block, wp.shape[1] // block, block)
    amax = b.abs().amax(dim=(1, 3), keepdim=True).clamp_min(1e-12)
    s = amax / E4M3_MAX
    q = (round_e4m3(b / s) * s).reshape(wp.shape)
    return q[:n, :k]


def round_bf16(x):
    return x.to(torch.bfloat16).to(torch.float32)


def hadamard_matrix(n):
    h = torch.ones(1, 1)
    while h.shape[0] < n:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return h / math.sqrt(n)


# ------------------------------------------------------------------------------------------------ rope --
def yarn_inv_freq(cfg):
    d, base = cfg["qk_rope_head_dim"], float(cfg["rope_theta"])
    y = cfg.get("rope_scaling") or {}
    factor = float(y.get("factor", 1.0))
    freqs = []
    if factor > 1.0:
        orig = y["original_max_position_embeddings"]

        def corr(r):
            return d * math.log(orig / (r * 2 * math.pi)) / (2 * math.log(base))
        low = max(math.floor(corr(y["beta_fast"])), 0.0)
        high = min(math.ceil(corr(y["beta_slow"])), d - 1.0)
        if low == high:
            high += 0.001
    for j in range(d // 2):
        f = torch.tensor(1.0 / base ** (2 * j / d), dtype=torch.float32)
        if factor > 1.0:
            ramp = torch.tensor(min(max((j - low) / (high - low), 0.0), 1.0), dtype=torch.float32)
            keep = 1.0 - ramp
            f = (f / torch.tensor(factor, dtype=torch.float32)) * (1.0 - keep) + f * keep
        freqs.append(f)
    return torch.stack(freqs)


def softmax_scale(cfg):
    scale = 1.0 / math.sqrt(cfg["qk_nope_head_dim"] + cfg["qk_rope_head_dim"])
    y = cfg.get("rope_scaling") or {}
    if float(y.get("factor", 1.0)) > 1.0 and y.get("mscale_all_dim", 0.0):
        m = 0.1 * y["mscale_all_dim"] * math.log(y["factor"]) + 1.0
        scale *= m * m
    return scale


def rope_tables(inv_freq, positions):
    """cos, sin [..., d/2] for integer positions (fp32 angle, as dsinfer computes its table)."""
    angle = positions.to(torch.float32)[..., None] * inv_freq
    return torch.cos(angle.double()).float(), torch.sin(angle.double()).float()


def rope_interleaved(x, cos, sin):
    """Pairs (2j, 2j+1). x [..., d]; cos/sin broadcast to [..., d/2]."""
    a, b = x[..., 0::2], x[..., 1::2]
    return torch.stack([a * cos - b * sin, a * sin + b * cos], dim=-1).flatten(-2)


def rope_half(x, cos, sin):
    """Pairs (j, j + d/2)."""
    h = x.shape[-1] // 2
    a, b = x[..., :h], x[..., h:]
    return torch.cat([a * cos - b * sin, a * sin + b * cos], dim=-1)


# ---------------------------------------------------------------------------------------------- layers --
class Numerics:
    """Which numerics a forward uses (shared by every module of a model)."""

    def __init__(self):
        self.fp8 = False


class RMSNorm(nn.Module):
    def __init__(self, n, eps, num):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n))
        self.eps, self.num = eps, num

    def forward(self, x):
        w = round_bf16(self.weight) if self.num.fp8 else self.weight
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * w


class Linear(nn.Module):
    """y = x·Wᵀ. `fp8`: the checkpoint stores W as e4m3 with block scales (and dsinfer quantizes x); otherwise
    W is BF16 in the checkpoint. `quant_input=False` for the one FP8 weight whose input is not quantized (kv_b)."""

    def __init__(self, n_in, n_out, num, fp8=True, quant_input=True):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_out, n_in))
        nn.init.normal_(self.weight, std=n_in ** -0.5)
        self.num, self.fp8, self.quant_input = num, fp8, quant_input

    def effective_weight(self):
        if not self.num.fp8:
            return self.weight
        return ste(self.weight, quant_weight_blocks if self.fp8 else round_bf16)

    def forward(self, x):
        if self.num.fp8 and self.fp8 and self.quant_input:
            x = ste(x, quant_act)
        return F.linear(x, self.effective_weight())


class MLP(nn.Module):
    def __init__(self, dim, inner, num):
        super().__init__()
        self.gate_proj = Linear(dim, inner, num)
        self.up_proj = Linear(dim, inner, num)
        self.down_proj = Linear(inner, dim, num)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Indexer(nn.Module):
    def __init__(self, cfg, num):
        super().__init__()
        D, qr = cfg["hidden_size"], cfg["q_lora_rank"]
        self.Hi, self.Di, self.dr = cfg["index_n_heads"], cfg["index_head_dim"], cfg["qk_rope_head_dim"]
        self.wq_b = Linear(qr, self.Hi * self.Di, num)
        self.wk = Linear(D, self.Di, num)
        self.k_norm = nn.LayerNorm(self.Di, eps=1e-6)
        self.weights_proj = Linear(D, self.Hi, num, fp8=False)
        self.num = num
        self.register_buffer("hadamard", hadamard_matrix(self.Di), persistent=False)

    def forward(self, x, qr, cos, sin):
        """Index scores I [B, T, T] (not yet causally masked)."""
        B, T, _ = x.shape
        q = self.wq_b(qr).view(B, T, self.Hi, self.Di)
        q = torch.cat([rope_half(q[..., :self.dr], cos[:, :, None], sin[:, :, None]), q[..., self.dr:]], -1)
        if self.num.fp8:
            kn = F.layer_norm(self.wk(x), (self.Di,), round_bf16(self.k_norm.weight), round_bf16(self.k_norm.bias),
                              1e-6)
        else:
            kn = self.k_norm(self.wk(x))
        k = torch.cat([rope_half(kn[..., :self.dr], cos, sin), kn[..., self.dr:]], -1)
        if self.num.fp8:
            q = q @ self.hadamard
            k = k @ self.hadamard
            q = ste(q, lambda t: quant_act(t, self.Di))
            k = ste(k, lambda t: quant_act(t, self.Di))
        w = self.weights_proj(x) * (self.Hi ** -0.5 * self.Di ** -0.5)  # [B, T, Hi]
        s = torch.einsum("bthd,bsd->bhts", q, k).relu()
        return torch.einsum("bhts,bth->bts", s, w)


class MLA(nn.Module):
    def __init__(self, cfg, num):
        super().__init__()
        D = cfg["hidden_size"]
        self.H, self.dn, self.dr, self.dv = (cfg["num_attention_heads"], cfg["qk_nope_head_dim"],
                                             cfg["qk_rope_head_dim"], cfg["v_head_dim"])
        self.kvr = cfg["kv_lora_rank"]
        eps = cfg["rms_norm_eps"]
        self.q_a_proj = Linear(D, cfg["q_lora_rank"], num)
        self.q_a_layernorm = RMSNorm(cfg["q_lora_rank"], eps, num)
        self.q_b_proj = Linear(cfg["q_lora_rank"], self.H * (self.dn + self.dr), num)
        self.kv_a_proj_with_mqa = Linear(D, self.kvr + self.dr, num)
        self.kv_a_layernorm = RMSNorm(self.kvr, eps, num)
        self.kv_b_proj = Linear(self.kvr, self.H * (self.dn + self.dv), num, quant_input=False)
        self.o_proj = Linear(self.H * self.dv, D, num)
        self.indexer = Indexer(cfg, num) if "index_n_heads" in cfg else None
        self.topk = cfg.get("index_topk", 0)
        self.scale = softmax_scale(cfg)
        self.num = num

    def forward(self, x, cos, sin, mode):
        """mode: 'dense' (no indexer), 'warmup' (dense attention, indexer scored against it), 'sparse' (top-k),
        'infer' (sparse where some query sees more than index_topk keys, as dsinfer runs it). Returns the output
        and the indexer's KL loss (a tensor, 0 when not computed)."""
        B, T, _ = x.shape
        qr = self.q_a_layernorm(self.q_a_proj(x))
        q = self.q_b_proj(qr).view(B, T, self.H, self.dn + self.dr)
        q_nope = q[..., :self.dn]
        q_pe = rope_interleaved(q[..., self.dn:], cos[:, :, None], sin[:, :, None])
        kv = self.kv_a_proj_with_mqa(x)
        c = self.kv_a_layernorm(kv[..., :self.kvr])
        if self.num.fp8:
            c = ste(c, quant_act)
        k_pe = rope_interleaved(kv[..., self.kvr:], cos, sin)  # [B, T, dr]
        kvb = self.kv_b_proj(c).view(B, T, self.H, self.dn + self.dv)
        k_nope, v = kvb[..., :self.dn], kvb[..., self.dn:]
        qf = torch.cat([q_nope, q_pe], -1).transpose(1, 2)  # [B, H, T, dn + dr]
        kf = torch.cat([k_nope, k_pe[:, :, None].expand(B, T, self.H, self.dr)], -1).transpose(1, 2)
        causal = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
        allowed = None  # None: plain causal attention
        kl = x.new_zeros(())
        index_scores = None
        if self.indexer is not None and mode != "dense":
            sparse = mode == "sparse" or (mode == "infer" and T > self.topk)
            xi, qri = (x, qr) if mode == "infer" else (x.detach(), qr.detach())  # training: input detached
            if mode == "warmup" or sparse:
                index_scores = self.indexer(xi, qri, cos, sin).masked_fill(~causal, float("-inf"))
            if sparse and T > self.topk:
                # Ties go to the earlier position (a stable sort), as dsinfer selects: an untrained or saturated
                # indexer gives many exactly equal scores (every head's ReLU at zero).
                top = index_scores.sort(dim=-1, descending=True, stable=True).indices[..., :self.topk]
                sel = torch.zeros(B, T, T, dtype=torch.bool, device=x.device).scatter_(-1, top, True)
                allowed = sel & causal
        # PyTorch's fused CPU attention needs v as wide as q and k: pad v with zeros (10x faster than the
        # unfused path at these shapes) and drop the padding from the output.
        vf = F.pad(v, (0, self.dn + self.dr - self.dv)).transpose(1, 2)
        if allowed is None:
            o = F.scaled_dot_product_attention(qf, kf, vf, is_causal=True, scale=self.scale)
        else:
            o = F.scaled_dot_product_attention(qf, kf, vf, attn_mask=allowed[:, None], scale=self.scale)
        o = o[..., :self.dv].transpose(1, 2).reshape(B, T, self.H * self.dv)
        if index_scores is not None and mode in ("warmup", "sparse"):
            # KL(p_t || softmax(I_t)) over the keys attention used (spec §12): the target is the attention
            # distribution summed over heads, L1-normalised; neither side sends gradient into the main model.
            mask = causal[None] if allowed is None else allowed
            with torch.no_grad():
                scores = (qf @ kf.transpose(-1, -2)) * self.scale
                target = scores.masked_fill(~mask[:, None], float("-inf")).softmax(-1).sum(1)
                target = target / target.sum(-1, keepdim=True)
                logt = target.clamp_min(1e-30).log()
            logq = index_scores.masked_fill(~mask, float("-inf")).log_softmax(-1)
            terms = torch.where(target > 0, target * (logt - logq), torch.zeros_like(target))
            kl = terms.sum(-1)  # [B, T]
        return self.o_proj(o), kl


class MoE(nn.Module):
    def __init__(self, cfg, num):
        super().__init__()
        D, I = cfg["hidden_size"], cfg["moe_intermediate_size"]
        self.E, self.K = cfg["n_routed_experts"], cfg["num_experts_per_tok"]
        self.G, self.TG = cfg["n_group"], cfg["topk_group"]
        self.rsf = cfg["routed_scaling_factor"]
        self.gate = Linear(D, self.E, num, fp8=False)
        self.register_buffer("e_score_correction_bias", torch.zeros(self.E))
        self.experts = nn.ModuleList(MLP(D, I, num) for _ in range(self.E))
        self.shared_experts = MLP(D, I * cfg["n_shared_experts"], num)
        self.valid = None  # [B·T] bool: the real tokens of the next forward (training only)
        self.load, self.aux = None, None  # set by balance_stats

    def route(self, x):
        p = torch.sigmoid(self.gate(x))  # [N, E] fp32
        b = p.detach() + self.e_score_correction_bias
        g = b.view(-1, self.G, self.E // self.G)
        gscore = g.topk(2, dim=-1).values.sum(-1)
        keep = torch.zeros_like(gscore, dtype=torch.bool).scatter_(-1, gscore.topk(self.TG, -1).indices, True)
        b = b.masked_fill(~keep.repeat_interleave(self.E // self.G, dim=-1), float("-inf"))
        idx = b.topk(self.K, dim=-1).indices
        w = p.gather(-1, idx)
        w = w / w.sum(-1, keepdim=True) * self.rsf
        return p, idx, w

    def forward(self, x):
        shape = x.shape
        x = x.reshape(-1, shape[-1])
        p, idx, w = self.route(x)
        out = self.shared_experts(x)
        # Every (token, expert) pair sorted by expert: one gather of the inputs, each expert on a contiguous
        # slice, one scatter back, then the weighted sum over a token's K experts.
        flat = idx.reshape(-1)
        order = flat.argsort()
        counts = torch.bincount(flat, minlength=self.E)
        self.balance_stats(p, idx, shape)
        xs = x[order // self.K]
        # split, not slicing: a slice's backward fills a zero tensor of the whole [N·K, D] for each expert, which
        # cost 40 % of a training step; split's backward is one concatenation.
        ys = torch.cat([self.experts[e](xe) for e, xe in enumerate(xs.split(counts.tolist())) if xe.shape[0]])
        y = torch.empty_like(ys).index_copy(0, order, ys).view(-1, self.K, shape[-1])
        routed = (y * w[..., None]).sum(1)
        return (out + routed).reshape(shape)

    def balance_stats(self, p, idx, shape):
        """Per-expert load over the real (non-padding) tokens, for the bias update, and the sequence-wise balance
        loss of DeepSeek-V3 (f_i·P_i summed over experts, averaged over sequences). `self.valid` ([B·T] bool,
        set by the trainer) marks the real tokens; without it nothing is recorded."""
        if self.valid is None:
            self.load, self.aux = None, None
            return
        B, T = shape[0], shape[1]
        v = self.valid.reshape(B, T).to(p.dtype)
        hits = torch.zeros(B * T, self.E, dtype=p.dtype).scatter_(-1, idx, 1.0).reshape(B, T, self.E) * v[..., None]
        self.load = hits.sum((0, 1)).detach()
        ntok = v.sum(1).clamp_min(1.0)[:, None]
        f = hits.sum(1) * self.E / (self.K * ntok)
        share = (p / p.sum(-1, keepdim=True)).reshape(B, T, self.E) * v[..., None]
        self.aux = (f.detach() * share.sum(1) / ntok).sum(-1).mean()


class Block(nn.Module):
    def __init__(self, cfg, layer, num):
        super().__init__()
        eps = cfg["rms_norm_eps"]
        self.input_layernorm = RMSNorm(cfg["hidden_size"], eps, num)
        self.self_attn = MLA(cfg, num)
        self.post_attention_layernorm = RMSNorm(cfg["hidden_size"], eps, num)
        if layer >= cfg["first_k_dense_replace"]:
            self.mlp = MoE(cfg, num)
        else:
            self.mlp = MLP(cfg["hidden_size"], cfg["intermediate_size"], num)

    def forward(self, h, cos, sin, mode):
        a, kl = self.self_attn(self.input_layernorm(h), cos, sin, mode)
        h = h + a
        return h + self.mlp(self.post_attention_layernorm(h)), kl


class MTP(nn.Module):
    """The multi-token-prediction module (spec §7): predicts token i+2 from the main model's final-normed hidden
    state at i and the embedding of token i+1; its own decoder layer; embedding and head shared with the model."""

    def __init__(self, cfg, layer, num):
        super().__init__()
        D, eps = cfg["hidden_size"], cfg["rms_norm_eps"]
        self.enorm = RMSNorm(D, eps, num)
        self.hnorm = RMSNorm(D, eps, num)
        self.eh_proj = Linear(2 * D, D, num, fp8=False)
        self.block = Block(cfg, layer, num)
        self.shared_head_norm = RMSNorm(D, eps, num)

    def forward(self, emb_next, h_normed, cos, sin, mode):
        u = self.eh_proj(torch.cat([self.enorm(emb_next), self.hnorm(h_normed)], -1))
        v, kl = self.block(u, cos, sin, mode)
        return self.shared_head_norm(v), kl


class DeepseekV32(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.num = Numerics()
        D, V = cfg["hidden_size"], cfg["vocab_size"]
        self.embed_tokens = nn.Embedding(V, D)
        nn.init.normal_(self.embed_tokens.weight, std=1.0)
        self.layers = nn.ModuleList(Block(cfg, i, self.num) for i in range(cfg["num_hidden_layers"]))
        self.norm = RMSNorm(D, cfg["rms_norm_eps"], self.num)
        self.lm_head = Linear(D, V, self.num, fp8=False)
        nn.init.normal_(self.lm_head.weight, std=D ** -0.5)
        n_mtp = cfg.get("num_nextn_predict_layers", 0)
        self.mtp = MTP(cfg, cfg["num_hidden_layers"], self.num) if n_mtp else None
        self.register_buffer("inv_freq", yarn_inv_freq(cfg), persistent=False)

    def set_fp8(self, on):
        self.num.fp8 = on

    def embed(self, ids):
        w = self.embed_tokens.weight
        if self.num.fp8:
            w = ste(w, round_bf16)
        return F.embedding(ids, w)

    def tie_head(self):
        """Trains the output head as the embedding times D^-1/2 (a power of two for D = 256, so exact in BF16); the
        checkpoint still holds both tensors, as DeepSeek-V3.2's does (sync_tied_head writes the head's copy). The
        tie is a training choice, not an architecture change: it gives the model from the first step a head that
        reads back whatever embedding attention moved to a position, i.e. copying a token — for every token,
        including ones too rare in the corpus to have trained a head row of their own."""
        self.head_scale = self.cfg["hidden_size"] ** -0.5

    def sync_tied_head(self):
        if getattr(self, "head_scale", None) is not None:
            with torch.no_grad():
                self.lm_head.weight.copy_(self.embed_tokens.weight * self.head_scale)

    def head(self, h):
        if getattr(self, "head_scale", None) is None:
            return self.lm_head(h)
        w = self.embed_tokens.weight * self.head_scale
        if self.num.fp8:
            w = ste(w, round_bf16)
        return F.linear(h, w)

    def moe_layers(self):
        out = [b.mlp for b in self.layers if isinstance(b.mlp, MoE)]
        if self.mtp is not None and isinstance(self.mtp.block.mlp, MoE):
            out.append(self.mtp.block.mlp)
        return out

    def forward(self, ids, mode="infer", with_mtp=True):
        """ids [B, T] from position 0. Returns (final-normed hidden [B, T, D], MTP hidden [B, T-1, D] or None,
        indexer KL per layer [list of [B, T] or scalars])."""
        B, T = ids.shape
        pos = torch.arange(T, device=ids.device)
        cos, sin = rope_tables(self.inv_freq, pos)
        cos, sin = cos[None].expand(B, -1, -1), sin[None].expand(B, -1, -1)
        h = self.embed(ids)
        kls = []
        for block in self.layers:
            h, kl = block(h, cos, sin, mode)
            kls.append(kl)
        hn = self.norm(h)
        hm = None
        if with_mtp and self.mtp is not None and T > 1:
            hm, kl = self.mtp(self.embed(ids[:, 1:]), hn[:, :-1], cos[:, :-1], sin[:, :-1], mode)
            kls.append(kl)
        return hn, hm, kls

    def logits(self, ids, mode="infer"):
        """Reference forward for tests: logits [B, T, V] of the main model."""
        hn, _, _ = self.forward(ids, mode, with_mtp=False)
        return self.head(hn)

    def mtp_logits(self, ids, mode="infer"):
        hn, hm, _ = self.forward(ids, mode)
        return self.head(hm)
