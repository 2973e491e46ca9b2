#!/usr/bin/env python3
"""Writes the training corpus and the held-out evaluation set.

    python training/generate_data.py --out DIR [--train 30000] [--heldout 600] [--seed 1]

DIR/train.jsonl and DIR/heldout.jsonl hold one conversation per line: {"thinking", "unseen_tools", "tools",
"messages", "checks", "text", "spans"}. `text` is the conversation rendered by dsinfer's own encoder (the Python
package `dsinfer`, byte for byte DeepSeek-V3.2's official encoding), `spans` the [start, end) character ranges of
what the model itself writes (every assistant turn: reasoning, content, tool calls, end of sentence), found by
locating each assistant message's own rendering, made by the same encoder, in order. Training puts its loss on
those spans only.

Held-out conversations draw held-out entities and phrasings; half of them (those that have tools) show only
held-out tool variants (unseen names, parameter names and descriptions).
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dsinfer  # noqa: E402  (the package built from this repo: pip install .)

import conversations as C  # noqa: E402
import tools as T  # noqa: E402
from world import World  # noqa: E402

EOS = "<｜end▁of▁sentence｜>"


def assistant_rendering(msg):
    """The text an assistant message contributes in chat position (content + tool calls + eos), made by the
    encoder itself: render [user, assistant] and strip the user part."""
    probe = [{"role": "user", "content": "x"}]
    base = dsinfer.encode_chat(probe, None, False)
    full = dsinfer.encode_chat(probe + [{k: v for k, v in msg.items() if k != "reasoning_content"}], None, False)
    assert full.startswith(base)
    return full[len(base):]


def render(conv):
    """(text, spans) for a conversation."""
    msgs, thinking = conv["messages"], conv["thinking"]
    text = dsinfer.encode_chat(msgs, conv["tools"], thinking)
    last_user = max(i for i, m in enumerate(msgs) if m["role"] in ("user", "developer"))
    spans, pos = [], 0
    for i, m in enumerate(msgs):
        if m["role"] != "assistant":
            continue
        piece = assistant_rendering(m)
        if thinking and i > last_user:
            piece = m["reasoning_content"] + "</think>" + piece
        at = text.find(piece, pos)
        if at < 0:
            raise AssertionError(f"assistant message {i} not found in the rendering")
        # The model's turn starts right after the prompt's think tag.
        assert text[:at].endswith(("</think>", "<think>")), text[max(0, at - 40):at]
        spans.append([at, at + len(piece)])
        pos = at + len(piece)
    return text, spans


def write(path, gen, n, unseen_fraction):
    heldout_names = T.heldout_tokens()
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            conv = gen.conversation(unseen_tools=(i % 2 == 1) if unseen_fraction else False)
            text, spans = render(conv)
            if not gen.heldout:  # no held-out tool or parameter name may leak into training
                names = {t["function"]["name"] for t in conv["tools"]}
                names |= {p for t in conv["tools"] for p in t["function"]["parameters"]["properties"]}
                assert not (names & heldout_names), names & heldout_names
            conv["text"], conv["spans"] = text, spans
            conv["checks"] = {str(k): v for k, v in conv["checks"].items()}
            f.write(json.dumps(conv, ensure_ascii=False) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--train", type=int, default=30000)
    ap.add_argument("--heldout", type=int, default=600)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    world = World()
    write(os.path.join(args.out, "train.jsonl"), C.ConversationGenerator(world, args.seed, False), args.train, 0)
    write(os.path.join(args.out, "heldout.jsonl"), C.ConversationGenerator(world, args.seed + 1000, True),
          args.heldout, 0.5)
    print(f"wrote {args.train} training and {args.heldout} held-out conversations to {args.out}")


if __name__ == "__main__":
    main()
