#!/usr/bin/env python3
"""dsinfer vs llama.cpp on the same DeepSeek-V3.2-architecture checkpoint, side by side in one run.

    python3 bench/llama_cpp_compare.py --model build/models/v32-bench --llama-cpp /path/to/llama.cpp \
        --convert-python /path/to/venv/bin/python [--threads 1 2] [--reps 3] [--rounds 3] [--outtype q8_0|bf16]

With --outtype bf16 give the BF16 checkpoint (preset v32-bench-bf16): BF16 weights on both sides.
Each round runs llama.cpp then dsinfer at every thread count; figures are medians over rounds (each tool's own
figure inside a round: llama-bench's mean over --reps, bench_model's median over --reps).

llama.cpp comes from a package this machine can install: the `llama-cpp-python` source distribution on PyPI vendors
llama.cpp (`pip download --no-deps --no-binary :all: llama-cpp-python`, unpack, then
`cmake -B build && cmake --build build --target llama-bench` in vendor/llama.cpp). Its own converter
(convert_hf_to_gguf.py, run with a Python that has torch, transformers and numpy) turns the checkpoint into GGUF
(architecture deepseek32, FP8 weights dequantized by the converter) at Q8_0 — the 8-bit format nearest to dsinfer's
FP8 — and its own llama-bench measures it. dsinfer's bench_model measures the FP8 checkpoint. Same prompt length
(512), decode length (128), threads and repetitions; peak RSS from the OS for each process (the larger of llama-bench's
two runs). Each round also measures the memory read bandwidth at each thread count (bench_model --read-bandwidth,
its own process): decode streams the weights, so the script prints each decode figure as a share of it and the
largest decode ratio over llama.cpp that this machine's memory allows. With several rounds it also prints each
ratio's spread over the rounds (a round runs both tools back to back, so its own ratio drifts less with the machine).

Decode is compared at two cache depths, each side at the same positions: from an empty cache (llama-bench's plain
tg128, positions 0-127) and right after the 512-token prompt (llama-bench `-p 0 -n 128 -d 512`, positions 512-639;
bench_model decodes after its timed prefill). A step's attention and indexer work grow with the depth, so a decode
figure means little without it.

The repo's small checkpoints carry a tokenizer trained here, which the converter does not know by hash; the
conversion therefore tells it that the pre-tokenizer is DeepSeek-V3's (which it is) — the vocabulary does not affect
the timings. No llama.cpp code is part of this repository.
"""
import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CONVERT_WRAPPER = r"""
import sys, runpy
sys.path.insert(0, sys.argv[1])
sys.path.insert(0, sys.argv[1] + "/gguf-py")
import conversion.base as base
import conversion.deepseek as deepseek
base.TextModel.get_vocab_base_pre = lambda self, tokenizer: "deepseek-v3"
# The V3.2 converter asserts add_bos_token through transformers' tokenizer object, which transformers 5 no longer
# exposes for this tokenizer class; the BOS flag does not matter for timings.
deepseek.DeepseekV32Model.set_vocab = lambda self: self._set_vocab_gpt2()
sys.argv = [sys.argv[1] + "/convert_hf_to_gguf.py"] + sys.argv[2:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def rss_of(cmd, with_stderr=False):
    """Output and peak RSS (MB) of one command, measured in a fresh Python child so earlier children do not mask it.
    Returns (stdout, MB), or (stdout, stderr, MB) with with_stderr (invalid UTF-8, as in llama.cpp's verbose log of
    the vocabulary, replaced)."""
    code = ("import resource, subprocess, sys, json; r = subprocess.run(json.loads(sys.argv[1]), capture_output=True,"
            " text=True, errors='replace'); print(json.dumps({'rc': r.returncode, 'out': r.stdout, 'err': r.stderr,"
            " 'rss_kb': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))")
    r = subprocess.run([sys.executable, "-c", code, json.dumps(cmd)], capture_output=True, text=True, check=True)
    res = json.loads(r.stdout)
    if res["rc"] != 0:
        sys.exit(f"{cmd[0]} failed:\n{res['err'][-2000:]}")
    mb = res["rss_kb"] / 1024.0
    return (res["out"], res["err"], mb) if with_stderr else (res["out"], mb)


def convert_to_gguf(model, llama_cpp, convert_python, outtype, work):
    """The checkpoint as GGUF through llama.cpp's own converter (once; kept in `work`). Returns its path."""
    gguf = os.path.join(work, f"model-{outtype}.gguf")
    if not os.path.exists(gguf):
        # DeepSeek's GGUFs add BOS: give the converter a copy of the directory with add_bos_token true.
        src = os.path.join(work, f"hf-{outtype}")
        shutil.rmtree(src, ignore_errors=True)
        os.makedirs(src)
        for f in os.listdir(model):
            os.symlink(os.path.abspath(os.path.join(model, f)), os.path.join(src, f))
        os.remove(os.path.join(src, "tokenizer_config.json"))
        with open(os.path.join(model, "tokenizer_config.json")) as f:
            tc = json.load(f)
        tc["add_bos_token"] = True
        with open(os.path.join(src, "tokenizer_config.json"), "w") as f:
            json.dump(tc, f)
        with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as w:
            w.write(CONVERT_WRAPPER)
        subprocess.run([convert_python, w.name, llama_cpp, src, "--outtype", outtype, "--outfile", gguf], check=True)
    return gguf


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--llama-cpp", required=True, help="llama.cpp source tree with build/bin/llama-bench")
    ap.add_argument("--convert-python", default=sys.executable)
    ap.add_argument("--bench", default=os.path.join(REPO, "build", "bench", "bench_model"))
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--prompt", type=int, default=512)
    ap.add_argument("--decode", type=int, default=128)
    ap.add_argument("--work", default=os.path.join(REPO, "build", "llama-compare"))
    ap.add_argument("--outtype", default="q8_0", choices=["q8_0", "bf16"])
    ap.add_argument("--rounds", type=int, default=1, help="0: only convert")
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)

    gguf = convert_to_gguf(a.model, a.llama_cpp, a.convert_python, a.outtype, a.work)
    llama_bench = os.path.join(a.llama_cpp, "build", "bin", "llama-bench")

    import statistics
    if a.rounds < 1:
        print(f"converted: {gguf}")
        return
    samples = {t: [] for t in a.threads}
    for _ in range(a.rounds):
        for t in a.threads:  # llama.cpp then dsinfer, per thread count, every round
            common = ["-m", gguf, "-t", str(t), "-r", str(a.reps), "-o", "json"]
            out, rss_l = rss_of([llama_bench, "-p", str(a.prompt), "-n", str(a.decode)] + common)
            lb = json.loads(out)
            pp = next(x for x in lb if x["n_prompt"] > 0)["avg_ts"]
            tg0 = next(x for x in lb if x["n_gen"] > 0)["avg_ts"]
            out, rss_l2 = rss_of([llama_bench, "-p", "0", "-n", str(a.decode), "-d", str(a.prompt)] + common)
            lb = json.loads(out)
            tgp = next(x for x in lb if x["n_gen"] > 0 and x.get("n_depth", 0) == a.prompt)["avg_ts"]
            rss_l = max(rss_l, rss_l2)
            out, rss_d = rss_of([a.bench, "--model", a.model, "--threads", str(t), "--prompt", str(a.prompt),
                                 "--decode", str(a.decode), "--reps", str(a.reps), "--precision", "fp8"])
            m = re.search(r"fp8: prefill\s+([\d.]+) tok/s.*decode\s+([\d.]+) tok/s \(\d+ tokens after the prompt\)"
                          r".*decode\s+([\d.]+) tok/s \(\d+ tokens from an empty cache\)", out)
            dp, ddp, dd0 = float(m.group(1)), float(m.group(2)), float(m.group(3))
            traffic = re.search(r"\(([\d.]+) MB read per decoded token(?:; ([\d.]+) MB while the sequence sees at "
                                r"most index_topk = (\d+) keys)?", out)
            decode_mb = float(traffic.group(1))
            # Decoding from an empty cache within index_topk keys, dsinfer skips the indexer's queries (bench_model
            # prints that smaller count).
            decode0_mb = decode_mb
            if traffic.group(2) and a.decode <= int(traffic.group(3)):
                decode0_mb = float(traffic.group(2))
            # The bound for both: this many threads' memory read bandwidth, measured now in its own process (its
            # buffer must not count in dsinfer's peak RSS).
            bw = float(re.search(r"read bandwidth, \d+ threads: ([\d.]+) GB/s",
                                 subprocess.run([a.bench, "--read-bandwidth", "--threads", str(t)], check=True,
                                                capture_output=True, text=True).stdout).group(1))
            samples[t].append((dp, pp, dd0, tg0, ddp, tgp, rss_d, rss_l, bw))
            print(f"round: {t} threads: dsinfer prefill {dp:.1f} decode@0 {dd0:.1f} decode@{a.prompt} {ddp:.1f}; "
                  f"llama.cpp prefill {pp:.1f} decode@0 {tg0:.1f} decode@{a.prompt} {tgp:.1f}; read bandwidth "
                  f"{bw:.1f} GB/s", flush=True)
    rows = [(t, *[statistics.median(x[i] for x in samples[t]) for i in range(9)]) for t in a.threads]
    ours = "FP8" if a.outtype == "q8_0" else "BF16"
    print(f"model {a.model} (dsinfer {ours}) vs {os.path.basename(gguf)} (llama.cpp {a.outtype.upper()}); "
          f"prompt {a.prompt}, decode {a.decode}, {a.reps} repetitions, median of {a.rounds} round(s)")
    print(f"threads | prefill tok/s dsinfer / llama.cpp = ratio | decode@0 tok/s dsinfer / llama.cpp = ratio | "
          f"decode@{a.prompt} tok/s dsinfer / llama.cpp = ratio | peak RSS MB dsinfer / llama.cpp")
    for t, dp, pp, dd0, tg0, ddp, tgp, rd, rl, _ in rows:
        print(f"{t:7} | {dp:8.1f} / {pp:8.1f} = {dp / pp:4.2f}x | {dd0:8.1f} / {tg0:8.1f} = {dd0 / tg0:4.2f}x | "
              f"{ddp:8.1f} / {tgp:8.1f} = {ddp / tgp:4.2f}x | {rd:7.0f} / {rl:7.0f}")
    # Each round runs both tools within a minute or two, so a round's own ratio is less exposed to the machine's
    # drift than the ratio of medians above: the spread of the per-round ratios says how firm a ratio is.
    if a.rounds > 1:
        print("per-round ratios, dsinfer / llama.cpp (min / median / max over the rounds):")
        for t in a.threads:
            cells = []
            for name, i, j in (("prefill", 0, 1), ("decode@0", 2, 3), (f"decode@{a.prompt}", 4, 5)):
                r = sorted(x[i] / x[j] for x in samples[t])
                cells.append(f"{name} {r[0]:.2f} / {statistics.median(r):.2f} / {r[-1]:.2f}")
            print(f"{t:7} threads | " + " | ".join(cells))
    # Decode streams the weights: tok/s × the bytes one step reads is bounded by the read bandwidth, and so is any
    # decode ratio (llama.cpp's file holds at least as many weight bytes: Q8_0 is 8.5 bits a weight, BF16 the same).
    gb, gb0 = decode_mb / 1e3, decode0_mb / 1e3
    print(f"decode weight traffic: {decode_mb:.1f} MB of weights per token (dsinfer's count; {decode0_mb:.1f} MB "
          f"for dsinfer's decode@0); medians of the per-round read bandwidth")
    print("threads | read GB/s | dsinfer decode@0 GB/s = share | decode@P GB/s = share | llama.cpp at the same bytes: "
          "decode@0 share, decode@P share | the most decode@0 / decode@P ratio the bandwidth allows")
    for t, dp, pp, dd0, tg0, ddp, tgp, rd, rl, bw in rows:
        print(f"{t:7} | {bw:9.1f} | {dd0 * gb0:6.1f} = {dd0 * gb0 / bw:4.2f} | {ddp * gb:6.1f} = {ddp * gb / bw:4.2f} | "
              f"{tg0 * gb / bw:4.2f}, {tgp * gb / bw:4.2f} | {bw / (tg0 * gb0):4.2f}x / {bw / (tgp * gb):4.2f}x")
    if len(rows) >= 2:
        first, last = rows[0], rows[-1]
        print(f"decode scaling {first[0]} -> {last[0]} threads: at depth 0 dsinfer {last[3] / first[3]:.2f}x, "
              f"llama.cpp {last[4] / first[4]:.2f}x; at depth {a.prompt} dsinfer {last[5] / first[5]:.2f}x, "
              f"llama.cpp {last[6] / first[6]:.2f}x")

if __name__ == "__main__":
    main()
