//! A sanitizer policy running as a WASM component (`sanitizer` world). The bus calls it on
//! its pipeline thread; one instance is kept warm and replaced after any trap (a trapped
//! instance cannot be entered again). It is handed the flat batch and answers with edits
//! (see `batch`).
//!
//! Every publisher waits on a sanitizer, so one call ends by one deadline: the call after a
//! trap replaces the instance (instantiate, `init`) out of the same `call_timeout_ms` as its
//! `sanitize`, never on top of it.

use std::sync::Arc;
use std::time::Instant;

use lookout_core::{Event, FailurePolicy, SanitizeError, Sanitizer};
use parking_lot::Mutex;
use wasmtime::Store;

use crate::batch::BatchBuilder;
use crate::bindings::sanitizer::{Sanitizer as Bindings, SanitizerPre};
use crate::breaker::{Breaker, BreakerStatus, QuarantinePolicy};
use crate::error::{Error, Result};
use crate::manifest::{Fixture, Manifest, World};
use crate::plugin_text::admit;
use crate::redactions::RuleBook;
use crate::runtime::{
    Limits, PluginMetrics, PluginState, Runtime, arm, describe_trap, replaced_too_late,
};

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
    /// Where its calls are counted: the runtime's (shared with its other versions), or
    /// unread ones while a push runs its fixtures.
    metrics: PluginMetrics,
    /// Where the markers of its replacements are counted, in `metrics`.
    redactions: Arc<RuleBook>,
    live: Mutex<Option<Live>>,
    scratch: Mutex<BatchBuilder>,
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
    /// was wrong, and nothing is left running. Safe to call from async code.
    pub fn load(
        runtime: &Runtime,
        name: &str,
        wasm: &[u8],
        config: PluginConfig,
        limits: Limits,
    ) -> Result<WasmSanitizer> {
        let counted = runtime.metrics.clone();
        lookout_core::blocking(|| Self::load_here(runtime, name, wasm, config, limits, counted))
    }

    /// Loads it counting its calls in `metrics`.
    fn load_here(
        runtime: &Runtime,
        name: &str,
        wasm: &[u8],
        config: PluginConfig,
        limits: Limits,
        metrics: PluginMetrics,
    ) -> Result<WasmSanitizer> {
        limits.validate(name)?;
        runtime
            .budget()
            .admit_limits(name, World::Sanitizer, &limits)?;
        let component = runtime.compile(name, wasm)?;
        let pre = runtime.link(name, World::Sanitizer, &component, SanitizerPre::new)?;
        let sanitizer = WasmSanitizer {
            name: name.into(),
            runtime: runtime.clone(),
            pre,
            config,
            limits,
            on_failure: FailurePolicy::default(),
            breaker: Breaker::new(QuarantinePolicy::default()),
            redactions: metrics.redactions.book(name),
            metrics,
            live: Mutex::new(None),
            scratch: Mutex::default(),
        };
        let live = sanitizer.instantiate(None)?;
        *sanitizer.live.lock() = Some(live);
        Ok(sanitizer)
    }

    /// Counts its calls, events and redactions in `metrics` from now on.
    fn count_in(&mut self, metrics: PluginMetrics) {
        self.redactions = metrics.redactions.book(&self.name);
        self.metrics = metrics;
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
        let mut sanitizer = lookout_core::blocking(|| {
            Self::load_here(
                runtime,
                &manifest.name,
                wasm,
                manifest.init_config(),
                manifest.limits,
                unread,
            )
        })?;
        sanitizer.on_failure = manifest.on_failure;
        sanitizer.breaker = Breaker::new(manifest.quarantine);
        lookout_core::blocking(|| sanitizer.run_fixtures(&manifest.fixtures))?;
        sanitizer.count_in(runtime.metrics.clone());
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

    /// A fresh instance with `init` run on the plugin's config. Made for a call, both share
    /// that call's deadline (`call_deadline`); at load each has its own `call_timeout_ms`.
    fn instantiate(&self, call_deadline: Option<Instant>) -> Result<Live> {
        let deadline = || call_deadline.unwrap_or_else(|| self.limits.deadline());
        let mut store = self
            .runtime
            .new_store(&self.name, &self.limits, None, deadline());
        let trap = |store: &Store<PluginState>, function: &str, e: wasmtime::Error| Error::Trap {
            plugin: self.name.to_string(),
            reason: describe_trap(store, &self.limits, function, &e).1,
        };
        let bindings = match self.pre.instantiate(&mut store) {
            Ok(b) => b,
            Err(e) => return Err(trap(&store, "instantiate", e)),
        };
        arm(&mut store, deadline());
        match bindings.call_init(&mut store, &self.config) {
            Ok(Ok(())) => Ok(Live { store, bindings }),
            Ok(Err(reason)) => Err(Error::Init {
                plugin: self.name.to_string(),
                reason: admit(&reason),
            }),
            Err(e) => Err(trap(&store, "init", e)),
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

    fn failure_policy(&self) -> FailurePolicy {
        self.on_failure
    }
}

impl WasmSanitizer {
    /// One call into the plugin; a trap drops the instance (the next call gets a fresh one,
    /// made within that call's deadline).
    fn call(&self, batch: &mut Vec<Event>) -> std::result::Result<(), String> {
        let metrics = &self.metrics;
        let mut guard = self.live.lock();
        let started = Instant::now();
        let deadline = started + self.limits.timeout();
        if guard.is_none() {
            *guard = Some(
                self.instantiate(Some(deadline))
                    .map_err(|e| e.to_string())?,
            );
            if Instant::now() >= deadline {
                // Nothing left for `sanitize`: the fresh instance stays warm for the next call.
                metrics.record(&self.name, "sanitize", started, "timeout");
                return Err(replaced_too_late("sanitize", &self.limits));
            }
        }
        let live = guard.as_mut().expect("instantiated above");
        arm(&mut live.store, deadline);
        let mut scratch = self.scratch.lock();
        let view = scratch.fill(batch)?;
        // `batch` is untouched until the verdict is in and checked: on any failure the bus
        // gets the events as they were and fails them closed.
        match live.bindings.call_sanitize(&mut live.store, view) {
            Ok(verdict) => {
                let applied = scratch.apply(verdict, batch, |value| self.redactions.count(value));
                // A verdict the host refuses is a failed call: counted so, and in the status.
                let outcome = if applied.is_ok() { "ok" } else { "refused" };
                metrics.record(&self.name, "sanitize", started, outcome);
                applied.map_err(|reason| format!("in `sanitize`: {reason}"))
            }
            Err(e) => {
                let (outcome, reason) = describe_trap(&live.store, &self.limits, "sanitize", &e);
                metrics.record(&self.name, "sanitize", started, outcome);
                *guard = None;
                Err(reason)
            }
        }
    }
}
