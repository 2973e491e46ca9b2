"""Structured output through `dsinfer serve`, driven by the official `openai` client: response_format (json_object,
json_schema with strict) and tool_choice (required, a named function) are enforced, checked with the `jsonschema`
package, on the small random-weight model at temperature 1 — the worst case: nothing in its weights knows JSON or
DSML, so every reply that validates does so because of the constraint. Thinking on, n > 1, streaming,
parallel_tool_calls, and bad schemas as 400s naming the field before anything is generated. dsinfer.Client runs the
same requests without HTTP (the same request layer, lib/openai)."""
import json

import jsonschema
import openai
import pytest

MODEL = "dsinfer-test"
ASK = [{"role": "system", "content": "Reply in JSON."}, {"role": "user", "content": "Describe someone."}]
THINKING = {"chat_template_kwargs": {"thinking": True}, "max_reasoning_tokens": 24}

RECORD = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 12},
        "year": {"type": "integer", "minimum": 1900, "maximum": 2030},
        "tags": {"type": "array", "items": {"enum": ["red", "green", "blue"]}, "maxItems": 3},
        "address": {"type": "object",
                    "properties": {"city": {"type": "string", "maxLength": 10},
                                   "zip": {"type": "string", "pattern": "^[0-9]{5}$"}},
                    "required": ["city", "zip"], "additionalProperties": False},
        "active": {"type": "boolean"},
        "kind": {"anyOf": [{"const": "person"}, {"type": "null"}]},
    },
    "required": ["name", "year", "tags", "address", "active", "kind"],
    "additionalProperties": False,
}
STRICT = {"type": "json_schema", "json_schema": {"name": "record", "strict": True, "schema": RECORD}}

TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "Weather forecast", "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 20}, "unit": {"enum": ["celsius", "fahrenheit"]},
                       "days": {"type": "integer", "minimum": 1, "maximum": 14}},
        "required": ["city", "days"]}}},
    {"type": "function", "function": {"name": "search", "parameters": {
        "type": "object",
        "properties": {"query": {"type": "string", "minLength": 1, "maxLength": 30},
                       "filters": {"type": "object",
                                   "properties": {"lang": {"enum": ["en", "zh", "fr"]},
                                                  "max_results": {"type": "integer", "minimum": 1, "maximum": 50}},
                                   "required": ["lang"], "additionalProperties": False}},
        "required": ["query", "filters"]}}},
    {"type": "function", "function": {"name": "noop", "parameters": {"type": "object", "properties": {}}}},
]
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
WEATHER = [{"role": "user", "content": "What is the weather in Paris for 3 days?"}]


def create(client, **kw):
    kw.setdefault("model", MODEL)
    kw.setdefault("messages", ASK)
    kw.setdefault("temperature", 1.0)
    kw.setdefault("top_p", 1.0)
    kw.setdefault("max_tokens", 600)
    return client.chat.completions.create(**kw)


def collect(chunks):
    """A streamed reply per choice: content, reasoning, tool calls (from their fragments) and finish_reason."""
    out = {}
    for ch in chunks:
        for c in ch.choices:
            o = out.setdefault(c.index, {"content": "", "reasoning": "", "calls": {}, "finish": None})
            o["content"] += c.delta.content or ""
            o["reasoning"] += (c.delta.model_extra or {}).get("reasoning_content") or ""
            for tc in c.delta.tool_calls or []:
                call = o["calls"].setdefault(tc.index, {"id": None, "name": None, "arguments": ""})
                if tc.id:
                    assert call["id"] is None, "a call's id comes once, in its first fragment"
                    call["id"], call["name"] = tc.id, tc.function.name
                call["arguments"] += tc.function.arguments or ""
            if c.finish_reason:
                o["finish"] = c.finish_reason
    return [out[i] for i in sorted(out)]


def check_calls(calls, names=None):
    """Every call names a declared tool (or the named one) and its arguments validate against its schema."""
    assert calls
    for call in calls:
        assert call["id"].startswith("call_")
        assert call["name"] in (names or SCHEMAS), call["name"]
        jsonschema.validate(json.loads(call["arguments"]), SCHEMAS[call["name"]])


def calls_of(message):
    return [{"id": c.id, "name": c.function.name, "arguments": c.function.arguments} for c in message.tool_calls]


def test_strict_json_schema_replies_validate(client):
    r = create(client, response_format=STRICT, n=6, seed=1)
    assert len(r.choices) == 6
    for c in r.choices:
        assert c.finish_reason == "stop", c
        jsonschema.validate(json.loads(c.message.content), RECORD)
    assert len({c.message.content for c in r.choices}) > 1  # sampled, not one fixed answer
    streamed = collect(create(client, response_format=STRICT, n=3, seed=7, stream=True))
    assert len(streamed) == 3
    for c in streamed:
        assert c["finish"] == "stop" and not c["calls"]
        jsonschema.validate(json.loads(c["content"]), RECORD)
    # Without "strict": true the schema is only shown to the model (OpenAI's rule): the random model's reply is free.
    loose = dict(STRICT, json_schema={k: v for k, v in STRICT["json_schema"].items() if k != "strict"})
    free = create(client, response_format=loose, seed=1, max_tokens=12)
    assert free.choices[0].finish_reason == "length"


def test_json_object_replies_parse(client):
    r = create(client, response_format={"type": "json_object"}, n=4, seed=3)
    finished = [c for c in r.choices if c.finish_reason == "stop"]
    for c in finished:
        assert isinstance(json.loads(c.message.content), dict)
    # The others were cut by max_tokens (a random model can nest and extend an unbounded object for long).
    assert all(c.finish_reason == "length" for c in r.choices if c not in finished)
    assert finished


