#!/usr/bin/env python3
"""The most MTP speculation can gain where a decode step is bound by reading the weights (issue 18).

A verification of k drafts evaluates k + 1 rows in one forward. Every weight but the routed experts is read once
for all rows, but each row picks its own top_k of the n_routed_experts in every MoE layer, so the step reads the
union of the rows' experts. If rows pick their experts independently and each expert is as likely as any other
(what the routers' load balancing aims at), r rows use n·(1 - (1 - top_k/n)^r) distinct experts per layer on
average. Time per step ∝ bytes read, so with drafts accepted at rate a (each draft accepted only if the one before
was) speculation with k drafts yields at most

    (1 + a + ... + a^k) / (bytes(verify k + 1 rows) / bytes(one row) + k · bytes(one draft) / bytes(one row))

times the plain decode rate. Correlated routing of neighbouring tokens (shared experts) would raise it. Where a step
is not bound by its weight bytes (a large batch, which reads every expert anyway; a step bound by latency) the bound
does not apply, which is where DeepSeek's reported 1.8x belongs.

    python3 bench/speculative_bound.py                       # DeepSeek-V3.2's dimensions (the spec's table)
    python3 bench/speculative_bound.py --config DIR/config.json [--step-bytes B] [--free-drafts]

--step-bytes: a decode step's weight bytes as dsinfer counts them (bench_model prints "MB read per decoded token"),
to check this script's count. Weights are counted as stored in DeepSeek's checkpoints: projections FP8 (1 byte),
embedding, head, router, indexer weights_proj and the MTP's eh_proj BF16 (2 bytes), norms and scales left out.
"""
import argparse
import json

# DeepSeek-V3.2's config.json values (shared/spec/dsv32-model.md, §1).
V32 = dict(vocab_size=129280, hidden_size=7168, intermediate_size=18432, moe_intermediate_size=2048,
           num_hidden_layers=61, first_k_dense_replace=3, num_attention_heads=128, n_routed_experts=256,
           n_shared_experts=1, num_experts_per_tok=8, q_lora_rank=1536, kv_lora_rank=512, qk_nope_head_dim=128,
           qk_rope_head_dim=64, v_head_dim=128, index_n_heads=64, index_head_dim=128)


def attention_bytes(c):
    h, H = c["hidden_size"], c["num_attention_heads"]
    qk = c["qk_nope_head_dim"] + c["qk_rope_head_dim"]
    b = c["q_lora_rank"] * h if c.get("q_lora_rank") else 0  # wq_a
    b += (c["q_lora_rank"] or h) * H * qk  # wq_b (or wq)
    b += h * (c["kv_lora_rank"] + c["qk_rope_head_dim"])  # wkv_a
    b += c["kv_lora_rank"] * H * (c["qk_nope_head_dim"] + c["v_head_dim"])  # wkv_b
    b += H * c["v_head_dim"] * h  # wo
    if c.get("index_n_heads"):
        Hi, Di = c["index_n_heads"], c["index_head_dim"]
        b += c["q_lora_rank"] * Hi * Di + h * Di + 2 * h * Hi  # indexer wq_b, wk (FP8), weights_proj (BF16)
    return b


def expert_bytes(c):
    return 3 * c["hidden_size"] * c["moe_intermediate_size"]


def step_bytes(c):
    """(bytes every row shares, routed-expert bytes one row reads) of one decode step."""
    h, L, dense = c["hidden_size"], c["num_hidden_layers"], c["first_k_dense_replace"]
    moe_layers = L - dense
    shared = 2 * c["vocab_size"] * h  # lm_head (BF16); the embedding's one row is left out
    shared += L * attention_bytes(c)
    shared += dense * 3 * h * c["intermediate_size"]
    shared += moe_layers * (2 * c["n_routed_experts"] * h + c["n_shared_experts"] * expert_bytes(c))  # router
    routed = moe_layers * c["num_experts_per_tok"] * expert_bytes(c)
    return shared, routed


def draft_bytes(c):
    """One MTP draft row: eh_proj (BF16), one layer's attention and MoE with top_k experts, the lm_head."""
    h = c["hidden_size"]
    return (2 * 2 * h * h + attention_bytes(c) + 2 * c["n_routed_experts"] * h +
            (c["n_shared_experts"] + c["num_experts_per_tok"]) * expert_bytes(c) + 2 * c["vocab_size"] * h)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", help="a checkpoint's config.json (default: DeepSeek-V3.2's dimensions)")
    ap.add_argument("--step-bytes", type=float, help="dsinfer's count of a decode step's weight bytes")
    ap.add_argument("--acceptance", default="0.8,0.85,0.9,1.0", help="draft acceptance rates")
    ap.add_argument("--k", default="1,2,3", help="drafts per verification")
    ap.add_argument("--free-drafts", action="store_true",
                    help="drafts cost nothing (what bench_speculative --draft oracle:P measures)")
    args = ap.parse_args()
    c = dict(V32)
    if args.config:
        with open(args.config) as f:
            c.update(json.load(f))
    n, top = c["n_routed_experts"], c["num_experts_per_tok"]
    shared, routed = step_bytes(c)
    one = shared + routed
    print(f"{'DeepSeek-V3.2' if not args.config else args.config}: a decode step reads {one / 1e6:,.1f} MB "
          f"({routed / one:.0%} routed experts: {top} of {n} in {c['num_hidden_layers'] - c['first_k_dense_replace']}"
          f" layers); a draft {draft_bytes(c) / 1e6:,.1f} MB")
    if args.step_bytes:
        print(f"dsinfer counts {args.step_bytes / 1e6:,.1f} MB ({args.step_bytes / one:.3f} of this count)")
    print()
    acc = [float(a) for a in args.acceptance.split(",")]
    print("| drafts k | rows | distinct experts per layer | bytes vs one row | " +
          " | ".join(f"bound at {a:.0%} accepted" for a in acc) + " |")
    print("|---|---|---|---|" + "---|" * len(acc))
    for k in [int(x) for x in args.k.split(",")]:
        rows = k + 1
        distinct = n * (1 - (1 - top / n) ** rows)
        ratio = (shared + routed * distinct / top) / one
        cost = ratio + (0 if args.free_drafts else k * draft_bytes(c) / one)
        bounds = [sum(a ** i for i in range(k + 1)) / cost for a in acc]
        print(f"| {k} | {rows} | {distinct:.2f} of {n} | {ratio:.3f} | " +
              " | ".join(f"{b:.2f}x" for b in bounds) + " |")


if __name__ == "__main__":
    main()
