//! The exporter task of one signal: takes batches from its [`SignalQueue`], POSTs each as one
//! OTLP/HTTP protobuf request, retries what may succeed later (a connection error, a timeout,
//! 429, 502, 503, 504 — after `Retry-After` when the collector gives one in seconds, else a
//! doubling backoff) and settles every batch in exactly one outcome. It runs on its own task:
//! nothing on the bus ever waits for the network.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;

use crate::Signal;
use crate::config::OtlpConfig;
use crate::metrics::DropReason;
use crate::queue::SignalQueue;

/// The longest `Retry-After` honoured; a longer one waits this long.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);
/// The most of a refusal's body quoted in the log.
const MAX_QUOTED: usize = 300;

/// What one signal's items are, on the wire.
pub(crate) trait Item: Send + Sync + Sized + 'static {
    const SIGNAL: Signal;
    /// The export request of `batch`, encoded.
    fn encode(batch: Vec<Self>, resource: &Resource, scope: &InstrumentationScope) -> Vec<u8>;
    /// From a success's body: how many items the collector still refused, and why.
    fn partial_rejection(body: &[u8]) -> Option<(u64, String)>;
}

impl Item for Span {
    const SIGNAL: Signal = Signal::Traces;

    fn encode(batch: Vec<Span>, resource: &Resource, scope: &InstrumentationScope) -> Vec<u8> {
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(resource.clone()),
                scope_spans: vec![ScopeSpans {
                    scope: Some(scope.clone()),
                    spans: batch,
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
        }
        .encode_to_vec()
    }

    fn partial_rejection(body: &[u8]) -> Option<(u64, String)> {
        let partial = ExportTraceServiceResponse::decode(body)
            .ok()?
            .partial_success?;
        let rejected = u64::try_from(partial.rejected_spans).ok()?;
        (rejected > 0).then_some((rejected, partial.error_message))
    }
}

impl Item for LogRecord {
    const SIGNAL: Signal = Signal::Logs;

