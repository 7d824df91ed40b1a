//! The bus's own accounting, as Prometheus metrics. Every event published ends in exactly one
//! bus outcome, and every accepted event in exactly one outcome per consumer:
//!
//! - `lookout_events_published_total{kind}`
//! - `lookout_events_total{kind,outcome}`, outcome ∈ `accepted | sampled_out | rate_limited |
//!   dropped | filtered` (`filtered`: a sanitizer left the event out on purpose)
//! - `lookout_consumer_events_total{consumer,outcome}`, outcome ∈ `delivered | dropped | failed`
//!
//! so `published = Σ outcomes` and, per consumer, `accepted = delivered + dropped + failed`
//! once the bus is drained. The `kind` label is capped at [`MAX_KIND_LABELS`] values; later
//! kinds are counted under `kind="other"` so a noisy producer cannot explode cardinality.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, OnceLock};

use parking_lot::RwLock;
use prometheus::core::Collector;
use prometheus::proto::Metric;
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

use crate::error::{Error, Result};

/// Most distinct `kind` label values; beyond it, kinds share `kind="other"`.
pub const MAX_KIND_LABELS: usize = 512;

/// Counters of one kind, resolved once so the hot path does no label lookups.
#[derive(Debug)]
pub(crate) struct KindCounters {
    pub published: IntCounter,
    pub accepted: IntCounter,
    pub sampled_out: IntCounter,
    pub rate_limited: IntCounter,
    pub dropped: IntCounter,
    pub filtered: IntCounter,
}

/// Counters of one consumer.
#[derive(Clone, Debug)]
pub(crate) struct ConsumerCounters {
    pub delivered: IntCounter,
    pub dropped: IntCounter,
    pub failed: IntCounter,
    /// Events queued for the consumer and not yet handled (shared by consumers of one name).
    pub queued: IntGauge,
}

/// Per-batch time of each pipeline stage.
#[derive(Clone, Debug)]
pub(crate) struct StageTimers {
    pub sample: Histogram,
    pub rate_limit: Histogram,
    pub sanitize: Histogram,
    pub fan_out: Histogram,
}

/// The bus's books as its own counters hold them (read from the handles, not looked up in
/// a registry by name): what the exit log reconciles and the overview shows.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Books {
    /// By `kind` label (past [`MAX_KIND_LABELS`], `other`).
    pub kinds: BTreeMap<String, KindBooks>,
    /// By consumer name.
    pub consumers: BTreeMap<String, ConsumerBooks>,
    /// Batches whose sanitizer failed (they went out with every field redacted).
    pub sanitizer_failures: u64,
    /// Time spent in the pipeline's stages, all batches.
    pub stage_seconds: f64,
}

/// One kind's events: published, and each bus outcome (their sum once drained).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KindBooks {
    pub published: u64,
    pub accepted: u64,
    pub sampled_out: u64,
    pub rate_limited: u64,
    pub dropped: u64,
    pub filtered: u64,
}

/// One consumer's accepted events, by outcome.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConsumerBooks {
    pub delivered: u64,
    pub dropped: u64,
    pub failed: u64,
}

impl Books {
    /// Every kind together.
    pub fn total(&self) -> KindBooks {
        self.kinds
            .values()
            .fold(KindBooks::default(), |sum, k| KindBooks {
                published: sum.published + k.published,
                accepted: sum.accepted + k.accepted,
                sampled_out: sum.sampled_out + k.sampled_out,
                rate_limited: sum.rate_limited + k.rate_limited,
                dropped: sum.dropped + k.dropped,
                filtered: sum.filtered + k.filtered,
            })
    }
}

/// The series of one of our own counter vectors, each with its label values by name.
fn series(vec: &IntCounterVec) -> impl Iterator<Item = (Metric, Vec<(String, String)>)> {
    vec.collect().into_iter().flat_map(|family| {
        family.get_metric().to_vec().into_iter().map(|m| {
            let labels = m
                .get_label()
                .iter()
                .map(|l| (l.name().to_string(), l.value().to_string()))
                .collect();
            (m, labels)
        })
    })
}

fn label<'a>(labels: &'a [(String, String)], name: &str) -> Option<&'a str> {
    labels
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

