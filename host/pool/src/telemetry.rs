//! Telemetry from a worker's own code (protocol 2): its events and spans become bus events —
//! sampled, rate limited, sanitized and counted like every event — under a per-worker budget,
//! so a chatty worker cannot flood the host. What is over the budget, unreadable or not
//! allowed is dropped and counted (`lookout_worker_telemetry_dropped_total`), and the running
//! request's share is reported on its `request.completed`.
//!
//! Spans travel as `trace.span` events (fields in docs/worker-protocol.md): the OTLP exporter
//! reads them after the sanitizer, so only sanitized spans leave the host.

use std::time::Instant;

use lookout_core::{Bus, Event, FieldValue, Severity, validate_kind};
use prometheus::IntCounter;

use crate::config::TelemetryLimits;
use crate::metrics::PoolMetrics;
use crate::protocol::{WorkerEvent, WorkerSpan, cut};
use crate::trace::{hex, parse_hex};

/// `lookout_worker_telemetry_total{kind}`.
pub(crate) const KINDS: [&str; 2] = ["event", "span"];
/// `lookout_worker_telemetry_dropped_total{reason}`.
pub(crate) const DROP_REASONS: [&str; 3] = ["rate", "bytes", "invalid"];

/// Kinds a worker may not emit: lookout's own lifecycle and plumbing. A worker saying
/// `worker.crashed` or `request.completed` would forge the host's books.
const RESERVED: [&str; 10] = [
    "request", "worker", "pool", "session", "health", "config", "plugin", "trace", "lookout", "bus",
];

/// Most fields (or span attributes) taken from one message; the rest are dropped.
const MAX_FIELDS: usize = 64;
/// Longest field key.
const MAX_KEY: usize = 128;
/// Longest string value; a longer one is cut (`…`).
const MAX_VALUE: usize = 16 << 10;
/// Longest span name.
const MAX_NAME: usize = 256;

/// The request a worker is serving, as its telemetry is attributed.
pub(crate) struct Serving {
    pub correlation_id: String,
    pub command: String,
    pub trace_id: [u8; 16],
    /// The host's `execute` span: the default parent of the worker's spans.
    pub execute_span: [u8; 8],
}

/// One worker's telemetry: its budget and where it goes.
pub(crate) struct Telemetry {
    bus: Bus,
    pool: String,
    worker: String,
    events: Bucket,
    bytes: Bucket,
    taken: [IntCounter; 2],
    dropped: [IntCounter; 3],
    /// Dropped since the current request began: reported on its `request.completed`.
    pub in_request: u64,
}

impl Telemetry {
    pub(crate) fn new(
        bus: &Bus,
        metrics: &PoolMetrics,
        pool: &str,
        worker: &str,
        limits: TelemetryLimits,
    ) -> Telemetry {
        Telemetry {
            bus: bus.clone(),
            pool: pool.to_string(),
            worker: worker.to_string(),
            events: Bucket::new(f64::from(limits.events_per_s)),
            bytes: Bucket::new(limits.bytes_per_s as f64),
            taken: KINDS.map(|k| metrics.telemetry.with_label_values(&[pool, k])),
            dropped: DROP_REASONS.map(|r| metrics.telemetry_dropped.with_label_values(&[pool, r])),
            in_request: 0,
        }
    }

    /// The pool's budget now (a live config change); what is in the buckets stays.
    pub(crate) fn set_limits(&mut self, limits: TelemetryLimits) {
        self.events.set_rate(f64::from(limits.events_per_s));
        self.bytes.set_rate(limits.bytes_per_s as f64);
    }

    /// An event line of `len` bytes.
    pub(crate) fn event(&mut self, len: usize, event: WorkerEvent, serving: Option<&Serving>) {
        if !self.admit(len) {
            return;
        }
        let Some(e) = self.build_event(event, serving) else {
            return;
        };
        self.taken[0].inc();
        self.bus.publish(e);
    }

    /// A span line of `len` bytes; only while a request runs (a span belongs to a trace).
    pub(crate) fn span(&mut self, len: usize, span: WorkerSpan, serving: Option<&Serving>) {
        if !self.admit(len) {
            return;
        }
        let Some(serving) = serving else {
            self.invalid("a span while no request was running");
            return;
        };
        let Some(e) = self.build_span(span, serving) else {
            return;
        };
        self.taken[1].inc();
        self.bus.publish(e);
    }

    /// A telemetry line that could not be read or is not allowed.
    pub(crate) fn invalid(&mut self, why: &str) {
        self.dropped[2].inc();
        self.in_request += 1;
        tracing::debug!(target: "lookout::pool", pool = %self.pool, worker = %self.worker, why, "worker telemetry dropped");
    }

