#!/usr/bin/env python3
"""Golden logits for the shipped model, from the training code's fp32 forward, checked against transformers.

    python training/parity.py --model models/dsinfer-v32-mini --data DATA_DIR --out tests/golden/dsinfer-v32-mini

Loads the exported checkpoint twice, independently of dsinfer: into training/model.py (the code that trained it)
and into Hugging Face transformers' own DeepseekV32ForCausalLM (through tests/reference/hf_oracle.py's loader),
both in fp32. For a few held-out conversations (prefixes longer than index_topk, so the indexer really selects) it
writes the training code's logits at a subset of positions and its MTP module's logits, and records how far
transformers is from them (the MTP module is not part of transformers' model). The C++ test
(tests/models/test_shipped_model.cpp) requires dsinfer's reference-precision logits within 1e-4 of these.
"""
import argparse
import json
import os
import sys

import numpy as np
import torch
from tokenizers import Tokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(REPO, "tests", "reference"))
import hf_oracle  # noqa: E402
from export import hf_name  # noqa: E402
from model import DeepseekV32  # noqa: E402

PROMPTS = [("short", 0, 90), ("medium", 1, 300), ("long", 2, 700)]  # (name, held-out conversation, tokens)


def training_model(cfg, state):
    model = DeepseekV32(cfg)
    own = model.state_dict()
    L = cfg["num_hidden_layers"]
    loaded = {k: state[hf_name(k, L)].to(torch.float32) for k in own}
    model.load_state_dict(loaded)
    model.eval()
    return model


def load_exported(model_dir):
    """config.json and the training code's model (eval mode) holding an exported checkpoint's weights."""
    with open(os.path.join(model_dir, "config.json")) as f:
        cfg = json.load(f)
    state, _ = hf_oracle.load_state(model_dir)
    return cfg, training_model(cfg, state)


def rel(a, b):
    """max over rows of max|a-b| / max|b|."""
    return float(((a - b).abs().amax(-1) / b.abs().amax(-1)).max())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True, help="folder with heldout.jsonl")
    ap.add_argument("--out", required=True)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    with open(os.path.join(args.model, "config.json")) as f:
        cfg = json.load(f)
    state, _ = hf_oracle.load_state(args.model)
    mine = training_model(cfg, state)
    mtp_prefix = f"model.layers.{cfg['num_hidden_layers']}."  # the MTP layer: not part of transformers' model
    hf = hf_oracle.build_model(cfg, {k: v for k, v in state.items() if not k.startswith(mtp_prefix)})
    tok = Tokenizer.from_file(os.path.join(args.model, "tokenizer.json"))
    convs = [json.loads(line) for line in open(os.path.join(args.data, "heldout.jsonl"), encoding="utf-8")]
    os.makedirs(args.out, exist_ok=True)
    prompts, worst_hf = [], 0.0
    for name, conv, n in PROMPTS:
        ids = tok.encode(convs[conv]["text"], add_special_tokens=False).ids
        while len(ids) < n:  # long enough: append the next conversations
            conv += 1
            ids += tok.encode(convs[conv]["text"], add_special_tokens=False).ids
        ids = ids[:n]
        x = torch.tensor([ids])
        with torch.no_grad():
            logits = mine.logits(x)[0]
            mtp = mine.mtp_logits(x)[0]
            ref = hf(x).logits[0].float()
        d = rel(logits, ref)
        worst_hf = max(worst_hf, d)
        positions = sorted(set(range(0, n, 16)) | {n - 1})
        rows = logits[positions].numpy().astype("<f4")
        rows.tofile(os.path.join(args.out, f"{name}.logits.f32"))
        mtp_pos = sorted(set(range(0, n - 1, 16)) | {n - 2})
        mtp[mtp_pos].numpy().astype("<f4").tofile(os.path.join(args.out, f"{name}.mtp_logits.f32"))
        prompts.append({"name": name, "ids": ids, "positions": positions, "logits_file": f"{name}.logits.f32",
                        "mtp_positions": mtp_pos, "mtp_logits_file": f"{name}.mtp_logits.f32",
                        "transformers_max_rel_diff": d})
        print(f"{name}: {n} tokens, training code vs transformers max|d|/max|ref| = {d:.2e}")
    # The tokenizer, checked by the C++ test too: whole held-out conversations and the ids `tokenizers` gives them.
    tokenizer_check = [{"text": c["text"], "ids": tok.encode(c["text"], add_special_tokens=False).ids}
                       for c in convs[:8]]
    meta = {"model": os.path.basename(os.path.normpath(args.model)),
            "made_by": "training/parity.py (training/model.py, fp32, reference numerics)",
            "command": "python training/parity.py --model models/dsinfer-v32-mini --data DATA_DIR "
                       "--out tests/golden/dsinfer-v32-mini",
            "checked_against": "transformers DeepseekV32ForCausalLM (fp32, eager) on the same checkpoint",
            "transformers_worst_rel_diff": worst_hf, "vocab": cfg["vocab_size"],
            "versions": {"torch": torch.__version__, "transformers": hf_oracle.transformers.__version__,
                         "numpy": np.__version__},
            "prompts": prompts, "tokenizer_check": tokenizer_check}
    with open(os.path.join(args.out, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
