#!/usr/bin/env python3
"""Writes the fuzz targets' seed corpora (tests/fuzz/corpus/<target>/) from small, well-formed examples of each
input, plus a few near-misses the parsers must refuse. Deterministic: rerunning it rewrites the same files.

Usage: python3 tests/fuzz/make_corpus.py            (rewrites tests/fuzz/corpus/)

Inputs a campaign found (docs/fuzzing.md) are kept next to the seeds as finding-<name>; rerunning this script
leaves them in place.
"""
import hashlib
import json
import os
import struct
import sys

sys.dont_write_bytecode = True  # importing scripts/make_small_checkpoint.py must not leave __pycache__ in the tree

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
OUT = os.path.join(HERE, "corpus")
DSML = "｜DSML｜"
EOS = "<｜end▁of▁sentence｜>"


def put(target, data):
    if isinstance(data, str):
        data = data.encode("utf-8")
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    name = hashlib.sha1(data).hexdigest()[:16]
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def safetensors(tensors, metadata=None, pad=0):
    """tensors: [(name, dtype, shape, raw bytes)]; pad: spaces after the header (misaligns the data section)."""
    header, blob = {}, b""
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(blob), len(blob) + len(raw)]}
        blob += raw
    if metadata is not None:
        header["__metadata__"] = metadata
    h = json.dumps(header, separators=(",", ":")).encode() + b" " * pad
    return struct.pack("<Q", len(h)) + h + blob


def seeds_safetensors():
    f32 = struct.pack("<4f", 1, 2, 3, 4)
    bf16 = b"\x80\x3f" * 3
    put("fuzz_safetensors", b"\x00" + safetensors([("w", "F32", [2, 2], f32)]))
    put("fuzz_safetensors", b"\x00" + safetensors([("w", "F32", [2, 2], f32), ("b", "BF16", [3], bf16)],
                                                  {"format": "pt"}))
    put("fuzz_safetensors", b"\x00" + safetensors([("e", "F32", [0, 4], b""), ("s", "I64", [1], b"\x01" + b"\0" * 7),
                                                  ("q", "F8_E4M3", [3], b"\x38\x40\x48")], pad=1))
    put("fuzz_safetensors", b"\x00" + safetensors([("w", "F32", [2, 2], f32)])[:-3])  # truncated
    index = {"metadata": {"total_size": 22}, "weight_map": {"w": "a.safetensors", "b": "a.safetensors"}}
    put("fuzz_safetensors", b"\x01" + json.dumps(index).encode())
    put("fuzz_safetensors", b"\x01" + json.dumps({"weight_map": {"w": "a.safetensors", "x": "a.safetensors"}}).encode())
    put("fuzz_safetensors", b"\x01" + json.dumps({"weight_map": {"w": "../a.safetensors"}}).encode())


def small_config(**over):
    sys.path.insert(0, os.path.join(ROOT, "scripts"))
    import make_small_checkpoint as m  # noqa: E402  (the test checkpoints' own configs)
    c = dict(m.PRESETS["v32-tiny"]["config"])
    c.update(over)
    return json.dumps(c, indent=1)


def seeds_config():
    put("fuzz_config", small_config())
    put("fuzz_config", small_config(model_type="deepseek_v3", index_n_heads=None, index_head_dim=None, index_topk=None))
    put("fuzz_config", small_config(rope_scaling=None, quantization_config=None, eos_token_id=[1, 2]))
    put("fuzz_config", small_config(n_routed_experts=0, q_lora_rank=None))
    put("fuzz_config", small_config(rope_parameters={"rope_type": "default", "rope_theta": 50000.0}, rope_scaling=None))


