#!/usr/bin/env python3
"""Trains the shipped model's tokenizer on the training corpus with the `tokenizers` library.

    python training/train_tokenizer.py --data DIR --out MODEL_DIR [--size 4096]

DeepSeek-V3.2's tokenizer.json configuration (../shared/spec/dsv32-model.md §9): an empty normalizer Sequence; a
pre-tokenizer Sequence of three isolating Split regexes (digit runs of at most 3; CJK/kana runs; the word,
punctuation and space pattern) then ByteLevel(add_prefix_space=false, use_regex=false); a byte-level BPE model;
the ByteLevel decoder; a post-processor that prepends BOS. tokenizer_config.json as DeepSeek ships it
(add_bos_token false: the chat encoder writes BOS itself).

Special tokens are DeepSeek's real strings in DeepSeek's order: BOS, EOS and pad are ids 0, 1, 2 as in the real
tokenizer; the chat and tool tokens the real vocabulary holds at 128798-128814 (<think>, </think>, the FIM tokens,
<｜User｜>, <｜Assistant｜>, <|EOT|>, the legacy tool-call tokens) follow the BPE vocabulary in the same order, so
their ids are the real ones minus a constant. The real 128000-128797 placeholders are left out: at the real ids the
embedding and the head alone would be 2 x 129280 rows, over 130 MB in BF16 at this width.
"""
import argparse
import json
import os
import re

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

BOS, EOS, PAD = "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜▁pad▁｜>"
# The real ids 128798..128814, in order.
ADDED = ["<think>", "</think>", "<｜fim▁hole｜>", "<｜fim▁begin｜>", "<｜fim▁end｜>", "<｜User｜>", "<｜Assistant｜>",
         "<|EOT|>", "<｜tool▁calls▁begin｜>", "<｜tool▁calls▁end｜>", "<｜tool▁call▁begin｜>", "<｜tool▁call▁end｜>",
         "<｜tool▁outputs▁begin｜>", "<｜tool▁outputs▁end｜>", "<｜tool▁output▁begin｜>", "<｜tool▁output▁end｜>",
         "<｜tool▁sep｜>"]
REAL_FIRST_ADDED_ID = 128798
SPLITS = [
    r"\p{N}{1,3}",
    "[一-龥\u3040-ゟ゠-ヿ]+",
    r"""[!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""",
]
SPECIAL_RE = re.compile("|".join(re.escape(t) for t in [BOS, EOS, PAD] + ADDED))

TOKENIZER_CONFIG = {
    "add_bos_token": False,
    "add_eos_token": False,
    "bos_token": BOS,
    "eos_token": EOS,
    "pad_token": EOS,
    "clean_up_tokenization_spaces": False,
    "legacy": True,
    "model_max_length": 131072,
    "tokenizer_class": "LlamaTokenizerFast",
    "use_default_system_prompt": False,
}


def texts(data_dir):
    """The training conversations' text without special tokens (those are never merged)."""
    with open(os.path.join(data_dir, "train.jsonl"), encoding="utf-8") as f:
        for line in f:
            for piece in SPECIAL_RE.split(json.loads(line)["text"]):
                if piece:
                    yield piece


def deepseek_pre_tokenizer(extra=()):
    return pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(p), behavior="isolated", invert=False) for p in list(extra) + SPLITS]
        + [pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False)])


# Learned only while the merges are trained: the space before a capital letter is its own piece, so no merge ever
# joins a space to a capitalised word ("ĠCairo" is never learned; " Cairo" encodes as "Ġ" + "Cairo", the same
# tokens "Cairo" has after a quote or a tag). Names then read the same wherever they occur, and copying one from the
# request into a tool call, or from a tool result into the answer, is copying the same ids — the one thing a model
# this small must learn from context, for names it never saw in training. The saved tokenizer has DeepSeek's
# pre-tokenizer unchanged.
TRAIN_ONLY_SPLITS = [r"\s(?=\p{Lu})"]


def build(data_dir, size):
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.Sequence([])
    tok.pre_tokenizer = deepseek_pre_tokenizer(TRAIN_ONLY_SPLITS)
    tok.decoder = decoders.ByteLevel(add_prefix_space=True, trim_offsets=True, use_regex=True)
    trainer = trainers.BpeTrainer(vocab_size=size - len(ADDED), special_tokens=[BOS, EOS, PAD],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts(data_dir), trainer=trainer)
    tok.pre_tokenizer = deepseek_pre_tokenizer()
    tok.add_special_tokens(ADDED)
    tok.post_processor = processors.TemplateProcessing(single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B",
                                                       special_tokens=[(BOS, 0)])
    assert [tok.token_to_id(t) for t in (BOS, EOS, PAD)] == [0, 1, 2]
    first = tok.token_to_id(ADDED[0])
    assert [tok.token_to_id(t) for t in ADDED] == list(range(first, first + len(ADDED)))
    return tok


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--size", type=int, default=4096, help="total tokenizer size (BPE + added tokens)")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    tok = build(args.data, args.size)
    tok.save(os.path.join(args.out, "tokenizer.json"))
    with open(os.path.join(args.out, "tokenizer_config.json"), "w") as f:
        json.dump(TOKENIZER_CONFIG, f, indent=2)
        f.write("\n")
    print(f"tokenizer: {tok.get_vocab_size(with_added_tokens=True)} tokens; "
          f"<think> = {tok.token_to_id('<think>')} (real id {REAL_FIRST_ADDED_ID})")


if __name__ == "__main__":
    main()
