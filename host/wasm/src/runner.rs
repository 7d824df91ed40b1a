//! Plugins that receive sanitized events: the `consumer` and `metrics` worlds. Each runs as
//! one bus consumer with its own bounded queue and task, so its slowness or failure touches
//! nobody else (it fails *open* for the rest of the host). The bus consumer stays registered
//! across swaps; only the plugin version behind it changes, so no batch is lost or handled
//! twice by a swap.

use std::sync::Arc;

use arc_swap::ArcSwap;
use lookout_core::{Batch, Consumer, ConsumerError, Event};
use parking_lot::Mutex;
use wasmtime::Store;

use crate::batch::BatchBuilder;
use crate::bindings::consumer::{Consumer as ConsumerBindings, ConsumerPre};
use crate::bindings::metrics::{Metrics as MetricsBindings, MetricsPre};
use crate::bindings::types as wit;
use crate::breaker::{Breaker, BreakerStatus};
use crate::custom_metrics::{
    MetricDecl, MetricKind, MetricSink, PluginMetricSet, RejectionCounters, Staged,
};
use crate::error::{Error, Result};
use crate::instance::{Answered, Guest, Instance};
use crate::limits::Limits;
use crate::manifest::{Manifest, PluginConfig, World};
use crate::plugin_text::admit;
use crate::runtime::{PluginState, Runtime, arm, describe_trap, forward_stderr};

enum Bindings {
    Consumer(ConsumerBindings),
    Metrics(MetricsBindings),
}

enum Pre {
    Consumer(ConsumerPre<PluginState>),
    Metrics(MetricsPre<PluginState>),
}

impl Guest for Bindings {
    type Pre = Pre;

    fn instantiate(pre: &Pre, store: &mut Store<PluginState>) -> wasmtime::Result<Self> {
        match pre {
            Pre::Consumer(pre) => pre.instantiate(store).map(Bindings::Consumer),
            Pre::Metrics(pre) => pre.instantiate(store).map(Bindings::Metrics),
        }
    }

    fn init(
        &self,
        store: &mut Store<PluginState>,
        config: &PluginConfig,
    ) -> wasmtime::Result<std::result::Result<(), String>> {
        match self {
            Bindings::Consumer(b) => b.call_init(store, config),
            Bindings::Metrics(b) => b.call_init(store, config),
        }
    }
}

/// A loaded `consumer` or `metrics` plugin.
pub struct Runner {
    name: Arc<str>,
    world: World,
    runtime: Runtime,
    instance: Instance<Bindings>,
    metrics: Option<Arc<PluginMetricSet>>,
    /// What `init` did to `metrics` at load, held until the push is installed (`commit`).
    staged: Mutex<Option<Arc<Staged>>>,
    breaker: Breaker,
    scratch: Mutex<BatchBuilder>,
}

impl std::fmt::Debug for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner")
            .field("name", &self.name)
            .field("world", &self.world)
            .finish_non_exhaustive()
    }
}

impl Runner {
    /// Compiles, links and initialises a `consumer` or `metrics` plugin. A `metrics` plugin's
    /// `describe()` is called here and its declarations checked; a `consumer`'s come from
    /// its manifest. `reuse` is the metric set of the version being replaced: kept when the
    /// declarations (and the budget's label caps) are the same, so counters carry on across
    /// a swap.
    pub(crate) fn load(
        runtime: &Runtime,
        manifest: &Manifest,
        wasm: &[u8],
        rejections: &RejectionCounters,
        reuse: Option<Arc<PluginMetricSet>>,
    ) -> Result<Runner> {
        lookout_core::blocking(|| Self::load_here(runtime, manifest, wasm, rejections, reuse))
    }

