//! The host-wide plugin budget: what all plugins together may take from the host (memory,
//! compiling, the length of what they say, the size of their metrics' labels), and the most
//! a manifest may ask for in the
//! fields that act on the whole host (a sanitizer's deadline stalls every publisher; a
//! quarantine policy decides how long the host is not ready). Set by the operator in
//! `[plugins.budget]`; every push is checked against it, and a refusal says which budget and
//! by how much.
//!
//! This module only holds the numbers and the checks; it never runs a plugin.

use lookout_core::Invalid;
use serde::{Deserialize, Serialize};

use crate::custom_metrics::LabelCaps;
use crate::error::{Error, Result};
use crate::limits::{Limits, QuarantinePolicy};
use crate::manifest::{Manifest, World};

/// What all plugins of one host may take together, and the most one manifest may ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Budget {
    /// Memory all plugins may hold together, in MiB: the `limits.max_memory_mib` of every
    /// version held — each running plugin (the sanitizer, each consumer and metrics plugin),
    /// the previous version each keeps warm for an instant rollback, and the one being
    /// pushed — must fit. A rollback copy's share is freed when it is dropped (the plugin's
    /// next swap or its removal).
    pub total_memory_mib: u32,
    /// Largest component accepted, in MiB; checked before compiling.
    pub max_component_mib: u32,
    /// Most functions a component may define, all its core modules together; checked before
    /// compiling (compile time and memory grow with it).
    pub max_functions: u32,
    /// Longest one compile may take, in ms; a slower one is refused. A compile cannot be
    /// cancelled: until the abandoned one ends, new components are refused too.
    pub compile_timeout_ms: u64,
    /// Longest text kept from a plugin — a log line, an error it returns, why it failed — in
    /// bytes; longer text is cut.
    pub max_message_bytes: u32,
    /// Most a sanitizer's `limits.call_timeout_ms` may be: every publisher waits on it.
    pub max_sanitizer_timeout_ms: u64,
    /// Most a consumer's or metrics plugin's `limits.call_timeout_ms` may be (it stalls only
    /// its own queue).
    pub max_call_timeout_ms: u64,
    /// Most a manifest's `quarantine.after_failures` may be.
    pub max_quarantine_after_failures: u32,
    /// Most a manifest's `quarantine.backoff_ms` and `quarantine.max_backoff_ms` may be
    /// (a quarantined sanitizer keeps the host not ready).
    pub max_quarantine_backoff_ms: u64,
    /// Longest label value a plugin may set on its custom metrics, in bytes; a longer one is
    /// refused (`lookout_plugin_metric_rejections_total{reason="label_length"}`).
    pub max_label_value_bytes: u32,
    /// Most bytes of label values one plugin's series may hold together, over all its
    /// metrics and versions; a new series past it is refused (`reason="label_bytes"`). With
    /// the series cap, what bounds a plugin's part of `/metrics`.
    pub max_label_bytes_per_plugin: u32,
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            total_memory_mib: 512,
            max_component_mib: 32,
            max_functions: 60_000,
            compile_timeout_ms: 60_000,
            max_message_bytes: 4096,
            max_sanitizer_timeout_ms: 1_000,
            max_call_timeout_ms: 10_000,
            max_quarantine_after_failures: 1_000,
            max_quarantine_backoff_ms: 600_000,
            max_label_value_bytes: 256,
            max_label_bytes_per_plugin: 256 * 1024,
        }
    }
}

/// Bounds of each budget key, so a typo cannot turn a budget off (or every plugin away).
const RANGES: &[(&str, u64, u64)] = &[
    ("total_memory_mib", 1, 65_536),
    ("max_component_mib", 1, 1_024),
    ("max_functions", 1, 10_000_000),
    ("compile_timeout_ms", 100, 600_000),
    ("max_message_bytes", 256, 1 << 20),
    ("max_sanitizer_timeout_ms", 1, 60_000),
    ("max_call_timeout_ms", 1, 60_000),
    ("max_quarantine_after_failures", 1, 1_000_000),
    ("max_quarantine_backoff_ms", 1, 86_400_000),
    ("max_label_value_bytes", 16, 65_536),
    ("max_label_bytes_per_plugin", 1_024, 64 << 20),
];

