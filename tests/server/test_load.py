"""A bounded load test of `dsinfer serve` on loopback with the official openai client: 64 concurrent streaming
clients, several hundred requests, some clients hanging up mid-stream. Every completed request's text is exactly
its usage.completion_tokens tokens and, greedy, exactly what the same request gives alone; nothing is lost or
duplicated; afterwards no session runs, no KV block is held, and the server's RSS is back at its idle level."""
import asyncio
import json
import os
import time
import urllib.request

import openai

from conftest import Server

CLIENTS = 64
REQUESTS = int(os.environ.get("DSINFER_LOAD_REQUESTS", "384"))
HANGUP_EVERY = 8  # every 8th request hangs up after 3 chunks
PROMPTS = [f"Request {i}: tell me something about the number {i * 37 % 101}." for i in range(24)]


def rss_bytes(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def post(server, path, body):
    req = urllib.request.Request(server.base + path, data=json.dumps(body).encode(), method="POST",
                                 headers={"Authorization": f"Bearer {server.api_key}"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read())


def request_of(i):
    hangup = i % HANGUP_EVERY == HANGUP_EVERY - 1
    return {
        "tag": i, "hangup": hangup, "prompt": PROMPTS[i % len(PROMPTS)],
        "max_tokens": 200 if hangup else 8 + (i * 7) % 25,
    }


async def hang_up(server, r):
    """A client that reads 3 chunks of its stream and closes its socket (a raw connection, so the close is certain:
    a pooling HTTP client may keep the connection open)."""
    body = json.dumps({"model": "dsinfer-test", "messages": [{"role": "user", "content": r["prompt"]}],
                       "temperature": 0, "max_tokens": r["max_tokens"], "stream": True, "ignore_eos": True}).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Authorization: Bearer " + server.api_key.encode() + b"\r\nContent-Length: " +
                 str(len(body)).encode() + b"\r\n\r\n" + body)
    await writer.drain()
    seen = b""
    while seen.count(b"data: ") < 3:
        chunk = await reader.read(4096)
        assert chunk, "the server closed the stream early"
        seen += chunk
    writer.close()
    await writer.wait_closed()
    return {"tag": r["tag"], "hung_up": True}


async def run_one(client, r):
    stream = await client.chat.completions.create(
        model="dsinfer-test", messages=[{"role": "user", "content": r["prompt"]}], temperature=0,
        max_tokens=r["max_tokens"], stream=True, stream_options={"include_usage": True}, logprobs=True,
        extra_body={"return_tokens_as_token_ids": True})
    text, ids, usage, finish, rid, chunks = "", [], None, None, None, 0
    async for c in stream:
        rid = rid or c.id
        chunks += 1
        if c.usage:
            usage = c.usage
        for ch in c.choices:
            text += ch.delta.content or ""
            if ch.logprobs and ch.logprobs.content:
                ids += [int(t.token.split(":")[1]) for t in ch.logprobs.content]
            finish = ch.finish_reason or finish
    return {"tag": r["tag"], "id": rid, "text": text, "ids": ids, "usage": usage, "finish": finish}


async def load(server, requests):
    # The client's default pool allows far more than 64 connections.
    client = openai.AsyncOpenAI(base_url=server.base + "/v1", api_key=server.api_key, max_retries=0, timeout=300)
    queue = asyncio.Queue()
    for r in requests:
        queue.put_nowait(r)
    results = []

    async def worker():
        while not queue.empty():
            r = queue.get_nowait()
            results.append(await (hang_up(server, r) if r["hangup"] else run_one(client, r)))
    await asyncio.gather(*[worker() for _ in range(CLIENTS)])
    await client.close()
    return results


def test_load_64_streaming_clients():
    s = Server("--max-sessions", str(CLIENTS), "--max-queue", "256", "--ctx", "512", "--prefix-cache", "8")
    try:
        # Each distinct request alone, one at a time: the reference for greedy outputs.
        alone = {}
        sync = s.client()
        for p in PROMPTS:
            for n in sorted({8 + (i * 7) % 25 for i in range(REQUESTS) if PROMPTS[i % len(PROMPTS)] == p}):
                r = sync.chat.completions.create(model="dsinfer-test", messages=[{"role": "user", "content": p}],
                                                 temperature=0, max_tokens=n)
                alone[(p, n)] = r.choices[0].message.content
        # A warm-up round at full concurrency, then the idle level of RSS.
        asyncio.run(load(s, [dict(request_of(i), hangup=False, max_tokens=16) for i in range(CLIENTS)]))
        post(s, "/reset_prefix_cache", {})
        idle_rss = rss_bytes(s.proc.pid)
        before = s.metrics()

        requests = [request_of(i) for i in range(REQUESTS)]
        results = asyncio.run(load(s, requests))

        # Nothing lost or duplicated.
        assert sorted(r["tag"] for r in results) == list(range(REQUESTS))
        done = [r for r in results if not r.get("hung_up")]
        hung = [r for r in results if r.get("hung_up")]
        assert len(hung) == REQUESTS // HANGUP_EVERY and len({r["id"] for r in done}) == len(done)
        for r in done:
            req = requests[r["tag"]]
            # The text is exactly its completion tokens (the eos token, when it ended there, has no text).
            assert r["usage"].completion_tokens == len(r["ids"])
            ids = r["ids"][:-1] if r["finish"] == "stop" else r["ids"]
            assert post(s, "/detokenize", {"tokens": ids})["prompt"] == r["text"]
            # Greedy: the same as the request alone.
            assert r["text"] == alone[(req["prompt"], req["max_tokens"])], r["tag"]

        # Afterwards: nothing runs, the hung-up clients were cancelled, and no KV block is held once the prefix
        # cache lets go of the finished conversations.
        # (A hang-up is noticed within a fraction of a second: wait for the last ones.)
        deadline = time.time() + 15
        while True:
            after = s.metrics()
            cancelled = after["dsinfer_requests_cancelled_total"] - before["dsinfer_requests_cancelled_total"]
            if (after["dsinfer_running_sessions"] == 0 and cancelled == len(hung)) or time.time() > deadline:
                break
            time.sleep(0.05)
        assert after["dsinfer_running_sessions"] == 0 and after["dsinfer_queue_depth"] == 0
        key = 'dsinfer_requests_total{endpoint="/v1/chat/completions",status="200"}'
        assert cancelled == len(hung), (cancelled, after[key] - before[key], len(done))
        assert after[key] - before[key] >= len(done)
        assert after.get('dsinfer_requests_total{endpoint="/v1/chat/completions",status="429"}', 0) == 0
        # Sessions really ran together: some steps held at least 32 of them.
        assert after['dsinfer_batch_sessions_bucket{le="16"}'] - before['dsinfer_batch_sessions_bucket{le="16"}'] < \
            after["dsinfer_batch_sessions_count"] - before["dsinfer_batch_sessions_count"]
        post(s, "/reset_prefix_cache", {})
        m = s.metrics()
        assert m["dsinfer_kv_blocks_used"] == 0
        rss = rss_bytes(s.proc.pid)
        print(f"\nload: {len(done)} completed, {len(hung)} hung up; RSS idle {idle_rss >> 20} MiB, after "
              f"{rss >> 20} MiB; steps {int(after['dsinfer_batch_sessions_count'] - before['dsinfer_batch_sessions_count'])}")
        assert rss <= idle_rss * 1.10 + (8 << 20), (idle_rss, rss)
    finally:
        assert s.stop() == 0