    fn encode(batch: Vec<LogRecord>, resource: &Resource, scope: &InstrumentationScope) -> Vec<u8> {
        ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: Some(resource.clone()),
                scope_logs: vec![ScopeLogs {
                    scope: Some(scope.clone()),
                    log_records: batch,
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
        }
        .encode_to_vec()
    }

    fn partial_rejection(body: &[u8]) -> Option<(u64, String)> {
        let partial = ExportLogsServiceResponse::decode(body)
            .ok()?
            .partial_success?;
        let rejected = u64::try_from(partial.rejected_log_records).ok()?;
        (rejected > 0).then_some((rejected, partial.error_message))
    }
}

/// How a batch's request ended.
#[derive(Debug, PartialEq, Eq)]
enum Delivery {
    /// Accepted; `rejected` of its items refused all the same (a partial success).
    Exported {
        rejected: u64,
    },
    Rejected,
    RetriesExhausted,
}

/// What one try said.
enum Try {
    Done {
        rejected: u64,
        why: String,
    },
    Refused(String),
    Again {
        after: Option<Duration>,
        why: String,
    },
}

/// What a signal's exporter needs, shared by its tries.
pub(crate) struct Exporter {
    pub client: reqwest::Client,
    pub config: Arc<OtlpConfig>,
    pub resource: Resource,
    pub scope: InstrumentationScope,
}

/// Empties `queue` into the collector until the task is stopped.
pub(crate) async fn run<T: Item>(
    queue: Arc<SignalQueue<T>>,
    exporter: Arc<Exporter>,
    flushing: Arc<AtomicBool>,
) {
    let url = exporter.config.signal_url(T::SIGNAL.path());
    let flush_interval = Duration::from_millis(exporter.config.flush_interval_ms);
    let mut log = Quiet::default();
    loop {
        let batch = queue
            .next_batch(exporter.config.batch_max, flush_interval, &flushing)
            .await;
        let n = batch.len();
        let body = Bytes::from(T::encode(batch, &exporter.resource, &exporter.scope));
        let delivery = exporter.send::<T>(&url, body, &queue, &mut log).await;
        match delivery {
            Delivery::Exported { rejected } => {
                let rejected = usize::try_from(rejected).unwrap_or(n).min(n);
                queue.settle(n, n - rejected, DropReason::Rejected);
            }
            Delivery::Rejected => queue.settle(n, 0, DropReason::Rejected),
            Delivery::RetriesExhausted => queue.settle(n, 0, DropReason::RetriesExhausted),
        }
    }
}

impl Exporter {
    /// Sends one batch, with its retries.
    async fn send<T: Item>(
        &self,
        url: &str,
        body: Bytes,
        queue: &SignalQueue<T>,
        log: &mut Quiet,
    ) -> Delivery {
        let signal = T::SIGNAL.as_str();
        let mut retries = 0u32;
        loop {
            let started = Instant::now();
            let outcome = self.try_once::<T>(url, body.clone()).await;
            queue
                .metrics
                .export_seconds
                .observe(started.elapsed().as_secs_f64());
            match outcome {
                Try::Done { rejected, why } => {
                    if log.failing {
                        log.failing = false;
                        tracing::info!(target: "lookout::otlp", signal, url, "OTLP collector reachable again");
                    }
                    if rejected > 0 && log.may_warn() {
                        tracing::warn!(target: "lookout::otlp", signal, url, rejected, reason = %why, "OTLP collector refused part of a batch (counted rejected)");
                    }
                    return Delivery::Exported { rejected };
                }
                Try::Refused(why) => {
                    if log.may_warn() {
                        tracing::warn!(target: "lookout::otlp", signal, url, reason = %why, "OTLP collector refused a batch (counted rejected)");
                    }
                    return Delivery::Rejected;
                }
                Try::Again { after, why } => {
                    if !log.failing {
                        log.failing = true;
                        tracing::warn!(target: "lookout::otlp", signal, url, reason = %why, "OTLP export failed; retrying with backoff");
                    }
                    if retries >= self.config.max_retries {
                        if log.may_warn() {
                            tracing::warn!(target: "lookout::otlp", signal, url, retries, reason = %why, "OTLP batch dropped after its retries (counted retries_exhausted)");
                        }
                        return Delivery::RetriesExhausted;
                    }
                    retries += 1;
                    queue.metrics.retries.inc();
                    let pause = after
                        .map(|a| a.min(MAX_RETRY_AFTER))
                        .unwrap_or_else(|| self.config.backoff(retries));
                    tokio::time::sleep(pause).await;
                }
            }
        }
    }

    async fn try_once<T: Item>(&self, url: &str, body: Bytes) -> Try {
        let response = match self
            .client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/x-protobuf")
            .body(body)
            .send()
            .await
        {
            Ok(response) => response,
            // Connection refused or reset, a timeout: the collector may be back soon.
            Err(e) => {
                return Try::Again {
                    after: None,
                    why: error_chain(&e),
                };
            }
        };
        let status = response.status();
        if status.is_success() {
            let protobuf = response
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("application/x-protobuf"));
            // A success whose body is lost is still a success.
            let body = response.bytes().await.unwrap_or_default();
            let (rejected, why) = if protobuf {
                T::partial_rejection(&body).unwrap_or_default()
            } else {
                (0, String::new())
            };
            return Try::Done { rejected, why };
        }
        if matches!(status.as_u16(), 429 | 502 | 503 | 504) {
            let after = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            return Try::Again {
                after,
                why: format!("HTTP {status}"),
            };
        }
        let text = response.text().await.unwrap_or_default();
        let quoted: String = text.chars().take(MAX_QUOTED).collect();
        Try::Refused(format!("HTTP {status}: {}", quoted.trim()))
    }
}

/// An error with its causes (reqwest's own message is only the outermost).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Keeps the log readable through an outage: one line when it starts and one when it ends,
/// and other warnings at most once every ten seconds.
#[derive(Default)]
struct Quiet {
    failing: bool,
    last_warned: Option<Instant>,
}

impl Quiet {
    fn may_warn(&mut self) -> bool {
        let now = Instant::now();
        let may = self
            .last_warned
            .is_none_or(|at| now.duration_since(at) >= Duration::from_secs(10));
        if may {
            self.last_warned = Some(now);
        }
        may
    }
}