#[derive(Debug)]
pub(crate) struct BusMetrics {
    published: IntCounterVec,
    events: IntCounterVec,
    consumer_events: IntCounterVec,
    consumer_queued: IntGaugeVec,
    pub sanitizer_failures: IntCounterVec,
    pub ingress_length: IntGauge,
    pub stages: StageTimers,
    kinds: RwLock<HashMap<String, Arc<KindCounters>>>,
    /// The counters every kind past the cap shares.
    other: OnceLock<Arc<KindCounters>>,
}

fn register<C: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    c: C,
    name: &str,
) -> Result<C> {
    registry
        .register(Box::new(c.clone()))
        .map_err(|e| Error::Metric {
            name: name.to_string(),
            reason: e.to_string(),
        })?;
    Ok(c)
}

fn counter_vec(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> Result<IntCounterVec> {
    let c = IntCounterVec::new(Opts::new(name, help), labels).map_err(|e| Error::Metric {
        name: name.to_string(),
        reason: e.to_string(),
    })?;
    register(registry, c, name)
}

impl BusMetrics {
    pub fn new(registry: &Registry) -> Result<Self> {
        let published = counter_vec(
            registry,
            "lookout_events_published_total",
            "Events handed to the bus, per kind.",
            &["kind"],
        )?;
        let events = counter_vec(
            registry,
            "lookout_events_total",
            "Published events by kind and bus outcome (accepted, sampled_out, rate_limited, dropped, filtered).",
            &["kind", "outcome"],
        )?;
        let consumer_events = counter_vec(
            registry,
            "lookout_consumer_events_total",
            "Accepted events by consumer and outcome (delivered, dropped, failed).",
            &["consumer", "outcome"],
        )?;
        let consumer_queued = register(
            registry,
            IntGaugeVec::new(
                Opts::new(
                    "lookout_consumer_queue_events",
                    "Accepted events queued for a consumer and not yet handled.",
                ),
                &["consumer"],
            )
            .map_err(|e| Error::Metric {
                name: "lookout_consumer_queue_events".into(),
                reason: e.to_string(),
            })?,
            "lookout_consumer_queue_events",
        )?;
        let sanitizer_failures = counter_vec(
            registry,
            "lookout_sanitizer_failures_total",
            "Batches whose sanitizer failed; they went out with every field redacted.",
            &["sanitizer"],
        )?;
        let ingress_length = register(
            registry,
            IntGauge::new(
                "lookout_bus_ingress_queue_length",
                "Events waiting in the bus's ingress queue.",
            )
            .map_err(|e| Error::Metric {
                name: "lookout_bus_ingress_queue_length".into(),
                reason: e.to_string(),
            })?,
            "lookout_bus_ingress_queue_length",
        )?;
        let stage = HistogramVec::new(
            HistogramOpts::new(
                "lookout_bus_stage_seconds",
                "Time each pipeline stage spends per batch.",
            )
            .buckets(vec![
                1e-6, 5e-6, 2e-5, 1e-4, 5e-4, 2e-3, 1e-2, 5e-2, 0.25, 1.0,
            ]),
            &["stage"],
        )
        .map_err(|e| Error::Metric {
            name: "lookout_bus_stage_seconds".into(),
            reason: e.to_string(),
        })?;
        let stage = register(registry, stage, "lookout_bus_stage_seconds")?;
        let stages = StageTimers {
            sample: stage.with_label_values(&["sample"]),
            rate_limit: stage.with_label_values(&["rate_limit"]),
            sanitize: stage.with_label_values(&["sanitize"]),
            fan_out: stage.with_label_values(&["fan_out"]),
        };
        Ok(BusMetrics {
            published,
            events,
            consumer_events,
            consumer_queued,
            sanitizer_failures,
            ingress_length,
            stages,
            kinds: RwLock::new(HashMap::new()),
            other: OnceLock::new(),
        })
    }

    /// The counters of `kind`, created on first use (or `other` past the cap).
    pub fn kind(&self, kind: &str) -> Arc<KindCounters> {
        {
            let kinds = self.kinds.read();
            if let Some(c) = kinds.get(kind) {
                return c.clone();
            }
            // Past the cap, new kinds share one set of counters and the map stays bounded.
            if kinds.len() >= MAX_KIND_LABELS {
                return self
                    .other
                    .get_or_init(|| self.counters_for("other"))
                    .clone();
            }
        }
        let mut kinds = self.kinds.write();
        if let Some(c) = kinds.get(kind) {
            return c.clone();
        }
        if kinds.len() >= MAX_KIND_LABELS {
            return self
                .other
                .get_or_init(|| self.counters_for("other"))
                .clone();
        }
        let counters = self.counters_for(kind);
        kinds.insert(kind.to_string(), counters.clone());
        counters
    }

    fn counters_for(&self, label: &str) -> Arc<KindCounters> {
        let outcome = |o: &str| self.events.with_label_values(&[label, o]);
        Arc::new(KindCounters {
            published: self.published.with_label_values(&[label]),
            accepted: outcome("accepted"),
            sampled_out: outcome("sampled_out"),
            rate_limited: outcome("rate_limited"),
            dropped: outcome("dropped"),
            filtered: outcome("filtered"),
        })
    }

    /// The books, from the counters themselves.
    pub fn books(&self) -> Books {
        let mut books = Books::default();
        let count = |m: &Metric| m.get_counter().get_value() as u64;
        for (m, labels) in series(&self.published) {
            if let Some(kind) = label(&labels, "kind") {
                books.kinds.entry(kind.into()).or_default().published = count(&m);
            }
        }
        for (m, labels) in series(&self.events) {
            let (Some(kind), Some(outcome)) = (label(&labels, "kind"), label(&labels, "outcome"))
            else {
                continue;
            };
            let k = books.kinds.entry(kind.into()).or_default();
            let slot = match outcome {
                "accepted" => &mut k.accepted,
                "sampled_out" => &mut k.sampled_out,
                "rate_limited" => &mut k.rate_limited,
                "dropped" => &mut k.dropped,
                "filtered" => &mut k.filtered,
                _ => continue,
            };
            *slot = count(&m);
        }
        for (m, labels) in series(&self.consumer_events) {
            let (Some(name), Some(outcome)) =
                (label(&labels, "consumer"), label(&labels, "outcome"))
            else {
                continue;
            };
            let c = books.consumers.entry(name.into()).or_default();
            let slot = match outcome {
                "delivered" => &mut c.delivered,
                "dropped" => &mut c.dropped,
                "failed" => &mut c.failed,
                _ => continue,
            };
            *slot = count(&m);
        }
        books.sanitizer_failures = series(&self.sanitizer_failures)
            .map(|(m, _)| count(&m))
            .sum();
        let st = &self.stages;
        books.stage_seconds = [&st.sample, &st.rate_limit, &st.sanitize, &st.fan_out]
            .iter()
            .map(|h| h.get_sample_sum())
            .sum();
        books
    }

    pub fn consumer(&self, name: &str) -> ConsumerCounters {
        ConsumerCounters {
            delivered: self.consumer_events.with_label_values(&[name, "delivered"]),
            dropped: self.consumer_events.with_label_values(&[name, "dropped"]),
            failed: self.consumer_events.with_label_values(&[name, "failed"]),
            queued: self.consumer_queued.with_label_values(&[name]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_books_read_from_the_counters_match_the_exposition() {
        let registry = Registry::new();
        let metrics = BusMetrics::new(&registry).unwrap();
        let a = metrics.kind("request.started");
        a.published.inc_by(5);
        a.accepted.inc_by(3);
        a.sampled_out.inc();
        a.dropped.inc();
        let c = metrics.consumer("live_stream");
        c.delivered.inc_by(2);
        c.failed.inc();
        metrics
            .sanitizer_failures
            .with_label_values(&["redact"])
            .inc();
        let books = metrics.books();
        assert_eq!(
            books.kinds["request.started"],
            KindBooks {
                published: 5,
                accepted: 3,
                sampled_out: 1,
                dropped: 1,
                ..KindBooks::default()
            }
        );
        assert_eq!(
            books.consumers["live_stream"],
            ConsumerBooks {
                delivered: 2,
                failed: 1,
                ..ConsumerBooks::default()
            }
        );
        assert_eq!(books.sanitizer_failures, 1);
        assert_eq!(books.total().published, 5);
        // What a scrape says is what the books say.
        let scraped: f64 = registry
            .gather()
            .iter()
            .filter(|f| f.name() == "lookout_events_total")
            .flat_map(|f| f.get_metric())
            .map(|m| m.get_counter().get_value())
            .sum();
        let t = books.total();
        assert_eq!(
            scraped as u64,
            t.accepted + t.sampled_out + t.rate_limited + t.dropped + t.filtered
        );
    }
}
