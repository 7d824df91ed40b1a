//! Health that tells the truth: checks computed from the live state of the pools and
//! plugins, with hysteresis, behind `/health/ready`, `/health/detailed`, `/readyz` and
//! `/livez`.
//!
//! Each check has a raw state (computed now) and an effective one, which follows the raw
//! state only after it has held for `hold` — one slow request does not flip readiness. A
//! check that has never been ok is still coming up: its first ok counts at once, so a host
//! is ready as soon as its workers are, not a `hold` later (hysteresis is for flapping). The
//! host is ready when every check that affects readiness is effectively ok; a change of
//! readiness publishes one `health.changed` event and logs one line.
//!
//! Checks go out as `lookout-api`'s [`Check`]s and [`Report`]s, the same types the overview
//! carries to the dashboard. Evaluating must never change a pool or a plugin: it only looks.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use lookout_api::{CheckStatus, HealthStatus, Rule};
use lookout_core::{Bus, Event, Severity};
use lookout_pool::Pools;
use lookout_wasm::{PluginRegistry, World};
use parking_lot::Mutex;
use serde_json::{Value, json};

use crate::AppState;

/// `[health]`: how checks are evaluated.
#[derive(Clone, Copy, Debug)]
pub struct HealthSettings {
    /// How long a check's new state must hold before it counts.
    pub hold: Duration,
    /// How often the checks run in the background (transitions are reported from there).
    pub interval: Duration,
}

/// One check as the API shows it: its value and threshold are whatever JSON it measures.
pub type Check = lookout_api::Check<Value>;

/// The whole picture.
pub type Report = lookout_api::HealthReport<Value>;

struct Raw {
    name: String,
    ok: bool,
    value: Value,
    threshold: Value,
    rule: Rule,
    affects_readiness: bool,
    detail: Option<String>,
}

/// One check's hysteresis: the effective state follows the raw one after `hold`, except for
/// a check's first ok, which counts at once.
struct Tracked {
    effective_ok: bool,
    effective_since: Instant,
    raw_ok: bool,
    raw_since: Instant,
    /// Effectively ok at least once: until then the check is coming up, not flapping.
    been_ok: bool,
}

impl Tracked {
    /// A check seen for the first time starts where it is.
    fn new(ok: bool, now: Instant) -> Tracked {
        Tracked {
            effective_ok: ok,
            effective_since: now,
            raw_ok: ok,
            raw_since: now,
            been_ok: ok,
        }
    }

    /// Takes the raw state seen at `now`.
    fn observe(&mut self, ok: bool, now: Instant, hold: Duration) {
        if self.raw_ok != ok {
            self.raw_ok = ok;
            self.raw_since = now;
        }
        let coming_up = ok && !self.been_ok;
        if self.effective_ok != ok && (coming_up || now.duration_since(self.raw_since) >= hold) {
            self.effective_ok = ok;
            self.effective_since = now;
        }
        self.been_ok |= self.effective_ok;
    }
}

/// What the evaluator remembers between evaluations: each check's hysteresis, and readiness.
struct Tracking {
    checks: BTreeMap<String, Tracked>,
    ready: Option<bool>,
}

/// The evaluator; cheap to clone.
#[derive(Clone)]
pub struct Health {
    settings: Arc<Mutex<HealthSettings>>,
    state: Arc<Mutex<Tracking>>,
}

impl std::fmt::Debug for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Health")
            .field("settings", &*self.settings.lock())
            .finish_non_exhaustive()
    }
}

impl Health {
    pub fn new(settings: HealthSettings) -> Health {
        Health {
            settings: Arc::new(Mutex::new(settings)),
            state: Arc::new(Mutex::new(Tracking {
                checks: BTreeMap::new(),
                ready: None,
            })),
        }
    }

    /// Evaluates every `interval` until the bus closes, so transitions are reported when they
    /// happen rather than when someone asks.
    pub fn spawn(&self, pools: Arc<Pools>, plugins: Arc<PluginRegistry>, bus: Bus) {
        let health = self.clone();
        tokio::spawn(async move {
            loop {
                health.evaluate(&pools, &plugins, &bus);
                let interval = health.settings.lock().interval;
                tokio::time::sleep(interval).await;
            }
        });
    }

    /// New settings, from the next evaluation on.
    pub fn set_settings(&self, settings: HealthSettings) {
        *self.settings.lock() = settings;
    }