    /// Within budget (both buckets take their share only when both have room).
    fn admit(&mut self, len: usize) -> bool {
        let now = Instant::now();
        let reason = if !self.events.has(1.0, now) {
            0
        } else if !self.bytes.has(len as f64, now) {
            1
        } else {
            self.events.take(1.0);
            self.bytes.take(len as f64);
            return true;
        };
        self.dropped[reason].inc();
        self.in_request += 1;
        false
    }

    fn build_event(&mut self, event: WorkerEvent, serving: Option<&Serving>) -> Option<Event> {
        if let Err(reason) = allowed_kind(&event.kind) {
            self.invalid(&reason);
            return None;
        }
        let severity = match event.severity.as_deref() {
            None | Some("info") => Severity::Info,
            Some("debug") => Severity::Debug,
            Some("trace") => Severity::Trace,
            Some("warn" | "warning") => Severity::Warn,
            Some("error") => Severity::Error,
            Some(_) => {
                self.invalid("an event with an unknown severity");
                return None;
            }
        };
        let mut e = Event::new(event.kind).severity(severity);
        if let Some(s) = serving {
            e = e.correlation_id(s.correlation_id.as_str());
        }
        e = self.identify(e, serving);
        Some(with_fields(e, "", event.fields))
    }

    fn build_span(&mut self, span: WorkerSpan, serving: &Serving) -> Option<Event> {
        let span_id = parse_hex::<8>(&span.span_id).filter(|id| *id != [0; 8]);
        let parent = match span.parent_span_id.as_deref() {
            None => Some(serving.execute_span),
            Some(p) => parse_hex::<8>(p).filter(|id| *id != [0; 8]),
        };
        let (Some(span_id), Some(parent)) = (span_id, parent) else {
            self.invalid("a span whose span_id or parent_span_id is not 16 lowercase hex digits");
            return None;
        };
        if span.name.is_empty() || span.end_unix_nano < span.start_unix_nano {
            self.invalid("a span with no name, or one that ends before it starts");
            return None;
        }
        let error = match span.status.as_deref() {
            None | Some("ok") => None,
            Some("error") => Some(span.error.unwrap_or_default()),
            Some(_) => {
                self.invalid("a span with a status other than ok or error");
                return None;
            }
        };
        let e = span_event(SpanFields {
            correlation_id: &serving.correlation_id,
            trace_id: &serving.trace_id,
            span_id: &span_id,
            parent: Some(&parent),
            name: &cut(&span.name, MAX_NAME),
            start_unix_nano: span.start_unix_nano,
            end_unix_nano: span.end_unix_nano,
            error: error.as_deref(),
        });
        let e = self.identify(e, Some(serving));
        Some(with_fields(e, "attr.", span.attributes))
    }

    /// The worker's pool, id and request: set by the host, never by the worker (its own
    /// fields of these names are dropped, see [`with_fields`]).
    fn identify(&self, mut e: Event, serving: Option<&Serving>) -> Event {
        e = e
            .field("pool", self.pool.as_str())
            .field("worker", self.worker.as_str())
            .field("origin", "worker");
        if let Some(s) = serving {
            e = e
                .field("command", s.command.as_str())
                .field("trace_id", hex(&s.trace_id));
        }
        e
    }
}

/// A span as a `trace.span` event's fields.
pub(crate) struct SpanFields<'a> {
    pub correlation_id: &'a str,
    pub trace_id: &'a [u8; 16],
    pub span_id: &'a [u8; 8],
    pub parent: Option<&'a [u8; 8]>,
    pub name: &'a str,
    pub start_unix_nano: u64,
    pub end_unix_nano: u64,
    /// `Some` (the message) when the span failed.
    pub error: Option<&'a str>,
}

/// The `trace.span` event of one span (the host's and the worker's alike).
pub(crate) fn span_event(s: SpanFields<'_>) -> Event {
    let mut e = Event::new("trace.span")
        .correlation_id(s.correlation_id)
        .severity(if s.error.is_some() {
            Severity::Error
        } else {
            Severity::Info
        })
        .field("trace_id", hex(s.trace_id))
        .field("span_id", hex(s.span_id));
    if let Some(parent) = s.parent {
        e = e.field("parent_span_id", hex(parent));
    }
    e = e
        .field("name", s.name)
        .field("start_unix_nano", clamp_i64(s.start_unix_nano))
        .field("end_unix_nano", clamp_i64(s.end_unix_nano))
        .field("status", if s.error.is_some() { "error" } else { "ok" });
    if let Some(message) = s.error {
        e = e.field("status_message", cut(message, MAX_VALUE));
    }
    e
}

