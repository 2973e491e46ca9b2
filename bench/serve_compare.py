#!/usr/bin/env python3
"""`dsinfer serve` vs llama.cpp's `llama-server` on the same checkpoint, side by side in one run.

    python3 bench/serve_compare.py --model build/models/v32-bench --llama-cpp /path/to/llama.cpp \\
        --convert-python /path/to/venv/bin/python [--threads 2] [--concurrency 1 4 16 64] [--prompt 128] \\
        [--max-tokens 64] [--requests-per-client 2] [--rounds 1]

Both servers get the same threads, the same prompts (as token ids, so both evaluate exactly the same tokens), the
same max tokens (ignore_eos, so every request generates all of them) and greedy sampling, on POST /v1/completions
with stream=true; 64 parallel slots each (dsinfer --max-sessions, llama-server -np with the context split over the
slots), continuous batching on both. For each concurrency C, C clients each send `--requests-per-client` requests
one after another. Measured per server and C: aggregate output tokens/s (all generated tokens / wall time of the
level), TTFT (request sent -> first token chunk) p50/p99, inter-token latency (gaps between a request's consecutive
token chunks) p50/p99. dsinfer runs its FP8 checkpoint, llama-server the same checkpoint converted to GGUF Q8_0 by
llama.cpp's own converter (bench/llama_cpp_compare.py's convert_to_gguf; llama.cpp from the llama-cpp-python sdist,
built with `cmake --build build --target llama-server`; it runs with --no-repack, since its repacked CPU weight
layouts cannot run this architecture's absorbed-MLA matmul). Servers run one at a time; with several rounds each
round runs both and the figures are medians over rounds. The 1-minute load average at the end of each level is
printed too: on a machine whose cores other processes share, llama.cpp's spinning thread pool slows down far more
than dsinfer's (which yields), so a figure means little without it.
"""
import argparse
import asyncio
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from llama_cpp_compare import convert_to_gguf  # noqa: E402


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url, proc, timeout=600):
    end = time.time() + timeout
    while time.time() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as r:
                if r.status == 200:
                    return
        except Exception:
            pass
        time.sleep(0.2)
    raise RuntimeError("server not ready")


