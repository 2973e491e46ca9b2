"""Constrained decoding, checked against the jsonschema package (which nobody here wrote).

- Property test: >= 200 JSON schemas (hand-written and randomly generated from a fixed seed), each sampled at
  temperature 1.0 from random logits through the constraint's own matcher; every step must allow some token (and
  end-of-sentence exactly when the output is complete), and every finished output must parse and validate.
- Tool calls: 1,000 seeded samplings with tool_choice "required" from the small random-weight model (the worst case:
  nothing in its weights knows the format) must all parse with the project's DSML parser, name declared tools and
  validate against their parameter schemas; again with thinking on (the reasoning free, the calls after </think>).
- Bad constraints are clear errors before generation, through Python (C++ and C have their own tests).

Needs the package installed, DSINFER_TEST_MODEL, and DSINFER_SAMPLE_CONSTRAINED (the sample_constrained program)
and DSINFER_EXAMPLES (the build's examples folder) for the model-driven parts."""
import copy
import json
import os
import random
import subprocess
import sys
import tempfile

import jsonschema
import numpy as np
import pytest

import dsinfer

sys.set_int_max_str_digits(0)  # random logits can write integers thousands of digits long: valid JSON all the same

MODEL = os.environ.get("DSINFER_TEST_MODEL", "build/models/v32-tiny")
# The seeded samplings (run_sampler) come from v32-micro next to it when it is there: the constraint is what they
# test, the model only supplies random logits (the same tokenizer), and v32-micro gives them faster than v32-tiny
# (the 1,000 samplings below: 11 s against 82 s in a clean CI run on 2 cores).
_MICRO = os.path.join(os.path.dirname(MODEL), "v32-micro")
SAMPLING_MODEL = _MICRO if os.path.exists(os.path.join(_MICRO, "config.json")) else MODEL
SAMPLER = os.environ.get("DSINFER_SAMPLE_CONSTRAINED", "build/tests/lib/constraint/sample_constrained")
EXAMPLES = os.environ.get("DSINFER_EXAMPLES", "build/examples")
HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
EOS_TEXT = "<｜end▁of▁sentence｜>"


@pytest.fixture(scope="module")
def tok():
    return dsinfer.Tokenizer.load(MODEL)


# ------------------------------------------------------------------------------------------------- schemas --

HAND_WRITTEN = [
    {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
     "required": ["name", "age"], "additionalProperties": False},
    {"type": "array", "items": {"type": "integer", "minimum": -5, "maximum": 5}, "minItems": 2, "maxItems": 4},
    {"type": "string", "minLength": 3, "maxLength": 6},
    {"type": "number", "minimum": 0.5, "maximum": 2.5},
    {"type": "integer", "minimum": 100, "maximum": 250},
    {"type": "boolean"},
    {"type": "null"},
    {"enum": ["red", "green", "blue", 3, None, True]},
    {"const": {"a": [1, 2, {"b": "c"}]}},
    {"anyOf": [{"type": "string", "maxLength": 4}, {"type": "integer", "minimum": 0, "maximum": 9}]},
    {"oneOf": [{"type": "object", "properties": {"kind": {"const": "a"}, "x": {"type": "integer"}},
                "required": ["kind", "x"], "additionalProperties": False},
               {"type": "object", "properties": {"kind": {"const": "b"}, "y": {"type": "boolean"}},
                "required": ["kind", "y"], "additionalProperties": False}]},
    {"$defs": {"node": {"type": "object", "properties": {"v": {"type": "integer"},
                                                          "next": {"anyOf": [{"$ref": "#/$defs/node"}, {"type": "null"}]}},
                        "required": ["v", "next"], "additionalProperties": False}},
     "$ref": "#/$defs/node"},
    {"type": "object", "properties": {"tags": {"type": "array", "items": {"type": "string", "maxLength": 5},
                                               "maxItems": 3}},
     "required": ["tags"]},
    {"type": "object"},
    {"type": "array"},
    {},
    {"type": "object", "properties": {"a": {"type": "object", "properties": {"b": {"type": "object", "properties": {
        "c": {"type": "array", "items": {"type": "number"}, "maxItems": 2}}, "required": ["c"],
        "additionalProperties": False}}, "required": ["b"], "additionalProperties": False}},
     "required": ["a"], "additionalProperties": False},
    {"type": ["string", "null"], "maxLength": 3},
    {"type": "string", "pattern": "^[a-z]{2,4}-[0-9]{2}$"},
    {"type": "string", "enum": ["é", "中文", "emoji 😀"]},
    {"type": "object", "properties": {"id": {"type": "integer", "minimum": 1}, "price": {"type": "number", "minimum": 0},
                                      "in_stock": {"type": "boolean"}, "name": {"type": "string", "minLength": 1}},
     "required": ["id", "price", "in_stock", "name"], "additionalProperties": False},
    {"type": "object", "properties": {"x": {"type": "integer"}}, "additionalProperties": {"type": "boolean"}},
    {"type": "array", "items": {"anyOf": [{"type": "null"}, {"type": "boolean"}]}, "minItems": 1, "maxItems": 5},
    {"definitions": {"p": {"type": "integer", "exclusiveMinimum": 0, "exclusiveMaximum": 10}},
     "type": "array", "items": {"$ref": "#/definitions/p"}, "maxItems": 3},
    {"type": "object", "properties": {"s": {"type": "string", "maxLength": 0}}, "required": ["s"]},
    {"type": "array", "minItems": 2, "maxItems": 3},  # no "items": any items (JSON Schema's default)
    {"type": "object", "properties": {"list": {"type": "array", "prefixItems": [{"type": "boolean"}], "maxItems": 3}}},
]


