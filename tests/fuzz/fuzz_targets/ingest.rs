//! `POST /api/v1/events` bodies (JSON array or NDJSON): never a panic; what is accepted
//! keeps the limits the docs promise.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lookout_core::validate_kind;
use lookout_server::{MAX_EVENTS_PER_REQUEST, MAX_FIELDS, MAX_KEY_LEN, parse_body};

fuzz_target!(|body: &[u8]| {
    let Ok(events) = parse_body(body) else {
        return;
    };
    assert!(events.len() <= MAX_EVENTS_PER_REQUEST);
    for event in &events {
        assert!(validate_kind(&event.kind).is_ok(), "kind {:?}", event.kind);
        assert!(event.fields.len() <= MAX_FIELDS);
        assert!(event.fields.iter().all(|f| f.key.len() <= MAX_KEY_LEN));
        assert!(event.origin.is_none(), "ingest never sets an origin");
    }
});