def bytes_to_unicode():
    # GPT-2's reversible byte -> printable character map, which ByteLevel tokenizers use for their vocabularies.
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def small_tokenizer(pre_tokenizer, post_processor=True, merges_as_pairs=True, extra_added=()):
    """A byte-level BPE: 256 byte tokens, merges learned greedily from a sentence, DeepSeek's special tokens."""
    b2u = bytes_to_unicode()
    vocab = {b2u[b]: b for b in range(256)}
    words = [[b2u[b] for b in w.encode()] for w in "the cat sat on the mat then the hat thought".split()]
    merges = []
    for _ in range(24):
        counts = {}
        for w in words:
            for a, b in zip(w, w[1:]):
                counts[(a, b)] = counts.get((a, b), 0) + 1
        if not counts:
            break
        (a, b), _ = max(counts.items(), key=lambda kv: (kv[1], kv[0]))
        merges.append([a, b] if merges_as_pairs else f"{a} {b}")
        vocab.setdefault(a + b, len(vocab))
        words = [merge_word(w, a, b) for w in words]
    added = []
    for content in ["<｜begin▁of▁sentence｜>", EOS, "<think>", "</think>", *extra_added]:
        added.append({"id": len(vocab) + len(added), "content": content, "single_word": False, "lstrip": False,
                      "rstrip": False, "normalized": False, "special": True})
    t = {"version": "1.0", "truncation": None, "padding": None, "added_tokens": added, "normalizer": None,
         "pre_tokenizer": pre_tokenizer, "decoder": {"type": "ByteLevel", "add_prefix_space": True,
                                                     "trim_offsets": True, "use_regex": True},
         "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                   "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                   "vocab": vocab, "merges": merges}}
    if post_processor:
        bos = added[0]["content"]
        t["post_processor"] = {"type": "TemplateProcessing",
                               "single": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                               "special_tokens": {bos: {"id": bos, "ids": [added[0]["id"]], "tokens": [bos]}}}
    return json.dumps(t, ensure_ascii=False, separators=(",", ":"))


def merge_word(w, a, b):
    out, i = [], 0
    while i < len(w):
        if i + 1 < len(w) and w[i] == a and w[i + 1] == b:
            out.append(a + b)
            i += 2
        else:
            out.append(w[i])
            i += 1
    return out


def seeds_tokenizer():
    fixture = json.load(open(os.path.join(ROOT, "tests", "fixtures", "tokenizer", "tokenizer.json"), encoding="utf-8"))
    deepseek_pre = fixture["pre_tokenizer"]  # DeepSeek's own Sequence of Splits + ByteLevel
    gpt2_pre = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    digits_pre = {"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": True}, gpt2_pre]}
    text = "\0the cat 12345 sat <think>on</think> the mat\n\nthen é 中文".encode()
    put("fuzz_tokenizer", small_tokenizer(deepseek_pre).encode() + text)
    put("fuzz_tokenizer", small_tokenizer(gpt2_pre, post_processor=False, merges_as_pairs=False).encode() + text)
    put("fuzz_tokenizer", small_tokenizer(digits_pre, extra_added=["<tool>"]).encode() + b"\0" + b"the" * 50)
    put("fuzz_tokenizer", small_tokenizer({"type": "Split", "pattern": {"String": " "}, "behavior": "Removed",
                                           "invert": False}).encode())


