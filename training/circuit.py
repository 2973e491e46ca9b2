"""A constructed starting point: the model begins training with a working induction (copy) circuit.

Why (training/LOG.md, 2026-12-04): trained from random weights, this model never learned content-based copying in
the tokens this machine affords — induction heads appear only after ~10^7 tokens at our batch size and context
length (their emergence time grows with the square of the context length), and a tool call is mostly copying (a
tool's name from the tool list, argument values from the request, the answer from the tool result). So instead of
waiting for the circuit to emerge, the initial weights contain it, written down the way the interpretability
literature describes a trained one (a previous-token head feeding an induction head), and training starts from
there: every weight stays trainable, nothing is frozen or masked, and the architecture is exactly DeepSeek-V3.2's.

The residual stream (hidden_size 256) is laid out in coordinates:
  T = [0, 64)    token identity: each embedding row is a random direction of norm 8 here;
  C = 64         a constant (the same value in every embedding row): attention needs a content-free input to
                 make a purely positional query and key (RoPE supplies the position);
  P = [128, 192) previous token: layer 0 writes the T part of the token before each position here;
  Q = [192, 256) the token identity again (the same vector as in T), which no layer writes: the MTP block's clean
                 copy of the current token (T also receives layer 1's copied token);
the other coordinates start empty (small noise) and are free for whatever training puts there.

Layer 0, heads 0-1 (previous-token heads): the query and the rope key read only C, so every position makes the
same vectors and the score depends only on the distance; their rope phases put the maximum at distance 1 (a small
linear program picks the frequency weights that keep every other distance at least `margin` below it). Values
read the T part of the latent; the output projection writes it into P.
Layer 1, heads 0-1 (induction heads): the query reads T (the current token), the key reads P (the token before the
key's position), so a position attends to where its own token occurred before and copies (value = T of that
position's own token, i.e. the token that followed) into T, weighted above the current token so the tied head
(model.tie_head) reads out the copied token.
Index head 0 of layers 0 and 1 ranks the keys those heads attend to, so top-k sparse attention keeps them; its score
has a positive offset, so no score is exactly 0 and top-k never chooses among ties. The MTP block is an induction
head one token further (see below). All other heads, the MLPs / experts and layers 2-3 start with zero output
projections (their branches add nothing until training grows them), so the circuit's subspaces are clean at the
start.
"""
import math

import numpy as np
import torch

T0, T1 = 0, 64
C = 64
P0, P1 = 128, 192
Q0, Q1 = 192, 256  # a second copy of the token identity that no layer writes: the MTP head's clean value


def induction_heads(attn, cfg, key, value, match_scale, copy_gain, noise):
    """Heads 0 and 1 of an MLA layer as induction heads: the query reads T (this position's token), the key the
    residual coordinates `key` and the value `value` of each earlier position (64 each; one half per head, 32
    coordinates matched by each), the output goes into T times copy_gain."""
    D, H = cfg["hidden_size"], cfg["num_attention_heads"]
    dn, dr, dv, qr, kvr = (cfg["qk_nope_head_dim"], cfg["qk_rope_head_dim"], cfg["v_head_dim"], cfg["q_lora_rank"],
                           cfg["kv_lora_rank"])
    nt = T1 - T0
    wkv = attn.kv_a_proj_with_mqa.weight
    wkv.zero_()
    wkv[:nt, key[0]:key[1]] = torch.eye(nt)       # latent[0:64] = the key coordinates
    wkv[nt:2 * nt, value[0]:value[1]] = torch.eye(nt)  # latent[64:128] = the value coordinates
    wqa = attn.q_a_proj.weight
    wqa.mul_(noise)
    wqa[:nt].zero_()
    wqa[:nt, T0:T1] = torch.eye(nt)               # q latent[0:64] = this position's token
    wqa[nt].zero_()
    wqa[nt, C] = 1.0                              # q latent[64] = the constant: the index head's offset (below)
    wqb = attn.q_b_proj.weight.view(H, dn + dr, qr)
    wkb = attn.kv_b_proj.weight.view(H, dn + dv, kvr)
    wo = attn.o_proj.weight.view(D, H, dv)
    # match_scale: the product of the query and key gains times the softmax scale (0.6: 0.95 of random repeats
    # copied at 256 tokens before training, training/LOG.md), for token entries of sqrt(qr / nt) in the q latent;
    # the constant beside the token (as large as the token's norm) shrinks them by sqrt(2), made up here.
    alpha = beta = math.sqrt(match_scale / attn.scale)
    alpha *= math.sqrt(2.0)
    for h in (0, 1):
        wqb[h].zero_()
        wqb[h, :dn, h * dn:(h + 1) * dn] = torch.eye(dn) * alpha
        wkb[h].zero_()
        wkb[h, :dn, h * dn:(h + 1) * dn] = torch.eye(dn) * beta
        wkb[h, dn:, nt + h * dv:nt + (h + 1) * dv] = torch.eye(dv)
        wo[T0 + h * dv:T0 + (h + 1) * dv, h] = torch.eye(dv) * copy_gain


