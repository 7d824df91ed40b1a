//! Worker pools with real Python workers (examples/workers/app.py): every lifecycle event
//! with its fields, errors with their context, crashes, hangs, garbage, a full queue,
//! sessions, recycling and a graceful stop. Waits are conditions with deadlines.

use std::time::{Duration, Instant};

use lookout_core::{Bus, BusConfig, Event, FieldValue, PassThrough};
use lookout_pool::{
    ErrorKind, ExecError, ExecRequest, Executed, Pool, PoolConfig, PoolStatus, Pools,
};
use lookout_testkit::{Collect, eventually, repo_root};
use prometheus::Registry;

mod telemetry;

struct Harness {
    bus: Bus,
    registry: Registry,
    seen: Collect,
    pools: Pools,
}

fn app() -> String {
    repo_root()
        .join("examples/workers/app.py")
        .to_string_lossy()
        .into_owned()
}

/// The demo app's pool with `tweak` applied.
fn config(tweak: impl FnOnce(&mut PoolConfig)) -> PoolConfig {
    let app = app();
    let mut config = PoolConfig::new("test", &["python3", &app]);
    tweak(&mut config);
    config
}

impl Harness {
    /// Starts the pool and waits until it has published `pool.started`.
    async fn start(config: PoolConfig) -> Harness {
        let registry = Registry::new();
        let bus = Bus::start(BusConfig::default(), &registry, Box::new(PassThrough)).unwrap();
        let seen = Collect::default();
        bus.register("collect", seen.clone()).unwrap();
        let pools = Pools::start(&[config], &bus, &registry).unwrap();
        let harness = Harness {
            bus,
            registry,
            seen,
            pools,
        };
        harness.wait_for("pool.started", 1).await;
        harness
    }

    fn pool(&self) -> Pool {
        self.pools.get("test").unwrap()
    }

    async fn run(&self, command: &str, args: serde_json::Value) -> Result<Executed, ExecError> {
        self.run_as(command, args, None, None).await
    }

    async fn run_as(
        &self,
        command: &str,
        args: serde_json::Value,
        session: Option<&str>,
        timeout: Option<Duration>,
    ) -> Result<Executed, ExecError> {
        self.pool()
            .execute(ExecRequest {
                command: command.into(),
                args,
                session_id: session.map(str::to_string),
                timeout,
                correlation_id: format!("t-{command}-{}", lookout_core::now_ns()),
                trace: lookout_pool::Trace::new_root(),
            })
            .await
    }

    /// Every event of `kind` seen so far (after the bus has drained).
    async fn events(&self, kind: &str) -> Vec<Event> {
        self.bus.flush(Duration::from_secs(10)).await;
        self.seen
            .events()
            .into_iter()
            .filter(|e| e.kind == kind)
            .collect()
    }

    /// Waits until at least `n` events of `kind` have been seen; returns them.
    async fn wait_for(&self, kind: &str, n: usize) -> Vec<Event> {
        eventually(
            &format!("{n} `{kind}` events"),
            Duration::from_secs(20),
            || async {
                let events = self.events(kind).await;
                (events.len() >= n).then_some(events)
            },
        )
        .await
    }

    /// Waits until every slot has a live, available worker; returns their ids.
    async fn all_available(&self) -> Vec<String> {
        eventually(
            "every worker available",
            Duration::from_secs(20),
            || async {
                let snapshot = self.pool().snapshot();
                snapshot
                    .workers
                    .iter()
                    .all(|w| w.state == lookout_pool::WorkerState::Available)
                    .then(|| {
                        snapshot
                            .workers
                            .iter()
                            .filter_map(|w| w.id.clone())
                            .collect()
                    })
            },
        )
        .await
    }
}

fn str_field<'a>(e: &'a Event, key: &str) -> &'a str {
    match e.get(key) {
        Some(FieldValue::Str(s)) => s,
        other => panic!("{}: field `{key}` is {other:?}", e.kind),
    }
}

fn num_field(e: &Event, key: &str) -> f64 {
    match e.get(key) {
        Some(FieldValue::Int(i)) => *i as f64,
        Some(FieldValue::Float(x)) => *x,
        other => panic!("{}: field `{key}` is {other:?}", e.kind),
    }
}