def start_dsinfer(a, port):
    cmd = [a.dsinfer, "serve", "--model", a.model, "--host", "127.0.0.1", "--port", str(port), "--threads",
           str(a.threads), "--max-sessions", "64", "--max-queue", "1024", "--ctx", str(a.ctx)]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def start_llama(a, port, gguf):
    cmd = [a.llama_server, "-m", gguf, "--host", "127.0.0.1", "--port", str(port), "-t", str(a.threads), "-tb",
           str(a.threads), "-np", "64", "-c", str(64 * a.ctx), "--cont-batching", "-b", "2048", "-ub", "512",
           # Repacking (the CPU's interleaved weight layouts) cannot run this architecture in this llama.cpp: the
           # graph's absorbed-MLA matmul over the 3-D attn_k_b is then unsupported (GGML_ASSERT in the scheduler).
           "--no-repack"]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def one_request(host, port, body, out):
    """POST /v1/completions with stream=true over a raw asyncio connection; records chunk arrival times."""
    reader, writer = await asyncio.open_connection(host, port)
    data = json.dumps(body).encode()
    writer.write(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Connection: close\r\nContent-Length: " + str(len(data)).encode() + b"\r\n\r\n" + data)
    t0 = time.perf_counter()
    await writer.drain()
    times, tokens, buf = [], 0, b""
    while True:
        chunk = await reader.read(65536)
        if not chunk:
            break
        now = time.perf_counter()
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            line = line.strip()
            if not line.startswith(b"data: ") or line == b"data: [DONE]":
                continue
            try:
                j = json.loads(line[6:])
            except ValueError:
                continue  # a chunked-encoding size line glued to the payload is not part of it
            ch = (j.get("choices") or [{}])[0]
            if ch.get("text"):
                times.append(now)
            if j.get("usage"):
                tokens = j["usage"]["completion_tokens"]
    writer.close()
    out.append({"t0": t0, "times": times, "tokens": tokens or body["max_tokens"]})


async def level(host, port, prompts, c, a):
    """C clients, each sending its requests one after another; every request has its own prompt (`prompts` holds
    at least C * requests_per_client), so no server reuses a cached prompt."""
    results = []

    async def client(i):
        for r in range(a.requests_per_client):
            p = prompts[i * a.requests_per_client + r]
            body = {"model": "m", "prompt": p, "max_tokens": a.max_tokens, "temperature": 0, "stream": True,
                    "ignore_eos": True, "stream_options": {"include_usage": True}}
            await one_request(host, port, body, results)
    t0 = time.perf_counter()
    await asyncio.gather(*[client(i) for i in range(c)])
    wall = time.perf_counter() - t0
    ttft = [r["times"][0] - r["t0"] for r in results if r["times"]]
    itl = [b - a_ for r in results for a_, b in zip(r["times"], r["times"][1:])]
    toks = sum(r["tokens"] for r in results)
    q = lambda v, p: statistics.quantiles(v, n=100, method="inclusive")[p - 1] if len(v) > 1 else (v[0] if v else 0)
    return {"tok_s": toks / wall, "ttft_p50": q(ttft, 50), "ttft_p99": q(ttft, 99), "itl_p50": q(itl, 50),
            "itl_p99": q(itl, 99), "requests": len(results), "tokens": toks, "wall": wall,
            "load1": os.getloadavg()[0]}


def run_server(kind, a, gguf, prompts):
    port = free_port()
    proc = start_dsinfer(a, port) if kind == "dsinfer" else start_llama(a, port, gguf)
    try:
        wait_ready(f"http://127.0.0.1:{port}", proc)
        # Warm-up (its own prompt), then each level with prompts no earlier request used.
        asyncio.run(level("127.0.0.1", port, prompts[-1:], 1, argparse.Namespace(**{**vars(a), "requests_per_client": 1})))
        out, used = {}, 0
        for c in a.concurrency:
            out[c] = asyncio.run(level("127.0.0.1", port, prompts[used:], c, a))
            used += c * a.requests_per_client
        return out
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="the FP8 checkpoint (preset v32-bench)")
    ap.add_argument("--llama-cpp", required=True, help="llama.cpp source tree with build/bin/llama-server")
    ap.add_argument("--convert-python", default=sys.executable)
    ap.add_argument("--dsinfer", default=os.path.join(REPO, "build", "tools", "dsinfer"))
    ap.add_argument("--work", default=os.path.join(REPO, "build", "llama-compare"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16, 64])
    ap.add_argument("--prompt", type=int, default=128, help="prompt tokens")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--requests-per-client", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=1)
    a = ap.parse_args()
    a.ctx = 1 << (a.prompt + a.max_tokens + 8).bit_length()
    a.llama_server = os.path.join(a.llama_cpp, "build", "bin", "llama-server")
    os.makedirs(a.work, exist_ok=True)
    gguf = convert_to_gguf(a.model, a.llama_cpp, a.convert_python, "q8_0", a.work)
    # Distinct prompts of exactly --prompt token ids (BOS first), the same for both servers.
    with open(os.path.join(a.model, "config.json")) as f:
        cfg = json.load(f)
    bos = cfg.get("bos_token_id", 0)
    n_prompts = sum(a.concurrency) * a.requests_per_client + 1
    prompts = [[bos] + [1000 + (i * 7919 + j * 104729) % 3000 for j in range(a.prompt - 1)] for i in range(n_prompts)]
    rounds = {"llama-server": [], "dsinfer": []}
    for _ in range(a.rounds):
        for kind in ("llama-server", "dsinfer"):
            rounds[kind].append(run_server(kind, a, gguf, prompts))
    med = {k: {c: {m: statistics.median(r[c][m] for r in v) for m in v[0][c]} for c in a.concurrency}
           for k, v in rounds.items()}
    print(f"model {a.model}: dsinfer FP8 vs llama-server Q8_0 ({os.path.basename(gguf)}); threads {a.threads}, prompt "
          f"{a.prompt} tokens, {a.max_tokens} generated (greedy, ignore_eos), {a.requests_per_client} requests per "
          f"client, {a.rounds} round(s), medians")
    print("| clients | output tok/s dsinfer / llama-server | ratio | TTFT p50 ms | TTFT p99 ms | ITL p50 ms | "
          "ITL p99 ms | load avg |")
    print("|---|---|---|---|---|---|---|---|")
    for c in a.concurrency:
        d, l = med["dsinfer"][c], med["llama-server"][c]
        print(f"| {c} | {d['tok_s']:.1f} / {l['tok_s']:.1f} | {d['tok_s'] / l['tok_s']:.2f}x | "
              f"{d['ttft_p50'] * 1e3:.0f} / {l['ttft_p50'] * 1e3:.0f} | {d['ttft_p99'] * 1e3:.0f} / {l['ttft_p99'] * 1e3:.0f} | "
              f"{d['itl_p50'] * 1e3:.1f} / {l['itl_p50'] * 1e3:.1f} | {d['itl_p99'] * 1e3:.1f} / {l['itl_p99'] * 1e3:.1f} | "
              f"{d['load1']:.1f} / {l['load1']:.1f} |")
    print(json.dumps({"raw": rounds}, default=str)[:100000], file=open(os.path.join(a.work, "serve_compare.json"), "w"))


if __name__ == "__main__":
    main()
