//! The JSON lookout's HTTP API answers with, as types both sides share: the host
//! (`lookout-server`) builds them and serializes them, the dashboard (`dashboard/model`)
//! deserializes the same ones. It owns the names and shapes on the wire; it must never learn
//! how the numbers are computed (that is the host's) or how they are shown (the dashboard's).
//!
//! serde only, so it builds for `wasm32-unknown-unknown` as well as natively. Reading is
//! lenient: unknown fields are ignored and every field is `#[serde(default)]`, so a field a
//! newer host adds does not break an older page, and one it drops becomes a default.
//!
//! Every deserialized field costs the dashboard's wasm, which has a budget (150 KB gzipped,
//! `host/lookout/tests/e2e/dashboard.rs`). So the defaults are per field, not per struct
//! (serde then builds only a missing field's default, not the whole struct's: ~10 KB less
//! code), and fields marked *written only* are serialized by the host but skipped when read —
//! no reader uses them. To show one on the page, drop its `skip_deserializing` and check the
//! budget.
//!
//! Two things are the sides' own, as type parameters: `V`, the JSON value a health check
//! measures (a ratio, a count, a state), and `E`, an event in its JSON form (the host's
//! `lookout_core::Event`, the dashboard's lenient view of it).
//!
//! | type | where it is on the wire |
//! |---|---|
//! | [`Overview`] | `GET /api/v1/overview`, each message of `GET /api/v1/overview/stream` |
//! | [`HealthReport`], [`Check`] | the overview's `health`; `/health/detailed`'s `checks`, `/health/ready`'s `failing` |
//! | [`ErrorGroup`] | the overview's `errors` |
//! | [`CheckStatus`], [`HealthStatus`], [`Rule`] | the health words, in [`status`](crate::status) |

mod status;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use status::{CheckStatus, HealthStatus, Rule};

/// The dashboard's picture of the host: what `GET /api/v1/overview` answers.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(bound(deserialize = "V: Deserialize<'de> + Default, E: Deserialize<'de> + Default"))]
pub struct Overview<V, E> {
    #[serde(default)]
    pub host: Host,
    #[serde(default)]
    pub health: HealthReport<V>,
    #[serde(default)]
    pub bus: BusTotals,
    #[serde(default)]
    pub pools: Vec<PoolEntry>,
    #[serde(default)]
    pub plugins: Vec<Plugin>,
    /// The latest plugin swaps, most recent first (at most 20).
    #[serde(default)]
    pub swaps: Vec<Swap>,
    /// Recent errors grouped by host, pool, command and error kind; seen most recently first.
    #[serde(default)]
    pub errors: Vec<ErrorGroup<E>>,
    /// The NATS link, when it is on. Written only.
    #[serde(skip_deserializing)]
    pub nats: Option<NatsLink>,
}

/// The host process itself.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Host {
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub uptime_s: f64,
    /// The host process's resident memory (its workers not included).
    #[serde(default)]
    pub memory_bytes: f64,
    /// The host and its live workers.
    #[serde(default)]
    pub processes: u64,
    /// Live workers (with a process), over all pools.
    #[serde(default)]
    pub workers: u64,
}

/// Every health check, with hysteresis applied, and what they add up to.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(bound(deserialize = "V: Deserialize<'de> + Default"))]
pub struct HealthReport<V> {
    #[serde(default)]
    pub ready: bool,
    #[serde(default)]
    pub status: HealthStatus,
    #[serde(default)]
    pub checks: Vec<Check<V>>,
}

impl<V> HealthReport<V> {
    /// The checks that are not ok.
    pub fn failing(&self) -> impl Iterator<Item = &Check<V>> {
        self.checks.iter().filter(|c| c.status != CheckStatus::Ok)
    }
}

