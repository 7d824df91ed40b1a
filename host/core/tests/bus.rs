//! The bus's behaviour as a publisher and a consumer see it, and its accounting.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use lookout_core::{
    Batch, Bus, BusConfig, Consumer, ConsumerError, Event, FAILED_CLOSED, FieldValue, PassThrough,
    Published, RateLimit, SanitizeError, Sanitizer, Severity,
};
use lookout_testkit::{Collect, counter};
use parking_lot::Mutex;
use prometheus::Registry;

/// Takes its time over every batch.
struct Slow(Duration);

impl Consumer for Slow {
    async fn handle(&mut self, _batch: Batch) -> Result<(), ConsumerError> {
        tokio::time::sleep(self.0).await;
        Ok(())
    }
}

/// Fails every other batch.
#[derive(Default)]
struct Flaky(u64);

impl Consumer for Flaky {
    async fn handle(&mut self, _batch: Batch) -> Result<(), ConsumerError> {
        self.0 += 1;
        if self.0.is_multiple_of(2) {
            Err(ConsumerError::Failed("flaky".into()))
        } else {
            Ok(())
        }
    }
}

fn outcomes(registry: &Registry) -> BTreeMap<String, u64> {
    [
        "accepted",
        "sampled_out",
        "rate_limited",
        "dropped",
        "filtered",
    ]
    .into_iter()
    .map(|o| {
        (
            o.to_string(),
            counter(registry, "lookout_events_total", &[("outcome", o)]),
        )
    })
    .collect()
}

fn start(config: BusConfig) -> (Bus, Registry) {
    let registry = Registry::new();
    let bus = Bus::start(config, &registry, Box::new(PassThrough)).unwrap();
    (bus, registry)
}

/// A request's events are kept or dropped together, about `rate` of requests are kept, and
/// errors are kept whatever the rate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sampling_keeps_or_drops_a_request_whole() {
    let mut config = BusConfig::default();
    config.sampling.rates.insert("request.*".into(), 0.3);
    let (bus, registry) = start(config);
    let seen = Collect::default();
    bus.register("collect", seen.clone()).unwrap();
    for i in 0..2000 {
        let cid = format!("req-{i}");
        bus.publish(Event::new("request.started").correlation_id(&cid));
        bus.publish(Event::new("request.completed").correlation_id(&cid));
        if i % 10 == 0 {
            bus.publish(
                Event::new("request.failed")
                    .correlation_id(&cid)
                    .severity(Severity::Error),
            );
        }
    }
    assert!(bus.flush(Duration::from_secs(10)).await);
    let events = seen.events();
    let mut per_request: HashMap<String, Vec<String>> = HashMap::new();
    for e in &events {
        per_request
            .entry(e.correlation_id.clone().unwrap())
            .or_default()
            .push(e.kind.clone());
    }
    let mut kept = 0;
    for (cid, kinds) in &per_request {
        let started = kinds.contains(&"request.started".to_string());
        let completed = kinds.contains(&"request.completed".to_string());
        assert_eq!(started, completed, "{cid} kept only half: {kinds:?}");
        kept += usize::from(started);
    }
    assert!(
        (450..=750).contains(&kept),
        "kept {kept} of 2000 requests at rate 0.3"
    );
    let errors = events.iter().filter(|e| e.kind == "request.failed").count();
    assert_eq!(errors, 200, "every error event is kept");
    assert_eq!(outcomes(&registry)["sampled_out"], 2 * (2000 - kept as u64));

    // The same ids give the same decisions in a second bus.
    let mut config = BusConfig::default();
    config.sampling.rates.insert("request.*".into(), 0.3);
    let (bus2, _r) = start(config);
    let seen2 = Collect::default();
    bus2.register("collect", seen2.clone()).unwrap();
    for i in 0..2000 {
        bus2.publish(Event::new("request.started").correlation_id(format!("req-{i}")));
    }
    assert!(bus2.flush(Duration::from_secs(10)).await);
    let a: HashSet<_> = events
        .iter()
        .filter(|e| e.kind == "request.started")
        .map(|e| e.correlation_id.clone())
        .collect();
    let b: HashSet<_> = seen2
        .events()
        .iter()
        .map(|e| e.correlation_id.clone())
        .collect();
    assert_eq!(a, b);
}

