//! Bus throughput, end to end (publish → sample → rate-limit → sanitize → fan-out → one
//! consumer), with the bare pipeline, with the real `redact` WASM sanitizer, and with that
//! sanitizer plus the `digest` WASM consumer (every event handed to a second component); plus
//! the cost of one `publish` call, which is all the request path pays.
//!
//! Run: `cargo bench -p lookout-wasm --bench pipeline` (results go in docs/performance.md).
//! `LOOKOUT_BENCH_EVENTS` sets the events per run (default 1,000,000; 2,000 as a smoke test
//! under `cargo test --all-targets`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use lookout_artifacts::plugins::{DIGEST, REDACT};
use lookout_core::{
    Batch, Bus, BusConfig, Consumer, ConsumerError, Event, PassThrough, Published, Sanitizer,
};
use lookout_testkit::counter;
use lookout_wasm::{Limits, Manifest, PluginRegistry, Runtime, WasmSanitizer};
use prometheus::Registry;

struct Count(Arc<AtomicU64>);

impl Consumer for Count {
    async fn handle(&mut self, batch: Batch) -> Result<(), ConsumerError> {
        self.0.fetch_add(batch.len() as u64, Ordering::Relaxed);
        Ok(())
    }
}

/// A request-completed event as a worker pool would publish it: 8 fields, one secret.
fn event(i: u64) -> Event {
    Event::new("request.completed")
        .correlation_id(format!("req-{i:016x}"))
        .field("pool", "default")
        .field("command", "render_pdf")
        .field("worker", "w3")
        .field("duration_ms", 12.5)
        .field("success", true)
        .field("queue_wait_ms", 0.25)
        .field("user", "amy@example.com")
        .field(
            "message",
            if i.is_multiple_of(16) {
                "retry with password=hunter2"
            } else {
                "rendered 3 pages in 12 ms"
            },
        )
}

/// CPU time this process has used so far, all threads (user + system), from /proc.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the `(comm)`, which may contain spaces: utime and stime are 14 and 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let ticks: u64 = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|t| t.parse::<u64>().ok())
        .sum();
    // USER_HZ is 100 on Linux.
    Duration::from_millis(ticks * 10)
}

struct Run {
    name: &'static str,
    events: u64,
    elapsed: Duration,
    cpu: Duration,
    publish_ns: f64,
    dropped: u64,
}

/// The floor: the same events through a bare bounded channel to one consumer thread — no
/// admission, sanitizer, accounting or fan-out.
fn bare_channel(events: u64) -> Run {
    let prepared: Vec<Event> = (0..events).map(event).collect();
    let (tx, rx) = std::sync::mpsc::sync_channel::<Event>(1 << 20);
    let consumer = std::thread::spawn(move || rx.iter().count() as u64);
    let started = Instant::now();
    let cpu_before = cpu_time();
    let t = Instant::now();
    for e in prepared {
        tx.send(e).unwrap();
    }
    let publish = t.elapsed();
    drop(tx);
    let seen = consumer.join().unwrap();
    assert_eq!(seen, events);
    Run {
        name: "a bare bounded channel (std sync_channel, one consumer thread)",
        events,
        elapsed: started.elapsed(),
        cpu: cpu_time().saturating_sub(cpu_before),
        publish_ns: publish.as_nanos() as f64 / events as f64,
        dropped: 0,
    }
}

/// A WASM consumer on the bus next to the counting one.
const DIGEST_MANIFEST: &str = include_str!("../../../examples/plugins/digest.toml");

