//! Worker protocol 2 with the real Python library: a worker's events and spans belong to its
//! request and its trace, its budget holds and what is over it is counted, a silent busy
//! worker is declared hung, and sampling pushed down decides as the host does.

use std::collections::BTreeSet;

use lookout_core::Severity;
use lookout_pool::Trace;
use lookout_pool::trace::hex;

use super::*;

const CALLER: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

impl Harness {
    /// Runs `command` in the trace `trace`, with correlation id `cid`.
    async fn run_traced(
        &self,
        command: &str,
        args: serde_json::Value,
        cid: &str,
        trace: Trace,
    ) -> Result<Executed, ExecError> {
        self.pool()
            .execute(ExecRequest {
                command: command.into(),
                args,
                session_id: None,
                timeout: None,
                correlation_id: cid.into(),
                trace,
            })
            .await
    }

    /// The sum of a counter's series with these labels.
    fn counter(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        lookout_testkit::counter(&self.registry, name, labels) as f64
    }

    /// Runs `command` (a new trace) and returns every event of the request once it completed.
    async fn events_of(&self, command: &str, args: serde_json::Value, cid: &str) -> Vec<Event> {
        self.run_traced(command, args, cid, Trace::new_root())
            .await
            .unwrap();
        self.of_request(cid).await
    }

    /// Every event of the request `cid`, once its `request.completed` is in.
    async fn of_request(&self, cid: &str) -> Vec<Event> {
        eventually(
            &format!("request {cid} completed"),
            Duration::from_secs(20),
            || async {
                let events = self.events("request.completed").await;
                events
                    .iter()
                    .any(|e| e.correlation_id.as_deref() == Some(cid))
                    .then_some(())
            },
        )
        .await;
        self.bus.flush(Duration::from_secs(10)).await;
        self.seen
            .events()
            .into_iter()
            .filter(|e| e.correlation_id.as_deref() == Some(cid))
            .collect()
    }
}

fn span<'a>(events: &'a [Event], name: &str) -> &'a Event {
    events
        .iter()
        .find(|e| e.kind == "trace.span" && str_field(e, "name") == name)
        .unwrap_or_else(|| panic!("no span `{name}` in {events:#?}"))
}

fn int(e: &Event, key: &str) -> i64 {
    match e.get(key) {
        Some(FieldValue::Int(i)) => *i,
        other => panic!("{}: `{key}` is {other:?}", e.kind),
    }
}