    fn load_here(
        runtime: &Runtime,
        manifest: &Manifest,
        wasm: &[u8],
        rejections: &RejectionCounters,
        reuse: Option<Arc<PluginMetricSet>>,
    ) -> Result<Runner> {
        manifest.validate()?;
        runtime.budget().admit(manifest)?;
        let name = manifest.name.as_str();
        // Checked before any compiling: a manifest mistake needs no component to find.
        if manifest.world == World::Metrics && !manifest.metrics.is_empty() {
            return Err(Error::Manifest {
                plugin: name.into(),
                reason:
                    "a `metrics` plugin declares its metrics through describe(), not [[metrics]]"
                        .into(),
            });
        }
        let component = runtime.compile(name, wasm)?;
        let world = manifest.world;
        let (pre, decls) = match world {
            World::Consumer => (
                Pre::Consumer(runtime.link(name, world, &component, ConsumerPre::new)?),
                manifest.metrics.clone(),
            ),
            World::Metrics => {
                let pre = runtime.link(name, world, &component, MetricsPre::new)?;
                let decls = describe(runtime, name, &manifest.limits, &pre)?;
                (Pre::Metrics(pre), decls)
            }
            World::Sanitizer => {
                return Err(Error::WrongWorld {
                    plugin: name.into(),
                    world: "consumer or metrics".into(),
                    reason: "sanitizers run in the pipeline, not as consumers".into(),
                });
            }
        };
        let metrics = if decls.is_empty() {
            None
        } else {
            let caps = runtime.budget().label_caps();
            Some(match reuse {
                Some(old) if old.fits(&decls, caps) => old,
                _ => Arc::new(PluginMetricSet::new(
                    name,
                    &decls,
                    manifest.limits.max_series_per_metric as usize,
                    caps,
                    rejections.clone(),
                )?),
            })
        };
        let name: Arc<str> = name.into();
        let runner = Runner {
            instance: Instance::new(
                name.clone(),
                runtime,
                manifest.limits,
                manifest.init_config(),
                pre,
            ),
            name,
            world,
            runtime: runtime.clone(),
            metrics,
            staged: Mutex::new(None),
            breaker: Breaker::new(manifest.quarantine),
            scratch: Mutex::default(),
        };
        // `init` runs now, but what it does to the metrics counts only once the push is
        // installed: until then it is staged (a refused push leaves no books).
        let staged = match &runner.metrics {
            Some(set) => Some(Arc::new(Staged::of(set)?)),
            None => None,
        };
        runner
            .instance
            .start(staged.clone().map(MetricSink::Staged))?;
        *runner.staged.lock() = staged;
        Ok(runner)
    }

    /// The push is installed: what `init` did to the metrics at load is replayed into the
    /// set `/metrics` shows, and the warm instance updates that set from now on.
    pub(crate) fn commit(&self) {
        let Some(staged) = self.staged.lock().take() else {
            return;
        };
        self.instance.update_metrics_in(self.sink());
        if let Some(set) = &self.metrics {
            staged.replay_into(set);
        }
    }

