#!/usr/bin/env python3
"""Golden prompts and parses from DeepSeek's official V3.2 encoder (encoding_dsv32.py), for lib/chat.

    python tests/reference/make_chat_goldens.py --encoder /path/to/encoding/encoding_dsv32.py --out tests/golden/chat

The official encoder is read from the transformers repository, src/transformers/models/deepseek_v32/
deepseek_files/encoding/encoding_dsv32.py (commit 220c122bc324fc4b3a5018929c4c61ee456885d7), a copy of the file
in the HF repo deepseek-ai/DeepSeek-V3.2. It is run, never committed: only its inputs and outputs are.

Writes:
  official/test_output.txt   the official encoder's prompt for official/test_input.json (thinking mode, tools on the
                             system message), as the official test does it
  cases.jsonl                >= 100 generated requests ({"messages", "tools"} in OpenAI form, thinking mode,
                             drop_thinking) with the official prompt, or "error" when the official encoder refuses
                             and, for a random split point, the official prompt of the tail given the head as
                             context ("context_len", "context_output": what a session appends); handcrafted
                             "edge" cases carry their request as exact JSON text ("request_json": Python ints
                             beyond 64 bits, None contents, duplicate keys, refusals of every kind)
  roundtrip.jsonl            assistant messages rendered by the official encoder and what the official
                             parse_message_from_completion_text returns (or "error")
  json_dumps.jsonl           JSON texts and what the official to_json (json.dumps(json.loads(text),
                             ensure_ascii=False)) prints: random doubles, decimal literals, big ints, strings
Top-level "tools" are attached as the official test does: to messages[0] when it is a system message, otherwise
to an empty system message inserted first (dsinfer's rule, see lib/chat/chat_encoder.cpp).
"""
import argparse
import copy
import importlib.util
import json
import math
import os
import random
import struct


