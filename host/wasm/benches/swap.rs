//! Hot swap under load (issue 7, P4): a producer publishes at a steady rate while the
//! sanitizer is swapped 20 times (allowlist in, rollback to redact, …). What the request path
//! feels — `publish()` latency, p50/p99 — during the swaps against steady state, and what
//! was lost: nothing (published = accepted + dropped, dropped = 0).
//!
//! Run: `cargo bench -p lookout-wasm --bench swap` (results go in docs/performance.md).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use lookout_artifacts::plugins::{ALLOWLIST, REDACT};
use lookout_core::{Bus, BusConfig, Event, Published, RedactAll};
use lookout_testkit::counter;
use lookout_wasm::{Manifest, PluginRegistry, Runtime, World};
use prometheus::Registry;

fn quantile(sorted: &[Duration], q: f64) -> f64 {
    let at = ((sorted.len() as f64 * q) as usize).min(sorted.len() - 1);
    sorted[at].as_secs_f64() * 1e9
}

/// Publishes about `rate` events a second until `stop`; returns each publish's duration.
fn produce(bus: Bus, rate: u64, stop: Arc<AtomicBool>) -> Vec<Duration> {
    let mut took = Vec::new();
    let tick = Duration::from_millis(1);
    let per_tick = (rate / 1000).max(1);
    let mut next = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        for i in 0..per_tick {
            let e = Event::new("request.completed")
                .correlation_id(format!("swap-{i}"))
                .field("user", "bob")
                .field("password", "hunter2");
            let t = Instant::now();
            let published = bus.publish(e);
            took.push(t.elapsed());
            assert_eq!(published, Published::Queued, "the ingress queue overflowed");
        }
        next += tick;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    took
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    let (rate, steady, swaps) = if benching {
        (100_000, Duration::from_secs(2), 20)
    } else {
        (10_000, Duration::from_millis(200), 2)
    };
    let registry = Registry::new();
    let bus = Bus::start(
        BusConfig {
            ingress_capacity: 1 << 20,
            ..BusConfig::default()
        },
        &registry,
        Box::new(RedactAll),
    )
    .unwrap();
    let plugins =
        PluginRegistry::new(Runtime::new(&registry).unwrap(), bus.clone(), &registry).unwrap();
    plugins
        .install(Manifest::new("redact", World::Sanitizer), REDACT, "bench")
        .unwrap();
    let mut allowlist = Manifest::new("allowlist", World::Sanitizer);
    allowlist.config.insert("allow".into(), "user".into());

    let mut phases = Vec::new();
    for swapping in [false, true] {
        let stop = Arc::new(AtomicBool::new(false));
        let producer = {
            let (bus, stop) = (bus.clone(), stop.clone());
            std::thread::spawn(move || produce(bus, rate, stop))
        };
        let started = Instant::now();
        if swapping {
            for i in 0..swaps {
                if i % 2 == 0 {
                    lookout_core::blocking(|| {
                        plugins.install(allowlist.clone(), ALLOWLIST, "bench")
                    })
                    .unwrap();
                } else {
                    plugins.rollback("allowlist", "bench").unwrap();
                }
                tokio::time::sleep(steady / swaps as u32).await;
            }
        } else {
            tokio::time::sleep(steady).await;
        }
        stop.store(true, Ordering::Relaxed);
        let mut took = producer.join().unwrap();
        let elapsed = started.elapsed();
        took.sort();
        phases.push((swapping, took, elapsed));
    }
    assert!(bus.flush(Duration::from_secs(60)).await);
    let published = counter(&registry, "lookout_events_published_total", &[]);
    let accepted = counter(
        &registry,
        "lookout_events_total",
        &[("outcome", "accepted")],
    );
    let dropped = counter(&registry, "lookout_events_total", &[("outcome", "dropped")]);
    assert_eq!(published, accepted + dropped, "conservation");

    println!("| phase | events | time | publish() p50 | p99 | max |");
    println!("|---|---|---|---|---|---|");
    for (swapping, took, elapsed) in &phases {
        println!(
            "| {} | {} | {:.2} s | {:.0} ns | {:.0} ns | {:.0} ns |",
            if *swapping {
                format!("during {swaps} swaps")
            } else {
                "steady".to_string()
            },
            took.len(),
            elapsed.as_secs_f64(),
            quantile(took, 0.5),
            quantile(took, 0.99),
            took.last().map_or(0.0, |d| d.as_secs_f64() * 1e9),
        );
    }
    println!();
    println!("published {published}, accepted {accepted}, dropped {dropped} (lost: {dropped})");
    let (steady_p99, swapping_p99) = (quantile(&phases[0].1, 0.99), quantile(&phases[1].1, 0.99));
    lookout_testkit::bench_summary(
        "P4",
        &format!("publish() p99 during {swaps} sanitizer swaps vs steady, events lost"),
        &format!("{swapping_p99:.0} vs {steady_p99:.0} ns; {published} published, {dropped} lost"),
        &format!("{:.2}×", swapping_p99 / steady_p99.max(1.0)),
    );
    assert_eq!(dropped, 0, "events were lost during the swaps");
}
