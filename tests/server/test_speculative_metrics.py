"""`dsinfer serve --speculative mtp:2` (issue 18): replies are what the server gives without speculation, and
/metrics counts the drafted, accepted and verified tokens (in total and by draft position)."""
from pathlib import Path

import pytest

from conftest import Server, model_path


def mtp_model():
    p = Path(model_path()).parent / "v32-tiny-mtp"
    if not (p / "config.json").exists():
        pytest.skip(f"MTP test model missing: {p}")
    return str(p)


def greedy_answers(server):
    client = server.client()
    return [client.completions.create(model="m", prompt=prompt, max_tokens=40, temperature=0).choices[0].text
            for prompt in ("one two three", "the sea is")]


def test_speculative_server_counts_drafts():
    plain = Server("--max-sessions", "2", "--ctx", "256", model=mtp_model())
    try:
        want = greedy_answers(plain)
        assert plain.metrics()["dsinfer_spec_decode_draft_tokens_total"] == 0
    finally:
        plain.stop()
    spec = Server("--max-sessions", "2", "--ctx", "256", "--speculative", "mtp:2", model=mtp_model())
    try:
        got = greedy_answers(spec)
        m = spec.metrics()
    finally:
        spec.stop()
    assert got == want
    drafted, accepted = m["dsinfer_spec_decode_draft_tokens_total"], m["dsinfer_spec_decode_accepted_tokens_total"]
    assert m["dsinfer_spec_decode_verifications_total"] > 0
    assert drafted > 0 and 0 <= accepted <= drafted
    by_position = lambda name: sum(v for k, v in m.items() if k.startswith(name + "{"))
    assert by_position("dsinfer_spec_decode_draft_tokens_by_position_total") == drafted
    assert by_position("dsinfer_spec_decode_accepted_tokens_by_position_total") == accepted
