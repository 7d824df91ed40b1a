//! Custom metrics that plugins update through the host's `update-metric` import.
//!
//! A plugin may update only what it declared — in its manifest (`[[metrics]]`) or, for the
//! `metrics` world, through `describe()`. Each metric is exposed as
//! `lookout_plugin_<plugin>_<name>` with exactly the declared label names; each has a series
//! cap (its cardinality budget): updates that would create a series past it are refused and
//! counted. Undeclared names, wrong label counts, negative counter adds, non-finite values,
//! label values longer than `plugins.budget.max_label_value_bytes` and new series past the
//! plugin's `plugins.budget.max_label_bytes_per_plugin` ([`LabelCaps`]) are refused with a
//! reason the plugin gets back, and counted by reason: a plugin cannot make `/metrics` big,
//! only as wide as its budget.
//!
//! The names a set exposes ([`PluginMetricSet::exposed_names`]) are checked against lookout's
//! own metrics and other plugins' by the registry before a plugin goes live.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::Mutex;
use prometheus::core::Collector;
use prometheus::proto::MetricFamily;
use prometheus::{
    CounterVec, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry,
};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Most metrics one plugin may declare.
pub const MAX_METRICS_PER_PLUGIN: usize = 32;
/// Most labels one metric may have.
pub const MAX_LABELS: usize = 8;
/// Longest metric or label name, in bytes.
const MAX_NAME_LEN: usize = 64;

/// What the host's budget allows a plugin's label values (`Budget::label_caps`), as it was
/// when its metric set was made (a budget change reaches a plugin at its next push).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LabelCaps {
    /// Longest label value, in bytes (`plugins.budget.max_label_value_bytes`).
    pub value_bytes: usize,
    /// Most bytes of label values its series may hold together, over all its metrics and
    /// versions (`plugins.budget.max_label_bytes_per_plugin`): with the series cap, what
    /// bounds the size of its part of `/metrics`.
    pub bytes_per_plugin: usize,
}

/// Counter, gauge or histogram.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MetricKind {
    Counter,
    Gauge,
    Histogram,
}

/// A metric a plugin may update.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricDecl {
    /// `[a-z_][a-z0-9_]*`; exposed as `lookout_plugin_<plugin>_<name>`.
    pub name: String,
    pub help: String,
    pub kind: MetricKind,
    #[serde(default)]
    pub labels: Vec<String>,
    /// Histogram bucket bounds, increasing; empty means Prometheus' defaults.
    #[serde(default)]
    pub buckets: Vec<f64>,
}

enum Handle {
    Counter(CounterVec),
    Gauge(GaugeVec),
    Histogram(HistogramVec),
}

struct Declared {
    /// `lookout_plugin_<plugin>_<name>`.
    full: String,
    kind: MetricKind,
    labels: usize,
    /// Where its values go; none in a staging copy, which only checks updates.
    handle: Option<Handle>,
    series: Mutex<HashSet<Vec<String>>>,
}

/// Counters of refused updates, shared by all plugins (registered once in the host registry).
#[derive(Clone, Debug)]
pub(crate) struct RejectionCounters {
    rejected: IntCounterVec,
}

impl RejectionCounters {
    pub(crate) fn new(registry: &Registry) -> Result<Self> {
        let rejected = IntCounterVec::new(
            Opts::new(
                "lookout_plugin_metric_rejections_total",
                "Custom-metric updates refused, by plugin and reason (undeclared, labels, value, series_cap, label_length, label_bytes).",
            ),
            &["plugin", "reason"],
        )
        .map_err(|e| Error::Runtime(e.to_string()))?;
        registry
            .register(Box::new(rejected.clone()))
            .map_err(|e| Error::Runtime(e.to_string()))?;
        Ok(RejectionCounters { rejected })
    }

    /// The `lookout_plugin_metric_rejections_total` family.
    pub(crate) fn family(&self) -> &IntCounterVec {
        &self.rejected
    }

