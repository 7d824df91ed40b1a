//! The sampling decision, as one function of the settings, the kind, the severity and the
//! correlation id — so a worker library can make the host's decision before it even
//! serialises an event (worker protocol 2 pushes the settings down), and a test can check
//! that it does. The bus's pipeline makes the same decision (`bus.rs`).

use crate::Severity;
use crate::config::{SamplingConfig, lookup};

impl SamplingConfig {
    /// The rate for `kind`: its own, else the longest `prefix.*`, else `*`, else the default.
    pub fn rate(&self, kind: &str) -> f64 {
        lookup(&self.rates, kind)
            .copied()
            .unwrap_or(self.default_rate)
    }

    /// Whether an event of `kind` and `severity` in the request `correlation_id` is kept.
    pub fn keeps(&self, kind: &str, severity: Severity, correlation_id: &str) -> bool {
        let threshold = threshold(self.rate(kind));
        threshold == u64::MAX
            || (self.keep_errors && severity >= Severity::Error)
            || key_hash(correlation_id.as_bytes()) < threshold
    }
}

/// An event is kept when its key's hash is below this: `u64::MAX` keeps all.
pub(crate) fn threshold(rate: f64) -> u64 {
    if rate >= 1.0 {
        u64::MAX
    } else {
        (rate * u64::MAX as f64) as u64
    }
}

/// The sampling key's hash: splitmix64's finalizer over FNV-1a, which spreads nearby ids
/// (`lk-…01`, `lk-…02`) over the whole range. Written down in docs/worker-protocol.md.
pub(crate) fn key_hash(bytes: &[u8]) -> u64 {
    mix(fnv1a(bytes))
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// splitmix64's finalizer.
pub(crate) fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_published_vectors_hold() {
        // FNV-1a 64's own test vectors, and the values docs/worker-protocol.md gives.
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(key_hash(b"lk-0000000000000001"), KEY_HASH_LK1);
    }

    /// `key_hash(b"lk-0000000000000001")`, as the worker protocol's docs print it.
    const KEY_HASH_LK1: u64 = 0x4a6a_f106_de56_8cc0;

    #[test]
    fn rates_fall_back_from_the_kind_to_the_default() {
        let mut s = SamplingConfig {
            default_rate: 0.25,
            ..SamplingConfig::default()
        };
        s.rates.insert("a.b.c".into(), 1.0);
        s.rates.insert("a.b.*".into(), 0.5);
        s.rates.insert("*".into(), 0.75);
        assert_eq!(s.rate("a.b.c"), 1.0);
        assert_eq!(s.rate("a.b.d"), 0.5);
        assert_eq!(s.rate("x"), 0.75);
        s.rates.remove("*");
        assert_eq!(s.rate("x"), 0.25);
        s.default_rate = 0.0;
        s.keep_errors = true;
        assert!(!s.keeps("x", Severity::Warn, "lk-1"));
        assert!(s.keeps("x", Severity::Error, "lk-1"));
    }
}
