"""dsinfer: DeepSeek-V3.2-architecture inference from Python (a thin layer over the C++ core).

    import dsinfer
    model = dsinfer.Model.load("path/to/checkpoint")
    tok = dsinfer.Tokenizer.load("path/to/checkpoint")
    session = dsinfer.Session(model, tok)
    for event in session.chat_stream([{"role": "user", "content": "Hi"}]):
        print(event["text"], end="")
"""
import atexit as _atexit
import enum as _enum
import json as _json
import warnings as _warnings

from . import _dsinfer
from ._dsinfer import __version__
from ._dsinfer import ConstraintSampler, Detokenizer, Model, Tokenizer, parse_completion as _parse_completion
from ._dsinfer import distributed_rank, run_worker

__all__ = ["Model", "Tokenizer", "Session", "Sampler", "Error", "InvalidArgumentError", "IoError", "FormatError",
           "UnsupportedError", "OutOfMemoryError", "DeviceError", "CancelledError", "InternalError", "encode_chat",
           "parse_completion", "Constraint", "ConstraintSampler", "Client", "APIError", "Greedy", "Dist", "Temperature", "TopK", "TopP",
           "MinP", "Typical", "Penalties", "LogitBias", "Detokenizer", "Engine", "LogLevel", "set_log_callback",
           "distributed_rank", "run_worker", "__version__"]


class Error(Exception):
    """Every dsinfer failure; `code` is the same number as the C ABI's dsinfer_status."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code


class InvalidArgumentError(Error):
    """A bad parameter, token id, message, sampler contract (code 1)."""


class IoError(Error):
    """A file could not be opened or read (code 2)."""


class FormatError(Error):
    """Malformed file or text: a truncated shard, bad JSON, a malformed completion (code 3)."""


class UnsupportedError(Error):
    """Valid input this build does not handle, e.g. a V3-family checkpoint's chat format, or a distributed run in a
    build without MPI (code 4)."""


class OutOfMemoryError(Error):
    """An allocation failed, or the KV cache is full (code 5)."""


class DeviceError(Error):
    """A backend or device failure (code 6)."""


class CancelledError(Error):
    """Session.cancel() stopped a generation (code 7)."""


class InternalError(Error):
    """A bug in dsinfer (code 99)."""


_dsinfer._set_error_classes({1: InvalidArgumentError, 2: IoError, 3: FormatError, 4: UnsupportedError,
                             5: OutOfMemoryError, 6: DeviceError, 7: CancelledError, 99: InternalError})


class LogLevel(_enum.IntEnum):
    """Severity of a log message, lowest first (the C API's DSINFER_LOG_*, C++'s dsinfer::LogLevel)."""
    DEBUG = 0
    INFO = 1
    WARN = 2
    ERROR = 3
    OFF = 4


def set_log_callback(callback, level=LogLevel.INFO):
    """Sends the library's log to callback(level: LogLevel, message: str): what a load reads and chooses (backend,
    CPU kernels, sampling defaults), overrides taken from the environment, fallbacks. Messages below `level` are not
    produced at all. None (or level OFF) silences the log again; that is the default. The callback may run on any
    thread that calls into dsinfer, with the GIL held; an exception it raises goes to sys.unraisablehook and does not
    fail the operation. DSINFER_LOG=debug|info|warn|error in the environment overrides `level`, and without a
    callback prints the messages to stderr."""
    if callback is None:
        _dsinfer._set_log_callback(None, int(LogLevel.OFF))
        return
    if not callable(callback):
        raise TypeError("callback must be callable or None")
    _dsinfer._set_log_callback(lambda lv, message: callback(LogLevel(lv), message), int(LogLevel(level)))


# The callback is a Python function: drop it before the interpreter goes away.
_atexit.register(_dsinfer._set_log_callback, None, int(LogLevel.OFF))


class Sampler:
    """Subclass and override apply(c): c.ids and c.logits are NumPy arrays of the candidates for this call; set
    c.selected to an index to choose a token, or reorder the arrays in place and set c.n to keep the first n.
    Arrays kept past the call are copies that no longer affect sampling. Raise to fail the sampling step: the
    exception comes out of generate() as it is, its type preserved. Optionally override accept(token) (what it
    raises propagates as it is too). Forking a session deep-copies its Python samplers."""

    def apply(self, c):
        """Narrow c (reorder c.ids / c.logits in place, set c.n) or choose (set c.selected)."""
        raise NotImplementedError

    def accept(self, token):
        """Sees every token the session commits."""


class _BuiltinSampler:
    """A built-in sampler's parameters; the C++ core builds the sampler itself when a chain is set."""
    __slots__ = ()

    def _spec(self):
        return (self._kind,) + tuple(getattr(self, name) for name in self.__slots__)

    def __eq__(self, other):
        return type(self) is type(other) and self._spec() == other._spec()

    def __hash__(self):
        return hash((type(self).__name__, repr(self._spec())))

    def __repr__(self):
        args = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"{type(self).__name__}({args})"


