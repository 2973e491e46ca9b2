"""The Python API misused (issue 20): sampler arrays kept past the call, one Session from two threads, exceptions
raised inside samplers. Each must raise a clear exception or keep working, never corrupt memory or state. Needs the
package installed and DSINFER_TEST_MODEL, as test_dsinfer.py."""
import os
import threading

import numpy as np
import pytest

import dsinfer

MODEL = os.environ.get("DSINFER_TEST_MODEL", "build/models/v32-tiny")


@pytest.fixture(scope="module")
def model():
    return dsinfer.Model.load(MODEL, n_threads=1)


@pytest.fixture(scope="module")
def tok():
    return dsinfer.Tokenizer.load(MODEL)


def session(model, tok):
    s = dsinfer.Session(model, tok, capacity=128, precision="reference")
    s.prefill([0, 1000, 2000])
    return s


def test_sampler_arrays_kept_past_the_call_stay_the_callers(model, tok):
    kept = []

    class Keeper(dsinfer.Sampler):
        def apply(self, c):
            # Arrays kept from earlier steps still hold what they held (they used to be views of candidates that
            # later steps overwrote or freed); writing to them changes nothing.
            for ids, logits, ids_then, logits_then in kept:
                assert np.array_equal(ids, ids_then) and np.array_equal(logits, logits_then)
                logits[:] = 1e9
                ids[:] = -1
                logits_then[:] = 1e9
                ids_then[:] = -1
            kept.append((c.ids, c.logits, c.ids.copy(), c.logits.copy()))
            c.selected = int(np.argmax(c.logits))

    s = session(model, tok)
    s.set_sampler([Keeper()])
    list(s.generate(max_tokens=5, stop_at_eos=False))
    greedy = session(model, tok)
    greedy.set_sampler([dsinfer.Greedy()])  # a session's default samples as generation_config.json says
    list(greedy.generate(max_tokens=5, stop_at_eos=False))
    assert s.generated == greedy.generated
    for ids, logits, _, _ in kept:  # still readable after the generation and the session are gone
        assert ids.shape == logits.shape
    del s
    assert all(float(lg[0]) == 1e9 for _, lg, _, _ in kept[:-1])  # the last step's arrays were not written to


def test_one_session_from_two_threads_raises_instead_of_racing(model, tok):
    inside, release = threading.Event(), threading.Event()

    class Blocking(dsinfer.Sampler):
        def apply(self, c):
            inside.set()
            assert release.wait(30)
            c.selected = 0

    s = session(model, tok)
    s.set_sampler([Blocking()])
    errors = []

    def run():
        try:
            list(s.generate(max_tokens=1, stop_at_eos=False))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    t = threading.Thread(target=run)
    t.start()
    try:
        assert inside.wait(30)
        for call in (lambda: s.prefill([5]), lambda: s.tokens, lambda: s.last_logits, lambda: s.restore("/nonexistent"),
                     lambda: s.set_messages([{"role": "user", "content": "hi"}]), lambda: s.fork()):
            with pytest.raises(dsinfer.InvalidArgumentError, match="another thread"):
                call()
    finally:
        release.set()
        t.join(30)
    assert not errors
    # Afterwards the session is usable again from either thread.
    s.set_sampler([dsinfer.Greedy()])
    s.prefill([7])
    list(s.generate(max_tokens=2, stop_at_eos=False))
    assert len(s.generated) == 2


def test_a_sampler_may_read_its_session_but_not_change_it_from_inside(model, tok):
    s = session(model, tok)
    seen = []

    class Reader(dsinfer.Sampler):
        def apply(self, c):
            seen.append(len(s.tokens))
            with pytest.raises(dsinfer.InvalidArgumentError, match="inside"):
                s.prefill([1])
            c.selected = 0

    s.set_sampler([Reader()])
    list(s.generate(max_tokens=2, stop_at_eos=False))
    assert seen == [3, 4]


class Boom(Exception):
    pass


def test_exceptions_in_accept_keep_their_type_and_the_session_goes_on(model, tok):
    class BadAccept(dsinfer.Sampler):
        def apply(self, c):
            c.selected = 0

        def accept(self, token):
            raise Boom("accept failed")

    s = session(model, tok)
    s.set_sampler([BadAccept()])
    with pytest.raises(Boom, match="accept failed"):
        list(s.generate(max_tokens=3, stop_at_eos=False))
    s.set_sampler([dsinfer.Greedy()])
    list(s.generate(max_tokens=2, stop_at_eos=False))
    assert len(s.generated) == 2


@pytest.mark.parametrize("exc", [KeyboardInterrupt, SystemExit])
def test_keyboard_interrupt_and_system_exit_in_apply_propagate(model, tok, exc):
    class Interrupted(dsinfer.Sampler):
        def apply(self, c):
            raise exc()

    s = session(model, tok)
    s.set_sampler([Interrupted()])
    with pytest.raises(exc):
        list(s.generate(max_tokens=3, stop_at_eos=False))
    s.set_sampler([dsinfer.Greedy()])
    list(s.generate(max_tokens=1, stop_at_eos=False))
    assert len(s.generated) == 1


def test_an_exception_in_apply_keeps_its_type_and_the_session_goes_on(model, tok):
    class Fails(dsinfer.Sampler):
        def apply(self, c):
            raise Boom("no token for you")

    s = session(model, tok)
    s.set_sampler([Fails()])
    with pytest.raises(Boom, match="no token for you"):
        list(s.generate(max_tokens=1, stop_at_eos=False))
    s.set_sampler([dsinfer.Greedy()])
    list(s.generate(max_tokens=1, stop_at_eos=False))
    assert len(s.generated) == 1


@pytest.mark.parametrize("n_threads", [-1, 1025, 10**6])
def test_n_threads_out_of_range_is_refused(n_threads):
    with pytest.raises((dsinfer.InvalidArgumentError, TypeError, OverflowError)):
        dsinfer.Model.load(MODEL, n_threads=n_threads)
