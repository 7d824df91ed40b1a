//! Lifecycle events built from a whole pool or a whole request (`pool.started`,
//! `request.completed`) and the request arguments as event fields. Kept apart so what a
//! consumer sees is readable in one place; it publishes through the bus and decides nothing.

use lookout_core::{Event, FieldValue, Severity};

use super::request::{ExecError, ExecRequest, Executed};
use super::state::Inner;

impl Inner {
    pub(super) fn announce_started(&self) {
        let state = self.state.lock();
        let ready = state.slots.iter().filter(|s| s.worker.is_some()).count();
        let last_error = state.slots.iter().find_map(|s| s.last_error.clone());
        drop(state);
        let mut event = Event::new("pool.started")
            .field("pool", self.config().name.as_str())
            .field("size", self.config().size as i64)
            .field("workers_ready", ready as i64)
            .field("startup_ms", self.started.elapsed().as_secs_f64() * 1e3)
            .field("config", self.config().shown().to_string());
        if ready == 0 {
            event = event.severity(Severity::Error);
        }
        if let Some(e) = last_error.filter(|_| ready < self.config().size) {
            event = event.field("last_error", e);
        }
        tracing::info!(target: "lookout::pool", pool = %self.config().name, size = self.config().size, workers_ready = ready, "pool started");
        self.publish(event);
    }
}

/// `request.completed`; a failed request carries its whole context, its arguments as
/// `args.<key>` fields (the sanitizer cleans them like any other field).
pub(super) fn completed_event(
    pool: &str,
    request: &ExecRequest,
    outcome: &Result<Executed, ExecError>,
    worker: &str,
    duration_ms: f64,
    queue_wait_ms: f64,
) -> Event {
    let mut event = Event::new("request.completed")
        .correlation_id(request.correlation_id.as_str())
        .field("pool", pool)
        .field("command", request.command.as_str())
        .field("worker", worker)
        .field("duration_ms", duration_ms)
        .field("queue_wait_ms", queue_wait_ms)
        .field("success", outcome.is_ok());
    if let Some(session) = &request.session_id {
        event = event.field("session_id", session.as_str());
    }
    if let Err(e) = outcome {
        event = event
            .severity(Severity::Error)
            .field(
                "error_kind",
                e.worker_kind.as_deref().unwrap_or(e.kind.as_str()),
            )
            .field("error_class", e.kind.as_str())
            .field("error_message", e.message.as_str());
        if let Some(tb) = &e.traceback {
            event = event.field("traceback", tb.as_str());
        }
        if !e.stderr_tail.is_empty() {
            event = event.field("stderr_tail", e.stderr_tail.join("\n"));
        }
        for (key, value) in args_fields(&request.args) {
            event = event.field(key, value);
        }
    }
    event
}

/// A JSON value as an event field's: scalars stay scalars, other JSON becomes its text (a
/// request's arguments, a worker's event fields and span attributes alike).
pub(crate) fn field_value(v: &serde_json::Value) -> FieldValue {
    match v {
        serde_json::Value::String(s) => FieldValue::Str(s.clone()),
        serde_json::Value::Bool(b) => FieldValue::Bool(*b),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => FieldValue::Int(i),
            None => FieldValue::Float(n.as_f64().unwrap_or_default()),
        },
        other => FieldValue::Str(other.to_string()),
    }
}

/// A request's arguments as event fields: `args.<key>` for each top-level key (nested values
/// as JSON text), or `args` for a non-object.
pub fn args_fields(args: &serde_json::Value) -> Vec<(String, FieldValue)> {
    let value = field_value;
    match args {
        serde_json::Value::Null => Vec::new(),
        serde_json::Value::Object(map) => map
            .iter()
            .take(64)
            .map(|(k, v)| (format!("args.{k}"), value(v)))
            .collect(),
        other => vec![("args".to_string(), value(other))],
    }
}