/// One health check.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(bound(deserialize = "V: Deserialize<'de> + Default"))]
pub struct Check<V> {
    #[serde(default)]
    pub name: String,
    /// Effective, after hysteresis.
    #[serde(default)]
    pub status: CheckStatus,
    #[serde(default)]
    pub value: V,
    #[serde(default)]
    pub threshold: V,
    /// What `value` must be against `threshold`.
    #[serde(default)]
    pub rule: Rule,
    /// False for checks that only degrade the host (a quarantined consumer).
    #[serde(default)]
    pub affects_readiness: bool,
    /// Seconds in the current effective status. Written only.
    #[serde(skip_deserializing)]
    pub for_s: f64,
    /// Set while the raw state differs from the effective one (it will flip after the hold).
    /// Written only.
    #[serde(skip_deserializing)]
    pub pending: Option<CheckStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[serde(default)]
    pub detail: Option<String>,
}

/// The bus's totals since the host started.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BusTotals {
    #[serde(default)]
    pub published: f64,
    #[serde(default)]
    pub accepted: f64,
    #[serde(default)]
    pub dropped: f64,
    #[serde(default)]
    pub sampled_out: f64,
    #[serde(default)]
    pub rate_limited: f64,
    #[serde(default)]
    pub sanitizer_failures: f64,
}

/// A pool with its recent window.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PoolEntry {
    #[serde(default)]
    pub pool: Pool,
    #[serde(default)]
    pub window: Window,
    /// How far back `window` looks, in seconds (the pool's `health.window_s`).
    #[serde(default)]
    pub window_s: u64,
}

/// A worker pool now (its configuration left out).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Pool {
    #[serde(default)]
    pub name: String,
    /// `ok` (every slot has a live worker), `degraded`, `unavailable` (none), `stopping`.
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub size: u64,
    /// Written only.
    #[serde(skip_deserializing)]
    pub uptime_s: f64,
    #[serde(default)]
    pub workers: Vec<Worker>,
    #[serde(default)]
    pub queue_length: u64,
    #[serde(default)]
    pub queue_limit: u64,
    #[serde(default)]
    pub sessions: u64,
    #[serde(default)]
    pub saturated: bool,
    /// Requests answered since the pool started (refusals and failures included).
    #[serde(default)]
    pub requests_total: u64,
    /// Of those, failed.
    #[serde(default)]
    pub failed_total: u64,
}

/// One worker slot.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Worker {
    #[serde(default)]
    pub slot: u64,
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub pid: Option<u64>,
    /// `starting`, `available`, `busy`, `stopping` or `down`.
    #[serde(default)]
    pub state: String,
    #[serde(default)]
    pub uptime_s: Option<f64>,
    #[serde(default)]
    pub requests_served: u64,
    #[serde(default)]
    pub memory_bytes: Option<u64>,
    #[serde(default)]
    pub last_error: Option<String>,
}

/// A pool's requests over its recent window.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Window {
    #[serde(default)]
    pub requests: u64,
    #[serde(default)]
    pub failed: u64,
    /// Median time to an answer, when there were requests.
    #[serde(default)]
    pub p50_ms: Option<f64>,
    /// 95th percentile of the time to an answer, when there were requests.
    #[serde(default)]
    pub p95_ms: Option<f64>,
}

/// A running plugin.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Plugin {
    #[serde(default)]
    pub name: String,
    /// `sanitizer`, `consumer` or `metrics`.
    #[serde(default)]
    pub world: String,
    /// The host's load number for this version (1, 2, …), not the author's version.
    #[serde(default)]
    pub version: u64,
    #[serde(default)]
    pub author_version: String,
    /// Written only.
    #[serde(skip_deserializing)]
    pub sha256: String,
    /// Written only.
    #[serde(skip_deserializing)]
    pub installed_at_ms: u64,
    /// What the bus does with a batch the sanitizer failed on: `redact` or `drop`. Written
    /// only.
    #[serde(skip_deserializing)]
    pub on_failure: String,
    /// Written only.
    #[serde(skip_deserializing)]
    pub limits: PluginLimits,
    /// The version a rollback would return to. Written only.
    #[serde(skip_deserializing)]
    pub previous: Option<PreviousPlugin>,
    #[serde(default)]
    pub status: PluginStatus,
    #[serde(default)]
    pub counters: PluginCounters,
    /// A sanitizer's redactions by rule, over all its versions; absent for other worlds.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[serde(default)]
    pub redactions: Option<BTreeMap<String, u64>>,
}