def indexer_reset(ix, noise):
    """Zero key and head weights, a quiet query; returns wq_b viewed [heads, dim, q latent] with head 0 zeroed."""
    ix.wq_b.weight.mul_(noise)
    ix.wk.weight.zero_()
    ix.weights_proj.weight.zero_()
    wqb = ix.wq_b.weight.view(ix.Hi, ix.Di, -1)
    wqb[0].zero_()
    return wqb


def indexer_match(ix, key, x_c, noise, nt=64):
    """Index head 0 ranks the keys whose coordinates [key, key + 32) match the query's token (q latent [0:32]), in
    the non-rope half, so whatever the distance; x_c is the constant C after the layer's input norm.
    A ReLU index score of exactly 0 ties with every other 0, and which tied keys top-k keeps is then up to the
    implementation's tie-breaking (transformers and dsinfer differ: training/LOG.md, 2026-12-04). So the score
    gets a positive offset about as large as a full match: the constant q latent[nt] against a constant key pair
    in the lowest-frequency rope pair (j = half - 1: its rotation stays below 0.01 rad over 2,000 positions),
    made zero-mean for the key's LayerNorm by the pair's neighbour."""
    wqb = indexer_reset(ix, noise)
    nr = ix.Di - ix.dr
    half = ix.dr // 2
    wqb[0, ix.dr:, :nr] = torch.eye(nr)
    ix.wk.weight[ix.dr:, key:key + nr] = torch.eye(nr)
    # A full match scores about nr * t * k (t: a token entry of the q latent, k ~ 1: a LayerNorm'd key entry). The
    # constant latent equals the token's norm, i.e. sqrt(nt) * t, so a query weight of nr / (b sqrt(nt)) against
    # key entries +b / -b adds about nr * t: an offset as large as a full match.
    b = math.sqrt(nr / 2)
    wqb[0, half - 1, nt] = nr / (b * math.sqrt(nt))
    ix.wk.weight[half - 1, C] = b / x_c
    ix.wk.weight[half - 2, C] = -b / x_c
    ix.weights_proj.weight[0, C] = 1.0 / x_c


def rope_weights(inv_freq, max_dist, n_freq=16):
    """Non-negative amplitudes w_f (sum 1) for the rope pairs such that s(d) = sum_f w_f cos(theta_f (d - 1)) has
    its maximum at distance d = 1 with the largest margin over every other distance 0 <= d < max_dist (an LP
    solved by a few thousand steps of projected subgradient ascent; exactness does not matter, the margin does).
    Returns (w, margin)."""
    theta = inv_freq[:n_freq].double().numpy()
    d = np.arange(max_dist, dtype=np.float64)
    d = d[d != 1]
    gap = 1.0 - np.cos(np.outer(d - 1, theta))  # [dists, freqs]: s(1) - s(d) per unit amplitude
    w = np.full(len(theta), 1.0 / len(theta))
    best, best_w = -1.0, w.copy()
    for it in range(4000):
        m = gap @ w
        k = int(np.argmin(m))
        if m[k] > best:
            best, best_w = float(m[k]), w.copy()
        w = w + (0.5 / (1 + it) ** 0.5) * gap[k]
        w = np.maximum(w, 0.0)
        w = w / w.sum()
    return torch.tensor(best_w, dtype=torch.float32), best