    /// The checks now, with hysteresis applied; reports a change of readiness.
    pub fn evaluate(&self, pools: &Pools, plugins: &PluginRegistry, bus: &Bus) -> Report {
        let raw = raw_checks(pools, plugins);
        let now = Instant::now();
        let hold = self.settings.lock().hold;
        let mut state = self.state.lock();
        let first = state.ready.is_none();
        state
            .checks
            .retain(|name, _| raw.iter().any(|r| &r.name == name));
        let mut checks = Vec::with_capacity(raw.len());
        for r in raw {
            let tracked = state
                .checks
                .entry(r.name.clone())
                .or_insert_with(|| Tracked::new(r.ok, now));
            tracked.observe(r.ok, now, hold);
            let pending =
                (tracked.effective_ok != tracked.raw_ok).then(|| CheckStatus::of(tracked.raw_ok));
            checks.push(Check {
                name: r.name,
                status: CheckStatus::of(tracked.effective_ok),
                value: r.value,
                threshold: r.threshold,
                rule: r.rule,
                affects_readiness: r.affects_readiness,
                for_s: now.duration_since(tracked.effective_since).as_secs_f64(),
                pending,
                detail: r.detail,
            });
        }
        let ready = checks
            .iter()
            .all(|c| c.status == CheckStatus::Ok || !c.affects_readiness);
        let status = if !ready {
            HealthStatus::NotReady
        } else if checks.iter().all(|c| c.status == CheckStatus::Ok) {
            HealthStatus::Ok
        } else {
            HealthStatus::Degraded
        };
        let report = Report {
            ready,
            status,
            checks,
        };
        if state.ready != Some(ready) {
            let from = state.ready;
            state.ready = Some(ready);
            drop(state);
            if !first || !ready {
                announce(&report, from, bus);
            }
        }
        report
    }
}

/// One `health.changed` event and one log line per change of readiness.
fn announce(report: &Report, from: Option<bool>, bus: &Bus) {
    let word = |ready: bool| if ready { "ready" } else { "not_ready" };
    let failing: Vec<&str> = report.failing().map(|c| c.name.as_str()).collect();
    let failing = failing.join(",");
    let from = from.map_or("starting", word);
    let to = word(report.ready);
    if report.ready {
        tracing::info!(target: "lookout::health", from, to, "health changed");
    } else {
        tracing::warn!(target: "lookout::health", from, to, failing = %failing, "health changed");
    }
    bus.publish(
        Event::new("health.changed")
            .severity(if report.ready {
                Severity::Info
            } else {
                Severity::Warn
            })
            .field("from", from)
            .field("to", to)
            .field("failing", failing),
    );
}

fn raw_checks(pools: &Pools, plugins: &PluginRegistry) -> Vec<Raw> {
    let mut raw = Vec::new();
    for pool in pools.all() {
        let config = pool.config();
        let criteria = &config.health;
        let name = config.name.as_str();
        let snapshot = pool.snapshot();
        let live = snapshot
            .workers
            .iter()
            .filter(|w| {
                matches!(
                    w.state,
                    lookout_pool::WorkerState::Available | lookout_pool::WorkerState::Busy
                )
            })
            .count();
        let ratio = live as f64 / snapshot.size.max(1) as f64;
        raw.push(Raw {
            name: format!("pool:{name}:available_workers"),
            ok: ratio >= criteria.min_available_ratio
                && snapshot.status != lookout_pool::PoolStatus::Stopping,
            value: json!(ratio),
            threshold: json!(criteria.min_available_ratio),
            rule: Rule::AtLeast,
            affects_readiness: true,
            detail: Some(format!("{live} of {} workers live", snapshot.size))
                .filter(|_| ratio < criteria.min_available_ratio)
                .or_else(|| {
                    snapshot
                        .workers
                        .iter()
                        .find_map(|w| w.last_error.clone())
                        .filter(|_| live < snapshot.size)
                }),
        });
        let window = pool.window(Duration::from_secs(criteria.window_s));
        let judged = window.requests >= criteria.min_requests;
        raw.push(Raw {
            name: format!("pool:{name}:error_rate"),
            ok: !judged || window.error_rate() <= criteria.max_error_rate,
            value: json!(window.error_rate()),
            threshold: json!(criteria.max_error_rate),
            rule: Rule::AtMost,
            affects_readiness: true,
            detail: Some(format!(
                "{} of {} requests failed in the last {} s{}",
                window.failed,
                window.requests,
                criteria.window_s,
                if judged { "" } else { " (too few to judge)" }
            )),
        });
        raw.push(Raw {
            name: format!("pool:{name}:p95_latency_ms"),
            ok: !judged || window.p95_ms.is_none_or(|p| p <= criteria.max_p95_ms),
            value: json!(window.p95_ms),
            threshold: json!(criteria.max_p95_ms),
            rule: Rule::AtMost,
            affects_readiness: true,
            detail: Some(format!(
                "over the last {} s, {} requests",
                criteria.window_s, window.requests
            )),
        });
        raw.push(Raw {
            name: format!("pool:{name}:queue_length"),
            ok: snapshot.queue_length <= config.max_queue_length(),
            value: json!(snapshot.queue_length),
            threshold: json!(config.max_queue_length()),
            rule: Rule::AtMost,
            affects_readiness: true,
            detail: None,
        });
    }
    for plugin in plugins.list() {
        let sanitizer = plugin.world == World::Sanitizer;
        raw.push(Raw {
            name: format!("plugin:{}", plugin.name),
            ok: plugin.status.state == lookout_wasm::BreakerState::Running,
            value: json!(plugin.status.state),
            threshold: json!("running"),
            rule: Rule::Equals,
            // A quarantined sanitizer fails every batch closed: the host would drop data.
            affects_readiness: sanitizer,
            detail: plugin.status.last_error.clone(),
        });
    }
    raw
}

