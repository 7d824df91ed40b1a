"""A lookout worker: register commands, then run() speaks lookout's worker protocol (2).

Standard library only. See docs/worker-protocol.md for the wire format.

    from lookout_worker import command, run

    @command
    def echo(args, ctx):
        with ctx.span("check", size=len(args or {})):
            ctx.emit("echo.checked", keys=len(args or {}))
        return args

    run()

A command gets its JSON arguments and a Context (correlation id, session id, trace context,
and a dict that lives as long as the session does on this worker). What it returns is the
result; an exception it raises becomes an error reply carrying its type, message and full
traceback.

Telemetry: emit() sends an event, span() times a piece of work, LogHandler turns `logging`
records into events. While a request runs they belong to it; what lookout would sample out
anyway is dropped here, before it is serialised. While a command runs, a background thread
writes heartbeats if lookout asked for them, so a frozen worker can be told from a slow one.

The protocol owns the process's real stdout: run() moves it aside, so print() (and anything
else writing to file descriptor 1) goes to stderr, which lookout logs line by line. Nothing
here may write to the protocol channel except through _write(), which holds the one lock
that keeps lines whole.
"""

import contextvars
import json
import logging
import math
import os
import platform
import re
import secrets
import sys
import threading
import time
import traceback

__all__ = ["PROTOCOL", "Context", "LogHandler", "Span", "command", "emit", "run", "span"]

PROTOCOL = 2

# lookout's own event namespaces: a worker's event there is refused by the host.
RESERVED_NAMESPACES = (
    "request.", "worker.", "pool.", "session.", "health.",
    "config.", "plugin.", "trace.", "lookout.", "bus.",
)  # fmt: skip
SEVERITIES = ("debug", "info", "warn", "error")
_KIND = re.compile(r"[a-z0-9_-]+(?:\.[a-z0-9_-]+)*\Z")
_MAX_KIND_LEN = 128

_commands = {}
_sessions = {}
_out = None  # the protocol channel, once run() has set it up

# One lock for the protocol channel and the heartbeat state, so that a heartbeat can never
# follow the reply that ended its request.
_io = threading.Condition()  # over an RLock: the heartbeat thread writes while holding it
_last_line = 0.0  # time.monotonic() of the last line written, or of the request's start
_beating = None  # the Context heartbeats are written for; None: none

_current = None  # the Context of the request being served, for any thread's telemetry
_open_span = contextvars.ContextVar("lookout_worker_open_span", default=None)

# What the host's `configure` said; each is replaced whole, so any thread reads one version.
_heartbeat_ms = None
_sampling = None  # None: decide nothing here, send all and let the host sample
_limits = None  # informational: the host enforces its budget


class Context:
    """What a command knows about the request it serves."""

    def __init__(self, request):
        self.correlation_id = request.get("correlation_id")
        self.session_id = request.get("session_id")
        if self.session_id is None:
            self.session = {}
        else:
            self.session = _sessions.setdefault(self.session_id, {})
        self.trace_id = request.get("trace_id")
        self.span_id = request.get("span_id")  # the host's `execute` span
        self.traceparent = request.get("traceparent")
        self._sample_key = None  # mix(fnv1a(correlation id)), computed when first needed

    def emit(self, kind, /, severity="info", **fields):
        """emit(), for this request."""
        emit(kind, severity=severity, **fields)

    def span(self, name, /, **attributes):
        """A Span of this request: `with ctx.span("load_model", rows=10) as span:`."""
        return Span(self, name, attributes)


def command(fn=None, *, name=None):
    """Registers fn as a command (under its own name, or `name`)."""

    def register(f):
        _commands[name or f.__name__] = f
        return f

    return register(fn) if fn is not None else register


# --- sampling: the host's decision, bit for bit (host/core/src/bus.rs) ---------------------

_U64 = (1 << 64) - 1


def _fnv1a(data):
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & _U64
    return h


def _mix(z):
    """splitmix64's finalizer."""
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _U64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _U64
    return z ^ (z >> 31)


