"""Hostile inputs through the Python bindings (issue 20): each is a dsinfer error class, never a crash, a
RuntimeError or a silent default."""
import json
import os
import shutil

import pytest

import dsinfer
from dsinfer import _dsinfer

MODEL = os.environ.get("DSINFER_TEST_MODEL", "build/models/v32-tiny")


@pytest.fixture(scope="module")
def model():
    return dsinfer.Model.load(MODEL, n_threads=2)


@pytest.fixture(scope="module")
def tok():
    return dsinfer.Tokenizer.load(MODEL)


def test_deep_chat_json_is_a_format_error():
    deep = "[" * 100000 + "]" * 100000
    with pytest.raises(dsinfer.FormatError) as e:
        _dsinfer.encode_chat(deep, False)
    assert "nest deeper than 128 levels" in str(e.value)


def test_non_finite_numbers_in_chat_are_format_errors():
    # json.dumps writes inf as Infinity, which is not JSON: a FormatError, not a RuntimeError.
    with pytest.raises(dsinfer.FormatError):
        dsinfer.encode_chat([{"role": "user", "content": "x", "n": float("inf")}])
    with pytest.raises(dsinfer.FormatError):
        _dsinfer.encode_chat('[{"role": "user", "content": "x", "n": 1e400}]', False)


def test_unknown_precision_is_refused(model, tok):
    with pytest.raises(dsinfer.InvalidArgumentError) as e:
        dsinfer.Session(model, tok, capacity=64, precision="zzz")
    assert "zzz" in str(e.value)
    with pytest.raises(dsinfer.InvalidArgumentError):
        model.logits([1, 2], precision="fp16")


def test_wrong_types_in_tokenizer_files_are_format_errors(tmp_path):
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(os.path.join(MODEL, name), tmp_path / name)
    with open(tmp_path / "tokenizer_config.json") as f:
        cfg = json.load(f)
    cfg["add_bos_token"] = "yes"
    with open(tmp_path / "tokenizer_config.json", "w") as f:
        json.dump(cfg, f)
    with pytest.raises(dsinfer.FormatError) as e:
        dsinfer.Tokenizer.load(str(tmp_path))
    assert "add_bos_token" in str(e.value) and "tokenizer_config.json" in str(e.value)
