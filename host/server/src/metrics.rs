//! `GET /metrics` (the Prometheus text exposition of the host's registry, by metric group,
//! and the plugins' own metrics) and the host's totals — from the bus's books and the plugin
//! runtime — for the overview and `/health/detailed`. It only reads metrics; it must never
//! register or change one (the bus, the plugin runtime and the pools own theirs).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use prometheus::{Encoder, TextEncoder};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::{ApiError, AppState};

/// Which groups of metrics `/metrics` exposes: `[metrics]` in the config. A group turned off
/// is not exported (its numbers are still kept: health and the API use them).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricGroups {
    /// `process_*`: resident memory, CPU seconds, open file descriptors, threads, start time.
    pub process: bool,
    /// `lookout_events_*`, `lookout_consumer_*`, `lookout_bus_*`, `lookout_sanitizer_*`.
    pub bus: bool,
    /// `lookout_plugin_calls_total` and the other built-in plugin metrics, with
    /// `lookout_redactions_total`.
    pub plugins: bool,
    /// Plugins' own metrics (`lookout_plugin_<plugin>_<name>`).
    pub custom: bool,
    /// `lookout_requests_*`, `lookout_request_*`, `lookout_queue_*`, `lookout_workers`,
    /// `lookout_sessions_*`, `lookout_worker_*`.
    pub pools: bool,
}

impl Default for MetricGroups {
    fn default() -> Self {
        MetricGroups {
            process: true,
            bus: true,
            plugins: true,
            custom: true,
            pools: true,
        }
    }
}

impl MetricGroups {
    /// Whether a family of the host's own registry is exported.
    pub fn exports(&self, family: &str) -> bool {
        let any = |prefixes: &[&str]| prefixes.iter().any(|p| family.starts_with(p));
        if any(&["process_"]) {
            self.process
        } else if any(&[
            "lookout_events_",
            "lookout_consumer_",
            "lookout_bus_",
            "lookout_sanitizer_",
        ]) {
            self.bus
        } else if any(&["lookout_plugin_", "lookout_redactions_"]) {
            self.plugins
        } else if any(&[
            "lookout_requests_",
            "lookout_request_",
            "lookout_queue_",
            "lookout_workers",
            "lookout_sessions_",
            "lookout_worker_",
        ]) {
            self.pools
        } else {
            true
        }
    }
}

pub(crate) async fn exposition(
    State(state): State<Arc<AppState>>,
) -> Result<impl IntoResponse, ApiError> {
    let groups = *state.metric_groups.read();
    let mut families = state.registry.gather();
    families.retain(|f| groups.exports(f.name()));
    // Plugins' custom metrics live in registries of their own (one per plugin version).
    if groups.custom {
        families.extend(state.plugins.gather_custom());
    }
    let mut buffer = Vec::new();
    TextEncoder::new()
        .encode(&families, &mut buffer)
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("encoding metrics: {e}"),
            )
        })?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        buffer,
    ))
}

/// The host's own totals since it started: what the overview's `bus` and `host` and
/// `/health/detailed`'s `observability_cost` show. Read from the bus's books and the plugin
/// runtime's handles; only the process's memory comes from the registry (the process
/// collector's, not ours).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct Totals {
    /// Events published.
    pub published: f64,
    /// Of those, `request.started` and `request.completed`: the events requests cause.
    pub request_events: f64,
    /// Bus outcomes.
    pub accepted: f64,
    pub dropped: f64,
    pub sampled_out: f64,
    pub rate_limited: f64,
    /// Batches whose sanitizer failed.
    pub sanitizer_failures: f64,
    /// Time in the bus's stages.
    pub bus_seconds: f64,
    /// Time in plugin calls.
    pub plugin_seconds: f64,
    /// The host's resident memory, read from /proc as the process collector's
    /// `process_resident_memory_bytes` is (0 where there is no /proc).
    pub memory_bytes: f64,
}

impl Totals {
    pub(crate) fn read(state: &AppState) -> Totals {
        let books = state.bus.books();
        let all = books.total();
        let published_of = |kind: &str| books.kinds.get(kind).map_or(0, |k| k.published) as f64;
        let memory = lookout_pool::memory_bytes(std::process::id()).unwrap_or(0) as f64;
        Totals {
            published: all.published as f64,
            request_events: published_of("request.started") + published_of("request.completed"),
            accepted: all.accepted as f64,
            dropped: all.dropped as f64,
            sampled_out: all.sampled_out as f64,
            rate_limited: all.rate_limited as f64,
            sanitizer_failures: books.sanitizer_failures as f64,
            bus_seconds: books.stage_seconds,
            plugin_seconds: state.plugins.call_seconds(),
            memory_bytes: memory,
        }
    }

    /// The overview's `bus`.
    pub(crate) fn bus(&self) -> lookout_api::BusTotals {
        lookout_api::BusTotals {
            published: self.published,
            accepted: self.accepted,
            dropped: self.dropped,
            sampled_out: self.sampled_out,
            rate_limited: self.rate_limited,
            sanitizer_failures: self.sanitizer_failures,
        }
    }
}

/// What observability costs, from the host's own measurements since it started: time in the
/// bus's stages and in plugin calls per event, events per request, and so per request.
pub(crate) fn observability_cost(state: &AppState) -> Value {
    let totals = Totals::read(state);
    let events = totals.published;
    let requests: u64 = state.pools.all().iter().map(|p| p.requests_total()).sum();
    let per_event = |seconds: f64| (events > 0.0).then(|| seconds / events);
    let events_per_request = (requests > 0).then(|| totals.request_events / requests as f64);
    let per_request_us = match (
        per_event(totals.bus_seconds + totals.plugin_seconds),
        events_per_request,
    ) {
        (Some(cost), Some(n)) => Some(cost * n * 1e6),
        _ => None,
    };
    json!({
        "events": events,
        "bus_seconds_per_event": per_event(totals.bus_seconds),
        "plugin_seconds_per_event": per_event(totals.plugin_seconds),
        "events_per_request": events_per_request,
        "per_request_us": per_request_us,
    })
}