class Greedy(_BuiltinSampler):
    """Selects the most likely candidate (argmax; ties go to the lowest id)."""
    __slots__ = ()
    _kind = "greedy"


class Dist(_BuiltinSampler):
    """Draws from the softmax of the candidates with a seeded RNG (reproducible: the same seed, the same draws).
    Session.set_sampler starts it over; the chain keeps its position across generations."""
    __slots__ = ("seed",)
    _kind = "dist"

    def __init__(self, seed=0):
        self.seed = int(seed)


class Temperature(_BuiltinSampler):
    """Divides the logits by t (t >= 0; 0 keeps only the best token)."""
    __slots__ = ("t",)
    _kind = "temperature"

    def __init__(self, t):
        self.t = float(t)


class TopK(_BuiltinSampler):
    """Keeps the k most likely candidates (k <= 0: all)."""
    __slots__ = ("k",)
    _kind = "top_k"

    def __init__(self, k):
        self.k = int(k)


class TopP(_BuiltinSampler):
    """Keeps the smallest set of most likely candidates whose probability reaches p (nucleus, p in (0, 1])."""
    __slots__ = ("p",)
    _kind = "top_p"

    def __init__(self, p):
        self.p = float(p)


class MinP(_BuiltinSampler):
    """Keeps candidates at least p times as likely as the best (p in [0, 1])."""
    __slots__ = ("p",)
    _kind = "min_p"

    def __init__(self, p):
        self.p = float(p)


class Typical(_BuiltinSampler):
    """Locally typical sampling: keeps the candidates closest to the distribution's entropy up to mass p."""
    __slots__ = ("p",)
    _kind = "typical"

    def __init__(self, p):
        self.p = float(p)


class Penalties(_BuiltinSampler):
    """Repetition (divides positive logits by `repeat` for tokens in the last `last_n`), frequency and presence
    penalties (OpenAI's: subtract count * frequency + (count > 0) * presence)."""
    __slots__ = ("last_n", "repeat", "frequency", "presence")
    _kind = "penalties"

    def __init__(self, last_n=64, repeat=1.0, frequency=0.0, presence=0.0):
        self.last_n, self.repeat = int(last_n), float(repeat)
        self.frequency, self.presence = float(frequency), float(presence)


class LogitBias(_BuiltinSampler):
    """Adds bias[id] to a token's logit (OpenAI's logit_bias: -100 all but bans a token). bias: {id: finite float}."""
    __slots__ = ("bias",)
    _kind = "logit_bias"

    def __init__(self, bias):
        self.bias = {int(k): float(v) for k, v in dict(bias).items()}


def _sampler_item(s):
    if isinstance(s, Constraint):
        return s._c
    if isinstance(s, _BuiltinSampler):
        return s._spec()
    return s


def _request(messages, tools, response_format=None, tool_choice=None, parallel_tool_calls=None,
             max_reasoning_tokens=None):
    r = {"messages": messages, "tools": tools or []}
    if max_reasoning_tokens is not None:
        r["max_reasoning_tokens"] = max_reasoning_tokens
    if response_format is not None:
        r["response_format"] = response_format
    if tool_choice is not None:
        r["tool_choice"] = tool_choice
    if parallel_tool_calls is not None:
        r["parallel_tool_calls"] = parallel_tool_calls
    return _json.dumps(r, ensure_ascii=False)


def encode_chat(messages, tools=None, thinking=False):
    """The exact DeepSeek-V3.2 prompt text for OpenAI-style messages and tools."""
    return _dsinfer.encode_chat(_request(messages, tools), thinking)


def parse_completion(text, thinking=False):
    """{'role', 'content', 'reasoning_content', 'tool_calls'} from a completion, as DeepSeek's parser does."""
    return _parse_completion(text, thinking)