@pytest.mark.parametrize("stream", [False, True])
def test_tool_choice_required_always_gives_calls_that_validate(client, stream):
    kw = dict(messages=WEATHER, tools=TOOLS, tool_choice="required", parallel_tool_calls=False, n=8,
              seed=100 + stream)
    if stream:
        replies = collect(create(client, stream=True, **kw))
    else:
        r = create(client, **kw)
        replies = [{"content": c.message.content, "calls": dict(enumerate(calls_of(c.message))),
                    "finish": c.finish_reason} for c in r.choices]
    assert len(replies) == 8
    for c in replies:
        assert c["finish"] == "tool_calls", c
        assert not c["content"] and len(c["calls"]) == 1  # parallel_tool_calls false: exactly one call
        check_calls(list(c["calls"].values()))


def test_parallel_tool_calls(client):
    # With parallel calls allowed the block holds one or more (the random model chains a mean of about 4), so a
    # choice may be cut by max_tokens: its complete calls still validate (the reply carries only complete ones).
    r = create(client, messages=WEATHER, tools=TOOLS, tool_choice="required", n=4, seed=200, max_tokens=700)
    for c in r.choices:
        assert c.finish_reason in ("tool_calls", "length"), c
        if c.finish_reason == "tool_calls" or c.message.tool_calls:
            check_calls(calls_of(c.message))
    assert max(len(c.message.tool_calls or []) for c in r.choices) > 1


def test_tool_choice_named_function(client):
    named = {"type": "function", "function": {"name": "search"}}
    r = create(client, messages=WEATHER, tools=TOOLS, tool_choice=named, parallel_tool_calls=False, n=4, seed=5)
    for c in r.choices:
        assert c.finish_reason == "tool_calls", c
        assert len(c.message.tool_calls) == 1
        check_calls(calls_of(c.message), names={"search"})


def test_thinking_reasoning_is_free_answer_follows(client):
    r = create(client, response_format=STRICT, n=3, seed=9, extra_body=THINKING)
    for c in r.choices:
        assert c.finish_reason == "stop", c
        assert c.message.model_extra["reasoning_content"]  # the reasoning came first, unconstrained
        jsonschema.validate(json.loads(c.message.content), RECORD)
    named = {"type": "function", "function": {"name": "get_weather"}}
    streamed = collect(create(client, messages=WEATHER, tools=TOOLS, tool_choice=named, parallel_tool_calls=False,
                              n=3, seed=11, stream=True, extra_body=THINKING))
    for c in streamed:
        assert c["finish"] == "tool_calls" and c["reasoning"] and not c["content"], c
        check_calls(list(c["calls"].values()), names={"get_weather"})


def test_bad_schema_is_400_naming_the_field_before_generation(server, client):
    before = server.metrics()["dsinfer_generation_tokens_total"]
    unsupported = dict(STRICT, json_schema={"name": "x", "strict": True,
                                            "schema": {"type": "array", "items": {"type": "string"}, "uniqueItems": True}})
    for stream in (False, True):
        with pytest.raises(openai.BadRequestError) as e:
            create(client, response_format=unsupported, stream=stream)
        err = e.value.body
        assert err["param"] == "response_format" and err["type"] == "invalid_request_error"
        assert "uniqueItems" in err["message"]
    impossible = dict(STRICT, json_schema={"name": "x", "strict": True,
                                           "schema": {"type": "array", "minItems": 3, "maxItems": 1}})
    with pytest.raises(openai.BadRequestError) as e:
        create(client, response_format=impossible)
    assert e.value.body["param"] == "response_format" and "maxItems" in e.value.body["message"]
    bad_tools = [{"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "properties": {"x": {"not": {"type": "string"}}}, "required": ["x"]}}}]
    with pytest.raises(openai.BadRequestError) as e:
        create(client, tools=bad_tools, tool_choice="required")
    assert e.value.body["param"] == "tools" and '"not"' in e.value.body["message"]
    assert server.metrics()["dsinfer_generation_tokens_total"] == before  # refused before any token


def test_python_client_enforces_the_same(server, client):
    import dsinfer
    from conftest import model_path
    local = dsinfer.Client.load(model_path(), model_id=MODEL, context=2048)
    kw = dict(messages=WEATHER, tools=TOOLS, tool_choice="required", parallel_tool_calls=False, n=2, seed=42)
    mine = local.chat.completions.create(model=MODEL, temperature=1.0, top_p=1.0, max_tokens=600, **kw)
    theirs = create(client, **kw)
    for a, b in zip(mine["choices"], theirs.choices):
        assert a["finish_reason"] == b.finish_reason == "tool_calls"
        call = a["message"]["tool_calls"][0]["function"]
        assert (call["name"], call["arguments"]) == (b.message.tool_calls[0].function.name,
                                                     b.message.tool_calls[0].function.arguments)
        jsonschema.validate(json.loads(call["arguments"]), SCHEMAS[call["name"]])
    record = local.chat.completions.create(model=MODEL, messages=ASK, response_format=STRICT, seed=2, max_tokens=600)
    jsonschema.validate(json.loads(record["choices"][0]["message"]["content"]), RECORD)
    with pytest.raises(dsinfer.APIError) as e:
        local.chat.completions.create(model=MODEL, messages=ASK, response_format={"type": "json_schema", "json_schema": {
            "name": "x", "strict": True, "schema": {"not": {"type": "null"}}}})
    assert e.value.status_code == 400 and e.value.param == "response_format"
