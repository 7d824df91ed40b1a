"""The demo app lookout's demo and tests run: python3 examples/workers/app.py"""

import logging
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import lookout_worker  # noqa: E402
from lookout_worker import command, run  # noqa: E402

# Every `logging` record reaches lookout as a `log` event; the demo's own at info and up.
logging.getLogger().addHandler(lookout_worker.LogHandler())
_log = logging.getLogger("demo")
_log.setLevel(logging.INFO)

_hoard = []


@command
def echo(args, ctx):
    """Returns its arguments."""
    return args


@command
def sleep(args, ctx):
    """Sleeps `seconds` (default 0.1), then says how long."""
    seconds = float((args or {}).get("seconds", 0.1))
    time.sleep(seconds)
    return {"slept": seconds}


@command
def fail(args, ctx):
    """Raises, so a traceback comes back."""
    message = (args or {}).get("message", "failing on purpose")
    raise ValueError(message)


@command
def crash(args, ctx):
    """Exits at once, without a reply (like a segfault would)."""
    print("crashing on purpose", file=sys.stderr, flush=True)
    os._exit(int((args or {}).get("code", 3)))


@command
def leak(args, ctx):
    """Grows this worker's memory by `mib` MiB (default 16) and keeps it."""
    mib = int((args or {}).get("mib", 16))
    _hoard.append(bytearray(mib << 20))
    return {"held_mib": sum(len(b) for b in _hoard) >> 20}


@command
def say(args, ctx):
    """Writes `message` to stderr (lookout logs it, sanitized) and returns it."""
    message = (args or {}).get("message", "")
    print(message, file=sys.stderr, flush=True)
    return message


@command
def pid(args, ctx):
    """This worker's process id (session affinity is visible through it)."""
    return os.getpid()


@command
def env(args, ctx):
    """The value of the environment variable `name` in this worker (None when unset), and
    the worker's pid: a configuration change to `env` is visible through it."""
    return {"value": os.environ.get((args or {}).get("name", "")), "pid": os.getpid()}


@command
def count(args, ctx):
    """Counts calls within the session (state kept on the worker the session is pinned to)."""
    ctx.session["n"] = ctx.session.get("n", 0) + 1
    return {"n": ctx.session["n"], "pid": os.getpid()}


@command
def garbage(args, ctx):
    """Breaks the protocol: writes a line that is not a reply on the protocol channel."""
    lookout_worker._write("this is not json\n")
    time.sleep(5)
    return None


@command
def traced(args, ctx):
    """Emits 2 events and opens the spans `load_model` and, inside it, `query` (attributes
    `rows`, and `db_password` = `secret`, which lookout must sanitize); returns `rows`."""
    rows = int((args or {}).get("rows", 10))
    secret = (args or {}).get("secret", "")
    ctx.emit("demo.traced.started", rows=rows)
    with ctx.span("load_model", rows=rows) as model:
        # Library code without the Context at hand: the module-level span finds the request.
        with lookout_worker.span("query", table="invoices", db_password=secret) as query:
            query.set_attribute("rows", rows)
        model.set_attribute("loaded", True)
    ctx.emit("demo.traced.finished", rows=rows, spans=2)
    return {"rows": rows, "trace_id": ctx.trace_id}


@command
def chatty(args, ctx):
    """Emits `n` events (default 1000) `demo.chatty` as fast as it can: more than lookout's
    per-worker telemetry budget lets through."""
    n = int((args or {}).get("n", 1000))
    for i in range(n):
        lookout_worker.emit("demo.chatty", i=i)
    return {"emitted": n}


@command
def hang(args, ctx):
    """Plays a hung worker: stops its heartbeats, then sleeps `secs` (default 3600)."""
    lookout_worker._stop_heartbeats()
    secs = float((args or {}).get("secs", 3600))
    time.sleep(secs)
    return {"slept": secs}


@command
def telemetry(args, ctx):
    """Emits `events` events (default 10) and `spans` spans side by side (default 3), then
    echoes `args`: the request the worker-telemetry bench measures."""
    args = args or {}
    for i in range(int(args.get("events", 10))):
        ctx.emit("demo.step", i=i)
    for i in range(int(args.get("spans", 3))):
        with ctx.span("step", i=i):
            pass
    return args


@command
def logs(args, ctx):
    """Logs through `logging` at info and error, and an exception with its traceback: three
    `log` events of the request."""
    _log.info("serving request %s", ctx.correlation_id)
    _log.error("something went wrong on purpose")
    try:
        1 / 0
    except ZeroDivisionError:
        _log.exception("caught an exception on purpose")
    return {"logged": 3}


if __name__ == "__main__":
    # Slow start on request (for tests and demos of readiness while a worker is replaced).
    time.sleep(float(os.environ.get("DEMO_STARTUP_DELAY_S", "0")))
    run()