def _threshold(rate):
    # The host computes `(rate * u64::MAX as f64) as u64`: u64::MAX becomes 2^64 as an f64,
    # the product is exact, and the cast truncates (saturating below 0).
    if rate >= 1.0:
        return 1 << 64
    return max(0, int(rate * 18446744073709551616.0))


class _Sampling:
    """The bus's sampling settings, as `configure` pushed them down."""

    def __init__(self, default_rate=1.0, rates=None, keep_errors=True):
        self.default_rate = default_rate
        self.rates = dict(rates or {})
        self.keep_errors = keep_errors

    def rate(self, kind):
        """The rate for kind: exact key, then `a.b.*`, `a.*` (cutting at the last dot), `*`,
        then default_rate."""
        if kind in self.rates:
            return self.rates[kind]
        prefix = kind
        while "." in prefix:
            prefix = prefix.rsplit(".", 1)[0]
            rate = self.rates.get(prefix + ".*")
            if rate is not None:
                return rate
        return self.rates.get("*", self.default_rate)

    def keeps(self, kind, severity, key):
        """Whether the host keeps an event of kind and severity from the request whose
        sampling key (mix(fnv1a(correlation id))) is key."""
        rate = self.rate(kind)
        if rate >= 1.0 or (self.keep_errors and severity == "error"):
            return True
        return key < _threshold(rate)


