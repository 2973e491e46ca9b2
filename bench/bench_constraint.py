#!/usr/bin/env python3
"""Constrained decoding: dsinfer's constraint stage beside xgrammar (PyPI) on the same vocabulary, schemas and
token sequences, in one run; then decode throughput on the benchmark model with and without a constraint.

    python bench/make_bench_vocab.py --out build/bench-vocab
    python scripts/make_small_checkpoint.py --preset v32-bench --out build/models/v32-bench
    PYTHONPATH=<xgrammar wheel> python bench/bench_constraint.py --bench build/bench/bench_constraint \\
        --vocab build/bench-vocab --schemas bench/constraint_schemas.json --model build/models/v32-bench

dsinfer side (C++, bench_constraint mask): compile time; per step the mask alone (xgrammar's FillNextTokenBitmask
inside our stage) and the whole stage on the full 128,815-entry candidate list (mask + keeping the allowed
candidates). xgrammar side (its Python package, the same C++ core): compile of the same structural tag with one
GrammarCompiler for all schemas (cache on, the same thread count), as dsinfer keeps one per tokenizer, then per step fill_next_token_bitmask and apply_token_bitmask_inplace
(its CPU kernel, on a float32 logits tensor) replaying exactly the token ids dsinfer sampled.
"""
import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time

import torch
import xgrammar as xg

from make_bench_vocab import byte_level_alphabet  # bench/, beside this file

WS = 20  # the whitespace bound dsinfer's compile uses (lib/constraint/constraint.cpp, kMaxWhitespaceRun)


def byte_decoder():
    return {u: b for b, u in byte_level_alphabet().items()}


def raw_vocab(tokenizer_dir):
    """Each id's bytes as dsinfer gives them to xgrammar (Tokenizer::token_bytes); special tokens empty."""
    spec = json.load(open(os.path.join(tokenizer_dir, "tokenizer.json"), encoding="utf-8"))
    dec = byte_decoder()
    size = max(max(spec["model"]["vocab"].values()), max(t["id"] for t in spec["added_tokens"])) + 1
    vocab = [b""] * size
    for piece, i in spec["model"]["vocab"].items():
        vocab[i] = bytes(dec[ch] for ch in piece) if all(ch in dec for ch in piece) else piece.encode()
    for t in spec["added_tokens"]:
        vocab[t["id"]] = b"" if t["special"] else t["content"].encode()
    eos = next(t["id"] for t in spec["added_tokens"] if t["content"] == "<｜end▁of▁sentence｜>")
    return vocab, eos


def pct(v, q):
    v = sorted(v)
    return v[min(len(v) - 1, int(q * (len(v) - 1) + 0.5))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bench", required=True)
    ap.add_argument("--vocab", required=True)
    ap.add_argument("--schemas", required=True)
    ap.add_argument("--model")
    ap.add_argument("--runs", type=int, default=6)
    ap.add_argument("--steps", type=int, default=256)
    a = ap.parse_args()
    torch.set_num_threads(1)
    schemas = json.load(open(a.schemas))

    with tempfile.NamedTemporaryFile(suffix=".jsonl", delete=False) as tf:
        traj_path = tf.name
    out = subprocess.run([a.bench, "mask", a.vocab, a.schemas, traj_path, "--runs", str(a.runs), "--steps",
                          str(a.steps)], check=True, capture_output=True, text=True).stdout
    lines = [json.loads(x) for x in out.splitlines()]
    base, ours = lines[0], {x["schema"]: x for x in lines[1:]}
    trajs = {}
    for x in open(traj_path):
        t = json.loads(x)
        trajs.setdefault(t["schema"], []).append(t["ids"])
    os.unlink(traj_path)

    vocab, eos = raw_vocab(a.vocab)
    t0 = time.perf_counter()
    info = xg.TokenizerInfo(vocab, xg.VocabType.RAW, vocab_size=len(vocab), stop_token_ids=[eos])
    info_ms = (time.perf_counter() - t0) * 1000
    threads = os.cpu_count() or 1
    rows = []
    # One compiler for every schema, its cache on, as dsinfer keeps one per tokenizer.
    compiler = xg.GrammarCompiler(info, max_threads=min(threads, 8), cache_enabled=True)
    for si, schema in enumerate(schemas):
        tag = {"type": "structural_tag", "format": {"type": "json_schema", "json_schema": schema,
                                                    "max_whitespace_cnt": WS}}
        t0 = time.perf_counter()
        grammar = compiler.compile_structural_tag(json.dumps(tag))
        xg_compile_ms = (time.perf_counter() - t0) * 1000
        bitmask = xg.allocate_token_bitmask(1, len(vocab))
        logits = torch.randn(1, len(vocab))
        fill, fill_apply = [], []
        for ids in trajs[si]:
            m = xg.GrammarMatcher(grammar)
            for t in ids:
                t0 = time.perf_counter()
                m.fill_next_token_bitmask(bitmask)
                t1 = time.perf_counter()
                xg.apply_token_bitmask_inplace(logits, bitmask)
                t2 = time.perf_counter()
                fill.append((t1 - t0) * 1e6)
                fill_apply.append((t2 - t0) * 1e6)
                assert m.accept_token(t), f"xgrammar refused token {t} that dsinfer sampled (schema {si})"
        o = ours[si]
        rows.append((si, o["compile_ms"], xg_compile_ms, o["mask_us_median"], o["step_us_median"], o["step_us_p90"],
                     statistics.median(fill), statistics.median(fill_apply), pct(fill_apply, 0.9), o["steps"]))

    print(f"vocabulary: {len(vocab)} ids; xgrammar TokenizerInfo build {info_ms:.0f} ms; building the full candidate "
          f"list (unconstrained, per step) {base['baseline_candidates_us']:.0f} us median")
    print("| schema | compile ms: dsinfer / xgrammar | dsinfer mask us (median) | dsinfer stage us (median / p90) | "
          "xgrammar fill us (median) | xgrammar fill+apply us (median / p90) | steps |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]:.0f} / {r[2]:.0f} | {r[3]:.1f} | {r[4]:.1f} / {r[5]:.1f} | {r[6]:.1f} | "
              f"{r[7]:.1f} / {r[8]:.1f} | {r[9]} |")
    all_stage = statistics.median([r[4] for r in rows])
    all_xg = statistics.median([r[7] for r in rows])
    print(f"median over schemas: dsinfer stage {all_stage:.1f} us, xgrammar fill+apply {all_xg:.1f} us")

    if a.model:
        out = subprocess.run([a.bench, "decode", a.model, "--tokens", "128", "--reps", "5"], check=True,
                             capture_output=True, text=True).stdout
        print("decode:", out.strip())


if __name__ == "__main__":
    main()
