//! A custom telemetry handler in Rust, registered through lookout's library API.
//!
//! lookout's pieces are libraries: this program embeds the event bus (`lookout-core`), the
//! `redact` WASM sanitizer (`lookout-wasm`) and a pool of Python workers (`lookout-pool`),
//! and registers a **native consumer** on the bus — no WASM, no HTTP — that keeps latency
//! and failures per command from the pool's `request.completed` events. Consumers only ever
//! see sanitized events: the secret passed to a failing command arrives redacted.
//!
//!     cargo run -p lookout-example-native-consumer      (needs python3 on PATH)
//!
//! It prints a table and exits non-zero if what it saw is not what it did (CI runs it).
//! The same handler as a sandboxed, hot-swappable WASM plugin: `plugins/digest`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use lookout_core::{Batch, Bus, BusConfig, Consumer, ConsumerError, FieldValue, RedactAll};
use lookout_pool::{ExecRequest, PoolConfig, PoolStatus, Pools};
use lookout_wasm::{Manifest, PluginRegistry, Runtime, World};
use prometheus::Registry;

/// What the handler keeps per command.
#[derive(Debug, Default)]
struct Stats {
    durations_ms: Vec<f64>,
    failed: u64,
    /// Failed requests whose `args.password` arrived redacted.
    redacted: u64,
    /// Failed requests whose `args.password` arrived as sent.
    leaked: u64,
}

/// The native consumer: a bus consumer is anything with an async `handle(batch)`. It gets
/// its own bounded queue and task; if it falls behind, its batches are counted `dropped` for
/// it alone (`lookout_consumer_events_total{consumer="latency"}`).
#[derive(Clone, Default)]
struct LatencyByCommand(Arc<Mutex<BTreeMap<String, Stats>>>);

impl Consumer for LatencyByCommand {
    async fn handle(&mut self, batch: Batch) -> Result<(), ConsumerError> {
        let mut table = self.0.lock().expect("not poisoned");
        for event in batch.iter().filter(|e| e.kind == "request.completed") {
            let text = |key| match event.get(key) {
                Some(FieldValue::Str(s)) => Some(s.as_str()),
                _ => None,
            };
            let Some(command) = text("command") else {
                return Err(ConsumerError::Failed(
                    "request.completed without a command".into(),
                ));
            };
            let stats = table.entry(command.to_string()).or_default();
            if let Some(FieldValue::Float(ms)) = event.get("duration_ms") {
                stats.durations_ms.push(*ms);
            }
            if event.get("success") == Some(&FieldValue::Bool(false)) {
                stats.failed += 1;
                match text("args.password") {
                    Some(SECRET) => stats.leaked += 1,
                    Some(_) => stats.redacted += 1,
                    None => {}
                }
            }
        }
        Ok(())
    }
}

const SECRET: &str = "hunter2";

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let registry = Registry::new();
    // The bus starts redacting everything until the real sanitizer is in.
    let bus = Bus::start(BusConfig::default(), &registry, Box::new(RedactAll))?;
    let plugins = PluginRegistry::new(Runtime::new(&registry)?, bus.clone(), &registry)?;
    plugins.install(
        Manifest::new("redact", World::Sanitizer),
        lookout_artifacts::plugins::REDACT,
        "example",
    )?;

    let handler = LatencyByCommand::default();
    // Kept for as long as the handler should receive events; dropping it unregisters.
    let _registration = bus.register("latency", handler.clone())?;

    let mut config = PoolConfig::new("demo", &[]);
    config.command.clear();
    config.app = Some("demo".into());
    let pools = Pools::start(&[config], &bus, &registry).map_err(anyhow::Error::msg)?;
    let pool = pools.get("demo").context("the demo pool")?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while pool.snapshot().status != PoolStatus::Ok {
        ensure!(
            Instant::now() < deadline,
            "the demo pool did not come up (is python3 on PATH?)"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Some traffic: echoes, short sleeps, and failures carrying a secret in their arguments.
    let mut sent: BTreeMap<&str, u64> = BTreeMap::new();
    for i in 0..60u64 {
        let (command, args) = match i % 3 {
            0 => ("echo", serde_json::json!({"i": i})),
            1 => ("sleep", serde_json::json!({"seconds": 0.002})),
            _ => (
                "fail",
                serde_json::json!({"message": "boom", "password": SECRET}),
            ),
        };
        *sent.entry(command).or_default() += 1;
        let _ = pool
            .execute(ExecRequest {
                command: command.into(),
                args,
                session_id: None,
                timeout: None,
                correlation_id: format!("example-{i}"),
                trace: lookout_pool::Trace::new_root(),
            })
            .await;
    }
    ensure!(
        bus.flush(Duration::from_secs(10)).await,
        "the bus did not drain"
    );

    println!("| command | requests | failed | p50 ms | max ms | secrets redacted |");
    println!("|---|---|---|---|---|---|");
    let table = std::mem::take(&mut *handler.0.lock().expect("not poisoned"));
    for (command, stats) in table.iter() {
        let mut d = stats.durations_ms.clone();
        d.sort_by(f64::total_cmp);
        println!(
            "| {command} | {} | {} | {:.2} | {:.2} | {} |",
            d.len(),
            stats.failed,
            d.get(d.len() / 2).copied().unwrap_or(0.0),
            d.last().copied().unwrap_or(0.0),
            stats.redacted
        );
    }
    for (command, n) in &sent {
        let seen = table
            .get(*command)
            .map_or(0, |s| s.durations_ms.len() as u64);
        ensure!(seen == *n, "{command}: sent {n}, the handler saw {seen}");
    }
    let fail = table.get("fail").context("no failed request seen")?;
    if fail.leaked > 0 || fail.redacted != sent["fail"] {
        bail!("the secret reached the handler: {fail:?}");
    }
    pools.stop("example done").await;
    bus.shutdown().await;
    Ok(())
}
