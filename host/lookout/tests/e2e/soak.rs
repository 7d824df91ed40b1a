//! The soak test (issue 10): steady HTTP load on ingest and execute while the host is
//! attacked from every side at once — a worker killed every few seconds, the sanitizer
//! swapped every few seconds (between `redact` and `allowlist`), a consumer plugin that traps
//! now and then, one that sleeps 3 s against its 100 ms deadline now and then, the sampling
//! rate changed at runtime, and a live-stream client that reads slowly. Then, at rest: every event and every request is accounted for, no secret got out,
//! memory did not grow, readiness answered throughout and told the truth, and the host is
//! ready again once the faults stop.
//!
//! Short in CI (`LOOKOUT_SOAK_SECS`, default 15 s); `cargo xtask soak --secs 600` runs it
//! long against a release build.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use lookout_testkit::{Host, LiveStream, eventually};
use serde_json::{Value, json};

use crate::load::{
    SECRET, Seen, at_rest, baseline, by_label, check_events, check_requests, check_rss, delta,
    ready_for_load, sample_rss, spawn_clients, start_load_host,
};
use crate::plugins::put_plugin;

const POOL: &str = "soak";
const EXECUTE_TASKS: usize = 4;
const TRAP_KIND: &str = "soak.trap";
const SLEEP_KIND: &str = "soak.sleep";