fn has_fields(e: &Event, keys: &[&str]) {
    for key in keys {
        assert!(e.get(key).is_some(), "{} lacks `{key}`: {e:?}", e.kind);
    }
}

/// The happy path, and the fields REQUIREMENTS.md 1.1, 1.3, 1.5, 1.6 and 1.2 (stop) ask for;
/// every event of a request carries its correlation id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_run_and_every_event_has_its_fields() {
    let h = Harness::start(config(|c| {
        c.env.insert("API_TOKEN".into(), "s3cret-value".into());
    }))
    .await;
    let workers = h.all_available().await;
    assert_eq!(workers.len(), 2);

    let started = h.events("pool.started").await;
    let e = &started[0];
    has_fields(
        e,
        &["pool", "size", "workers_ready", "startup_ms", "config"],
    );
    assert_eq!(num_field(e, "size"), 2.0);
    assert_eq!(num_field(e, "workers_ready"), 2.0);
    let config = str_field(e, "config");
    assert!(
        config.contains("API_TOKEN") && !config.contains("s3cret-value"),
        "{config}"
    );
    for e in h.wait_for("worker.started", 2).await {
        has_fields(&e, &["pool", "worker", "pid", "startup_ms"]);
        assert!(num_field(&e, "pid") > 0.0);
    }

    let done = h
        .run("echo", serde_json::json!({"hello": "world", "n": 3}))
        .await
        .unwrap();
    assert_eq!(done.result, serde_json::json!({"hello": "world", "n": 3}));
    assert!(workers.contains(&done.worker), "{done:?}");

    let begun = h.wait_for("request.started", 1).await;
    let completed = h.wait_for("request.completed", 1).await;
    let (b, c) = (&begun[0], &completed[0]);
    has_fields(b, &["pool", "command", "worker", "queue_wait_ms"]);
    has_fields(
        c,
        &[
            "pool",
            "command",
            "worker",
            "duration_ms",
            "queue_wait_ms",
            "success",
        ],
    );
    assert_eq!(c.get("success"), Some(&FieldValue::Bool(true)));
    assert_eq!(str_field(c, "worker"), done.worker);
    let cid = b
        .correlation_id
        .clone()
        .expect("request.started has a correlation id");
    assert!(cid.starts_with("t-echo-"), "{cid}");
    assert_eq!(c.correlation_id.as_deref(), Some(cid.as_str()));

    h.pool().stop("test over").await;
    for e in h.wait_for("worker.stopped", 2).await {
        has_fields(
            &e,
            &[
                "pool",
                "worker",
                "pid",
                "uptime_s",
                "requests_served",
                "exit",
            ],
        );
    }
    let stopped = h.wait_for("pool.stopped", 1).await;
    assert_eq!(str_field(&stopped[0], "reason"), "test over");
    has_fields(&stopped[0], &["uptime_s"]);
    // Stopped: nothing more runs.
    let err = h.run("echo", serde_json::json!(1)).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Unavailable, "{err:?}");
}

/// An exception in the worker comes back with its kind, message and whole traceback, in the
/// error and in `request.completed` (with the arguments, for context).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exception_comes_back_with_its_traceback() {
    let h = Harness::start(config(|c| c.size = 1)).await;
    let err = h
        .run(
            "fail",
            serde_json::json!({"message": "no such invoice", "invoice": 42}),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Worker);
    assert_eq!(err.worker_kind.as_deref(), Some("ValueError"));
    assert_eq!(err.message, "no such invoice");
    let tb = err.traceback.clone().unwrap();
    assert!(
        tb.starts_with("Traceback (most recent call last):")
            && tb.contains("in fail")
            && tb.contains("raise ValueError(message)"),
        "{tb}"
    );
    assert_eq!((err.pool.as_str(), err.command.as_str()), ("test", "fail"));
    assert!(err.worker.is_some());

    let completed = h.wait_for("request.completed", 1).await;
    let e = &completed[0];
    assert_eq!(e.get("success"), Some(&FieldValue::Bool(false)));
    assert_eq!(str_field(e, "error_kind"), "ValueError");
    assert_eq!(str_field(e, "error_message"), "no such invoice");
    assert_eq!(str_field(e, "traceback"), tb);
    assert_eq!(e.get("args.invoice"), Some(&FieldValue::Int(42)));
    assert_eq!(e.severity, lookout_core::Severity::Error);
    // A command the worker does not have is an error reply, not a crash.
    let err = h.run("nope", serde_json::json!(null)).await.unwrap_err();
    assert_eq!(
        err.worker_kind.as_deref(),
        Some("unknown_command"),
        "{err:?}"
    );
}

