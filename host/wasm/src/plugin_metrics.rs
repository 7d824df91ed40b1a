//! lookout's own metrics of plugin calls — calls by outcome, their duration, events handed
//! in, quarantines, redactions — and what the API shows of them ([`PluginCounters`]). Kept
//! by plugin name over all its versions; a push not yet installed counts in books nobody
//! reads ([`PluginMetrics::unread`]).

use std::collections::BTreeSet;

use prometheus::core::Collector;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};
use serde::Serialize;

use crate::custom_metrics::family_names;
use crate::error::{Error, Result};
use crate::redactions::Redactions;

/// What a plugin has done so far, summed over its versions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct PluginCounters {
    pub calls: u64,
    /// Calls that trapped, timed out, ran out of memory, returned an error or answered with a
    /// verdict the host refused.
    pub failures: u64,
    pub events_in: u64,
    /// Time spent in the plugin's calls.
    pub busy_seconds: f64,
    /// `busy_seconds` per event handed to it, in nanoseconds.
    pub ns_per_event: Option<f64>,
}

/// Per-plugin call metrics.
#[derive(Clone, Debug)]
pub(crate) struct PluginMetrics {
    pub calls: IntCounterVec,
    pub duration: HistogramVec,
    pub events_in: IntCounterVec,
    pub quarantined: IntGaugeVec,
    pub quarantines: IntCounterVec,
    /// Sanitizers' redactions by rule (`lookout_redactions_total`).
    pub redactions: Redactions,
}

impl PluginMetrics {
    /// Books that nobody reads, for the calls a push makes before it is installed (a
    /// sanitizer's fixtures): a refused push then leaves nothing counted under its name.
    pub(crate) fn unread() -> Result<Self> {
        Self::new(&Registry::new())
    }

    /// The names these metrics put on `/metrics`: lookout's own, which no plugin may take.
    pub(crate) fn names(&self) -> BTreeSet<String> {
        family_names(&[
            &self.calls,
            &self.duration,
            &self.events_in,
            &self.quarantined,
            &self.quarantines,
            self.redactions.family(),
        ])
    }

    /// Time in every plugin's calls since the host started, read from the handle.
    pub(crate) fn call_seconds(&self) -> f64 {
        self.duration
            .collect()
            .iter()
            .flat_map(|f| f.get_metric())
            .map(|m| m.get_histogram().get_sample_sum())
            .sum()
    }

    /// What a plugin has done so far (all its versions): for the API and the dashboard.
    pub(crate) fn counters(&self, plugin: &str) -> PluginCounters {
        let mut counters = PluginCounters::default();
        for function in ["sanitize", "handle", "observe"] {
            for outcome in ["ok", "error", "refused", "trap", "timeout", "out_of_memory"] {
                let n = self
                    .calls
                    .get_metric_with_label_values(&[plugin, function, outcome])
                    .map(|c| c.get())
                    .unwrap_or(0);
                counters.calls += n;
                if outcome != "ok" {
                    counters.failures += n;
                }
            }
            if let Ok(h) = self
                .duration
                .get_metric_with_label_values(&[plugin, function])
            {
                counters.busy_seconds += h.get_sample_sum();
            }
        }
        counters.events_in = self
            .events_in
            .get_metric_with_label_values(&[plugin])
            .map(|c| c.get())
            .unwrap_or(0);
        counters.ns_per_event = (counters.events_in > 0)
            .then(|| counters.busy_seconds * 1e9 / counters.events_in as f64);
        counters
    }

    /// One finished call: its duration and its outcome (`ok`, `error`, `trap`, `timeout`, …).
    pub(crate) fn record(
        &self,
        plugin: &str,
        function: &str,
        started: std::time::Instant,
        outcome: &str,
    ) {
        self.duration
            .with_label_values(&[plugin, function])
            .observe(started.elapsed().as_secs_f64());
        self.calls
            .with_label_values(&[plugin, function, outcome])
            .inc();
    }

    pub(crate) fn new(registry: &Registry) -> Result<Self> {
        let err = |e: prometheus::Error| Error::Runtime(format!("plugin metrics: {e}"));
        let calls = IntCounterVec::new(
            Opts::new("lookout_plugin_calls_total", "Calls into WASM plugins by plugin, function and outcome (ok, error, refused, trap, timeout, out_of_memory)."),
            &["plugin", "function", "outcome"],
        )
        .map_err(err)?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "lookout_plugin_call_duration_seconds",
                "Time spent in each call into a WASM plugin.",
            )
            .buckets(vec![
                1e-5, 5e-5, 1e-4, 5e-4, 1e-3, 5e-3, 0.01, 0.05, 0.1, 0.5, 1.0,
            ]),
            &["plugin", "function"],
        )
        .map_err(err)?;
        let events_in = IntCounterVec::new(
            Opts::new(
                "lookout_plugin_events_in_total",
                "Events handed to each plugin.",
            ),
            &["plugin"],
        )
        .map_err(err)?;
        let quarantined = IntGaugeVec::new(
            Opts::new(
                "lookout_plugin_quarantined",
                "1 while a plugin is quarantined after repeated failures.",
            ),
            &["plugin"],
        )
        .map_err(err)?;
        let quarantines = IntCounterVec::new(
            Opts::new(
                "lookout_plugin_quarantines_total",
                "Times each plugin was quarantined.",
            ),
            &["plugin"],
        )
        .map_err(err)?;
        registry.register(Box::new(calls.clone())).map_err(err)?;
        registry.register(Box::new(duration.clone())).map_err(err)?;
        registry
            .register(Box::new(events_in.clone()))
            .map_err(err)?;
        registry
            .register(Box::new(quarantined.clone()))
            .map_err(err)?;
        registry
            .register(Box::new(quarantines.clone()))
            .map_err(err)?;
        Ok(PluginMetrics {
            calls,
            duration,
            events_in,
            quarantined,
            quarantines,
            redactions: Redactions::new(registry)?,
        })
    }
}
