//! Bus events as OTLP messages: a `trace.span` event becomes a [`Span`], every other event a
//! [`LogRecord`] (docs/otlp.md, the issue-19 spec). Pure functions of a sanitized event: this
//! module never sees an unsanitized one and adds nothing a field did not say.

use lookout_core::{Event, FieldValue, Severity};
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, SeverityNumber};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::{Span, Status, status::StatusCode};

/// The event kind that carries a finished span.
pub const SPAN_KIND: &str = "trace.span";

/// Fields of a span event that are the span itself, not attributes of it.
const SPAN_OWN_FIELDS: [&str; 9] = [
    "trace_id",
    "span_id",
    "parent_span_id",
    "name",
    "start_unix_nano",
    "end_unix_nano",
    "status",
    "status_message",
    "span_kind",
];

/// Event fields that say where a span ran; exported as `lookout.<field>` attributes.
const SPAN_PLACE_FIELDS: [&str; 4] = ["pool", "worker", "command", "origin"];

/// Why a `trace.span` event cannot be a span (counted `invalid`).
#[derive(Debug, PartialEq, Eq)]
pub struct NotASpan(pub &'static str);

/// The resource everything is exported under.
pub fn resource(service_name: &str, host_name: &str) -> Resource {
    Resource {
        attributes: vec![
            kv("service.name", string(service_name)),
            kv("service.version", string(env!("CARGO_PKG_VERSION"))),
            kv("host.name", string(host_name)),
        ],
        ..Resource::default()
    }
}

/// The instrumentation scope: lookout itself.
pub fn scope() -> InstrumentationScope {
    InstrumentationScope {
        name: "lookout".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        ..InstrumentationScope::default()
    }
}

/// A `trace.span` event as an OTLP span: ids from their hex fields, `attr.<key>` fields as
/// attributes `<key>`, where it ran as `lookout.pool|worker|command|origin`, the request's
/// correlation id as `lookout.correlation_id`.
pub fn span(event: &Event) -> Result<Span, NotASpan> {
    let trace_id = hex_field::<16>(event, "trace_id").ok_or(NotASpan("trace_id"))?;
    let span_id = hex_field::<8>(event, "span_id").ok_or(NotASpan("span_id"))?;
    let parent_span_id = match event.get("parent_span_id") {
        None => Vec::new(),
        Some(_) => hex_field::<8>(event, "parent_span_id")
            .ok_or(NotASpan("parent_span_id"))?
            .to_vec(),
    };
    let name = text(event, "name").unwrap_or_else(|| "span".into());
    let start = nanos(event, "start_unix_nano").unwrap_or(event.timestamp_ns);
    let end = nanos(event, "end_unix_nano").unwrap_or(start).max(start);
    let status = match text(event, "status").as_deref() {
        Some("error") => Status {
            code: StatusCode::Error as i32,
            message: text(event, "status_message").unwrap_or_default(),
        },
        Some("ok") => Status {
            code: StatusCode::Ok as i32,
            message: String::new(),
        },
        _ => Status::default(),
    };
    let kind = span_kind(event);
    let mut attributes = Vec::with_capacity(event.fields.len());
    for field in &event.fields {
        if let Some(key) = field.key.strip_prefix("attr.") {
            attributes.push(kv(key, value(&field.value)));
        }
    }
    for field in &event.fields {
        if SPAN_PLACE_FIELDS.contains(&field.key.as_str()) {
            attributes.push(kv(&format!("lookout.{}", field.key), value(&field.value)));
        } else if !field.key.starts_with("attr.") && !SPAN_OWN_FIELDS.contains(&field.key.as_str())
        {
            // A field the spec does not name (a newer pool's): kept, under lookout's name.
            attributes.push(kv(&format!("lookout.{}", field.key), value(&field.value)));
        }
    }
    if let Some(id) = &event.correlation_id {
        attributes.push(kv("lookout.correlation_id", string(id)));
    }
    Ok(Span {
        trace_id: trace_id.to_vec(),
        span_id: span_id.to_vec(),
        parent_span_id,
        name,
        kind: kind as i32,
        start_time_unix_nano: start,
        end_time_unix_nano: end,
        attributes,
        status: Some(status),
        ..Span::default()
    })
}

/// The span's kind as the host named it (`span_kind`: the pool marks a request's root span
/// `server`); INTERNAL when it does not say (every worker span: a worker cannot set it, its
/// attributes are `attr.*`).
fn span_kind(event: &Event) -> SpanKind {
    match text(event, "span_kind").as_deref() {
        Some("server") => SpanKind::Server,
        Some("client") => SpanKind::Client,
        Some("producer") => SpanKind::Producer,
        Some("consumer") => SpanKind::Consumer,
        _ => SpanKind::Internal,
    }
}

/// Any other event as an OTLP log record: the body is its `message` field, else its kind;
/// attributes `event.kind`, `correlation_id` and every field; the trace (and span) it belongs
/// to when its fields say.
pub fn log_record(event: &Event) -> LogRecord {
    let body = match event.get("message") {
        Some(FieldValue::Str(s)) => s.clone(),
        Some(other) => scalar_text(other),
        None => event.kind.clone(),
    };
    let mut attributes = Vec::with_capacity(event.fields.len() + 2);
    attributes.push(kv("event.kind", string(&event.kind)));
    if let Some(id) = &event.correlation_id {
        attributes.push(kv("correlation_id", string(id)));
    }
    for field in &event.fields {
        attributes.push(kv(&field.key, value(&field.value)));
    }
    LogRecord {
        time_unix_nano: event.timestamp_ns,
        observed_time_unix_nano: event.timestamp_ns,
        severity_number: severity_number(event.severity) as i32,
        severity_text: event.severity.as_str().into(),
        body: Some(string(&body)),
        attributes,
        trace_id: hex_field::<16>(event, "trace_id").map_or_else(Vec::new, |id| id.to_vec()),
        span_id: hex_field::<8>(event, "span_id").map_or_else(Vec::new, |id| id.to_vec()),
        event_name: event.kind.clone(),
        ..LogRecord::default()
    }
}

fn severity_number(severity: Severity) -> SeverityNumber {
    match severity {
        Severity::Trace => SeverityNumber::Trace,
        Severity::Debug => SeverityNumber::Debug,
        Severity::Info => SeverityNumber::Info,
        Severity::Warn => SeverityNumber::Warn,
        Severity::Error => SeverityNumber::Error,
    }
}

fn kv(key: &str, value: AnyValue) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(value),
        ..KeyValue::default()
    }
}

