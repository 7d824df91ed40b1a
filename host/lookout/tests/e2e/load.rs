//! The load test (requirement 7.6): HTTP ingest, pool requests and the bus at high volume
//! for a bounded time, with two WASM consumers and a live-stream client attached; then every
//! event and every request is accounted for, no secret got out, and memory stayed bounded.
//!
//! Short in CI (`LOOKOUT_LOAD_SECS`, default 6 s); `cargo xtask load --secs 600` runs it
//! long against a release build and prints the same report.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use lookout_testkit::{Host, LiveStream, Metrics, eventually};
use serde_json::{Value, json};

use crate::LOOKOUT;

pub(crate) const SECRET: &str = "hunter2-load-Zq9x";
const INGEST_TASKS: usize = 2;
const EXECUTE_TASKS: usize = 6;
const EVENTS_PER_POST: usize = 200;

fn load_secs() -> u64 {
    std::env::var("LOOKOUT_LOAD_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6)
}

/// A host for a run, in `<artifacts>/<pool>`: sampling and a rate limit on the clients'
/// kinds so every bus outcome occurs, a demo pool `pool` of `size` workers with `queue_limit`
/// waiting, and in its plugin folder the digest consumer and `plugins` (name, manifest,
/// component).
pub(crate) fn start_load_host(
    pool: &str,
    size: usize,
    queue_limit: usize,
    plugins: &[(&str, String, &[u8])],
) -> Host {
    let dir = lookout_testkit::artifacts_dir().join(pool);
    let folder = dir.join("plugins");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&folder).unwrap();
    let config = dir.join("lookout.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[bus.sampling.rates]
"load.audit" = 0.5

[bus.rate_limits]
"load.burst" = {{ per_second = 500 }}

[[pools]]
name = "{pool}"
app = "demo"
size = {size}
queue_limit = {queue_limit}
"#
        ),
    )
    .unwrap();
    let digest = (
        "digest",
        "name = \"digest\"\nworld = \"consumer\"\n[config]\nevery = \"1000\"\n".to_string(),
        lookout_artifacts::plugins::DIGEST,
    );
    for (name, manifest, wasm) in std::iter::once(&digest).chain(plugins) {
        std::fs::write(folder.join(format!("{name}.toml")), manifest).unwrap();
        std::fs::write(folder.join(format!("{name}.wasm")), wasm).unwrap();
    }
    Host::start(
        LOOKOUT,
        &[
            "--config",
            config.to_str().unwrap(),
            "--plugins",
            folder.to_str().unwrap(),
        ],
    )
    .expect("lookout starts")
}

/// A pool small enough to saturate (2 workers, 2 waiting) and, besides digest, the
/// error-counter WASM consumer.
fn start_host() -> Host {
    let manifest = std::fs::read_to_string(
        lookout_testkit::repo_root().join("examples/plugins/error-counter.toml"),
    )
    .unwrap();
    start_load_host(
        "load",
        2,
        2,
        &[(
            "error-counter",
            manifest,
            lookout_artifacts::plugins::ERROR_COUNTER,
        )],
    )
}

/// What the clients saw.
#[derive(Default)]
pub(crate) struct Seen {
    pub(crate) posts: AtomicU64,
    pub(crate) accepted: AtomicU64,
    pub(crate) dropped: AtomicU64,
    pub(crate) executes: AtomicU64,
    pub(crate) ok: AtomicU64,
    pub(crate) rejected: AtomicU64,
    pub(crate) failed: AtomicU64,
    /// Execute answers 502/504: the worker died under the request (or was killed as hung).
    pub(crate) crashed: AtomicU64,
    pub(crate) streamed: AtomicU64,
    /// Anything else: an unexpected status, a transport error, a leaked secret.
    pub(crate) problems: std::sync::Mutex<Vec<String>>,
}

impl Seen {
    pub(crate) fn problem(&self, what: String) {
        let mut problems = self.problems.lock().unwrap();
        if problems.len() < 20 {
            problems.push(what);
        }
    }
}

fn ingest_body(round: u64) -> Value {
    let events: Vec<Value> = (0..EVENTS_PER_POST as u64)
        .map(|i| {
            let kind = ["load.ingest", "load.audit", "load.burst"][(i % 3) as usize];
            json!({
                "kind": kind,
                "correlation_id": format!("load-{round}-{i}"),
                "severity": if i % 50 == 0 { "error" } else { "info" },
                "fields": {
                    "user": "bob",
                    "password": SECRET,
                    "note": format!("round {round} with token={SECRET}"),
                    "n": i,
                },
            })
        })
        .collect();
    Value::Array(events)
}

