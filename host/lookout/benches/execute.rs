//! What lookout's pool costs a request, in one run, side by side: the same `echo` round trip
//! on 2 Python workers of `examples/workers/app.py`, driven by 8 concurrent clients,
//! (1) through a minimal direct pipe client (a task per worker writing a request line and
//! reading the reply — no queue, no events), (2) through `Pool::execute` in-process (queue,
//! events on the bus with the real `redact` WASM sanitizer, metrics), and (3) through
//! `POST /api/v1/pools/{pool}/execute` of the `lookout` binary over loopback HTTP.
//!
//! Run: `cargo bench -p lookout --bench execute` (results go in docs/performance.md).
//! Without `--bench` (as `cargo test --all-targets` runs it) only a short smoke run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use lookout_core::{Bus, BusConfig};
use lookout_pool::{ExecRequest, PoolConfig, PoolStatus, Pools};
use lookout_testkit::{Host, repo_root};
use prometheus::Registry;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{Mutex, mpsc, oneshot};

const WORKERS: usize = 2;
const CLIENTS: usize = 8;

fn app() -> String {
    repo_root()
        .join("examples/workers/app.py")
        .to_string_lossy()
        .into_owned()
}

fn args(i: usize) -> serde_json::Value {
    serde_json::json!({"user": "amy", "item": i, "note": "render invoice 2026-11"})
}

struct Run {
    name: &'static str,
    requests: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl Run {
    fn quantile(&self, q: f64) -> f64 {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        let at = ((sorted.len() as f64 * q) as usize).min(sorted.len() - 1);
        sorted[at].as_secs_f64() * 1e3
    }

    fn rate(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }
}

/// Runs `requests` calls of `call` from CLIENTS concurrent clients.
async fn drive<F, Fut>(name: &'static str, requests: usize, call: F) -> Run
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let call = Arc::new(call);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (call, next) = (call.clone(), next.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= requests {
                        return latencies;
                    }
                    let t = Instant::now();
                    call(i).await;
                    latencies.push(t.elapsed());
                }
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for c in clients {
        latencies.extend(c.await.unwrap());
    }
    Run {
        name,
        requests,
        elapsed: started.elapsed(),
        latencies,
    }
}

type Job = (serde_json::Value, oneshot::Sender<String>);

/// The minimal direct client: WORKERS processes, each fed by one task from a shared queue.
async fn direct(requests: usize) -> Run {
    let (tx, rx) = mpsc::channel::<Job>(64);
    let rx = Arc::new(Mutex::new(rx));
    let mut children = Vec::new();
    for _ in 0..WORKERS {
        let mut child = tokio::process::Command::new("python3")
            .arg(app())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("python3 runs");
        let mut stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        stdout.next_line().await.unwrap().expect("ready line");
        let rx = rx.clone();
        tokio::spawn(async move {
            let mut id = 0u64;
            loop {
                let Some((args, reply)) = rx.lock().await.recv().await else {
                    return;
                };
                id += 1;
                let line = serde_json::json!({"id": id, "command": "echo", "args": args});
                stdin
                    .write_all(format!("{line}\n").as_bytes())
                    .await
                    .unwrap();
                let answer = stdout.next_line().await.unwrap().unwrap();
                let _ = reply.send(answer);
            }
        });
        children.push(child);
    }
    let run = drive("direct pipe client (no pool)", requests, move |i| {
        let tx = tx.clone();
        async move {
            let (reply, answer) = oneshot::channel();
            tx.send((args(i), reply)).await.unwrap();
            assert!(answer.await.unwrap().contains("\"ok\":true"));
        }
    })
    .await;
    drop(children);
    run
}

/// The log filter of this process (a JSON logger writing nowhere, like a host's without the
/// cost of a terminal).
type LogFilter =
    tracing_subscriber::reload::Handle<tracing_subscriber::EnvFilter, tracing_subscriber::Registry>;

fn install_logger() -> LogFilter {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let (filter, handle) =
        tracing_subscriber::reload::Layer::new(tracing_subscriber::EnvFilter::new("off"));
    tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .json()
                .with_writer(std::io::sink),
        )
        .init();
    handle
}

