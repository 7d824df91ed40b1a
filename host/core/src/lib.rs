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
mod metrics;
mod sanitize;

pub use bus::{Batch, Bus, Consumer, ConsumerError, ConsumerHandle, Published};
pub use config::{
    BusConfig, DEFAULT_BATCH_SIZE, DEFAULT_CONSUMER_CAPACITY, DEFAULT_INGRESS_CAPACITY, RateLimit,
    SamplingConfig,
};
pub use error::{Error, Result};
pub use event::{Event, Field, FieldValue, MAX_KIND_LEN, Severity, now_ns, validate_kind};
pub use metrics::MAX_KIND_LABELS;
pub use sanitize::{
    FAILED_CLOSED, FailurePolicy, PassThrough, RedactAll, SanitizeError, Sanitizer,
    redact_everything,
};
