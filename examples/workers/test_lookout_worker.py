"""Tests of lookout_worker: the sampling decision (which must be the host's, bit for bit), the
local checks on events, and the library speaking protocol 2 as a real worker subprocess.

    python3 -m unittest discover -s examples/workers -p 'test_*.py'

Waiting polls with a deadline, scaled by LOOKOUT_TEST_PATIENCE (default 1) on slow machines.
Only checks that something does *not* happen watch for a fixed window.
"""

import json
import os
import queue
import subprocess
import sys
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import lookout_worker  # noqa: E402
from lookout_worker import _fnv1a, _mix, _Sampling, _threshold  # noqa: E402

PATIENCE = float(os.environ.get("LOOKOUT_TEST_PATIENCE", "1"))

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
EXECUTE_SPAN = "00f067aa0ba902b7"

# A worker with commands made for these tests.
TEST_WORKER = r'''
import logging, threading, time
import lookout_worker
from lookout_worker import command, run

@command
def nested(args, ctx):
    with ctx.span("outer", a=1) as outer:
        with lookout_worker.span("inner") as inner:
            inner.set_attribute("b", 2)
        try:
            with ctx.span("broken"):
                raise KeyError("gone")
        except KeyError:
            pass
    return {"outer": outer.span_id, "inner": inner.span_id}

@command
def nap(args, ctx):
    print("printed: this goes to stderr, not the protocol channel")
    time.sleep(args["secs"])
    return "rested"

@command
def emits(args, ctx):
    for kind, severity in args["events"]:
        lookout_worker.emit(kind, severity=severity, n=1)
    return len(args["events"])

@command
def odd_fields(args, ctx):
    ctx.emit("test.odd", nan=float("nan"), obj=object(), nested={"inf": float("inf")}, n=3)
    return None

@command
def context(args, ctx):
    with ctx.span("s") as s:
        pass
    return {"trace_id": ctx.trace_id, "span_id": ctx.span_id, "traceparent": ctx.traceparent,
            "span_traceparent": s.traceparent, "the_span": s.span_id}

_go = threading.Event()

def _when_idle():
    _go.wait()
    deadline = time.monotonic() + 30
    while lookout_worker._current is not None and time.monotonic() < deadline:
        time.sleep(0.001)
    with lookout_worker.span("idle_span"):
        pass
    lookout_worker.emit("test.idle")

@command
def idle_later(args, ctx):
    threading.Thread(target=_when_idle, daemon=True).start()
    _go.set()
    return None

class Loud:
    def __str__(self):
        logging.getLogger("test.inner").warning("logged while a record is formatted")
        return "loud"

@command
def recursive_log(args, ctx):
    logging.getLogger("test").warning("%s", Loud())
    return None

@command
def threaded_logs(args, ctx):
    def work(n):
        for i in range(50):
            logging.getLogger(f"test.t{n}").warning("line %d of thread %d %s", i, n, "x" * 2000)
    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return None

logging.getLogger().addHandler(lookout_worker.LogHandler())
run()
'''

CONFIGURE = {
    "type": "configure",
    "heartbeat_ms": None,
    "sampling": {"default_rate": 1.0, "rates": {}, "keep_errors": True},
    "limits": {"events_per_s": 200, "bytes_per_s": 1048576},
}