/// `Pool::execute` in-process, with the bus and the real `redact` sanitizer behind it, and a
/// consumer. Observability on: events (two a request, sanitized, delivered) and info logs;
/// off: events turned off (`bus.enabled = false`) and logs off.
async fn in_process(requests: usize, observability: bool, work: Work, logs: &LogFilter) -> Run {
    let registry = Registry::new();
    let runtime = lookout_wasm::Runtime::new(&registry).unwrap();
    let redact = lookout_wasm::WasmSanitizer::load(
        &runtime,
        "redact",
        lookout_artifacts::plugins::REDACT,
        Vec::new(),
        lookout_wasm::Limits::default(),
    )
    .unwrap();
    let bus_config = BusConfig {
        enabled: observability,
        ..BusConfig::default()
    };
    let bus = Bus::start(bus_config, &registry, Box::new(redact)).unwrap();
    let delivered = Arc::new(std::sync::atomic::AtomicU64::new(0));
    bus.register("count", Count(delivered.clone())).unwrap();
    let level = if observability { "info" } else { "off" };
    logs.reload(tracing_subscriber::EnvFilter::new(level))
        .unwrap();
    let mut config = PoolConfig::new("bench", &["python3", &app()]);
    config.size = WORKERS;
    let pools = Arc::new(Pools::start(&[config], &bus, &registry).unwrap());
    wait_ready(|| pools.get("bench").unwrap().snapshot().status == PoolStatus::Ok).await;
    let run = {
        let pools = pools.clone();
        let name = match (observability, work) {
            (true, Work::Echo) => "lookout pool, in-process (`Pool::execute`), observability on",
            (false, Work::Echo) => "lookout pool, in-process (`Pool::execute`), observability off",
            (true, Work::Sleep) => "the same, a command doing 2 ms of work, observability on",
            (false, Work::Sleep) => "the same, a command doing 2 ms of work, observability off",
            (_, Work::Telemetry) => {
                "the same, the worker emitting 10 events and 3 spans, observability on"
            }
        };
        drive(name, requests, move |i| {
            let pools = pools.clone();
            async move {
                let request = ExecRequest {
                    command: match work {
                        Work::Echo => "echo",
                        Work::Sleep => "sleep",
                        Work::Telemetry => "telemetry",
                    }
                    .into(),
                    args: match work {
                        Work::Echo => args(i),
                        Work::Sleep => serde_json::json!({"seconds": 0.002}),
                        Work::Telemetry => serde_json::json!({"events": 10, "spans": 3, "i": i}),
                    },
                    session_id: None,
                    timeout: None,
                    correlation_id: format!("bench-{i}"),
                    trace: lookout_pool::Trace::new_root(),
                };
                pools.get("bench").unwrap().execute(request).await.unwrap();
            }
        })
        .await
    };
    pools.stop("bench over").await;
    bus.shutdown().await;
    logs.reload(tracing_subscriber::EnvFilter::new("off"))
        .unwrap();
    if observability {
        // Every request's events (two, and its three host spans) went through the sanitizer
        // to the consumer.
        assert!(delivered.load(std::sync::atomic::Ordering::Relaxed) >= 5 * requests as u64);
    }
    run
}

/// What each request of a run does.
#[derive(Clone, Copy)]
enum Work {
    /// `echo`: the fixed cost of a round trip.
    Echo,
    /// 2 ms of work.
    Sleep,
    /// 10 events and 3 spans from the worker (protocol 2), then an echo.
    Telemetry,
}

/// Over loopback HTTP through the `lookout` binary.
/// `report`: print the host's memory (the measured round, not the warm-up).
async fn over_http(requests: usize, report: bool) -> Run {
    let path = lookout_testkit::artifacts_dir().join("bench-execute.toml");
    std::fs::write(
        &path,
        format!(
            "[[pools]]\nname = \"bench\"\ncommand = [\"python3\", {:?}]\nsize = {WORKERS}\n",
            app()
        ),
    )
    .unwrap();
    let host = Arc::new(
        Host::start(
            env!("CARGO_BIN_EXE_lookout"),
            &["--config", path.to_str().unwrap()],
        )
        .unwrap(),
    );
    let url = host.url("/api/v1/pools/bench/execute");
    let client = reqwest::Client::new();
    let ready = {
        let (client, host) = (client.clone(), host.clone());
        move || {
            let (client, host) = (client.clone(), host.clone());
            async move {
                let pool: serde_json::Value = client
                    .get(host.url("/api/v1/pools/bench"))
                    .send()
                    .await
                    .ok()?
                    .json()
                    .await
                    .ok()?;
                (pool["status"] == "ok").then_some(())
            }
        }
    };
    lookout_testkit::eventually("the pool ready", Duration::from_secs(30), ready).await;
    let rss = || {
        let host = host.clone();
        async move {
            host.metrics()
                .await
                .sum("process_resident_memory_bytes", &[])
                / f64::from(1 << 20)
        }
    };
    let idle = rss().await;
    let run = drive("lookout `POST …/execute` over HTTP", requests, move |i| {
        let (client, url) = (client.clone(), url.clone());
        async move {
            let response = client
                .post(&url)
                .json(&serde_json::json!({"command": "echo", "args": args(i)}))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            response.bytes().await.unwrap();
        }
    })
    .await;
    let loaded = rss().await;
    if !report {
        return run;
    }
    println!(
        "lookout RSS: {idle:.1} MiB idle, {loaded:.1} MiB after {requests} requests over HTTP"
    );
    lookout_testkit::bench_summary(
        "P5",
        "lookout's resident memory, idle (pool of 2 up) vs after the HTTP run",
        &format!("{idle:.1} vs {loaded:.1} MiB ({requests} requests)"),
        &format!("{:+.1} MiB", loaded - idle),
    );
    run
}