    /// Counters nobody reads, for updates that may never count (a push not yet installed).
    pub(crate) fn unread() -> Result<Self> {
        Self::new(&Registry::new())
    }
}

/// The custom metrics of one plugin, in a registry of their own (so two versions of a plugin
/// can be checked side by side, and a removed plugin's metrics simply stop being gathered).
pub struct PluginMetricSet {
    plugin: String,
    decls: Vec<MetricDecl>,
    metrics: HashMap<String, Declared>,
    registry: Registry,
    max_series: usize,
    caps: LabelCaps,
    /// Bytes of label values held by its series, against `caps.bytes_per_plugin`.
    label_bytes: AtomicUsize,
    rejections: RejectionCounters,
}

impl std::fmt::Debug for PluginMetricSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginMetricSet")
            .field("plugin", &self.plugin)
            .field("decls", &self.decls)
            .finish_non_exhaustive()
    }
}

fn valid_ident(s: &str) -> bool {
    let mut bytes = s.bytes();
    matches!(bytes.next(), Some(b'a'..=b'z' | b'_'))
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

impl PluginMetricSet {
    /// Checks the declarations and creates the metrics; the error names the metric at fault.
    pub(crate) fn new(
        plugin: &str,
        decls: &[MetricDecl],
        max_series: usize,
        caps: LabelCaps,
        rejections: RejectionCounters,
    ) -> Result<Self> {
        // A declared name is plugin text: cut and scrubbed before it is quoted anywhere.
        let bad = |metric: &str, reason: String| Error::Manifest {
            plugin: plugin.to_string(),
            reason: crate::plugin_text::admit(&format!(
                "metric `{}`: {reason}",
                crate::plugin_text::cut_to(metric, MAX_NAME_LEN * 2)
            )),
        };
        if decls.len() > MAX_METRICS_PER_PLUGIN {
            return Err(Error::Manifest {
                plugin: plugin.into(),
                reason: format!("declares more than {MAX_METRICS_PER_PLUGIN} metrics"),
            });
        }
        let registry = Registry::new();
        let mut metrics = HashMap::new();
        let prefix = format!("lookout_plugin_{}_", plugin.replace('-', "_"));
        for decl in decls {
            if !valid_ident(&decl.name) || decl.name.len() > MAX_NAME_LEN {
                return Err(bad(
                    &decl.name,
                    "names are [a-z_][a-z0-9_]*, at most 64 characters".into(),
                ));
            }
            if metrics.contains_key(&decl.name) {
                return Err(bad(&decl.name, "declared twice".into()));
            }
            if decl.labels.len() > MAX_LABELS {
                return Err(bad(&decl.name, format!("more than {MAX_LABELS} labels")));
            }
            let mut seen = HashSet::new();
            for label in &decl.labels {
                if !valid_ident(label)
                    || label.len() > MAX_NAME_LEN
                    || label.starts_with("__")
                    || !seen.insert(label)
                {
                    let shown = crate::plugin_text::cut_to(label, MAX_NAME_LEN);
                    return Err(bad(
                        &decl.name,
                        format!(
                            "label `{shown}` is not a valid, unique label name \
                             ([a-z_][a-z0-9_]*, at most {MAX_NAME_LEN} characters)"
                        ),
                    ));
                }
            }
            if decl.kind != MetricKind::Histogram && !decl.buckets.is_empty() {
                return Err(bad(&decl.name, "only histograms have buckets".into()));
            }
            if decl.buckets.windows(2).any(|w| w[0] >= w[1])
                || decl.buckets.iter().any(|b| !b.is_finite())
            {
                return Err(bad(
                    &decl.name,
                    "buckets must be finite and strictly increasing".into(),
                ));
            }
            let full = format!("{prefix}{}", decl.name);
            let labels: Vec<&str> = decl.labels.iter().map(String::as_str).collect();
            // Shown on `/metrics`: cut and scrubbed like anything else a plugin says.
            let help = if decl.help.trim().is_empty() {
                format!("{} (plugin {plugin})", decl.name)
            } else {
                crate::plugin_text::admit(&decl.help)
            };
            let prom = |e: prometheus::Error| bad(&decl.name, e.to_string());
            let (handle, collector): (Handle, Box<dyn Collector>) = match decl.kind {
                MetricKind::Counter => {
                    let c = CounterVec::new(Opts::new(&full, &help), &labels).map_err(prom)?;
                    (Handle::Counter(c.clone()), Box::new(c))
                }
                MetricKind::Gauge => {
                    let g = GaugeVec::new(Opts::new(&full, &help), &labels).map_err(prom)?;
                    (Handle::Gauge(g.clone()), Box::new(g))
                }
                MetricKind::Histogram => {
                    let mut opts = HistogramOpts::new(&full, &help);
                    if !decl.buckets.is_empty() {
                        opts = opts.buckets(decl.buckets.clone());
                    }
                    let h = HistogramVec::new(opts, &labels).map_err(prom)?;
                    (Handle::Histogram(h.clone()), Box::new(h))
                }
            };
            registry.register(collector).map_err(prom)?;
            metrics.insert(
                decl.name.clone(),
                Declared {
                    full,
                    kind: decl.kind,
                    labels: labels.len(),
                    handle: Some(handle),
                    series: Mutex::new(HashSet::new()),
                },
            );
        }
        Ok(PluginMetricSet {
            plugin: plugin.into(),
            decls: decls.to_vec(),
            metrics,
            registry,
            max_series,
            caps,
            label_bytes: AtomicUsize::new(0),
            rejections,
        })
    }

    /// Every name its metrics put on `/metrics`: each family's, and a histogram's
    /// `_bucket`, `_sum` and `_count` series. Two sets whose names meet would break the
    /// exposition (two HELP lines, or a series in the wrong family).
    pub(crate) fn exposed_names(&self) -> BTreeSet<String> {
        let mut names = BTreeSet::new();
        for metric in self.metrics.values() {
            names.insert(metric.full.clone());
            if metric.kind == MetricKind::Histogram {
                for suffix in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{}{suffix}", metric.full));
                }
            }
        }
        names
    }

    /// The first name in `taken` — the names lookout's own metrics put on `/metrics` — that
    /// one of this set's names would collide with, if any. A name ending in `_bucket`, `_sum`
    /// or `_count` also checks its stem (a histogram of that name exposes it). Reads names
    /// only: nothing is registered anywhere, so a scrape meanwhile sees nothing of it.
    pub(crate) fn collision_with(&self, taken: &BTreeSet<String>) -> Option<String> {
        let mut names = BTreeSet::new();
        for name in self.exposed_names() {
            for suffix in ["_bucket", "_sum", "_count"] {
                if let Some(stem) = name.strip_suffix(suffix) {
                    names.insert(stem.to_string());
                }
            }
            names.insert(name);
        }
        names.into_iter().find(|name| taken.contains(name))
    }

    /// A copy that checks updates as this set would now — the same declarations, caps,
    /// series and label bytes — and keeps no values, counting refusals where nobody reads.
    fn checking_copy(&self) -> Result<PluginMetricSet> {
        let metrics = self
            .metrics
            .iter()
            .map(|(name, metric)| {
                let copy = Declared {
                    full: metric.full.clone(),
                    kind: metric.kind,
                    labels: metric.labels,
                    handle: None,
                    series: Mutex::new(metric.series.lock().clone()),
                };
                (name.clone(), copy)
            })
            .collect();
        Ok(PluginMetricSet {
            plugin: self.plugin.clone(),
            decls: self.decls.clone(),
            metrics,
            registry: Registry::new(),
            max_series: self.max_series,
            caps: self.caps,
            label_bytes: AtomicUsize::new(self.label_bytes.load(Ordering::Acquire)),
            rejections: RejectionCounters::unread()?,
        })
    }

    /// The declarations this set was built from.
    pub fn decls(&self) -> &[MetricDecl] {
        &self.decls
    }

    /// Whether a new version declaring `decls` under `caps` may take this set over (and its
    /// values with it): the same metrics, held to the same label caps.
    pub(crate) fn fits(&self, decls: &[MetricDecl], caps: LabelCaps) -> bool {
        self.decls == decls && self.caps == caps
    }

    /// Applies one update from the plugin, or says why not (and counts the refusal).
    pub(crate) fn update(
        &self,
        name: &str,
        label_values: &[String],
        value: f64,
    ) -> std::result::Result<(), String> {
        self.apply(name, label_values, value)
            .map_err(|(reason, message)| {
                self.count_rejection(reason);
                message
            })
    }

    /// Counts one refused update under this plugin, by reason.
    fn count_rejection(&self, reason: &str) {
        self.count_rejections(reason, 1);
    }

    fn count_rejections(&self, reason: &str, n: u64) {
        self.rejections
            .rejected
            .with_label_values(&[&self.plugin, reason])
            .inc_by(n);
    }

    /// Applies one update, or says why not: the reason label and the message for the plugin.
    fn apply(
        &self,
        name: &str,
        label_values: &[String],
        value: f64,
    ) -> std::result::Result<(), (&'static str, String)> {
        let reject = |reason: &'static str, message: String| Err((reason, message));
        let Some(metric) = self.metrics.get(name) else {
            return reject(
                "undeclared",
                format!("metric `{name}` was not declared by this plugin"),
            );
        };
        if label_values.len() != metric.labels {
            return reject(
                "labels",
                format!(
                    "metric `{name}` takes {} label values, got {}",
                    metric.labels,
                    label_values.len()
                ),
            );
        }
        if !value.is_finite() {
            return reject(
                "value",
                format!("metric `{name}`: {value} is not a finite number"),
            );
        }
        if metric.kind == MetricKind::Counter && value < 0.0 {
            return reject(
                "value",
                format!("counter `{name}` cannot go down (add {value})"),
            );
        }
        let caps = self.caps;
        if let Some((i, long)) = label_values
            .iter()
            .enumerate()
            .find(|(_, v)| v.len() > caps.value_bytes)
        {
            return reject(
                "label_length",
                format!(
                    "metric `{name}`: label value {i} is {} bytes, over the limit of {} bytes \
                     a label value (plugins.budget.max_label_value_bytes)",
                    long.len(),
                    caps.value_bytes
                ),
            );
        }
        {
            let mut series = metric.series.lock();
            if !series.contains(label_values) {
                if series.len() >= self.max_series {
                    return reject(
                        "series_cap",
                        format!(
                            "metric `{name}` is at its cap of {} series",
                            self.max_series
                        ),
                    );
                }
                let bytes: usize = label_values.iter().map(String::len).sum();
                let budget =
                    self.label_bytes
                        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                            (held + bytes <= caps.bytes_per_plugin).then_some(held + bytes)
                        });
                if let Err(held) = budget {
                    return reject(
                        "label_bytes",
                        format!(
                            "metric `{name}`: a new series of {bytes} label bytes would pass \
                             this plugin's limit of {} label bytes over all its series ({held} \
                             held; plugins.budget.max_label_bytes_per_plugin)",
                            caps.bytes_per_plugin
                        ),
                    );
                }
                series.insert(label_values.to_vec());
            }
        }
        let labels: Vec<&str> = label_values.iter().map(String::as_str).collect();
        match &metric.handle {
            Some(Handle::Counter(c)) => c.with_label_values(&labels).inc_by(value),
            Some(Handle::Gauge(g)) => g.with_label_values(&labels).set(value),
            Some(Handle::Histogram(h)) => h.with_label_values(&labels).observe(value),
            None => {}
        }
        Ok(())
    }

    /// The current values, for `/metrics`.
    pub fn gather(&self) -> Vec<MetricFamily> {
        self.registry.gather()
    }
}