async fn run(
    name: &'static str,
    sanitizer: Box<dyn Sanitizer>,
    wasm_consumer: bool,
    events: u64,
) -> Run {
    let registry = Registry::new();
    // The ingress queue holds a whole run: the pipeline's speed is measured, not the drop path.
    let config = BusConfig {
        ingress_capacity: 1 << 20,
        batch_size: 512,
        consumer_capacity: 1 << 20,
        ..BusConfig::default()
    };
    let bus = Bus::start(config, &registry, sanitizer).unwrap();
    let seen = Arc::new(AtomicU64::new(0));
    bus.register("count", Count(seen.clone())).unwrap();
    let plugins = wasm_consumer.then(|| {
        let runtime = Runtime::new(&registry).unwrap();
        let plugins = PluginRegistry::new(runtime, bus.clone(), &registry).unwrap();
        let manifest = Manifest::parse(DIGEST_MANIFEST).unwrap();
        plugins.install(manifest, DIGEST, "bench").unwrap();
        plugins
    });
    // Build the events first: the bench measures the bus, not string formatting.
    let prepared: Vec<Event> = (0..events).map(event).collect();
    let started = Instant::now();
    let cpu_before = cpu_time();
    let mut publish_time = Duration::ZERO;
    let mut dropped = 0;
    let mut pending = prepared.into_iter().peekable();
    while pending.peek().is_some() {
        let t = Instant::now();
        for e in pending.by_ref().take(65_536) {
            if bus.publish(e) == Published::Dropped {
                dropped += 1;
            }
        }
        publish_time += t.elapsed();
    }
    assert!(
        bus.flush(Duration::from_secs(600)).await,
        "bus did not drain"
    );
    let elapsed = started.elapsed();
    let cpu = cpu_time().saturating_sub(cpu_before);
    assert_eq!(seen.load(Ordering::Relaxed) + dropped, events);
    if plugins.is_some() {
        let delivered = counter(
            &registry,
            "lookout_consumer_events_total",
            &[("consumer", "digest"), ("outcome", "delivered")],
        );
        assert_eq!(
            delivered + dropped,
            events,
            "the WASM consumer handled every event"
        );
    }
    Run {
        name,
        events,
        elapsed,
        cpu,
        publish_ns: publish_time.as_nanos() as f64 / events as f64,
        dropped,
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` does not: then only a smoke run.
    let benching = std::env::args().any(|a| a == "--bench");
    let default_events = if benching { 1_000_000 } else { 2_000 };
    let events: u64 = std::env::var("LOOKOUT_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default_events);
    let runtime = Runtime::new(&Registry::new()).unwrap();
    let mut runs = Vec::new();
    for _ in 0..2 {
        runs.push(bare_channel(events));
        runs.push(
            run(
                "bare pipeline (pass-through sanitizer)",
                Box::new(PassThrough),
                false,
                events,
            )
            .await,
        );
        let redact = || {
            WasmSanitizer::load(&runtime, "redact", REDACT, Vec::new(), Limits::default()).unwrap()
        };
        runs.push(
            run(
                "with the redact WASM sanitizer",
                Box::new(redact()),
                false,
                events,
            )
            .await,
        );
        // LOOKOUT_BENCH_BASELINE_REDACT=<file.wasm>: an earlier build of `redact`, measured
        // in the same run (before/after figures in docs/performance.md).
        if let Ok(path) = std::env::var("LOOKOUT_BENCH_BASELINE_REDACT") {
            let wasm = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            let baseline =
                WasmSanitizer::load(&runtime, "redact", &wasm, Vec::new(), Limits::default())
                    .unwrap();
            runs.push(
                run(
                    "with the baseline redact WASM sanitizer",
                    Box::new(baseline),
                    false,
                    events,
                )
                .await,
            );
        }
        runs.push(
            run(
                "redact WASM sanitizer + digest WASM consumer",
                Box::new(redact()),
                true,
                events,
            )
            .await,
        );
    }
    // Per core: events over the CPU time the whole process used (publisher, pipeline and
    // consumers together), so it does not depend on how many cores the run got.
    println!(
        "| pipeline | events | time | events/s | CPU time | events per CPU-second | publish() ns/event | dropped |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    // The first round warms up; the second is reported.
    for r in runs.iter().skip(runs.len() / 2) {
        println!(
            "| {} | {} | {:.2} s | {:.0} | {:.2} s | {:.0} | {:.0} | {} |",
            r.name,
            r.events,
            r.elapsed.as_secs_f64(),
            r.events as f64 / r.elapsed.as_secs_f64(),
            r.cpu.as_secs_f64(),
            r.events as f64 / r.cpu.as_secs_f64().max(0.01),
            r.publish_ns,
            r.dropped
        );
    }
    // P1: the full pipeline against the bare channel, from the reported round.
    let reported = &runs[runs.len() / 2..];
    let rate = |r: &Run| r.events as f64 / r.elapsed.as_secs_f64();
    let bare = &reported[0];
    let full = &reported[reported.len() - 1];
    lookout_testkit::bench_summary(
        "P1",
        "bus: redact sanitizer + digest consumer (both WASM) vs a bare bounded channel",
        &format!(
            "{:.2} M vs {:.2} M events/s; {:.2} M per CPU-second",
            rate(full) / 1e6,
            rate(bare) / 1e6,
            full.events as f64 / full.cpu.as_secs_f64().max(0.01) / 1e6
        ),
        &format!("{:.2}× the channel", rate(full) / rate(bare)),
    );
}
