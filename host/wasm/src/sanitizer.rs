//! A sanitizer policy running as a WASM component (`sanitizer` world). The bus calls it on
//! its pipeline thread; one instance is kept warm and replaced after any trap (a trapped
//! instance cannot be entered again).

use std::sync::Arc;
use std::time::Instant;

use lookout_core::{Event, FailurePolicy, Field, FieldValue, SanitizeError, Sanitizer, Severity};
use parking_lot::Mutex;
use wasmtime::Store;

use crate::bindings::sanitizer::{Sanitizer as Bindings, SanitizerPre};
use crate::bindings::types as wit;
use crate::breaker::{Breaker, BreakerStatus, QuarantinePolicy};
use crate::error::{Error, Result};
use crate::manifest::{Fixture, Manifest, World};
use crate::runtime::{Limits, PluginState, Runtime, arm, describe_trap};

/// The `[config]` handed to a plugin's `init`.
pub type PluginConfig = Vec<(String, String)>;

struct Live {
    store: Store<PluginState>,
    bindings: Bindings,
}

/// A loaded sanitizer component.
pub struct WasmSanitizer {
    name: Arc<str>,
    runtime: Runtime,
    pre: SanitizerPre<PluginState>,
    config: PluginConfig,
    limits: Limits,
    on_failure: FailurePolicy,
    breaker: Breaker,
    live: Mutex<Option<Live>>,
}

