//! lookout speaks OpenTelemetry: the OTLP exporter (`[otlp]`, off by default).
//!
//! - It is one more bus consumer (`otlp`), so it only ever sees events after the sanitizer:
//!   nothing unsanitized leaves the host this way.
//! - `trace.span` events become OTLP spans, every other event an OTLP log record ([`map`],
//!   after the issue-19 spec); another host's events (from NATS) are left to that host.
//! - Each signal has a bounded queue and its own exporter task: the consumer never waits on
//!   the network, a full queue drops and counts, a batch is retried with backoff while the
//!   collector is away or busy and dropped and counted when it refuses it or the retries run
//!   out. Per signal, `lookout_otlp_received_total = exported + Σ dropped{reason} + queued`.
//! - OTLP/HTTP with protobuf bodies (`opentelemetry-proto`'s pregenerated messages, `prost`
//!   to encode them: no protoc at build time). gRPC is refused by the config check for now.

mod config;
mod export;
pub mod map;
mod metrics;
mod queue;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use lookout_core::{Batch, Bus, Consumer, ConsumerError, ConsumerHandle};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use opentelemetry_proto::tonic::trace::v1::Span;
use parking_lot::Mutex;
use tokio::task::JoinHandle;

pub use config::{
    DEFAULT_BACKOFF_INITIAL_MS, DEFAULT_BACKOFF_MAX_MS, DEFAULT_BATCH_MAX, DEFAULT_ENDPOINT,
    DEFAULT_FLUSH_INTERVAL_MS, DEFAULT_MAX_RETRIES, DEFAULT_QUEUE_CAPACITY, DEFAULT_SERVICE_NAME,
    DEFAULT_TIMEOUT_MS, OtlpConfig, Protocol,
};
pub use metrics::{DropReason, SkipReason};

use export::Exporter;
use metrics::{OtlpMetrics, SignalMetrics};
use queue::SignalQueue;

/// Why the exporter could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Config(lookout_core::Invalid),
    #[error("otlp: cannot build the HTTP client: {0}")]
    Client(String),
    #[error("otlp metrics: {0}")]
    Metrics(String),
    #[error("otlp: cannot register on the bus: {0}")]
    Register(String),
}

/// What OTLP carries: the two signals lookout exports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Signal {
    Traces,
    Logs,
}

impl Signal {
    /// Its `signal` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Signal::Traces => "traces",
            Signal::Logs => "logs",
        }
    }

    /// The path appended to the endpoint.
    pub fn path(self) -> &'static str {
        match self {
            Signal::Traces => "/v1/traces",
            Signal::Logs => "/v1/logs",
        }
    }
}

/// What a status page can show of the exporter.
#[derive(Clone, Debug, serde::Serialize)]
pub struct OtlpStatus {
    pub endpoint: String,
    /// Spans held (waiting or being sent) and the queue's capacity; `None` when traces are off.
    pub traces: Option<QueueStatus>,
    /// Log records held and the queue's capacity; `None` when logs are off.
    pub logs: Option<QueueStatus>,
}

#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct QueueStatus {
    pub queued: usize,
    pub capacity: usize,
}

/// A running OTLP exporter: its bus consumer, its queues and their exporter tasks.
pub struct Otlp {
    endpoint: String,
    traces: Option<Arc<SignalQueue<Span>>>,
    logs: Option<Arc<SignalQueue<LogRecord>>>,
    flushing: Arc<AtomicBool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    _registration: ConsumerHandle,
}