fn soak_secs() -> u64 {
    std::env::var("LOOKOUT_SOAK_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(15)
}

/// Three workers, four waiting; besides digest, the `flaky` consumer that traps on
/// `TRAP_KIND`, and `sleepy` (the same component) that sleeps 3 s on `SLEEP_KIND` against a
/// 100 ms deadline.
fn start_host() -> Host {
    let flaky = format!(
        "name = \"flaky\"\nworld = \"consumer\"\n[config]\ntrap_on = \"{TRAP_KIND}\"\n\
         sleep_on = \"none\"\n"
    );
    let sleepy = format!(
        "name = \"sleepy\"\nworld = \"consumer\"\n[config]\ntrap_on = \"none\"\n\
         sleep_on = \"{SLEEP_KIND}\"\nsleep_ms = \"3000\"\n[limits]\ncall_timeout_ms = 100\n"
    );
    let flaky_wasm = lookout_artifacts::plugins::FLAKY;
    start_load_host(
        POOL,
        3,
        4,
        &[("flaky", flaky, flaky_wasm), ("sleepy", sleepy, flaky_wasm)],
    )
}

/// What the faults did.
#[derive(Default)]
struct Faults {
    kills: AtomicU64,
    swaps: AtomicU64,
    traps_posted: AtomicU64,
    sleeps_posted: AtomicU64,
    config_changes: AtomicU64,
    ready_polls: AtomicU64,
    not_ready: AtomicU64,
}

/// Runs `act(1)`, `act(2)`, … one `period` apart, the first one `period` in, until `until`.
async fn every<F, Fut>(period: Duration, until: Instant, mut act: F)
where
    F: FnMut(u64) -> Fut,
    Fut: Future<Output = ()>,
{
    let mut tick = tokio::time::interval(period);
    tick.tick().await;
    let mut round = 0;
    while Instant::now() < until {
        tick.tick().await;
        round += 1;
        act(round).await;
    }
}

/// Kills one of the pool's workers (kill -9); a killed worker's pid is listed until the pool
/// has noticed, so it is never counted twice.
async fn kill_a_worker(
    host: &Host,
    faults: &Faults,
    killed: &std::sync::Mutex<BTreeSet<u64>>,
    round: u64,
) {
    let Some(pool) = host.get_json(&format!("/api/v1/pools/{POOL}")).await else {
        return;
    };
    let pids: Vec<u64> = pool["workers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|w| w["pid"].as_u64())
        .filter(|pid| !killed.lock().unwrap().contains(pid))
        .collect();
    let Some(&pid) = pids.get(round as usize % pids.len().max(1)) else {
        return;
    };
    let ok = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        killed.lock().unwrap().insert(pid);
        faults.kills.fetch_add(1, Ordering::Relaxed);
    }
}

/// Swaps the sanitizer to `allowlist` (only `user` and `n` keep their values) on odd rounds
/// and back to `redact` on even ones; every swap must succeed.
async fn swap_the_sanitizer(host: &Host, seen: &Seen, faults: &Faults, round: u64) {
    let (name, manifest, wasm) = if round % 2 == 1 {
        (
            "allowlist",
            "name = \"allowlist\"\nworld = \"sanitizer\"\n[config]\nallow = \"user,n\"\n",
            lookout_artifacts::plugins::ALLOWLIST,
        )
    } else {
        (
            "redact",
            "name = \"redact\"\nworld = \"sanitizer\"\n",
            lookout_artifacts::plugins::REDACT,
        )
    };
    let r = put_plugin(host, name, manifest, wasm).await;
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

/// Sets the sampling rate of `load.audit` to 0.25 on odd rounds, 0.5 on even ones.
async fn change_the_config(host: &Host, seen: &Seen, faults: &Faults, round: u64) {
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

/// Asks `/health/ready` once: the answer must come within 2 s, be 200 with nothing failing
/// or 503 naming what fails, and what fails must be what the soak breaks on purpose (the
/// pool whose workers it kills).
async fn ask_readiness(host: &Host, seen: &Seen, faults: &Faults) {
    faults.ready_polls.fetch_add(1, Ordering::Relaxed);
    let answer = tokio::time::timeout(
        Duration::from_secs(2),
        host.http.get(host.url("/health/ready")).send(),
    )
    .await;
    let response = match answer {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return seen.problem(format!("/health/ready: {e}")),
        Err(_) => return seen.problem("/health/ready took more than 2 s".into()),
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

/// A live-stream client that reads slowly — at most 100 events every 50 ms — so its queue
/// in the host fills and the host must drop for it (counted) rather than wait or grow.
async fn slow_reader(mut stream: LiveStream, seen: Arc<Seen>) {
    let mut pace = tokio::time::interval(Duration::from_millis(50));
    loop {
        pace.tick().await;
        for _ in 0..100 {
            let Some(event) = stream.next().await else {
                return;
            };
            seen.streamed.fetch_add(1, Ordering::Relaxed);
            if event.to_string().contains(SECRET) {
                seen.problem(format!("the secret on the live stream: {event}"));
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_faults_nothing_is_lost_or_leaked_and_the_host_recovers() {
    let secs = soak_secs();
    let host = Arc::new(start_host());
    ready_for_load(&host, POOL, 3, &["digest", "flaky", "sleepy"]).await;
    let seen = Arc::new(Seen::default());
    let faults = Faults::default();
    let stream = LiveStream::open(&host, "").await.unwrap();
    let reader = tokio::spawn(slow_reader(stream, seen.clone()));
    let base = baseline(&host).await;

    let until = Instant::now() + Duration::from_secs(secs);
    let ms = Duration::from_millis;
    let clients = spawn_clients(&host, &seen, until, 2, (EXECUTE_TASKS, POOL));
    let killed = std::sync::Mutex::new(BTreeSet::new());
    let (host_, seen_, faults_) = (&*host, &*seen, &faults);
    let (rss, ..) = tokio::join!(
        sample_rss(host_, until, ms(250)),
        every(ms(2000), until, |round| kill_a_worker(
            host_, faults_, &killed, round
        )),
        every(ms(1500), until, |round| swap_the_sanitizer(
            host_, seen_, faults_, round
        )),
        every(ms(1000), until, |_| async {
            host_
                .post_events(&json!([{ "kind": TRAP_KIND, "fields": { "password": SECRET } }]))
                .await;
            faults_.traps_posted.fetch_add(1, Ordering::Relaxed);
        }),
        every(ms(700), until, |_| async {
            host_
                .post_events(&json!([{ "kind": SLEEP_KIND, "fields": { "password": SECRET } }]))
                .await;
            faults_.sleeps_posted.fetch_add(1, Ordering::Relaxed);
        }),
        every(ms(3000), until, |round| change_the_config(
            host_, seen_, faults_, round
        )),
        every(ms(250), until, |_| ask_readiness(host_, seen_, faults_)),
    );
    for client in clients {
        client.await.unwrap();
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
    let crashes = [("pool", POOL), ("reason", "crashed")];
    eventually(
        "every kill counted as a worker exit",
        Duration::from_secs(10),
        || async {
            let m = host.metrics().await;
            let exits = delta(&m, &base.before, "lookout_worker_exits_total", &crashes);
            (exits >= faults.kills.load(Ordering::Relaxed)).then_some(())
        },
    )
    .await;
    let after = at_rest(&host, Duration::from_secs(60)).await;
    reader.abort();

    let load = |s: &AtomicU64| s.load(Ordering::Relaxed);
    let sleeps_cut = || {
        delta(
            &after,
            &base.before,
            "lookout_plugin_calls_total",
            &[("plugin", "sleepy"), ("outcome", "timeout")],
        )
    };
    let consumer_outcome = |c: &str, o: &str| {
        delta(
            &after,
            &base.before,
            "lookout_consumer_events_total",
            &[("consumer", c), ("outcome", o)],
        )
    };
    println!(
        "soak: {secs} s; faults: {} workers killed, {} sanitizer swaps, {} trap events, {} sleep events, \
         {} config changes; readiness polled {} times, not ready {}",
        load(&faults.kills),
        load(&faults.swaps),
        load(&faults.traps_posted),
        load(&faults.sleeps_posted),
        load(&faults.config_changes),
        load(&faults.ready_polls),
        load(&faults.not_ready),
    );
    println!(
        "soak: {} events accepted by HTTP; {} executes ({} ok, {} failed in the worker, {} crashed under a kill, {} refused); \
         {} events read by the slow stream client ({} dropped for it); flaky consumer: {} delivered, {} failed; \
         sleepy consumer: {} delivered, {} failed, {} calls cut at the deadline",
        load(&seen.accepted),
        load(&seen.executes),
        load(&seen.ok),
        load(&seen.failed),
        load(&seen.crashed),
        load(&seen.rejected),
        load(&seen.streamed),
        consumer_outcome("live_stream", "dropped"),
        consumer_outcome("flaky", "delivered"),
        consumer_outcome("flaky", "failed"),
        consumer_outcome("sleepy", "delivered"),
        consumer_outcome("sleepy", "failed"),
        sleeps_cut(),
    );
    // Memory levels off: no leak across swaps, traps and restarts.
    check_rss("soak", base.rss, &rss);

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
    // Its sleeps were cut at the deadline (or, once quarantined, not called): its queue kept
    // moving, and every batch it was handed is counted.
    assert!(sleeps_cut() > 0, "the sleepy consumer's sleeps were cut");
    assert!(
        consumer_outcome("sleepy", "failed") >= sleeps_cut()
            && consumer_outcome("sleepy", "delivered") > 0,
        "sleepy: {} delivered, {} failed, {} cut",
        consumer_outcome("sleepy", "delivered"),
        consumer_outcome("sleepy", "failed"),
        sleeps_cut()
    );
    assert!(load(&seen.accepted) > 0 && load(&seen.ok) > 0);

    // Every event accounted for, by every consumer there throughout — the trapping one and
    // the slow stream included.
    assert!(
        base.consumers.contains("flaky")
            && base.consumers.contains("sleepy")
            && base.consumers.contains("live_stream"),
        "{:?}",
        base.consumers
    );
    check_events(&base, &after, &seen);
    // Every request was run or refused, and counted so; every kill was seen as a crash.
    check_requests(&base, &after, &seen, POOL);
    let exits = delta(
        &after,
        &base.before,
        "lookout_worker_exits_total",
        &[("pool", POOL)],
    );
    assert!(
        exits >= load(&faults.kills),
        "each kill is a worker exit: {exits} exits, {} kills ({:?})",
        load(&faults.kills),
        by_label(&after, "lookout_worker_exits_total", "reason")
    );
}