/// The caller's trace is joined; the host's spans and the worker's nest as the request ran:
/// `request traced` (child of the caller's span) → `queue_wait`, `execute` → `load_model`
/// → `query`; the worker's events carry the request's correlation id, trace id, pool and
/// worker, set by the host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workers_events_and_spans_belong_to_its_request_and_trace() {
    let h = Harness::start(config(|c| c.size = 1)).await;
    let trace = Trace::start(Some(CALLER));
    let done = h
        .run_traced(
            "traced",
            serde_json::json!({"rows": 10, "secret": "not-a-real-secret"}),
            "t-traced-1",
            trace,
        )
        .await
        .unwrap();
    assert_eq!(
        done.result["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736",
        "the worker sees the caller's trace: {done:?}"
    );
    let events = h.of_request("t-traced-1").await;

    let root = span(&events, "request traced");
    let (queue, execute) = (span(&events, "queue_wait"), span(&events, "execute"));
    let (model, query) = (span(&events, "load_model"), span(&events, "query"));
    for s in [root, queue, execute, model, query] {
        assert_eq!(str_field(s, "trace_id"), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert!(
            int(s, "start_unix_nano") <= int(s, "end_unix_nano"),
            "{s:?}"
        );
        assert_eq!(str_field(s, "status"), "ok");
    }
    assert_eq!(str_field(root, "parent_span_id"), "00f067aa0ba902b7");
    assert_eq!(str_field(root, "span_id"), hex(&trace.span_id));
    assert_eq!(str_field(root, "origin"), "host");
    let root_id = str_field(root, "span_id");
    assert_eq!(str_field(queue, "parent_span_id"), root_id);
    assert_eq!(str_field(execute, "parent_span_id"), root_id);
    assert_eq!(
        str_field(model, "parent_span_id"),
        str_field(execute, "span_id")
    );
    assert_eq!(
        str_field(query, "parent_span_id"),
        str_field(model, "span_id")
    );
    assert_eq!(str_field(model, "origin"), "worker");
    assert_eq!(model.get("attr.rows"), Some(&FieldValue::Int(10)));
    assert_eq!(str_field(query, "attr.db_password"), "not-a-real-secret");
    // The worker's work happened inside the host's `execute` (same clock; 5 ms of slack
    // for the host computing its times from one reading at the reply).
    let slack = 5_000_000;
    assert!(int(model, "start_unix_nano") + slack >= int(execute, "start_unix_nano"));
    assert!(int(model, "end_unix_nano") <= int(execute, "end_unix_nano") + slack);
    assert!(int(queue, "end_unix_nano") <= int(execute, "start_unix_nano") + slack);

    let mine: Vec<_> = events
        .iter()
        .filter(|e| e.kind.starts_with("demo.traced."))
        .collect();
    assert_eq!(mine.len(), 2, "{events:#?}");
    for e in mine {
        assert_eq!(str_field(e, "pool"), "test");
        assert_eq!(str_field(e, "worker"), done.worker);
        assert_eq!(str_field(e, "origin"), "worker");
        assert_eq!(str_field(e, "trace_id"), "4bf92f3577b34da6a3ce929d0e0e4736");
    }
    let started = events.iter().find(|e| e.kind == "request.started").unwrap();
    assert_eq!(
        str_field(started, "trace_id"),
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );

    // `logging` records are `log` events of the request, with the traceback of an exception.
    let logs: Vec<_> = h
        .events_of("logs", serde_json::Value::Null, "t-logs-1")
        .await
        .into_iter()
        .filter(|e| e.kind == "log")
        .collect();
    assert_eq!(logs.len(), 3, "{logs:#?}");
    assert!(logs.iter().any(|e| e.severity == Severity::Info));
    let exception = logs
        .iter()
        .find(|e| str_field(e, "message").contains("caught an exception"))
        .expect("the logged exception");
    assert_eq!(exception.severity, Severity::Error);
    assert!(
        str_field(exception, "traceback").contains("ZeroDivisionError"),
        "{exception:?}"
    );
}

/// A worker emitting far more than its budget gets a second's worth through; the rest is
/// dropped, counted by reason and reported on its `request.completed` — the two add up to
/// what it sent, so nothing is lost unaccounted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chatty_worker_is_held_to_its_budget_and_the_rest_is_counted() {
    let h = Harness::start(config(|c| {
        c.size = 1;
        c.telemetry.events_per_s = 50;
    }))
    .await;
    let events = h
        .events_of("chatty", serde_json::json!({"n": 2000}), "t-chatty-1")
        .await;
    let through = events.iter().filter(|e| e.kind == "demo.chatty").count() as i64;
    let completed = events
        .iter()
        .find(|e| e.kind == "request.completed")
        .unwrap();
    let dropped = int(completed, "telemetry_dropped");
    assert_eq!(
        through + dropped,
        2000,
        "through {through}, dropped {dropped}"
    );
    assert!((50..1000).contains(&through), "through {through}");
    let counted = h.counter(
        "lookout_worker_telemetry_dropped_total",
        &[("pool", "test"), ("reason", "rate")],
    );
    assert_eq!(counted, dropped as f64);
    assert_eq!(
        h.counter(
            "lookout_worker_telemetry_total",
            &[("pool", "test"), ("kind", "event")]
        ),
        through as f64
    );
}

