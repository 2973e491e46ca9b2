"""The Python package: the cross-front-door scenarios (compared with the C ABI's output), samplers written in
Python, streaming chat with tool calls, errors mapped one to one. Needs the package installed (`pip install .`),
DSINFER_TEST_MODEL (a small checkpoint directory) and DSINFER_SCENARIOS_C / DSINFER_BAD_MODEL for the parity test."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import dsinfer

MODEL = os.environ.get("DSINFER_TEST_MODEL", "build/models/v32-tiny")
HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))


@pytest.fixture(scope="module")
def model():
    return dsinfer.Model.load(MODEL, n_threads=2)


@pytest.fixture(scope="module")
def tok():
    return dsinfer.Tokenizer.load(MODEL)


def scenarios(model, tok, bad_dir):
    """The same scenarios as tests/capi/scenarios.c, printed the same way."""
    out = ["load: 0"]
    s = dsinfer.Session(model, tok, capacity=256, precision="reference")
    s.prefill([0, 100, 200, 300, 400])
    list(s.generate(max_tokens=16, stop_at_eos=False))
    out.append("default16: " + ",".join(map(str, s.generated)))
    try:
        dsinfer.Model.load(bad_dir)
        out.append("bad_shard: 0 model")
    except dsinfer.Error as e:
        out.append(f"bad_shard: {e.code} null")
    s = dsinfer.Session(model, tok, capacity=256, precision="reference")
    try:
        s.prefill([5, 99999])
    except dsinfer.Error as e:
        out.append(f"bad_token: {e.code}")
    try:
        dsinfer.parse_completion("hi\n\n<｜DSML｜function_calls>\n<｜DSML｜invoke nam=\"f\">\n</｜DSML｜invoke>\n"
                                 "</｜DSML｜function_calls><｜end▁of▁sentence｜>")
    except dsinfer.Error as e:
        out.append(f"malformed_tool: {e.code}")

    class Force7(dsinfer.Sampler):
        def apply(self, c):
            c.selected = int(np.nonzero(c.ids == 7)[0][0])

    class Fails(dsinfer.Sampler):
        def apply(self, c):
            raise dsinfer.InvalidArgumentError(1, "no")

    s = dsinfer.Session(model, tok, capacity=256, precision="reference")
    s.prefill([0, 100, 200, 300, 400])
    s.set_sampler([Force7()])
    list(s.generate(max_tokens=3, stop_at_eos=False))
    out.append("force_token: " + ",".join(map(str, s.generated)))
    s = dsinfer.Session(model, tok, capacity=256, precision="reference")
    s.prefill([0, 100, 200, 300, 400])
    s.set_sampler([Fails()])
    try:
        list(s.generate(max_tokens=3, stop_at_eos=False))
    except dsinfer.Error as e:
        out.append(f"failing_sampler: {e.code}")
    return "\n".join(out)


@pytest.mark.skipif(not os.environ.get("DSINFER_SCENARIOS_C"), reason="DSINFER_SCENARIOS_C not set")
def test_same_scenarios_as_the_c_abi(model, tok):
    bad = os.environ["DSINFER_BAD_MODEL"]
    c = subprocess.run([os.environ["DSINFER_SCENARIOS_C"], MODEL, bad], capture_output=True, text=True, check=True)
    assert scenarios(model, tok, bad) == c.stdout.strip()


def test_errors_map_to_classes_and_codes(model, tok):
    with pytest.raises(dsinfer.IoError) as e:
        dsinfer.Model.load("/nonexistent/model")
    assert e.value.code == 2 and "/nonexistent/model" in str(e.value)
    with pytest.raises(dsinfer.InvalidArgumentError):
        tok.decode([len(tok)])
    with pytest.raises(dsinfer.FormatError):
        dsinfer.parse_completion("no end")
    with pytest.raises(dsinfer.InvalidArgumentError) as e:
        dsinfer.encode_chat([{"role": "wizard", "content": "x"}])
    assert "unknown role" in str(e.value)


def test_progress_tokenizer_and_logits(model, tok):
    seen = []
    dsinfer.Model.load(MODEL, progress=lambda f, stage: seen.append(f))
    assert seen[0] == 0.0 and seen[-1] == 1.0
    ids = tok.encode("Hello, 世界!")
    assert tok.decode(ids) == "Hello, 世界!"
    logits = model.logits(ids, precision="reference")
    assert logits.shape == (len(ids), model.info["vocab_size"]) and logits.dtype == np.float32


def test_python_sampler_sees_views_and_can_truncate(model, tok):
    calls = []

    class TopTwoThenGreedy(dsinfer.Sampler):
        def apply(self, c):
            order = np.argsort(-c.logits)
            c.ids[:] = c.ids[order]
            c.logits[:] = c.logits[order]
            c.n = 2
            calls.append(int(c.ids[0]))

        def accept(self, token):
            calls.append(("accept", token))

    s = dsinfer.Session(model, tok, capacity=128, precision="reference")
    s.prefill([0, 1000, 2000])
    s.set_sampler([TopTwoThenGreedy(), dsinfer.Greedy()])
    list(s.generate(max_tokens=4, stop_at_eos=False))
    greedy = dsinfer.Session(model, tok, capacity=128, precision="reference")
    greedy.set_sampler([dsinfer.Greedy()])
    greedy.prefill([0, 1000, 2000])
    list(greedy.generate(max_tokens=4, stop_at_eos=False))
    assert s.generated == greedy.generated  # keeping the top two and then taking the best is greedy
    assert ("accept", s.generated[0]) in calls


def test_seeded_sampling_repeats(model, tok):
    def run(seed):
        s = dsinfer.Session(model, tok, capacity=128)
        s.set_sampler([dsinfer.Temperature(1.0), dsinfer.TopP(0.95), dsinfer.Dist(seed)])
        s.set_messages([{"role": "user", "content": "tell me"}])
        list(s.generate(max_tokens=12, stop_at_eos=False))
        return s.generated
    assert run(3) == run(3) and run(3) != run(4)


def test_sampling_defaults_from_generation_config(model, tok):
    """A session samples as the checkpoint's generation_config.json says (v32-tiny: temperature 1.0, top_p 0.95)
    unless told otherwise, its draw seeded by `seed`; the checkpoint's values are model.info["generation"]."""
    g = model.info["generation"]
    assert g["do_sample"] and g["top_p"] == pytest.approx(0.95)

    def run(samplers=None, seed=0):
        s = dsinfer.Session(model, tok, capacity=128, precision="reference", seed=seed)
        if samplers is not None:
            s.set_sampler(samplers)
        s.prefill([0, 1000, 2000])
        list(s.generate(max_tokens=24, stop_at_eos=False))
        return s.generated

    by_default = run()
    assert by_default == run([dsinfer.Temperature(1.0), dsinfer.TopP(0.95), dsinfer.Dist(0)])
    assert by_default != run([dsinfer.Greedy()])
    assert by_default != run(seed=1)