fn string(s: &str) -> AnyValue {
    AnyValue {
        value: Some(any_value::Value::StringValue(s.into())),
    }
}

fn value(v: &FieldValue) -> AnyValue {
    let value = match v {
        FieldValue::Bool(b) => any_value::Value::BoolValue(*b),
        FieldValue::Int(i) => any_value::Value::IntValue(*i),
        FieldValue::Float(f) => any_value::Value::DoubleValue(*f),
        FieldValue::Str(s) => any_value::Value::StringValue(s.clone()),
    };
    AnyValue { value: Some(value) }
}

fn scalar_text(v: &FieldValue) -> String {
    match v {
        FieldValue::Bool(b) => b.to_string(),
        FieldValue::Int(i) => i.to_string(),
        FieldValue::Float(f) => f.to_string(),
        FieldValue::Str(s) => s.clone(),
    }
}

fn text(event: &Event, key: &str) -> Option<String> {
    event.get(key).map(scalar_text)
}

/// A time in unix nanoseconds: an integer field (or its decimal text).
fn nanos(event: &Event, key: &str) -> Option<u64> {
    match event.get(key)? {
        FieldValue::Int(i) => u64::try_from(*i).ok(),
        FieldValue::Str(s) => s.parse().ok(),
        FieldValue::Float(f) if *f >= 0.0 => Some(*f as u64),
        _ => None,
    }
}