/// A busy worker that keeps beating lives past many heartbeat timeouts; one that goes silent
/// is declared hung well before the request's deadline: `worker.hung`, killed, replaced, its
/// request failed as `hung`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_busy_worker_is_declared_hung_and_replaced() {
    let h = Harness::start(config(|c| {
        c.size = 1;
        c.heartbeat_timeout_ms = 300;
        c.request_timeout_ms = 60_000;
    }))
    .await;
    let before = h.all_available().await;
    h.run("sleep", serde_json::json!({"seconds": 1.2}))
        .await
        .expect("a beating worker is not hung");

    let started = Instant::now();
    let err = h
        .run_traced(
            "hang",
            serde_json::json!({"secs": 60}),
            "t-hang-1",
            Trace::new_root(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Hung, "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(10), "{err:?}");
    assert!(err.message.contains("heartbeat_timeout_ms"), "{err:?}");
    let hung = h.wait_for("worker.hung", 1).await;
    assert_eq!(hung[0].correlation_id.as_deref(), Some("t-hang-1"));
    assert!(num_field(&hung[0], "silent_ms") >= 300.0);
    assert_eq!(
        h.counter(
            "lookout_worker_exits_total",
            &[("pool", "test"), ("reason", "hung")]
        ),
        1.0
    );
    let after = h.all_available().await;
    assert_ne!(before, after, "replaced");
    h.run("echo", serde_json::json!(1)).await.unwrap();
}

/// Sampling pushed down: at rate 0.5 the worker sends exactly the events the host would
/// keep (none reach the host to be sampled out), and all of those; errors are kept; a
/// change of the rates at runtime reaches the worker before its next request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sampling_is_pushed_down_and_decided_as_the_host_decides() {
    let h = Harness::start(config(|c| c.size = 1)).await;
    let mut bus = BusConfig::default();
    bus.sampling.rates.insert("demo.traced.*".into(), 0.5);
    h.bus.set_config(bus.clone()).unwrap();

    let cids: Vec<String> = (0..40).map(|i| format!("t-sampled-{i}")).collect();
    for cid in &cids {
        h.run_traced(
            "traced",
            serde_json::json!({"rows": 1}),
            cid,
            Trace::new_root(),
        )
        .await
        .unwrap();
    }
    h.of_request(cids.last().unwrap()).await;
    let arrived: BTreeSet<String> = h
        .events("demo.traced.started")
        .await
        .into_iter()
        .filter_map(|e| e.correlation_id)
        .collect();
    let kept: BTreeSet<String> = cids
        .iter()
        .filter(|cid| {
            bus.sampling
                .keeps("demo.traced.started", Severity::Info, cid)
        })
        .cloned()
        .collect();
    assert!(!kept.is_empty() && kept.len() < cids.len(), "{kept:?}");
    assert_eq!(arrived, kept);
    let books = h.bus.books();
    let sampled_out = books
        .kinds
        .get("demo.traced.started")
        .map_or(0, |k| k.sampled_out);
    assert_eq!(sampled_out, 0, "the worker sent none the host would drop");

    // Rate 0 from now on: the next request's worker hears it first.
    bus.sampling.rates.insert("demo.traced.*".into(), 0.0);
    h.bus.set_config(bus).unwrap();
    let after = h
        .events_of("traced", serde_json::json!({"rows": 1}), "t-after")
        .await;
    assert!(
        !after.iter().any(|e| e.kind.starts_with("demo.traced.")),
        "{after:#?}"
    );

    // Spans the bus would sample out are not even built, the host's included.
    let mut bus = BusConfig::default();
    bus.sampling.rates.insert("trace.span".into(), 0.0);
    let spans_before = h
        .bus
        .books()
        .kinds
        .get("trace.span")
        .map_or(0, |k| k.published);
    h.bus.set_config(bus).unwrap();
    let unspanned = h
        .events_of("traced", serde_json::json!({"rows": 1}), "t-unspanned")
        .await;
    assert!(
        !unspanned.iter().any(|e| e.kind == "trace.span"),
        "{unspanned:#?}"
    );
    let books = h.bus.books();
    let spans = books.kinds.get("trace.span").unwrap();
    assert_eq!(
        spans.published, spans_before,
        "none was published to be sampled out"
    );
    assert_eq!(spans.sampled_out, 0);
}
