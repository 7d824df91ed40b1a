"""A lookout worker: register commands, then run() speaks lookout's worker protocol.

Standard library only. See docs/worker-protocol.md for the wire format.

    from lookout_worker import command, run

    @command
    def echo(args, ctx):
        return args

    run()

A command gets its JSON arguments and a Context (correlation id, session id, and a dict
that lives as long as the session does on this worker). What it returns is the result; an
exception it raises becomes an error reply carrying its type, message and full traceback.

The protocol owns the process's real stdout: run() moves it aside, so print() (and anything
else writing to file descriptor 1) goes to stderr, which lookout logs line by line.
"""

import json
import os
import platform
import sys
import traceback

PROTOCOL = 1

_commands = {}
_sessions = {}
_out = None  # the protocol channel, once run() has set it up


class Context:
    """What a command knows about the request it serves."""

    def __init__(self, request):
        self.correlation_id = request.get("correlation_id")
        self.session_id = request.get("session_id")
        if self.session_id is None:
            self.session = {}
        else:
            self.session = _sessions.setdefault(self.session_id, {})


def command(fn=None, *, name=None):
    """Registers fn as a command (under its own name, or `name`)."""

    def register(f):
        _commands[name or f.__name__] = f
        return f

    return register(fn) if fn is not None else register


def _reply(out, message):
    out.write(json.dumps(message, separators=(",", ":"), default=repr) + "\n")
    out.flush()


def _handle(request):
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
    try:
        result = fn(request.get("args"), Context(request))
        json.dumps(result, default=repr)  # fail here, with a traceback, if it cannot be sent
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


def run():
    """Announces readiness, then serves requests from stdin until it closes."""
    # The real stdout becomes the protocol channel; fd 1 (print, C libraries) goes to stderr.
    global _out
    out = _out = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    _reply(
        out,
        {
            "type": "ready",
            "protocol": PROTOCOL,
            "pid": os.getpid(),
            "python": platform.python_version(),
            "commands": sorted(_commands),
        },
    )
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        try:
            message = json.loads(line)
        except ValueError as e:
            print(f"lookout_worker: ignoring a line that is not JSON: {e}", file=sys.stderr)
            continue
        if message.get("type") == "session_end":
            _sessions.pop(message.get("session_id"), None)
            continue
        reply = _handle(message)
        reply["id"] = message.get("id")
        _reply(out, reply)
