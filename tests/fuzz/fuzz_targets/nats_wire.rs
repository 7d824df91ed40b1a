//! Messages from other hosts over NATS (`lookout_nats::wire::decode`): never a panic; what
//! is taken in is checked like ingest, and goes round through `encode` unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lookout_core::{validate_correlation_id, validate_kind};
use lookout_nats::wire::{decode, encode};

fuzz_target!(|body: &[u8]| {
    let Ok(received) = decode(body) else {
        return;
    };
    let event = &received.event;
    assert!(validate_kind(&event.kind).is_ok(), "kind {:?}", event.kind);
    if let Some(id) = &event.correlation_id {
        assert!(validate_correlation_id(id).is_ok(), "correlation id {id:?}");
    }
    assert!(event.origin.is_none(), "decode never sets an origin");
    let again = decode(&encode(&received.host, event)).expect("what decodes, encodes and decodes");
    assert_eq!(again.host, received.host);
    assert_eq!(again.event.kind, event.kind);
    assert_eq!(again.event.correlation_id, event.correlation_id);
    assert_eq!(again.event.severity, event.severity);
    assert_eq!(again.event.timestamp_ns, event.timestamp_ns);
    assert_eq!(again.event.fields, event.fields, "fields, in order");
});
