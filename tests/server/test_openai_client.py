"""`dsinfer serve` driven by the official `openai` Python client on loopback (the small random-weight model: the
protocol, not the quality of the text). A trained model, where it exists, runs the tool round trip for real."""
import json
import signal
import threading
import time
import urllib.error
import urllib.request

import openai
import pytest

from conftest import Server, trained_model_path

MODEL = "dsinfer-test"
HELLO = [{"role": "user", "content": "Hello! What can you do?"}]
TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Get the current weather for a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "The city name, e.g. Paris."}},
                   "required": ["city"]}}}]


def chat(client, **kw):
    kw.setdefault("model", MODEL)
    kw.setdefault("messages", HELLO)
    kw.setdefault("max_tokens", 12)
    kw.setdefault("temperature", 0)
    return client.chat.completions.create(**kw)


def post(server, path, body, key=None, raw=None):
    data = raw if raw is not None else json.dumps(body).encode()
    req = urllib.request.Request(server.base + path, data=data, method="POST",
                                 headers={"Content-Type": "application/json",
                                          "Authorization": f"Bearer {key or server.api_key}"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, dict(r.headers), json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), json.loads(e.read())


def post_json(client, path, body):
    base = str(client.base_url).rstrip("/").removesuffix("/v1")
    req = urllib.request.Request(base + path, data=json.dumps(body).encode(), method="POST",
                                 headers={"Authorization": f"Bearer {client.api_key}"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return r.status, dict(r.headers), json.loads(r.read())


def test_chat_completion_shape(client):
    r = chat(client)
    assert r.object == "chat.completion" and r.id.startswith("chatcmpl-") and r.model == MODEL
    c = r.choices[0]
    assert c.index == 0 and c.message.role == "assistant" and isinstance(c.message.content, str)
    assert c.finish_reason in ("stop", "length")
    assert r.usage.completion_tokens == 12 or c.finish_reason == "stop"
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_prompt_tokens_equal_tokenize(server, client):
    r = chat(client, max_tokens=2)
    status, _, t = post(server, "/tokenize", {"messages": HELLO})
    assert status == 200 and t["count"] == r.usage.prompt_tokens == len(t["tokens"])
    status, _, d = post(server, "/detokenize", {"tokens": t["tokens"]})
    assert status == 200 and d["prompt"].startswith("<｜begin▁of▁sentence｜>") and "Hello! What can you do?" in d["prompt"]


def test_streaming_equals_non_streaming(client):
    full = chat(client, max_tokens=16)
    chunks = list(chat(client, max_tokens=16, stream=True, stream_options={"include_usage": True}))
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == full.choices[0].message.content
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finals) == 1 and finals[0].choices[0].finish_reason == full.choices[0].finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == full.usage.completion_tokens
    assert all(c.usage is None for c in chunks[:-1])


def test_thinking_mode_streams_reasoning_content(client):
    # Thinking mode (vLLM's chat_template_kwargs): the prompt ends with <think>, so until </think> the reply is
    # reasoning. A random model never closes it: everything arrives as delta.reasoning_content.
    chunks = list(chat(client, max_tokens=10, stream=True, extra_body={"chat_template_kwargs": {"thinking": True}}))
    reasoning = "".join((c.choices[0].delta.model_extra or {}).get("reasoning_content") or "" for c in chunks)
    content = "".join(c.choices[0].delta.content or "" for c in chunks)
    r = chat(client, max_tokens=10, extra_body={"chat_template_kwargs": {"thinking": True}})
    assert reasoning and reasoning == r.choices[0].message.model_extra["reasoning_content"]
    assert content == (r.choices[0].message.content or "")
    _, _, t = post_json(client, "/tokenize", {"messages": HELLO, "chat_template_kwargs": {"thinking": True}})
    assert t["count"] == r.usage.prompt_tokens


def test_text_content_parts(client):
    parts = [{"role": "user", "content": [{"type": "text", "text": "Hello!"}, {"type": "text", "text": "What can you do?"}]}]
    joined = [{"role": "user", "content": "Hello!\nWhat can you do?"}]
    a, b = chat(client, messages=parts), chat(client, messages=joined)
    assert a.usage.prompt_tokens == b.usage.prompt_tokens and a.choices[0].message.content == b.choices[0].message.content


@pytest.mark.parametrize("choice", ["auto", "none", "required", {"type": "function", "function": {"name": "get_weather"}}])
def test_tool_choice_accepted(client, choice):
    r = chat(client, tools=TOOLS, tool_choice=choice, max_tokens=8)
    c = r.choices[0]
    assert c.finish_reason in ("stop", "length", "tool_calls")
    if choice == "none":
        assert not c.message.tool_calls
    for call in c.message.tool_calls or []:
        assert call.id.startswith("call_") and call.type == "function"
        json.loads(call.function.arguments)


def test_tool_choice_none_hides_the_tools(client):
    with_tools = chat(client, tools=TOOLS, tool_choice="auto", max_tokens=1)
    without = chat(client, tools=TOOLS, tool_choice="none", max_tokens=1)
    plain = chat(client, max_tokens=1)
    assert without.usage.prompt_tokens == plain.usage.prompt_tokens < with_tools.usage.prompt_tokens


def test_tool_choice_errors(client):
    with pytest.raises(openai.BadRequestError) as e:
        chat(client, tools=TOOLS, tool_choice={"type": "function", "function": {"name": "nope"}})
    assert e.value.body["param"] == "tool_choice"
    with pytest.raises(openai.BadRequestError) as e:
        chat(client, tool_choice="required")
    assert e.value.body["param"] == "tool_choice"


def test_tool_result_round_trip_protocol(server, client):
    # A conversation that went through a tool call: the assistant's call (with its id) and the tool's result.
    messages = [
        {"role": "user", "content": "Weather in Hangzhou?"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "call_abc", "type": "function", "function": {
            "name": "get_weather", "arguments": "{\"city\": \"Hangzhou\"}"}}]},
        {"role": "tool", "tool_call_id": "call_abc", "content": "{\"temperature\": 24, \"sky\": \"clear\"}"},
    ]
    r = chat(client, messages=messages, tools=TOOLS, max_tokens=8)
    _, _, t = post(server, "/tokenize", {"messages": messages, "tools": TOOLS})
    assert r.usage.prompt_tokens == t["count"]
    _, _, d = post(server, "/detokenize", {"tokens": t["tokens"]})
    assert "<｜DSML｜invoke name=\"get_weather\">" in d["prompt"] and "<function_results>" in d["prompt"]


