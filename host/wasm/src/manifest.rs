//! A plugin's manifest: the small TOML file that goes with its `.wasm`. It names the plugin
//! and its world, carries the config for `init`, the sandbox limits, the failure policy and
//! optional fixtures (input events and the output they must give) that are run before a swap
//! goes live. Unknown keys are errors.
//!
//! ```toml
//! name = "allowlist"
//! world = "sanitizer"
//! version = "1.2.0"
//! on_failure = "redact"          # sanitizers: redact | drop
//!
//! [config]
//! allow = "pool,command,worker"
//!
//! [limits]
//! max_memory_mib = 32
//! call_timeout_ms = 50
//!
//! [[fixtures]]
//! name = "secrets go"
//! input = [{ kind = "login", fields = { user = "bob", password = "x" } }]
//! expect = [{ kind = "login", fields = { user = "[REDACTED]", password = "[REDACTED]" } }]
//! ```

use std::collections::BTreeMap;

use lookout_core::{Event, FailurePolicy, Field, FieldValue, Severity};
use serde::{Deserialize, Serialize};

use crate::custom_metrics::MetricDecl;
use crate::error::{Error, Result};
use crate::limits::{Limits, QuarantinePolicy};

/// The `[config]` handed to a plugin's `init`, as `(key, value)` pairs.
pub type PluginConfig = Vec<(String, String)>;

/// The world a plugin implements.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum World {
    Sanitizer,
    Consumer,
    Metrics,
}

impl World {
    pub fn as_str(self) -> &'static str {
        match self {
            World::Sanitizer => "sanitizer",
            World::Consumer => "consumer",
            World::Metrics => "metrics",
        }
    }
}

/// A plugin's manifest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// 1–64 characters of lowercase letters, digits, `-` and `_`.
    pub name: String,
    pub world: World,
    /// The author's version, shown in the plugin list; the host numbers swaps on its own.
    #[serde(default)]
    pub version: String,
    /// Handed to `init` as `(key, value)` pairs.
    #[serde(default)]
    pub config: BTreeMap<String, String>,
    #[serde(default)]
    pub limits: Limits,
    /// For sanitizers: what happens to a batch the plugin failed on. Never pass-through.
    #[serde(default)]
    pub on_failure: FailurePolicy,
    #[serde(default)]
    pub fixtures: Vec<Fixture>,
    /// Metrics the plugin may update through `update-metric` (`consumer` world; a `metrics`
    /// plugin declares its own through `describe`).
    #[serde(default)]
    pub metrics: Vec<MetricDecl>,
    /// When repeated failures quarantine the plugin.
    #[serde(default)]
    pub quarantine: QuarantinePolicy,
}

/// Events in, and the events that must come out.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fixture {
    #[serde(default)]
    pub name: String,
    pub input: Vec<FixtureEvent>,
    pub expect: Vec<FixtureEvent>,
}

/// An event as a fixture writes it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixtureEvent {
    pub kind: String,
    #[serde(default)]
    pub severity: Option<Severity>,
    #[serde(default)]
    pub correlation_id: Option<String>,
    #[serde(default)]
    pub fields: BTreeMap<String, FixtureValue>,
}

/// A typed field value in TOML.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum FixtureValue {
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
}

impl From<&FixtureValue> for FieldValue {
    fn from(v: &FixtureValue) -> Self {
        match v {
            FixtureValue::Bool(b) => FieldValue::Bool(*b),
            FixtureValue::Int(i) => FieldValue::Int(*i),
            FixtureValue::Float(f) => FieldValue::Float(*f),
            FixtureValue::Str(s) => FieldValue::Str(s.clone()),
        }
    }
}

