//! Events in and out: `POST /api/v1/events` takes a JSON array of events or NDJSON (one
//! event a line) and publishes them on the bus; `GET /api/v1/events/stream` follows the bus
//! as Server-Sent Events. A body is checked whole before anything is published, and the first
//! problem is reported with its line (NDJSON) or index (array) and the field at fault. The
//! stream reads from a bus consumer, so it only ever sends sanitized events; it must never
//! hand a client an event from the ingest path.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures_util::stream::{Stream, StreamExt};
use lookout_core::{
    Batch, Consumer, ConsumerError, Event, FieldValue, Published, Severity, validate_kind,
};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::{ApiError, AppState};

/// Most events one request may carry.
pub const MAX_EVENTS_PER_REQUEST: usize = 10_000;
/// Most fields one event may carry.
pub const MAX_FIELDS: usize = 128;
/// Longest field key, in bytes.
pub const MAX_KEY_LEN: usize = 128;
/// Batches buffered per live-stream client before its bus queue starts dropping.
const STREAM_BUFFER: usize = 16;

/// What was wrong with a body, and where.
#[derive(Debug, PartialEq)]
pub struct IngestError {
    /// 1-based line for NDJSON; 0-based index for a JSON array.
    pub at: Location,
    /// The field at fault (`kind`, `fields.retries`), if one is.
    pub field: Option<String>,
    pub reason: String,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Location {
    Body,
    Line(usize),
    Index(usize),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IncomingEvent {
    kind: String,
    #[serde(default)]
    severity: Option<String>,
    #[serde(default)]
    correlation_id: Option<String>,
    #[serde(default)]
    fields: Option<serde_json::Map<String, Value>>,
}

/// Parses a whole body into events, or names the first problem.
pub fn parse_body(body: &[u8]) -> Result<Vec<Event>, IngestError> {
    let text = std::str::from_utf8(body).map_err(|e| IngestError {
        at: Location::Body,
        field: None,
        reason: format!("body is not UTF-8: {e}"),
    })?;
    let trimmed = text.trim_start();
    if trimmed.is_empty() {
        return Err(IngestError {
            at: Location::Body,
            field: None,
            reason: "body is empty: expected a JSON array of events or NDJSON".into(),
        });
    }
    let mut events = Vec::new();
    if trimmed.starts_with('[') {
        let values: Vec<Value> = serde_json::from_str(text).map_err(|e| IngestError {
            at: Location::Body,
            field: None,
            reason: format!("invalid JSON array: {e}"),
        })?;
        check_count(values.len())?;
        for (i, value) in values.into_iter().enumerate() {
            events.push(to_event(value).map_err(|(field, reason)| IngestError {
                at: Location::Index(i),
                field,
                reason,
            })?);
        }
    } else {
        for (n, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let at = Location::Line(n + 1);
            let value: Value = serde_json::from_str(line).map_err(|e| IngestError {
                at,
                field: None,
                reason: format!("invalid JSON: {e}"),
            })?;
            events.push(to_event(value).map_err(|(field, reason)| IngestError {
                at,
                field,
                reason,
            })?);
            check_count(events.len())?;
        }
    }
    Ok(events)
}

fn check_count(n: usize) -> Result<(), IngestError> {
    if n > MAX_EVENTS_PER_REQUEST {
        return Err(IngestError {
            at: Location::Body,
            field: None,
            reason: format!("more than {MAX_EVENTS_PER_REQUEST} events in one request"),
        });
    }
    Ok(())
}

type FieldError = (Option<String>, String);

fn to_event(value: Value) -> Result<Event, FieldError> {
    if !value.is_object() {
        return Err((
            None,
            "expected an object like {\"kind\": \"...\", \"fields\": {...}}".into(),
        ));
    }
    let incoming: IncomingEvent = serde_json::from_value(value).map_err(|e| {
        let msg = e.to_string();
        let field = msg.split('`').nth(1).map(str::to_string);
        (field, msg)
    })?;
    validate_kind(&incoming.kind).map_err(|r| (Some("kind".into()), r))?;
    let mut event = Event::new(incoming.kind);
    if let Some(severity) = incoming.severity {
        event.severity = match severity.as_str() {
            "trace" => Severity::Trace,
            "debug" => Severity::Debug,
            "info" => Severity::Info,
            "warn" | "warning" => Severity::Warn,
            "error" => Severity::Error,
            other => {
                return Err((
                    Some("severity".into()),
                    format!("`{other}` is not one of trace, debug, info, warn, error"),
                ));
            }
        };
    }
    if let Some(cid) = incoming.correlation_id {
        lookout_core::validate_correlation_id(&cid)
            .map_err(|reason| (Some("correlation_id".into()), reason))?;
        event.correlation_id = Some(cid);
    }
    if let Some(fields) = incoming.fields {
        if fields.len() > MAX_FIELDS {
            return Err((
                Some("fields".into()),
                format!("more than {MAX_FIELDS} fields"),
            ));
        }
        for (key, value) in fields {
            let name = format!("fields.{key}");
            if key.is_empty() || key.len() > MAX_KEY_LEN {
                return Err((
                    Some(name),
                    format!("field keys must be 1–{MAX_KEY_LEN} bytes"),
                ));
            }
            let value = match value {
                Value::String(s) => FieldValue::Str(s),
                Value::Bool(b) => FieldValue::Bool(b),
                Value::Number(n) => match n.as_i64() {
                    Some(i) => FieldValue::Int(i),
                    None => FieldValue::Float(n.as_f64().unwrap_or(f64::NAN)),
                },
                Value::Null => {
                    return Err((
                        Some(name),
                        "null is not a field value (omit the field)".into(),
                    ));
                }
                Value::Array(_) | Value::Object(_) => {
                    return Err((
                        Some(name),
                        "field values must be a string, number or bool, not an array or object"
                            .into(),
                    ));
                }
            };
            event.fields.push(lookout_core::Field { key, value });
        }
    }
    Ok(event)
}

impl From<IngestError> for ApiError {
    fn from(e: IngestError) -> Self {
        let mut body = json!({ "error": e.reason });
        match e.at {
            Location::Body => {}
            Location::Line(n) => body["line"] = json!(n),
            Location::Index(i) => body["index"] = json!(i),
        }
        if let Some(field) = e.field {
            body["field"] = json!(field);
        }
        ApiError {
            status: StatusCode::BAD_REQUEST,
            body,
        }
    }
}

pub(crate) async fn ingest(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let body = body.map_err(|rejection| {
        let status = rejection.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                status,
                format!(
                    "body is larger than {} bytes; split it into several requests",
                    state.max_body_bytes
                ),
            )
        } else {
            ApiError::new(status, rejection.body_text())
        }
    })?;
    let events = parse_body(&body)?;
    let (mut accepted, mut dropped, mut off) = (0u64, 0u64, 0u64);
    for event in events {
        match state.bus.publish(event) {
            Published::Queued => accepted += 1,
            Published::Dropped => dropped += 1,
            Published::Off => off += 1,
        }
    }
    let mut body = json!({ "accepted": accepted, "dropped": dropped });
    if off > 0 {
        // Events are turned off on this host: say so rather than pretend they were taken.
        body["off"] = json!(off);
    }
    Ok((StatusCode::ACCEPTED, Json(body)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StreamQuery {
    /// Only events whose kind starts with this.
    kind: Option<String>,
    /// Only events from this host: `local` for this host's own, or another host's name (its
    /// events arrive over NATS). All hosts when absent.
    origin: Option<String>,
}

/// Forwards sanitized batches to one live-stream client.
struct StreamClient {
    tx: mpsc::Sender<Batch>,
}

impl Consumer for StreamClient {
    async fn handle(&mut self, batch: Batch) -> Result<(), ConsumerError> {
        // A slow client makes this wait, so its own bus queue fills and drops (counted).
        self.tx.send(batch).await.map_err(|_| ConsumerError::Closed)
    }
}

pub(crate) async fn stream(
    State(state): State<Arc<AppState>>,
    query: Result<Query<StreamQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    let (tx, rx) = mpsc::channel::<Batch>(STREAM_BUFFER);
    // When the client goes, the response stream (and `rx` in it) is dropped; the consumer's
    // next send fails, it answers `Closed` and the bus unregisters it.
    state
        .bus
        .register(lookout_core::LIVE_STREAM_CONSUMER, StreamClient { tx })
        .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    let prefix = query.kind.unwrap_or_default();
    let origin = query.origin;
    let from = move |e: &lookout_core::Event| match origin.as_deref() {
        None => true,
        Some("local") => e.origin.is_none(),
        Some(host) => e.origin.as_deref() == Some(host),
    };
    let stream = ReceiverStream::new(rx).flat_map(move |batch| {
        let messages: Vec<Result<SseEvent, Infallible>> = batch
            .iter()
            .filter(|e| e.kind.starts_with(&prefix) && from(e))
            .map(|e| Ok(SseEvent::default().data(serde_json::to_string(e).unwrap_or_default())))
            .collect();
        futures_util::stream::iter(messages)
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn array_and_ndjson_parse_to_the_same_events() {
        let array = br#"[{"kind":"a.b","fields":{"n":1,"x":1.5,"s":"t","ok":true}},{"kind":"c","severity":"error","correlation_id":"r-1"}]"#;
        let ndjson = b"{\"kind\":\"a.b\",\"fields\":{\"n\":1,\"x\":1.5,\"s\":\"t\",\"ok\":true}}\n\n{\"kind\":\"c\",\"severity\":\"error\",\"correlation_id\":\"r-1\"}\n";
        let a = parse_body(array).unwrap();
        assert_eq!(a, parse_body(ndjson).unwrap());
        assert_eq!(a[0].get("n"), Some(&FieldValue::Int(1)));
        assert_eq!(a[0].get("x"), Some(&FieldValue::Float(1.5)));
        assert_eq!(a[1].severity, Severity::Error);
    }

    #[test]
    fn errors_name_the_line_and_field() {
        let err =
            parse_body(b"{\"kind\":\"ok\"}\n{\"kind\":\"ok\",\"fields\":{\"deep\":{\"a\":1}}}\n")
                .unwrap_err();
        assert_eq!(err.at, Location::Line(2));
        assert_eq!(err.field.as_deref(), Some("fields.deep"));
        let err = parse_body(br#"[{"kind":"ok"},{"kind":"Bad Kind"}]"#).unwrap_err();
        assert_eq!(
            (err.at, err.field.as_deref()),
            (Location::Index(1), Some("kind"))
        );
        let err = parse_body(br#"[{"kind":"ok","sevrity":"info"}]"#).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("sevrity"));
        let err = parse_body(b"{\"kind\":\"ok\"}\n{not json\n").unwrap_err();
        assert_eq!(err.at, Location::Line(2));
        assert!(parse_body(b"").is_err());
        assert!(parse_body(br#"[{"kind":"a","correlation_id":"has space"}]"#).is_err());
    }
}
