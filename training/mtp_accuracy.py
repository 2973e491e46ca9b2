#!/usr/bin/env python3
"""Top-1 accuracy of the shipped model's MTP module on the token after next, on the held-out conversations.

    python training/mtp_accuracy.py --model models/dsinfer-v32-mini --data DATA_DIR --out mtp.json

This runs the exported checkpoint in the training code (training/model.py, whose main-model logits the C++ test holds
equal to dsinfer's; dsinfer drafts with the same module in speculative decoding): for every position i the MTP
module sees the main model's final hidden state at i and the token i+1 and predicts token i+2. Counted over the
tokens the assistant writes (the positions that matter for speculative decoding) and over all tokens, in reference
and in FP8 numerics; the main head's next-token accuracy on the same tokens is given beside it.
"""
import argparse
import json
import os
import sys

import torch
from tokenizers import Tokenizer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from parity import load_exported  # noqa: E402
from train import collate, encode_corpus  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    _, model = load_exported(args.model)
    tok = Tokenizer.from_file(os.path.join(args.model, "tokenizer.json"))
    convs, _ = encode_corpus(os.path.join(args.data, "heldout.jsonl"), tok, 1 << 20)
    convs.sort(key=lambda c: len(c[0]))
    result = {"conversations": len(convs)}
    for numerics in ("reference", "fp8"):
        model.set_fp8(numerics == "fp8")
        hit = {"mtp_assistant": 0, "mtp_all": 0, "main_assistant": 0}
        n = {"mtp_assistant": 0, "mtp_all": 0, "main_assistant": 0}
        for i in range(0, len(convs), 8):
            ids, mask, valid, _ = collate(convs[i:i + 8])
            with torch.no_grad():
                hn, hm, _ = model(ids, "infer")
                main_ok = model.head(hn[:, :-1]).argmax(-1) == ids[:, 1:]
                mtp_ok = model.head(hm[:, :-1]).argmax(-1) == ids[:, 2:]
            sel_a, sel_v = mask[:, 2:], valid[:, 2:]
            hit["mtp_assistant"] += int(mtp_ok[sel_a].sum()); n["mtp_assistant"] += int(sel_a.sum())
            hit["mtp_all"] += int(mtp_ok[sel_v].sum()); n["mtp_all"] += int(sel_v.sum())
            hit["main_assistant"] += int(main_ok[mask[:, 1:]].sum()); n["main_assistant"] += int(mask[:, 1:].sum())
        result[numerics] = {k: {"percent": 100.0 * hit[k] / n[k], "tokens": n[k]} for k in hit}
        print(numerics, {k: round(v["percent"], 2) for k, v in result[numerics].items()}, flush=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