def _is_rate(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _read_sampling(value):
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ValueError("sampling must be an object")
    default_rate = value.get("default_rate", 1.0)
    rates = value.get("rates") or {}
    keep_errors = value.get("keep_errors", True)
    if not _is_rate(default_rate):
        raise ValueError(f"sampling.default_rate must be a number, not {default_rate!r}")
    if not isinstance(rates, dict) or not all(_is_rate(r) for r in rates.values()):
        raise ValueError(f"sampling.rates must map kind patterns to numbers, not {rates!r}")
    if not isinstance(keep_errors, bool):
        raise ValueError(f"sampling.keep_errors must be true or false, not {keep_errors!r}")
    return _Sampling(default_rate, rates, keep_errors)


def _sampled_out(kind, severity):
    """Whether the host would sample this event out, so it need not be built or sent. Only a
    request's events are sampled; an idle worker's are always sent."""
    ctx, sampling = _current, _sampling
    if ctx is None or sampling is None or not isinstance(ctx.correlation_id, str):
        return False
    if ctx._sample_key is None:
        ctx._sample_key = _mix(_fnv1a(ctx.correlation_id.encode("utf-8")))
    return not sampling.keeps(kind, severity, ctx._sample_key)


def _configure(message):
    """Takes the host's settings. A field left out keeps its value; null turns it off; a bad
    one is reported on stderr and ignored, since sending everything is never wrong."""
    global _heartbeat_ms, _sampling, _limits
    if "heartbeat_ms" in message:
        ms = message["heartbeat_ms"]
        if ms is None or (_is_rate(ms) and ms > 0):
            _heartbeat_ms = ms
        else:
            _warn(f"ignoring heartbeat_ms {ms!r}: a positive number or null expected")
    if "sampling" in message:
        try:
            _sampling = _read_sampling(message["sampling"])
        except ValueError as e:
            _sampling = None
            _warn(f"not sampling locally: {e}")
    if "limits" in message:
        _limits = message["limits"]
    with _io:
        _io.notify_all()  # the heartbeat thread picks up a new interval


# --- the protocol channel ------------------------------------------------------------------


def _warn(text):
    print(f"lookout_worker: {text}", file=sys.stderr, flush=True)


def _finite(value):
    """value with NaN and infinities (which are not JSON) as their repr, like any other value
    JSON cannot carry."""
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, dict):
        return {_finite(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _dumps(message):
    try:
        return json.dumps(message, separators=(",", ":"), default=repr, allow_nan=False)
    except ValueError as e:
        if not str(e).startswith("Out of range float"):
            raise
        return json.dumps(_finite(message), separators=(",", ":"), default=repr, allow_nan=False)


def _write(line, flush=True):
    """Writes one whole line to the protocol channel; any thread may. A request's telemetry
    is not flushed on its own (a write each costs more than the line): the reply, the next
    heartbeat or an idle line takes it along, in order. Only a flush counts as a sign of
    life, so the heartbeat clock keeps running while lines wait."""
    global _last_line
    with _io:
        if _out is None:
            return
        _out.write(line)
        if flush or _current is None:
            _out.flush()
            _last_line = time.monotonic()


def _send(message, flush=True):
    _write(_dumps(message) + "\n", flush)


def _heartbeats():
    """Beats while a request runs and lookout asked for it; any line counts as one."""
    with _io:
        while True:
            ms = _heartbeat_ms
            if _beating is None or ms is None:
                _io.wait()
                continue
            # A little early, so that waking up late does not make the line late.
            wait = _last_line + ms / 1000 * 0.9 - time.monotonic()
            if wait > 0:
                _io.wait(wait)
                continue
            try:
                _write('{"type":"heartbeat"}\n')
            except (OSError, ValueError):
                return  # the channel is gone: lookout has stopped listening


def _stop_heartbeats():
    """Stops heartbeats for the rest of the running request: plays a hung worker (the demo's
    `hang`). A real hang is a worker frozen holding the GIL, or stopped."""
    global _beating
    with _io:
        _beating = None


# --- telemetry -----------------------------------------------------------------------------


def _check_kind(kind):
    if not isinstance(kind, str) or len(kind) > _MAX_KIND_LEN or not _KIND.match(kind):
        raise ValueError(
            f"event kind {kind!r} is not a dotted lowercase name: segments of a-z, 0-9, "
            f"'_' and '-' joined by single dots, at most {_MAX_KIND_LEN} characters "
            "(e.g. 'model.loaded')"
        )
    if kind.startswith(RESERVED_NAMESPACES):
        namespace = kind.split(".", 1)[0]
        raise ValueError(
            f"event kind {kind!r} is in lookout's own namespace '{namespace}.', which lookout "
            f"refuses from workers: use your own (e.g. 'app.{kind}')"
        )


def emit(kind, /, severity="info", **fields):
    """Sends an event: `emit("model.loaded", rows=10)`. While a request runs, the host makes
    it the request's. kind is a dotted lowercase name outside lookout's own namespaces;
    severity is debug, info, warn or error; field values are JSON (others go as their repr).
    Raises ValueError for a bad kind or severity."""
    _check_kind(kind)
    if severity not in SEVERITIES:
        raise ValueError(f"severity {severity!r} is not one of {', '.join(SEVERITIES)}")
    if _out is None or _sampled_out(kind, severity):
        return
    _send({"type": "event", "kind": kind, "severity": severity, "fields": fields}, flush=False)


class Span:
    """A timed piece of a request's work, sent to lookout when it ends. Use it as a context
    manager; the innermost open span of the same request (in this thread) is its parent,
    else the host's `execute` span. An exception inside marks it as an error and goes on."""

    def __init__(self, ctx, name, attributes):
        self.name = str(name)
        self.attributes = dict(attributes)
        self.span_id = secrets.token_hex(8)
        self.parent_span_id = None
        self._ctx = ctx
        self._token = None
        self._start = None

    def set_attribute(self, key, value):
        self.attributes[str(key)] = value

    @property
    def traceparent(self):
        """A W3C traceparent naming this span, for calls made inside it (None outside a
        traced request)."""
        if self._ctx is None or not self._ctx.trace_id:
            return None
        flags = (self._ctx.traceparent or "")[-2:] or "01"
        return f"00-{self._ctx.trace_id}-{self.span_id}-{flags}"

    def __enter__(self):
        parent = _open_span.get()
        if parent is not None and self._ctx is not None and parent._ctx is self._ctx:
            self.parent_span_id = parent.span_id
        self._token = _open_span.set(self)
        self._start = time.time_ns()
        return self

    def __exit__(self, exc_type, exc, tb):
        end = time.time_ns()
        _open_span.reset(self._token)
        # Spans are published as `trace.span` events of the request, and sampled as such.
        severity = "info" if exc_type is None else "error"
        if self._ctx is None or self._ctx is not _current or _sampled_out("trace.span", severity):
            return False  # only a running request's spans are sent
        message = {"type": "span", "name": self.name, "span_id": self.span_id}
        if self.parent_span_id is not None:
            message["parent_span_id"] = self.parent_span_id
        message["start_unix_nano"] = self._start
        message["end_unix_nano"] = end
        message["status"] = "ok"
        if exc_type is not None:
            message["status"] = "error"
            message["error"] = f"{exc_type.__name__}: {exc}" if str(exc) else exc_type.__name__
        message["attributes"] = self.attributes
        _send(message, flush=False)
        return False


def span(name, /, **attributes):
    """A Span of the running request, for code that has no Context at hand:
    `with lookout_worker.span("query", table="invoices"):`. Outside a request it times
    nothing that is sent."""
    return Span(_current, name, attributes)


def _severity(levelno):
    if levelno >= logging.ERROR:
        return "error"
    if levelno >= logging.WARNING:
        return "warn"
    if levelno >= logging.INFO:
        return "info"
    return "debug"


class LogHandler(logging.Handler):
    """Sends `logging` records to lookout as `log` events (fields level, logger, message and
    traceback), the running request's while one runs. Safe from any thread; a record logged
    while one is being sent is dropped, so it never recurses.

        logging.getLogger().addHandler(lookout_worker.LogHandler())
    """

    _sending = threading.local()

    def emit(self, record):
        if getattr(self._sending, "on", False):
            return
        severity = _severity(record.levelno)
        if _out is None or _sampled_out("log", severity):
            return
        self._sending.on = True
        try:
            fields = {
                "level": record.levelname.lower(),
                "logger": record.name,
                "message": record.getMessage(),
            }
            if record.exc_info and record.exc_info[0] is not None:
                fields["traceback"] = "".join(traceback.format_exception(*record.exc_info))
            emit("log", severity=severity, **fields)
        except Exception:  # noqa: BLE001 - logging must not break the code that logs
            self.handleError(record)
        finally:
            self._sending.on = False


# --- serving -------------------------------------------------------------------------------


def _handle(request):
    global _current, _beating, _last_line
    name = request.get("command")
    fn = _commands.get(name)
    if fn is None:
        known = ", ".join(sorted(_commands))
        return {
            "ok": False,
            "error": {
                "kind": "unknown_command",
                "message": f"no command {name!r} (known: {known})",
                "traceback": None,
            },
        }
    ctx = Context(request)
    with _io:
        _current = _beating = ctx
        _last_line = time.monotonic()  # lookout's silence clock starts with the request
        if _heartbeat_ms is not None:
            _io.notify_all()
    try:
        result = fn(request.get("args"), ctx)
        _dumps(result)  # fail here, with a traceback, if it cannot be sent
        return {"ok": True, "result": result}
    except Exception as e:  # noqa: BLE001 - every failure becomes an error reply
        return {
            "ok": False,
            "error": {
                "kind": type(e).__name__,
                "message": str(e),
                "traceback": traceback.format_exc(),
            },
        }
    finally:
        # Before the reply is written: no heartbeat may follow it.
        with _io:
            _current = _beating = None


def run():
    """Announces readiness, then serves requests from stdin until it closes."""
    # The real stdout becomes the protocol channel; fd 1 (print, C libraries) goes to stderr.
    global _out
    _out = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    threading.Thread(target=_heartbeats, name="lookout-heartbeats", daemon=True).start()
    _send(
        {
            "type": "ready",
            "protocol": PROTOCOL,
            "pid": os.getpid(),
            "python": platform.python_version(),
            "commands": sorted(_commands),
        }
    )
    # lookout sends control messages between requests, so reading them here, in order, is
    # reading them as soon as they can matter.
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        try:
            message = json.loads(line)
        except ValueError as e:
            _warn(f"ignoring a line that is not JSON: {e}")
            continue
        if not isinstance(message, dict):
            _warn("ignoring a line that is not a JSON object")
            continue
        kind = message.get("type")
        if kind == "session_end":
            _sessions.pop(message.get("session_id"), None)
        elif kind == "configure":
            _configure(message)
        elif kind is not None:
            _warn(f"ignoring a message of unknown type {kind!r}")
        else:
            reply = _handle(message)
            reply["id"] = message.get("id")
            _send(reply)
