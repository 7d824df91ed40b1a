//! A failed request's words, cleaned before they leave the host: the one sanitizer call that
//! the failure log line and the HTTP error answer both go through.

use lookout_core::{Bus, Event, FieldValue};
use serde::Serialize;

use super::events::args_fields;
use super::request::ExecError;

/// A failed request's words as they may leave the host (an HTTP answer, a log line): its
/// message, traceback, stderr tail and arguments, through the bus's sanitizer in one call.
#[derive(Clone, Debug, Serialize)]
pub struct CleanFailure {
    pub message: String,
    pub traceback: Option<String>,
    pub stderr_tail: Option<String>,
    /// The arguments by top-level key (`""` for arguments that are not an object).
    pub args: serde_json::Map<String, serde_json::Value>,
}

impl CleanFailure {
    pub fn of(bus: &Bus, error: &ExecError, args: &serde_json::Value) -> CleanFailure {
        let mut event = Event::new("request.failure")
            .field("message", error.message.as_str())
            .field("stderr_tail", error.stderr_tail.join("\n"));
        if let Some(tb) = &error.traceback {
            event = event.field("traceback", tb.as_str());
        }
        for (key, value) in args_fields(args) {
            event = event.field(key, value);
        }
        let clean = bus
            .sanitize_copy(vec![event])
            .pop()
            .unwrap_or_else(|| Event::new("request.failure"));
        let text = |key: &str| match clean.get(key) {
            Some(FieldValue::Str(s)) if !s.is_empty() => Some(s.clone()),
            _ => None,
        };
        let mut clean_args = serde_json::Map::new();
        for field in &clean.fields {
            let value = serde_json::to_value(&field.value).unwrap_or_default();
            if let Some(key) = field.key.strip_prefix("args.") {
                clean_args.insert(key.to_string(), value);
            } else if field.key == "args" {
                clean_args.insert(String::new(), value);
            }
        }
        CleanFailure {
            message: text("message").unwrap_or_default(),
            traceback: text("traceback"),
            stderr_tail: text("stderr_tail"),
            args: clean_args,
        }
    }
}
