//! The soak test (issue 10): steady HTTP load on ingest and execute while the host is
//! attacked from every side at once — a worker killed every few seconds, the sanitizer
//! swapped every few seconds (between `redact` and `allowlist`), a consumer plugin that traps
//! now and then, the sampling rate changed at runtime, and a live-stream client that reads
//! slowly. Then, at rest: every event and every request is accounted for, no secret got out,
//! memory did not grow, readiness answered throughout and told the truth, and the host is
//! ready again once the faults stop.
//!
//! Short in CI (`LOOKOUT_SOAK_SECS`, default 15 s); `cargo xtask soak --secs 600` runs it
//! long against a release build.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use lookout_testkit::{Host, LiveStream, eventually};
use serde_json::{Value, json};

use crate::LOOKOUT;
use crate::load::{SECRET, Seen, at_rest, by_label, delta, ingest};
use crate::plugins::put_plugin;

const POOL: &str = "soak";
const EXECUTE_TASKS: u64 = 4;
const TRAP_KIND: &str = "soak.trap";

fn soak_secs() -> u64 {
    std::env::var("LOOKOUT_SOAK_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(15)
}

fn start_host() -> Host {
    let dir = lookout_testkit::artifacts_dir().join("soak");
    let plugins = dir.join("plugins");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&plugins).unwrap();
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
name = "{POOL}"
app = "demo"
size = 3
queue_limit = 4
"#
        ),
    )
    .unwrap();
    for (name, manifest, wasm) in [
        (
            "digest",
            "name = \"digest\"\nworld = \"consumer\"\n[config]\nevery = \"1000\"\n".to_string(),
            lookout_artifacts::plugins::DIGEST,
        ),
        (
            "flaky",
            format!(
                "name = \"flaky\"\nworld = \"consumer\"\n[config]\ntrap_on = \"{TRAP_KIND}\"\n"
            ),
            lookout_artifacts::plugins::FLAKY,
        ),
    ] {
        std::fs::write(plugins.join(format!("{name}.toml")), manifest).unwrap();
        std::fs::write(plugins.join(format!("{name}.wasm")), wasm).unwrap();
    }
    Host::start(
        LOOKOUT,
        &[
            "--config",
            config.to_str().unwrap(),
            "--plugins",
            plugins.to_str().unwrap(),
        ],
    )
    .expect("lookout starts")
}

/// What the faults did, and what the clients of the faulty paths saw.
#[derive(Default)]
struct Faults {
    kills: AtomicU64,
    swaps: AtomicU64,
    traps_posted: AtomicU64,
    config_changes: AtomicU64,
    /// Execute answers: the worker died under the request (502) or it timed out (504).
    crashed: AtomicU64,
    ready_polls: AtomicU64,
    not_ready: AtomicU64,
}

