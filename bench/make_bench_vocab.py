#!/usr/bin/env python3
"""A synthetic DeepSeek-V3.2-sized vocabulary for the constraint benchmark (bench/bench_constraint.py).

DeepSeek-V3.2's tokenizer has 128,000 BPE entries plus 815 added tokens at ids 0-2 and 128000-128814 (spec §9). This
writes a tokenizer.json of exactly that shape: the fixture tokenizer's configuration (the same pre-tokenizer — its
three Split regexes and ByteLevel —, decoder and special tokens), with the vocabulary filled as follows:
  - the 256 byte-level symbols;
  - every CJK ideograph U+4E00-U+9FA5 and every hiragana and katakana character (one piece each under the
    pre-tokenizer's CJK rule; DeepSeek's vocabulary holds most of them);
  - the most frequent pieces that the same pre-tokenizer cuts from a text corpus (Python's standard library sources,
    Debian's documentation and manual pages on this machine), and their prefixes, until 127,997 regular entries.
Only the vocabulary matters to a constraint (the bytes each id decodes to), so there are no merges: this tokenizer
decodes ids but is not meant to encode text.

    python bench/make_bench_vocab.py --out build/bench-vocab      (needs the `tokenizers` package)
"""
import argparse
import collections
import glob
import gzip
import json
import os

from tokenizers import Tokenizer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N_MODEL = 128000   # BPE entries, ids 0..127999 (0-2 are the special tokens, as in DeepSeek's file)
N_TOTAL = 128815   # with the added tokens up to id 128814


def byte_level_alphabet():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def corpus_texts(limit_bytes):
    total = 0
    paths = sorted(glob.glob("/usr/lib/python3*/**/*.py", recursive=True))
    paths += sorted(glob.glob("/usr/share/doc/**/*", recursive=True)) + sorted(glob.glob("/usr/share/man/man*/*.gz"))
    for p in paths:
        if total >= limit_bytes or not os.path.isfile(p):
            continue
        try:
            raw = gzip.open(p).read() if p.endswith(".gz") else open(p, "rb").read()
            text = raw.decode("utf-8")
        except (OSError, UnicodeDecodeError, EOFError, gzip.BadGzipFile):
            continue
        total += len(raw)
        yield text


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--corpus-mb", type=int, default=40)
    a = ap.parse_args()
    fixture = os.path.join(REPO, "tests", "fixtures", "tokenizer")
    spec = json.load(open(os.path.join(fixture, "tokenizer.json"), encoding="utf-8"))
    pre = Tokenizer.from_file(os.path.join(fixture, "tokenizer.json")).pre_tokenizer
    b2u = byte_level_alphabet()

    vocab = {}
    specials = [t for t in spec["added_tokens"] if t["id"] <= 2]
    for t in specials:
        vocab[t["content"]] = t["id"]

    def add(piece):
        if piece not in vocab and len(vocab) < N_MODEL:
            vocab[piece] = len(vocab)

    for b in range(256):
        add(b2u[b])
    for lo, hi in ((0x4E00, 0x9FA5), (0x3040, 0x309F), (0x30A0, 0x30FF)):
        for cp in range(lo, hi + 1):
            add("".join(b2u[b] for b in chr(cp).encode("utf-8")))
    counts = collections.Counter()
    for text in corpus_texts(a.corpus_mb << 20):
        for piece, _ in pre.pre_tokenize_str(text):
            if len(piece) <= 24:
                counts[piece] += 1
    prefix_counts = collections.Counter()
    for piece, c in counts.items():
        for k in range(2, len(piece)):
            prefix_counts[piece[:k]] += c
    for piece, _ in (counts + prefix_counts).most_common():
        if len(vocab) >= N_MODEL:
            break
        add(piece)
    assert len(vocab) == N_MODEL, f"the corpus gave only {len(vocab)} entries"

    added = [dict(t) for t in specials]
    next_id = N_MODEL
    for t in spec["added_tokens"]:
        if t["id"] > 2 and not t["content"].startswith("<｜place▁holder"):
            added.append(dict(t, id=next_id))
            next_id += 1
    k = 0
    while next_id < N_TOTAL:
        added.append({"id": next_id, "content": f"<｜place▁holder▁no▁{k}｜>", "single_word": False, "lstrip": False,
                      "rstrip": False, "normalized": False, "special": True})
        next_id += 1
        k += 1
    spec["model"]["vocab"] = vocab
    spec["model"]["merges"] = []
    spec["added_tokens"] = added
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(spec, f, ensure_ascii=False)
    with open(os.path.join(fixture, "tokenizer_config.json"), encoding="utf-8") as src, \
            open(os.path.join(a.out, "tokenizer_config.json"), "w", encoding="utf-8") as dst:
        dst.write(src.read())
    print(json.dumps({"out": a.out, "model_entries": len(vocab), "tokenizer_size": N_TOTAL,
                      "corpus_pieces": len(counts)}))


if __name__ == "__main__":
    main()
