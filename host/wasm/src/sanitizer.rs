//! A sanitizer policy running as a WASM component (`sanitizer` world). The bus calls it on
//! its pipeline thread; one instance is kept warm and replaced after any trap (a trapped
//! instance cannot be entered again). It is handed the flat batch and answers with edits
//! (see `batch`).
//!
//! Every publisher waits on a sanitizer, so one call ends by one deadline: the call after a
//! trap replaces the instance (instantiate, `init`) out of the same `call_timeout_ms` as its
//! `sanitize`, never on top of it.

use std::sync::Arc;

use lookout_core::{Event, FailurePolicy, SanitizeError, Sanitizer};
use parking_lot::Mutex;
use wasmtime::Store;

use crate::batch::BatchBuilder;
use crate::bindings::sanitizer::{Sanitizer as Bindings, SanitizerPre};
use crate::breaker::{Breaker, BreakerStatus};
use crate::error::{Error, Result};
use crate::instance::{Answered, Guest, Instance};
use crate::limits::{Limits, QuarantinePolicy};
use crate::manifest::{Fixture, Manifest, PluginConfig, World};
use crate::plugin_metrics::PluginMetrics;
use crate::plugin_text::admit;
use crate::redactions::RuleBook;
use crate::runtime::{PluginState, Runtime};

impl Guest for Bindings {
    type Pre = SanitizerPre<PluginState>;

    fn instantiate(pre: &Self::Pre, store: &mut Store<PluginState>) -> wasmtime::Result<Self> {
        pre.instantiate(store)
    }

    fn init(
        &self,
        store: &mut Store<PluginState>,
        config: &PluginConfig,
    ) -> wasmtime::Result<std::result::Result<(), String>> {
        self.call_init(store, config)
    }
}

/// A loaded sanitizer component. A handle: its clones share one warm instance, books and
/// breaker (the bus runs one, the registry keeps it for rollback).
#[derive(Clone)]
pub struct WasmSanitizer(Arc<Policy>);

struct Policy {
    name: Arc<str>,
    instance: Instance<Bindings>,
    on_failure: FailurePolicy,
    breaker: Breaker,
    /// Where its calls are counted: the runtime's (shared with its other versions), or
    /// unread ones while a push runs its fixtures.
    metrics: PluginMetrics,
    /// Where the markers of its replacements are counted, in `metrics`.
    redactions: Arc<RuleBook>,
    scratch: Mutex<BatchBuilder>,
}

impl std::fmt::Debug for WasmSanitizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmSanitizer")
            .field("name", &self.0.name)
            .field("limits", self.0.instance.limits())
            .finish_non_exhaustive()
    }
}

impl WasmSanitizer {
    /// Compiles, links and initialises the component; any error names the plugin and what
    /// was wrong, and nothing is left running. Safe to call from async code.
    pub fn load(
        runtime: &Runtime,
        name: &str,
        wasm: &[u8],
        config: PluginConfig,
        limits: Limits,
    ) -> Result<WasmSanitizer> {
        let counted = runtime.metrics.clone();
        lookout_core::blocking(|| Policy::load(runtime, name, wasm, config, limits, counted))
            .map(|policy| WasmSanitizer(Arc::new(policy)))
    }

    /// Loads the plugin a manifest describes, then runs the manifest's fixtures against it.
    /// The fixtures' calls are not counted: until it is installed, nothing is counted under
    /// its name, so a refused push leaves no books behind.
    pub fn from_manifest(
        runtime: &Runtime,
        manifest: &Manifest,
        wasm: &[u8],
    ) -> Result<WasmSanitizer> {
        manifest.validate()?;
        runtime.budget().admit(manifest)?;
        if manifest.world != World::Sanitizer {
            return Err(Error::WrongWorld {
                plugin: manifest.name.clone(),
                world: "sanitizer".into(),
                reason: format!("its manifest says world `{}`", manifest.world.as_str()),
            });
        }
        let unread = PluginMetrics::unread()?;
        let mut policy = lookout_core::blocking(|| {
            Policy::load(
                runtime,
                &manifest.name,
                wasm,
                manifest.init_config(),
                manifest.limits,
                unread,
            )
        })?;
        policy.on_failure = manifest.on_failure;
        policy.breaker = Breaker::new(manifest.quarantine);
        lookout_core::blocking(|| policy.run_fixtures(&manifest.fixtures))?;
        policy.count_in(runtime.metrics.clone());
        Ok(WasmSanitizer(Arc::new(policy)))
    }