def test_chat_returns_openai_style_tool_calls(model, tok):
    # Script the model's output with a sampler that forces the tokens of a tool-call completion.
    completion = ("\n\n<｜DSML｜function_calls>\n<｜DSML｜invoke name=\"get_weather\">\n"
                  "<｜DSML｜parameter name=\"city\" string=\"true\">Hangzhou</｜DSML｜parameter>\n</｜DSML｜invoke>\n"
                  "</｜DSML｜function_calls><｜end▁of▁sentence｜>")
    script = tok.encode(completion)

    class Scripted(dsinfer.Sampler):
        def __init__(self):
            self.i = 0

        def apply(self, c):
            c.selected = int(np.nonzero(c.ids == script[self.i])[0][0])
            self.i += 1

    s = dsinfer.Session(model, tok, capacity=2048)
    s.set_sampler([Scripted()])
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    kinds = [e["kind"] for e in s.chat_stream([{"role": "user", "content": "weather?"}], tools=tools, max_tokens=200)]
    assert "tool_call_begin" in kinds and "tool_args" in kinds and "tool_call_end" in kinds
    reply = s.reply
    assert reply["tool_calls"] == [{"type": "function", "function": {"name": "get_weather",
                                                                     "arguments": "{\"city\": \"Hangzhou\"}"}}]


