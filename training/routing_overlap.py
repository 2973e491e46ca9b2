#!/usr/bin/env python3
"""How many distinct routed experts r neighbouring tokens use, in the shipped model, against independent routing.

    python training/routing_overlap.py --model models/dsinfer-v32-mini --data DATA_DIR [--rows 2,3,4]

A speculative verification of k drafts evaluates k + 1 neighbouring tokens in one forward, and where decoding is
bound by reading the weights its cost follows the union of their routed experts (bench/speculative_bound.py assumes
tokens route independently). This runs the exported checkpoint in the training code (training/model.py, the forward
the C++ tests hold equal to dsinfer's) over the held-out conversations (DATA_DIR/heldout.jsonl, made by
generate_data.py) and counts, per MoE layer, the distinct experts of every window of r consecutive tokens the
assistant writes, against r assistant tokens drawn at random from all conversations (the same experts' loads,
no neighbourhood) and the formula n·(1 - (1 - top_k/n)^r) for balanced, independent routing.
"""
import argparse
import os
import random
import sys

import torch
from tokenizers import Tokenizer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from model import MoE  # noqa: E402
from parity import load_exported  # noqa: E402
from train import collate, encode_corpus  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--rows", default="2,3,4")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--fp8", action="store_true", help="FP8 numerics (default: reference)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg, model = load_exported(args.model)
    model.set_fp8(args.fp8)
    tok = Tokenizer.from_file(os.path.join(args.model, "tokenizer.json"))
    convs, _ = encode_corpus(os.path.join(args.data, "heldout.jsonl"), tok, 1 << 20)

    routes = []  # per MoE call (layer order within a forward): [B, T, K] expert ids
    original = MoE.route

    def recording(self, x):
        p, idx, w = original(self, x)
        routes.append(idx)
        return p, idx, w

    MoE.route = recording
    E, K = cfg["n_routed_experts"], cfg["num_experts_per_tok"]
    per_layer = None  # per MoE layer: the expert sets of each assistant token, by conversation
    for i in range(0, len(convs), 8):
        ids, mask, valid, _ = collate(convs[i:i + 8])
        routes.clear()
        with torch.no_grad():
            model(ids, "infer")
        main_routes = routes[:cfg["num_hidden_layers"] - cfg["first_k_dense_replace"]]  # not the MTP layer's
        if per_layer is None:
            per_layer = [[] for _ in main_routes]
        B, T = ids.shape
        for layer, idx in enumerate(main_routes):
            idx = idx.view(B, T, K)
            for b in range(B):
                conv = [frozenset(idx[b, t].tolist()) if mask[b, t] else None for t in range(T)]
                per_layer[layer].append(conv)

    rng = random.Random(0)
    rows = [int(r) for r in args.rows.split(",")]
    print(f"{args.model}: {len(convs)} held-out conversations, {E} routed experts, top {K}, "
          f"{len(per_layer)} MoE layers, {'FP8' if args.fp8 else 'reference'} numerics")
    print("| tokens r | layer | neighbours: distinct experts | random tokens | independent, balanced |")
    print("|---|---|---|---|---|")
    for r in rows:
        independent = E * (1 - (1 - K / E) ** r)
        for layer, convs_sets in enumerate(per_layer):
            windows = []
            pool = [s for conv in convs_sets for s in conv if s is not None]
            for conv in convs_sets:
                for t in range(len(conv) - r + 1):
                    w = conv[t:t + r]
                    if all(s is not None for s in w):
                        windows.append(len(frozenset().union(*w)))
            near = sum(windows) / len(windows)
            far = sum(len(frozenset().union(*rng.sample(pool, r))) for _ in range(len(windows))) / len(windows)
            print(f"| {r} | {layer + cfg['first_k_dense_replace']} | {near:.2f} ({len(windows)} windows) | "
                  f"{far:.2f} | {independent:.2f} |")


if __name__ == "__main__":
    main()
