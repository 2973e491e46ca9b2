"""Python reaches what the C++ API has (issue 21, item 3): the engine's batched generation, finish reasons and token
counts, token lookups and special tokens, the streaming detokenizer, typed built-in samplers (logit bias included),
sampler exceptions with their own types, and V3-family checkpoints refused by the chat calls, by name."""
import json
import os

import pytest

import dsinfer

MODEL = os.environ.get("DSINFER_TEST_MODEL", "build/models/v32-tiny")
V3_MODEL = os.path.join(os.path.dirname(os.path.abspath(MODEL)), "v3-tiny")


@pytest.fixture(scope="module")
def model():
    return dsinfer.Model.load(MODEL, n_threads=2)


@pytest.fixture(scope="module")
def tok():
    return dsinfer.Tokenizer.load(MODEL)


def prompted(model, tok, samplers=None, seed=0):
    s = dsinfer.Session(model, tok, capacity=128, seed=seed)
    if samplers is not None:
        s.set_sampler(samplers)
    s.prefill([0, 1000, 2000])
    return s


def test_token_lookups_and_special_tokens(tok):
    eos = tok.eos_id
    assert eos >= 0 and tok.is_special(eos)
    assert tok.token_to_id(tok.id_to_token(eos)) == eos
    assert tok.token_to_id("no such token, surely") == -1
    assert not tok.is_special(tok.encode("hello")[0])
    with pytest.raises(dsinfer.InvalidArgumentError):
        tok.id_to_token(len(tok))


def test_streaming_detokenizer_matches_decode(tok):
    ids = tok.encode("héllo 世界 ok")
    d = dsinfer.Detokenizer(tok)
    pieces = [d.push(i) for i in ids] + [d.finish()]
    assert "".join(pieces) == tok.decode(ids)
    assert all("\ufffd" not in p for p in pieces)  # never half a character
    with pytest.raises(dsinfer.InvalidArgumentError):
        d.push(-1)


def test_finish_reasons_and_counts(model, tok):
    s = prompted(model, tok, [dsinfer.Greedy()])
    assert s.finish_reason is None and s.last_prefill_tokens == 3
    list(s.generate(max_tokens=6, stop_at_eos=False))
    assert s.finish_reason == "length" and len(s.generated) == 6
    text = s.generated_text
    stop = next((text[:k] for k in range(1, len(text) + 1) if text[:k].strip() and "\ufffd" not in text[:k]), None)
    if stop:
        s2 = prompted(model, tok, [dsinfer.Greedy()])
        list(s2.generate(max_tokens=6, stop=[stop], stop_at_eos=False))
        assert s2.finish_reason == "stop"


def test_engine_batches_with_the_tokens_each_gets_alone(model, tok):
    alone = []
    for seed in (1, 2):
        s = prompted(model, tok, seed=seed)
        list(s.generate(max_tokens=8, stop_at_eos=False))
        alone.append(s.generated)
    sessions = [prompted(model, tok, seed=1), prompted(model, tok, seed=2)]
    events = []
    dsinfer.Engine(model).generate(sessions, max_tokens=8, stop_at_eos=False,
                                   on_event=lambda i, ev: events.append(i))
    assert [s.generated for s in sessions] == alone
    assert all(s.finish_reason == "length" for s in sessions)
    assert set(events) <= {0, 1}

    class Stop(Exception):
        pass

    def fail(i, ev):
        raise Stop("enough")

    with pytest.raises(Stop):
        dsinfer.Engine(model).generate([prompted(model, tok)], max_tokens=4, stop_at_eos=False, on_event=fail)