def seeds_chat():
    official = json.load(open(os.path.join(ROOT, "tests", "golden", "chat", "official", "test_input.json"),
                              encoding="utf-8"))
    put("fuzz_chat", json.dumps(official, ensure_ascii=False))
    msgs = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "", "reasoning_content": "think",
             "tool_calls": [{"id": "c1", "type": "function",
                             "function": {"name": "get", "arguments": "{\"city\": \"Paris\", \"n\": [1, 2.5e3]}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
            {"role": "user", "content": [{"type": "text", "text": "and"}, {"type": "text", "text": "tomorrow?"}]}]
    tools = [{"type": "function", "function": {"name": "get", "description": "weather",
                                               "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                              "required": ["city"]}}}]
    put("fuzz_chat", json.dumps({"messages": msgs, "tools": tools}, ensure_ascii=False))
    put("fuzz_chat", json.dumps({"messages": msgs[:2], "response_format": {"type": "json_object"}}))
    put("fuzz_chat", json.dumps(msgs[1:2]))
    put("fuzz_chat", "[{\"role\": \"user\", \"content\": 12345678901234567890123}]")


def completions():
    call = (f"\n\n<{DSML}function_calls>\n<{DSML}invoke name=\"get\">\n"
            f"<{DSML}parameter name=\"city\" string=\"true\">Paris</{DSML}parameter>\n"
            f"<{DSML}parameter name=\"days\" string=\"false\">[1, 2]</{DSML}parameter>\n"
            f"</{DSML}invoke>\n<{DSML}invoke name=\"now\">\n</{DSML}invoke>\n</{DSML}function_calls>")
    return [
        (0, "Hello there." + EOS),
        (1, "let me think</think>The answer is 4." + EOS),
        (0, "Checking." + call + EOS),
        (1, "need the weather</think>" + call + EOS),
        (0, "no end of sentence"),
        (0, "Checking." + call.replace("</" + DSML + "invoke>\n</", "</" + DSML + "invoke>\n<")),  # unclosed
        (0, call.replace("name=\"days\"", "name=\"city\"") + EOS),  # duplicate parameter
        # Where DeepSeek's parser accepts more than the format and both of ours refuse (dsinfer/chat.hpp):
        (0, call.replace("[1, 2]", "[1, 2") + EOS),  # string="false" value that is not JSON
        (0, call.replace("name=\"get\"", "name=\"we\"ird\"") + EOS),  # a quote in a name
        (0, call.replace(f"<{DSML}parameter name=\"city\"", f"<{DSML}parameteke name=\"city\"") + EOS),  # swallowed
        (0, "Checking." + call[:call.index("name=\"now\">\n") + len("name=\"now\">\n")]),  # cut after an invoke
        (0, "Checking." + call.replace("invoke name=\"get\"", "invoke\u3000name=\"get\"") + EOS),  # Unicode space
        (0, "Checking." + call.replace("Paris</", "Paris<\n/") + EOS),  # a newline before /｜DSML｜parameter
        # ... and what both accept:
        (0, "Checking." + call.replace("invoke name=\"get\"", "invoke \n\tname=\"get\"") + EOS),  # ASCII space
        (1, "weather</think>" + call),  # a closed block without the end of sentence
    ]


def seeds_parsers():
    for mode, text in completions():
        put("fuzz_completion", bytes([mode]) + text.encode())
        for step in (0, 7):
            put("fuzz_stream", bytes([mode, step]) + text.encode())


def seeds_openai():
    for name in sorted(os.listdir(os.path.join(ROOT, "tests", "fixtures", "requests"))):
        with open(os.path.join(ROOT, "tests", "fixtures", "requests", name), "rb") as f:
            put("fuzz_openai_request", b"\x00" + f.read())
    chat = {"model": "dsinfer", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8, "temperature": 0.5,
            "top_p": 0.9, "stop": ["\n"], "logit_bias": {"5": -100}, "seed": 3, "n": 2, "stream": True,
            "stream_options": {"include_usage": True}}
    put("fuzz_openai_request", b"\x00" + json.dumps(chat).encode())
    put("fuzz_openai_request", b"\x00" + json.dumps({**chat, "response_format": {
        "type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object", "properties": {
            "a": {"type": "integer", "minimum": 0}}, "required": ["a"]}}}}).encode())
    put("fuzz_openai_request", b"\x01" + json.dumps({"prompt": "Once upon", "max_tokens": 4, "echo": True,
                                                     "logprobs": 2}).encode())
    put("fuzz_openai_request", b"\x01" + json.dumps({"prompt": [[1, 2, 3]], "max_tokens": 4}).encode())
    put("fuzz_openai_request", b"\x02" + json.dumps({"prompt": "Hello world", "return_token_strs": True}).encode())
    put("fuzz_openai_request", b"\x02" + json.dumps({"messages": [{"role": "user", "content": "x"}]}).encode())
    put("fuzz_openai_request", b"\x03" + json.dumps({"tokens": [1, 2, 300]}).encode())


def main():
    # Only the targets written here: the fuzz_capi and fuzz_session_restore seeds are made otherwise (docs/fuzzing.md).
    written = ("fuzz_safetensors", "fuzz_config", "fuzz_tokenizer", "fuzz_chat", "fuzz_completion", "fuzz_stream",
               "fuzz_openai_request")
    for t in written:
        d = os.path.join(OUT, t)
        for f in os.listdir(d) if os.path.isdir(d) else []:
            if not f.startswith("finding-"):
                os.remove(os.path.join(d, f))
    seeds_safetensors()
    seeds_config()
    seeds_tokenizer()
    seeds_chat()
    seeds_parsers()
    seeds_openai()
    total = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(OUT) for f in fs)
    print(f"wrote {sum(len(fs) for _, _, fs in os.walk(OUT))} seeds, {total} bytes, under {os.path.relpath(OUT, ROOT)}")


if __name__ == "__main__":
    main()