/// A token bucket per kind caps a noisy kind and leaves other kinds alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_caps_only_the_noisy_kind() {
    let mut config = BusConfig::default();
    config.rate_limits.insert(
        "noisy.*".into(),
        RateLimit {
            per_second: 5,
            burst: Some(20),
        },
    );
    let (bus, registry) = start(config);
    let seen = Collect::default();
    bus.register("collect", seen.clone()).unwrap();
    for _ in 0..1000 {
        bus.publish(Event::new("noisy.log"));
        bus.publish(Event::new("quiet.log"));
    }
    assert!(bus.flush(Duration::from_secs(10)).await);
    let events = seen.events();
    let noisy = events.iter().filter(|e| e.kind == "noisy.log").count();
    let quiet = events.iter().filter(|e| e.kind == "quiet.log").count();
    assert_eq!(quiet, 1000);
    // The burst, plus whatever the steady rate refilled while the test ran.
    assert!((20..=40).contains(&noisy), "{noisy} noisy events passed");
    assert_eq!(
        counter(
            &registry,
            "lookout_events_total",
            &[("kind", "noisy.log"), ("outcome", "rate_limited")]
        ),
        1000 - noisy as u64
    );
}

/// Holds the pipeline until released, so the ingress queue fills.
struct Gate(Mutex<()>);
struct GateRef(Arc<Gate>);

impl Sanitizer for GateRef {
    fn name(&self) -> &str {
        "gate"
    }
    fn sanitize(&self, _batch: &mut Vec<Event>) -> Result<(), SanitizeError> {
        drop(self.0.0.lock());
        Ok(())
    }
}

/// A full ingress queue makes `publish` return at once with `Dropped`, and counts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_ingress_drops_without_blocking_and_counts() {
    let registry = Registry::new();
    let gate = Arc::new(Gate(Mutex::new(())));
    let held = gate.0.lock();
    let config = BusConfig {
        ingress_capacity: 100,
        batch_size: 10,
        ..BusConfig::default()
    };
    let bus = Bus::start(config, &registry, Box::new(GateRef(gate.clone()))).unwrap();
    let results: Vec<Published> = (0..1000)
        .map(|_| bus.publish(Event::new("burst")))
        .collect();
    let dropped = results.iter().filter(|r| **r == Published::Dropped).count() as u64;
    // The pipeline holds at most one batch while blocked; the queue holds 100.
    assert!(dropped >= 1000 - 100 - 10, "only {dropped} dropped");
    drop(held);
    assert!(bus.flush(Duration::from_secs(10)).await);
    let o = outcomes(&registry);
    assert_eq!(o["dropped"], dropped);
    assert_eq!(o["accepted"], 1000 - dropped);
    assert_eq!(
        counter(&registry, "lookout_events_published_total", &[]),
        1000
    );
}

/// A slow consumer drops (and counts) only its own batches; a fast one gets everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_consumer_drops_only_its_own_events() {
    let config = BusConfig {
        consumer_capacity: 64,
        batch_size: 16,
        ..BusConfig::default()
    };
    let (bus, registry) = start(config);
    let fast = Collect::default();
    bus.register("fast", fast.clone()).unwrap();
    bus.register("slow", Slow(Duration::from_millis(50)))
        .unwrap();
    // One batch at a time, each handed on only when the fast consumer has it: the fast one
    // never lags; the slow one (50 ms a batch, room for 64, at least 300 batches) must overflow.
    for step in 0..300 {
        for i in 0..16 {
            bus.publish(Event::new("tick").field("i", i64::from(step * 16 + i)));
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while fast.len() < (step as usize + 1) * 16 {
            assert!(
                std::time::Instant::now() < deadline,
                "fast consumer stalled at step {step}"
            );
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
    }
    assert!(bus.flush(Duration::from_secs(30)).await);
    assert_eq!(fast.len(), 4800);
    let c = |consumer, outcome| {
        counter(
            &registry,
            "lookout_consumer_events_total",
            &[("consumer", consumer), ("outcome", outcome)],
        )
    };
    assert_eq!(c("fast", "delivered"), 4800);
    assert_eq!(c("fast", "dropped"), 0);
    assert!(
        c("slow", "dropped") > 0,
        "the slow consumer should have overflowed"
    );
    assert_eq!(c("slow", "delivered") + c("slow", "dropped"), 4800);
}

/// A consumer's failures are counted as `failed`; it stays registered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_failures_are_counted() {
    let (bus, registry) = start(BusConfig {
        batch_size: 1,
        ..BusConfig::default()
    });
    bus.register("flaky", Flaky::default()).unwrap();
    for _ in 0..10 {
        bus.publish(Event::new("x"));
        assert!(bus.flush(Duration::from_secs(5)).await);
    }
    let c = |outcome| {
        counter(
            &registry,
            "lookout_consumer_events_total",
            &[("consumer", "flaky"), ("outcome", outcome)],
        )
    };
    assert_eq!(c("failed"), 5);
    assert_eq!(c("delivered"), 5);
}

