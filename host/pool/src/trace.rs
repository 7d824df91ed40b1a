//! W3C Trace Context for one request: the trace it belongs to (the caller's, from a
//! `traceparent` header, or a new one), the caller's span as its parent, and the host's own
//! spans' ids. Ids are random, not secret: a trace id only has to be unique.

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

/// A request's place in a trace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Trace {
    pub trace_id: [u8; 16],
    /// The caller's span, when the request came with a `traceparent`.
    pub parent_span_id: Option<[u8; 8]>,
    /// The host's span for the whole request (`request <command>`).
    pub span_id: [u8; 8],
    /// The caller's sampled flag (`01`), kept on the way back; a new trace is sampled.
    pub sampled: bool,
}

impl Trace {
    /// Joins the caller's trace when `traceparent` is a valid W3C header, else starts one. An
    /// invalid header is ignored, as the W3C spec asks (the request is not refused for it).
    pub fn start(traceparent: Option<&str>) -> Trace {
        match traceparent.and_then(parse_traceparent) {
            Some((trace_id, parent, sampled)) => Trace {
                trace_id,
                parent_span_id: Some(parent),
                span_id: new_span_id(),
                sampled,
            },
            None => Trace::new_root(),
        }
    }

    /// A new trace with no caller.
    pub fn new_root() -> Trace {
        let mut trace_id = [0; 16];
        trace_id[..8].copy_from_slice(&random_nonzero().to_be_bytes());
        trace_id[8..].copy_from_slice(&random_nonzero().to_be_bytes());
        Trace {
            trace_id,
            parent_span_id: None,
            span_id: new_span_id(),
            sampled: true,
        }
    }

    /// The `traceparent` that names the host's request span: what a response carries, so
    /// the caller can link its span to ours.
    pub fn traceparent(&self) -> String {
        traceparent(&self.trace_id, &self.span_id, self.sampled)
    }

    pub fn trace_id_hex(&self) -> String {
        hex(&self.trace_id)
    }
}

/// `00-<trace>-<span>-<flags>`.
pub fn traceparent(trace_id: &[u8; 16], span_id: &[u8; 8], sampled: bool) -> String {
    format!(
        "00-{}-{}-{}",
        hex(trace_id),
        hex(span_id),
        if sampled { "01" } else { "00" }
    )
}

/// A new random span id (never all zeros, which W3C reserves as invalid).
pub fn new_span_id() -> [u8; 8] {
    random_nonzero().to_be_bytes()
}

/// Lowercase hex, as W3C and OTLP's JSON form write ids.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

/// `N` bytes from exactly `2N` lowercase hex digits; `None` otherwise.
pub fn parse_hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    let bytes = s.as_bytes();
    if bytes.len() != 2 * N {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0; N];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        out[i] = (digit(pair[0])? << 4) | digit(pair[1])?;
    }
    Some(out)
}

/// A W3C `traceparent`: version `00` (a later version is read by its first four fields, as
/// the spec says), a non-zero trace id and parent id, and the flags.
fn parse_traceparent(header: &str) -> Option<([u8; 16], [u8; 8], bool)> {
    let header = header.trim();
    let mut parts = header.split('-');
    let version = parts.next()?;
    let trace = parts.next()?;
    let parent = parts.next()?;
    let flags = parts.next()?;
    let version: [u8; 1] = parse_hex(version)?;
    // `ff` is forbidden; version 00 has exactly four fields.
    if version[0] == 0xff || (version[0] == 0 && parts.next().is_some()) {
        return None;
    }
    let trace_id: [u8; 16] = parse_hex(trace)?;
    let parent: [u8; 8] = parse_hex(parent)?;
    let flags: [u8; 1] = parse_hex(flags)?;
    if trace_id == [0; 16] || parent == [0; 8] {
        return None;
    }
    Some((trace_id, parent, flags[0] & 1 == 1))
}

fn random_nonzero() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    loop {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u64(NEXT.fetch_add(1, Ordering::Relaxed));
        hasher.write_u64(lookout_core::now_ns());
        let v = hasher.finish();
        if v != 0 {
            return v;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_valid_traceparent_is_joined_and_an_invalid_one_starts_a_trace() {
        let t = Trace::start(Some(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ));
        assert_eq!(t.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(
            t.parent_span_id.map(|p| hex(&p)).as_deref(),
            Some("00f067aa0ba902b7")
        );
        assert_ne!(t.span_id, [0; 8]);
        assert!(
            t.traceparent()
                .starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-")
        );
        assert!(t.traceparent().ends_with("-01"));
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            let t = Trace::start(Some(bad));
            assert_eq!(t.parent_span_id, None, "{bad:?} was accepted");
            assert_ne!(t.trace_id, [0; 16]);
        }
        // A later version is read by its first four fields.
        let later = Trace::start(Some(
            "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-what-comes",
        ));
        assert!(later.parent_span_id.is_some() && !later.sampled);
    }

    #[test]
    fn new_traces_differ() {
        let a = Trace::new_root();
        let b = Trace::new_root();
        assert_ne!(a.trace_id, b.trace_id);
        assert_ne!(a.span_id, b.span_id);
    }
}