/// `kill -9` of a busy worker under load: its request fails at once with the context and the
/// signal, the others succeed, a replacement comes up and serves; nothing hangs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_busy_worker_is_replaced_and_only_its_request_fails() {
    let h = Harness::start(config(|c| c.size = 2)).await;
    let before = h.all_available().await;
    let load: Vec<_> = (0..6)
        .map(|_| h.run("sleep", serde_json::json!({"seconds": 0.4})))
        .collect();
    let kill = async {
        let pid = eventually("a busy worker", Duration::from_secs(10), || async {
            h.pool()
                .snapshot()
                .workers
                .iter()
                .find(|w| w.state == lookout_pool::WorkerState::Busy)
                .and_then(|w| w.pid)
        })
        .await;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
    };
    let (results, ()) = tokio::time::timeout(
        Duration::from_secs(30),
        futures_join(futures_util::future::join_all(load), kill),
    )
    .await
    .expect("no request hangs");
    let crashed: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert_eq!(crashed.len(), 1, "{results:?}");
    assert_eq!(crashed[0].kind, ErrorKind::WorkerCrashed);
    assert!(crashed[0].message.contains("signal 9"), "{:?}", crashed[0]);
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 5);

    let after = h.all_available().await;
    assert_eq!(after.len(), 2);
    assert!(
        after.iter().any(|w| !before.contains(w)),
        "a new worker: {after:?}"
    );
    let e = &h.wait_for("worker.crashed", 1).await[0];
    has_fields(
        e,
        &[
            "pool",
            "worker",
            "pid",
            "reason",
            "stderr_tail",
            "uptime_s",
            "requests_served",
        ],
    );
    assert!(str_field(e, "reason").contains("signal 9"), "{e:?}");
    // The replacement serves.
    h.run("echo", serde_json::json!(1)).await.unwrap();
}

async fn futures_join<A: std::future::Future, B: std::future::Future>(
    a: A,
    b: B,
) -> (A::Output, B::Output) {
    tokio::join!(a, b)
}

/// A worker that exits with a traceback on stderr, one that never announces itself, and a
/// program that does not exist: each is reported (with its stderr), the pool says why it is
/// unavailable, and requests are refused with that reason instead of hanging.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_that_never_get_ready_are_reported() {
    let h = Harness::start(config(|c| {
        c.size = 1;
        c.startup_timeout_ms = 1500;
        c.command = vec![
            "python3".into(),
            "-c".into(),
            "import signal, sys; print('warming up', file=sys.stderr, flush=True); signal.pause()"
                .into(),
        ];
    }))
    .await;
    let e = &h.wait_for("worker.crashed", 1).await[0];
    assert!(
        str_field(e, "reason").contains("not ready within 1500 ms"),
        "{e:?}"
    );
    assert!(str_field(e, "stderr_tail").contains("warming up"), "{e:?}");
    let snapshot = h.pool().snapshot();
    assert!(
        snapshot.workers[0]
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("not ready")),
        "{snapshot:?}"
    );

    let missing = Harness::start(config(|c| {
        c.size = 1;
        c.command = vec!["/nonexistent/python3".into()];
    }))
    .await;
    let e = &missing.wait_for("worker.crashed", 1).await[0];
    assert!(str_field(e, "reason").contains("cannot run"), "{e:?}");
    let started = &missing.events("pool.started").await[0];
    assert_eq!(num_field(started, "workers_ready"), 0.0);
    assert_eq!(missing.pool().snapshot().status, PoolStatus::Unavailable);
    let err = eventually(
        "a refusal naming the cause",
        Duration::from_secs(10),
        || async {
            match missing.run("echo", serde_json::json!(1)).await {
                Err(e) if e.kind == ErrorKind::Unavailable => Some(e),
                _ => None,
            }
        },
    )
    .await;
    assert!(err.message.contains("cannot run"), "{err:?}");
}