impl std::fmt::Debug for Otlp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Otlp")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl Otlp {
    /// Registers the consumer and starts the exporter tasks (call inside a tokio runtime);
    /// `None` when export is off. The collector need not be there yet: batches wait and are
    /// retried.
    pub fn start(
        config: &OtlpConfig,
        bus: &Bus,
        registry: &prometheus::Registry,
    ) -> Result<Option<Otlp>, Error> {
        if !config.enabled {
            return Ok(None);
        }
        if let Some(invalid) = config.problems().into_iter().next() {
            return Err(Error::Config(invalid));
        }
        let metrics = OtlpMetrics::new(registry).map_err(|e| Error::Metrics(e.to_string()))?;
        let mut headers = reqwest::header::HeaderMap::new();
        for (name, value) in &config.headers {
            // Checked by `problems()`; a secret value is never quoted.
            let name = reqwest::header::HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                Error::Config(lookout_core::Invalid::new(
                    format!("otlp.headers.{name}"),
                    "not a valid HTTP header name",
                ))
            })?;
            let mut value = reqwest::header::HeaderValue::from_str(value).map_err(|_| {
                Error::Config(lookout_core::Invalid::new(
                    format!("otlp.headers.{name}"),
                    "not a valid HTTP header value",
                ))
            })?;
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(config.timeout_ms))
            .connect_timeout(Duration::from_millis(config.timeout_ms.min(5_000)))
            .user_agent(concat!("lookout/", env!("CARGO_PKG_VERSION")))
            .default_headers(headers)
            .build()
            .map_err(|e| Error::Client(e.to_string()))?;
        let exporter = Arc::new(Exporter {
            client,
            config: Arc::new(config.clone()),
            resource: map::resource(&config.service_name, &host_name()),
            scope: map::scope(),
        });
        let flushing = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        let traces = config.traces.then(|| {
            start_signal(
                config,
                metrics.traces.clone(),
                &exporter,
                &flushing,
                &mut tasks,
            )
        });
        let logs = config.logs.then(|| {
            start_signal(
                config,
                metrics.logs.clone(),
                &exporter,
                &flushing,
                &mut tasks,
            )
        });
        let registration = bus
            .register(
                lookout_core::OTLP_CONSUMER,
                OtlpConsumer {
                    traces: traces.clone(),
                    logs: logs.clone(),
                    metrics,
                    warned: 0,
                    full_warned_at: None,
                },
            )
            .map_err(|e| Error::Register(e.to_string()));
        let registration = match registration {
            Ok(r) => r,
            Err(e) => {
                for task in &tasks {
                    task.abort();
                }
                return Err(e);
            }
        };
        tracing::info!(target: "lookout::otlp", endpoint = %config.endpoint, traces = config.traces, logs = config.logs, "OTLP export started");
        Ok(Some(Otlp {
            endpoint: config.endpoint.clone(),
            traces,
            logs,
            flushing,
            tasks: Mutex::new(tasks),
            _registration: registration,
        }))
    }

    pub fn status(&self) -> OtlpStatus {
        let of = |held: usize, capacity: usize| QueueStatus {
            queued: held,
            capacity,
        };
        OtlpStatus {
            endpoint: self.endpoint.clone(),
            traces: self.traces.as_ref().map(|q| of(q.held(), q.capacity())),
            logs: self.logs.as_ref().map(|q| of(q.held(), q.capacity())),
        }
    }

    /// Sends what is queued without waiting for batches to fill, for up to `grace` (call after
    /// the bus has drained), then stops; what is still held is dropped as `shutdown`, counted
    /// and logged.
    pub async fn stop(&self, grace: Duration) {
        self.flushing.store(true, Ordering::Release);
        let held = || {
            self.traces.as_ref().map_or(0, |q| q.held())
                + self.logs.as_ref().map_or(0, |q| q.held())
        };
        let deadline = tokio::time::Instant::now() + grace;
        while held() > 0 && tokio::time::Instant::now() < deadline {
            if let Some(q) = &self.traces {
                q.wake();
            }
            if let Some(q) = &self.logs {
                q.wake();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let tasks = std::mem::take(&mut *self.tasks.lock());
        for task in tasks {
            task.abort();
            // Stopped for sure before what it held is counted.
            let _ = task.await;
        }
        let left_spans = self
            .traces
            .as_ref()
            .map_or(0, |q| q.drop_all(DropReason::Shutdown));
        let left_logs = self
            .logs
            .as_ref()
            .map_or(0, |q| q.drop_all(DropReason::Shutdown));
        if left_spans + left_logs > 0 {
            tracing::warn!(target: "lookout::otlp", spans = left_spans, log_records = left_logs, "OTLP export stopped with items it could not send in time (counted dropped, reason shutdown)");
        }
    }
}

/// The exporter's face on the bus: maps each event to its signal's item and queues it.
struct OtlpConsumer {
    traces: Option<Arc<SignalQueue<Span>>>,
    logs: Option<Arc<SignalQueue<LogRecord>>>,
    metrics: OtlpMetrics,
    /// Warnings about span events that are no spans, so far (the first few are logged).
    warned: u32,
    /// When a full queue was last logged (at most once every ten seconds).
    full_warned_at: Option<std::time::Instant>,
}

impl Consumer for OtlpConsumer {
    async fn handle(&mut self, batch: Batch) -> Result<(), ConsumerError> {
        let mut spans = Vec::new();
        let mut records = Vec::new();
        // What fits is read once: only this consumer adds, so it can only grow meanwhile.
        let mut span_room = self.traces.as_ref().map_or(0, |q| q.room());
        let mut log_room = self.logs.as_ref().map_or(0, |q| q.room());
        let (mut spans_full, mut logs_full, mut invalid) = (0u64, 0u64, 0u64);
        let (mut remote, mut off) = (0u64, 0u64);
        for event in batch.iter() {
            if event.origin.is_some() {
                // Another host's event: that host exports it.
                remote += 1;
            } else if event.kind == map::SPAN_KIND {
                if self.traces.is_none() {
                    off += 1;
                } else if span_room == 0 {
                    spans_full += 1;
                } else {
                    match map::span(event) {
                        Ok(span) => {
                            spans.push(span);
                            span_room -= 1;
                        }
                        Err(map::NotASpan(field)) => {
                            invalid += 1;
                            if self.warned < 10 {
                                self.warned += 1;
                                tracing::warn!(target: "lookout::otlp", field, correlation_id = ?event.correlation_id, "a trace.span event without a valid `{field}` is not exported (counted dropped, reason invalid)");
                            }
                        }
                    }
                }
            } else if self.logs.is_none() {
                off += 1;
            } else if log_room == 0 {
                logs_full += 1;
            } else {
                records.push(map::log_record(event));
                log_room -= 1;
            }
        }
        if let Some(q) = &self.traces {
            q.push(spans, invalid, spans_full);
        }
        if let Some(q) = &self.logs {
            q.push(records, 0, logs_full);
        }
        if remote > 0 {
            self.metrics.skipped(SkipReason::Remote).inc_by(remote);
        }
        if off > 0 {
            self.metrics.skipped(SkipReason::SignalOff).inc_by(off);
        }
        let quiet = self
            .full_warned_at
            .is_some_and(|at| at.elapsed() < Duration::from_secs(10));
        if spans_full + logs_full > 0 && !quiet {
            self.full_warned_at = Some(std::time::Instant::now());
            tracing::warn!(target: "lookout::otlp", spans = spans_full, log_records = logs_full, "OTLP queue full: items dropped (counted queue_full; the collector is away or slow)");
        }
        Ok(())
    }
}

/// This machine's host name (`host.name`), as the kernel has it.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// One signal's bounded queue and the exporter task that empties it.
fn start_signal<T: export::Item>(
    config: &OtlpConfig,
    metrics: SignalMetrics,
    exporter: &Arc<Exporter>,
    flushing: &Arc<AtomicBool>,
    tasks: &mut Vec<JoinHandle<()>>,
) -> Arc<SignalQueue<T>> {
    let queue = Arc::new(SignalQueue::new(config.queue_capacity, metrics));
    tasks.push(tokio::spawn(export::run(
        queue.clone(),
        exporter.clone(),
        flushing.clone(),
    )));
    queue
}
