//! Plugins that receive sanitized events: the `consumer` and `metrics` worlds. Each runs as
//! one bus consumer with its own bounded queue and task, so its slowness or failure touches
//! nobody else (it fails *open* for the rest of the host). The bus consumer stays registered
//! across swaps; only the plugin version behind it changes, so no batch is lost or handled
//! twice by a swap.

use std::sync::Arc;
use std::time::Instant;

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
    LabelCaps, MetricDecl, MetricKind, PluginMetricSet, RejectionCounters,
};
use crate::error::{Error, Result};
use crate::manifest::{Manifest, World};
use crate::plugin_text::admit;
use crate::runtime::{
    Limits, PluginState, Runtime, arm, describe_trap, forward_stderr, replaced_too_late,
};

enum Bindings {
    Consumer(ConsumerBindings),
    Metrics(MetricsBindings),
}

enum Pre {
    Consumer(ConsumerPre<PluginState>),
    Metrics(MetricsPre<PluginState>),
}

struct Live {
    store: Store<PluginState>,
    bindings: Bindings,
}

/// A loaded `consumer` or `metrics` plugin.
pub struct Runner {
    name: Arc<str>,
    world: World,
    runtime: Runtime,
    pre: Pre,
    config: Vec<(String, String)>,
    limits: Limits,
    metrics: Option<Arc<PluginMetricSet>>,
    breaker: Breaker,
    live: Mutex<Option<Live>>,
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
        let pre = match world {
            World::Consumer => {
                Pre::Consumer(runtime.link(name, world, &component, ConsumerPre::new)?)
            }
            World::Metrics => {
                Pre::Metrics(runtime.link(name, world, &component, MetricsPre::new)?)
            }
            World::Sanitizer => {
                return Err(Error::WrongWorld {
                    plugin: name.into(),
                    world: "consumer or metrics".into(),
                    reason: "sanitizers run in the pipeline, not as consumers".into(),
                });
            }
        };
        let mut runner = Runner {
            name: name.into(),
            world,
            runtime: runtime.clone(),
            pre,
            config: manifest.init_config(),
            limits: manifest.limits,
            metrics: None,
            breaker: Breaker::new(manifest.quarantine),
            live: Mutex::new(None),
            scratch: Mutex::default(),
        };
        let decls = match world {
            World::Metrics => runner.describe()?,
            _ => manifest.metrics.clone(),
        };
        if !decls.is_empty() {
            let caps = LabelCaps::from(&runtime.budget());
            let set = match reuse {
                Some(old) if old.fits(&decls, caps) => old,
                _ => Arc::new(PluginMetricSet::new(
                    name,
                    &decls,
                    manifest.limits.max_series_per_metric as usize,
                    caps,
                    rejections.clone(),
                )?),
            };
            runner.metrics = Some(set);
        }
        let live = runner.instantiate(None)?;
        *runner.live.lock() = Some(live);
        Ok(runner)
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

    fn trap(&self, store: &Store<PluginState>, function: &str, e: &wasmtime::Error) -> Error {
        Error::Trap {
            plugin: self.name.to_string(),
            reason: describe_trap(store, &self.limits, function, e).1,
        }
    }

    /// Calls `describe()` on a throwaway instance (before the metric set exists).
    fn describe(&self) -> Result<Vec<MetricDecl>> {
        let Pre::Metrics(pre) = &self.pre else {
            return Ok(Vec::new());
        };
        let deadline = self.limits.deadline();
        let mut store = self
            .runtime
            .new_store(&self.name, &self.limits, None, deadline);
        let bindings = pre
            .instantiate(&mut store)
            .map_err(|e| self.trap(&store, "instantiate", &e))?;
        arm(&mut store, deadline);
        let specs = bindings
            .call_describe(&mut store)
            .map_err(|e| self.trap(&store, "describe", &e))?;
        Ok(specs
            .into_iter()
            .map(|s| MetricDecl {
                name: s.name,
                // Shown on `/metrics`, which anyone may read: cut and scrubbed.
                help: admit(&s.help),
                kind: match s.kind {
                    wit::MetricKind::Counter => MetricKind::Counter,
                    wit::MetricKind::Gauge => MetricKind::Gauge,
                    wit::MetricKind::Histogram => MetricKind::Histogram,
                },
                labels: s.labels,
                buckets: s.buckets,
            })
            .collect())
    }

    /// A fresh instance with `init` run. Made for a call, both share that call's deadline
    /// (`call_deadline`); at load each has its own `call_timeout_ms`.
    fn instantiate(&self, call_deadline: Option<Instant>) -> Result<Live> {
        let deadline = || call_deadline.unwrap_or_else(|| self.limits.deadline());
        let mut store =
            self.runtime
                .new_store(&self.name, &self.limits, self.metrics.clone(), deadline());
        let init = |store: &mut Store<PluginState>, bindings: &Bindings| match bindings {
            Bindings::Consumer(b) => b.call_init(store, &self.config),
            Bindings::Metrics(b) => b.call_init(store, &self.config),
        };
        let bindings = match &self.pre {
            Pre::Consumer(pre) => pre.instantiate(&mut store).map(Bindings::Consumer),
            Pre::Metrics(pre) => pre.instantiate(&mut store).map(Bindings::Metrics),
        }
        .map_err(|e| self.trap(&store, "instantiate", &e))?;
        arm(&mut store, deadline());
        match init(&mut store, &bindings) {
            Ok(Ok(())) => Ok(Live { store, bindings }),
            Ok(Err(reason)) => Err(Error::Init {
                plugin: self.name.to_string(),
                reason: admit(&reason),
            }),
            Err(e) => Err(self.trap(&store, "init", &e)),
        }
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
        let mut guard = self.live.lock();
        let started = Instant::now();
        let deadline = started + self.limits.timeout();
        if guard.is_none() {
            *guard = Some(
                self.instantiate(Some(deadline))
                    .map_err(|e| e.to_string())?,
            );
            if Instant::now() >= deadline {
                // Nothing left for the call: the fresh instance stays warm for the next batch.
                metrics.record(&self.name, function, started, "timeout");
                return Err(replaced_too_late(function, &self.limits));
            }
        }
        let live = guard.as_mut().expect("instantiated above");
        arm(&mut live.store, deadline);
        let mut scratch = self.scratch.lock();
        let view = scratch.fill(batch)?;
        let result = match &live.bindings {
            Bindings::Consumer(b) => b.call_handle(&mut live.store, view),
            Bindings::Metrics(b) => b.call_observe(&mut live.store, view).map(Ok),
        };
        forward_stderr(&mut live.store);
        match result {
            Ok(Ok(())) => {
                metrics.record(&self.name, function, started, "ok");
                Ok(())
            }
            Ok(Err(reason)) => {
                metrics.record(&self.name, function, started, "error");
                // It reaches the log, the breaker's status and the API: cut and scrubbed.
                Err(admit(&format!("in `{function}`: {reason}")))
            }
            Err(e) => {
                let (outcome, reason) = describe_trap(&live.store, &self.limits, function, &e);
                metrics.record(&self.name, function, started, outcome);
                *guard = None;
                Err(reason)
            }
        }
    }
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