/// The names `collectors` put on `/metrics` (a histogram's stem; its series' suffixes are
/// derived from it where names are compared).
pub(crate) fn family_names(collectors: &[&dyn Collector]) -> BTreeSet<String> {
    collectors
        .iter()
        .flat_map(|c| c.desc())
        .map(|d| d.fq_name.clone())
        .collect()
}

/// Where a plugin instance's `update-metric` calls go.
#[derive(Clone, Debug)]
pub(crate) enum MetricSink {
    /// The plugin's metric set: what `/metrics` shows once the plugin is installed.
    Set(Arc<PluginMetricSet>),
    /// A push not yet installed (its `init` at load): updates are checked against a copy of
    /// the set and held, to be replayed into the set when the push is installed
    /// ([`Staged::replay_into`]) — or dropped with it, so a refused push leaves no books.
    Staged(Arc<Staged>),
}

impl MetricSink {
    pub(crate) fn update(
        &self,
        name: &str,
        label_values: &[String],
        value: f64,
    ) -> std::result::Result<(), String> {
        match self {
            MetricSink::Set(set) => set.update(name, label_values, value),
            MetricSink::Staged(staged) => staged.update(name, label_values, value),
        }
    }
}

/// What a plugin did to its metrics before its push was certain, held until it is.
#[derive(Debug)]
pub(crate) struct Staged {
    /// The set's declarations, caps and series, keeping no values and counting refusals in
    /// books nobody reads: what is accepted here is what the set would accept.
    copy: PluginMetricSet,
    held: Mutex<Vec<Held>>,
}

