"""`mpirun -np 2 dsinfer serve` (issue 22, docs/distributed.md): rank 0 serves HTTP, rank 1 holds half of the routed
experts; the official openai client gets the same greedy answers and log-probabilities as from a one-process server.
Runs where the dsinfer program was built with MPI (DSINFER_TEST_MPI=1, set by scripts/test.sh) and mpirun exists."""
import os
import shutil

import pytest

from conftest import Server

pytestmark = pytest.mark.skipif(os.environ.get("DSINFER_TEST_MPI") != "1" or not shutil.which("mpirun"),
                                reason="needs a dsinfer built with DSINFER_MPI and mpirun")

MESSAGES = [{"role": "user", "content": "Name three rivers and say which is longest."}]


def answers(server):
    client = server.client()
    chat = client.chat.completions.create(model="m", messages=MESSAGES, max_tokens=16, temperature=0, logprobs=True,
                                          top_logprobs=2)
    text = client.completions.create(model="m", prompt="one two three", max_tokens=8, temperature=0)
    streamed = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
        model="m", messages=MESSAGES, max_tokens=16, temperature=0, stream=True) if c.choices)
    return (chat.choices[0].message.content, [(t.token, t.logprob) for t in chat.choices[0].logprobs.content],
            text.choices[0].text, streamed)


def test_distributed_server_answers_as_one_process():
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    os.environ.update(env)  # mpirun reads them from the environment it inherits
    one = Server("--max-sessions", "2", "--ctx", "512", threads=1)
    try:
        expected = answers(one)
    finally:
        one.stop()
    two = Server("--max-sessions", "2", "--ctx", "512", threads=1,
                 launcher=["mpirun", "-np", "2", "--oversubscribe"])
    try:
        got = answers(two)
        assert two.metrics()  # the endpoints of rank 0 work as usual
    finally:
        two.stop()
    assert got == expected
    assert expected[0] and expected[2]  # something was generated