def load_encoder(path):
    spec = importlib.util.spec_from_file_location("encoding_dsv32", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def attach_tools(messages, tools):
    messages = copy.deepcopy(messages)
    if tools:
        if not messages or messages[0].get("role") != "system":
            messages.insert(0, {"role": "system", "content": ""})
        messages[0]["tools"] = tools
    return messages


WORDS = ["weather", "城市", "データ", "résumé", "naïve", "emoji 🎉", "a<b", "x > y", 'say "hi"', "back\\slash",
         "tab\there", "new\nline", "<｜DSML｜parameter name=\"x\">", "</think>", "json {\"k\": 1}", "", " ", "😀👍🏽",
         "<function_results>", "&amp;", "\u00e9\u0301", "100%", "C:\\path\\to", "'single'", "null", "true", "42"]


def rand_text(r, n=None):
    return " ".join(r.choice(WORDS) for _ in range(n if n is not None else r.randrange(1, 6)))


def rand_value(r, depth=0):
    k = r.randrange(9 if depth < 2 else 6)
    if k == 0:
        return rand_text(r)
    if k == 1:
        return r.randrange(-10 ** r.randrange(1, 12), 10 ** r.randrange(1, 12))
    if k == 2:
        return r.choice([0.5, -3.25, 1e-7, 2.5e20, 100.0, 0.1, 1.0, -0.0, 3.141592653589793, 1e16, 12345.678, 1e-5])
    if k == 3:
        return r.choice([True, False])
    if k == 4:
        return None
    if k == 5:
        return rand_text(r, 1)
    if k == 6:
        return [rand_value(r, depth + 1) for _ in range(r.randrange(0, 4))]
    return {rand_key(r): rand_value(r, depth + 1) for _ in range(r.randrange(0, 4))}


def rand_key(r):
    return r.choice(["location", "date", "query", "limit", "options", "キー", "naïve_key", "deep", "x", "filter",
                     "unit", "tags"])


def rand_schema(r, depth=0):
    k = r.randrange(5 if depth < 2 else 3)
    if k == 0:
        return {"type": "string", "description": rand_text(r)}
    if k == 1:
        return {"type": r.choice(["integer", "number"]), "minimum": r.randrange(10)}
    if k == 2:
        return {"type": "string", "enum": [rand_text(r, 1) for _ in range(3)]}
    if k == 3:
        return {"type": "array", "items": rand_schema(r, depth + 1)}
    return {"type": "object", "properties": {rand_key(r): rand_schema(r, depth + 1) for _ in range(r.randrange(1, 4))},
            "required": []}


def rand_tools(r):
    tools = []
    for i in range(r.randrange(1, 4)):
        props = {rand_key(r): rand_schema(r) for _ in range(r.randrange(1, 4))}
        tools.append({"type": "function", "function": {
            "name": r.choice(["get_weather", "search", "calc", "lookup_用户", "send_email"]) + f"_{i}",
            "description": rand_text(r), "parameters": {"type": "object", "properties": props,
                                                        "required": list(props)[:1]}}})
    return tools


def rand_call(r, tools, i):
    fn = r.choice(tools)["function"]["name"] if tools else "tool"
    args = {rand_key(r): rand_value(r) for _ in range(r.randrange(0, 4))}
    return {"id": f"call_{i}_{r.randrange(10 ** 6)}", "type": "function",
            "function": {"name": fn, "arguments": json.dumps(args, ensure_ascii=r.random() < 0.3)}}


def rand_conversation(r):
    tools = rand_tools(r) if r.random() < 0.7 else []
    thinking = r.random() < 0.5
    messages = []
    if r.random() < 0.6:
        m = {"role": "system", "content": rand_text(r) if r.random() < 0.8 else None}
        if r.random() < 0.2:
            m["response_format"] = {"type": "json_schema", "json_schema": {"name": "out", "schema": rand_schema(r)}}
        messages.append(m)
    n_turns = r.randrange(1, 4)
    calls = 0
    for turn in range(n_turns):
        last = turn == n_turns - 1
        if r.random() < 0.15 and (last or not thinking):
            dm = {"role": "developer", "content": rand_text(r) or "q"}
            if r.random() < 0.5:
                dm["tools"] = rand_tools(r)
            if r.random() < 0.3:
                dm["response_format"] = {"type": "json_object"}
            messages.append(dm)
        else:
            messages.append({"role": "user", "content": rand_text(r)})
        if last and r.random() < 0.4:
            break  # end on the user turn: a generation prompt
        for _ in range(r.randrange(0, 3) if tools else 0):  # tool rounds
            n_calls = r.randrange(1, 3)
            a = {"role": "assistant", "tool_calls": [rand_call(r, tools, calls + k) for k in range(n_calls)]}
            calls += n_calls
            if r.random() < 0.7:
                a["reasoning_content"] = rand_text(r)
            if r.random() < 0.3:
                a["content"] = rand_text(r)
            messages.append(a)
            for c in a["tool_calls"]:
                messages.append({"role": "tool", "tool_call_id": c["id"], "content": json.dumps(
                    {"result": rand_value(r)}, ensure_ascii=False)})
        a = {"role": "assistant", "content": rand_text(r)}
        if r.random() < 0.8:
            a["reasoning_content"] = rand_text(r)
        messages.append(a)
    return {"messages": messages, "tools": tools}, "thinking" if thinking else "chat"


def edge_cases():
    """Handcrafted requests for the corners of the official code: (name, request, thinking_mode, drop_thinking)."""
    tool = {"type": "function", "function": {"name": "f", "description": "d", "parameters": {
        "type": "object", "properties": {"n": {"type": "integer", "maximum": 10 ** 30, "minimum": -(2 ** 64),
                                               "multipleOf": 0.001, "default": 1e-320}}}}}
    call = lambda name, args: {"id": "c", "type": "function", "function": {"name": name, "arguments": args}}
    u = {"role": "user", "content": "q"}
    big = '{"a": 123456789012345678901234567890, "b": -18446744073709551617, "c": 18446744073709551615, ' \
          '"d": -9223372036854775808, "e": 1E5, "f": -0, "g": 5e-324, "h": 0.30000000000000004, "i": 1.0e-4}'
    out = [
        ("user_none", {"messages": [{"role": "user", "content": None}]}, "chat", True),
        ("tool_none", {"messages": [u, {"role": "assistant", "tool_calls": [call("f", "{}")]},
                                    {"role": "tool", "content": None}]}, "thinking", True),
        ("big_numbers", {"messages": [{"role": "system", "content": "s", "tools": [tool]}, u,
                                      {"role": "assistant", "content": "", "tool_calls": [call("f", big)]}]},
         "chat", True),
        ("duplicate_keys", {"messages": [u, {"role": "assistant", "content": "x", "tool_calls": [
            call("f", '{"a": 1, "b": "x", "a": "again"}')]}]}, "chat", True),
        ("escapes_in_args", {"messages": [u, {"role": "assistant", "content": "x", "tool_calls": [
            call("f", '{"s": "\\u00e9\\ud83d\\ude00 \\/ \\u0000\\u001f\\u007f\\u2028", '
                      '"o": {"k": ["\\t", "\\"", "\\\\"]}}')]}]}, "chat", True),
        ("empty_args_and_quoted_name", {"messages": [u, {"role": "assistant", "content": None, "tool_calls": [
            call('we"ird', "{}"), call("g", '{"x": {}}')]}, {"role": "tool", "content": "1"},
            {"role": "tool", "content": "2"}]}, "thinking", True),
        ("system_tools_and_format", {"messages": [
            {"role": "system", "content": "a", "tools": [tool], "response_format": {"type": "json_object",
                                                                                   "n": 10 ** 25}},
            {"role": "system", "content": None}, u]}, "thinking", True),
        ("developer_tools_and_format", {"messages": [
            {"role": "developer", "content": "d", "tools": [tool], "response_format": {"k": [1, 2.0]}}],
            "tools": [tool]}, "thinking", True),
        ("developer_not_last_dropped", {"messages": [{"role": "developer", "content": "d"}, u,
                                                      {"role": "assistant", "content": "a",
                                                       "reasoning_content": "r"}]}, "thinking", True),
        ("keep_thinking", {"messages": [u, {"role": "assistant", "content": "a", "reasoning_content": "r1"}, u,
                                        {"role": "assistant", "content": "b", "reasoning_content": "r2"}]},
         "thinking", False),
        ("ends_with_assistant_chat", {"messages": [u, {"role": "assistant", "content": "a",
                                                       "reasoning_content": "r"}]}, "chat", True),
        ("empty_tool_calls_list", {"messages": [u, {"role": "assistant", "content": "a", "tool_calls": [],
                                                    "reasoning_content": "r"}]}, "thinking", True),
        ("empty_tools_list", {"messages": [{"role": "system", "content": "s", "tools": []}, u], "tools": []},
         "chat", True),
        # Refusals.
        ("refuse_unknown_role", {"messages": [{"role": "wizard", "content": "x"}]}, "chat", True),
        ("refuse_args_not_json", {"messages": [u, {"role": "assistant", "tool_calls": [call("f", "{x")]}]},
         "chat", True),
        ("refuse_args_not_object", {"messages": [u, {"role": "assistant", "tool_calls": [call("f", "[1]")]}]},
         "chat", True),
        ("refuse_tool_first", {"messages": [{"role": "tool", "content": "r"}]}, "chat", True),
        ("refuse_too_many_results", {"messages": [u, {"role": "assistant", "tool_calls": [call("f", "{}")]},
                                                  {"role": "tool", "content": "1"}, {"role": "tool", "content": "2"}]},
         "chat", True),
        ("refuse_empty_developer", {"messages": [{"role": "developer", "content": ""}]}, "chat", True),
        ("refuse_thinking_without_reasoning", {"messages": [u, {"role": "assistant", "content": "a"}]},
         "thinking", True),
    ]
    return out


def json_dumps_cases(r):
    """(text, official to_json of json.loads(text)) pairs."""
    texts = []
    for _ in range(1500):  # doubles from random bit patterns, as repr writes them
        x = struct.unpack("<d", struct.pack("<Q", r.getrandbits(64)))[0]
        if math.isfinite(x):
            texts.append(repr(x))
    for _ in range(1500):  # decimal literals of every shape
        digits = "".join(r.choice("0123456789") for _ in range(r.randrange(1, 26))).lstrip("0") or "0"
        form = r.randrange(4)
        if form == 0:
            lit = digits[0] + ("." + digits[1:] if len(digits) > 1 else "") + r.choice("eE") + \
                r.choice(["", "+", "-"]) + str(r.randrange(0, 330))
        elif form == 1:
            lit = "0." + "0" * r.randrange(0, 8) + digits
        elif form == 2:
            k = r.randrange(0, len(digits) + 1)
            lit = (digits[:k] or "0") + "." + (digits[k:] or "0")
        else:
            lit = digits  # an integer, of up to 25 digits
        lit = r.choice(["", "-"]) + lit
        if math.isfinite(float(lit)):
            texts.append(lit)
    for e in (31, 32, 53, 63, 64, 65, 100):
        for d in (-1, 0, 1):
            texts += [str(2 ** e + d), str(-(2 ** e) + d)]
    texts += ["1e16", "1e15", "9999999999999998.0", "0.0001", "0.00001", "123456789012345680000.0", "1e-7",
              "2.2250738585072014e-308", "5e-324", "1.7976931348623157e308", "-0", "-0.0", "0", "0.0", "1e-400"]
    alphabet = ["a", " ", "\"", "\\", "/", "\n", "\r", "\t", "\b", "\f", "\x00", "\x1f", "\x7f", "\x80",
                "é", "中", "\u2028", "\ufeff", "😀", "👍🏽", "<", ">", "&", "'"]
    for _ in range(300):
        s = "".join(r.choice(alphabet) for _ in range(r.randrange(0, 12)))
        texts.append(json.dumps(s, ensure_ascii=r.random() < 0.5))
    for _ in range(200):
        texts.append(json.dumps(rand_value(r), ensure_ascii=r.random() < 0.5, indent=r.choice([None, 1]),
                                separators=r.choice([None, (",", ":")])))
    return texts


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--encoder", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--cases", type=int, default=150)
    args = ap.parse_args()
    E = load_encoder(args.encoder)
    os.makedirs(os.path.join(args.out, "official"), exist_ok=True)

    # The official test, exactly as test_encoding_dsv32.py runs it.
    with open(os.path.join(args.out, "official", "test_input.json")) as f:
        d = json.load(f)
    msgs = d["messages"]
    msgs[0]["tools"] = d["tools"]
    cfg = dict(thinking_mode="thinking", drop_thinking=True, add_default_bos_token=True)
    with open(os.path.join(args.out, "official", "test_output.txt"), "w", encoding="utf-8") as f:
        f.write(E.encode_messages(msgs, **cfg))

    r = random.Random(3207)
    n_err = 0
    roundtrips = []
    with open(os.path.join(args.out, "cases.jsonl"), "w", encoding="utf-8") as f:
        for i in range(args.cases):
            req, mode = rand_conversation(r)
            drop = r.random() < 0.85
            case = {"name": f"gen{i:03d}", "request": req, "thinking_mode": mode, "drop_thinking": drop}
            full = attach_tools(req["messages"], req["tools"])
            try:
                case["output"] = E.encode_messages(full, thinking_mode=mode, drop_thinking=drop)
            except (AssertionError, IndexError, KeyError, TypeError, AttributeError) as e:
                case["error"] = type(e).__name__
                n_err += 1
            if "output" in case and len(full) > 1:  # the same conversation as head (context) + tail
                k = random.Random(i).randrange(1, len(full))
                try:
                    case["context_output"] = E.encode_messages(full[k:], context=full[:k], thinking_mode=mode,
                                                               drop_thinking=drop)
                    case["context_len"] = k
                except (AssertionError, IndexError, KeyError, TypeError, AttributeError):
                    pass
            f.write(json.dumps(case, ensure_ascii=False) + "\n")
            # Round trip: each assistant message rendered alone after its context, parsed back officially.
            for k, m in enumerate(full):
                if m.get("role") != "assistant":
                    continue
                try:
                    text = E.encode_messages([m], context=full[:k], thinking_mode=mode, drop_thinking=drop)
                except Exception:  # noqa: BLE001  (the same refusals as above)
                    continue
                # The rendering shows reasoning (and so is parsed in thinking mode) when the message comes after
                # the last user turn of what was encoded, full[:k + 1], which is where a model generates it.
                last_user = max([j for j, x in enumerate(full[:k]) if x.get("role") in ("user", "developer")],
                                default=-1)
                pmode = mode if k > last_user else "chat"
                rt = {"text": text, "thinking_mode": pmode, "message": m}
                try:
                    rt["parsed"] = E.parse_message_from_completion_text(text, thinking_mode=pmode)
                except (AssertionError, IndexError) as e:
                    rt["error"] = type(e).__name__
                roundtrips.append(rt)
        for name, req, mode, drop in edge_cases():
            case = {"name": "edge_" + name, "request_json": json.dumps(req, ensure_ascii=False),
                    "thinking_mode": mode, "drop_thinking": drop}
            full = attach_tools(req["messages"], req.get("tools"))
            try:
                case["output"] = E.encode_messages(full, thinking_mode=mode, drop_thinking=drop)
            except Exception as e:  # noqa: BLE001  (every refusal counts: AssertionError, ValueError, ...)
                case["error"] = type(e).__name__
                n_err += 1
            f.write(json.dumps(case, ensure_ascii=False) + "\n")
    n_dumps = 0
    with open(os.path.join(args.out, "json_dumps.jsonl"), "w", encoding="utf-8") as f:
        for text in json_dumps_cases(random.Random(77)):
            f.write(json.dumps({"in": text, "out": E.to_json(json.loads(text))}, ensure_ascii=False) + "\n")
            n_dumps += 1
    # The official test's own round trips (messages 4 and -6 of the official input).
    for k in (4, len(msgs) - 6):
        text = E.encode_messages([msgs[k]], context=msgs[:k], **cfg)
        roundtrips.append({"text": text, "thinking_mode": "thinking", "message": msgs[k],
                           "parsed": E.parse_message_from_completion_text(text, thinking_mode="thinking")})
    with open(os.path.join(args.out, "roundtrip.jsonl"), "w", encoding="utf-8") as f:
        for rt in roundtrips:
            f.write(json.dumps(rt, ensure_ascii=False) + "\n")
    ok = sum(1 for rt in roundtrips if "parsed" in rt)
    print(f"{args.cases} generated + {len(edge_cases())} edge cases ({n_err} refused by the official encoder), "
          f"{len(roundtrips)} round trips ({ok} parse, {len(roundtrips) - ok} rejected by the official parser), "
          f"{n_dumps} json.dumps texts")


if __name__ == "__main__":
    main()