def random_schema(rng, depth=0):
    """A random schema from the supported subset; shallow enough to finish under random logits."""
    kinds = ["string", "integer", "number", "boolean", "null", "enum", "const"]
    if depth < 3:
        kinds += ["object", "object", "array", "anyOf"]
    kind = rng.choice(kinds)
    if kind == "string":
        s = {"type": "string"}
        if rng.random() < 0.7:
            s["maxLength"] = rng.randint(0, 12)
            if rng.random() < 0.5:
                s["minLength"] = rng.randint(0, s["maxLength"])
        return s
    if kind == "integer":
        s = {"type": "integer"}
        if rng.random() < 0.6:
            lo = rng.randint(-1000, 1000)
            s["minimum"] = lo
            if rng.random() < 0.7:
                s["maximum"] = lo + rng.randint(0, 2000)
        return s
    if kind == "number":
        s = {"type": "number"}
        if rng.random() < 0.5:
            lo = round(rng.uniform(-100, 100), 2)
            s["minimum"] = lo
            s["maximum"] = lo + round(rng.uniform(0, 50), 2)
        return s
    if kind == "boolean":
        return {"type": "boolean"}
    if kind == "null":
        return {"type": "null"}
    if kind == "enum":
        pool = ["a", "bb", "ccc", 1, 2.5, True, None, "x y", "ü"]
        return {"enum": rng.sample(pool, rng.randint(1, 4))}
    if kind == "const":
        return {"const": rng.choice(["k", 7, False, None, [1, "z"], {"q": 1}])}
    if kind == "array":
        s = {"type": "array", "items": random_schema(rng, depth + 1)}
        lo = rng.randint(0, 2)
        s["minItems"] = lo
        s["maxItems"] = lo + rng.randint(0, 3)
        return s
    if kind == "anyOf":
        return {"anyOf": [random_schema(rng, depth + 1) for _ in range(rng.randint(2, 3))]}
    props = {}
    for i in range(rng.randint(0, 4)):
        props[f"p{i}_{rng.choice(['id', 'name', 'v', 'ü'])}"] = random_schema(rng, depth + 1)
    s = {"type": "object", "properties": props}
    names = list(props)
    s["required"] = [n for n in names if rng.random() < 0.7]
    if rng.random() < 0.7:
        s["additionalProperties"] = False
    return s


def all_schemas():
    rng = random.Random(1234)
    return HAND_WRITTEN + [random_schema(rng) for _ in range(200 - len(HAND_WRITTEN) + 20)]


