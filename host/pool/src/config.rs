//! A pool's configuration: `[[pools]]` in `lookout.toml`.

use std::collections::BTreeMap;
use std::time::Duration;

use lookout_core::Invalid;
use serde::{Deserialize, Serialize};

/// One pool of worker processes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    /// Names the pool in the API, events and metrics: letters, digits, `-`, `_`.
    pub name: String,
    /// The worker program and its arguments, e.g. `["python3", "app.py"]`. Exactly one of
    /// `command` and `app` is set.
    #[serde(default)]
    pub command: Vec<String>,
    /// An app embedded in lookout instead of a command: `demo` (examples/workers/app.py,
    /// run with `python3` from PATH).
    #[serde(default)]
    pub app: Option<String>,
    /// Worker processes kept running.
    #[serde(default = "default_size")]
    pub size: usize,
    /// How long a worker may take to announce it is ready.
    #[serde(default = "default_startup_timeout_ms")]
    pub startup_timeout_ms: u64,
    /// Default deadline of a request (queue wait included); a request may ask for less.
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// Requests that may wait for a worker; one more is refused (HTTP 503).
    #[serde(default = "default_queue_limit")]
    pub queue_limit: usize,
    /// Recycle a worker after this many requests (0: never).
    #[serde(default)]
    pub max_requests: u64,
    /// Recycle a worker after this many seconds (0: never).
    #[serde(default)]
    pub max_age_s: u64,
    /// Recycle a worker whose resident memory passes this many MiB after a request (0: never).
    #[serde(default)]
    pub max_memory_mib: u64,
    /// A session expires this long after its last request.
    #[serde(default = "default_session_ttl_s")]
    pub session_ttl_s: u64,
    /// How often expired sessions are swept.
    #[serde(default = "default_session_sweep_ms")]
    pub session_sweep_ms: u64,
    /// On stop: how long a worker gets after its stdin closes, and again after SIGTERM,
    /// before SIGKILL.
    #[serde(default = "default_stop_grace_ms")]
    pub stop_grace_ms: u64,
    /// Environment for the workers, on top of lookout's own. Values are masked wherever the
    /// configuration is shown.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// The working directory of the workers (default: lookout's).
    #[serde(default)]
    pub cwd: Option<String>,
    /// When this pool counts as healthy (readiness).
    #[serde(default)]
    pub health: HealthCriteria,
    /// A protocol-2 worker that writes nothing (no heartbeat, no telemetry, no reply) for this
    /// long while busy is hung: killed and replaced, its request failed (0: off). Workers are
    /// asked to beat three times as often. For requests longer than a deadline can bound.
    #[serde(default)]
    pub heartbeat_timeout_ms: u64,
    /// How much telemetry (events and spans) each protocol-2 worker may send.
    #[serde(default)]
    pub telemetry: TelemetryLimits,
}

/// A worker's telemetry budget: `[pools.telemetry]`. What is over it is dropped, counted in
/// `lookout_worker_telemetry_dropped_total` and reported on the request's
/// `request.completed` as `telemetry_dropped`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryLimits {
    /// Events and spans a second (a second's worth may come at once).
    pub events_per_s: u32,
    /// Bytes of telemetry lines a second (a second's worth may come at once).
    pub bytes_per_s: u64,
}

impl Default for TelemetryLimits {
    fn default() -> Self {
        TelemetryLimits {
            events_per_s: 200,
            bytes_per_s: 1 << 20,
        }
    }
}

/// A pool's readiness criteria: `[pools.health]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthCriteria {
    /// Least share of the pool's slots with a live worker (available or busy).
    pub min_available_ratio: f64,
    /// Most share of requests over `window_s` that failed (errors, crashes, timeouts,
    /// refusals), judged once `min_requests` were answered in the window.
    pub max_error_rate: f64,
    /// Fewest requests in the window before the error rate and latency are judged.
    pub min_requests: u64,
    /// Most requests waiting for a worker (default: the pool's `queue_limit`).
    pub max_queue_length: Option<usize>,
    /// Most 95th-percentile time to an answer over `window_s`, queue wait included.
    pub max_p95_ms: f64,
    /// The sliding window of the error-rate and latency criteria, in seconds (≤ 3600).
    pub window_s: u64,
}

impl Default for HealthCriteria {
    fn default() -> Self {
        HealthCriteria {
            min_available_ratio: 0.5,
            max_error_rate: 0.5,
            min_requests: 10,
            max_queue_length: None,
            max_p95_ms: 10_000.0,
            window_s: 60,
        }
    }
}

fn default_size() -> usize {
    2
}
fn default_startup_timeout_ms() -> u64 {
    10_000
}
fn default_request_timeout_ms() -> u64 {
    30_000
}
fn default_queue_limit() -> usize {
    100
}
fn default_session_ttl_s() -> u64 {
    300
}
fn default_session_sweep_ms() -> u64 {
    1_000
}
fn default_stop_grace_ms() -> u64 {
    5_000
}

/// Largest pool: a worker is a process, and a typo should not fork a thousand.
pub const MAX_POOL_SIZE: usize = 256;