fn clamp_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Whether a worker may emit `kind`: a valid kind outside lookout's own namespaces.
fn allowed_kind(kind: &str) -> Result<(), String> {
    validate_kind(kind)?;
    // A namespace is a prefix: `trace.span` is lookout's, a bare `trace` is anyone's.
    let first = kind.split('.').next().unwrap_or(kind);
    if kind.len() > first.len() && RESERVED.contains(&first) {
        return Err(format!(
            "kind `{}` is in lookout's own namespace `{first}.`",
            cut(kind, 64)
        ));
    }
    Ok(())
}

/// Fields the host sets on a worker's event; the worker's own of these names are dropped, so
/// it cannot pass its events off as another worker's or another request's.
const HOST_FIELDS: [&str; 5] = ["pool", "worker", "origin", "command", "trace_id"];

/// JSON fields as event fields under `prefix`: scalars stay scalars, other JSON becomes its
/// text, `null` is dropped; at most [`MAX_FIELDS`], keys of at most [`MAX_KEY`] bytes.
fn with_fields(
    mut e: Event,
    prefix: &str,
    fields: serde_json::Map<String, serde_json::Value>,
) -> Event {
    for (key, value) in fields
        .into_iter()
        .filter(|(k, v)| {
            !k.is_empty()
                && k.len() <= MAX_KEY
                && !v.is_null()
                && (!prefix.is_empty() || !HOST_FIELDS.contains(&k.as_str()))
        })
        .take(MAX_FIELDS)
    {
        let value = match crate::pool::field_value(&value) {
            FieldValue::Str(s) if s.len() > MAX_VALUE => FieldValue::Str(cut(&s, MAX_VALUE)),
            other => other,
        };
        e = e.field(format!("{prefix}{key}"), value);
    }
    e
}

/// A token bucket holding a second's worth.
struct Bucket {
    rate: f64,
    tokens: f64,
    at: Option<Instant>,
}

impl Bucket {
    fn new(rate: f64) -> Bucket {
        Bucket {
            rate,
            tokens: rate,
            at: None,
        }
    }

    /// Refills to `now`, then says whether `n` fit.
    fn has(&mut self, n: f64, now: Instant) -> bool {
        if let Some(at) = self.at {
            let refill = now.duration_since(at).as_secs_f64() * self.rate;
            self.tokens = (self.tokens + refill).min(self.rate);
        }
        self.at = Some(now);
        self.tokens >= n
    }

    fn take(&mut self, n: f64) {
        self.tokens -= n;
    }

    fn set_rate(&mut self, rate: f64) {
        self.rate = rate;
        self.tokens = self.tokens.min(rate);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookouts_own_kinds_are_refused_and_others_kept() {
        for kind in ["request.completed", "worker.crashed", "trace.span", "bus.x"] {
            assert!(allowed_kind(kind).is_err(), "{kind}");
        }
        for kind in [
            "model.loaded",
            "log",
            "trace",
            "requests.custom",
            "app.request.done",
        ] {
            assert!(allowed_kind(kind).is_ok(), "{kind}");
        }
        assert!(allowed_kind("Bad Kind").is_err());
    }

    #[test]
    fn a_bucket_holds_a_seconds_worth_and_refills() {
        let mut b = Bucket::new(10.0);
        let t0 = Instant::now();
        for _ in 0..10 {
            assert!(b.has(1.0, t0));
            b.take(1.0);
        }
        assert!(!b.has(1.0, t0));
        assert!(b.has(1.0, t0 + std::time::Duration::from_millis(150)));
    }

    #[test]
    fn fields_are_flattened_capped_and_nulls_dropped() {
        let json = serde_json::json!({"a": 1, "b": "x", "c": null, "d": {"e": [1, 2]}, "f": 1.5, "pool": "x"});
        let serde_json::Value::Object(map) = json else {
            unreachable!()
        };
        let e = with_fields(Event::new("x"), "attr.", map);
        assert_eq!(e.get("attr.a"), Some(&FieldValue::Int(1)));
        assert_eq!(e.get("attr.c"), None);
        assert_eq!(
            e.get("attr.d"),
            Some(&FieldValue::Str(r#"{"e":[1,2]}"#.into()))
        );
        assert_eq!(e.get("attr.f"), Some(&FieldValue::Float(1.5)));
        let serde_json::Value::Object(map) = serde_json::json!({"pool": "other", "n": 1}) else {
            unreachable!()
        };
        let e = with_fields(Event::new("x"), "", map);
        assert_eq!(
            e.get("pool"),
            None,
            "a worker's own `pool` field is dropped"
        );
        assert_eq!(e.get("n"), Some(&FieldValue::Int(1)));
    }
}
