//! The event: one record on the bus. Owns the shape and the JSON form; knows nothing of how
//! events travel.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::ser::{SerializeMap, SerializeStruct};
use serde::{Deserialize, Serialize, Serializer};

/// How serious an event is; ordered from `Trace` to `Error`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Trace,
    Debug,
    #[default]
    Info,
    Warn,
    Error,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Trace => "trace",
            Severity::Debug => "debug",
            Severity::Info => "info",
            Severity::Warn => "warn",
            Severity::Error => "error",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A typed field value.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum FieldValue {
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
}

impl From<&str> for FieldValue {
    fn from(v: &str) -> Self {
        FieldValue::Str(v.to_string())
    }
}
impl From<String> for FieldValue {
    fn from(v: String) -> Self {
        FieldValue::Str(v)
    }
}
impl From<i64> for FieldValue {
    fn from(v: i64) -> Self {
        FieldValue::Int(v)
    }
}
impl From<u32> for FieldValue {
    fn from(v: u32) -> Self {
        FieldValue::Int(i64::from(v))
    }
}
impl From<f64> for FieldValue {
    fn from(v: f64) -> Self {
        FieldValue::Float(v)
    }
}
impl From<bool> for FieldValue {
    fn from(v: bool) -> Self {
        FieldValue::Bool(v)
    }
}

/// One named field. Fields keep the order they were added in.
#[derive(Clone, Debug, PartialEq)]
pub struct Field {
    pub key: String,
    pub value: FieldValue,
}

/// One record on the bus.
///
/// Build one with [`Event::new`] and the builder methods; [`crate::Bus::publish`] stamps the
/// `id` (unique and monotonic per host) and, if unset, the `timestamp_ns`.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub id: u64,
    pub kind: String,
    /// Unix time in nanoseconds.
    pub timestamp_ns: u64,
    pub correlation_id: Option<String>,
    pub severity: Severity,
    pub fields: Vec<Field>,
    /// The host it came from when it arrived from another lookout (over NATS); `None` for
    /// this host's own events. Only a host's own events are ever forwarded.
    pub origin: Option<String>,
}

impl Event {
    pub fn new(kind: impl Into<String>) -> Self {
        Event {
            id: 0,
            kind: kind.into(),
            timestamp_ns: 0,
            correlation_id: None,
            severity: Severity::Info,
            fields: Vec::new(),
            origin: None,
        }
    }

    #[must_use]
    pub fn severity(mut self, severity: Severity) -> Self {
        self.severity = severity;
        self
    }

    #[must_use]
    pub fn correlation_id(mut self, id: impl Into<String>) -> Self {
        self.correlation_id = Some(id.into());
        self
    }

    #[must_use]
    pub fn field(mut self, key: impl Into<String>, value: impl Into<FieldValue>) -> Self {
        self.fields.push(Field {
            key: key.into(),
            value: value.into(),
        });
        self
    }

    /// The value of the first field named `key`.
    pub fn get(&self, key: &str) -> Option<&FieldValue> {
        self.fields.iter().find(|f| f.key == key).map(|f| &f.value)
    }
}

/// Now, as unix nanoseconds.
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

struct FieldsAsMap<'a>(&'a [Field]);

impl Serialize for FieldsAsMap<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for field in self.0 {
            map.serialize_entry(&field.key, &field.value)?;
        }
        map.end()
    }
}

/// The JSON form every API and consumer sees:
/// `{"id","kind","timestamp_ns","correlation_id","severity","fields":{...}}`, and `"origin"`
/// after them for an event from another host.
impl Serialize for Event {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut s = serializer.serialize_struct("Event", 6 + usize::from(self.origin.is_some()))?;
        s.serialize_field("id", &self.id)?;
        s.serialize_field("kind", &self.kind)?;
        s.serialize_field("timestamp_ns", &self.timestamp_ns)?;
        s.serialize_field("correlation_id", &self.correlation_id)?;
        s.serialize_field("severity", &self.severity)?;
        s.serialize_field("fields", &FieldsAsMap(&self.fields))?;
        if let Some(origin) = &self.origin {
            s.serialize_field("origin", origin)?;
        }
        s.end()
    }
}

/// A fresh identifier: `prefix` and 16 hex digits, unique within the process and not
/// guessable across processes (std's per-process random hash keys, a counter and the time).
pub fn new_id(prefix: &str) -> String {
    use std::hash::{BuildHasher, Hasher};
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    hasher.write_u64(now_ns());
    format!("{prefix}{:016x}", hasher.finish())
}

/// Longest correlation id, in bytes.
pub const MAX_CORRELATION_ID_LEN: usize = 128;

/// Checks that a correlation id is 1–128 letters, digits, `-`, `_`, `.` or `:` — safe in a
/// header, a log line and a URL without escaping.
pub fn validate_correlation_id(id: &str) -> Result<(), String> {
    if id.is_empty()
        || id.len() > MAX_CORRELATION_ID_LEN
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
    {
        return Err(format!(
            "must be 1–{MAX_CORRELATION_ID_LEN} characters of letters, digits, `-`, `_`, `.`, `:`"
        ));
    }
    Ok(())
}

/// Limits on what a caller may publish, so one bad producer cannot blow up label
/// cardinality or memory.
pub const MAX_KIND_LEN: usize = 128;

/// Checks that `kind` is a dotted name: lowercase ASCII letters, digits, `_` and `-`
/// in segments separated by single dots, at most [`MAX_KIND_LEN`] bytes.
pub fn validate_kind(kind: &str) -> Result<(), String> {
    if kind.is_empty() {
        return Err("kind is empty".to_string());
    }
    if kind.len() > MAX_KIND_LEN {
        return Err(format!("kind is longer than {MAX_KIND_LEN} bytes"));
    }
    for segment in kind.split('.') {
        if segment.is_empty() {
            return Err(format!(
                "kind `{kind}` has an empty segment (dotted name expected, e.g. `worker.crashed`)"
            ));
        }
        if !segment
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        {
            return Err(format!(
                "kind `{kind}` may hold only lowercase letters, digits, `_`, `-` and dots"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_json_has_fields_as_an_object_in_order() {
        let mut e = Event::new("worker.crashed")
            .correlation_id("c1")
            .field("b", 2i64)
            .field("a", "x")
            .field("ok", false);
        e.id = 7;
        e.timestamp_ns = 9;
        let json = serde_json::to_string(&e).unwrap();
        assert_eq!(
            json,
            r#"{"id":7,"kind":"worker.crashed","timestamp_ns":9,"correlation_id":"c1","severity":"info","fields":{"b":2,"a":"x","ok":false}}"#
        );
    }

    #[test]
    fn kinds_must_be_dotted_names() {
        assert!(validate_kind("request.completed").is_ok());
        assert!(validate_kind("a").is_ok());
        for bad in ["", "Request.x", "a..b", ".a", "a b", &"x".repeat(200)] {
            assert!(validate_kind(bad).is_err(), "{bad}");
        }
    }
}