pub(crate) async fn ingest(host: Arc<Host>, seen: Arc<Seen>, until: Instant, task: u64) {
    let mut round = task << 32;
    while Instant::now() < until {
        round += 1;
        let sent = host
            .http
            .post(host.url("/api/v1/events"))
            .json(&ingest_body(round))
            .send()
            .await;
        seen.posts.fetch_add(1, Ordering::Relaxed);
        match sent {
            Ok(r) if r.status() == 202 => {
                let body: Value = r.json().await.unwrap_or_default();
                let (Some(accepted), Some(dropped)) =
                    (body["accepted"].as_u64(), body["dropped"].as_u64())
                else {
                    seen.problem(format!("ingest answered {body}"));
                    continue;
                };
                seen.accepted.fetch_add(accepted, Ordering::Relaxed);
                seen.dropped.fetch_add(dropped, Ordering::Relaxed);
            }
            Ok(r) => seen.problem(format!("ingest answered {}", r.status())),
            Err(e) => {
                // The host is gone (or going): nothing more to post.
                seen.problem(format!("ingest: {e}"));
                return;
            }
        }
    }
}

/// An execute client on `pool` until `until`: one request in ten fails in the worker, with
/// the secret in its arguments. What it was answered is counted in `seen`; anything but an
/// answer a client of a busy, possibly crashing pool may get is a problem.
pub(crate) async fn execute(
    host: Arc<Host>,
    seen: Arc<Seen>,
    until: Instant,
    task: u64,
    pool: &'static str,
) {
    let mut n = 0u64;
    while Instant::now() < until {
        n += 1;
        let failing = n.is_multiple_of(10);
        // (A successful result is the caller's own: `echo` would hand a secret back.)
        let body = if failing {
            json!({"command": "fail", "args": {"message": "boom", "password": SECRET}})
        } else {
            json!({"command": "echo", "args": {"task": task, "n": n}})
        };
        let sent = host
            .http
            .post(host.url(&format!("/api/v1/pools/{pool}/execute")))
            .json(&body)
            .send()
            .await;
        seen.executes.fetch_add(1, Ordering::Relaxed);
        let response = match sent {
            Ok(r) => r,
            Err(e) => {
                seen.problem(format!("execute: {e}"));
                continue;
            }
        };
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        if text.contains(SECRET) {
            seen.problem(format!("the secret in an execute answer: {text}"));
        }
        let counter = match status {
            200 => &seen.ok,
            500 if failing => &seen.failed,
            502 | 504 => &seen.crashed,
            503 if text.contains("queue_full") || text.contains("unavailable") => &seen.rejected,
            _ => {
                seen.problem(format!("execute answered {status}: {text}"));
                continue;
            }
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Reads the live stream as fast as it can, checking every event for the secret.
pub(crate) async fn watch_stream(mut stream: LiveStream, seen: Arc<Seen>) {
    while let Some(event) = stream.next().await {
        seen.streamed.fetch_add(1, Ordering::Relaxed);
        if event.to_string().contains(SECRET) {
            seen.problem(format!("the secret on the live stream: {event}"));
        }
    }
}

pub(crate) fn by_label(metrics: &Metrics, name: &str, label: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for s in metrics.samples.iter().filter(|s| s.name == name) {
        if let Some((_, v)) = s.labels.iter().find(|(k, _)| k == label) {
            *out.entry(v.clone()).or_insert(0.0) += s.value;
        }
    }
    out
}

/// `/metrics` once the host is at rest: nothing waiting anywhere, every published event has
/// its outcome, and two reads in a row agree.
pub(crate) async fn at_rest(host: &Host, timeout: Duration) -> Metrics {
    let last = std::sync::Mutex::new(None::<f64>);
    eventually(
        "the host at rest (queues empty, counts settled)",
        timeout,
        || async {
            let m = host.metrics().await;
            let published = m.sum("lookout_events_published_total", &[]);
            let settled = m.sum("lookout_bus_ingress_queue_length", &[]) == 0.0
                && m.sum("lookout_consumer_queue_events", &[]) == 0.0
                && published == m.sum("lookout_events_total", &[])
                && m.sum("lookout_queue_length", &[]) == 0.0;
            let mut last = last.lock().unwrap();
            let stable = *last == Some(published);
            *last = Some(published);
            (settled && stable).then_some(m)
        },
    )
    .await
}

pub(crate) fn delta(after: &Metrics, before: &Metrics, name: &str, labels: &[(&str, &str)]) -> u64 {
    (after.sum(name, labels) - before.sum(name, labels)) as u64
}

/// `ingest_clients` ingest clients and `execute.0` execute clients on pool `execute.1`,
/// running until `until`, each on its own task (the clients use both cores, as real ones
/// would).
pub(crate) fn spawn_clients(
    host: &Arc<Host>,
    seen: &Arc<Seen>,
    until: Instant,
    ingest_clients: usize,
    (execute_clients, pool): (usize, &'static str),
) -> Vec<tokio::task::JoinHandle<()>> {
    let ingests = (0..ingest_clients as u64)
        .map(|task| tokio::spawn(ingest(host.clone(), seen.clone(), until, task)));
    let executes = (0..execute_clients as u64)
        .map(|task| tokio::spawn(execute(host.clone(), seen.clone(), until, task, pool)));
    ingests.chain(executes).collect()
}

/// The kinds the ingest clients post.
const LOAD_KINDS: [&str; 3] = ["load.ingest", "load.audit", "load.burst"];

/// Waits until `pool` has `workers` workers, all available, and each of `plugins` runs.
pub(crate) async fn ready_for_load(host: &Host, pool: &str, workers: usize, plugins: &[&str]) {
    eventually("the pool ready", Duration::from_secs(30), || async {
        let pool = host.get_json(&format!("/api/v1/pools/{pool}")).await?;
        let slots = pool["workers"].as_array()?;
        (slots.len() == workers && slots.iter().all(|w| w["state"] == "available")).then_some(())
    })
    .await;
    eventually("the plugins loaded", Duration::from_secs(30), || async {
        let list = host.get_json("/api/v1/plugins").await?.to_string();
        plugins
            .iter()
            .all(|p| list.contains(&format!("\"{p}\"")))
            .then_some(())
    })
    .await;
}

/// Where a run starts from: the host at rest, the consumers registered then, its memory.
pub(crate) struct Baseline {
    pub(crate) before: Metrics,
    pub(crate) consumers: BTreeSet<String>,
    pub(crate) rss: u64,
}

pub(crate) async fn baseline(host: &Host) -> Baseline {
    let before = at_rest(host, Duration::from_secs(30)).await;
    let consumers = by_label(&before, "lookout_consumer_events_total", "consumer")
        .into_keys()
        .collect();
    Baseline {
        before,
        consumers,
        rss: host.rss_bytes().unwrap(),
    }
}

/// Resident memory every `period` until `until`.
pub(crate) async fn sample_rss(host: &Host, until: Instant, period: Duration) -> Vec<u64> {
    let mut rss = Vec::new();
    let mut tick = tokio::time::interval(period);
    while Instant::now() < until {
        tick.tick().await;
        rss.push(host.rss_bytes().unwrap());
    }
    rss
}

pub(crate) fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Memory over a run: the line for the report, and the bound — under 512 MiB, and no
/// growth after the first quarter beyond max(64 MiB, 50 %): the queues are bounded, so
/// after warming up RSS levels off.
pub(crate) fn check_rss(what: &str, start: u64, rss: &[u64]) {
    let (quarter, last) = (rss[rss.len() / 4], *rss.last().unwrap());
    let peak = *rss.iter().max().unwrap();
    println!(
        "{what}: RSS {:.1} MiB before, {:.1} at a quarter, {:.1} at the end, {:.1} peak",
        mib(start),
        mib(quarter),
        mib(last),
        mib(peak)
    );
    assert!(mib(peak) < 512.0, "peak RSS {:.1} MiB", mib(peak));
    assert!(
        last <= quarter + (quarter / 2).max(64 << 20),
        "RSS grew from {:.1} MiB at a quarter of the run to {:.1} MiB at its end",
        mib(quarter),
        mib(last)
    );
}

/// The books after a run balance: every published event has exactly one outcome, per kind;
/// what the ingest clients were told matches what the host counted; every consumer there
/// from the start accounted for every accepted event exactly once. Returns the counts of
/// the clients' kinds by outcome.
pub(crate) fn check_events(
    base: &Baseline,
    after: &Metrics,
    seen: &Seen,
) -> BTreeMap<&'static str, u64> {
    for (kind, n) in by_label(after, "lookout_events_published_total", "kind") {
        let outcomes = after.sum("lookout_events_total", &[("kind", &kind)]);
        assert_eq!(n, outcomes, "{kind}: published ≠ Σ outcomes");
    }
    let counted = |name, labels: &[(&str, &str)]| -> u64 {
        LOAD_KINDS
            .iter()
            .map(|k| {
                let mut l = labels.to_vec();
                l.push(("kind", k));
                delta(after, &base.before, name, &l)
            })
            .sum()
    };
    let load = |s: &AtomicU64| s.load(Ordering::Relaxed);
    assert_eq!(
        load(&seen.accepted) + load(&seen.dropped),
        counted("lookout_events_published_total", &[]),
        "events posted vs published"
    );
    let outcomes: BTreeMap<&str, u64> = ["accepted", "dropped", "sampled_out", "rate_limited"]
        .into_iter()
        .map(|o| (o, counted("lookout_events_total", &[("outcome", o)])))
        .collect();
    assert_eq!(load(&seen.dropped), outcomes["dropped"]);
    let accepted = delta(
        after,
        &base.before,
        "lookout_events_total",
        &[("outcome", "accepted")],
    );
    for consumer in &base.consumers {
        assert_eq!(
            delta(
                after,
                &base.before,
                "lookout_consumer_events_total",
                &[("consumer", consumer)]
            ),
            accepted,
            "{consumer}: accepted ≠ Σ its outcomes"
        );
    }
    outcomes
}

/// Every request the clients sent to `pool` was run (ok, failed, crashed) or refused, and
/// counted so.
pub(crate) fn check_requests(base: &Baseline, after: &Metrics, seen: &Seen, pool: &str) {
    let load = |s: &AtomicU64| s.load(Ordering::Relaxed);
    let pool = [("pool", pool)];
    assert_eq!(
        delta(after, &base.before, "lookout_requests_total", &pool),
        load(&seen.ok) + load(&seen.failed) + load(&seen.crashed),
        "requests run"
    );
    assert_eq!(
        delta(
            after,
            &base.before,
            "lookout_requests_rejected_total",
            &pool
        ),
        load(&seen.rejected),
        "requests refused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_load_every_event_and_request_is_accounted_for_and_memory_stays_bounded() {
    let secs = load_secs();
    let host = Arc::new(start_host());
    ready_for_load(&host, "load", 2, &["digest", "error-counter"]).await;
    let seen = Arc::new(Seen::default());
    let stream = LiveStream::open(&host, "").await.unwrap();
    let watcher = tokio::spawn(watch_stream(stream, seen.clone()));
    let base = baseline(&host).await;

    let started = Instant::now();
    let until = started + Duration::from_secs(secs);
    let clients = spawn_clients(&host, &seen, until, INGEST_TASKS, (EXECUTE_TASKS, "load"));
    let rss = sample_rss(&host, until, Duration::from_millis(100)).await;
    for client in clients {
        client.await.unwrap();
    }
    let elapsed = started.elapsed();
    let after = at_rest(&host, Duration::from_secs(60)).await;
    watcher.abort();

    // The report, for `cargo xtask load` and for the CI log.
    let before = &base.before;
    let published = delta(&after, before, "lookout_events_published_total", &[]);
    let load = |s: &AtomicU64| s.load(Ordering::Relaxed);
    println!(
        "load: {secs} s ({elapsed:.1?}), {} ingest posts ({:.0} events/s accepted by HTTP), \
         {} executes ({:.0}/s: {} ok, {} failed in the worker, {} refused queue_full), \
         {} events on the live stream",
        load(&seen.posts),
        load(&seen.accepted) as f64 / elapsed.as_secs_f64(),
        load(&seen.executes),
        load(&seen.executes) as f64 / elapsed.as_secs_f64(),
        load(&seen.ok),
        load(&seen.failed),
        load(&seen.rejected),
        load(&seen.streamed),
    );
    for consumer in &base.consumers {
        let get = |o| {
            delta(
                &after,
                before,
                "lookout_consumer_events_total",
                &[("consumer", consumer), ("outcome", o)],
            )
        };
        println!(
            "load: consumer {consumer}: {} delivered, {} dropped, {} failed",
            get("delivered"),
            get("dropped"),
            get("failed"),
        );
    }
    check_rss("load", base.rss, &rss);

    // Nothing went wrong on the client side, and no secret got out.
    let problems = seen.problems.lock().unwrap().clone();
    assert!(problems.is_empty(), "{problems:#?}");
    let logs = host.logs().join("\n");
    assert!(!logs.contains(SECRET), "the secret reached the host's logs");
    assert!(load(&seen.accepted) > 0 && load(&seen.ok) > 0);
    assert_eq!(load(&seen.crashed), 0, "no worker crashed under plain load");

    // Every event accounted for, and every bus outcome occurred.
    assert!(
        base.consumers.len() >= 4,
        "recent_errors, live_stream and the two plugins: {:?}",
        base.consumers
    );
    let outcomes = check_events(&base, &after, &seen);
    println!("load: bus: {published} published; the clients' kinds: {outcomes:?}");
    assert!(outcomes["sampled_out"] > 0);
    assert!(outcomes["rate_limited"] > 0);

    // Every request the clients sent was run or refused, and counted so.
    check_requests(&base, &after, &seen, "load");
    assert_eq!(
        delta(
            &after,
            before,
            "lookout_events_published_total",
            &[("kind", "request.completed")]
        ),
        load(&seen.ok) + load(&seen.failed),
        "one request.completed per request run"
    );
    let rss_at = |i: usize| rss[i];
    lookout_testkit::bench_summary(
        "load",
        &format!(
            "{secs} s of HTTP ingest ({INGEST_TASKS} clients) + execute ({EXECUTE_TASKS} clients, 2 workers) + 4 consumers"
        ),
        &format!(
            "{:.0} events/s ingested, {:.0} executes/s; {published} events, {} requests; RSS {:.0} → {:.0} MiB (peak {:.0})",
            load(&seen.accepted) as f64 / elapsed.as_secs_f64(),
            load(&seen.executes) as f64 / elapsed.as_secs_f64(),
            load(&seen.executes),
            mib(rss_at(rss.len() / 4)),
            mib(rss_at(rss.len() - 1)),
            mib(*rss.iter().max().unwrap())
        ),
        "0 unaccounted, 0 leaked",
    );
}

/// The fields of every JSON log line whose message is `message`.
fn log_fields(host: &Host, message: &str) -> Vec<Value> {
    host.logs()
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["message"] == message)
        .map(|v| v["fields"].clone())
        .collect()
}

/// SIGTERM under load: the host stops accepting, drains the bus and its consumers within
/// the grace, and its final log lines reconcile — every published event has one outcome,
/// every event a client was told was taken is among them, every consumer accounted for
/// every accepted event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_is_reconciled_from_the_final_log_lines() {
    let host = Arc::new(crate::quiet_host());
    let seen = Arc::new(Seen::default());
    let until = Instant::now() + Duration::from_secs(60);
    // A client stops at its first failed post: the host has stopped listening. (Its
    // problems are expected here, and not checked.)
    let clients = spawn_clients(&host, &seen, until, INGEST_TASKS, (0, "none"));
    eventually("load flowing", Duration::from_secs(30), || async {
        (seen.accepted.load(Ordering::Relaxed) >= 20_000).then_some(())
    })
    .await;
    let stopping = host.clone();
    let status = tokio::task::spawn_blocking(move || {
        // Only this test holds the other clones once the clients end; `terminate` needs
        // `&mut`, so work on the process id directly.
        let pid = stopping.pid().to_string();
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(status.success());
    for client in clients {
        client.await.unwrap();
    }
    let totals = eventually(
        "the final totals logged",
        Duration::from_secs(30),
        || async { log_fields(&host, "final totals").pop() },
    )
    .await;

    let n = |v: &Value, k: &str| v[k].as_u64().unwrap_or(0);
    let outcomes = |v: &Value| {
        [
            "accepted",
            "sampled_out",
            "rate_limited",
            "dropped",
            "filtered",
        ]
        .iter()
        .map(|o| n(v, o))
        .sum::<u64>()
    };
    assert_eq!(n(&totals, "unprocessed"), 0, "{totals}");
    assert_eq!(n(&totals, "published"), outcomes(&totals), "{totals}");
    let kinds = log_fields(&host, "final event counts");
    let mut told = 0;
    for kind in &kinds {
        assert_eq!(n(kind, "published"), outcomes(kind), "{kind}");
        if kind["kind"]
            .as_str()
            .is_some_and(|k| k.starts_with("load."))
        {
            told += n(kind, "published");
        }
    }
    assert_eq!(
        told,
        seen.accepted.load(Ordering::Relaxed) + seen.dropped.load(Ordering::Relaxed),
        "what clients were told vs what the host counted"
    );
    let consumers = log_fields(&host, "final consumer counts");
    let recent = consumers
        .iter()
        .find(|c| c["consumer"] == "recent_errors")
        .expect("the recent-errors consumer's line");
    assert_eq!(
        n(recent, "delivered") + n(recent, "dropped") + n(recent, "failed"),
        n(&totals, "accepted"),
        "{recent}"
    );
    let stopped = host.logs().iter().any(|l| l.contains("\"stopped\""));
    assert!(stopped, "the last line says stopped");
}