def test_typed_builtin_samplers(model, tok):
    assert dsinfer.TopK(5) == dsinfer.TopK(5) and dsinfer.TopK(5) != dsinfer.TopK(6)
    assert repr(dsinfer.Penalties(repeat=1.1)) == "Penalties(last_n=64, repeat=1.1, frequency=0.0, presence=0.0)"
    assert dsinfer.Dist(3).seed == 3
    greedy = prompted(model, tok, [dsinfer.Greedy()])
    list(greedy.generate(max_tokens=4, stop_at_eos=False))
    banned = greedy.generated[0]
    s = prompted(model, tok, [dsinfer.LogitBias({banned: -1000.0}), dsinfer.Greedy()])
    list(s.generate(max_tokens=4, stop_at_eos=False))
    assert banned not in s.generated
    with pytest.raises(dsinfer.InvalidArgumentError):
        prompted(model, tok, [dsinfer.TopP(0.0), dsinfer.Greedy()])


def test_sampler_exceptions_keep_their_type(model, tok):
    class Picky(dsinfer.Sampler):
        def apply(self, c):
            raise ValueError("picky")

    s = prompted(model, tok, [Picky()])
    with pytest.raises(ValueError, match="picky"):
        list(s.generate(max_tokens=2, stop_at_eos=False))


@pytest.mark.skipif(not os.path.isdir(V3_MODEL), reason="v3-tiny checkpoint not built")
def test_v3_family_checkpoint_refused_by_chat_not_prompted_wrong():
    m, t = dsinfer.Model.load(V3_MODEL, n_threads=1), dsinfer.Tokenizer.load(V3_MODEL)
    assert m.info["chat_format"] == "deepseek-v3"
    s = dsinfer.Session(m, t, capacity=64)
    with pytest.raises(dsinfer.UnsupportedError, match="deepseek-v3"):
        s.chat([{"role": "user", "content": "Hi"}])
    s.prefill([0, 100, 200])  # token ids rendered by the caller still work
    list(s.generate(max_tokens=2, stop_at_eos=False))
    assert len(s.generated) == 2


@pytest.mark.skipif(not os.path.isdir(V3_MODEL), reason="v3-tiny checkpoint not built")
def test_v3_family_chat_completion_is_a_400_naming_the_family():
    client = dsinfer.Client.load(V3_MODEL, n_threads=1)
    with pytest.raises(dsinfer.APIError) as e:
        client.chat.completions.create(messages=[{"role": "user", "content": "Hi"}], max_tokens=2)
    assert e.value.status_code == 400 and "deepseek-v3" in e.value.message
    reply = client.completions.create(prompt="Hi", max_tokens=2)  # raw text still works
    assert reply["choices"][0]["finish_reason"] in ("length", "stop")


def test_v32_exp_checkpoint_refused_by_chat(tmp_path):
    # DeepSeek-V3.2-Exp: model_type deepseek_v32 like V3.2, but a V3.1-style chat_template with the legacy tool-call
    # tokens in tokenizer_config.json. The v32-tiny files, linked, with such a template.
    for name in os.listdir(MODEL):
        if name != "tokenizer_config.json":
            os.symlink(os.path.abspath(os.path.join(MODEL, name)), tmp_path / name)
    with open(os.path.join(MODEL, "tokenizer_config.json"), encoding="utf-8") as f:
        config = json.load(f)
    config["chat_template"] = "{% if thinking %}<think>{% else %}</think>{% endif %}<｜tool▁calls▁begin｜>"
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    m, t = dsinfer.Model.load(str(tmp_path), n_threads=1), dsinfer.Tokenizer.load(str(tmp_path))
    assert m.info["chat_format"] == "deepseek-v3.2-exp"
    with pytest.raises(dsinfer.UnsupportedError, match="deepseek-v3.2-exp"):
        dsinfer.Session(m, t, capacity=64).chat([{"role": "user", "content": "Hi"}])
    client = dsinfer.Client.load(str(tmp_path), n_threads=1)
    with pytest.raises(dsinfer.APIError) as e:
        client.chat.completions.create(messages=[{"role": "user", "content": "Hi"}], max_tokens=2)
    assert e.value.status_code == 400 and "deepseek-v3.2-exp" in e.value.message