class Constraint:
    """A compiled output constraint (JSON Schema, json_object, regex or DSML tool calls) for one tokenizer.

    From an OpenAI-style request (its top-level response_format, tools, tool_choice, parallel_tool_calls):
        Constraint(tok, {"response_format": {...}, "tools": [...], "tool_choice": "required"}, thinking=True)
    or directly: Constraint.json_schema(tok, schema), Constraint.json_object(tok), Constraint.regex(tok, pattern),
    Constraint.tool_calls(tok, tools, name=None). Pass it to Session.generate(constraint=...) (the session's
    thinking mode then decides where the answer starts), or put it first in a sampler chain. Bad constraints raise
    InvalidArgumentError / UnsupportedError here, before anything is generated."""

    def __init__(self, tokenizer, request, thinking=False, _impl=None):
        if _impl is not None:
            self._c = _impl
            return
        text = request if isinstance(request, str) else _json.dumps(request, ensure_ascii=False)
        self._c = _dsinfer.Constraint._from_request_json(tokenizer, text, thinking)

    @classmethod
    def _spec(cls, tokenizer, kind, schema="", regex="", tools="", name="", parallel=True, thinking=False,
              max_reasoning_tokens=-1):
        return cls(None, None, _impl=_dsinfer.Constraint._from_spec(
            tokenizer, kind, schema, regex, tools, name, parallel, thinking, max_reasoning_tokens))

    @classmethod
    def json_schema(cls, tokenizer, schema, thinking=False, max_reasoning_tokens=-1):
        """Output that is JSON valid against `schema` (a dict or JSON text; the keywords that can be enforced
        exactly, docs/structured-output.md). UnsupportedError names a keyword that cannot."""
        text = schema if isinstance(schema, str) else _json.dumps(schema, ensure_ascii=False)
        return cls._spec(tokenizer, "json_schema", schema=text, thinking=thinking,
                         max_reasoning_tokens=max_reasoning_tokens)

    @classmethod
    def json_object(cls, tokenizer, thinking=False, max_reasoning_tokens=-1):
        """Output that is one JSON object (OpenAI's response_format json_object)."""
        return cls._spec(tokenizer, "json_object", thinking=thinking, max_reasoning_tokens=max_reasoning_tokens)

    @classmethod
    def regex(cls, tokenizer, pattern, thinking=False, max_reasoning_tokens=-1):
        """Output that matches the regular expression `pattern` whole."""
        return cls._spec(tokenizer, "regex", regex=pattern, thinking=thinking,
                         max_reasoning_tokens=max_reasoning_tokens)

    @classmethod
    def tool_calls(cls, tokenizer, tools, name=None, parallel=True, thinking=False, max_reasoning_tokens=-1):
        """Output that is DSML tool calls of `tools` (OpenAI tool definitions), only `name` when given, one call
        unless parallel, with arguments valid against each tool's schema."""
        text = tools if isinstance(tools, str) else _json.dumps(tools, ensure_ascii=False)
        return cls._spec(tokenizer, "tool_calls", tools=text, name=name or "", parallel=parallel, thinking=thinking,
                         max_reasoning_tokens=max_reasoning_tokens)

    kind = property(lambda self: self._c.kind,
                    doc="What is enforced: 'json_schema', 'json_object', 'regex', 'tool_calls' or 'none'.")
    enforces = property(lambda self: self._c.enforces, doc="Whether the constraint restricts the output at all.")
    compile_ms = property(lambda self: self._c.compile_ms, doc="Milliseconds the compilation took.")

    def sampler(self):
        """A stand-alone matcher for your own decoding loop: allowed_tokens() (a NumPy array of ids),
        accept(token), reset(), complete, terminated, in_reasoning."""
        return self._c.sampler()


