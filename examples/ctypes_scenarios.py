#!/usr/bin/env python3
"""The cross-front-door scenarios from Python through the C ABI with ctypes (no C++ involved): a language with a
C FFI uses libdsinfer_c exactly like this.

    python3 examples/ctypes_scenarios.py path/to/libdsinfer_c.so MODEL_DIR BAD_MODEL_DIR
"""
import ctypes as C
import sys

lib = C.CDLL(sys.argv[1])
MODEL, BAD = sys.argv[2].encode(), sys.argv[3].encode()

OK, E_INVALID_ARG = 0, 1
EVENT_DONE = 0
PRECISION_REFERENCE = 1


class SessionParams(C.Structure):
    _fields_ = [("struct_size", C.c_size_t), ("capacity", C.c_int64), ("precision", C.c_int), ("thinking", C.c_int)]


class GenerateParams(C.Structure):
    _fields_ = [("struct_size", C.c_size_t), ("max_tokens", C.c_int64), ("stop_at_eos", C.c_int)]


class Event(C.Structure):
    _fields_ = [("struct_size", C.c_size_t), ("kind", C.c_int), ("text", C.c_char_p), ("text_len", C.c_size_t),
                ("tool_index", C.c_int32), ("name", C.c_char_p), ("arguments", C.c_char_p), ("offset", C.c_size_t)]


class Candidates(C.Structure):
    _fields_ = [("struct_size", C.c_size_t), ("ids", C.POINTER(C.c_int32)), ("logits", C.POINTER(C.c_float)),
                ("n", C.c_size_t), ("selected", C.c_int64)]


APPLY = C.CFUNCTYPE(C.c_int, C.c_void_p, C.POINTER(Candidates))
ACCEPT = C.CFUNCTYPE(None, C.c_void_p, C.c_int32)
FREE = C.CFUNCTYPE(None, C.c_void_p)


class SamplerIface(C.Structure):
    _fields_ = [("struct_size", C.c_size_t), ("apply", APPLY), ("accept", ACCEPT), ("free", FREE),
                ("name", C.c_char_p)]


P = C.c_void_p
lib.dsinfer_last_error.restype = C.c_char_p
for fn, args in [("dsinfer_model_load", [C.c_char_p, P, C.POINTER(P)]), ("dsinfer_tokenizer_load", [C.c_char_p, C.POINTER(P)]),
                 ("dsinfer_session_create", [P, P, C.POINTER(SessionParams), C.POINTER(P)]),
                 ("dsinfer_session_prefill", [P, C.POINTER(C.c_int32), C.c_size_t]),
                 ("dsinfer_session_generate_start", [P, C.POINTER(GenerateParams)]),
                 ("dsinfer_session_next_event", [P, C.POINTER(Event)]),
                 ("dsinfer_session_generated", [P, C.POINTER(C.c_int32), C.c_size_t, C.POINTER(C.c_size_t)]),
                 ("dsinfer_chat_parse_completion", [C.c_char_p, C.c_int, C.POINTER(C.c_char_p)]),
                 ("dsinfer_sampler_custom_create", [C.POINTER(SamplerIface), P, C.POINTER(P)]),
                 ("dsinfer_session_set_sampler", [P, P])]:
    getattr(lib, fn).argtypes = args
    getattr(lib, fn).restype = C.c_int
for fn in ["dsinfer_session_free", "dsinfer_model_free", "dsinfer_tokenizer_free"]:
    getattr(lib, fn).argtypes = [P]
    getattr(lib, fn).restype = None


def new_session(m, t):
    p = SessionParams(C.sizeof(SessionParams), 256, PRECISION_REFERENCE, 0)
    s = P()
    assert lib.dsinfer_session_create(m, t, C.byref(p), C.byref(s)) == OK, lib.dsinfer_last_error()
    return s


def ids_array(ids):
    return (C.c_int32 * len(ids))(*ids), len(ids)


def run(s, max_tokens):
    g = GenerateParams(C.sizeof(GenerateParams), max_tokens, 0)
    st = lib.dsinfer_session_generate_start(s, C.byref(g))
    if st != OK:
        return st
    while True:
        ev = Event(struct_size=C.sizeof(Event))
        st = lib.dsinfer_session_next_event(s, C.byref(ev))
        if st != OK or ev.kind == EVENT_DONE:
            return st


def generated(name, s):
    buf, n = (C.c_int32 * 64)(), C.c_size_t()
    lib.dsinfer_session_generated(s, buf, 64, C.byref(n))
    print(f"{name}: " + ",".join(str(buf[i]) for i in range(n.value)))


m, t, bad = P(), P(), P()
assert lib.dsinfer_model_load(MODEL, None, C.byref(m)) == OK, lib.dsinfer_last_error()
assert lib.dsinfer_tokenizer_load(MODEL, C.byref(t)) == OK
print(f"load: {OK}")
prompt = [0, 100, 200, 300, 400]

s = new_session(m, t)
lib.dsinfer_session_prefill(s, *ids_array(prompt))
run(s, 16)
generated("default16", s)
lib.dsinfer_session_free(s)

st = lib.dsinfer_model_load(BAD, None, C.byref(bad))
print(f"bad_shard: {st} {'null' if not bad.value else 'model'}")

s = new_session(m, t)
print(f"bad_token: {lib.dsinfer_session_prefill(s, *ids_array([5, 99999]))}")
lib.dsinfer_session_free(s)

out = C.c_char_p()
text = ("hi\n\n<｜DSML｜function_calls>\n<｜DSML｜invoke nam=\"f\">\n</｜DSML｜invoke>\n"
        "</｜DSML｜function_calls><｜end▁of▁sentence｜>").encode()
print(f"malformed_tool: {lib.dsinfer_chat_parse_completion(text, 0, C.byref(out))}")


def force7(ud, c):
    for i in range(c.contents.n):
        if c.contents.ids[i] == 7:
            c.contents.selected = i
    return OK


def fails(ud, c):
    return E_INVALID_ARG


callbacks = []  # keep the ctypes callbacks alive while the samplers exist
for name, fn, label in [("force_token", force7, b"force7"), ("failing_sampler", fails, b"fails")]:
    cb = APPLY(fn)
    callbacks.append(cb)
    iface = SamplerIface(C.sizeof(SamplerIface), cb, ACCEPT(), FREE(), label)
    s = new_session(m, t)
    lib.dsinfer_session_prefill(s, *ids_array(prompt))
    sampler = P()
    lib.dsinfer_sampler_custom_create(C.byref(iface), None, C.byref(sampler))
    lib.dsinfer_session_set_sampler(s, sampler)
    st = run(s, 3)
    if name == "force_token":
        generated(name, s)
    else:
        print(f"{name}: {st}")
    lib.dsinfer_session_free(s)

lib.dsinfer_tokenizer_free(t)
lib.dsinfer_model_free(m)