class Worker:
    """A worker subprocess. A thread reads its protocol lines into a queue as they come."""

    def __init__(self, argv):
        env = dict(os.environ, PYTHONPATH=HERE)
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, encoding="utf-8", cwd=HERE, env=env,
        )  # fmt: skip
        self.lines = queue.Queue()
        self.stderr = []
        self.next_id = 1
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=lambda: self.stderr.extend(self.proc.stderr), daemon=True).start()
        self.ready = self.next()

    @classmethod
    def test_worker(cls):
        return cls([sys.executable, "-c", TEST_WORKER])

    @classmethod
    def demo_app(cls):
        return cls([sys.executable, os.path.join(HERE, "app.py")])

    def _read_stdout(self):
        for line in self.proc.stdout:
            try:
                self.lines.put(json.loads(line))
            except ValueError:
                self.lines.put({"not_json": line})

    def send(self, message):
        self.proc.stdin.write(json.dumps(message) + "\n")
        self.proc.stdin.flush()

    def configure(self, **fields):
        self.send({**CONFIGURE, **fields})

    def request(self, command, args=None, correlation_id=None):
        id = self.next_id
        self.next_id += 1
        self.send(
            {
                "id": id,
                "correlation_id": correlation_id or f"lk-{id:016x}",
                "command": command,
                "args": args,
                "session_id": None,
                "trace_id": TRACE_ID,
                "span_id": EXECUTE_SPAN,
                "traceparent": f"00-{TRACE_ID}-{EXECUTE_SPAN}-01",
            }
        )
        return id

    def next(self, timeout=10):
        try:
            return self.lines.get(timeout=timeout * PATIENCE)
        except queue.Empty:
            raise AssertionError(
                f"no line from the worker within {timeout * PATIENCE} s; stderr:\n"
                + "".join(self.stderr)
            ) from None

    def until_reply(self, id, timeout=10):
        """The lines before request id's reply, and the reply."""
        deadline = time.monotonic() + timeout * PATIENCE
        before = []
        while True:
            line = self.next(max(0.0, deadline - time.monotonic()))
            if "not_json" in line:
                raise AssertionError(f"the worker broke the protocol: {line['not_json']!r}")
            if line.get("type") is None and line.get("id") == id:
                return before, line
            before.append(line)

    def call(self, command, args=None, **kw):
        before, reply = self.until_reply(self.request(command, args, **kw))
        self.assert_ok(reply)
        return before, reply

    def assert_ok(self, reply):
        if not reply.get("ok"):
            raise AssertionError(f"request failed: {reply}")

    def within(self, secs):
        """The lines that come within secs (to check that something does not happen)."""
        end = time.monotonic() + secs
        seen = []
        while (left := end - time.monotonic()) > 0:
            try:
                seen.append(self.lines.get(timeout=left))
            except queue.Empty:
                break
        return seen

    def close(self):
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10 * PATIENCE)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()
        self.proc.stderr.close()


def of_type(lines, kind):
    return [line for line in lines if line.get("type") == kind]


class WorkerCase(unittest.TestCase):
    make = staticmethod(Worker.test_worker)

    def setUp(self):
        self.worker = self.make()
        self.addCleanup(self.worker.close)


class SamplingDecision(unittest.TestCase):
    """The worker skips what the host would sample out, so it must decide as the host does."""

    def test_fnv1a_matches_the_standard_64_bit_vectors(self):
        self.assertEqual(_fnv1a(b""), 0xCBF29CE484222325)
        self.assertEqual(_fnv1a(b"a"), 0xAF63DC4C8601EC8C)
        self.assertEqual(_fnv1a(b"foobar"), 0x85944171F73967E8)

    def test_mix_is_the_splitmix64_finalizer(self):
        self.assertEqual(_mix(0), 0)
        # splitmix64 seeded with 0: its first output is mix(0x9e3779b97f4a7c15).
        self.assertEqual(_mix(0x9E3779B97F4A7C15), 0xE220A8397B1DCDAF)

    def test_threshold_is_the_hosts_f64_product_truncated(self):
        # The host computes (rate * u64::MAX as f64) as u64, and u64::MAX as f64 is 2^64.
        self.assertEqual(_threshold(0.5), 1 << 63)
        self.assertEqual(_threshold(0.25), 1 << 62)
        self.assertEqual(_threshold(0.0), 0)
        self.assertEqual(_threshold(0.1), int(0.1 * 2.0**64))

    def test_rate_lookup_prefers_exact_then_longer_prefix_then_star_then_default(self):
        rates = {"a.b.c": 0.1, "a.b.*": 0.2, "a.*": 0.3, "*": 0.4}
        s = _Sampling(0.5, rates, True)
        self.assertEqual(s.rate("a.b.c"), 0.1)
        self.assertEqual(s.rate("a.b.d"), 0.2)
        self.assertEqual(s.rate("a.b.c.d"), 0.2)
        self.assertEqual(s.rate("a.x"), 0.3)
        self.assertEqual(s.rate("a"), 0.4, "a kind without a dot is no `a.*`")
        self.assertEqual(s.rate("b.c"), 0.4)
        self.assertEqual(_Sampling(0.5, {"a.*": 0.3}, True).rate("b.c"), 0.5)

    def test_rate_one_keeps_all_and_rate_zero_keeps_none(self):
        keys = [_mix(_fnv1a(f"lk-{i:016x}".encode())) for i in range(2000)]
        keep_all = _Sampling(1.0, {}, False)
        keep_none = _Sampling(0.0, {}, False)
        self.assertTrue(all(keep_all.keeps("x", "info", k) for k in keys))
        self.assertFalse(any(keep_none.keeps("x", "info", k) for k in keys))
        self.assertTrue(keep_all.keeps("x", "info", (1 << 64) - 1))
        self.assertFalse(keep_none.keeps("x", "info", 0))

    def test_a_rate_keeps_about_that_share_of_requests(self):
        s = _Sampling(0.1, {}, False)
        kept = sum(s.keeps("x", "info", _mix(_fnv1a(f"lk-{i:016x}".encode()))) for i in range(10000))
        self.assertTrue(800 < kept < 1200, kept)

    def test_keep_errors_keeps_errors_at_any_rate_and_only_errors(self):
        s = _Sampling(0.0, {}, True)
        self.assertTrue(s.keeps("x", "error", 0xFFFF_FFFF_FFFF_FFFF))
        self.assertFalse(s.keeps("x", "warn", 0xFFFF_FFFF_FFFF_FFFF))
        self.assertFalse(_Sampling(0.0, {}, False).keeps("x", "error", 0))