/// A plugin's resource limits.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PluginLimits {
    #[serde(default)]
    pub max_memory_mib: u32,
    #[serde(default)]
    pub call_timeout_ms: u64,
    #[serde(default)]
    pub max_series_per_metric: u32,
}

/// The version of a plugin a rollback would return to.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PreviousPlugin {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub version: u64,
    #[serde(default)]
    pub sha256: String,
}

/// Whether a plugin runs or is quarantined.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PluginStatus {
    /// `running` or `quarantined`.
    #[serde(default)]
    pub state: String,
    /// Milliseconds until the next retry while quarantined. Written only.
    #[serde(skip_deserializing)]
    pub retry_in_ms: Option<u64>,
    #[serde(default)]
    pub last_error: Option<String>,
    #[serde(default)]
    pub quarantines: u64,
}

/// What a plugin has done so far, summed over its versions.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PluginCounters {
    #[serde(default)]
    pub calls: u64,
    #[serde(default)]
    pub failures: u64,
    #[serde(default)]
    pub events_in: u64,
    /// Time spent in the plugin's calls. Written only.
    #[serde(skip_deserializing)]
    pub busy_seconds: f64,
    /// `busy_seconds` per event handed to it, in nanoseconds.
    #[serde(default)]
    pub ns_per_event: Option<f64>,
}

/// One plugin swap attempt.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Swap {
    #[serde(default)]
    pub at_ms: u64,
    #[serde(default)]
    pub plugin: String,
    /// The version that was made current, when one was.
    #[serde(default)]
    pub version: Option<u64>,
    /// Written only.
    #[serde(skip_deserializing)]
    pub sha256: String,
    /// `installed`, `rolled_back`, `removed` or `rejected`.
    #[serde(default)]
    pub outcome: String,
    /// Where the request came from: `startup`, `api`, `watch`, `config:…`, `restored`.
    #[serde(default)]
    pub source: String,
    #[serde(default)]
    pub error: Option<String>,
}

/// Failed requests and worker crashes of one kind — the same host, pool, command and error
/// kind — counted, with the latest of them whole.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(bound(deserialize = "E: Deserialize<'de> + Default"))]
pub struct ErrorGroup<E> {
    /// The host the errors came from over NATS; `None` for this host's own.
    #[serde(default)]
    pub origin: Option<String>,
    #[serde(default)]
    pub pool: String,
    /// `None` for a worker crash (no request was running).
    #[serde(default)]
    pub command: Option<String>,
    /// A failed request's `error_kind` (the exception class, `timeout`, `queue_full`, …);
    /// `worker_crashed` for a crash.
    #[serde(default)]
    pub error_kind: String,
    #[serde(default)]
    pub count: u64,
    #[serde(default)]
    pub first_seen_ns: u64,
    #[serde(default)]
    pub last_seen_ns: u64,
    /// The latest occurrence: its message, traceback, correlation id and arguments.
    #[serde(default)]
    pub latest: E,
}

/// The link to other hosts over NATS.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NatsLink {
    /// This host's name on the link.
    #[serde(default)]
    pub host: String,
    #[serde(default)]
    pub connected: bool,
    /// Whether this host's events are sent.
    #[serde(default)]
    pub sink: bool,
    /// Whether other hosts' events are taken in.
    #[serde(default)]
    pub source: bool,
    /// Events waiting in the sink's buffer.
    #[serde(default)]
    pub buffered: u64,
    #[serde(default)]
    pub buffer_capacity: u64,
}