/// A worker that writes garbage on its protocol channel is killed and replaced; its request
/// fails as a protocol error quoting what it wrote.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_stdout_is_a_protocol_error() {
    let h = Harness::start(config(|c| c.size = 1)).await;
    let before = h.all_available().await;
    let err = h.run("garbage", serde_json::json!(null)).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::ProtocolError, "{err:?}");
    assert!(err.message.contains("this is not json"), "{err:?}");
    // Sent at once, the next request waits for the replacement instead of being refused.
    h.run("echo", serde_json::json!(0)).await.unwrap();
    let after = h.all_available().await;
    assert_ne!(before, after, "the worker was replaced");
    h.run("echo", serde_json::json!(1)).await.unwrap();
    let e = &h.wait_for("worker.crashed", 1).await[0];
    assert!(
        str_field(e, "reason").contains("broke the protocol"),
        "{e:?}"
    );
}

/// A request past its deadline fails as a timeout at the deadline; the hung worker is killed
/// and replaced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_past_its_deadline_times_out() {
    let h = Harness::start(config(|c| c.size = 1)).await;
    let before = h.all_available().await;
    let began = Instant::now();
    let err = h
        .run_as(
            "sleep",
            serde_json::json!({"seconds": 30}),
            None,
            Some(Duration::from_millis(300)),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Timeout, "{err:?}");
    assert!(
        began.elapsed() < Duration::from_secs(5),
        "{:?}",
        began.elapsed()
    );
    let after = h.all_available().await;
    assert_ne!(before, after);
    let e = &h.wait_for("worker.crashed", 1).await[0];
    assert!(str_field(e, "reason").contains("hung past"), "{e:?}");
}

/// With every worker busy requests wait in the queue; past `queue_limit` they are refused.
/// Saturation is reported once when it starts and once when it ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_refuses_and_saturation_is_edge_triggered() {
    let h = Harness::start(config(|c| {
        c.size = 1;
        c.queue_limit = 2;
    }))
    .await;
    h.all_available().await;
    let slow = || h.run("sleep", serde_json::json!({"seconds": 0.5}));
    let (a, b, c, refused) = tokio::join!(slow(), slow(), slow(), async {
        eventually("two waiting", Duration::from_secs(10), || async {
            (h.pool().snapshot().queue_length == 2).then_some(())
        })
        .await;
        h.run("echo", serde_json::json!(1)).await
    });
    for r in [&a, &b, &c] {
        assert!(r.is_ok(), "{r:?}");
    }
    let refused = refused.unwrap_err();
    assert_eq!(refused.kind, ErrorKind::QueueFull, "{refused:?}");
    assert!(refused.message.contains("queue_limit"), "{refused:?}");
    assert!(c.as_ref().unwrap().queue_wait_ms > 400.0, "{c:?}");

    let saturated = h.wait_for("pool.saturated", 1).await;
    has_fields(
        &saturated[0],
        &["pool", "available", "busy", "queue_length"],
    );
    let recovered = h.wait_for("pool.recovered", 1).await;
    has_fields(&recovered[0], &["pool", "saturated_ms"]);
    assert_eq!(h.events("pool.saturated").await.len(), 1, "edge-triggered");
    assert_eq!(
        lookout_testkit::counter(
            &h.registry,
            "lookout_requests_rejected_total",
            &[("reason", "queue_full")]
        ),
        1
    );
}

