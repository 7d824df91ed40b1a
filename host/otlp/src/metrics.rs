//! `lookout_otlp_*`: what the exporter did with what it was given, so its books balance:
//! per signal, `received = exported + Σ dropped{reason} + queued`.

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

use crate::Signal;

/// Why an item was dropped, as its `reason` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// The signal's queue was full when it came.
    QueueFull,
    /// The collector refused it (a 4xx other than 429, or a partial success naming it).
    Rejected,
    /// Its batch failed `max_retries` retries.
    RetriesExhausted,
    /// Still held when the host stopped and the grace ran out.
    Shutdown,
    /// A `trace.span` event that is no span (its ids missing or not hex).
    Invalid,
}

impl DropReason {
    pub const ALL: [DropReason; 5] = [
        DropReason::QueueFull,
        DropReason::Rejected,
        DropReason::RetriesExhausted,
        DropReason::Shutdown,
        DropReason::Invalid,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::QueueFull => "queue_full",
            DropReason::Rejected => "rejected",
            DropReason::RetriesExhausted => "retries_exhausted",
            DropReason::Shutdown => "shutdown",
            DropReason::Invalid => "invalid",
        }
    }
}

/// Why an event given to the exporter was not for it, as its `reason` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SkipReason {
    /// Another host's event (from NATS): that host exports it.
    Remote,
    /// Its signal is turned off (`otlp.traces` or `otlp.logs`).
    SignalOff,
}

impl SkipReason {
    pub const ALL: [SkipReason; 2] = [SkipReason::Remote, SkipReason::SignalOff];

    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::Remote => "remote",
            SkipReason::SignalOff => "signal_off",
        }
    }
}

/// One signal's series, looked up once.
#[derive(Clone)]
pub(crate) struct SignalMetrics {
    pub received: IntCounter,
    pub exported: IntCounter,
    dropped: Vec<IntCounter>,
    pub retries: IntCounter,
    pub queued: IntGauge,
    pub export_seconds: Histogram,
}

impl SignalMetrics {
    pub fn dropped(&self, reason: DropReason) -> &IntCounter {
        series(&DropReason::ALL, reason, &self.dropped)
    }
}

#[derive(Clone)]
pub(crate) struct OtlpMetrics {
    pub traces: SignalMetrics,
    pub logs: SignalMetrics,
    skipped: Vec<IntCounter>,
}

impl OtlpMetrics {
    pub fn new(registry: &Registry) -> prometheus::Result<OtlpMetrics> {
        let received = IntCounterVec::new(
            Opts::new(
                "lookout_otlp_received_total",
                "Items (spans, log records) the OTLP exporter took from the bus, by signal: received = exported + dropped + queued.",
            ),
            &["signal"],
        )?;
        let exported = IntCounterVec::new(
            Opts::new(
                "lookout_otlp_exported_total",
                "Items the collector accepted, by signal.",
            ),
            &["signal"],
        )?;
        let dropped = IntCounterVec::new(
            Opts::new(
                "lookout_otlp_dropped_total",
                "Items the OTLP exporter gave up on, by signal and reason: queue_full, rejected (the collector refused them), retries_exhausted, shutdown (left when the grace ran out), invalid (a span event with bad ids).",
            ),
            &["signal", "reason"],
        )?;
        let retries = IntCounterVec::new(
            Opts::new(
                "lookout_otlp_retries_total",
                "Export requests sent again after a connection error, 429, 502, 503 or 504, by signal.",
            ),
            &["signal"],
        )?;
        let queued = IntGaugeVec::new(
            Opts::new(
                "lookout_otlp_queued",
                "Items held by the OTLP exporter (waiting or being sent), by signal.",
            ),
            &["signal"],
        )?;
        let export_seconds = HistogramVec::new(
            HistogramOpts::new(
                "lookout_otlp_export_seconds",
                "Time of one OTLP export request (each try), by signal.",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
            &["signal"],
        )?;
        let skipped = IntCounterVec::new(
            Opts::new(
                "lookout_otlp_skipped_total",
                "Events handed to the OTLP exporter that were not for it, by reason: remote (another host's, which exports it), signal_off.",
            ),
            &["reason"],
        )?;
        registry.register(Box::new(received.clone()))?;
        registry.register(Box::new(exported.clone()))?;
        registry.register(Box::new(dropped.clone()))?;
        registry.register(Box::new(retries.clone()))?;
        registry.register(Box::new(queued.clone()))?;
        registry.register(Box::new(export_seconds.clone()))?;
        registry.register(Box::new(skipped.clone()))?;
        // Every series made now, so a scrape shows zeros rather than nothing.
        let signal = |s: Signal| {
            let label = s.as_str();
            SignalMetrics {
                received: received.with_label_values(&[label]),
                exported: exported.with_label_values(&[label]),
                dropped: DropReason::ALL
                    .iter()
                    .map(|r| dropped.with_label_values(&[label, r.as_str()]))
                    .collect(),
                retries: retries.with_label_values(&[label]),
                queued: queued.with_label_values(&[label]),
                export_seconds: export_seconds.with_label_values(&[label]),
            }
        };
        Ok(OtlpMetrics {
            traces: signal(Signal::Traces),
            logs: signal(Signal::Logs),
            skipped: SkipReason::ALL
                .iter()
                .map(|r| skipped.with_label_values(&[r.as_str()]))
                .collect(),
        })
    }

    pub fn skipped(&self, reason: SkipReason) -> &IntCounter {
        series(&SkipReason::ALL, reason, &self.skipped)
    }
}

/// The pre-created series of `reason`, one per entry of `all`, in its order.
fn series<'a, R: PartialEq>(all: &[R], reason: R, counters: &'a [IntCounter]) -> &'a IntCounter {
    let at = all
        .iter()
        .position(|r| *r == reason)
        .expect("every reason has a series");
    &counters[at]
}