@torch.no_grad()
def init_copy_circuit(model, seed, max_dist=1024, prev_logit_margin=12.0, match_scale=0.6, copy_gain=5.0,
                      head_gain=3.0, noise=0.02):
    cfg = model.cfg
    D, V = cfg["hidden_size"], cfg["vocab_size"]
    H, dn, dr, dv = cfg["num_attention_heads"], cfg["qk_nope_head_dim"], cfg["qk_rope_head_dim"], cfg["v_head_dim"]
    kvr, qr = cfg["kv_lora_rank"], cfg["q_lora_rank"]
    nt = T1 - T0
    assert D == 256 and dn == 32 and dv == 32 and dr == 32 and kvr == 128 and nt == 2 * dn and qr >= nt, \
        "the circuit's layout is written for the shipped model's sizes"
    g = torch.Generator().manual_seed(seed)

    # Embedding: random directions of norm sqrt(nt) in T, the constant in C, a little noise elsewhere.
    e = torch.randn(V, nt, generator=g)
    e = e / e.norm(dim=-1, keepdim=True) * math.sqrt(nt)
    emb = torch.randn(V, D, generator=g) * noise
    emb[:, T0:T1] = e
    emb[:, C] = math.sqrt(nt)
    emb[:, P0:P1] = 0.0
    emb[:, Q0:Q1] = e
    model.embed_tokens.weight.copy_(emb)

    # Every residual branch starts silent, except the circuit's heads below.
    for block in list(model.layers):
        block.self_attn.o_proj.weight.zero_()
        mlp = block.mlp
        for m in ([mlp] if not hasattr(mlp, "experts") else list(mlp.experts) + [mlp.shared_experts]):
            m.down_proj.weight.zero_()

    # ---- layer 0: previous-token heads 0 and 1 -------------------------------------------------------------
    a0 = model.layers[0].self_attn
    # Residual at layer 0: T and Q of norm sqrt(nt) (entries ~1) and C = sqrt(nt), so rms = sqrt(3 nt / D).
    rms0 = math.sqrt(3 * nt / D)
    x_c = math.sqrt(nt) / rms0                    # the constant after input_layernorm
    w, margin = rope_weights(model.inv_freq, max_dist)
    # score(d) = scale * sum_f |q_f| |k_f| cos(theta_f (d - 1)); want scale * sum_f |q_f||k_f| * margin = target.
    total = prev_logit_margin / (max(margin, 1e-3) * a0.scale)
    amp = (w * total).sqrt()                      # |q_f| = |k_f| = sqrt(w_f * total)
    theta = model.inv_freq[:dr // 2]
    wkv = a0.kv_a_proj_with_mqa.weight
    wkv.zero_()
    wkv[:nt, T0:T1] = torch.eye(nt)               # latent = the token (T)
    for f in range(dr // 2):                      # rope key: amp_f * (1, 0) from the constant
        wkv[kvr + 2 * f, C] = amp[f] / x_c
    wqa = a0.q_a_proj.weight
    wqa.mul_(noise)
    wqa[0].zero_()
    wqa[0, C] = 1.0                               # q latent dim 0: the constant (after q_a_layernorm, ~sqrt(qr))
    q_lat = math.sqrt(qr)
    wqb = a0.q_b_proj.weight.view(H, dn + dr, qr)
    wkb = a0.kv_b_proj.weight.view(H, dn + dv, kvr)
    c_lat = math.sqrt(kvr / nt)                   # latent entries after kv_a_layernorm (T fills nt of kvr dims)
    wo = a0.o_proj.weight.view(D, H, dv)
    for h in (0, 1):
        wqb[h].zero_()
        for f in range(dr // 2):                  # rope query: amp_f * (cos(-theta_f), sin(-theta_f))
            wqb[h, dn + 2 * f, 0] = amp[f] * math.cos(-float(theta[f])) / q_lat
            wqb[h, dn + 2 * f + 1, 0] = amp[f] * math.sin(-float(theta[f])) / q_lat
        wkb[h].zero_()
        wkb[h, dn:, h * dv:(h + 1) * dv] = torch.eye(dv)            # value: half of the token's T
        wo[P0 + h * dv:P0 + (h + 1) * dv, h] = torch.eye(dv) / c_lat  # written into P at T's scale

    # ---- layer 1: induction heads 0 and 1 (query T, key P, value T) ----------------------------------------
    induction_heads(model.layers[1].self_attn, cfg, key=(P0, P1), value=(T0, T1), match_scale=match_scale,
                    copy_gain=copy_gain, noise=noise)
    model.norm.weight.fill_(head_gain)

    # ---- the lightning indexers of layers 0 and 1: select what those heads attend to -----------------------
    # With index_topk keys per query, sparse attention sees only what the indexer ranks highest, so the circuit
    # needs the indexer to rank the previous position first (layer 0) and the earlier occurrences of the current
    # token (layer 1). Index head 0 of each does it; heads 1-3 start with zero weight (weights_proj rows).
    ix = model.layers[0].self_attn.indexer
    half = ix.dr // 2
    wqb = indexer_reset(ix, noise)
    a = w.sqrt()[:half]
    for j in range(half):
        # rope_half pairs (j, j + half): query a_j (cos -theta_j, sin -theta_j) from the constant q latent, key
        # b_j (1, 0) from C, made zero-mean for the key's LayerNorm by -b_j in the non-rope half.
        wqb[0, j, 0] = a[j] * math.cos(-float(theta[j])) / q_lat
        wqb[0, j + half, 0] = a[j] * math.sin(-float(theta[j])) / q_lat
        ix.wk.weight[j, C] = a[j] / x_c
        ix.wk.weight[ix.dr + j, C] = -a[j] / x_c
    # A positive offset (1.2 times the largest the cosine sum can fall below 0), so no score is exactly 0 and top-k
    # never chooses among ties (see indexer_match): the constant query against a +b / -b pair of key entries.
    offset = 1.2 * float((a * a).sum())
    b = math.sqrt(offset)
    wqb[0, ix.Di - 1, 0] = b / q_lat
    ix.wk.weight[ix.Di - 1, C] = b / x_c
    ix.wk.weight[ix.Di - 2, C] = -b / x_c
    ix.weights_proj.weight[0, C] = 1.0 / x_c
    x_c1 = math.sqrt(nt) / math.sqrt(4 * nt / D)  # C after the norm once P is filled (layer 1, the MTP block)
    indexer_match(model.layers[1].self_attn.indexer, key=P0, x_c=x_c1, noise=noise)

    # ---- the MTP module: an induction head one token further ------------------------------------------------
    # The MTP block at position i sees the embedding of token i+1 and the main model's final state at i, which
    # holds token i in Q (T too, plus layer 1's copy) and token i-1 in P. Its eh_proj lays them out as: T = token
    # i+1 (the query), P = token i-1 (key), Q = token i (value): a position j whose token j-1 equals token i+1
    # holds in Q the token that followed it, token i+2 by induction, which the head writes into T.
    if model.mtp is not None:
        mtp = model.mtp
        wp = mtp.eh_proj.weight  # [D, 2D]: inputs enorm(embedding) | hnorm(main hidden)
        wp.zero_()
        e_rms = math.sqrt(3 * nt / D)             # embedding: T and Q of norm sqrt(nt), C = sqrt(nt)
        h_rms = math.sqrt(4 * nt / D)             # main hidden at init: T, C, P, Q at that scale
        wp[T0:T1, T0:T1] = torch.eye(nt) * e_rms
        wp[C, C] = e_rms
        wp[P0:P1, D + P0:D + P1] = torch.eye(nt) * h_rms
        wp[Q0:Q1, D + Q0:D + Q1] = torch.eye(nt) * h_rms
        for m in list(mtp.block.mlp.experts) + [mtp.block.mlp.shared_experts]:
            m.down_proj.weight.zero_()
        mtp.block.self_attn.o_proj.weight.zero_()
        induction_heads(mtp.block.self_attn, cfg, key=(P0, P1), value=(Q0, Q1), match_scale=match_scale,
                        copy_gain=copy_gain, noise=noise)
        indexer_match(mtp.block.self_attn.indexer, key=P0, x_c=x_c1, noise=noise)
        mtp.shared_head_norm.weight.fill_(head_gain)
    return {"rope_margin": margin, "rope_amp": amp.tolist()}