/// Fails every batch, as a trapping plugin would.
struct Broken;

impl Sanitizer for Broken {
    fn name(&self) -> &str {
        "broken"
    }
    fn sanitize(&self, _batch: &mut Vec<Event>) -> Result<(), SanitizeError> {
        Err(SanitizeError {
            sanitizer: "broken".into(),
            reason: "trap".into(),
        })
    }
}

/// Returns an event that was never published.
struct Forger;

impl Sanitizer for Forger {
    fn name(&self) -> &str {
        "forger"
    }
    fn sanitize(&self, batch: &mut Vec<Event>) -> Result<(), SanitizeError> {
        batch.push(Event::new("forged").field("password", "leak"));
        Ok(())
    }
}

/// A failing sanitizer's batch goes out with every field redacted, and the failure counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_sanitizer_fails_closed() {
    let registry = Registry::new();
    let bus = Bus::start(BusConfig::default(), &registry, Box::new(Broken)).unwrap();
    let seen = Collect::default();
    bus.register("collect", seen.clone()).unwrap();
    bus.publish(
        Event::new("login")
            .field("password", "hunter2")
            .field("attempt", 3i64),
    );
    assert!(bus.flush(Duration::from_secs(5)).await);
    let events = seen.events();
    assert_eq!(events.len(), 1);
    for f in &events[0].fields {
        assert_eq!(f.value, FieldValue::Str(FAILED_CLOSED.into()), "{f:?}");
    }
    assert_eq!(
        counter(
            &registry,
            "lookout_sanitizer_failures_total",
            &[("sanitizer", "broken")]
        ),
        1
    );

    // A sanitizer that breaks its contract has its whole batch dropped, and counted.
    bus.set_sanitizer(Box::new(Forger));
    bus.publish(Event::new("login").field("password", "hunter2"));
    assert!(bus.flush(Duration::from_secs(5)).await);
    assert_eq!(seen.len(), 1, "nothing of a forged batch goes out");
    assert_eq!(
        counter(&registry, "lookout_events_total", &[("outcome", "dropped")]),
        1
    );
}

/// Leaves out every event whose kind starts with `debug.`.
struct DropDebug;

impl Sanitizer for DropDebug {
    fn name(&self) -> &str {
        "drop-debug"
    }
    fn sanitize(&self, batch: &mut Vec<Event>) -> Result<(), SanitizeError> {
        batch.retain(|e| !e.kind.starts_with("debug."));
        Ok(())
    }
}