class LocalChecks(unittest.TestCase):
    """A mistake in an event shows in the worker's own code, not as a silent drop."""

    def test_kinds_that_are_not_dotted_lowercase_names_are_refused(self):
        for kind in ["", "Model.loaded", "model..loaded", ".model", "model.", "model loaded",
                     "modèle", "a" * 129, 7]:  # fmt: skip
            with self.subTest(kind=kind), self.assertRaisesRegex(ValueError, "dotted lowercase"):
                lookout_worker.emit(kind)

    def test_kinds_in_lookouts_namespaces_are_refused(self):
        for namespace in lookout_worker.RESERVED_NAMESPACES:
            with self.subTest(namespace=namespace), self.assertRaisesRegex(ValueError, "namespace"):
                lookout_worker.emit(namespace + "mine")

    def test_unknown_severities_are_refused(self):
        with self.assertRaisesRegex(ValueError, "severity 'fatal'"):
            lookout_worker.emit("app.thing", severity="fatal")

    def test_good_kinds_pass(self):
        for kind in ["log", "model.loaded", "a-b.c_d.e9", "requests.made", "a" * 128]:
            lookout_worker.emit(kind)  # no channel here: checked, then nothing is sent


class Protocol(WorkerCase):
    def test_ready_line_says_protocol_2_and_lists_the_commands(self):
        ready = self.worker.ready
        self.assertEqual((ready["type"], ready["protocol"]), ("ready", 2))
        self.assertIn("nested", ready["commands"])
        self.assertIsInstance(ready["pid"], int)

    def test_trace_context_reaches_the_command(self):
        self.worker.configure()
        _, reply = self.worker.call("context")
        got = reply["result"]
        self.assertEqual(got["trace_id"], TRACE_ID)
        self.assertEqual(got["span_id"], EXECUTE_SPAN)
        self.assertEqual(got["traceparent"], f"00-{TRACE_ID}-{EXECUTE_SPAN}-01")
        self.assertEqual(got["span_traceparent"], f"00-{TRACE_ID}-{got['the_span']}-01")

    def test_unknown_message_types_are_ignored_and_nothing_is_printed_on_the_channel(self):
        self.worker.send({"type": "from_the_future", "x": 1})
        before, reply = self.worker.call("nap", {"secs": 0})
        self.assertEqual(before, [])
        self.assertEqual(reply, {"id": 1, "ok": True, "result": "rested"})