impl Budget {
    fn values(&self) -> [u64; RANGES.len()] {
        [
            self.total_memory_mib.into(),
            self.max_component_mib.into(),
            self.max_functions.into(),
            self.compile_timeout_ms,
            self.max_message_bytes.into(),
            self.max_sanitizer_timeout_ms,
            self.max_call_timeout_ms,
            self.max_quarantine_after_failures.into(),
            self.max_quarantine_backoff_ms,
            self.max_label_value_bytes.into(),
            self.max_label_bytes_per_plugin.into(),
        ]
    }

    /// Every key out of its range, each named without its section (the caller knows where
    /// the budget sits: [`Invalid::under`]).
    pub fn problems(&self) -> Vec<Invalid> {
        let mut problems: Vec<Invalid> = RANGES
            .iter()
            .zip(self.values())
            .filter(|((_, lo, hi), v)| v < lo || v > hi)
            .map(|((key, lo, hi), _)| Invalid::new(*key, format!("must be between {lo} and {hi}")))
            .collect();
        // Under it, no series with one label of the longest value allowed could ever exist.
        if self.max_label_bytes_per_plugin < self.max_label_value_bytes {
            problems.push(Invalid::new(
                "max_label_bytes_per_plugin",
                format!(
                    "must be at least max_label_value_bytes ({})",
                    self.max_label_value_bytes
                ),
            ));
        }
        problems
    }

    /// What it allows a plugin's label values (taken when a plugin's metric set is made).
    pub(crate) fn label_caps(&self) -> LabelCaps {
        LabelCaps {
            value_bytes: self.max_label_value_bytes as usize,
            bytes_per_plugin: self.max_label_bytes_per_plugin as usize,
        }
    }

    /// The largest component, in bytes.
    pub fn max_component_bytes(&self) -> usize {
        self.max_component_mib as usize * (1 << 20)
    }

    /// The most `limits.call_timeout_ms` may be for a plugin of `world`, and the key that sets it.
    pub fn max_timeout_for(&self, world: World) -> (u64, &'static str) {
        match world {
            World::Sanitizer => (self.max_sanitizer_timeout_ms, "max_sanitizer_timeout_ms"),
            World::Consumer | World::Metrics => (self.max_call_timeout_ms, "max_call_timeout_ms"),
        }
    }

    /// Checks a manifest's host-wide fields against this budget; the error names the field,
    /// what it asks and the most it may be.
    pub fn admit(&self, manifest: &Manifest) -> Result<()> {
        self.admit_limits(&manifest.name, manifest.world, &manifest.limits)?;
        self.admit_quarantine(&manifest.name, &manifest.quarantine)
    }

    pub(crate) fn admit_limits(&self, plugin: &str, world: World, limits: &Limits) -> Result<()> {
        let over = |reason: String| {
            Err(Error::Budget {
                plugin: plugin.into(),
                reason,
            })
        };
        let (max_timeout, key) = self.max_timeout_for(world);
        if limits.call_timeout_ms > max_timeout {
            let why = match world {
                World::Sanitizer => ": every publisher waits on the sanitizer",
                _ => "",
            };
            return over(format!(
                "limits.call_timeout_ms = {} is over the most this host allows a {}, {max_timeout} ms \
                 (plugins.budget.{key}){why}",
                limits.call_timeout_ms,
                world.as_str()
            ));
        }
        if limits.max_memory_mib > self.total_memory_mib {
            return over(format!(
                "limits.max_memory_mib = {} is {} MiB over the memory of all plugins together, \
                 {} MiB (plugins.budget.total_memory_mib)",
                limits.max_memory_mib,
                limits.max_memory_mib - self.total_memory_mib,
                self.total_memory_mib
            ));
        }
        Ok(())
    }