class Session:
    """One conversation: its KV cache, sampler and generation. Use from one thread at a time (a call while another
    thread is inside one raises InvalidArgumentError); cancel() from any.
    Keeps the model and tokenizer alive."""

    def __init__(self, model, tokenizer, capacity=4096, precision="fp8", thinking=False, seed=0, speculative=0,
                 speculative_adaptive=True, _impl=None):
        """Samples with the checkpoint's generation_config.json (model.info["generation"]; greedy without one),
        its draw seeded by `seed`, until set_sampler() says otherwise ([Greedy()] for argmax decoding). The chain
        keeps its state across generations; set_sampler() with new samplers starts it over.
        speculative=k (1..16) decodes with up to k tokens drafted per step by the checkpoint's MTP module
        (model.info["has_mtp"]; UnsupportedError without it): the output is exactly the same, only faster when
        drafts are accepted; speculative_adaptive backs off while they are not, and stops for good where this
        machine's timings show drafts could not gain 10 %. See speculative_stats."""
        self._s = _impl if _impl is not None else _dsinfer.Session(model, tokenizer, capacity, precision, thinking,
                                                                    seed, speculative, speculative_adaptive)

    def set_sampler(self, samplers):
        """A chain: built-ins (Greedy(), Dist(seed), TopK(k), ...), dsinfer.Sampler subclasses and Constraint
        objects (put a constraint first; it follows its own thinking setting), in order."""
        self._s.set_sampler([_sampler_item(s) for s in samplers])

    def prefill(self, ids):
        """Appends token ids to the cache and evaluates them (a prompt rendered by the caller)."""
        self._s.prefill(list(ids))

    def set_messages(self, messages, tools=None, response_format=None):
        """Renders the conversation and evaluates only the part the cache does not hold yet. A response_format
        (OpenAI's: json_object, json_schema) is rendered on the system message, as DeepSeek's encoder does."""
        self._s._set_messages_json(_request(messages, tools, response_format))

    def generate(self, max_tokens=256, stop=None, stop_at_eos=True, constraint=None):
        """A generator of events: dicts with kind ('content', 'reasoning', 'tool_call_begin', 'tool_args',
        'tool_call_end', 'error'), text, tool_index, name, arguments, offset. With a Constraint the answer (after
        the reasoning in thinking mode) follows it."""
        self._s._start(max_tokens, list(stop or []), stop_at_eos, constraint._c if constraint is not None else None)
        while True:
            ev = self._s._next()
            if ev is None:
                return
            yield ev

    def chat_stream(self, messages, tools=None, response_format=None, tool_choice=None, parallel_tool_calls=None,
                    max_reasoning_tokens=None, **kw):
        """One turn, streamed. response_format and tool_choice work as in OpenAI's API: the format is rendered into
        the prompt and enforced when it is json_object, json_schema with "strict": true, or regex; tool_choice
        "required" or {"type": "function", "function": {"name": ...}} makes the answer a tool call that parses and
        whose arguments follow the tool's schema; with tools and tool_choice "auto" (the default) the model answers
        in text or calls a tool, and a call it makes parses and follows the schemas too (where a schema cannot be
        enforced exactly, a UserWarning says so and the call is not held to it). In thinking mode the reasoning
        stays free; max_reasoning_tokens caps it (after that many reasoning tokens only </think> may follow), with
        or without a format, as the server and the CLI do."""
        request = _request(messages, tools, response_format, tool_choice, parallel_tool_calls, max_reasoning_tokens)
        if kw.get("constraint") is None and (response_format is not None or tool_choice is not None or tools or
                                             max_reasoning_tokens is not None):
            c, tools_not_enforced = self._s._constraint(request)
            if tools_not_enforced:
                _warnings.warn(f"the tool calls are not enforced: {tools_not_enforced}", stacklevel=2)
            if c is not None:
                kw["constraint"] = Constraint(None, None, _impl=c)
        self._s._set_messages_json(request)
        yield from self.generate(**kw)

    def chat(self, messages, tools=None, response_format=None, tool_choice=None, parallel_tool_calls=None,
             max_reasoning_tokens=None, **kw):
        """Runs one turn; returns the reply as an OpenAI-style message (content, reasoning_content, tool_calls)."""
        for _ in self.chat_stream(messages, tools, response_format, tool_choice, parallel_tool_calls,
                                  max_reasoning_tokens, **kw):
            pass
        return self.reply

    def cancel(self):
        """From any thread: the running generate() raises CancelledError."""
        self._s.cancel()

    def fork(self):
        """A new session sharing this one's cache blocks (copy on write)."""
        return Session(None, None, _impl=self._s.fork())

    def save(self, path):
        """Writes the session's cache and tokens to a file (a versioned format tied to this model)."""
        self._s.save(path)

    def restore(self, path):
        """Reads a file written by save() (InvalidArgumentError for another model's, FormatError for garbage)."""
        self._s.restore(path)

    generated = property(lambda self: self._s.generated, doc="The ids of the last generation.")
    generated_text = property(lambda self: self._s.generated_text, doc="The text of the last generation.")
    reply = property(lambda self: self._s.reply,
                     doc="The last generation parsed: {'role', 'content', 'reasoning_content', 'tool_calls'}.")
    tokens = property(lambda self: self._s.tokens, doc="Every token in the cache, in order.")
    last_logits = property(lambda self: self._s.last_logits, doc="The logits after the last token (NumPy float32).")
    finish_reason = property(lambda self: self._s.finish_reason,
                             doc="Why the last generation ended: 'eos', 'stop' (a stop string), 'length' "
                                 "(max_tokens), or None (none yet, cancelled or failed).")
    last_prefill_tokens = property(lambda self: self._s.last_prefill_tokens,
                                   doc="How many tokens the last prefill / set_messages evaluated (the rest of the "
                                       "prompt came from the cache).")
    speculative_stats = property(lambda self: self._s.speculative_stats,
                                 doc="Speculative decoding so far: {'steps', 'drafted', 'accepted', 'plain_steps', "
                                     "'acceptance', 'drafted_at', 'accepted_at'} (by draft position).")