pub(crate) async fn live() -> impl IntoResponse {
    Json(json!({ "status": "ok" }))
}

/// Readiness: 200 when every check that affects readiness holds, else 503 naming the failing
/// ones.
pub(crate) async fn ready(State(state): State<Arc<AppState>>) -> Response {
    let report = state.evaluate_health();
    let failing: Vec<_> = report.failing().collect();
    let body = json!({
        "status": if report.ready { "ready" } else { "not_ready" },
        "failing": failing,
    });
    let code = if report.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body)).into_response()
}

/// Every check with its value, threshold and status; the pools with their workers and recent
/// window; the plugins; uptime and version. 200 when ready, 503 when not.
pub(crate) async fn detailed(State(state): State<Arc<AppState>>) -> Response {
    let report = state.evaluate_health();
    let pools: Vec<_> = state
        .pools
        .all()
        .iter()
        .map(|p| {
            let window_s = p.config().health.window_s;
            json!({
                "pool": p.snapshot(),
                "window": p.window(std::time::Duration::from_secs(window_s)),
                "window_s": window_s,
            })
        })
        .collect();
    let plugins: Vec<_> = state
        .plugins
        .list()
        .iter()
        .map(|p| {
            json!({
                "name": p.name,
                "world": p.world,
                "version": p.version,
                "state": p.status.state,
                "retry_in_ms": p.status.retry_in_ms,
                "quarantines": p.status.quarantines,
                "last_error": p.status.last_error,
            })
        })
        .collect();
    let code = if report.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "status": report.status,
        "ready": report.ready,
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": state.started.elapsed().as_secs_f64(),
        "checks": report.checks,
        "observability_cost": crate::metrics::observability_cost(&state),
        "pools": pools,
        "plugins": plugins,
        "nats": state.nats.as_ref().map(|n| n.status()),
        "otlp": state.otlp.as_ref().map(|o| o.status()),
    });
    (code, Json(body)).into_response()
}

#[derive(Debug, serde::Deserialize)]
pub(crate) struct Verbose {
    verbose: Option<String>,
}

/// Kubernetes-style liveness: `ok`, or with `?verbose` the checks it ran.
pub(crate) async fn livez(Query(q): Query<Verbose>) -> Response {
    if q.verbose.is_some() {
        "[+]ping ok\nlivez check passed\n".into_response()
    } else {
        "ok".into_response()
    }
}

/// Kubernetes-style readiness: `ok` / 503, or with `?verbose` a line per check.
pub(crate) async fn readyz(
    State(state): State<Arc<AppState>>,
    Query(q): Query<Verbose>,
) -> Response {
    let report = state.evaluate_health();
    let code = if report.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    if q.verbose.is_none() {
        let text = if report.ready { "ok" } else { "not ready" };
        return (code, text).into_response();
    }
    let mut text = String::new();
    for c in &report.checks {
        if c.status == CheckStatus::Ok {
            text.push_str(&format!("[+]{} ok\n", c.name));
        } else {
            text.push_str(&format!(
                "[-]{} failed: {} (must be {} {}){}\n",
                c.name,
                c.value,
                c.rule.words(),
                c.threshold,
                if c.affects_readiness {
                    ""
                } else {
                    " [does not affect readiness]"
                }
            ));
        }
    }
    text.push_str(if report.ready {
        "readyz check passed\n"
    } else {
        "readyz check failed\n"
    });
    (code, text).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOLD: Duration = Duration::from_secs(5);

    /// Workers that come up make their check ok at once; a `hold` later would keep a host
    /// that is ready out of its load balancer for nothing.
    #[test]
    fn a_check_coming_up_is_ok_at_once() {
        let start = Instant::now();
        let mut check = Tracked::new(false, start);
        check.observe(false, start + Duration::from_millis(100), HOLD);
        assert!(!check.effective_ok);
        check.observe(true, start + Duration::from_millis(200), HOLD);
        assert!(check.effective_ok, "the first ok counts without the hold");
    }

    /// Once a check has been ok, each flip waits the hold: a blip does not flip readiness.
    #[test]
    fn a_check_that_was_ok_flips_only_after_the_hold() {
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let mut check = Tracked::new(false, start);
        check.observe(true, at(100), HOLD);
        check.observe(false, at(200), HOLD);
        assert!(check.effective_ok, "failing for 0 s of a 5 s hold");
        check.observe(true, at(300), HOLD);
        check.observe(false, at(400), HOLD);
        check.observe(false, at(5_300), HOLD);
        assert!(check.effective_ok, "failing for 4.9 s of a 5 s hold");
        check.observe(false, at(5_400), HOLD);
        assert!(!check.effective_ok, "failing for the whole hold");
        check.observe(true, at(5_500), HOLD);
        assert!(!check.effective_ok, "back to ok also waits the hold");
        check.observe(true, at(10_500), HOLD);
        assert!(check.effective_ok);
    }
}