    pub fn limits(&self) -> Limits {
        *self.0.instance.limits()
    }

    /// Running or quarantined, and the last error.
    pub fn status(&self) -> BreakerStatus {
        self.0.breaker.status()
    }
}

impl Policy {
    /// Loads it counting its calls in `metrics`.
    fn load(
        runtime: &Runtime,
        name: &str,
        wasm: &[u8],
        config: PluginConfig,
        limits: Limits,
        metrics: PluginMetrics,
    ) -> Result<Policy> {
        limits.validate(name)?;
        runtime
            .budget()
            .admit_limits(name, World::Sanitizer, &limits)?;
        let component = runtime.compile(name, wasm)?;
        let pre = runtime.link(name, World::Sanitizer, &component, SanitizerPre::new)?;
        let name: Arc<str> = name.into();
        let policy = Policy {
            instance: Instance::new(name.clone(), runtime, limits, config, pre),
            on_failure: FailurePolicy::default(),
            breaker: Breaker::new(QuarantinePolicy::default()),
            redactions: metrics.redactions.book(&name),
            metrics,
            scratch: Mutex::default(),
            name,
        };
        policy.instance.start(None)?;
        Ok(policy)
    }

    /// Counts its calls, events and redactions in `metrics` from now on.
    fn count_in(&mut self, metrics: PluginMetrics) {
        self.redactions = metrics.redactions.book(&self.name);
        self.metrics = metrics;
    }

    /// Runs each fixture's input through the plugin and compares with what it expects.
    fn run_fixtures(&self, fixtures: &[Fixture]) -> Result<()> {
        for (i, fixture) in fixtures.iter().enumerate() {
            let label = if fixture.name.is_empty() {
                format!("fixtures[{i}]")
            } else {
                format!("fixture `{}`", fixture.name)
            };
            // What came out is the plugin's: it may hold a secret the fixture expected gone.
            let fail = |reason: String| Error::Fixture {
                plugin: self.name.to_string(),
                reason: admit(&format!("{label}: {reason}")),
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
}

impl Sanitizer for WasmSanitizer {
    fn name(&self) -> &str {
        &self.0.name
    }

    fn sanitize(&self, batch: &mut Vec<Event>) -> std::result::Result<(), SanitizeError> {
        self.0.sanitize(batch)
    }

    fn failure_policy(&self) -> FailurePolicy {
        self.0.on_failure
    }
}

impl Policy {
    fn sanitize(&self, batch: &mut Vec<Event>) -> std::result::Result<(), SanitizeError> {
        let metrics = &self.metrics;
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

    /// One call into the plugin; a trap drops the instance (the next call gets a fresh one,
    /// made within that call's deadline).
    fn call(&self, batch: &mut Vec<Event>) -> std::result::Result<(), String> {
        let mut scratch = self.scratch.lock();
        let view = scratch
            .fill(batch)
            .map_err(|reason| format!("in `sanitize`: {reason}"))?;
        // `batch` is untouched until the verdict is in and checked: on any failure the bus
        // gets the events as they were and fails them closed.
        let Answered { answer, started } = self.instance.call(
            "sanitize",
            &self.metrics,
            || None,
            |store, bindings| bindings.call_sanitize(store, view),
        )?;
        let applied = scratch.apply(answer, batch, |value| self.redactions.count(value));
        // A verdict the host refuses is a failed call: counted so, and in the status.
        let outcome = if applied.is_ok() { "ok" } else { "refused" };
        self.metrics
            .record(&self.name, "sanitize", started, outcome);
        applied.map_err(|reason| format!("in `sanitize`: {reason}"))
    }
}