/// A session sticks to its worker (state kept there), expires after its TTL (the sweep
/// reports it), and a session whose worker died is re-pinned — reported, state gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_stick_expire_and_survive_their_worker() {
    let h = Harness::start(config(|c| {
        c.size = 2;
        c.session_ttl_s = 1;
        c.session_sweep_ms = 100;
    }))
    .await;
    h.all_available().await;
    let count = |session: &'static str| {
        let h = &h;
        async move {
            h.run_as("count", serde_json::json!(null), Some(session), None)
                .await
                .unwrap()
        }
    };
    let first = count("alpha").await;
    let second = count("alpha").await;
    let third = count("alpha").await;
    assert_eq!(
        [&first, &second, &third].map(|d| d.result["n"].as_i64().unwrap()),
        [1, 2, 3]
    );
    assert!([&second, &third].iter().all(|d| d.worker == first.worker));

    let created = h.wait_for("session.created", 1).await;
    has_fields(&created[0], &["pool", "session_id", "ttl_s", "worker"]);
    assert_eq!(str_field(&created[0], "worker"), first.worker);

    // Idle past its TTL: expired and swept.
    let expired = h.wait_for("session.expired", 1).await;
    has_fields(
        &expired[0],
        &["pool", "session_id", "ttl_s", "worker", "requests"],
    );
    assert_eq!(num_field(&expired[0], "requests"), 3.0);
    let cleanup = h.wait_for("session.cleanup", 1).await;
    assert_eq!(num_field(&cleanup[0], "expired"), 1.0);
    assert_eq!(num_field(&cleanup[0], "remaining"), 0.0);
    has_fields(&cleanup[0], &["sweep_ms"]);
    // A new session of the same name starts afresh.
    assert_eq!(count("alpha").await.result["n"], 1);

    // Its worker dies: the next request re-pins it, and says so.
    let pinned = h
        .run_as("count", serde_json::json!(null), Some("beta"), None)
        .await
        .unwrap();
    let pid = pinned.result["pid"].as_i64().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    h.wait_for("worker.crashed", 1).await;
    let moved = count("beta").await;
    assert_ne!(moved.worker, pinned.worker);
    assert_eq!(moved.result["n"], 1, "the state lived on the dead worker");
    let repinned = h.wait_for("session.repinned", 1).await;
    assert_eq!(str_field(&repinned[0], "from_worker"), pinned.worker);
    assert_eq!(str_field(&repinned[0], "worker"), moved.worker);
    let crashed = h.wait_for("worker.crashed", 1).await;
    assert!(
        num_field(&crashed[0], "sessions_pinned") >= 1.0,
        "{crashed:?}"
    );
}

/// Sessions opened explicitly carry their metadata and spread over the workers; a request
/// in one goes to its worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_opened_explicitly_spread_and_carry_metadata() {
    let h = Harness::start(config(|c| c.size = 2)).await;
    h.all_available().await;
    let a = h
        .pool()
        .open_session(
            Some("cart-a".into()),
            Some(serde_json::json!({"user": "amy"})),
            "c-1",
        )
        .unwrap();
    let b = h.pool().open_session(None, None, "c-2").unwrap();
    assert!(a.created && b.created);
    assert!(b.session_id.starts_with("s-"), "{b:?}");
    assert_ne!(
        a.worker, b.worker,
        "the second session goes to the other worker"
    );
    let again = h
        .pool()
        .open_session(Some("cart-a".into()), None, "c-3")
        .unwrap();
    assert!(!again.created);
    assert_eq!(again.worker, a.worker);
    let ran = h
        .run_as("count", serde_json::json!(null), Some("cart-a"), None)
        .await
        .unwrap();
    assert_eq!(ran.worker, a.worker);
    let created = h.wait_for("session.created", 2).await;
    let with_metadata = created
        .iter()
        .find(|e| str_field(e, "session_id") == "cart-a")
        .unwrap();
    assert_eq!(str_field(with_metadata, "metadata"), r#"{"user":"amy"}"#);
    assert_eq!(with_metadata.correlation_id.as_deref(), Some("c-1"));
}

