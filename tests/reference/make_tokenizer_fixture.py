#!/usr/bin/env python3
"""Trains the repo's fixture tokenizer: a byte-level BPE with DeepSeek-V3's tokenizer.json configuration
(../shared/spec/dsv32-model.md §9) and a small vocabulary, since the real 128K vocabulary cannot be downloaded here.

    python tests/reference/make_tokenizer_fixture.py --out tests/fixtures/tokenizer

Configuration as DeepSeek-V3/V3.2's tokenizer.json: empty normalizer Sequence; pre-tokenizer Sequence of three
Split regexes (digit runs of at most 3; CJK ideographs/kana runs; the word/punctuation/space pattern), behavior
Isolated, then ByteLevel(add_prefix_space=false, use_regex=false); BPE model; ByteLevel decoder; a
TemplateProcessing post-processor that prepends BOS. Special tokens: bos id 0, eos id 1, pad id 2, and after the
BPE vocabulary the chat and tool tokens DeepSeek uses. Total size 4000 (the small models' embedding has 4096 rows).
Needs the `tokenizers` package.
"""
import argparse
import json
import os
import random

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

BOS, EOS, PAD = "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜▁pad▁｜>"
ADDED = ["<think>", "</think>", "<｜User｜>", "<｜Assistant｜>", "<｜fim▁hole｜>", "<｜fim▁begin｜>", "<｜fim▁end｜>",
         "<｜tool▁calls▁begin｜>", "<｜tool▁calls▁end｜>", "<｜tool▁call▁begin｜>", "<｜tool▁call▁end｜>",
         "<｜tool▁outputs▁begin｜>", "<｜tool▁outputs▁end｜>", "<｜tool▁output▁begin｜>", "<｜tool▁output▁end｜>",
         "<｜tool▁sep｜>"] + [f"<｜place▁holder▁no▁{i}｜>" for i in range(8)]
TOTAL = 4000
SPLITS = [
    r"\p{N}{1,3}",
    "[一-龥\u3040-ゟ゠-ヿ]+",
    r"""[!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""",
]

WORDS = ("the of and to in is was for on that with as by at from it this be are an or which have not has but "
         "model token attention expert layer cache sparse index decode prefill latent weight scale block thread "
         "function return value error string number list object true false null class struct void int float "
         "hello world question answer weather tomorrow today reasoning tool result").split()
CJK = "的一是不了人我在有他这中大来上国个到说们为子和你地出道也时年得就那要下以生会自着去之过家学对可她里后小么心多天而能好都然没日于起还发成事只作当想看文无开手十用主行方又如前所本见经头面公同三已老从动两长知民样现分将外但身些与高意进把法此实回二理美点月明此"
KANA = "あいうえおかきくけこさしすせそたちつてとなにぬねのはひふへほまみむめもやゆよらりるれろわをんアイウエオカキクケコサシスセソタチツテトナニヌネノハヒフヘホマミムメモヤユヨラリルレロワヲン"
HANGUL = "안녕하세요감사합니다한국어토크나이저테스트"
CODE = ["def f(x):\n    return x * 2\n", "for (int i = 0; i < n; ++i) {\n\tsum += a[i];\n}\n",
        "if x == None: raise ValueError('bad')\n", "#include <vector>\nint main() { return 0; }\n",
        "const y = await fetch(url);\r\n", "SELECT name, age FROM users WHERE id = 42;\n"]


def corpus(seed, n):
    r = random.Random(seed)
    out = []
    for _ in range(n):
        kind = r.randrange(7)
        if kind == 0:
            out.append(" ".join(r.choice(WORDS) for _ in range(r.randrange(3, 20))).capitalize() + r.choice(".!?,"))
        elif kind == 1:
            out.append("".join(r.choice(CJK) for _ in range(r.randrange(2, 30))) + "。")
        elif kind == 2:
            out.append("".join(r.choice(KANA) for _ in range(r.randrange(2, 20))))
        elif kind == 3:
            out.append(r.choice(CODE))
        elif kind == 4:
            out.append(" ".join(str(r.randrange(10 ** r.randrange(1, 9))) for _ in range(r.randrange(1, 6))))
        elif kind == 5:
            out.append("".join(r.choice(HANGUL) for _ in range(r.randrange(2, 12))) + " " + r.choice(WORDS))
        else:
            out.append(r.choice(WORDS) + "  \t" + r.choice(["🙂", "👍🏽", "👨‍👩‍👧", "é", "ñ", "ü"]) + "\n\n")
    return out


def build():
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.Sequence([])
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(p), behavior="isolated", invert=False) for p in SPLITS]
        + [pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False)])
    tok.decoder = decoders.ByteLevel(add_prefix_space=True, trim_offsets=True, use_regex=True)
    trainer = trainers.BpeTrainer(vocab_size=TOTAL - len(ADDED), special_tokens=[BOS, EOS, PAD],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(corpus(7, 30000), trainer=trainer)
    tok.add_special_tokens(ADDED)
    tok.post_processor = processors.TemplateProcessing(single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B",
                                                       special_tokens=[(BOS, 0)])
    assert tok.get_vocab_size(with_added_tokens=True) <= TOTAL, tok.get_vocab_size(with_added_tokens=True)
    assert tok.token_to_id(BOS) == 0 and tok.token_to_id(EOS) == 1 and tok.token_to_id(PAD) == 2
    return tok


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    tok = build()
    tok.save(os.path.join(args.out, "tokenizer.json"))
    cfg = {"add_bos_token": False, "add_eos_token": False, "bos_token": BOS, "eos_token": EOS, "pad_token": EOS,
           "clean_up_tokenization_spaces": False, "legacy": True, "model_max_length": 131072,
           "tokenizer_class": "LlamaTokenizerFast", "use_default_system_prompt": False}
    with open(os.path.join(args.out, "tokenizer_config.json"), "w") as f:
        json.dump(cfg, f, indent=2, ensure_ascii=False)
        f.write("\n")
    print(f"tokenizer size {tok.get_vocab_size(with_added_tokens=True)}")


if __name__ == "__main__":
    main()
