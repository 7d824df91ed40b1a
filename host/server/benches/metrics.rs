//! How long `/metrics` takes to render (gather + text encoding) at 100, 1,000 and 10,000
//! series: the cost a scrape puts on the host.
//!
//! Run: `cargo bench -p lookout-server --bench metrics` (results go in docs/performance.md).

use std::time::{Duration, Instant};

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder,
};

/// A registry like a busy host's: counters with three labels and a histogram, `series` in all.
fn registry(series: usize) -> Registry {
    let registry = Registry::new();
    let counters = IntCounterVec::new(
        Opts::new(
            "lookout_requests_total",
            "Requests by pool, command and status.",
        ),
        &["pool", "command", "status"],
    )
    .unwrap();
    let histogram = HistogramVec::new(
        HistogramOpts::new("lookout_request_duration_seconds", "Request duration."),
        &["pool", "command"],
    )
    .unwrap();
    registry.register(Box::new(counters.clone())).unwrap();
    registry.register(Box::new(histogram.clone())).unwrap();
    // Each histogram series is 14 samples (buckets, sum, count): count it as what it costs.
    let histograms = series / 20;
    for i in 0..(series - histograms) {
        counters
            .with_label_values(&[&format!("pool-{}", i % 7), &format!("cmd-{i}"), "ok"])
            .inc();
    }
    for i in 0..histograms {
        histogram
            .with_label_values(&[&format!("pool-{}", i % 7), &format!("cmd-{i}")])
            .observe(0.01);
    }
    registry
}

fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    let rounds = if benching { 50 } else { 2 };
    println!("| series | render (gather + encode) | bytes |");
    println!("|---|---|---|");
    let mut renders = Vec::new();
    for series in [100usize, 1_000, 10_000] {
        let registry = registry(series);
        let mut best = Duration::MAX;
        let mut bytes = 0;
        for _ in 0..rounds {
            let started = Instant::now();
            let families = registry.gather();
            let mut buffer = Vec::new();
            TextEncoder::new().encode(&families, &mut buffer).unwrap();
            best = best.min(started.elapsed());
            bytes = buffer.len();
        }
        println!(
            "| {series} | {:.2} ms | {bytes} |",
            best.as_secs_f64() * 1e3
        );
        renders.push(best.as_secs_f64() * 1e3);
    }
    lookout_testkit::bench_summary(
        "P5",
        "/metrics render (gather + encode) at 100 / 1k / 10k series",
        &format!(
            "{:.2} / {:.2} / {:.2} ms",
            renders[0], renders[1], renders[2]
        ),
        &format!(
            "10k series take {:.0}× the time of 100 (linear: 100×)",
            renders[2] / renders[0]
        ),
    );
}