impl std::fmt::Debug for WasmSanitizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmSanitizer")
            .field("name", &self.name)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl WasmSanitizer {
    /// Compiles, links and initialises the component; any error names the plugin and what
    /// was wrong, and nothing is left running.
    pub fn load(
        runtime: &Runtime,
        name: &str,
        wasm: &[u8],
        config: PluginConfig,
        limits: Limits,
    ) -> Result<WasmSanitizer> {
        limits.validate(name)?;
        let component = runtime.compile(name, wasm)?;
        let wrong_world = |e: wasmtime::Error| Error::WrongWorld {
            plugin: name.into(),
            world: "sanitizer".into(),
            reason: format!("{e:#}"),
        };
        let pre = runtime
            .linker
            .instantiate_pre(&component)
            .map_err(wrong_world)?;
        let pre = SanitizerPre::new(pre).map_err(wrong_world)?;
        let sanitizer = WasmSanitizer {
            name: name.into(),
            runtime: runtime.clone(),
            pre,
            config,
            limits,
            on_failure: FailurePolicy::default(),
            breaker: Breaker::new(QuarantinePolicy::default()),
            live: Mutex::new(None),
        };
        let live = sanitizer.instantiate()?;
        *sanitizer.live.lock() = Some(live);
        Ok(sanitizer)
    }

    /// Loads the plugin a manifest describes, then runs the manifest's fixtures against it.
    pub fn from_manifest(
        runtime: &Runtime,
        manifest: &Manifest,
        wasm: &[u8],
    ) -> Result<WasmSanitizer> {
        manifest.validate()?;
        if manifest.world != World::Sanitizer {
            return Err(Error::WrongWorld {
                plugin: manifest.name.clone(),
                world: "sanitizer".into(),
                reason: format!("its manifest says world `{}`", manifest.world.as_str()),
            });
        }
        let mut sanitizer = WasmSanitizer::load(
            runtime,
            &manifest.name,
            wasm,
            manifest.init_config(),
            manifest.limits,
        )?;
        sanitizer.on_failure = manifest.on_failure;
        sanitizer.breaker = Breaker::new(manifest.quarantine);
        sanitizer.run_fixtures(&manifest.fixtures)?;
        Ok(sanitizer)
    }

    /// Runs each fixture's input through the plugin and compares with what it expects.
    fn run_fixtures(&self, fixtures: &[Fixture]) -> Result<()> {
        for (i, fixture) in fixtures.iter().enumerate() {
            let label = if fixture.name.is_empty() {
                format!("fixtures[{i}]")
            } else {
                format!("fixture `{}`", fixture.name)
            };
            let fail = |reason: String| Error::Fixture {
                plugin: self.name.to_string(),
                reason: format!("{label}: {reason}"),
            };
            let mut batch: Vec<Event> = fixture
                .input
                .iter()
                .enumerate()
                .map(|(n, e)| e.to_event(n as u64 + 1))
                .collect();
            self.sanitize(&mut batch).map_err(|e| fail(e.reason))?;
            if batch.len() != fixture.expect.len() {
                return Err(fail(format!(
                    "expected {} events out, got {}",
                    fixture.expect.len(),
                    batch.len()
                )));
            }
            for (n, (got, want)) in batch.iter().zip(&fixture.expect).enumerate() {
                if !want.matches(got) {
                    let got = serde_json::to_string(got).unwrap_or_default();
                    return Err(fail(format!(
                        "event {n} came out as {got}, which is not what the fixture expects"
                    )));
                }
            }
        }
        Ok(())
    }

    /// A fresh instance with `init` run on the plugin's config.
    fn instantiate(&self) -> Result<Live> {
        let mut store = self.runtime.new_store(&self.name, &self.limits, None);
        let trap = |store: &Store<PluginState>, e: wasmtime::Error| Error::Trap {
            plugin: self.name.to_string(),
            reason: describe_trap(store, &self.limits, &e).1,
        };
        let bindings = match self.pre.instantiate(&mut store) {
            Ok(b) => b,
            Err(e) => return Err(trap(&store, e)),
        };
        arm(&mut store, &self.limits);
        match bindings.call_init(&mut store, &self.config) {
            Ok(Ok(())) => Ok(Live { store, bindings }),
            Ok(Err(reason)) => Err(Error::Init {
                plugin: self.name.to_string(),
                reason,
            }),
            Err(e) => Err(trap(&store, e)),
        }
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Running or quarantined, and the last error.
    pub fn status(&self) -> BreakerStatus {
        self.breaker.status()
    }
}

impl Sanitizer for WasmSanitizer {
    fn name(&self) -> &str {
        &self.name
    }

    fn sanitize(&self, batch: &mut Vec<Event>) -> std::result::Result<(), SanitizeError> {
        let metrics = &self.runtime.metrics;
        metrics
            .events_in
            .with_label_values(&[&self.name])
            .inc_by(batch.len() as u64);
        self.breaker
            .guard(&self.name, metrics, || self.call(batch))
            .map_err(|reason| SanitizeError {
                sanitizer: self.name.to_string(),
                reason,
            })
    }

    fn failure_policy(&self) -> FailurePolicy {
        self.on_failure
    }
}

impl WasmSanitizer {
    /// One call into the plugin; a trap drops the instance (the next call gets a fresh one).
    fn call(&self, batch: &mut Vec<Event>) -> std::result::Result<(), String> {
        let metrics = &self.runtime.metrics;
        let mut guard = self.live.lock();
        if guard.is_none() {
            *guard = Some(self.instantiate().map_err(|e| e.to_string())?);
        }
        let live = guard.as_mut().expect("instantiated above");
        arm(&mut live.store, &self.limits);
        // Moved, not cloned: the strings go back into `batch` whatever happens.
        let input: Vec<wit::Event> = batch.drain(..).map(to_wit).collect();
        let started = Instant::now();
        let result = live.bindings.call_sanitize(&mut live.store, &input);
        match result {
            Ok(output) => {
                metrics.record(&self.name, "sanitize", started, "ok");
                batch.extend(output.into_iter().map(from_wit));
                Ok(())
            }
            Err(e) => {
                let (outcome, reason) = describe_trap(&live.store, &self.limits, &e);
                metrics.record(&self.name, "sanitize", started, outcome);
                *guard = None;
                batch.extend(input.into_iter().map(from_wit));
                Err(reason)
            }
        }
    }
}

/// Host event → WIT event, moving the strings.
pub(crate) fn to_wit(e: Event) -> wit::Event {
    wit::Event {
        id: e.id,
        kind: e.kind,
        timestamp_ns: e.timestamp_ns,
        correlation_id: e.correlation_id,
        severity: match e.severity {
            Severity::Trace => wit::Severity::Trace,
            Severity::Debug => wit::Severity::Debug,
            Severity::Info => wit::Severity::Info,
            Severity::Warn => wit::Severity::Warn,
            Severity::Error => wit::Severity::Error,
        },
        fields: e
            .fields
            .into_iter()
            .map(|f| wit::Field {
                key: f.key,
                value: match f.value {
                    FieldValue::Str(s) => wit::FieldValue::Str(s),
                    FieldValue::Int(i) => wit::FieldValue::Int(i),
                    FieldValue::Float(x) => wit::FieldValue::Float(x),
                    FieldValue::Bool(b) => wit::FieldValue::Boolean(b),
                },
            })
            .collect(),
    }
}

/// WIT event → host event, moving the strings.
fn from_wit(e: wit::Event) -> Event {
    Event {
        id: e.id,
        kind: e.kind,
        timestamp_ns: e.timestamp_ns,
        correlation_id: e.correlation_id,
        severity: match e.severity {
            wit::Severity::Trace => Severity::Trace,
            wit::Severity::Debug => Severity::Debug,
            wit::Severity::Info => Severity::Info,
            wit::Severity::Warn => Severity::Warn,
            wit::Severity::Error => Severity::Error,
        },
        fields: e
            .fields
            .into_iter()
            .map(|f| Field {
                key: f.key,
                value: match f.value {
                    wit::FieldValue::Str(s) => FieldValue::Str(s),
                    wit::FieldValue::Int(i) => FieldValue::Int(i),
                    wit::FieldValue::Float(x) => FieldValue::Float(x),
                    wit::FieldValue::Boolean(b) => FieldValue::Bool(b),
                },
            })
            .collect(),
    }
}
