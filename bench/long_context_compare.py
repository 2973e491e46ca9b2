#!/usr/bin/env python3
"""Long contexts (issue 19): dsinfer's sparse attention (DSA) vs llama.cpp from 4K to 64K tokens, side by side.

    python3 bench/long_context_compare.py --model build/models/v32-bench --llama-cpp /path/to/llama.cpp \
        [--depths 4096 16384 32768 65536] [--threads 2] [--decode 32] [--peer-max-depth 32768] \
        [--peer-q8-max-depth 16384] [--dense-max-depth 32768] [--results FILE] [--sides llama.cpp dsinfer]

At each depth D, every side prefills a D-token prompt (timed: prefill tok/s) and then decodes --decode tokens at
that depth (timed: decode tok/s), in one process whose peak RSS the OS reports:
- llama.cpp: its `llama-batched-bench -npp D -ntg N -npl 1` (one prompt, then N generated tokens on it; prints both
  rates) on the GGUF that bench/llama_cpp_compare.py converts (Q8_0), with its default KV cache (f16, flash
  attention auto) and with `-ctk q8_0 -ctv q8_0 -fa on` (its 8-bit cache). Its KV bytes per token and layer come
  from its own log (the main and the indexer cache, "llama_kv_cache: size = ...").
- dsinfer: `bench_model --prompt D --decode N --reps 1 --precision fp8 --no-empty-decode` (FP8 weights, FP8 KV
  cache: the default in fp8 precision), chunked prefill at its default 2048 tokens.
- dsinfer dense: the same with `--index-topk 2^30` (the indexer off, every query attends every earlier token: what
  DSA saves). Past --dense-max-depth only the decode is run dense (`--decode-index-topk`, after a sparse prefill).
llama.cpp's deepseek32 graph computes DSA as a top-k mask over dense attention, so its cost per token grows with
the whole context. Depths past --peer-max-depth are not run for llama.cpp (its prefill there takes over 30 minutes
on a 2-core machine); the largest depth it reached is in the table.

Each measurement is appended as one JSON line to --results as soon as it ends, and a re-run skips what that file
already holds (a long campaign survives an interruption). The table is printed from the file at the end, and with
each depth's decode rate over the first depth's, the most that ratio can be where decode is bound by the bytes it
reads: the weights and KV cache bytes of a step at the first depth over those at D (bench_model prints both).
"""
import argparse
import json
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from llama_cpp_compare import REPO, convert_to_gguf, rss_of  # noqa: E402

DENSE = 1 << 30


def measure_llama(a, gguf, depth, q8_kv):
    cmd = [os.path.join(a.llama_cpp, "build", "bin", "llama-batched-bench"), "-m", gguf, "-c", str(depth + a.decode),
           "-b", "2048", "-ub", "512", "-npp", str(depth), "-ntg", str(a.decode), "-npl", "1", "-t", str(a.threads),
           "-v", "--output-format", "jsonl"]
    if q8_kv:
        cmd += ["-ctk", "q8_0", "-ctv", "q8_0", "-fa", "on"]
    out, err, rss = rss_of(cmd, with_stderr=True)
    r = json.loads(next(line for line in out.splitlines() if line.startswith("{")))
    # One "llama_kv_cache: size = X MiB (N cells, L layers, ...)" line per cache (the main one and the indexer's).
    kv = [(float(m.group(1)), int(m.group(2)), int(m.group(3))) for m in
          re.finditer(r"llama_kv_cache: size =\s+([\d.]+) MiB \(\s*(\d+) cells,\s+(\d+) layers", err)]
    per_layer = sum(mib * 1024 * 1024 / cells / layers for mib, cells, layers in kv)
    return dict(prefill=r["speed_pp"], decode=r["speed_tg"], rss_mb=rss, kv_bytes_token_layer=round(per_layer, 1))