    /// Where an instance's metric updates go once the plugin is installed.
    fn sink(&self) -> Option<MetricSink> {
        self.metrics.clone().map(MetricSink::Set)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn world(&self) -> World {
        self.world
    }

    /// This plugin's custom metrics, if it has any.
    pub fn metric_set(&self) -> Option<&Arc<PluginMetricSet>> {
        self.metrics.as_ref()
    }

    /// Hands one batch to the plugin, unless it is quarantined.
    pub fn handle(&self, batch: &[Event]) -> std::result::Result<(), String> {
        let metrics = &self.runtime.metrics;
        metrics
            .events_in
            .with_label_values(&[&self.name])
            .inc_by(batch.len() as u64);
        self.breaker.guard(&self.name, metrics, || self.call(batch))
    }

    /// Running or quarantined, and the last error.
    pub fn status(&self) -> BreakerStatus {
        self.breaker.status()
    }

    /// One call into the plugin. A trap drops the instance; the next batch gets a fresh one,
    /// made within that batch's deadline (one call, one deadline, as for a sanitizer).
    fn call(&self, batch: &[Event]) -> std::result::Result<(), String> {
        let metrics = &self.runtime.metrics;
        let function = match self.world {
            World::Metrics => "observe",
            _ => "handle",
        };
        let mut scratch = self.scratch.lock();
        let view = scratch
            .fill(batch)
            .map_err(|reason| format!("in `{function}`: {reason}"))?;
        let Answered { answer, started } = self.instance.call(
            function,
            metrics,
            || self.sink(),
            |store, bindings| {
                let answer = match bindings {
                    Bindings::Consumer(b) => b.call_handle(&mut *store, view),
                    Bindings::Metrics(b) => b.call_observe(&mut *store, view).map(Ok),
                };
                forward_stderr(store);
                answer
            },
        )?;
        match answer {
            Ok(()) => {
                metrics.record(&self.name, function, started, "ok");
                Ok(())
            }
            Err(reason) => {
                metrics.record(&self.name, function, started, "error");
                // It reaches the log, the breaker's status and the API: cut and scrubbed.
                Err(admit(&format!("in `{function}`: {reason}")))
            }
        }
    }
}

/// Calls `describe()` on a throwaway instance (before the metric set exists).
fn describe(
    runtime: &Runtime,
    name: &str,
    limits: &Limits,
    pre: &MetricsPre<PluginState>,
) -> Result<Vec<MetricDecl>> {
    let trap = |store: &Store<PluginState>, function: &str, e: &wasmtime::Error| Error::Trap {
        plugin: name.to_string(),
        reason: describe_trap(store, limits, function, e).1,
    };
    let deadline = limits.deadline();
    let mut store = runtime.new_store(&name.into(), limits, None, deadline);
    let bindings = pre
        .instantiate(&mut store)
        .map_err(|e| trap(&store, "instantiate", &e))?;
    arm(&mut store, deadline);
    let specs = bindings
        .call_describe(&mut store)
        .map_err(|e| trap(&store, "describe", &e))?;
    Ok(decls_of(specs))
}

/// What `describe()` declares, as the host's declarations. Its help text is taken as the
/// plugin wrote it: [`PluginMetricSet::new`] admits every declaration's help (cut and
/// scrubbed) once, whether it came from a manifest or from `describe()`.
fn decls_of(specs: Vec<wit::MetricSpec>) -> Vec<MetricDecl> {
    specs
        .into_iter()
        .map(|s| MetricDecl {
            name: s.name,
            help: s.help,
            kind: match s.kind {
                wit::MetricKind::Counter => MetricKind::Counter,
                wit::MetricKind::Gauge => MetricKind::Gauge,
                wit::MetricKind::Histogram => MetricKind::Histogram,
            },
            labels: s.labels,
            buckets: s.buckets,
        })
        .collect()
}

/// The bus consumer behind a `consumer`/`metrics` plugin: stays registered across swaps.
pub(crate) struct PluginConsumer {
    pub current: Arc<ArcSwap<Runner>>,
}

impl Consumer for PluginConsumer {
    async fn handle(&mut self, batch: Batch) -> std::result::Result<(), ConsumerError> {
        let runner = self.current.load_full();
        // A plugin call is synchronous and may run to its deadline: keep it off the async
        // workers' queue.
        tokio::task::block_in_place(|| runner.handle(&batch)).map_err(ConsumerError::Failed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `describe()` help of 20 KiB holding a secret reaches `/metrics` cut once — one
    /// `… (N bytes cut)`, N counting from what the plugin wrote — and scrubbed.
    #[test]
    fn describe_help_is_admitted_once() {
        let help = format!("seen by password=hunter2 {}", "more words ".repeat(2000));
        let specs = vec![wit::MetricSpec {
            name: "seen_total".into(),
            help: help.clone(),
            kind: wit::MetricKind::Counter,
            labels: vec![],
            buckets: vec![],
        }];
        let set = PluginMetricSet::new(
            "wordy",
            &decls_of(specs),
            10,
            crate::budget::Budget::default().label_caps(),
            RejectionCounters::unread().unwrap(),
        )
        .unwrap();
        set.update("seen_total", &[], 1.0).unwrap();
        let shown = set.gather()[0].help().to_string();
        assert_eq!(shown.matches("bytes cut").count(), 1, "{shown}");
        assert_eq!(shown, admit(&help));
        assert!(!shown.contains("hunter2"), "{shown}");
    }
}
