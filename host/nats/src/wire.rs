//! The message format on NATS, version 1: one event a message, JSON,
//!
//! ```json
//! {"v":1,"host":"web-1","event":{"id":7,"kind":"request.completed","timestamp_ns":…,
//!  "correlation_id":"req-1","severity":"info","fields":{"pool":"demo","duration_ms":1.5}}}
//! ```
//!
//! on subject `<prefix>.<host>.<kind>`. `event` is the same JSON every lookout API shows
//! (fields in order). A reader takes `v` it knows (1) and refuses others by name; unknown keys
//! beside `v`, `host` and `event` are ignored, so later versions can add some.

use std::fmt;

use lookout_core::{Event, Field, FieldValue, Severity, validate_correlation_id, validate_kind};
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

/// The format version this host writes and reads.
pub const VERSION: u32 = 1;

/// Largest message accepted, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 1 << 20;

#[derive(Serialize)]
struct Outgoing<'a> {
    v: u32,
    host: &'a str,
    event: &'a Event,
}

/// `event` of `host` as a message body.
pub fn encode(host: &str, event: &Event) -> Vec<u8> {
    serde_json::to_vec(&Outgoing {
        v: VERSION,
        host,
        event,
    })
    .expect("an event always serializes")
}

/// A received event and the host it came from.
#[derive(Debug)]
pub struct Received {
    pub host: String,
    pub event: Event,
}

#[derive(Deserialize)]
struct Incoming {
    v: u32,
    host: String,
    event: IncomingEvent,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IncomingEvent {
    #[serde(default)]
    #[allow(dead_code)]
    id: u64,
    kind: String,
    #[serde(default)]
    timestamp_ns: u64,
    #[serde(default)]
    correlation_id: Option<String>,
    #[serde(default)]
    severity: Severity,
    #[serde(default)]
    fields: Fields,
    /// Where the sending host got it; a host forwards only its own events, so this is
    /// always absent on the wire, and refused if present.
    #[serde(default)]
    origin: Option<String>,
}

/// Fields in the order they were written.
#[derive(Default)]
struct Fields(Vec<Field>);

impl<'de> Deserialize<'de> for Fields {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct InOrder;
        impl<'de> Visitor<'de> for InOrder {
            type Value = Fields;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of string, number or boolean fields")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields, A::Error> {
                let mut fields = Vec::new();
                while let Some((key, value)) = map.next_entry::<String, FieldValue>()? {
                    fields.push(Field { key, value });
                }
                Ok(Fields(fields))
            }
        }
        deserializer.deserialize_map(InOrder)
    }
}

/// Why a message was refused.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("message of {0} bytes is over the limit")]
    TooLarge(usize),
    #[error("not a lookout event message: {0}")]
    Malformed(String),
    #[error("format version {0}; this host reads version {VERSION}")]
    Version(u32),
    #[error("{0}")]
    Invalid(String),
}

/// A message body as an event, checked as ingest checks a posted one.
pub fn decode(body: &[u8]) -> Result<Received, DecodeError> {
    if body.len() > MAX_MESSAGE_BYTES {
        return Err(DecodeError::TooLarge(body.len()));
    }
    let incoming: Incoming = match serde_json::from_slice(body) {
        Ok(incoming) => incoming,
        Err(e) => {
            // A newer format is named as such rather than as malformed.
            #[derive(Deserialize)]
            struct Probe {
                v: u32,
            }
            return Err(match serde_json::from_slice::<Probe>(body) {
                Ok(probe) if probe.v != VERSION => DecodeError::Version(probe.v),
                _ => DecodeError::Malformed(e.to_string()),
            });
        }
    };
    if incoming.v != VERSION {
        return Err(DecodeError::Version(incoming.v));
    }
    let e = incoming.event;
    validate_kind(&e.kind).map_err(DecodeError::Invalid)?;
    if let Some(c) = &e.correlation_id {
        validate_correlation_id(c)
            .map_err(|r| DecodeError::Invalid(format!("correlation_id: {r}")))?;
    }
    if e.origin.is_some() {
        return Err(DecodeError::Invalid(
            "a forwarded event (it has an origin): hosts send only their own".into(),
        ));
    }
    if !crate::config::valid_host(&incoming.host) {
        return Err(DecodeError::Invalid(format!("host `{}`", incoming.host)));
    }
    let mut event = Event::new(e.kind);
    event.timestamp_ns = e.timestamp_ns;
    event.correlation_id = e.correlation_id;
    event.severity = e.severity;
    event.fields = e.fields.0;
    Ok(Received {
        host: incoming.host,
        event,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the `nats_wire` fuzz target: without exact float parsing (serde_json's
    /// `float_roundtrip`), a number read from another host and written again drifted by one
    /// unit in the last place.
    #[test]
    fn numbers_go_round_exactly() {
        let body = br#"{"v":1,"host":"web-1","event":{"id":7,"kind":"req.co","severity":"warn","fields":{"big":17000000002000000005,"f":0.30000000000000004,"e":1.7000000002000001e19}}}"#;
        let first = decode(body).unwrap();
        let again = decode(&encode(&first.host, &first.event)).unwrap();
        assert_eq!(again.event.fields, first.event.fields);
        assert_eq!(
            first.event.get("e"),
            Some(&FieldValue::Float(1.7000000002000001e19))
        );
    }

    #[test]
    fn an_event_goes_round_with_its_fields_in_order() {
        let mut event = Event::new("request.completed")
            .correlation_id("req-1")
            .severity(Severity::Warn)
            .field("z", "last-first")
            .field("n", 3i64)
            .field("ms", 1.5)
            .field("ok", true);
        event.id = 9;
        event.timestamp_ns = 123;
        let got = decode(&encode("web-1", &event)).unwrap();
        assert_eq!(got.host, "web-1");
        assert_eq!(got.event.kind, event.kind);
        assert_eq!(got.event.fields, event.fields);
        assert_eq!(got.event.severity, Severity::Warn);
        assert_eq!(got.event.timestamp_ns, 123);
        assert_eq!(got.event.correlation_id.as_deref(), Some("req-1"));
        assert_eq!(got.event.origin, None, "the receiver sets the origin");
    }

    #[test]
    fn bad_messages_are_refused_with_the_reason() {
        for (body, says) in [
            (&b"nope"[..], "not a lookout event message"),
            (br#"{"v":2,"host":"a","event":{}}"#, "version 2"),
            (br#"{"v":1,"host":"a","event":{"kind":"Bad Kind"}}"#, "kind"),
            (br#"{"v":1,"host":"a.b","event":{"kind":"x"}}"#, "host"),
            (
                br#"{"v":1,"host":"a","event":{"kind":"x","fields":{"a":[1]}}}"#,
                "not a lookout event",
            ),
            (
                br#"{"v":1,"host":"a","event":{"kind":"x","origin":"b"}}"#,
                "forwarded",
            ),
        ] {
            let err = decode(body).unwrap_err().to_string();
            assert!(err.contains(says), "{err}");
        }
    }
}
