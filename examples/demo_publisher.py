#!/usr/bin/env python3
"""Drives a lookout host the way an application would: requests on the demo pool's real
Python workers (some slow, some failing with secrets in their arguments, sessions, an
occasional crash) and events from other services through the ingest API, some with secrets
in them — so the dashboard, the live stream and /metrics have something to show, and you can
watch the sanitizer work.

usage: python3 examples/demo_publisher.py [http://127.0.0.1:8787] [--rate EVENTS_PER_SECOND]
Standard library only.
"""

import argparse
import json
import random
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid

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

def app_events():
    """Events other services publish through the ingest API; a quarter leak something."""
    user = random.choice(USERS)
    event = {"kind": random.choice(["auth.login", "billing.invoice", "storage.upload"]),
             "correlation_id": uuid.uuid4().hex[:16],
             "fields": {"user": user, "region": random.choice(["eu-west", "us-east"])}}
    if random.random() < 0.25:
        event["fields"].update(random.choice(LEAKY))
    return [event]


def execute(base, body, session=None):
    """One request on the demo pool's real Python workers; the answer's status."""
    if session:
        body["session_id"] = session
    req = urllib.request.Request(base + "/api/v1/pools/demo/execute", data=json.dumps(body).encode(),
                                 method="POST", headers={"content-type": "application/json",
                                                         "x-correlation-id": "demo-" + uuid.uuid4().hex[:12]})
    try:
        with urllib.request.urlopen(req, timeout=35) as resp:
            return resp.status
    except urllib.error.HTTPError as e:
        return e.code


def traffic(base, stop, counts):
    """Requests as an application would send them: mostly fine, some slow, some failing with
    secrets in their arguments, sessions, and now and then a worker crash."""
    n = 0
    while not stop.is_set():
        n += 1
        r = random.random()
        if n % 400 == 0:
            body = {"command": "crash"}
        elif r < 0.55:
            body = {"command": "echo", "args": {"user": random.choice(USERS), "item": random.randint(1, 99)}}
        elif r < 0.75:
            body = {"command": "sleep", "args": {"seconds": round(random.lognormvariate(-4, 0.8), 4)}}
        elif r < 0.85:
            body = {"command": "fail", "args": dict(random.choice(LEAKY), message="could not render invoice")}
        else:
            body = {"command": "count"}
            status = execute(base, body, session=f"cart-{random.choice(USERS)}")
            counts[status] = counts.get(status, 0) + 1
            continue
        try:
            status = execute(base, body)
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            status = "unreachable"
            time.sleep(1)
        counts[status] = counts.get(status, 0) + 1
        time.sleep(random.random() * 0.05)


def post(base, events):
    body = "\n".join(json.dumps(e) for e in events).encode()
    req = urllib.request.Request(base + "/api/v1/events", data=body, method="POST",
                                 headers={"content-type": "application/x-ndjson"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        return json.load(resp)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base", nargs="?", default="http://127.0.0.1:8787")
    parser.add_argument("--rate", type=float, default=20.0, help="ingested events per second (approximate)")
    parser.add_argument("--clients", type=int, default=3, help="concurrent clients of the demo pool")
    args = parser.parse_args()
    base = args.base.rstrip("/")
    stop = threading.Event()
    counts = {}
    for _ in range(args.clients):
        threading.Thread(target=traffic, args=(base, stop, counts), daemon=True).start()
    interval = 0.25
    sent = 0
    last_report = time.monotonic()
    try:
        while True:
            events = []
            while len(events) < max(1, int(args.rate * interval)):
                events += app_events()
            try:
                post(base, events)
                sent += len(events)
            except (urllib.error.URLError, ConnectionError, TimeoutError) as e:
                print(f"demo publisher: {base} unreachable ({e}); retrying", file=sys.stderr)
            if time.monotonic() - last_report > 10:
                print(f"demo publisher: {sent} events sent; pool requests by status {counts}", file=sys.stderr)
                last_report = time.monotonic()
            time.sleep(interval)
    except KeyboardInterrupt:
        stop.set()


if __name__ == "__main__":
    main()
