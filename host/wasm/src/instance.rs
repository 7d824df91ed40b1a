//! One warm plugin instance, for every world: its store and bindings, made from the
//! component's `InstancePre` with `init` run on the plugin's config, kept between calls and
//! replaced after a trap (a trapped instance cannot be entered again).
//!
//! One call ends by one deadline: the call after a trap replaces the instance (instantiate,
//! `init`) out of the same `call_timeout_ms` as the call itself, never on top of it; with
//! nothing left, the call fails as a `timeout` without entering the guest and the fresh
//! instance stays warm for the next. This module never decides what a call's answer means:
//! the sanitizer and the runner do, and record its outcome.

use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;
use wasmtime::Store;

use crate::custom_metrics::MetricSink;
use crate::error::{Error, Result};
use crate::limits::Limits;
use crate::manifest::PluginConfig;
use crate::plugin_metrics::PluginMetrics;
use crate::plugin_text::admit;
use crate::runtime::{PluginState, Runtime, arm, describe_trap, replaced_too_late};

/// A world's bindings: how they are instantiated from their `InstancePre` and initialised.
pub(crate) trait Guest: Sized {
    type Pre;
    fn instantiate(pre: &Self::Pre, store: &mut Store<PluginState>) -> wasmtime::Result<Self>;
    fn init(
        &self,
        store: &mut Store<PluginState>,
        config: &PluginConfig,
    ) -> wasmtime::Result<std::result::Result<(), String>>;
}

struct Live<G> {
    store: Store<PluginState>,
    bindings: G,
}

/// What came back from a call that entered the guest and returned: its answer, and when the
/// call started (for the caller to record the outcome the answer means).
pub(crate) struct Answered<R> {
    pub answer: R,
    pub started: Instant,
}

/// The warm instance of one loaded plugin version.
pub(crate) struct Instance<G: Guest> {
    name: Arc<str>,
    runtime: Runtime,
    limits: Limits,
    config: PluginConfig,
    pre: G::Pre,
    live: Mutex<Option<Live<G>>>,
}

impl<G: Guest> Instance<G> {
    pub(crate) fn new(
        name: Arc<str>,
        runtime: &Runtime,
        limits: Limits,
        config: PluginConfig,
        pre: G::Pre,
    ) -> Instance<G> {
        Instance {
            name,
            runtime: runtime.clone(),
            limits,
            config,
            pre,
            live: Mutex::new(None),
        }
    }

    pub(crate) fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Makes the first instance (at load: instantiate and `init` each get their own
    /// `call_timeout_ms`), its metric updates going to `sink`; an error names the plugin and
    /// what failed, and nothing is kept.
    pub(crate) fn start(&self, sink: Option<MetricSink>) -> Result<()> {
        let live = self.instantiate(None, sink)?;
        *self.live.lock() = Some(live);
        Ok(())
    }

    /// Sends the warm instance's metric updates to `sink` from now on.
    pub(crate) fn update_metrics_in(&self, sink: Option<MetricSink>) {
        if let Some(live) = self.live.lock().as_mut() {
            live.store.data_mut().metrics = sink;
        }
    }

    /// A trap in `function` under `limits`, named as the operator reads it.
    fn trap(
        &self,
        store: &Store<PluginState>,
        limits: &Limits,
        function: &str,
        e: &wasmtime::Error,
    ) -> Error {
        Error::Trap {
            plugin: self.name.to_string(),
            reason: describe_trap(store, limits, function, e).1,
        }
    }

    /// A fresh instance with `init` run. Made for a call, both share that call's deadline
    /// (`call_deadline`); at load each has its own, the load timeout (`Limits::at_load`).
    fn instantiate(
        &self,
        call_deadline: Option<Instant>,
        sink: Option<MetricSink>,
    ) -> Result<Live<G>> {
        let at_load = self.limits.at_load();
        let limits = if call_deadline.is_some() {
            &self.limits
        } else {
            &at_load
        };
        let deadline = || call_deadline.unwrap_or_else(|| limits.deadline());
        let mut store = self.runtime.new_store(&self.name, limits, sink, deadline());
        let bindings = G::instantiate(&self.pre, &mut store)
            .map_err(|e| self.trap(&store, limits, "instantiate", &e))?;
        arm(&mut store, deadline());
        match bindings.init(&mut store, &self.config) {
            Ok(Ok(())) => Ok(Live { store, bindings }),
            Ok(Err(reason)) => Err(Error::Init {
                plugin: self.name.to_string(),
                reason: admit(&reason),
            }),
            Err(e) => Err(self.trap(&store, limits, "init", &e)),
        }
    }

    /// One call of `function`: the warm instance (or a fresh one, made within the call's
    /// deadline, its metric updates going to `sink`) is armed with the deadline and `enter`
    /// calls the guest. A trap, timeout or out-of-memory is recorded and drops the instance;
    /// an answer is handed back for the caller to judge and record.
    pub(crate) fn call<R>(
        &self,
        function: &str,
        metrics: &PluginMetrics,
        sink: impl FnOnce() -> Option<MetricSink>,
        enter: impl FnOnce(&mut Store<PluginState>, &G) -> wasmtime::Result<R>,
    ) -> std::result::Result<Answered<R>, String> {
        let mut guard = self.live.lock();
        let started = Instant::now();
        let deadline = started + self.limits.timeout();
        if guard.is_none() {
            *guard = Some(
                self.instantiate(Some(deadline), sink())
                    .map_err(|e| e.to_string())?,
            );
            if Instant::now() >= deadline {
                // Nothing left for the call: the fresh instance stays warm for the next.
                metrics.record(&self.name, function, started, "timeout");
                return Err(replaced_too_late(function, &self.limits));
            }
        }
        let live = guard.as_mut().expect("instantiated above");
        arm(&mut live.store, deadline);
        match enter(&mut live.store, &live.bindings) {
            Ok(answer) => Ok(Answered { answer, started }),
            Err(e) => {
                let (outcome, reason) = describe_trap(&live.store, &self.limits, function, &e);
                metrics.record(&self.name, function, started, outcome);
                *guard = None;
                Err(reason)
            }
        }
    }
}