impl PoolConfig {
    /// A pool running `command` with every other setting at its default.
    pub fn new(name: &str, command: &[&str]) -> PoolConfig {
        PoolConfig {
            name: name.to_string(),
            command: command.iter().map(|s| s.to_string()).collect(),
            app: None,
            size: default_size(),
            startup_timeout_ms: default_startup_timeout_ms(),
            request_timeout_ms: default_request_timeout_ms(),
            queue_limit: default_queue_limit(),
            max_requests: 0,
            max_age_s: 0,
            max_memory_mib: 0,
            session_ttl_s: default_session_ttl_s(),
            session_sweep_ms: default_session_sweep_ms(),
            stop_grace_ms: default_stop_grace_ms(),
            env: BTreeMap::new(),
            cwd: None,
            health: HealthCriteria::default(),
            heartbeat_timeout_ms: 0,
            telemetry: TelemetryLimits::default(),
        }
    }

    /// Every problem, each named by its field under `pools.<name>`.
    pub fn problems(&self) -> Vec<Invalid> {
        let section = format!("pools.{}", self.name);
        let mut problems = Vec::new();
        let mut bad = |field: &str, reason: String| {
            problems.push(Invalid::new(field, reason).under(&section));
        };
        if self.name.is_empty()
            || self.name.len() > 64
            || !self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            bad(
                "name",
                "must be 1–64 letters, digits, `-` or `_`".to_string(),
            );
        }
        match (&self.app, self.command.is_empty()) {
            (None, true) => bad(
                "command",
                "set `command` (the worker program and its arguments) or `app = \"demo\"`"
                    .to_string(),
            ),
            (Some(_), false) => bad("app", "set either `command` or `app`, not both".to_string()),
            (Some(app), true) if app != "demo" => {
                bad("app", format!("unknown app `{app}` (known: demo)"))
            }
            _ => {}
        }
        if self.size == 0 || self.size > MAX_POOL_SIZE {
            bad("size", format!("must be 1–{MAX_POOL_SIZE}"));
        }
        for (field, value) in [
            ("startup_timeout_ms", self.startup_timeout_ms),
            ("request_timeout_ms", self.request_timeout_ms),
            ("session_ttl_s", self.session_ttl_s),
            ("session_sweep_ms", self.session_sweep_ms),
            ("stop_grace_ms", self.stop_grace_ms),
        ] {
            if value == 0 {
                bad(field, "must be greater than 0".to_string());
            }
        }
        let h = &self.health;
        if !(0.0..=1.0).contains(&h.min_available_ratio) {
            bad(
                "health.min_available_ratio",
                "must be between 0 and 1".to_string(),
            );
        }
        if !(0.0..=1.0).contains(&h.max_error_rate) {
            bad(
                "health.max_error_rate",
                "must be between 0 and 1".to_string(),
            );
        }
        if h.max_p95_ms.is_nan() || h.max_p95_ms <= 0.0 {
            bad("health.max_p95_ms", "must be greater than 0".to_string());
        }
        if h.window_s == 0 || h.window_s > 3600 {
            bad("health.window_s", "must be 1–3600".to_string());
        }
        if self.heartbeat_timeout_ms != 0 && self.heartbeat_timeout_ms < 30 {
            bad(
                "heartbeat_timeout_ms",
                "must be 0 (off) or at least 30 (workers beat every third of it)".to_string(),
            );
        }
        if self.telemetry.events_per_s > 1_000_000 {
            bad(
                "telemetry.events_per_s",
                "must be at most 1000000".to_string(),
            );
        }
        if self.telemetry.bytes_per_s > 1 << 30 {
            bad(
                "telemetry.bytes_per_s",
                "must be at most 1073741824 (1 GiB)".to_string(),
            );
        }
        problems
    }

    /// The queue length past which the pool is unhealthy.
    pub fn max_queue_length(&self) -> usize {
        self.health.max_queue_length.unwrap_or(self.queue_limit)
    }

    pub(crate) fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    /// How long a busy protocol-2 worker may stay silent, if it is watched.
    pub(crate) fn heartbeat_timeout(&self) -> Option<Duration> {
        (self.heartbeat_timeout_ms > 0).then(|| Duration::from_millis(self.heartbeat_timeout_ms))
    }

    pub(crate) fn stop_grace(&self) -> Duration {
        Duration::from_millis(self.stop_grace_ms)
    }

    /// The program and arguments to run.
    pub(crate) fn argv(&self) -> Vec<String> {
        match self.app.as_deref() {
            Some("demo") => vec![
                "python3".to_string(),
                "-c".to_string(),
                crate::demo::program(),
            ],
            _ => self.command.clone(),
        }
    }

    /// This configuration as shown in events and the API: env values masked, the embedded
    /// app's source not repeated.
    pub fn shown(&self) -> serde_json::Value {
        let mut shown = serde_json::to_value(self).unwrap_or_default();
        if let Some(env) = shown.get_mut("env").and_then(|e| e.as_object_mut()) {
            for value in env.values_mut() {
                *value = serde_json::Value::String("***".to_string());
            }
        }
        shown
    }
}
