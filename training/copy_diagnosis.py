#!/usr/bin/env python3
"""Where the model copies and where it does not: teacher-forced next-token accuracy on a run's checkpoint, with the
copy targets (train.copy_targets) split by what finding them takes.

    python training/copy_diagnosis.py --run RUN_DIR/model.pt --tokenizer TOK_DIR --data DATA_DIR [--n 64] [--train]

- "continuation": the pair (previous token, target) already occurred in the conversation, so an induction head
  (find the previous token earlier, copy what followed it) predicts it;
- "first": it did not; the model must find the token by its role. These are split by the text just before them:
  a function name (after `invoke name="`), a parameter name (after `parameter name="`), a parameter value (after
  `">`), or elsewhere (answers stating a result, echoes).
Tool calls are exact only when every "first" token of names and values is right, so these rates, not the overall
copy_acc, say how far a run is from working tool calls. --train reads the first N training conversations instead
of the held-out ones (a run that fails there too has not learned the skill at all, rather than not generalised).
--induction K adds the copy task itself on K fresh sequences of each kind: the fixed repeat of train.py's stage 0
(solvable by copying from a fixed offset back) and repeats at random places and lengths (only content matching
predicts them: induction_random_offsets); a model that scores on the first and not the second copies by position.
"""
import argparse
import json
import os
import sys

import torch
from tokenizers import Tokenizer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from config import TRAIN  # noqa: E402
from model import DeepseekV32  # noqa: E402
import numpy as np  # noqa: E402

from train import encode_corpus, induction_batch, most_frequent_ids  # noqa: E402

ROLES = [("function_name", 'invoke name="'), ("parameter_name", 'parameter name="'), ("parameter_value", '">')]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", required=True, help="model.pt written by train.py")
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--train", action="store_true", help="the first N training conversations instead")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--induction", type=int, default=0, metavar="K",
                    help="also score the copy task on K fresh sequences of each kind (fixed and random repeats)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ck = torch.load(args.run, map_location="cpu", weights_only=False)
    model = DeepseekV32(ck["config"])
    model.load_state_dict(ck["state_dict"])  # the saved head is the tied one (train.save syncs it)
    model.eval()
    tok = Tokenizer.from_file(os.path.join(args.tokenizer, "tokenizer.json"))
    common = most_frequent_ids(os.path.join(args.data, "train.jsonl"), tok, TRAIN["common_ids"])
    split = "train.jsonl" if args.train else "heldout.jsonl"
    convs, _ = encode_corpus(os.path.join(args.data, split), tok, TRAIN["max_len"], limit=args.n, common=common)
    counts = {}

    def count(key, hit):
        h, t = counts.get(key, (0, 0))
        counts[key] = (h + int(hit), t + 1)

    with torch.no_grad():
        for ids, mask, copy in convs:
            hn, _, _ = model(torch.from_numpy(ids)[None], "dense", with_mtp=False)
            pred = model.head(hn)[0].argmax(-1).numpy()
            seen_pairs = set()
            for i in range(1, len(ids)):
                if mask[i]:
                    hit = pred[i - 1] == ids[i]
                    if not copy[i]:
                        count("assistant_other", hit)
                    else:
                        kind = "continuation" if (ids[i - 1], ids[i]) in seen_pairs else "first"
                        before = tok.decode(ids[max(0, i - 4):i].tolist())
                        role = next((name for name, tail in ROLES if before.endswith(tail)), "elsewhere")
                        count(kind, hit)
                        count(f"{kind}/{role}", hit)
                seen_pairs.add((ids[i - 1], ids[i]))
        if args.induction:
            rng = np.random.default_rng(12345)
            first_added = tok.token_to_id("<think>")  # BPE tokens are 3 .. first_added - 1, as train.py draws them
            seq_len = TRAIN["induction_len"]
            for kind, spans in (("copy_task_fixed", 0), ("copy_task_random", 4)):
                ids, mask, _, _ = induction_batch(rng, args.induction * seq_len, seq_len, 3, first_added, spans)
                hn, _, _ = model(ids, "dense", with_mtp=False)
                pred = model.head(hn).argmax(-1)
                hit = (pred[:, :-1] == ids[:, 1:])[mask[:, 1:]]
                counts[kind] = (int(hit.sum()), int(hit.numel()))
    out = {"checkpoint": {"step": ck.get("step"), "stage": ck.get("stage")}, "split": split,
           "conversations": len(convs),
           "accuracy": {k: {"tokens": t, "accuracy": round(h / t, 4)} for k, (h, t) in sorted(counts.items())}}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