def measure_dsinfer(a, depth, dense_prefill, dense_decode):
    cmd = [a.bench, "--model", a.model, "--threads", str(a.threads), "--prompt", str(depth), "--decode",
           str(a.decode), "--reps", "1", "--precision", "fp8", "--no-empty-decode"]
    if dense_prefill:
        cmd += ["--index-topk", str(DENSE)]
    if dense_decode:
        cmd += ["--decode-index-topk", str(DENSE)]
    out, rss = rss_of(cmd)
    m = re.search(r"fp8: prefill\s+([\d.]+) tok/s.*decode\s+([\d.]+) tok/s \(\d+ tokens after the prompt\)", out)
    kv = re.search(r"KV cache (\w+): (\d+) bytes per token \((\d+) per layer\)", out)
    r = dict(prefill=float(m.group(1)), decode=float(m.group(2)), rss_mb=rss, kv_dtype=kv.group(1),
             kv_bytes_token_layer=int(kv.group(3)))
    # What a decode step reads: the weights (less the indexer's queries while a sequence sees at most index_topk
    # keys; at these depths it sees more) and the KV cache (bench_model's line after the decode figure).
    w = re.search(r"\(([\d.]+) MB read per decoded token", out)
    c = re.search(r"and reads ([\d.]+) MB of KV cache a step after the prompt", out)
    if w and c:
        r.update(weight_mb_step=float(w.group(1)), cache_mb_step=float(c.group(1)))
    return r


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--llama-cpp", required=True, help="llama.cpp source tree with build/bin/llama-batched-bench")
    ap.add_argument("--convert-python", default=sys.executable)
    ap.add_argument("--bench", default=os.path.join(REPO, "build", "bench", "bench_model"))
    ap.add_argument("--depths", type=int, nargs="+", default=[4096, 16384, 32768, 65536])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--decode", type=int, default=32)
    ap.add_argument("--peer-max-depth", type=int, default=32768)
    ap.add_argument("--peer-q8-max-depth", type=int, default=16384)
    ap.add_argument("--dense-max-depth", type=int, default=32768)
    ap.add_argument("--work", default=os.path.join(REPO, "build", "llama-compare"))
    ap.add_argument("--results", default=os.path.join(REPO, "build", "long_context.jsonl"))
    ap.add_argument("--sides", nargs="+", default=["llama.cpp", "dsinfer"], help="run only these (the table shows all)")
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    gguf = convert_to_gguf(a.model, a.llama_cpp, a.convert_python, "q8_0", a.work)

    done = {}
    if os.path.exists(a.results):
        with open(a.results) as f:
            for line in f:
                r = json.loads(line)
                done[(r["side"], r["depth"], r["threads"])] = r
    runs = []
    for d in a.depths:
        if d <= a.peer_max_depth:
            runs.append(("llama.cpp f16 KV", d, lambda d=d: measure_llama(a, gguf, d, False)))
        if d <= a.peer_q8_max_depth:
            runs.append(("llama.cpp q8_0 KV", d, lambda d=d: measure_llama(a, gguf, d, True)))
        runs.append(("dsinfer DSA", d, lambda d=d: measure_dsinfer(a, d, False, False)))
        dense_prefill = d <= a.dense_max_depth
        runs.append(("dsinfer dense" if dense_prefill else "dsinfer dense decode", d,
                     lambda d=d, p=dense_prefill: measure_dsinfer(a, d, p, True)))
    for side, d, fn in runs:
        if (side, d, a.threads) in done or not any(side.startswith(x) for x in a.sides):
            continue
        r = dict(side=side, depth=d, threads=a.threads, decode_tokens=a.decode, **fn())
        print(json.dumps(r), flush=True)
        with open(a.results, "a") as f:
            f.write(json.dumps(r) + "\n")
        done[(side, d, a.threads)] = r

    def get(side, d):
        return done.get((side, d, a.threads)) or done.get((side.replace("dense", "dense decode"), d, a.threads))

    print(f"\nmodel {a.model}, {a.threads} threads, prefill of D tokens then {a.decode} decoded tokens at depth D")
    print("| side | depth | prefill tok/s | decode tok/s | peak RSS MB | KV bytes/token/layer |")
    print("|---|---|---|---|---|---|")
    for d in a.depths:
        for side in ("dsinfer DSA", "dsinfer dense", "llama.cpp f16 KV", "llama.cpp q8_0 KV"):
            r = get(side, d)
            if r:
                pf = "-" if r["side"] == "dsinfer dense decode" else f"{r['prefill']:.1f}"
                print(f"| {r['side']} | {d} | {pf} | {r['decode']:.1f} | {r['rss_mb']:.0f} | "
                      f"{r['kv_bytes_token_layer']} |")
    print("\nratios, dsinfer DSA / llama.cpp f16 KV (prefill, decode) and dsinfer's decode vs its own at the "
          "first depth:")
    base = get("dsinfer DSA", a.depths[0])
    for d in a.depths:
        ours, peer = get("dsinfer DSA", d), get("llama.cpp f16 KV", d)
        cells = [f"depth {d}"]
        if ours and peer:
            cells.append(f"prefill {ours['prefill'] / peer['prefill']:.2f}x, "
                         f"decode {ours['decode'] / peer['decode']:.2f}x")
        if ours and base:
            cell = f"decode {ours['decode'] / base['decode']:.2f} of depth {a.depths[0]}"
            if "cache_mb_step" in ours and "cache_mb_step" in base:  # a step's bytes at D against at the first depth
                bound = ((base["weight_mb_step"] + base["cache_mb_step"]) /
                         (ours["weight_mb_step"] + ours["cache_mb_step"]))
                cell += f" (at most {bound:.2f} where decode reads memory at one rate)"
            cells.append(cell)
        print("  " + "; ".join(cells))


if __name__ == "__main__":
    main()