def sample(tok, constraint, seed, max_tokens=2500):
    """Samples at temperature 1 from random logits under the constraint's matcher. Returns (ids, ended, steps)."""
    m = constraint.sampler()
    rng = np.random.default_rng(seed)
    eos = tok.eos_id
    ids = []
    for _ in range(max_tokens):
        allowed = m.allowed_tokens()
        # The constraint never masks every token while the output can go on; eos only once it is complete.
        assert len(allowed) > 0, f"every token masked after {tok.decode(ids)!r}"
        assert (eos in allowed) == m.complete, f"eos allowed={eos in allowed} complete={m.complete}"
        logits = rng.normal(0.0, 2.0, size=len(allowed))
        p = np.exp(logits - logits.max())
        t = int(allowed[rng.choice(len(allowed), p=p / p.sum())])
        m.accept(t)
        if t == eos:
            assert m.terminated
            return ids, True
        ids.append(t)
    return ids, False


def test_property_json_schemas_validate(tok):
    schemas = all_schemas()
    assert len(schemas) >= 200
    finished = 0
    for i, schema in enumerate(schemas):
        jsonschema.Draft202012Validator.check_schema(schema)
        c = dsinfer.Constraint.json_schema(tok, schema)
        for seed in range(2):
            ids, ended = sample(tok, c, seed=i * 10 + seed)
            if not ended:
                continue  # ran out of tokens: random logits can keep a string or array going
            finished += 1
            text = tok.decode(ids)
            assert "\ufffd" not in text, f"schema {i}: not valid UTF-8: {text!r}"
            try:
                value = json.loads(text)
            except json.JSONDecodeError as e:
                pytest.fail(f"schema {i} {json.dumps(schema)}: output does not parse: {e}: {text!r}")
            try:
                jsonschema.validate(value, schema)
            except jsonschema.ValidationError as e:
                pytest.fail(f"schema {i} {json.dumps(schema)}: output {text!r} does not validate: {e.message}")
    # Nearly every run finishes within the budget; the few that do not only ran long.
    assert finished >= 0.95 * 2 * len(schemas), finished


def test_json_object_and_regex(tok):
    c = dsinfer.Constraint(tok, {"response_format": {"type": "json_object"}})
    assert c.kind == "json_object"
    for seed in range(20):
        ids, ended = sample(tok, c, seed)
        if ended:
            assert isinstance(json.loads(tok.decode(ids)), dict)
    import re
    pattern = r"[A-Z][a-z]{1,5} (19|20)[0-9]{2}(, [a-z]+)?"
    r = dsinfer.Constraint.regex(tok, pattern)
    for seed in range(30):
        ids, ended = sample(tok, r, seed)
        assert ended
        assert re.fullmatch(pattern, tok.decode(ids)), tok.decode(ids)


def test_thinking_reasoning_is_free_answer_validates(tok):
    schema = {"type": "object", "properties": {"answer": {"type": "integer", "minimum": 0, "maximum": 99}},
              "required": ["answer"], "additionalProperties": False}
    c = dsinfer.Constraint.json_schema(tok, schema, thinking=True, max_reasoning_tokens=50)
    think_end = tok.encode("</think>")[0]
    for seed in range(30):
        ids, ended = sample(tok, c, seed)
        assert ended
        text = tok.decode(ids)
        msg = dsinfer.parse_completion(text + EOS_TEXT, thinking=True)
        jsonschema.validate(json.loads(msg["content"]), schema)
        assert ids.index(think_end) <= 50
    # Free: the reasoning allows every ordinary token (only special tokens other than </think> are out).
    m = c.sampler()
    assert m.in_reasoning
    allowed = set(m.allowed_tokens().tolist())
    assert think_end in allowed and tok.eos_id not in allowed
    assert len(allowed) >= len(tok) - 30


