//! `GET /metrics` (the Prometheus text exposition of the host's registry, by metric group,
//! and the plugins' own metrics) and the host's totals read back from that registry for the
//! overview and `/health/detailed`. It only reads metrics; it must never register or change
//! one (the bus, the plugin runtime and the pools own theirs).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use prometheus::proto::MetricFamily;
use prometheus::{Encoder, Registry, TextEncoder};
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

/// The host's own totals since it started, read back from its registry in one gather: what
/// the overview's `bus` and `host` and `/health/detailed`'s `observability_cost` show.
///
/// Read by metric name because the bus and the plugin runtime keep their metric handles to
/// themselves; the names are the ones `/metrics` documents, so they are as stable as it is.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct Totals {
    /// `lookout_events_published_total`.
    pub published: f64,
    /// Of those, `lookout_events_published_total` of `request.started` and
    /// `request.completed`: the events requests cause.
    pub request_events: f64,
    /// `lookout_events_total` by outcome.
    pub accepted: f64,
    pub dropped: f64,
    pub sampled_out: f64,
    pub rate_limited: f64,
    /// `lookout_sanitizer_failures_total`.
    pub sanitizer_failures: f64,
    /// Time in the bus's stages (`lookout_bus_stage_seconds`).
    pub bus_seconds: f64,
    /// Time in plugin calls (`lookout_plugin_call_duration_seconds`).
    pub plugin_seconds: f64,
    /// `process_resident_memory_bytes` (0 where the process collector is not registered).
    pub memory_bytes: f64,
}

impl Totals {
    pub(crate) fn read(registry: &Registry) -> Totals {
        let families = registry.gather();
        let sum = |name: &str, label: Option<(&str, &str)>| sum(&families, name, label);
        let outcome = |outcome: &str| sum("lookout_events_total", Some(("outcome", outcome)));
        let published_of = |kind: &str| sum("lookout_events_published_total", Some(("kind", kind)));
        Totals {
            published: sum("lookout_events_published_total", None),
            request_events: published_of("request.started") + published_of("request.completed"),
            accepted: outcome("accepted"),
            dropped: outcome("dropped"),
            sampled_out: outcome("sampled_out"),
            rate_limited: outcome("rate_limited"),
            sanitizer_failures: sum("lookout_sanitizer_failures_total", None),
            bus_seconds: sum("lookout_bus_stage_seconds", None),
            plugin_seconds: sum("lookout_plugin_call_duration_seconds", None),
            memory_bytes: sum("process_resident_memory_bytes", None),
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
    let totals = Totals::read(&state.registry);
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

/// A family's counters and gauges summed (over the series that have `label`, if given);
/// histograms contribute their sample sums.
fn sum(families: &[MetricFamily], name: &str, label: Option<(&str, &str)>) -> f64 {
    families
        .iter()
        .filter(|f| f.name() == name)
        .flat_map(|f| f.get_metric())
        .filter(|m| {
            label.is_none_or(|(k, v)| {
                m.get_label()
                    .iter()
                    .any(|l| l.name() == k && l.value() == v)
            })
        })
        .map(|m| {
            m.get_counter().get_value()
                + m.get_gauge().get_value()
                + m.get_histogram().get_sample_sum()
        })
        .fold(0.0, |a, b| a + b)
}
