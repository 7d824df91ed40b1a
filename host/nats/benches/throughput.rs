//! Events per second from one host's bus to another's through a real `nats-server` on
//! loopback: host A's sink (encode, buffer, publish, flush per chunk) → the server → host C's
//! source (decode, publish on its bus) → a counting consumer. Both buses use a pass-through
//! sanitizer, so what is measured is the link.
//!
//! Run: `cargo bench -p lookout-nats --bench throughput` (needs Debian's nats-server).
//! `LOOKOUT_BENCH_EVENTS` sets the events per run (default 200,000; 2,000 as a smoke test
//! under `cargo test --all-targets`). Results go in docs/scaling.md.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use lookout_core::{Batch, Bus, BusConfig, Consumer, ConsumerError, Event, PassThrough};
use lookout_nats::{Nats, NatsConfig};
use prometheus::Registry;

/// Counts the measured events from the other host, and (apart) the warm-up ones.
struct Count {
    measured: Arc<AtomicU64>,
    warm_up: Arc<AtomicU64>,
}

impl Consumer for Count {
    async fn handle(&mut self, batch: Batch) -> Result<(), ConsumerError> {
        for e in batch.iter().filter(|e| e.origin.is_some()) {
            let counter = if e.kind == WARM_UP {
                &self.warm_up
            } else {
                &self.measured
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }
}

const WARM_UP: &str = "bench.warm_up";

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
        .field("message", "rendered 3 pages in 12 ms")
}

fn config(port: u16, host: &str, sink: bool, source: bool) -> NatsConfig {
    let mut c = NatsConfig {
        enabled: true,
        urls: vec![format!("nats://127.0.0.1:{port}")],
        host: Some(host.into()),
        ..NatsConfig::default()
    };
    c.sink.enabled = sink;
    c.sink.buffer_events = 1_000_000;
    c.source.enabled = source;
    c
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    let events: u64 = std::env::var("LOOKOUT_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if benching { 200_000 } else { 2_000 });
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let Ok(mut server) = Command::new("nats-server")
        .args(["-a", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    else {
        println!("nats-server is not installed: skipped (`cargo xtask setup` installs it)");
        return;
    };
    let up = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < up, "nats-server did not start listening");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Room for the whole run at every queue: the publisher outruns everything at first, and
    // the link, not the bus's back-pressure, is what is measured.
    let big = BusConfig {
        ingress_capacity: 1 << 20,
        consumer_capacity: 1 << 14,
        ..BusConfig::default()
    };
    let (ra, rc) = (Registry::new(), Registry::new());
    let a = Bus::start(big.clone(), &ra, Box::new(PassThrough)).unwrap();
    let c = Bus::start(big, &rc, Box::new(PassThrough)).unwrap();
    let received = Arc::new(AtomicU64::new(0));
    let warmed = Arc::new(AtomicU64::new(0));
    c.register(
        "count",
        Count {
            measured: received.clone(),
            warm_up: warmed.clone(),
        },
    )
    .unwrap();
    let nats_a = Nats::start(&config(port, "bench-a", true, false), &a, &ra)
        .await
        .unwrap()
        .unwrap();
    let nats_c = Nats::start(&config(port, "bench-c", false, true), &c, &rc)
        .await
        .unwrap()
        .unwrap();
    // Until C's subscription is on the server: a warm-up event every 10 ms until one arrives
    // (within 30 s). They are counted apart from the measured ones.
    let ready = Instant::now() + Duration::from_secs(30);
    while warmed.load(Ordering::Relaxed) == 0 {
        assert!(Instant::now() < ready, "the link did not come up");
        a.publish(Event::new(WARM_UP));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // Core NATS has no flow control: a subscriber that falls behind loses messages. So the
    // publisher keeps at most `WINDOW` events ahead of what C has received, and what is
    // measured is the rate the link sustains without loss.
    const WINDOW: u64 = 20_000;
    let started = Instant::now();
    for i in 0..events {
        while i.saturating_sub(received.load(Ordering::Relaxed)) >= WINDOW {
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        a.publish(event(i));
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while received.load(Ordering::Relaxed) < events && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let elapsed = started.elapsed();
    let got = received.load(Ordering::Relaxed);
    let bytes = lookout_nats::wire::encode("bench-a", &{
        let mut e = event(0);
        e.id = 1;
        e.timestamp_ns = 1;
        e
    })
    .len();
    println!("| events | message | time | events/s through NATS | received |");
    println!("|---|---|---|---|---|");
    println!(
        "| {events} | {bytes} B | {:.2} s | {:.0} | {got} |",
        elapsed.as_secs_f64(),
        got as f64 / elapsed.as_secs_f64()
    );
    lookout_testkit::bench_summary(
        "NATS",
        "events from one host's bus to another's through nats-server on loopback",
        &format!(
            "{:.0} events/s ({events} events of {bytes} B, {got} received)",
            got as f64 / elapsed.as_secs_f64()
        ),
        if got == events {
            "0 lost"
        } else {
            "LOST EVENTS"
        },
    );
    assert_eq!(got, events, "events were lost on the way");
    nats_a.stop(Duration::from_secs(1)).await;
    nats_c.stop(Duration::from_secs(1)).await;
    let _ = server.kill();
    let _ = server.wait();
}