    pub(crate) fn admit_quarantine(&self, plugin: &str, policy: &QuarantinePolicy) -> Result<()> {
        let over = |field: &str, value: u64, max: u64, key: &str| {
            Err(Error::Budget {
                plugin: plugin.into(),
                reason: format!(
                    "quarantine.{field} = {value} is over the most this host allows, {max} \
                     (plugins.budget.{key})"
                ),
            })
        };
        let failures = self.max_quarantine_after_failures;
        if policy.after_failures > failures {
            return over(
                "after_failures",
                policy.after_failures.into(),
                failures.into(),
                "max_quarantine_after_failures",
            );
        }
        let backoff = self.max_quarantine_backoff_ms;
        for (field, value) in [
            ("backoff_ms", policy.backoff_ms),
            ("max_backoff_ms", policy.max_backoff_ms),
        ] {
            if value > backoff {
                return over(field, value, backoff, "max_quarantine_backoff_ms");
            }
        }
        // A window too short to hold `after_failures` failures never trips (a plugin failing
        // once a second with `window_ms = 1` would never be quarantined).
        if policy.window_ms < MIN_QUARANTINE_WINDOW_MS {
            return Err(Error::Budget {
                plugin: plugin.into(),
                reason: format!(
                    "quarantine.window_ms = {} is under the least this host allows,                      {MIN_QUARANTINE_WINDOW_MS} ms (a shorter window never gathers enough                      failures to quarantine)",
                    policy.window_ms
                ),
            });
        }
        Ok(())
    }
}

/// The shortest quarantine window a manifest may set.
pub const MIN_QUARANTINE_WINDOW_MS: u64 = 1_000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_in_range_and_a_zero_is_named() {
        assert!(Budget::default().problems().is_empty());
        let bad = Budget {
            total_memory_mib: 0,
            compile_timeout_ms: 10,
            ..Budget::default()
        };
        let keys: Vec<String> = bad.problems().into_iter().map(|i| i.field).collect();
        assert_eq!(keys, ["total_memory_mib", "compile_timeout_ms"]);
    }

    /// The label caps are budget keys like the others: read from `[plugins.budget]`, unknown
    /// keys refused, each out-of-range value named by its key.
    #[test]
    fn label_caps_are_budget_keys_checked_by_name() {
        let budget: Budget =
            toml::from_str("max_label_value_bytes = 1024\nmax_label_bytes_per_plugin = 1048576\n")
                .unwrap();
        assert_eq!(budget.max_label_value_bytes, 1024);
        assert_eq!(budget.max_label_bytes_per_plugin, 1 << 20);
        assert_eq!(budget.total_memory_mib, Budget::default().total_memory_mib);
        assert!(budget.problems().is_empty());

        let err = toml::from_str::<Budget>("max_label_value_byte = 1024\n").unwrap_err();
        assert!(err.to_string().contains("max_label_value_byte"), "{err}");

        let bad = Budget {
            max_label_value_bytes: 0,
            max_label_bytes_per_plugin: u32::MAX,
            ..Budget::default()
        };
        let keys: Vec<String> = bad.problems().into_iter().map(|i| i.field).collect();
        assert_eq!(
            keys,
            ["max_label_value_bytes", "max_label_bytes_per_plugin"]
        );
        let inverted = Budget {
            max_label_value_bytes: 4096,
            max_label_bytes_per_plugin: 2048,
            ..Budget::default()
        };
        let problems = inverted.problems();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].field, "max_label_bytes_per_plugin");
        assert!(problems[0].reason.contains("max_label_value_bytes (4096)"));
    }

    #[test]
    fn host_wide_manifest_fields_are_capped_by_name() {
        let budget = Budget::default();
        let mut m = Manifest::new("slow", World::Sanitizer);
        m.limits.call_timeout_ms = 10_000;
        let err = budget.admit(&m).unwrap_err().to_string();
        assert!(
            err.contains("limits.call_timeout_ms") && err.contains("1000 ms"),
            "{err}"
        );
        m.world = World::Consumer;
        budget.admit(&m).unwrap();

        let mut m = Manifest::new("never", World::Consumer);
        m.quarantine.after_failures = u32::MAX;
        let err = budget.admit(&m).unwrap_err().to_string();
        assert!(err.contains("quarantine.after_failures"), "{err}");
        let mut m = Manifest::new("forever", World::Consumer);
        m.quarantine.backoff_ms = u64::MAX;
        m.quarantine.max_backoff_ms = u64::MAX;
        let err = budget.admit(&m).unwrap_err().to_string();
        assert!(
            err.contains("quarantine.backoff_ms") && err.contains("600000"),
            "{err}"
        );
    }
}