async fn wait_ready(ready: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ready() {
        assert!(Instant::now() < deadline, "the pool did not come up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    let logs = install_logger();
    let requests: usize = std::env::var("LOOKOUT_BENCH_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if benching { 20_000 } else { 200 });
    // A warm-up round of each, then the measured one.
    let mut runs = Vec::new();
    for round in 0..2 {
        let n = if round == 0 { requests / 10 } else { requests };
        // LOOKOUT_BENCH_ONLY=pool runs only the in-process path (for a profiler).
        if std::env::var("LOOKOUT_BENCH_ONLY").is_ok_and(|o| o == "pool") {
            in_process(n, true, Work::Echo, &logs).await;
            continue;
        }
        let measured = vec![
            direct(n).await,
            in_process(n, false, Work::Echo, &logs).await,
            in_process(n, true, Work::Echo, &logs).await,
            over_http(n, round == 1).await,
            in_process(n / 10, false, Work::Sleep, &logs).await,
            in_process(n / 10, true, Work::Sleep, &logs).await,
            in_process(n / 4, true, Work::Telemetry, &logs).await,
        ];
        if round == 1 {
            runs = measured;
        }
    }
    if runs.is_empty() {
        return;
    }
    let base = runs[0].rate();
    println!(
        "| path ({WORKERS} workers, {CLIENTS} clients, `echo`) | requests | requests/s | p50 ms | p99 ms | throughput vs direct |"
    );
    println!("|---|---|---|---|---|---|");
    for r in &runs {
        println!(
            "| {} | {} | {:.0} | {:.3} | {:.3} | {:.2}× |",
            r.name,
            r.requests,
            r.rate(),
            r.quantile(0.5),
            r.quantile(0.99),
            r.rate() / base
        );
    }
    println!();
    let (plain, chatty) = (&runs[2], &runs[6]);
    let per_request_us = (1.0 / chatty.rate() - 1.0 / plain.rate()) * 1e6 * WORKERS as f64;
    println!(
        "worker telemetry, 10 events + 3 spans a request vs none: {:.0} vs {:.0} req/s, p50 {:.3} vs {:.3} ms; ≈ {per_request_us:.0} µs of worker time a request",
        chatty.rate(),
        plain.rate(),
        chatty.quantile(0.5),
        plain.quantile(0.5)
    );
    for (what, off, on) in [
        ("echo", &runs[1], &runs[2]),
        ("2 ms of work", &runs[4], &runs[5]),
    ] {
        let change = format!(
            "throughput {:+.1} %, p50 {:+.1} %, p99 {:+.1} %",
            (on.rate() / off.rate() - 1.0) * 100.0,
            (on.quantile(0.5) / off.quantile(0.5) - 1.0) * 100.0,
            (on.quantile(0.99) / off.quantile(0.99) - 1.0) * 100.0
        );
        println!("observability on vs off, {what}: {change}");
        lookout_testkit::bench_summary(
            "P3",
            &format!("Pool::execute, observability on vs off, {what}"),
            &format!(
                "{:.0} vs {:.0} req/s; p50 {:.3} vs {:.3} ms; p99 {:.3} vs {:.3} ms",
                on.rate(),
                off.rate(),
                on.quantile(0.5),
                off.quantile(0.5),
                on.quantile(0.99),
                off.quantile(0.99)
            ),
            &change,
        );
    }
}

/// Counts what a consumer is handed.
struct Count(Arc<std::sync::atomic::AtomicU64>);

impl lookout_core::Consumer for Count {
    async fn handle(
        &mut self,
        batch: lookout_core::Batch,
    ) -> Result<(), lookout_core::ConsumerError> {
        self.0
            .fetch_add(batch.len() as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }
}