class Spans(WorkerCase):
    def test_spans_nest_and_an_error_span_carries_its_exception(self):
        self.worker.configure()
        before, reply = self.worker.call("nested")
        spans = {s["name"]: s for s in of_type(before, "span")}
        self.assertEqual(set(spans), {"outer", "inner", "broken"})
        outer, inner, broken = spans["outer"], spans["inner"], spans["broken"]
        self.assertNotIn("parent_span_id", outer, "a top span's parent is the host's execute span")
        self.assertEqual(inner["parent_span_id"], outer["span_id"])
        self.assertEqual(broken["parent_span_id"], outer["span_id"])
        self.assertEqual(reply["result"], {"outer": outer["span_id"], "inner": inner["span_id"]})
        self.assertEqual((outer["status"], inner["status"]), ("ok", "ok"))
        self.assertEqual(broken["status"], "error")
        self.assertEqual(broken["error"], "KeyError: 'gone'")
        self.assertEqual(outer["attributes"], {"a": 1})
        self.assertEqual(inner["attributes"], {"b": 2})
        for s in spans.values():
            self.assertRegex(s["span_id"], r"\A[0-9a-f]{16}\Z")
            self.assertLessEqual(s["start_unix_nano"], s["end_unix_nano"])
        self.assertLessEqual(outer["start_unix_nano"], inner["start_unix_nano"])
        self.assertLessEqual(inner["end_unix_nano"], outer["end_unix_nano"])
        # Sent as they end: the innermost first.
        self.assertEqual([s["name"] for s in of_type(before, "span")], ["inner", "broken", "outer"])


class Heartbeats(WorkerCase):
    def test_heartbeats_come_while_a_command_runs_and_stop_when_it_ends(self):
        self.worker.configure(heartbeat_ms=50)
        before, _ = self.worker.call("nap", {"secs": 0.3})
        self.assertGreaterEqual(len(of_type(before, "heartbeat")), 3, before)
        self.assertEqual(len(of_type(before, "heartbeat")), len(before), before)
        # None after the reply: watch for a few intervals, then make sure none was on its way.
        self.assertEqual(self.worker.within(0.2), [])
        before, _ = self.worker.call("nap", {"secs": 0})
        self.assertEqual(before, [])

    def test_no_heartbeats_when_lookout_asks_for_none(self):
        self.worker.configure(heartbeat_ms=None)
        before, _ = self.worker.call("nap", {"secs": 0.2})
        self.assertEqual(before, [])

    def test_a_configure_without_heartbeat_ms_keeps_the_heartbeats(self):
        self.worker.configure(heartbeat_ms=50)
        self.worker.send({"type": "configure", "sampling": CONFIGURE["sampling"]})
        before, _ = self.worker.call("nap", {"secs": 0.3})
        self.assertGreaterEqual(len(of_type(before, "heartbeat")), 3, before)


class Events(WorkerCase):
    def test_sampled_out_events_are_not_sent_but_errors_are_kept(self):
        self.worker.configure(
            sampling={"default_rate": 1.0, "rates": {"test.quiet.*": 0.0}, "keep_errors": True}
        )
        events = [["test.quiet.a", "info"], ["test.quiet.b", "error"], ["test.loud", "warn"]]
        before, _ = self.worker.call("emits", {"events": events})
        self.assertEqual(
            [(e["kind"], e["severity"]) for e in of_type(before, "event")],
            [("test.quiet.b", "error"), ("test.loud", "warn")],
        )
        # Settings pushed again between requests apply to the next one.
        self.worker.configure(sampling={"default_rate": 1.0, "rates": {}, "keep_errors": False})
        before, _ = self.worker.call("emits", {"events": events})
        self.assertEqual(len(of_type(before, "event")), 3)
        self.assertEqual(of_type(before, "event")[0]["fields"], {"n": 1})

    def test_events_and_spans_of_an_idle_worker_are_sent_whatever_the_rate(self):
        self.worker.configure(sampling={"default_rate": 0.0, "rates": {}, "keep_errors": False})
        id = self.worker.request("idle_later")
        deadline = time.monotonic() + 10 * PATIENCE
        seen = []
        while not of_type(seen, "event"):
            seen.append(self.worker.next(max(0.0, deadline - time.monotonic())))
        self.assertEqual(of_type(seen, "event")[0]["kind"], "test.idle")
        self.assertEqual(of_type(seen, "span"), [], "a span outside a request is not sent")
        self.assertIn(id, [line.get("id") for line in seen])

    def test_field_values_json_cannot_carry_go_as_their_repr(self):
        self.worker.configure()
        before, _ = self.worker.call("odd_fields")
        (event,) = of_type(before, "event")
        fields = event["fields"]
        self.assertEqual(fields["nan"], "nan")
        self.assertEqual(fields["nested"], {"inf": "inf"})
        self.assertEqual(fields["n"], 3)
        self.assertRegex(fields["obj"], r"^<object object at ")