/// Under a multi-producer load of over a million events, with sampling, rate limits, a
/// filtering sanitizer, a slow consumer and a flaky one, every event is accounted for:
/// published = Σ bus outcomes, and for each consumer accepted = delivered + dropped + failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_is_accounted_for_under_load() {
    let registry = Registry::new();
    let mut config = BusConfig {
        ingress_capacity: 8192,
        consumer_capacity: 8,
        ..BusConfig::default()
    };
    config.sampling.rates.insert("request.*".into(), 0.5);
    config.rate_limits.insert(
        "noisy.*".into(),
        RateLimit {
            per_second: 1000,
            burst: None,
        },
    );
    let bus = Bus::start(config, &registry, Box::new(DropDebug)).unwrap();
    let all = Collect::default();
    bus.register("all", all.clone()).unwrap();
    bus.register("slow", Slow(Duration::from_micros(300)))
        .unwrap();
    bus.register("flaky", Flaky::default()).unwrap();

    const PRODUCERS: u64 = 4;
    const PER_PRODUCER: u64 = 260_000;
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let bus = bus.clone();
            std::thread::spawn(move || {
                let kinds = [
                    "request.started",
                    "noisy.tick",
                    "debug.trace",
                    "worker.started",
                    "request.completed",
                ];
                let mut queued = 0u64;
                for i in 0..PER_PRODUCER {
                    let kind = kinds[(i % 5) as usize];
                    let e = Event::new(kind)
                        .correlation_id(format!("{p}-{}", i / 5))
                        .field("i", i as i64);
                    if bus.publish(e) == Published::Queued {
                        queued += 1;
                    }
                }
                queued
            })
        })
        .collect();
    let queued: u64 = producers.into_iter().map(|p| p.join().unwrap()).sum();
    bus.shutdown().await;

    let published = counter(&registry, "lookout_events_published_total", &[]);
    assert_eq!(published, PRODUCERS * PER_PRODUCER);
    let o = outcomes(&registry);
    assert_eq!(
        o.values().sum::<u64>(),
        published,
        "published = Σ outcomes: {o:?}"
    );
    assert_eq!(
        published - queued,
        o["dropped"],
        "every refused publish is a counted drop"
    );
    assert!(
        o["sampled_out"] > 0 && o["rate_limited"] > 0 && o["filtered"] > 0,
        "{o:?}"
    );
    let accepted = o["accepted"];
    for consumer in ["all", "slow", "flaky"] {
        let c = |outcome| {
            counter(
                &registry,
                "lookout_consumer_events_total",
                &[("consumer", consumer), ("outcome", outcome)],
            )
        };
        assert_eq!(
            c("delivered") + c("dropped") + c("failed"),
            accepted,
            "consumer {consumer}"
        );
    }
    assert_eq!(
        all.len() as u64,
        counter(
            &registry,
            "lookout_consumer_events_total",
            &[("consumer", "all"), ("outcome", "delivered")]
        )
    );
    assert!(all.events().iter().all(|e| !e.kind.starts_with("debug.")));
}

/// Ids are unique and increase in publish order; timestamps are stamped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_are_unique_and_monotonic() {
    let (bus, _registry) = start(BusConfig::default());
    let seen = Collect::default();
    bus.register("collect", seen.clone()).unwrap();
    for _ in 0..1000 {
        bus.publish(Event::new("x"));
    }
    assert!(bus.flush(Duration::from_secs(5)).await);
    let events = seen.events();
    assert!(events.windows(2).all(|w| w[0].id < w[1].id));
    assert!(
        events
            .iter()
            .all(|e| e.timestamp_ns > 1_600_000_000_000_000_000)
    );
}

/// A config with an out-of-range value is refused with the field named; the old one stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_config_change_is_refused_and_changes_nothing() {
    let (bus, _registry) = start(BusConfig::default());
    let mut bad = BusConfig::default();
    bad.sampling.default_rate = 2.0;
    let err = bus.set_config(bad).unwrap_err().to_string();
    assert!(err.contains("bus.sampling.default_rate"), "{err}");
    assert_eq!(*bus.config(), BusConfig::default());
}

/// An unregistered consumer gets nothing published afterwards; what it was given before
/// stays counted, and other consumers are untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unregistered_consumer_gets_nothing_more() {
    let (bus, registry) = start(BusConfig::default());
    let leaving = Collect::default();
    let staying = Collect::default();
    let handle = bus.register("leaving", leaving.clone()).unwrap();
    bus.register("staying", staying.clone()).unwrap();
    for _ in 0..10 {
        bus.publish(Event::new("before"));
    }
    assert!(bus.flush(Duration::from_secs(5)).await);
    handle.unregister();
    for _ in 0..10 {
        bus.publish(Event::new("after"));
    }
    assert!(bus.flush(Duration::from_secs(5)).await);
    assert_eq!(leaving.len(), 10);
    assert!(leaving.events().iter().all(|e| e.kind == "before"));
    assert_eq!(staying.len(), 20);
    let delivered = |c| {
        counter(
            &registry,
            "lookout_consumer_events_total",
            &[("consumer", c), ("outcome", "delivered")],
        )
    };
    assert_eq!((delivered("leaving"), delivered("staying")), (10, 20));
}

