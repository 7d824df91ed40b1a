//! `lookout_nats_*`: what the link did, so its events reconcile like the bus's.

use std::collections::HashSet;
use std::sync::Arc;

use parking_lot::Mutex;
use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// Distinct origins counted by name; later ones are counted as `other`.
const MAX_ORIGINS: usize = 256;

#[derive(Clone)]
pub(crate) struct NatsMetrics {
    pub sink_published: IntCounter,
    pub sink_dropped: IntCounter,
    pub sink_remote: IntCounter,
    pub buffered: IntGauge,
    pub connected: IntGauge,
    pub reconnects: IntCounter,
    pub slow_consumer: IntCounter,
    source: IntCounterVec,
    origins: Arc<Mutex<HashSet<String>>>,
}

impl NatsMetrics {
    pub fn new(registry: &Registry) -> prometheus::Result<NatsMetrics> {
        let sink = IntCounterVec::new(
            Opts::new(
                "lookout_nats_sink_events_total",
                "Events the NATS sink was handed, by outcome: published (the server confirmed them), dropped (its buffer was full, or it stopped with them), remote (another host's: not forwarded).",
            ),
            &["outcome"],
        )?;
        let source = IntCounterVec::new(
            Opts::new(
                "lookout_nats_source_events_total",
                "Messages the NATS source took, by origin host and outcome: received (published on this bus), invalid (refused), own (this host's: ignored).",
            ),
            &["origin", "outcome"],
        )?;
        let buffered = IntGauge::new(
            "lookout_nats_sink_buffered_events",
            "Events waiting in the NATS sink's buffer.",
        )?;
        let connected = IntGauge::new(
            "lookout_nats_connected",
            "1 while connected to a NATS server.",
        )?;
        let reconnects = IntCounter::new(
            "lookout_nats_reconnects_total",
            "Connections to NATS made again after a loss.",
        )?;
        let slow_consumer = IntCounter::new(
            "lookout_nats_slow_consumer_total",
            "Times the NATS server dropped messages because the source fell behind.",
        )?;
        registry.register(Box::new(sink.clone()))?;
        registry.register(Box::new(source.clone()))?;
        registry.register(Box::new(buffered.clone()))?;
        registry.register(Box::new(connected.clone()))?;
        registry.register(Box::new(reconnects.clone()))?;
        registry.register(Box::new(slow_consumer.clone()))?;
        Ok(NatsMetrics {
            sink_published: sink.with_label_values(&["published"]),
            sink_dropped: sink.with_label_values(&["dropped"]),
            sink_remote: sink.with_label_values(&["remote"]),
            buffered,
            connected,
            reconnects,
            slow_consumer,
            source,
            origins: Arc::default(),
        })
    }

    /// The source counter of `origin` (a subject token, not yet trusted).
    pub fn source(&self, origin: &str, outcome: &str) -> IntCounter {
        let label = if !crate::valid_host(origin) {
            "unknown"
        } else {
            let mut origins = self.origins.lock();
            if origins.contains(origin) || origins.len() < MAX_ORIGINS {
                origins.insert(origin.to_string());
                origin
            } else {
                "other"
            }
        };
        self.source.with_label_values(&[label, outcome])
    }
}
