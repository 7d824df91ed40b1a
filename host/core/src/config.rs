//! The bus's configuration: what an operator writes under `[bus]`. Checked as a whole by
//! [`BusConfig::validate`] before it is used; an invalid config never runs.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::Invalid;
use crate::error::{Error, Result};

/// Default capacity of the ingress queue, in events.
pub const DEFAULT_INGRESS_CAPACITY: usize = 65_536;
/// Default number of events the pipeline takes per batch.
pub const DEFAULT_BATCH_SIZE: usize = 256;
/// Default capacity of each consumer's queue, in batches.
pub const DEFAULT_CONSUMER_CAPACITY: usize = 64;

/// The bus's settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BusConfig {
    /// Events at all: when false, `publish` does nothing (and counts nothing) — the
    /// observability-off switch. Metrics, health and logs do not depend on it.
    pub enabled: bool,
    /// Events waiting for the pipeline; when full, `publish` drops and counts.
    pub ingress_capacity: usize,
    /// Most events the pipeline handles at once (sampling, limits, sanitizer, fan-out).
    pub batch_size: usize,
    /// Batches waiting for each consumer; when full, that consumer's batch is dropped and counted.
    pub consumer_capacity: usize,
    pub sampling: SamplingConfig,
    /// Token-bucket limits per kind pattern (`request.completed`, `request.*`).
    pub rate_limits: BTreeMap<String, RateLimit>,
}

impl Default for BusConfig {
    fn default() -> Self {
        BusConfig {
            enabled: true,
            ingress_capacity: DEFAULT_INGRESS_CAPACITY,
            batch_size: DEFAULT_BATCH_SIZE,
            consumer_capacity: DEFAULT_CONSUMER_CAPACITY,
            sampling: SamplingConfig::default(),
            rate_limits: BTreeMap::new(),
        }
    }
}

/// Which share of events to keep, per kind.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SamplingConfig {
    /// Rate for kinds no pattern matches: 1.0 keeps all, 0.0 none.
    pub default_rate: f64,
    /// Rates per kind pattern (`request.completed`, `request.*`); the longest match wins.
    pub rates: BTreeMap<String, f64>,
    /// Keep every `error` event whatever its rate.
    pub keep_errors: bool,
}

impl Default for SamplingConfig {
    fn default() -> Self {
        SamplingConfig {
            default_rate: 1.0,
            rates: BTreeMap::new(),
            keep_errors: true,
        }
    }
}

/// A token bucket: a steady rate and a burst.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub per_second: u32,
    /// Events allowed at once; defaults to `per_second`.
    #[serde(default)]
    pub burst: Option<u32>,
}

fn check_pattern(field: &str, pattern: &str) -> Result<()> {
    let kind = pattern.strip_suffix(".*").unwrap_or(pattern);
    if pattern == "*" {
        return Ok(());
    }
    crate::event::validate_kind(kind).map_err(|reason| Error::Config(Invalid::new(field, reason)))
}

impl BusConfig {
    /// Checks every setting; the error names the first wrong field and why.
    pub fn validate(&self) -> Result<()> {
        match self.problems().into_iter().next() {
            Some(invalid) => Err(Error::Config(invalid)),
            None => Ok(()),
        }
    }

    /// Every wrong setting, as the field and why.
    pub fn problems(&self) -> Vec<Invalid> {
        let mut problems = Vec::new();
        let mut bad = |field: &str, reason: String| problems.push(Invalid::new(field, reason));
        if self.ingress_capacity == 0 || self.ingress_capacity > 16 << 20 {
            bad(
                "bus.ingress_capacity",
                "must be between 1 and 16777216".into(),
            );
        }
        if self.batch_size == 0 || self.batch_size > 65_536 {
            bad("bus.batch_size", "must be between 1 and 65536".into());
        }
        if self.consumer_capacity == 0 || self.consumer_capacity > 1 << 20 {
            bad(
                "bus.consumer_capacity",
                "must be between 1 and 1048576".into(),
            );
        }
        let rate_ok = |r: f64| (0.0..=1.0).contains(&r);
        if !rate_ok(self.sampling.default_rate) {
            bad(
                "bus.sampling.default_rate",
                format!("{} is not between 0.0 and 1.0", self.sampling.default_rate),
            );
        }
        let pattern_problem = |field: &str, pattern: &str| match check_pattern(field, pattern) {
            Err(Error::Config(invalid)) => Some(invalid.reason),
            _ => None,
        };
        for (pattern, rate) in &self.sampling.rates {
            let field = format!("bus.sampling.rates.\"{pattern}\"");
            if let Some(reason) = pattern_problem(&field, pattern) {
                bad(&field, reason);
            }
            if !rate_ok(*rate) {
                bad(&field, format!("{rate} is not between 0.0 and 1.0"));
            }
        }
        for (pattern, limit) in &self.rate_limits {
            let field = format!("bus.rate_limits.\"{pattern}\"");
            if let Some(reason) = pattern_problem(&field, pattern) {
                bad(&field, reason);
            }
            if limit.per_second == 0 {
                bad(
                    &field,
                    "per_second must be at least 1 (use sampling rate 0.0 to drop a kind)".into(),
                );
            }
            if limit.burst == Some(0) {
                bad(&field, "burst must be at least 1".into());
            }
        }
        problems
    }
}

/// The value for `kind` among patterns: an exact key wins, then the longest `prefix.*`, then `*`.
pub(crate) fn lookup<'a, T>(map: &'a BTreeMap<String, T>, kind: &str) -> Option<&'a T> {
    if let Some(v) = map.get(kind) {
        return Some(v);
    }
    let mut prefix = kind;
    while let Some(dot) = prefix.rfind('.') {
        prefix = &prefix[..dot];
        if let Some(v) = map.get(&format!("{prefix}.*")) {
            return Some(v);
        }
    }
    map.get("*")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_invalid_setting_is_named_at_once() {
        let mut c = BusConfig {
            batch_size: 0,
            consumer_capacity: 0,
            ..BusConfig::default()
        };
        c.sampling.default_rate = 2.0;
        c.sampling.rates.insert("Bad Kind".into(), 0.5);
        let fields: Vec<String> = c.problems().into_iter().map(|i| i.field).collect();
        assert_eq!(
            fields,
            [
                "bus.batch_size",
                "bus.consumer_capacity",
                "bus.sampling.default_rate",
                "bus.sampling.rates.\"Bad Kind\""
            ]
        );
    }

    #[test]
    fn invalid_settings_are_named() {
        let mut c = BusConfig::default();
        c.sampling.rates.insert("request.*".into(), 1.5);
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("bus.sampling.rates.\"request.*\""), "{err}");
        assert!(err.contains("1.5"), "{err}");
        let mut c = BusConfig::default();
        c.rate_limits.insert(
            "Bad Kind".into(),
            RateLimit {
                per_second: 1,
                burst: None,
            },
        );
        assert!(c.validate().unwrap_err().to_string().contains("Bad Kind"));
    }

    #[test]
    fn longest_pattern_wins() {
        let mut m = BTreeMap::new();
        m.insert("*".to_string(), 0);
        m.insert("request.*".to_string(), 1);
        m.insert("request.http.*".to_string(), 2);
        m.insert("request.completed".to_string(), 3);
        assert_eq!(lookup(&m, "request.completed"), Some(&3));
        assert_eq!(lookup(&m, "request.http.get"), Some(&2));
        assert_eq!(lookup(&m, "request.started"), Some(&1));
        assert_eq!(lookup(&m, "worker.crashed"), Some(&0));
    }
}