/// Past 512 distinct kinds, new kinds are counted under `kind="other"`: the label set stays
/// bounded and nothing goes uncounted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kind_labels_are_capped_and_the_rest_counted_as_other() {
    let (bus, registry) = start(BusConfig::default());
    for i in 0..600 {
        bus.publish(Event::new(format!("kind.n{i}")));
    }
    assert!(bus.flush(Duration::from_secs(10)).await);
    let published = registry
        .gather()
        .into_iter()
        .find(|f| f.name() == "lookout_events_published_total")
        .unwrap();
    assert_eq!(
        published.get_metric().len(),
        lookout_core::MAX_KIND_LABELS + 1
    );
    assert_eq!(
        counter(
            &registry,
            "lookout_events_published_total",
            &[("kind", "other")]
        ),
        600 - lookout_core::MAX_KIND_LABELS as u64
    );
    assert_eq!(
        counter(
            &registry,
            "lookout_events_total",
            &[("outcome", "accepted")]
        ),
        600
    );
}

/// Events off (`bus.enabled = false`, changeable while running): publish does nothing and
/// counts nothing; back on, events flow again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_can_be_turned_off_and_on() {
    let (bus, registry) = start(BusConfig::default());
    let seen = Collect::default();
    bus.register("collect", seen.clone()).unwrap();
    let mut config = BusConfig {
        enabled: false,
        ..BusConfig::default()
    };
    bus.set_config(config.clone()).unwrap();
    assert_eq!(bus.publish(Event::new("while.off")), Published::Off);
    assert!(bus.flush(Duration::from_secs(10)).await);
    assert!(seen.is_empty());
    assert_eq!(counter(&registry, "lookout_events_published_total", &[]), 0);
    config.enabled = true;
    bus.set_config(config).unwrap();
    assert_eq!(bus.publish(Event::new("while.on")), Published::Queued);
    assert!(bus.flush(Duration::from_secs(10)).await);
    assert_eq!(seen.events()[0].kind, "while.on");
    assert_eq!(counter(&registry, "lookout_events_published_total", &[]), 1);
}

/// A consumer of a given temperament, for the property test.
#[derive(Clone, Copy, Debug)]
enum Temper {
    Fast,
    /// Gives way to the runtime this many times a batch (so its queue backs up).
    Slow(u64),
    /// Fails every n-th batch.
    Flaky(u64),
    /// Goes away after this many batches.
    Leaves(u64),
}

struct Tempered(Temper, u64);

impl Consumer for Tempered {
    async fn handle(&mut self, _batch: Batch) -> Result<(), ConsumerError> {
        self.1 += 1;
        match self.0 {
            Temper::Fast => Ok(()),
            Temper::Slow(turns) => {
                for _ in 0..turns {
                    tokio::task::yield_now().await;
                }
                Ok(())
            }
            Temper::Flaky(n) if self.1.is_multiple_of(n) => {
                Err(ConsumerError::Failed("flaky".into()))
            }
            Temper::Flaky(_) => Ok(()),
            Temper::Leaves(n) if self.1 > n => Err(ConsumerError::Closed),
            Temper::Leaves(_) => Ok(()),
        }
    }
}

