#!/usr/bin/env python3
"""Publishes a steady stream of realistic events to a lookout host, some with secrets in
them, so the dashboard, the live stream and /metrics have something to show — and so you
can watch the sanitizer work.

usage: python3 examples/demo_publisher.py [http://127.0.0.1:8787] [--rate EVENTS_PER_SECOND]
Standard library only.
"""

import argparse
import json
import random
import sys
import time
import urllib.error
import urllib.request
import uuid

COMMANDS = ["resize_image", "score_model", "render_pdf", "send_email", "charge_card"]
USERS = ["amy", "bob", "chen", "dana", "eli"]

# Things that leak into real logs, which the sanitizer must catch.
LEAKY = [
    {"password": "hunter2"},
    {"api_key": "sk_live_4eC39HqLyjWDarjtT1zdp7dc"},
    {"message": "retrying upload with AKIAIOSFODNN7EXAMPLE"},
    {"message": "header Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbXkifQ.4pcPyMD09olPSyXnrXCjTwXyr4BsezdI1AVTmud2fU4"},
    {"message": "charged card 4111 1111 1111 1111 for 12.50 EUR"},
    {"dsn": "postgres://orders:s3cr3tpw@db.internal:5432/orders"},
    {"message": "callback GET /oauth?code=x1&access_token=ya29.a0AfH6SMBx&state=9"},
]

TRACEBACK = """Traceback (most recent call last):
  File "/srv/worker/commands.py", line 42, in render_pdf
    doc = template.render(**args)
  File "/srv/worker/templates.py", line 17, in render
    raise KeyError(name)
KeyError: 'customer_name'"""


def request_events():
    cid = uuid.uuid4().hex[:16]
    command = random.choice(COMMANDS)
    worker = f"w{random.randint(1, 4)}"
    ok = random.random() > 0.08
    duration = round(random.lognormvariate(3.0, 0.7), 2)
    started = {"kind": "request.started", "correlation_id": cid,
               "fields": {"pool": "default", "command": command, "worker": worker, "user": random.choice(USERS)}}
    done = {"kind": "request.completed", "correlation_id": cid, "severity": "info" if ok else "error",
            "fields": {"pool": "default", "command": command, "worker": worker, "duration_ms": duration,
                       "success": ok, "queue_wait_ms": round(random.random() * 3, 3)}}
    if not ok:
        done["fields"].update({"error_kind": "KeyError", "error_message": "'customer_name'", "traceback": TRACEBACK})
    if random.random() < 0.25:
        started["fields"].update(random.choice(LEAKY))
    return [started, done]


def occasional_events():
    r = random.random()
    if r < 0.02:
        return [{"kind": "worker.crashed", "severity": "error",
                 "fields": {"pool": "default", "worker": f"w{random.randint(1, 4)}", "exit_code": -9,
                            "signal": "SIGKILL", "uptime_s": random.randint(60, 7200), "requests_served": random.randint(10, 9000),
                            "last_stderr": "MemoryError while rendering page 3"}}]
    if r < 0.04:
        return [{"kind": "session.created", "fields": {"session_id": uuid.uuid4().hex[:12], "ttl_s": 900,
                                                     "worker": "w2", "metadata": "user=chen token=tok_7d8e9f0a1b2c"}}]
    if r < 0.05:
        return [{"kind": "pool.saturated", "severity": "warn",
                 "fields": {"pool": "default", "available": 0, "busy": 4, "queue_length": random.randint(5, 40)}}]
    return []


def post(base, events):
    body = "\n".join(json.dumps(e) for e in events).encode()
    req = urllib.request.Request(base + "/api/v1/events", data=body, method="POST",
                                 headers={"content-type": "application/x-ndjson"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        return json.load(resp)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base", nargs="?", default="http://127.0.0.1:8787")
    parser.add_argument("--rate", type=float, default=40.0, help="events per second (approximate)")
    args = parser.parse_args()
    base = args.base.rstrip("/")
    interval = 0.25
    sent = 0
    last_report = time.monotonic()
    try:
        while True:
            events = []
            while len(events) < max(1, int(args.rate * interval)):
                events += request_events() + occasional_events()
            try:
                post(base, events)
                sent += len(events)
            except (urllib.error.URLError, ConnectionError) as e:
                print(f"demo publisher: {base} unreachable ({e}); retrying", file=sys.stderr)
            if time.monotonic() - last_report > 10:
                print(f"demo publisher: {sent} events sent", file=sys.stderr)
                last_report = time.monotonic()
            time.sleep(interval)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