def test_fork_save_restore(model, tok, tmp_path):
    s = dsinfer.Session(model, tok, capacity=128, precision="reference")
    s.set_messages([{"role": "user", "content": "fork"}])
    child = s.fork()
    path = str(tmp_path / "s.bin")
    s.save(path)
    list(s.generate(max_tokens=5, stop_at_eos=False))
    list(child.generate(max_tokens=5, stop_at_eos=False))
    assert child.generated == s.generated
    r = dsinfer.Session(model, tok, capacity=128, precision="reference")
    r.restore(path)
    list(r.generate(max_tokens=5, stop_at_eos=False))
    assert r.generated == s.generated
    assert np.array_equal(r.last_logits, s.last_logits)


@pytest.mark.parametrize("script", ["python_stream_chat.py", "python_custom_sampler.py", "python_tool_loop.py"])
def test_examples_run(script):
    r = subprocess.run([sys.executable, os.path.join(REPO, "examples", script), MODEL], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip()


def test_kv_cache_memory_is_known_before_allocation(model):
    # v32-tiny (4 layers, kv_lora_rank 128, rope 32, indexer head 64): the FP8 row is 128 + 4 + 64 bytes, the indexer
    # key 64 + 4; f32 keeps (128 + 32 + 64 + 1) floats.
    info = model.info
    assert info["kv_cache_dtype"] == "fp8"
    assert info["kv_bytes_per_token_layer"] == 196 + 68
    assert info["kv_bytes_per_token"] == 4 * 264
    assert info["kv_index_bytes_per_token_layer"] == 68  # the key scan's share of each token's row
    assert model.kv_cache_bytes(20000) == 20032 * 4 * 264  # whole blocks of 64 tokens
    assert model.kv_cache_bytes(20032, "f32") == 20032 * 4 * 900
    with pytest.raises(ValueError):
        model.kv_cache_bytes(1, "int4")


def test_backend_memory_stats_and_release_memory(model):
    model.logits([1, 2, 3, 4, 5])  # an evaluation leaves the ops' scratch behind
    before = model.backend_memory_stats()
    assert set(before) == {"scratch_bytes", "cached_activation_bytes"}
    assert before["scratch_bytes"] > 0
    model.release_memory()
    after = model.backend_memory_stats()
    assert after == {"scratch_bytes": 0, "cached_activation_bytes": 0}


def test_speculative_decoding_gives_the_same_tokens(tok):
    """Issue 18: speculative=k drafts with the MTP module; the tokens are the plain ones (greedy and seeded)."""
    mtp_dir = os.path.join(os.path.dirname(MODEL), "v32-tiny-mtp")
    if not os.path.exists(os.path.join(mtp_dir, "config.json")):
        pytest.skip("no v32-tiny-mtp next to DSINFER_TEST_MODEL")
    m = dsinfer.Model.load(mtp_dir, n_threads=2)
    assert m.info["has_mtp"] and m.info["mtp_weight_bytes"] > 0
    runs = []
    for k in (0, 3):
        for greedy in (True, False):
            s = dsinfer.Session(m, tok, capacity=256, seed=7, speculative=k, speculative_adaptive=False)
            if greedy:
                s.set_sampler([dsinfer.Greedy()])
            s.prefill([0, 100, 200, 300, 400])
            list(s.generate(max_tokens=20, stop_at_eos=False))
            runs.append((k, greedy, s.generated, s.speculative_stats))
    assert runs[0][2] == runs[2][2] and runs[1][2] == runs[3][2]
    assert runs[2][3]["drafted"] > 0 and len(runs[2][3]["drafted_at"]) == 3
    assert runs[0][3]["drafted"] == 0
    plain = dsinfer.Model.load(MODEL, n_threads=2)
    with pytest.raises(dsinfer.UnsupportedError):
        dsinfer.Session(plain, tok, speculative=2)
