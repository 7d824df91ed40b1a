//! The sanitization hook of the pipeline. The bus calls the current [`Sanitizer`] on every
//! batch before fan-out; it never lets a batch through unsanitized. If the sanitizer fails,
//! the batch *fails closed*: every field value is replaced by [`FAILED_CLOSED`].

use serde::{Deserialize, Serialize};

use crate::event::{Event, FieldValue};

/// The value every field gets when the sanitizer failed on its batch.
pub const FAILED_CLOSED: &str = "[REDACTED:sanitizer_failed]";

/// Why a sanitizer could not sanitize a batch.
#[derive(Debug, thiserror::Error)]
#[error("sanitizer `{sanitizer}` failed: {reason}")]
pub struct SanitizeError {
    pub sanitizer: String,
    pub reason: String,
}

/// What the bus does with a batch whose sanitizer failed. Never "pass it through".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailurePolicy {
    /// Send the batch with every field value replaced by [`FAILED_CLOSED`].
    #[default]
    Redact,
    /// Drop the batch; its events are counted `dropped`.
    Drop,
}

/// Rewrites batches of events. Implementations must be cheap to call concurrently from the
/// bus's pipeline thread; the WASM runtime provides the real one.
pub trait Sanitizer: Send + Sync + 'static {
    /// A short name for logs and metrics.
    fn name(&self) -> &str;

    /// Sanitizes `batch` in place. Events may be left out (counted `filtered`); events must
    /// not be added or reordered, and ids must be kept, or the whole batch is dropped. On
    /// `Err` the bus redacts every field of what is left in `batch` and sends that.
    fn sanitize(&self, batch: &mut Vec<Event>) -> Result<(), SanitizeError>;

    /// What to do with a batch this sanitizer failed on.
    fn failure_policy(&self) -> FailurePolicy {
        FailurePolicy::Redact
    }
}

/// A sanitizer that changes nothing: for tests and benchmarks of the bare pipeline only.
#[derive(Debug, Default)]
pub struct PassThrough;

impl Sanitizer for PassThrough {
    fn name(&self) -> &str {
        "pass-through"
    }

    fn sanitize(&self, _batch: &mut Vec<Event>) -> Result<(), SanitizeError> {
        Ok(())
    }
}

/// Redacts every field of every event: the safe placeholder before the configured
/// sanitizer is installed.
#[derive(Debug, Default)]
pub struct RedactAll;

impl Sanitizer for RedactAll {
    fn name(&self) -> &str {
        "redact-all"
    }

    fn sanitize(&self, batch: &mut Vec<Event>) -> Result<(), SanitizeError> {
        redact_everything(batch);
        Ok(())
    }
}

/// The fail-closed fallback: every field value of every event is redacted. (Kinds and
/// correlation ids are validated at ingest to be plain identifiers.)
pub fn redact_everything(batch: &mut [Event]) {
    for event in batch {
        for field in &mut event.fields {
            field.value = FieldValue::Str(FAILED_CLOSED.to_string());
        }
    }
}
