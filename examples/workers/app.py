"""The demo app lookout's demo and tests run: python3 examples/workers/app.py"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import lookout_worker  # noqa: E402
from lookout_worker import command, run  # noqa: E402

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
    lookout_worker._out.write("this is not json\n")
    lookout_worker._out.flush()
    time.sleep(5)
    return None


if __name__ == "__main__":
    # Slow start on request (for tests and demos of readiness while a worker is replaced).
    time.sleep(float(os.environ.get("DEMO_STARTUP_DELAY_S", "0")))
    run()
