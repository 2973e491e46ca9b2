#!/usr/bin/env python3
"""Encode throughput, one thread, dsinfer vs the `tokenizers` library on the same corpus, in one run.

    python bench/bench_tokenizer.py --bench build/bench/bench_tokenizer --tokenizer tests/fixtures/tokenizer \
        --corpus tests/golden/tokenizer/corpus.jsonl
"""
import argparse
import json
import os
import re
import subprocess
import time

os.environ["RAYON_NUM_THREADS"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
import tokenizers  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bench", required=True)
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--reps", type=int, default=5)
    a = ap.parse_args()
    lines = []
    with open(a.corpus, encoding="utf-8") as f:
        for l in f:
            lines.append(json.loads(l)["text"] if l.startswith("{") else l.rstrip("\n"))
    nbytes = sum(len(l.encode()) for l in lines)
    tok = Tokenizer.from_file(os.path.join(a.tokenizer, "tokenizer.json"))
    best_single, best_batch = 1e30, 1e30
    for _ in range(a.reps):
        t0 = time.perf_counter()
        for l in lines:
            tok.encode(l, add_special_tokens=False)
        best_single = min(best_single, time.perf_counter() - t0)
        t0 = time.perf_counter()
        tok.encode_batch(lines, add_special_tokens=False)
        best_batch = min(best_batch, time.perf_counter() - t0)
    ours = subprocess.run([a.bench, "--tokenizer", a.tokenizer, "--corpus", a.corpus, "--reps", str(a.reps)],
                          capture_output=True, text=True, check=True).stdout
    print(ours, end="")
    mbs = float(re.search(r"best of \d+: ([\d.]+) MB/s", ours).group(1))
    lib_single, lib_batch = nbytes / best_single / 1e6, nbytes / best_batch / 1e6
    print(f"tokenizers {tokenizers.__version__}: encode one by one {lib_single:.2f} MB/s, "
          f"encode_batch (RAYON_NUM_THREADS=1) {lib_batch:.2f} MB/s")
    print(f"ratio dsinfer / tokenizers: {mbs / lib_single:.2f}x (one by one), {mbs / lib_batch:.2f}x (batch)")


if __name__ == "__main__":
    main()