class Engine:
    """Batched generation: every session advances in one shared forward per step, each getting exactly the tokens
    it would get alone. The sessions must belong to this model, hold a prompt, and share one precision."""

    def __init__(self, model):
        self.model = model

    def generate(self, sessions, max_tokens=256, stop=None, stop_at_eos=True, on_event=None):
        """Runs until every session has finished. on_event(i, event) receives session i's events (the dicts of
        Session.generate) on this thread; what it raises comes out as it is. Errors end the whole call; every
        session stays usable. Afterwards each session's generated, reply and finish_reason tell its result."""
        _dsinfer._engine_generate(self.model, [s._s for s in sessions], int(max_tokens), list(stop or []),
                                  bool(stop_at_eos), on_event)


class APIError(Exception):
    """A request dsinfer.Client refused, with the HTTP status and OpenAI error object the server would send."""

    def __init__(self, status_code, body):
        self.status_code = int(status_code)
        self.body = _json.loads(body)
        err = self.body.get("error", {})
        self.message, self.type, self.param, self.code = (err.get("message"), err.get("type"), err.get("param"),
                                                          err.get("code"))
        super().__init__(f"Error code: {self.status_code} - {self.body}")


_dsinfer._set_api_error_class(APIError)


class _Endpoint:
    def __init__(self, client, kind):
        self._client, self._kind = client, kind

    def create(self, **request):
        """The OpenAI request fields as keyword arguments (messages/prompt, tools, tool_choice, temperature,
        top_p, max_tokens, stop, seed, n, logprobs, top_logprobs, stream, stream_options, response_format,
        chat_template_kwargs, ...). response_format (json_object, json_schema with strict, regex) and tool_choice
        (required, a named function) are enforced as the server enforces them (docs/structured-output.md). Returns
        the reply as a dict, or with stream=True an iterator of chunk dicts, exactly what `dsinfer serve` sends.
        Raises APIError for what the server would refuse (a schema that cannot be enforced: 400 naming the field)."""
        c = self._client
        lc = _dsinfer._LocalCompletion(c.model, c.tokenizer, self._kind, _json.dumps(request, ensure_ascii=False),
                                       c.model_id, c.context, c.generation_config_dir)
        if lc.stream:
            return self._chunks(lc)
        more = True
        while more:
            _, more = lc.next()
        return _json.loads(lc.reply())

    @staticmethod
    def _chunks(lc):
        more = True
        while more:
            chunks, more = lc.next()
            for c in chunks:
                yield _json.loads(c)


class Client:
    """OpenAI's client shape without HTTP: client.chat.completions.create(...) and client.completions.create(...)
    run on this process's model with the same fields, replies and stream chunks as `dsinfer serve`.

        client = dsinfer.Client.load("path/to/checkpoint")
        reply = client.chat.completions.create(messages=[{"role": "user", "content": "Hi"}], max_tokens=64)
        print(reply["choices"][0]["message"]["content"], reply["usage"])

    Each call runs on its own engine: one call at a time per client is the expected use (the model serializes
    evaluations anyway)."""

    def __init__(self, model, tokenizer, model_id="dsinfer", context=4096, generation_config_dir=None):
        self.model, self.tokenizer = model, tokenizer
        self.model_id, self.context = model_id, int(context)
        # Sampling defaults come from generation_config.json in this folder (None: the model's own).
        self.generation_config_dir = generation_config_dir
        self.chat = type("Chat", (), {})()
        self.chat.completions = _Endpoint(self, "chat")
        self.completions = _Endpoint(self, "completions")

    @classmethod
    def load(cls, path, model_id=None, context=4096, **load_kw):
        """Loads the checkpoint folder (model, tokenizer, generation_config.json)."""
        return cls(Model.load(path, **load_kw), Tokenizer.load(path), model_id or path, context, path)