class Logs(WorkerCase):
    def test_a_record_logged_while_one_is_sent_is_dropped_not_recursed_into(self):
        self.worker.configure()
        before, _ = self.worker.call("recursive_log")
        self.assertEqual(
            [e["fields"] for e in of_type(before, "event")],
            [{"level": "warning", "logger": "test", "message": "loud"}],
        )

    def test_records_from_many_threads_arrive_as_whole_lines(self):
        self.worker.configure()
        before, _ = self.worker.call("threaded_logs")
        events = of_type(before, "event")
        self.assertEqual(len(events), 200)
        self.assertTrue(all(e["kind"] == "log" and e["severity"] == "warn" for e in events))


class DemoApp(WorkerCase):
    make = staticmethod(Worker.demo_app)

    def test_traced_emits_two_events_and_nested_spans_with_the_secret_attribute(self):
        self.worker.configure()
        before, reply = self.worker.call("traced", {"rows": 10, "secret": "hunter2"})
        self.assertEqual(len(of_type(before, "event")), 2)
        spans = {s["name"]: s for s in of_type(before, "span")}
        self.assertEqual(spans["query"]["parent_span_id"], spans["load_model"]["span_id"])
        self.assertEqual(spans["query"]["attributes"]["db_password"], "hunter2")
        self.assertEqual(spans["load_model"]["attributes"]["rows"], 10)
        self.assertEqual(reply["result"]["trace_id"], TRACE_ID)

    def test_chatty_emits_n_events(self):
        self.worker.configure()
        before, reply = self.worker.call("chatty", {"n": 1000})
        self.assertEqual(len(of_type(before, "event")), 1000)
        self.assertEqual(reply["result"], {"emitted": 1000})

    def test_hang_stops_heartbeats_for_its_request_only(self):
        self.worker.configure(heartbeat_ms=50)
        before, _ = self.worker.call("hang", {"secs": 0.4})
        self.assertEqual(of_type(before, "heartbeat"), [])
        before, _ = self.worker.call("sleep", {"seconds": 0.3})
        self.assertGreaterEqual(len(of_type(before, "heartbeat")), 3)

    def test_logs_become_log_events_with_levels_and_a_traceback(self):
        self.worker.configure()
        before, _ = self.worker.call("logs", correlation_id="lk-logs")
        events = of_type(before, "event")
        self.assertEqual([e["kind"] for e in events], ["log"] * 3)
        info, error, exception = (e["fields"] for e in events)
        self.assertEqual([e["severity"] for e in events], ["info", "error", "error"])
        self.assertEqual(info, {"level": "info", "logger": "demo", "message": "serving request lk-logs"})
        self.assertEqual(error["level"], "error")
        self.assertNotIn("traceback", error)
        self.assertIn("ZeroDivisionError: division by zero", exception["traceback"])
        self.assertEqual(exception["message"], "caught an exception on purpose")

    def test_protocol_1_behaviour_stays_sessions_and_errors(self):
        self.worker.configure()
        session = {"session_id": "alpha"}
        for expected in (1, 2):
            self.worker.send({"id": expected, "correlation_id": "c", "command": "count", "args": None, **session})
            _, reply = self.worker.until_reply(expected)
            self.assertEqual(reply["result"]["n"], expected)
        self.worker.send({"type": "session_end", "session_id": "alpha"})
        self.worker.send({"id": 3, "correlation_id": "c", "command": "count", "args": None, **session})
        _, reply = self.worker.until_reply(3)
        self.assertEqual(reply["result"]["n"], 1, "the session's state was dropped")
        self.worker.next_id = 4
        _, reply = self.worker.until_reply(self.worker.request("fail", {"message": "no"}))
        self.assertEqual((reply["ok"], reply["error"]["kind"]), (False, "ValueError"))
        self.assertIn("Traceback", reply["error"]["traceback"])


if __name__ == "__main__":
    unittest.main()