/// `N` bytes from a field of exactly `2N` hex digits, not all zero (W3C: all-zero ids are
/// invalid).
fn hex_field<const N: usize>(event: &Event, key: &str) -> Option<[u8; N]> {
    let FieldValue::Str(s) = event.get(key)? else {
        return None;
    };
    let digits = s.as_bytes();
    if digits.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (i, pair) in digits.chunks_exact(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        out[i] = (hi * 16 + lo) as u8;
    }
    (out != [0u8; N]).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

    fn attr<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a any_value::Value> {
        attributes
            .iter()
            .find(|a| a.key == key)
            .and_then(|a| a.value.as_ref())
            .and_then(|v| v.value.as_ref())
    }

    fn str_attr(attributes: &[KeyValue], key: &str) -> Option<String> {
        match attr(attributes, key)? {
            any_value::Value::StringValue(s) => Some(s.clone()),
            _ => None,
        }
    }

    fn worker_span() -> Event {
        Event::new(SPAN_KIND)
            .correlation_id("lk-7")
            .field("trace_id", TRACE)
            .field("span_id", "16c2a5e0d1b2c3f4")
            .field("parent_span_id", "00f067aa0ba902b7")
            .field("name", "load_model")
            .field("start_unix_nano", 1_733_230_000_000_000_000i64)
            .field("end_unix_nano", 1_733_230_000_040_000_000i64)
            .field("status", "ok")
            .field("origin", "worker")
            .field("pool", "demo")
            .field("worker", "demo-1")
            .field("command", "traced")
            .field("attr.rows", 10i64)
            .field("attr.cache", true)
            .field("attr.secret", "[REDACTED:secret]")
    }

    #[test]
    fn a_worker_span_event_becomes_an_internal_span_with_its_ids_parent_and_attributes() {
        let span = span(&worker_span()).unwrap();
        assert_eq!(
            span.trace_id,
            [
                0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e,
                0x47, 0x36
            ]
        );
        assert_eq!(
            span.span_id,
            [0x16, 0xc2, 0xa5, 0xe0, 0xd1, 0xb2, 0xc3, 0xf4]
        );
        assert_eq!(
            span.parent_span_id,
            [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7]
        );
        assert_eq!(span.name, "load_model");
        assert_eq!(span.kind, SpanKind::Internal as i32);
        assert_eq!(span.start_time_unix_nano, 1_733_230_000_000_000_000);
        assert_eq!(span.end_time_unix_nano, 1_733_230_000_040_000_000);
        assert_eq!(span.status.unwrap().code, StatusCode::Ok as i32);
        let a = &span.attributes;
        assert_eq!(attr(a, "rows"), Some(&any_value::Value::IntValue(10)));
        assert_eq!(attr(a, "cache"), Some(&any_value::Value::BoolValue(true)));
        assert_eq!(str_attr(a, "secret").as_deref(), Some("[REDACTED:secret]"));
        assert_eq!(str_attr(a, "lookout.pool").as_deref(), Some("demo"));
        assert_eq!(str_attr(a, "lookout.worker").as_deref(), Some("demo-1"));
        assert_eq!(str_attr(a, "lookout.command").as_deref(), Some("traced"));
        assert_eq!(str_attr(a, "lookout.origin").as_deref(), Some("worker"));
        assert_eq!(
            str_attr(a, "lookout.correlation_id").as_deref(),
            Some("lk-7")
        );
        // The span's own fields are the span, not attributes.
        for own in ["trace_id", "span_id", "name", "lookout.name", "attr.rows"] {
            assert!(attr(a, own).is_none(), "{own}");
        }
    }

    #[test]
    fn the_request_span_is_server_and_errors_carry_their_message() {
        let mut child = worker_span()
            .severity(Severity::Error)
            .field("status_message", "boom");
        child.fields.retain(|f| f.key != "status");
        let child = child.field("status", "error");
        let span = span(&child).unwrap();
        assert_eq!(
            span.kind,
            SpanKind::Internal as i32,
            "unnamed kind: internal"
        );
        let status = span.status.unwrap();
        assert_eq!(
            (status.code, status.message.as_str()),
            (StatusCode::Error as i32, "boom")
        );
        let root = child.clone().field("span_kind", "server");
        assert_eq!(super::span(&root).unwrap().kind, SpanKind::Server as i32);
    }

    #[test]
    fn a_span_whose_ids_are_not_hex_is_refused_naming_the_field() {
        let redacted = Event::new(SPAN_KIND)
            .field("trace_id", "[REDACTED:high_entropy]")
            .field("span_id", "00f067aa0ba902b7");
        assert_eq!(span(&redacted), Err(NotASpan("trace_id")));
        let zero = Event::new(SPAN_KIND)
            .field("trace_id", TRACE)
            .field("span_id", "0000000000000000");
        assert_eq!(span(&zero), Err(NotASpan("span_id")));
        let short_parent = Event::new(SPAN_KIND)
            .field("trace_id", TRACE)
            .field("span_id", "00f067aa0ba902b7")
            .field("parent_span_id", "abc");
        assert_eq!(span(&short_parent), Err(NotASpan("parent_span_id")));
    }

    #[test]
    fn an_event_becomes_a_log_record_with_its_message_fields_and_trace() {
        let mut event = Event::new("log")
            .severity(Severity::Warn)
            .correlation_id("lk-9")
            .field("message", "disk almost full")
            .field("level", "warning")
            .field("free_mb", 12i64)
            .field("ratio", 0.5)
            .field("trace_id", TRACE)
            .field("span_id", "00f067aa0ba902b7");
        event.timestamp_ns = 1_733_230_000_000_000_123;
        let record = log_record(&event);
        assert_eq!(record.time_unix_nano, 1_733_230_000_000_000_123);
        assert_eq!(record.severity_number, SeverityNumber::Warn as i32);
        assert_eq!(record.severity_text, "warn");
        assert_eq!(record.event_name, "log");
        assert_eq!(
            record.body.unwrap().value,
            Some(any_value::Value::StringValue("disk almost full".into()))
        );
        let a = &record.attributes;
        assert_eq!(str_attr(a, "event.kind").as_deref(), Some("log"));
        assert_eq!(str_attr(a, "correlation_id").as_deref(), Some("lk-9"));
        assert_eq!(str_attr(a, "level").as_deref(), Some("warning"));
        assert_eq!(attr(a, "free_mb"), Some(&any_value::Value::IntValue(12)));
        assert_eq!(attr(a, "ratio"), Some(&any_value::Value::DoubleValue(0.5)));
        assert_eq!(record.trace_id.len(), 16);
        assert_eq!(
            record.span_id,
            [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7]
        );
    }

    #[test]
    fn an_event_without_a_message_has_its_kind_as_body_and_no_trace() {
        let record = log_record(
            &Event::new("worker.crashed")
                .severity(Severity::Error)
                .field("pool", "demo")
                .field("trace_id", "not-hex"),
        );
        assert_eq!(
            record.body.unwrap().value,
            Some(any_value::Value::StringValue("worker.crashed".into()))
        );
        assert_eq!(record.severity_number, SeverityNumber::Error as i32);
        assert!(record.trace_id.is_empty() && record.span_id.is_empty());
        assert!(str_attr(&record.attributes, "correlation_id").is_none());
    }

    #[test]
    fn the_resource_names_the_service_host_and_version() {
        let resource = resource("lookout", "box-1");
        let a = &resource.attributes;
        assert_eq!(str_attr(a, "service.name").as_deref(), Some("lookout"));
        assert_eq!(str_attr(a, "host.name").as_deref(), Some("box-1"));
        assert_eq!(
            str_attr(a, "service.version").as_deref(),
            Some(env!("CARGO_PKG_VERSION"))
        );
    }
}