/// Workers are recycled after `max_requests`, after `max_age_s`, past `max_memory_mib`, and
/// on demand; each with `worker.recycled` and its reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_are_recycled_by_count_age_memory_and_on_demand() {
    let h = Harness::start(config(|c| {
        c.size = 1;
        c.max_requests = 2;
        c.max_memory_mib = 200;
    }))
    .await;
    let first = h.all_available().await;
    h.run("echo", serde_json::json!(1)).await.unwrap();
    h.run("echo", serde_json::json!(2)).await.unwrap();
    let recycled = h.wait_for("worker.recycled", 1).await;
    assert_eq!(str_field(&recycled[0], "reason"), "max_requests");
    assert_eq!(num_field(&recycled[0], "requests_served"), 2.0);
    assert_eq!(str_field(&recycled[0], "worker"), first[0]);
    let second = h.all_available().await;
    assert_ne!(first, second);

    // Memory: one leak past 200 MiB.
    h.run("leak", serde_json::json!({"mib": 256}))
        .await
        .unwrap();
    let recycled = h.wait_for("worker.recycled", 2).await;
    assert_eq!(str_field(&recycled[1], "reason"), "memory");

    // On demand.
    let third = h.all_available().await;
    assert!(h.pool().recycle(&third[0]));
    let recycled = h.wait_for("worker.recycled", 3).await;
    assert_eq!(str_field(&recycled[2], "reason"), "manual");
    assert!(!h.pool().recycle("no-such-worker"));

    let aged = Harness::start(config(|c| {
        c.size = 1;
        c.max_age_s = 1;
    }))
    .await;
    let recycled = aged.wait_for("worker.recycled", 1).await;
    assert_eq!(str_field(&recycled[0], "reason"), "max_age");
    has_fields(
        &recycled[0],
        &["pool", "worker", "pid", "uptime_s", "requests_served"],
    );
}

/// Stop with a request running and one waiting: the running one finishes, the waiting one is
/// refused, then the workers go — and one that ignores SIGTERM is killed after the grace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_stop_finishes_what_runs() {
    let h = Harness::start(config(|c| {
        c.size = 1;
        c.stop_grace_ms = 300;
    }))
    .await;
    h.all_available().await;
    let (running, waiting, ()) = tokio::join!(
        h.run("sleep", serde_json::json!({"seconds": 0.5})),
        async {
            eventually(
                "the first request running",
                Duration::from_secs(10),
                || async {
                    (h.pool().snapshot().workers[0].state == lookout_pool::WorkerState::Busy)
                        .then_some(())
                },
            )
            .await;
            h.run("echo", serde_json::json!(1)).await
        },
        async {
            eventually("a request waiting", Duration::from_secs(10), || async {
                (h.pool().snapshot().queue_length == 1).then_some(())
            })
            .await;
            h.pool().stop("shutdown").await;
        }
    );
    assert!(running.is_ok(), "{running:?}");
    assert_eq!(waiting.unwrap_err().kind, ErrorKind::Unavailable);
    let stopped = h.wait_for("worker.stopped", 1).await;
    assert!(
        str_field(&stopped[0], "exit").contains("exit code 0"),
        "{stopped:?}"
    );
    h.wait_for("pool.stopped", 1).await;

    // A worker that ignores its closed stdin and SIGTERM is killed after the grace period.
    let stubborn = Harness::start(config(|c| {
        c.size = 1;
        c.stop_grace_ms = 200;
        c.command = vec![
            "python3".into(),
            "-c".into(),
            "import signal, sys\n\
             signal.signal(signal.SIGTERM, signal.SIG_IGN)\n\
             print('{\"type\": \"ready\"}', flush=True)\n\
             while True: signal.pause()"
                .into(),
        ];
    }))
    .await;
    stubborn.all_available().await;
    let began = Instant::now();
    stubborn.pool().stop("shutdown").await;
    assert!(began.elapsed() >= Duration::from_millis(400));
    let stopped = stubborn.wait_for("worker.stopped", 1).await;
    assert!(
        str_field(&stopped[0], "exit").contains("SIGKILL"),
        "{stopped:?}"
    );
}