/// Most updates held for one push. Each held update is host memory outside the plugin's
/// cap, and an `init` may call `update-metric` in a loop until its deadline: past this, an
/// update is refused (`init_updates`) and only counted. An `init` records a starting value
/// or a few, not thousands.
pub const MAX_STAGED_UPDATES: usize = 10_000;

#[derive(Debug)]
enum Held {
    Update {
        name: String,
        label_values: Vec<String>,
        value: f64,
    },
    Refused(&'static str),
    /// Updates refused past [`MAX_STAGED_UPDATES`], counted together.
    Overflow(u64),
}

impl Staged {
    /// Stages updates meant for `set`.
    pub(crate) fn of(set: &PluginMetricSet) -> Result<Staged> {
        Ok(Staged {
            copy: set.checking_copy()?,
            held: Mutex::default(),
        })
    }

    fn update(
        &self,
        name: &str,
        label_values: &[String],
        value: f64,
    ) -> std::result::Result<(), String> {
        let mut held = self.held.lock();
        if held.len() >= MAX_STAGED_UPDATES {
            // One record for every refusal past the cap would be the growth the cap stops.
            match held.last_mut() {
                Some(Held::Overflow(n)) => *n += 1,
                _ => held.push(Held::Overflow(1)),
            }
            return Err(format!(
                "more than {MAX_STAGED_UPDATES} metric updates before the plugin is installed \
                 (in `init`): refused"
            ));
        }
        let outcome = self.copy.apply(name, label_values, value);
        held.push(match &outcome {
            Ok(()) => Held::Update {
                name: name.to_string(),
                label_values: label_values.to_vec(),
                value,
            },
            Err((reason, _)) => Held::Refused(reason),
        });
        outcome.map_err(|(_, message)| message)
    }

    /// The push is installed: what was held happens to `set`, in order — the updates
    /// applied (one the set now refuses is counted so), the refusals counted.
    pub(crate) fn replay_into(&self, set: &PluginMetricSet) {
        for held in self.held.lock().drain(..) {
            match held {
                Held::Update {
                    name,
                    label_values,
                    value,
                } => {
                    let _ = set.update(&name, &label_values, value);
                }
                Held::Refused(reason) => set.count_rejection(reason),
                Held::Overflow(n) => set.count_rejections("init_updates", n),
            }
        }
    }
}