fn temper() -> impl proptest::strategy::Strategy<Value = Temper> {
    use proptest::prelude::*;
    prop_oneof![
        Just(Temper::Fast),
        (0u64..500).prop_map(Temper::Slow),
        (1u64..5).prop_map(Temper::Flaky),
        (0u64..10).prop_map(Temper::Leaves),
    ]
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig {
        cases: 48,
        ..proptest::prelude::ProptestConfig::default()
    })]

    /// For any mix of sampling rates, rate limits, queue sizes, batch sizes and consumer
    /// tempers: every published event has exactly one bus outcome, per kind, and every
    /// accepted event exactly one outcome per consumer registered while it was delivered
    /// (one that leaves stops counting then).
    #[test]
    fn every_event_is_accounted_for_whatever_the_settings(
        rates in proptest::collection::vec(0.0f64..=1.0, 3),
        limits in proptest::collection::vec(proptest::option::of(1u32..200), 3),
        ingress in 1usize..2_000,
        batch in 1usize..300,
        consumer_capacity in 1usize..8,
        tempers in proptest::collection::vec(temper(), 1..4),
        events in 1usize..3_000,
        errors_every in 2usize..20,
    ) {
        let kinds = ["a.one", "b.two", "c.three"];
        let mut config = BusConfig {
            ingress_capacity: ingress,
            batch_size: batch,
            consumer_capacity,
            ..BusConfig::default()
        };
        for (i, kind) in kinds.iter().enumerate() {
            config.sampling.rates.insert((*kind).to_string(), rates[i]);
            if let Some(per_second) = limits[i] {
                config.rate_limits.insert((*kind).to_string(), RateLimit { per_second, burst: None });
            }
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let (bus, registry) = start(config);
            let mut handles = Vec::new();
            for (i, t) in tempers.iter().enumerate() {
                handles.push(bus.register(&format!("c{i}"), Tempered(*t, 0)).unwrap());
            }
            for i in 0..events {
                let mut e = Event::new(kinds[i % 3]).correlation_id(format!("r-{i}"));
                if i % errors_every == 0 {
                    e = e.severity(Severity::Error);
                }
                bus.publish(e);
            }
            assert!(bus.flush(Duration::from_secs(30)).await, "the bus did not drain");
            for kind in kinds {
                let published = counter(&registry, "lookout_events_published_total", &[("kind", kind)]);
                let outcomes: u64 = ["accepted", "sampled_out", "rate_limited", "dropped", "filtered"]
                    .iter()
                    .map(|o| counter(&registry, "lookout_events_total", &[("kind", kind), ("outcome", o)]))
                    .sum();
                assert_eq!(published, outcomes, "{kind}");
            }
            let total = outcomes(&registry);
            assert_eq!(total.values().sum::<u64>(), events as u64);
            let accepted = total["accepted"];
            for (i, t) in tempers.iter().enumerate() {
                let name = format!("c{i}");
                let seen: u64 = ["delivered", "dropped", "failed"]
                    .iter()
                    .map(|o| counter(&registry, "lookout_consumer_events_total", &[("consumer", &name), ("outcome", o)]))
                    .sum();
                if let Temper::Leaves(_) = t {
                    // Once gone it is no longer registered: later events are not its own.
                    assert!(seen <= accepted, "consumer {name} ({t:?})");
                } else {
                    assert_eq!(seen, accepted, "consumer {name} ({t:?})");
                }
            }
            drop(handles);
        });
    }
}

/// Never finishes a batch.
struct Stuck;

impl Consumer for Stuck {
    async fn handle(&mut self, _batch: Batch) -> Result<(), ConsumerError> {
        std::future::pending::<()>().await;
        Ok(())
    }
}

/// A bounded shutdown returns even with a consumer that never finishes, lets the others
/// finish, and counts what the stuck one was given and never handled as dropped for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bounded_shutdown_counts_what_a_stuck_consumer_left() {
    let (bus, registry) = start(BusConfig {
        batch_size: 10,
        consumer_capacity: 1000,
        ..BusConfig::default()
    });
    let collect = Collect::default();
    bus.register("fine", collect.clone()).unwrap();
    bus.register("stuck", Stuck).unwrap();
    for i in 0..500 {
        bus.publish(Event::new("x.y").field("i", i64::from(i)));
    }
    let report = tokio::time::timeout(
        Duration::from_secs(10),
        bus.shutdown_within(Duration::from_millis(300)),
    )
    .await
    .expect("a bounded shutdown returns");
    assert_eq!(report.unprocessed, 0);
    assert_eq!(collect.len(), 500, "the healthy consumer finished");
    let stuck = |o| {
        counter(
            &registry,
            "lookout_consumer_events_total",
            &[("consumer", "stuck"), ("outcome", o)],
        )
    };
    assert_eq!(stuck("dropped"), 500, "all of it was left undelivered");
    assert_eq!(report.undelivered, 500);
    assert_eq!(stuck("delivered") + stuck("failed"), 0);
    // And an unbounded one ends once consumers are done (their queues close).
    let (bus, _registry) = start(BusConfig::default());
    bus.register("fine", Collect::default()).unwrap();
    bus.publish(Event::new("x.y"));
    tokio::time::timeout(Duration::from_secs(10), bus.shutdown())
        .await
        .expect("shutdown waits for consumers to finish, not for ever");
}