impl FixtureEvent {
    pub(crate) fn to_event(&self, id: u64) -> Event {
        let mut event = Event::new(self.kind.clone());
        event.id = id;
        event.timestamp_ns = 1;
        event.severity = self.severity.unwrap_or_default();
        event.correlation_id = self.correlation_id.clone();
        event.fields = self
            .fields
            .iter()
            .map(|(k, v)| Field {
                key: k.clone(),
                value: v.into(),
            })
            .collect();
        event
    }

    /// Whether `event` has this kind and exactly these fields (in any order).
    pub(crate) fn matches(&self, event: &Event) -> bool {
        event.kind == self.kind
            && event.fields.len() == self.fields.len()
            && event.fields.iter().all(|f| {
                self.fields
                    .get(&f.key)
                    .is_some_and(|v| FieldValue::from(v) == f.value)
            })
    }
}

impl Manifest {
    /// Parses and checks a manifest; the error names the plugin (when known) and the key.
    pub fn parse(text: &str) -> Result<Manifest> {
        let manifest: Manifest = toml::from_str(text).map_err(|e| Error::Manifest {
            plugin: "?".into(),
            reason: e.to_string(),
        })?;
        manifest.validate()?;
        Ok(manifest)
    }

    /// A manifest built in code (the embedded default plugins, the host config's `[sanitizer]`).
    pub fn new(name: &str, world: World) -> Manifest {
        Manifest {
            name: name.to_string(),
            world,
            version: String::new(),
            config: BTreeMap::new(),
            limits: Limits::default(),
            on_failure: FailurePolicy::default(),
            fixtures: Vec::new(),
            metrics: Vec::new(),
            quarantine: QuarantinePolicy::default(),
        }
    }

    pub fn validate(&self) -> Result<()> {
        validate_name(&self.name)?;
        self.limits.validate(&self.name)?;
        self.quarantine.validate(&self.name)?;
        for (i, fixture) in self.fixtures.iter().enumerate() {
            if fixture.input.is_empty() {
                return Err(Error::Manifest {
                    plugin: self.name.clone(),
                    reason: format!("fixtures[{i}]: `input` is empty"),
                });
            }
        }
        Ok(())
    }

    /// The config as `init` gets it.
    pub fn init_config(&self) -> PluginConfig {
        self.config
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

/// Plugin names go into metric labels, URLs and file names: keep them plain.
pub fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(Error::Manifest {
            plugin: name.chars().take(64).collect(),
            reason: "`name` must be 1–64 characters of lowercase letters, digits, `-` and `_`"
                .into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_manifest_parses_and_typos_are_named() {
        let m = Manifest::parse(
            r#"
            name = "allowlist"
            world = "sanitizer"
            version = "1.0.0"
            on_failure = "drop"
            [config]
            allow = "a,b"
            [limits]
            max_memory_mib = 16
            call_timeout_ms = 20
            [[fixtures]]
            input = [{ kind = "x", fields = { a = 1, b = "s", c = true, d = 1.5 } }]
            expect = [{ kind = "x", fields = { a = 1, b = "s", c = "[REDACTED]", d = "[REDACTED]" } }]
            "#,
        )
        .unwrap();
        assert_eq!(m.on_failure, FailurePolicy::Drop);
        assert_eq!(m.limits.max_memory_mib, 16);
        let e = m.fixtures[0].input[0].to_event(1);
        assert_eq!(e.get("a"), Some(&FieldValue::Int(1)));
        assert_eq!(e.get("d"), Some(&FieldValue::Float(1.5)));

        let err =
            Manifest::parse("name = \"x\"\nworld = \"sanitizer\"\nverison = \"1\"\n").unwrap_err();
        assert!(err.to_string().contains("verison"), "{err}");
        let err = Manifest::parse("name = \"Bad Name\"\nworld = \"sanitizer\"\n").unwrap_err();
        assert!(err.to_string().contains("name"), "{err}");
        let err = Manifest::parse("name = \"x\"\nworld = \"transformer\"\n").unwrap_err();
        assert!(err.to_string().contains("transformer"), "{err}");
    }
}
