//! Pool metrics, updated where things happen (never from sampled events).

use prometheus::{
    HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, exponential_buckets,
};

/// Shared by every pool of a host; labelled by pool.
#[derive(Clone)]
pub struct PoolMetrics {
    pub(crate) requests: IntCounterVec,
    pub(crate) duration: HistogramVec,
    pub(crate) queue_wait: HistogramVec,
    pub(crate) workers: IntGaugeVec,
    pub(crate) queue_length: IntGaugeVec,
    pub(crate) sessions: IntGaugeVec,
    pub(crate) worker_exits: IntCounterVec,
    pub(crate) rejected: IntCounterVec,
    pub(crate) telemetry: IntCounterVec,
    pub(crate) telemetry_dropped: IntCounterVec,
}

impl std::fmt::Debug for PoolMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolMetrics").finish_non_exhaustive()
    }
}

/// Why a request is refused before any worker (`lookout_requests_rejected_total{reason}`).
const REJECT_REASONS: [&str; 3] = ["queue_full", "unavailable", "queue_timeout"];
/// Why a worker process ends (`lookout_worker_exits_total{reason}`).
const EXIT_REASONS: [&str; 9] = [
    "crashed",
    "hung",
    "failed_to_start",
    "recycled_max_requests",
    "recycled_max_age",
    "recycled_memory",
    "recycled_manual",
    "recycled_config_changed",
    "stopped",
];

impl PoolMetrics {
    /// Creates a new pool's refusal and exit counters at 0: a series that exists before its
    /// first event lets `rate()` and alerts see the first one.
    pub(crate) fn init(&self, pool: &str) {
        for reason in REJECT_REASONS {
            self.rejected.with_label_values(&[pool, reason]);
        }
        for reason in EXIT_REASONS {
            self.worker_exits.with_label_values(&[pool, reason]);
        }
        for kind in crate::telemetry::KINDS {
            self.telemetry.with_label_values(&[pool, kind]);
        }
        for reason in crate::telemetry::DROP_REASONS {
            self.telemetry_dropped.with_label_values(&[pool, reason]);
        }
    }

    /// Drops a removed pool's gauges: a pool that is gone has no series, not zeros. Its
    /// counters stay, as counters of a finished process would.
    pub(crate) fn forget(&self, pool: &str) {
        for state in crate::WorkerState::ALL {
            let _ = self.workers.remove_label_values(&[pool, state.as_str()]);
        }
        let _ = self.queue_length.remove_label_values(&[pool]);
        let _ = self.sessions.remove_label_values(&[pool]);
    }

    pub fn new(registry: &Registry) -> prometheus::Result<PoolMetrics> {
        // ≈ 1 ms … 33 s, doubling.
        let buckets = exponential_buckets(0.001, 2.0, 16)?;
        let metrics = PoolMetrics {
            requests: IntCounterVec::new(
                Opts::new(
                    "lookout_requests_total",
                    "Requests executed by pool, command and status (ok, error, timeout, hung, crashed, protocol_error).",
                ),
                &["pool", "command", "status"],
            )?,
            duration: HistogramVec::new(
                HistogramOpts::new(
                    "lookout_request_duration_seconds",
                    "Time from a request reaching a worker to its reply, by pool and command.",
                )
                .buckets(buckets.clone()),
                &["pool", "command"],
            )?,
            queue_wait: HistogramVec::new(
                HistogramOpts::new(
                    "lookout_queue_wait_seconds",
                    "Time a request waited for a worker, by pool.",
                )
                .buckets(buckets),
                &["pool"],
            )?,
            workers: IntGaugeVec::new(
                Opts::new(
                    "lookout_workers",
                    "Worker slots by pool and state (starting, available, busy, stopping, down).",
                ),
                &["pool", "state"],
            )?,
            queue_length: IntGaugeVec::new(
                Opts::new(
                    "lookout_queue_length",
                    "Requests waiting for a worker, by pool.",
                ),
                &["pool"],
            )?,
            sessions: IntGaugeVec::new(
                Opts::new("lookout_sessions_active", "Live sessions, by pool."),
                &["pool"],
            )?,
            worker_exits: IntCounterVec::new(
                Opts::new(
                    "lookout_worker_exits_total",
                    "Worker processes that ended, by pool and reason (crashed, hung, failed_to_start, recycled_max_requests, recycled_max_age, recycled_memory, recycled_manual, recycled_config_changed, stopped).",
                ),
                &["pool", "reason"],
            )?,
            rejected: IntCounterVec::new(
                Opts::new(
                    "lookout_requests_rejected_total",
                    "Requests refused before reaching a worker, by pool and reason (queue_full, unavailable, queue_timeout).",
                ),
                &["pool", "reason"],
            )?,
            telemetry: IntCounterVec::new(
                Opts::new(
                    "lookout_worker_telemetry_total",
                    "Telemetry from workers' own code taken onto the bus, by pool and kind (event, span).",
                ),
                &["pool", "kind"],
            )?,
            telemetry_dropped: IntCounterVec::new(
                Opts::new(
                    "lookout_worker_telemetry_dropped_total",
                    "Telemetry from workers' own code dropped, by pool and reason (rate, bytes: over the pool's telemetry budget; invalid: unreadable or not allowed).",
                ),
                &["pool", "reason"],
            )?,
        };
        registry.register(Box::new(metrics.requests.clone()))?;
        registry.register(Box::new(metrics.duration.clone()))?;
        registry.register(Box::new(metrics.queue_wait.clone()))?;
        registry.register(Box::new(metrics.workers.clone()))?;
        registry.register(Box::new(metrics.queue_length.clone()))?;
        registry.register(Box::new(metrics.sessions.clone()))?;
        registry.register(Box::new(metrics.worker_exits.clone()))?;
        registry.register(Box::new(metrics.rejected.clone()))?;
        registry.register(Box::new(metrics.telemetry.clone()))?;
        registry.register(Box::new(metrics.telemetry_dropped.clone()))?;
        Ok(metrics)
    }
}