/// A new configuration while running: a larger size starts workers, a smaller one stops the
/// highest slots' workers gracefully (a request running there finishes); new settings apply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_pool_is_resized_and_reconfigured() {
    let h = Harness::start(config(|c| c.size = 1)).await;
    assert_eq!(h.all_available().await.len(), 1);
    let mut bigger = h.pool().config().as_ref().clone();
    bigger.size = 3;
    bigger.queue_limit = 7;
    h.pool().reconfigure(bigger.clone()).unwrap();
    let three = h.all_available().await;
    assert_eq!(three.len(), 3, "{three:?}");
    assert_eq!(h.pool().snapshot().queue_limit, 7);
    let reconfigured = h.wait_for("pool.reconfigured", 1).await;
    assert_eq!(num_field(&reconfigured[0], "size_to"), 3.0);

    // Shrink to 1 while every worker runs a request: each finishes before its worker goes.
    let mut smaller = bigger.clone();
    smaller.size = 1;
    let load: Vec<_> = (0..3)
        .map(|_| h.run("sleep", serde_json::json!({"seconds": 0.6})))
        .collect();
    let (ran, ()) = tokio::join!(futures_util::future::join_all(load), async {
        eventually("all three busy", Duration::from_secs(10), || async {
            h.pool()
                .snapshot()
                .workers
                .iter()
                .all(|w| w.state == lookout_pool::WorkerState::Busy)
                .then_some(())
        })
        .await;
        h.pool().reconfigure(smaller.clone()).unwrap();
    });
    let workers: std::collections::BTreeSet<String> = ran
        .iter()
        .map(|r| r.as_ref().unwrap().worker.clone())
        .collect();
    assert_eq!(
        workers.len(),
        3,
        "each request ran, on its own worker: {ran:?}"
    );
    let one = eventually("one worker left", Duration::from_secs(20), || async {
        let snapshot = h.pool().snapshot();
        (snapshot.workers.len() == 1 && snapshot.status == PoolStatus::Ok).then_some(snapshot)
    })
    .await;
    assert_eq!(one.size, 1);
    let stopped = h.wait_for("worker.stopped", 2).await;
    assert!(
        stopped
            .iter()
            .all(|e| str_field(e, "reason") == "pool resized"),
        "{stopped:?}"
    );
    // Still serving; a renamed pool is refused.
    h.run("echo", serde_json::json!(1)).await.unwrap();
    let mut renamed = smaller;
    renamed.name = "other".into();
    assert!(
        h.pool()
            .reconfigure(renamed)
            .unwrap_err()
            .to_string()
            .contains("keeps its name")
    );
}

/// A bad setting, a second pool of a name, a host that cannot start pools and metrics that
/// cannot register are refused with the messages the config API and the logs show, each
/// naming the setting or pool at fault.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_pools_say_which_setting_or_name() {
    let registry = Registry::new();
    let bus = Bus::start(BusConfig::default(), &registry, Box::new(PassThrough)).unwrap();
    let pools_registry = Registry::new();
    let err = Pools::start(&[config(|c| c.size = 0)], &bus, &pools_registry).unwrap_err();
    assert!(
        matches!(&err, lookout_pool::Error::Config { field, .. } if field == "pools.test.size"),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!("pools.test.size: must be 1–{}", lookout_pool::MAX_POOL_SIZE)
    );
    // The failed start above registered the pool metrics already.
    let err = Pools::start(&[], &bus, &pools_registry).unwrap_err();
    assert!(err.to_string().starts_with("pool metrics: "), "{err}");
    let err = Pools::default().add(config(|_| {})).unwrap_err();
    assert_eq!(err.to_string(), "pools.test: this host cannot start pools");

    let h = Harness::start(config(|c| c.size = 1)).await;
    let err = h.pools.add(config(|c| c.size = 2)).unwrap_err();
    assert_eq!(err.to_string(), "pools.test: two pools have this name");
    assert_eq!(h.pool().config().size, 1, "the running pool is unchanged");
    let mut renamed = config(|c| c.size = 1);
    renamed.name = "other".into();
    let err = h.pool().reconfigure(renamed).unwrap_err();
    assert_eq!(
        err.to_string(),
        "pools.other: a pool keeps its name (this is `test`)"
    );
    h.pool().stop("test over").await;
}

/// The API writes a pool's status as the same words as before it was a type.
#[test]
fn pool_status_is_written_as_its_word() {
    for (status, word) in [
        (PoolStatus::Ok, "\"ok\""),
        (PoolStatus::Degraded, "\"degraded\""),
        (PoolStatus::Unavailable, "\"unavailable\""),
        (PoolStatus::Stopping, "\"stopping\""),
    ] {
        assert_eq!(serde_json::to_string(&status).unwrap(), word);
    }
}
