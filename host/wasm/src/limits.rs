//! The limits one plugin's manifest sets for it: its sandbox (`[limits]`: memory, the
//! deadline of a call, the series of each custom metric) and when repeated failures
//! quarantine it (`[quarantine]`). Plain numbers, their defaults and their checks; the
//! runtime and the breaker enforce them, the host's budget caps them.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Default memory cap per plugin instance.
pub const DEFAULT_MAX_MEMORY_MIB: u32 = 64;
/// Default cardinality budget per custom metric.
pub const DEFAULT_MAX_SERIES_PER_METRIC: u32 = 1000;
/// Default time one call into a plugin may take.
pub const DEFAULT_CALL_TIMEOUT_MS: u64 = 100;

/// Resource limits of one plugin.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Linear memory the plugin may grow to, in MiB.
    pub max_memory_mib: u32,
    /// Time one call (`init`, `sanitize`, …) may take before it is interrupted.
    pub call_timeout_ms: u64,
    /// Cardinality budget: most label-value combinations per custom metric.
    pub max_series_per_metric: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_memory_mib: DEFAULT_MAX_MEMORY_MIB,
            call_timeout_ms: DEFAULT_CALL_TIMEOUT_MS,
            max_series_per_metric: DEFAULT_MAX_SERIES_PER_METRIC,
        }
    }
}

impl Limits {
    pub(crate) fn validate(&self, plugin: &str) -> Result<()> {
        let bad = |reason: &str| {
            Err(Error::Manifest {
                plugin: plugin.to_string(),
                reason: reason.to_string(),
            })
        };
        if self.max_memory_mib == 0 || self.max_memory_mib > 4096 {
            return bad("limits.max_memory_mib must be between 1 and 4096");
        }
        if self.call_timeout_ms == 0 || self.call_timeout_ms > 60_000 {
            return bad("limits.call_timeout_ms must be between 1 and 60000");
        }
        if self.max_series_per_metric == 0 || self.max_series_per_metric > 100_000 {
            return bad("limits.max_series_per_metric must be between 1 and 100000");
        }
        Ok(())
    }

    /// How long one call may take.
    pub(crate) fn timeout(&self) -> Duration {
        Duration::from_millis(self.call_timeout_ms)
    }

    /// When a call starting now must be over.
    pub(crate) fn deadline(&self) -> Instant {
        Instant::now() + self.timeout()
    }

    /// The limits of loading (a push, a start, a restore): `instantiate` and `init` each get
    /// at least [`MIN_LOAD_TIMEOUT_MS`]. They run off the event path, once, and a plugin that
    /// parses a rule set in `init` must not be refused because the machine was busy; a hung
    /// `init` is still cut. A call's replacement instance after a trap keeps the call's own
    /// deadline.
    pub(crate) fn at_load(&self) -> Limits {
        Limits {
            call_timeout_ms: self.call_timeout_ms.max(MIN_LOAD_TIMEOUT_MS),
            ..*self
        }
    }
}

/// The least time `instantiate` and `init` each get when a plugin is loaded.
pub const MIN_LOAD_TIMEOUT_MS: u64 = 1_000;

/// When a plugin is quarantined, and for how long.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QuarantinePolicy {
    /// Failures (traps, timeouts, out of memory, error results) that quarantine the plugin…
    pub after_failures: u32,
    /// …when they happen within this window.
    pub window_ms: u64,
    /// First quarantine; doubled after each failed retry.
    pub backoff_ms: u64,
    pub max_backoff_ms: u64,
}

impl Default for QuarantinePolicy {
    fn default() -> Self {
        QuarantinePolicy {
            after_failures: 5,
            window_ms: 60_000,
            backoff_ms: 1_000,
            max_backoff_ms: 300_000,
        }
    }
}

impl QuarantinePolicy {
    pub(crate) fn validate(&self, plugin: &str) -> Result<()> {
        let bad = |reason: &str| {
            Err(Error::Manifest {
                plugin: plugin.into(),
                reason: reason.into(),
            })
        };
        if self.after_failures == 0 {
            return bad("quarantine.after_failures must be at least 1");
        }
        if self.window_ms == 0 || self.backoff_ms == 0 {
            return bad("quarantine.window_ms and quarantine.backoff_ms must be at least 1");
        }
        if self.max_backoff_ms < self.backoff_ms {
            return bad("quarantine.max_backoff_ms must be at least quarantine.backoff_ms");
        }
        Ok(())
    }
}