/// Execute clients: besides what the load test expects, a request whose worker is killed
/// under it fails with 502 (`crashed`), and one whose pool is short of workers may be
/// refused (503).
async fn execute(host: Arc<Host>, seen: Arc<Seen>, faults: Arc<Faults>, until: Instant, task: u64) {
    let mut n = 0u64;
    while Instant::now() < until {
        n += 1;
        let failing = n.is_multiple_of(10);
        let body = if failing {
            json!({"command": "fail", "args": {"message": "boom", "password": SECRET}})
        } else {
            // (A successful result is the caller's own: `echo` would hand the secret back.)
            json!({"command": "echo", "args": {"task": task, "n": n}})
        };
        let sent = host
            .http
            .post(host.url(&format!("/api/v1/pools/{POOL}/execute")))
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
            502 | 504 => &faults.crashed,
            503 => &seen.rejected,
            _ => {
                seen.problem(format!("execute answered {status}: {text}"));
                continue;
            }
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Kills one of the pool's workers (kill -9) every `every`.
async fn killer(host: Arc<Host>, faults: Arc<Faults>, until: Instant, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    let mut round = 0usize;
    let mut killed = BTreeSet::new();
    while Instant::now() < until {
        tick.tick().await;
        round += 1;
        let Some(pool) = host.get_json(&format!("/api/v1/pools/{POOL}")).await else {
            continue;
        };
        // A killed worker's pid is listed until the pool has noticed: never count it twice.
        let pids: Vec<u64> = pool["workers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|w| w["pid"].as_u64())
            .filter(|pid| !killed.contains(pid))
            .collect();
        if pids.is_empty() {
            continue;
        }
        let pid = pids[round % pids.len()];
        let ok = std::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            killed.insert(pid);
            faults.kills.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Swaps the sanitizer between `allowlist` (only `user` and `n` keep their values) and
/// `redact` every `every`; every swap must succeed.
async fn swapper(
    host: Arc<Host>,
    seen: Arc<Seen>,
    faults: Arc<Faults>,
    until: Instant,
    every: Duration,
) {
    let allowlist = "name = \"allowlist\"\nworld = \"sanitizer\"\n[config]\nallow = \"user,n\"\n";
    let redact = "name = \"redact\"\nworld = \"sanitizer\"\n";
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    let mut round = 0u64;
    while Instant::now() < until {
        tick.tick().await;
        round += 1;
        let (name, manifest, wasm) = if round % 2 == 1 {
            (
                "allowlist",
                allowlist,
                lookout_artifacts::plugins::ALLOWLIST,
            )
        } else {
            ("redact", redact, lookout_artifacts::plugins::REDACT)
        };
        let r = put_plugin(&host, name, manifest, wasm).await;
        if r.status() == 200 {
            faults.swaps.fetch_add(1, Ordering::Relaxed);
        } else {
            let status = r.status();
            seen.problem(format!(
                "swap to {name}: {status} {}",
                r.text().await.unwrap_or_default()
            ));
        }
    }
}

/// Posts an event the `flaky` consumer traps on, every `every`.
async fn trapper(host: Arc<Host>, faults: Arc<Faults>, until: Instant, every: Duration) {
    let mut tick = tokio::time::interval(every);
    while Instant::now() < until {
        tick.tick().await;
        host.post_events(&json!([{ "kind": TRAP_KIND, "fields": { "password": SECRET } }]))
            .await;
        faults.traps_posted.fetch_add(1, Ordering::Relaxed);
    }
}

/// Changes the sampling rate of `load.audit` at runtime, every `every`.
async fn reconfigurer(
    host: Arc<Host>,
    seen: Arc<Seen>,
    faults: Arc<Faults>,
    until: Instant,
    every: Duration,
) {
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    let mut round = 0u64;
    while Instant::now() < until {
        tick.tick().await;
        round += 1;
        let rate = if round % 2 == 1 { 0.25 } else { 0.5 };
        let body = json!({"bus": {"sampling": {"rates": {"load.audit": rate}}}});
        match host
            .http
            .patch(host.url("/api/v1/config"))
            .json(&body)
            .send()
            .await
        {
            Ok(r) if r.status() == 200 => {
                faults.config_changes.fetch_add(1, Ordering::Relaxed);
            }
            Ok(r) => {
                let status = r.status();
                seen.problem(format!(
                    "config change: {status} {}",
                    r.text().await.unwrap_or_default()
                ));
            }
            Err(e) => seen.problem(format!("config change: {e}")),
        }
    }
}

/// A live-stream client that reads slowly: a pause after every 100 events, so its queue in
/// the host fills and the host must drop for it (counted) rather than wait or grow.
async fn slow_reader(mut stream: LiveStream, seen: Arc<Seen>) {
    let mut n = 0u64;
    while let Some(event) = stream.next().await {
        n += 1;
        seen.streamed.fetch_add(1, Ordering::Relaxed);
        if event.to_string().contains(SECRET) {
            seen.problem(format!("the secret on the live stream: {event}"));
        }
        if n.is_multiple_of(100) {
            // Deliberate slowness (the fault under test), not a wait for a condition.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Asks `/health/ready` every `every` until `until`: each answer must come within 2 s, be
/// 200 with nothing failing or 503 naming what fails, and what fails must be one of the
/// things the soak breaks on purpose (the pool whose workers it kills).
async fn readiness(
    host: Arc<Host>,
    seen: Arc<Seen>,
    faults: Arc<Faults>,
    until: Instant,
    every: Duration,
) {
    let mut tick = tokio::time::interval(every);
    while Instant::now() < until {
        tick.tick().await;
        let answer = tokio::time::timeout(
            Duration::from_secs(2),
            host.http.get(host.url("/health/ready")).send(),
        )
        .await;
        faults.ready_polls.fetch_add(1, Ordering::Relaxed);
        let response = match answer {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                seen.problem(format!("/health/ready: {e}"));
                continue;
            }
            Err(_) => {
                seen.problem("/health/ready took more than 2 s".into());
                continue;
            }
        };
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or_default();
        let failing: Vec<String> = body["failing"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| c["name"].as_str().unwrap_or("?").to_string())
            .collect();
        match status {
            200 if failing.is_empty() && body["status"] == "ready" => {}
            503 if !failing.is_empty() && body["status"] == "not_ready" => {
                faults.not_ready.fetch_add(1, Ordering::Relaxed);
                if let Some(other) = failing.iter().find(|c| !c.contains(POOL)) {
                    seen.problem(format!(
                        "not ready because of {other}, which the soak does not break: {body}"
                    ));
                }
            }
            _ => seen.problem(format!("/health/ready answered {status}: {body}")),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_faults_nothing_is_lost_or_leaked_and_the_host_recovers() {
    let secs = soak_secs();
    let host = Arc::new(start_host());
    eventually("the soak pool ready", Duration::from_secs(30), || async {
        let pool = host.get_json(&format!("/api/v1/pools/{POOL}")).await?;
        let workers = pool["workers"].as_array()?;
        (workers.len() == 3 && workers.iter().all(|w| w["state"] == "available")).then_some(())
    })
    .await;
    eventually("both consumers loaded", Duration::from_secs(30), || async {
        let list = host.get_json("/api/v1/plugins").await?.to_string();
        (list.contains("\"digest\"") && list.contains("\"flaky\"")).then_some(())
    })
    .await;
    let seen = Arc::new(Seen::default());
    let faults = Arc::new(Faults::default());
    let stream = LiveStream::open(&host, "").await.unwrap();
    let reader = tokio::spawn(slow_reader(stream, seen.clone()));

    let before = at_rest(&host, Duration::from_secs(30)).await;
    let consumers: BTreeSet<String> =
        by_label(&before, "lookout_consumer_events_total", "consumer")
            .into_keys()
            .collect();
    let rss_start = host.rss_bytes().unwrap();

    let started = Instant::now();
    let until = started + Duration::from_secs(secs);
    let every = |ms| Duration::from_millis(ms);
    let mut tasks = Vec::new();
    for task in 0..2 {
        tasks.push(tokio::spawn(ingest(
            host.clone(),
            seen.clone(),
            until,
            task,
        )));
    }
    for task in 0..EXECUTE_TASKS {
        tasks.push(tokio::spawn(execute(
            host.clone(),
            seen.clone(),
            faults.clone(),
            until,
            task,
        )));
    }
    tasks.push(tokio::spawn(killer(
        host.clone(),
        faults.clone(),
        until,
        every(2000),
    )));
    tasks.push(tokio::spawn(swapper(
        host.clone(),
        seen.clone(),
        faults.clone(),
        until,
        every(1500),
    )));
    tasks.push(tokio::spawn(trapper(
        host.clone(),
        faults.clone(),
        until,
        every(1000),
    )));
    tasks.push(tokio::spawn(reconfigurer(
        host.clone(),
        seen.clone(),
        faults.clone(),
        until,
        every(3000),
    )));
    tasks.push(tokio::spawn(readiness(
        host.clone(),
        seen.clone(),
        faults.clone(),
        until,
        every(250),
    )));
    let mut rss = Vec::new();
    let mut tick = tokio::time::interval(every(250));
    while Instant::now() < until {
        tick.tick().await;
        rss.push(host.rss_bytes().unwrap());
    }
    for task in tasks {
        task.await.unwrap();
    }

    // The faults stop: the host is ready again, and comes to rest.
    eventually(
        "ready again once the faults stop",
        Duration::from_secs(30),
        || async {
            let r = host.http.get(host.url("/health/ready")).send().await.ok()?;
            (r.status() == 200).then_some(())
        },
    )
    .await;
    // A crash is counted once the pool has read the worker's last words (≈ 50 ms).
    eventually(
        "every kill counted as a worker exit",
        Duration::from_secs(10),
        || async {
            let m = host.metrics().await;
            let exits = m.sum(
                "lookout_worker_exits_total",
                &[("pool", POOL), ("reason", "crashed")],
            ) - before.sum(
                "lookout_worker_exits_total",
                &[("pool", POOL), ("reason", "crashed")],
            );
            (exits as u64 >= faults.kills.load(Ordering::Relaxed)).then_some(())
        },
    )
    .await;
    let after = at_rest(&host, Duration::from_secs(60)).await;
    reader.abort();

    let load = |s: &AtomicU64| s.load(Ordering::Relaxed);
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    let (quarter, last, peak) = (
        rss[rss.len() / 4],
        *rss.last().unwrap(),
        *rss.iter().max().unwrap(),
    );
    let consumer_outcome = |c: &str, o: &str| {
        delta(
            &after,
            &before,
            "lookout_consumer_events_total",
            &[("consumer", c), ("outcome", o)],
        )
    };
    println!(
        "soak: {secs} s; faults: {} workers killed, {} sanitizer swaps, {} trap events, {} config changes; \
         readiness polled {} times, not ready {}",
        load(&faults.kills),
        load(&faults.swaps),
        load(&faults.traps_posted),
        load(&faults.config_changes),
        load(&faults.ready_polls),
        load(&faults.not_ready),
    );
    println!(
        "soak: {} events accepted by HTTP; {} executes ({} ok, {} failed in the worker, {} crashed under a kill, {} refused); \
         {} events read by the slow stream client ({} dropped for it); flaky consumer: {} delivered, {} failed",
        load(&seen.accepted),
        load(&seen.executes),
        load(&seen.ok),
        load(&seen.failed),
        load(&faults.crashed),
        load(&seen.rejected),
        load(&seen.streamed),
        consumer_outcome("live_stream", "dropped"),
        consumer_outcome("flaky", "delivered"),
        consumer_outcome("flaky", "failed"),
    );
    println!(
        "soak: RSS {:.1} MiB before, {:.1} at a quarter, {:.1} at the end, {:.1} peak",
        mib(rss_start),
        mib(quarter),
        mib(last),
        mib(peak)
    );

    // Nothing unexpected on any client, no secret anywhere.
    let problems = seen.problems.lock().unwrap().clone();
    assert!(problems.is_empty(), "{problems:#?}");
    assert!(
        !host.logs().join("\n").contains(SECRET),
        "the secret reached the host's logs"
    );
    // The faults happened.
    assert!(
        load(&faults.kills) >= secs / 3,
        "workers killed: {}",
        load(&faults.kills)
    );
    assert!(
        load(&faults.swaps) >= secs / 3,
        "sanitizer swaps: {}",
        load(&faults.swaps)
    );
    assert!(
        consumer_outcome("flaky", "failed") > 0,
        "the flaky consumer trapped"
    );
    assert!(load(&seen.accepted) > 0 && load(&seen.ok) > 0);

    // Every published event has exactly one outcome, per kind.
    for (kind, n) in by_label(&after, "lookout_events_published_total", "kind") {
        assert_eq!(
            n,
            after.sum("lookout_events_total", &[("kind", &kind)]),
            "{kind}: published ≠ Σ outcomes"
        );
    }
    // What the ingest clients were told matches what the host counted.
    let counted = |name, labels: &[(&str, &str)]| -> u64 {
        ["load.ingest", "load.audit", "load.burst"]
            .iter()
            .map(|k| {
                let mut l = labels.to_vec();
                l.push(("kind", k));
                delta(&after, &before, name, &l)
            })
            .sum()
    };
    assert_eq!(
        load(&seen.accepted) + load(&seen.dropped),
        counted("lookout_events_published_total", &[])
    );
    assert_eq!(
        load(&seen.dropped),
        counted("lookout_events_total", &[("outcome", "dropped")])
    );
    // Every consumer there throughout — the trapping one and the slow stream included —
    // accounted for every accepted event exactly once.
    let accepted = delta(
        &after,
        &before,
        "lookout_events_total",
        &[("outcome", "accepted")],
    );
    assert!(
        consumers.contains("flaky") && consumers.contains("live_stream"),
        "{consumers:?}"
    );
    for consumer in &consumers {
        assert_eq!(
            delta(
                &after,
                &before,
                "lookout_consumer_events_total",
                &[("consumer", consumer)]
            ),
            accepted,
            "{consumer}: accepted ≠ Σ its outcomes"
        );
    }
    // Every request was run or refused, and counted so; every kill was seen as a crash.
    let pool = [("pool", POOL)];
    assert_eq!(
        delta(&after, &before, "lookout_requests_total", &pool),
        load(&seen.ok) + load(&seen.failed) + load(&faults.crashed),
        "requests run"
    );
    assert_eq!(
        delta(&after, &before, "lookout_requests_rejected_total", &pool),
        load(&seen.rejected),
        "requests refused"
    );
    let exits = delta(&after, &before, "lookout_worker_exits_total", &pool);
    assert!(
        exits >= load(&faults.kills),
        "each kill is a worker exit: {exits} exits, {} kills ({:?})",
        load(&faults.kills),
        by_label(&after, "lookout_worker_exits_total", "reason")
    );
    // Memory levels off: no leak across swaps, traps and restarts.
    assert!(mib(peak) < 512.0, "peak RSS {:.1} MiB", mib(peak));
    assert!(
        last <= quarter + (quarter / 2).max(64 << 20),
        "RSS grew from {:.1} MiB at a quarter of the soak to {:.1} MiB at its end",
        mib(quarter),
        mib(last)
    );
}
