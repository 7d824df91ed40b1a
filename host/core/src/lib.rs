//! lookout's core: events and the event bus.
//!
//! [`Bus::publish`] never blocks: events go into a bounded ingress queue (full = counted
//! drop). One pipeline thread drains it in batches — sampling per kind (deterministic by
//! correlation id), a token bucket per kind, the [`Sanitizer`], then fan-out to each
//! [`Consumer`]'s own bounded queue. Every event ends in exactly one counted outcome
//! (see [`metrics`](crate#accounting)).
//!
//! # Accounting
//! `lookout_events_published_total{kind}` = Σ `lookout_events_total{kind,outcome}`, and for
//! each consumer registered before the events were published, accepted =
//! Σ `lookout_consumer_events_total{consumer,outcome}` once the bus is drained.
//!
//! This crate knows nothing of wasmtime or HTTP.

mod bus;
mod config;
mod error;
mod event;
mod invalid;
mod metrics;
mod sampling;
mod sanitize;

pub use bus::{
    BUILT_IN_CONSUMERS, Batch, Bus, Consumer, ConsumerError, ConsumerHandle, LIVE_STREAM_CONSUMER,
    NATS_SINK_CONSUMER, OTLP_CONSUMER, Published, RECENT_ERRORS_CONSUMER, ShutdownReport,
};
pub use config::{
    BusConfig, DEFAULT_BATCH_SIZE, DEFAULT_CONSUMER_CAPACITY, DEFAULT_INGRESS_CAPACITY, RateLimit,
    SamplingConfig,
};
pub use error::{Error, Result};
pub use event::{
    Event, Field, FieldValue, MAX_CORRELATION_ID_LEN, MAX_KIND_LEN, Severity, new_id, now_ns,
    validate_correlation_id, validate_kind,
};
pub use invalid::Invalid;

/// Runs `f`, which may block (a plugin call whose WASI output blocks on tokio, a sanitizer
/// running to its deadline), without stalling async tasks: on a multi-thread tokio runtime's
/// worker it hands that worker's other tasks away first (`block_in_place`). On a
/// current-thread runtime that cannot be done: call from `spawn_blocking` there.
pub fn blocking<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}
pub use metrics::{Books, ConsumerBooks, KindBooks, MAX_KIND_LABELS};
pub use sanitize::{
    FAILED_CLOSED, FailurePolicy, PassThrough, RedactAll, SanitizeError, Sanitizer,
    redact_everything,
};