def test_bad_constraints_fail_before_generation(tok):
    with pytest.raises(dsinfer.UnsupportedError, match="not"):
        dsinfer.Constraint.json_schema(tok, {"not": {"type": "string"}})
    with pytest.raises(dsinfer.InvalidArgumentError, match="maxItems"):
        dsinfer.Constraint.json_schema(tok, {"type": "array", "minItems": 3, "maxItems": 1})
    with pytest.raises(dsinfer.InvalidArgumentError, match="regex"):
        dsinfer.Constraint.regex(tok, "(unclosed")
    with pytest.raises(dsinfer.InvalidArgumentError, match="no text matches"):
        dsinfer.Constraint.regex(tok, "[^\\s\\S]")
    with pytest.raises(dsinfer.InvalidArgumentError, match="not among the tools"):
        dsinfer.Constraint(tok, {"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}})
    with pytest.raises(dsinfer.InvalidArgumentError, match="deeper than 64"):
        dsinfer.Constraint.json_schema(tok, "[" * 100 + "]" * 100)
    # Through a session too: the error comes before any token is generated.
    model = dsinfer.Model.load(MODEL, n_threads=2)
    s = dsinfer.Session(model, tok, capacity=1024)
    with pytest.raises(dsinfer.UnsupportedError):
        s.chat([{"role": "user", "content": "hi"}],
               response_format={"type": "json_schema", "json_schema": {"name": "x", "strict": True,
                                                                        "schema": {"type": "array", "uniqueItems": True}}})
    assert s.generated == []


# ---------------------------------------------------------------------------------------------- tool calls --

TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "Weather forecast", "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 20}, "unit": {"enum": ["celsius", "fahrenheit"]},
                       "days": {"type": "integer", "minimum": 1, "maximum": 14}},
        "required": ["city", "days"]}}},
    {"type": "function", "function": {"name": "search", "parameters": {
        "type": "object",
        "properties": {"query": {"type": "string", "minLength": 1, "maxLength": 30},
                       "filters": {"type": "object", "properties": {
                           "lang": {"enum": ["en", "zh", "fr"]},
                           "max_results": {"type": "integer", "minimum": 1, "maximum": 50}},
                           "required": ["lang"], "additionalProperties": False},
                       "tags": {"type": "array", "items": {"type": "string", "maxLength": 8}, "maxItems": 3}},
        "required": ["query", "filters"]}}},
    {"type": "function", "function": {"name": "set_alarm", "parameters": {
        "type": "object",
        "properties": {"time": {"type": "string", "pattern": "^[0-2][0-9]:[0-5][0-9]$"},
                       "repeat": {"type": "boolean"},
                       "note": {"anyOf": [{"type": "string", "maxLength": 10}, {"type": "null"}]}},
        "required": ["time", "repeat"]}}},
    {"type": "function", "function": {"name": "noop", "parameters": {"type": "object", "properties": {}}}},
]
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}