@pytest.fixture(scope="module")
def trained():
    path = trained_model_path()
    if not path:
        pytest.skip("no trained model (models/dsinfer-v32-mini) in this checkout")
    s = Server("--max-sessions", "4", "--ctx", "4096", model=path)
    yield s
    s.stop()


def test_tool_round_trip_with_trained_model(trained):
    client = trained.client()
    messages = [{"role": "user", "content": "What is the weather in Hangzhou right now?"}]
    r = client.chat.completions.create(model=trained.base, messages=messages, tools=TOOLS, temperature=0, max_tokens=256)
    c = r.choices[0]
    assert c.finish_reason == "tool_calls" and c.message.tool_calls
    call = c.message.tool_calls[0]
    assert call.id and call.function.name == "get_weather" and isinstance(json.loads(call.function.arguments), dict)
    # The same call streamed: argument fragments under one index and id, concatenating to the full arguments.
    chunks = list(client.chat.completions.create(model=trained.base, messages=messages, tools=TOOLS, temperature=0,
                                                 max_tokens=256, stream=True))
    frags = [tc for ch in chunks if ch.choices for tc in (ch.choices[0].delta.tool_calls or [])]
    assert frags[0].id and frags[0].function.name == "get_weather"
    assert "".join(f.function.arguments or "" for f in frags if f.index == 0) == call.function.arguments
    messages += [{"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
                 {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temperature": 24, "sky": "clear"})}]
    r2 = client.chat.completions.create(model=trained.base, messages=messages, tools=TOOLS, temperature=0, max_tokens=256)
    assert r2.choices[0].finish_reason == "stop" and r2.choices[0].message.content


def test_stop_strings(client):
    full = chat(client, max_tokens=24).choices[0].message.content
    stop = full[6:9]
    assert stop
    r = chat(client, max_tokens=24, stop=[stop])
    assert r.choices[0].finish_reason == "stop"
    assert r.choices[0].message.content == full[:full.index(stop)]


def test_seed_reproducible(client):
    a = chat(client, temperature=1.0, seed=1234, max_tokens=16)
    b = chat(client, temperature=1.0, seed=1234, max_tokens=16)
    c = chat(client, temperature=1.0, seed=999, max_tokens=16)
    assert a.choices[0].message.content == b.choices[0].message.content
    assert a.choices[0].message.content != c.choices[0].message.content


def test_n_choices(client):
    r = chat(client, n=3, temperature=1.0, seed=7, max_tokens=10)
    assert [c.index for c in r.choices] == [0, 1, 2]
    texts = {c.message.content for c in r.choices}
    assert len(texts) == 3  # seed + index per choice
    assert r.usage.completion_tokens == sum(10 if c.finish_reason == "length" else 0 for c in r.choices) or \
        any(c.finish_reason == "stop" for c in r.choices)
    again = chat(client, n=3, temperature=1.0, seed=7, max_tokens=10)
    assert [c.message.content for c in again.choices] == [c.message.content for c in r.choices]
    greedy = chat(client, n=2, max_tokens=10)
    assert greedy.choices[0].message.content == greedy.choices[1].message.content
    chunks = list(chat(client, n=2, temperature=1.0, seed=7, max_tokens=10, stream=True))
    for i in range(2):
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices and c.choices[0].index == i)
        assert text == again.choices[i].message.content


def test_logprobs(client):
    r = chat(client, logprobs=True, top_logprobs=3, max_tokens=8)
    lp = r.choices[0].logprobs.content
    assert len(lp) == r.usage.completion_tokens
    for item in lp:
        assert item.logprob <= 0 and len(item.top_logprobs) == 3
        assert item.token == item.top_logprobs[0].token  # greedy picks the most likely token
        assert item.top_logprobs[0].logprob >= item.top_logprobs[1].logprob >= item.top_logprobs[2].logprob
    joined = b"".join(bytes(i.bytes) for i in lp).decode("utf-8", "replace")
    assert joined == r.choices[0].message.content or joined.startswith(r.choices[0].message.content)
    stream = list(chat(client, logprobs=True, top_logprobs=2, max_tokens=8, stream=True))
    streamed = [i for c in stream if c.choices and c.choices[0].logprobs for i in c.choices[0].logprobs.content]
    assert [i.token for i in streamed] == [i.token for i in lp]


def test_penalties_and_logit_bias(server, client):
    base = chat(client, max_tokens=8)
    _, _, t = post(server, "/tokenize", {"prompt": "x", "add_special_tokens": False})
    x = t["tokens"][0]
    forced = chat(client, max_tokens=4, logit_bias={str(x): 100})
    assert forced.choices[0].message.content == "xxxx"
    pen = chat(client, max_tokens=8, frequency_penalty=2.0, presence_penalty=2.0)
    assert pen.usage.completion_tokens == base.usage.completion_tokens or pen.choices[0].finish_reason == "stop"


def test_prefix_cache_reports_cached_tokens(server, client):
    long_system = {"role": "system", "content": "You are a careful assistant. " * 20}
    a = chat(client, messages=[long_system, {"role": "user", "content": "First question?"}], max_tokens=4)
    before = server.metrics()["dsinfer_prefix_cache_hit_tokens_total"]
    b = chat(client, messages=[long_system, {"role": "user", "content": "Second question?"}], max_tokens=4)
    assert b.usage.prompt_tokens_details.cached_tokens >= 100
    assert server.metrics()["dsinfer_prefix_cache_hit_tokens_total"] - before == b.usage.prompt_tokens_details.cached_tokens
    # A hit gives the same greedy output as a miss.
    server_reset = post(server, "/reset_prefix_cache", {})
    assert server_reset[0] == 200
    c = chat(client, messages=[long_system, {"role": "user", "content": "Second question?"}], max_tokens=4)
    assert c.usage.prompt_tokens_details.cached_tokens == 0 and c.choices[0].message.content == b.choices[0].message.content
    assert a.usage.prompt_tokens_details.cached_tokens == 0 or a.usage.prompt_tokens_details.cached_tokens > 0


def test_response_format_rendered_in_prompt(server, client):
    rf = {"type": "json_schema", "json_schema": {"name": "w", "schema": {"type": "object"}}}
    r = chat(client, response_format=rf, max_tokens=1)
    _, _, t = post(server, "/tokenize", {"messages": HELLO, "response_format": rf})
    _, _, plain = post(server, "/tokenize", {"messages": HELLO})
    assert r.usage.prompt_tokens == t["count"] > plain["count"]
    assert chat(client, response_format={"type": "text"}, max_tokens=1).usage.prompt_tokens == plain["count"]


def test_completions_endpoint(client):
    r = client.completions.create(model=MODEL, prompt="The capital of France is", max_tokens=6, temperature=0,
                                  logprobs=2, echo=True)
    c = r.choices[0]
    assert r.object == "text_completion" and c.text.startswith("The capital of France is")
    assert len(c.logprobs.tokens) == r.usage.completion_tokens and all(len(t) == 2 for t in c.logprobs.top_logprobs)
    chunks = list(client.completions.create(model=MODEL, prompt="The capital of France is", max_tokens=6,
                                            temperature=0, stream=True))
    assert "The capital of France is" + "".join(ch.choices[0].text for ch in chunks) == c.text


def test_models_health_metrics(server, client):
    chat(client, max_tokens=1)
    assert [m.id for m in client.models.list().data] == [MODEL]
    with urllib.request.urlopen(server.base + "/health") as h:
        assert json.loads(h.read()) == {"status": "ready"}
    m = server.metrics()
    for name in ("dsinfer_queue_depth", "dsinfer_running_sessions", "dsinfer_kv_blocks_used",
                 "dsinfer_prefix_cache_hit_tokens_total", "dsinfer_generation_tokens_total",
                 "dsinfer_time_to_first_token_seconds_count", "dsinfer_inter_token_latency_seconds_count",
                 "dsinfer_batch_sessions_count", "dsinfer_backend_scratch_bytes",
                 "dsinfer_backend_cached_activation_bytes"):
        assert name in m
    assert m['dsinfer_requests_total{endpoint="/v1/chat/completions",status="200"}'] > 0
    # Idle again, the scheduler gives the backend's scratch back (release_memory) and the gauge shows it.
    deadline = time.time() + 10
    while server.metrics()["dsinfer_backend_scratch_bytes"] != 0:
        assert time.time() < deadline, server.metrics()
        time.sleep(0.05)


def test_python_client_matches_server(server, client):
    import dsinfer
    from conftest import model_path
    local = dsinfer.Client.load(model_path(), model_id=MODEL, context=1024)
    kw = dict(model=MODEL, messages=HELLO, max_tokens=10, temperature=0, logprobs=True, top_logprobs=2)
    mine, theirs = local.chat.completions.create(**kw), chat(client, **kw).model_dump(exclude_unset=True)
    for r in (mine, theirs):
        r.pop("id"), r.pop("created")
    assert mine["choices"] == theirs["choices"] and mine["usage"]["completion_tokens"] == theirs["usage"]["completion_tokens"]
    chunks = list(local.chat.completions.create(stream=True, **kw))
    served = [c.model_dump(exclude_unset=True) for c in chat(client, stream=True, **kw)]
    strip = [{k: v for k, v in c.items() if k not in ("id", "created")} for c in chunks]
    assert strip == [{k: v for k, v in c.items() if k not in ("id", "created")} for c in served]
    with pytest.raises(dsinfer.APIError) as e:
        local.chat.completions.create(model=MODEL, messages=HELLO, temperature=7)
    assert e.value.status_code == 400 and e.value.param == "temperature"


# --- errors --------------------------------------------------------------------------------------------------

def test_bad_field_is_400_naming_it(client):
    with pytest.raises(openai.BadRequestError) as e:
        chat(client, temperature=5)
    assert e.value.body["param"] == "temperature" and e.value.body["type"] == "invalid_request_error"
    with pytest.raises(openai.BadRequestError) as e:
        chat(client, extra_body={"functions": [{"name": "f"}]})
    assert e.value.body["param"] == "functions"
    with pytest.raises(openai.BadRequestError) as e:
        chat(client, messages=[{"role": "wizard", "content": "x"}])
    assert e.value.body["param"] == "messages" and "wizard" in e.value.body["message"]
    with pytest.raises(openai.NotFoundError):
        chat(client, model="some-other-model")


def test_malformed_json_is_400(server):
    status, _, body = post(server, "/v1/chat/completions", None, raw=b'{"messages": [')
    assert status == 400 and "not valid JSON" in body["error"]["message"] and body["error"]["param"] is None


def test_wrong_api_key_is_401(server):
    with pytest.raises(openai.AuthenticationError) as e:
        chat(server.client(api_key="wrong"))
    assert e.value.body["code"] == "invalid_api_key"


def test_oversized_body_is_413(server):
    status, _, body = post(server, "/v1/chat/completions", {"messages": [{"role": "user", "content": "x" * 300000}]})
    assert status == 413 and "larger than" in body["error"]["message"]


def test_prompt_too_long_is_400_with_counts(client):
    with pytest.raises(openai.BadRequestError) as e:
        chat(client, messages=[{"role": "user", "content": "hello " * 3000}])
    assert e.value.body["code"] == "context_length_exceeded" and "2048" in e.value.body["message"]
    with pytest.raises(openai.BadRequestError) as e:
        chat(client, max_tokens=5000)
    assert e.value.body["param"] == "max_tokens" and "5000" in e.value.body["message"]


def test_full_queue_is_429_with_retry_after():
    s = Server("--max-sessions", "1", "--max-queue", "1", "--ctx", "1024")
    try:
        client = s.client()
        results = []

        def one():
            try:
                results.append(chat(client, max_tokens=300, extra_body={"ignore_eos": True}).usage.completion_tokens)
            except openai.RateLimitError as e:
                results.append(e)
        # One request running, then one waiting, then two more: those find the queue full. Each step waits for the
        # server to show the previous one (started all at once, a loaded machine may not have moved the first
        # request out of the queue before the others arrive, and then three are refused).
        threads = [threading.Thread(target=one) for _ in range(4)]
        threads[0].start()
        deadline = time.time() + 30
        while s.metrics()["dsinfer_running_sessions"] < 1:
            assert time.time() < deadline
            time.sleep(0.01)
        threads[1].start()
        while s.metrics()["dsinfer_queue_depth"] < 1:
            assert time.time() < deadline
            time.sleep(0.01)
        threads[2].start()
        threads[3].start()
        for t in threads:
            t.join()
        refused = [r for r in results if isinstance(r, Exception)]
        assert len(refused) == 2 and results.count(300) == 2
        assert int(refused[0].response.headers["retry-after"]) >= 1
        assert refused[0].body["code"] == "rate_limit_exceeded"
    finally:
        assert s.stop() == 0


def test_disconnect_cancels_and_frees_kv(server):
    client = server.client()
    idle = server.metrics()
    stream = chat(client, max_tokens=1000, stream=True, extra_body={"ignore_eos": True})
    got = 0
    for _ in stream:
        got += 1
        if got == 3:
            break
    stream.close()
    deadline = time.time() + 10
    while True:
        m = server.metrics()
        if m["dsinfer_running_sessions"] == 0 and m["dsinfer_requests_cancelled_total"] > idle["dsinfer_requests_cancelled_total"]:
            break
        assert time.time() < deadline, m
        time.sleep(0.05)
    assert m["dsinfer_generation_tokens_total"] - idle["dsinfer_generation_tokens_total"] < 200
    post(server, "/reset_prefix_cache", {})
    assert server.metrics()["dsinfer_kv_blocks_used"] == 0


def test_sigterm_drains_running_requests():
    s = Server("--max-sessions", "2", "--ctx", "1024", "--drain-seconds", "60")
    client = s.client()
    result = {}
    t = threading.Thread(target=lambda: result.setdefault("r", chat(client, max_tokens=200, extra_body={"ignore_eos": True})))
    t.start()
    while s.metrics()["dsinfer_running_sessions"] == 0:
        time.sleep(0.01)
    s.proc.send_signal(signal.SIGTERM)
    t.join(60)
    assert result["r"].usage.completion_tokens == 200 and result["r"].choices[0].finish_reason == "length"
    assert s.proc.wait(timeout=30) == 0
    assert any("draining" in line for line in s.log)


def test_disconnect_of_a_non_streaming_request_cancels_it(server):
    import socket
    before = server.metrics()
    body = json.dumps({"model": MODEL, "messages": HELLO, "max_tokens": 900, "temperature": 0, "ignore_eos": True}).encode()
    s = socket.create_connection(("127.0.0.1", server.port))
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nAuthorization: Bearer "
              + server.api_key.encode() + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    while server.metrics()["dsinfer_running_sessions"] == 0:
        time.sleep(0.01)
    s.close()
    deadline = time.time() + 10
    while server.metrics()["dsinfer_requests_cancelled_total"] == before["dsinfer_requests_cancelled_total"]:
        assert time.time() < deadline
        time.sleep(0.02)
    m = server.metrics()
    assert m["dsinfer_running_sessions"] == 0
    assert m["dsinfer_generation_tokens_total"] - before["dsinfer_generation_tokens_total"] < 900


def test_hang_up_while_queued_leaves_the_queue():
    import socket
    s = Server("--max-sessions", "1", "--max-queue", "4", "--ctx", "1024")
    try:
        client = s.client()
        first = []
        t = threading.Thread(target=lambda: first.append(
            chat(client, max_tokens=900, extra_body={"ignore_eos": True})))
        t.start()
        while s.metrics()["dsinfer_running_sessions"] == 0:
            time.sleep(0.01)
        socks = []
        for stream in (False, True):
            body = json.dumps({"model": MODEL, "messages": HELLO, "max_tokens": 5, "stream": stream}).encode()
            c = socket.create_connection(("127.0.0.1", s.port))
            c.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + s.api_key.encode()
                      + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
            socks.append(c)
        while s.metrics()["dsinfer_queue_depth"] < 2:
            time.sleep(0.01)
        for c in socks:
            c.close()
        deadline = time.time() + 10
        while s.metrics()["dsinfer_requests_cancelled_total"] < 2 or s.metrics()["dsinfer_queue_depth"] > 0:
            assert time.time() < deadline, s.metrics()
            time.sleep(0.02)
        t.join()
        # the first request ran to its end: the hang-ups of the queued ones did not touch it
        assert first[0].choices[0].finish_reason == "length" and first[0].usage.completion_tokens == 900
        assert s.metrics()["dsinfer_requests_cancelled_total"] == 2
        assert chat(client, max_tokens=3).usage.completion_tokens == 3
    finally:
        assert s.stop() == 0


def test_bad_model_dir_exits_with_a_message(tmp_path):
    import subprocess
    from conftest import cli_path
    r = subprocess.run([cli_path(), "serve", "--model", str(tmp_path / "nope"), "--port", "0"], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 1 and "loading" in r.stderr and "failed" in r.stderr
    r = subprocess.run([cli_path(), "serve", "--model", str(tmp_path), "--port", "99999"], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2 and "--port expects an integer" in r.stderr


def test_cpu_kernels_flag():
    # The scalar kernels give bitwise the results of the default family, so a greedy reply is the same.
    import subprocess
    from conftest import cli_path, model_path
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 6, "temperature": 0}
    replies = []
    for family in ("auto", "scalar"):
        s = Server("--cpu-kernels", family)
        try:
            status, _, reply = post(s, "/v1/chat/completions", body)
            assert status == 200, reply
            replies.append(reply["choices"][0]["message"]["content"])
        finally:
            s.stop()
    assert replies[0] == replies[1]
    r = subprocess.run([cli_path(), "serve", "--model", model_path(), "--port", "0", "--cpu-kernels", "sse9"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "sse9" in r.stderr
