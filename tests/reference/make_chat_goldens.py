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
  roundtrip.jsonl            assistant messages rendered by the official encoder and what the official
                             parse_message_from_completion_text returns (or "error")
Top-level "tools" are attached as the official test does: to messages[0] when it is a system message, otherwise
to an empty system message inserted first (dsinfer's rule, see lib/chat/chat_encoder.cpp).
"""
import argparse
import copy
import importlib.util
import json
import os
import random


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
            f.write(json.dumps(case, ensure_ascii=False) + "\n")
            # Round trip: each assistant message rendered alone after its context, parsed back officially.
            for k, m in enumerate(full):
                if m.get("role") != "assistant":
                    continue
                try:
                    text = E.encode_messages([m], context=full[:k], thinking_mode=mode, drop_thinking=drop)
                except Exception:  # noqa: BLE001  (the same refusals as above)
                    continue
                last_user = max([j for j, x in enumerate(full) if x.get("role") in ("user", "developer")], default=-1)
                pmode = mode if k > last_user else "chat"
                rt = {"text": text, "thinking_mode": pmode, "message": m}
                try:
                    rt["parsed"] = E.parse_message_from_completion_text(text, thinking_mode=pmode)
                except (AssertionError, IndexError) as e:
                    rt["error"] = type(e).__name__
                roundtrips.append(rt)
    # The official test's own round trips (messages 4 and -6 of the official input).
    for k in (4, len(msgs) - 6):
        text = E.encode_messages([msgs[k]], context=msgs[:k], **cfg)
        roundtrips.append({"text": text, "thinking_mode": "thinking", "message": msgs[k],
                           "parsed": E.parse_message_from_completion_text(text, thinking_mode="thinking")})
    with open(os.path.join(args.out, "roundtrip.jsonl"), "w", encoding="utf-8") as f:
        for rt in roundtrips:
            f.write(json.dumps(rt, ensure_ascii=False) + "\n")
    ok = sum(1 for rt in roundtrips if "parsed" in rt)
    print(f"{args.cases} cases ({n_err} refused by the official encoder), {len(roundtrips)} round trips "
          f"({ok} parse, {len(roundtrips) - ok} rejected by the official parser)")


if __name__ == "__main__":
    main()