def run_sampler(request, n, thinking=False, seed0=0, max_tokens=3000, processes=1):
    """n seeded samplings (seeds seed0 ..) as parsed JSON lines. processes > 1 splits the seeds between that many
    sample_constrained processes of one thread each, run at once (the lines are the same as from one process:
    every sampling has its own seed and its own fork of the prompt)."""
    if not os.path.exists(SAMPLER):
        pytest.skip(f"{SAMPLER} not built")
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(request, f, ensure_ascii=False)
    outs = []
    try:
        per = -(-n // processes)
        jobs = []
        for start in range(0, n, per):
            args = [SAMPLER, SAMPLING_MODEL, f.name, str(min(per, n - start)), "--seed0", str(seed0 + start),
                    "--max-tokens", str(max_tokens), "--threads", "1" if processes > 1 else "2"] + \
                (["--thinking"] if thinking else [])
            # Into files, not pipes: a process whose pipe is full while the test reads another's would wait.
            out = tempfile.TemporaryFile("w+", encoding="utf-8")
            outs.append(out)
            jobs.append(subprocess.Popen(args, stdout=out, stderr=subprocess.PIPE, text=True))
        for job in jobs:
            _, err = job.communicate()
            assert job.returncode == 0, err
        lines = []
        for out in outs:
            out.seek(0)
            # split on "\n" only: str.splitlines() also splits at U+2028, U+0085, ... which JSON strings may hold raw
            lines += [json.loads(line) for line in out.read().split("\n") if line]
        return lines
    finally:
        os.unlink(f.name)
        for out in outs:
            out.close()


def check_tool_calls(lines, thinking, names=None):
    assert all(line["finish"] == "eos" for line in lines), [line for line in lines if line["finish"] != "eos"][:1]
    for line in lines:
        # The answer is valid UTF-8 (the reasoning is free: from random weights it can hold broken bytes).
        assert "\ufffd" not in line["text"].split("</think>")[-1], line["text"]
        msg = dsinfer.parse_completion(line["text"] + EOS_TEXT, thinking=thinking)
        assert msg["tool_calls"], line["text"]
        for call in msg["tool_calls"]:
            name = call["function"]["name"]
            assert name in (names or SCHEMAS), name
            jsonschema.validate(json.loads(call["function"]["arguments"]), SCHEMAS[name])


def test_tool_choice_required_1000_samplings_parse_and_validate():
    # One invocation each (parallel_tool_calls false) keeps the 1,000 runs short (two processes of one thread, faster
    # than one process of two): with parallel calls a random model chains a mean of about 4 invocations (up to 15
    # seen) and the run takes many times longer. Parallel calls are checked on fewer samplings below.
    request = {"messages": [{"role": "user", "content": "What is the weather in Paris for 3 days?"}],
               "tools": TOOLS, "tool_choice": "required", "parallel_tool_calls": False}
    lines = run_sampler(request, 1000, processes=2)
    assert [line["seed"] for line in lines] == list(range(1000))
    assert len(lines) == 1000
    check_tool_calls(lines, thinking=False)
    assert all(len(dsinfer.parse_completion(x["text"] + EOS_TEXT)["tool_calls"]) == 1 for x in lines)
    assert len({dsinfer.parse_completion(x["text"] + EOS_TEXT)["tool_calls"][0]["function"]["name"]
                for x in lines}) == len(TOOLS)  # every tool gets called


def test_tool_choice_required_parallel_calls():
    request = {"messages": [{"role": "user", "content": "Weather, then search."}], "tools": TOOLS,
               "tool_choice": "required"}
    lines = run_sampler(request, 16, seed0=2000, max_tokens=6000)
    check_tool_calls(lines, thinking=False)
    assert max(len(dsinfer.parse_completion(x["text"] + EOS_TEXT)["tool_calls"]) for x in lines) > 1


def test_tool_choice_named_with_thinking():
    request = {"messages": [{"role": "user", "content": "Find news about rockets."}], "tools": TOOLS,
               "tool_choice": {"type": "function", "function": {"name": "search"}}, "parallel_tool_calls": False,
               "max_reasoning_tokens": 64}
    lines = run_sampler(request, 48, thinking=True, seed0=5000)
    check_tool_calls(lines, thinking=True, names={"search"})
    for line in lines:
        msg = dsinfer.parse_completion(line["text"] + EOS_TEXT, thinking=True)
        assert len(msg["tool_calls"]) == 1  # parallel_tool_calls false: exactly one
        assert msg["content"] == ""


def test_session_chat_enforces_response_format_with_thinking(tok):
    model = dsinfer.Model.load(MODEL, n_threads=2)
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}, "n": {"type": "integer", "minimum": 0,
                                                                               "maximum": 9}},
              "required": ["ok", "n"], "additionalProperties": False}
    rf = {"type": "json_schema", "json_schema": {"name": "r", "strict": True, "schema": schema}}
    s = dsinfer.Session(model, tok, capacity=4096, thinking=True)
    for seed in range(4):
        s.set_sampler([dsinfer.Temperature(1.0), dsinfer.Dist(seed)])
        reply = s.chat([{"role": "system", "content": "Answer in JSON."}, {"role": "user", "content": "Ready?"}],
                       response_format=rf, max_reasoning_tokens=40, max_tokens=2000)
        jsonschema.validate(json.loads(reply["content"]), schema)
    # The response format is rendered on the system message, exactly where DeepSeek's encoder puts it.
    prompt = tok.decode(s.tokens)
    assert "## Response Format:\n\nYou MUST strictly adhere to the following schema to reply:\n" in prompt



def test_session_chat_caps_reasoning_without_a_format(tok):
    # max_reasoning_tokens alone (no tools, no response format) in a thinking session: after that many reasoning
    # tokens only </think> may follow, as the server and the CLI enforce it; a fork keeps the session's mode.
    model = dsinfer.Model.load(MODEL, n_threads=2)
    think_end = tok.encode("</think>")
    assert len(think_end) == 1
    s = dsinfer.Session(model, tok, capacity=4096, thinking=True)
    for session in (s, s.fork()):
        for seed in range(3):
            session.set_sampler([dsinfer.Temperature(1.0), dsinfer.Dist(seed)])
            reply = session.chat([{"role": "user", "content": "Think briefly."}], max_reasoning_tokens=6,
                                 max_tokens=40)
            assert think_end[0] in session.generated[:7], session.generated
            assert isinstance(reply["reasoning_content"], str)

SHIPPED = os.path.join(os.path.dirname(__file__), "..", "..", "models", "dsinfer-v32-mini")
DEMO_TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "Current weather in a city",
                                      "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                     "required": ["city"]}}},
    {"type": "function", "function": {"name": "calculate", "description": "Evaluate an arithmetic expression",
                                      "parameters": {"type": "object", "properties": {"expression": {"type": "string"}},
                                                     "required": ["expression"]}}},
]


@pytest.mark.skipif(not os.path.exists(os.path.join(SHIPPED, "config.json")), reason="no shipped model")
def test_session_chat_holds_auto_tool_calls_to_the_tools():
    # The trained model calls tools on its own (tool_choice "auto", the default); whatever it calls is declared and
    # its arguments validate, at temperature 1.
    model = dsinfer.Model.load(SHIPPED, n_threads=2)
    tok = dsinfer.Tokenizer.load(SHIPPED)
    s = dsinfer.Session(model, tok, capacity=4096)
    calls = 0
    for seed in range(8):
        s.set_sampler([dsinfer.Temperature(1.0), dsinfer.Dist(seed)])
        reply = s.chat([{"role": "user", "content": "What's the weather like in Paris right now?"}], tools=DEMO_TOOLS,
                       max_tokens=200)
        for call in reply["tool_calls"] or []:
            calls += 1
            schema = {t["function"]["name"]: t["function"]["parameters"] for t in DEMO_TOOLS}[call["function"]["name"]]
            jsonschema.validate(json.loads(call["function"]["arguments"]), schema)
    assert calls > 0


def test_session_chat_serves_unenforceable_auto_tools_with_a_warning(tok):
    model = dsinfer.Model.load(MODEL, n_threads=2)
    s = dsinfer.Session(model, tok, capacity=4096)
    tools = [{"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "properties": {"x": {"not": {"type": "string"}}}}}}]
    messages = [{"role": "user", "content": "Hi"}]
    with pytest.warns(UserWarning, match="not enforced"):
        s.chat(messages, tools=tools, max_tokens=4)
    with pytest.raises(dsinfer.UnsupportedError):
        s.chat(messages, tools=tools, tool_choice="required", max_tokens=4)


def test_constraint_as_a_chain_stage(tok):
    model = dsinfer.Model.load(MODEL, n_threads=2)
    c = dsinfer.Constraint.regex(tok, "(yes|no|maybe)")
    s = dsinfer.Session(model, tok, capacity=1024)
    s.set_sampler([c, dsinfer.TopK(5), dsinfer.Temperature(1.0), dsinfer.Dist(3)])
    s.set_messages([{"role": "user", "content": "?"}])
    list(s.generate(max_tokens=20))
    assert s.generated_text in ("yes", "no", "maybe")


@pytest.mark.parametrize("name", ["extract_record", "extract_record_c"])
def test_examples_extract_a_valid_record(name):
    exe = os.path.join(EXAMPLES, "example_" + name)
    if not os.path.exists(exe):
        pytest.skip(f"{exe} not built")
    out = subprocess.run([exe, MODEL], check=True, capture_output=True, text=True).stdout
    record = json.loads(out.split("record: ", 1)[1])
    assert set(record) == {"name", "birth_year", "occupation"}


def test_python_example_extracts_a_valid_record():
    out = subprocess.run([sys.executable, os.path.join(REPO, "examples", "python_extract_record.py"), MODEL],
                         check=True, capture_output=True, text=True).stdout
    record = json.loads(out.split("record: ", 1)[1])
    assert set(record) == {"name", "birth_year", "occupation"}
