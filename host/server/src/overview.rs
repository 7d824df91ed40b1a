//! The dashboard's picture of the host: `GET /api/v1/overview` (one snapshot) and
//! `GET /api/v1/overview/stream` (the same, pushed every second as Server-Sent Events).
//! Everything in it is either a number, a name, or an event that went through the sanitizer.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::Stream;
use lookout_core::{Batch, Consumer, ConsumerError, Event, FieldValue};
use parking_lot::Mutex;
use prometheus::proto::MetricFamily;
use serde_json::{Value, json};

use crate::AppState;

/// Most recent errors kept.
const RECENT_ERRORS: usize = 50;

/// A bus consumer keeping the latest failed requests and worker crashes — sanitized, since
/// it reads them off the bus like any consumer.
#[derive(Clone, Debug, Default)]
pub struct RecentErrors(Arc<Mutex<VecDeque<Event>>>);

impl RecentErrors {
    /// Newest first.
    pub fn list(&self) -> Vec<Event> {
        self.0.lock().iter().rev().cloned().collect()
    }
}

impl Consumer for RecentErrors {
    async fn handle(&mut self, batch: Batch) -> Result<(), ConsumerError> {
        let errors = batch.iter().filter(|e| match e.kind.as_str() {
            "request.completed" => e.get("success") == Some(&FieldValue::Bool(false)),
            "worker.crashed" => true,
            _ => false,
        });
        let mut kept = self.0.lock();
        for e in errors {
            if kept.len() == RECENT_ERRORS {
                kept.pop_front();
            }
            kept.push_back(e.clone());
        }
        Ok(())
    }
}

/// A family's counters and gauges summed (over the series that have `label`, if given);
/// histograms contribute their sample sums.
pub(crate) fn sum(families: &[MetricFamily], name: &str, label: Option<(&str, &str)>) -> f64 {
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

/// What observability costs, from the host's own measurements since it started: time in the
/// bus's stages and in plugin calls per event, events per request, and so per request.
pub(crate) fn observability_cost(state: &AppState) -> Value {
    let families = state.registry.gather();
    let events = sum(&families, "lookout_events_published_total", None);
    let bus_seconds = sum(&families, "lookout_bus_stage_seconds", None);
    let plugin_seconds = sum(&families, "lookout_plugin_call_duration_seconds", None);
    let request_events = sum(
        &families,
        "lookout_events_published_total",
        Some(("kind", "request.started")),
    ) + sum(
        &families,
        "lookout_events_published_total",
        Some(("kind", "request.completed")),
    );
    let requests: u64 = state.pools.all().iter().map(|p| p.requests_total()).sum();
    let per_event = |seconds: f64| (events > 0.0).then(|| seconds / events);
    let events_per_request = (requests > 0).then(|| request_events / requests as f64);
    let per_request_us = match (per_event(bus_seconds + plugin_seconds), events_per_request) {
        (Some(cost), Some(n)) => Some(cost * n * 1e6),
        _ => None,
    };
    json!({
        "events": events,
        "bus_seconds_per_event": per_event(bus_seconds),
        "plugin_seconds_per_event": per_event(plugin_seconds),
        "events_per_request": events_per_request,
        "per_request_us": per_request_us,
    })
}

/// The whole picture, now.
pub(crate) fn overview(state: &AppState) -> Value {
    let report = state.evaluate_health();
    let families = state.registry.gather();
    // One snapshot per pool (each reads every worker's memory from /proc).
    let mut live_workers = 0;
    let pools: Vec<Value> = state
        .pools
        .all()
        .iter()
        .map(|p| {
            let window_s = p.config().health.window_s;
            let snapshot = p.snapshot();
            live_workers += snapshot.workers.iter().filter(|w| w.pid.is_some()).count();
            let mut snapshot = serde_json::to_value(snapshot).unwrap_or_default();
            if let Some(map) = snapshot.as_object_mut() {
                map.remove("config");
            }
            json!({
                "pool": snapshot,
                "window": p.window(Duration::from_secs(window_s)),
                "window_s": window_s,
            })
        })
        .collect();
    let history = state.plugins.history();
    let history: Vec<_> = history.iter().rev().take(20).collect();
    json!({
        "host": {
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_s": state.started.elapsed().as_secs_f64(),
            "memory_bytes": sum(&families, "process_resident_memory_bytes", None),
            "processes": 1 + live_workers,
            "workers": live_workers,
        },
        "health": report,
        "bus": {
            "published": sum(&families, "lookout_events_published_total", None),
            "accepted": sum(&families, "lookout_events_total", Some(("outcome", "accepted"))),
            "dropped": sum(&families, "lookout_events_total", Some(("outcome", "dropped"))),
            "sampled_out": sum(&families, "lookout_events_total", Some(("outcome", "sampled_out"))),
            "rate_limited": sum(&families, "lookout_events_total", Some(("outcome", "rate_limited"))),
            "sanitizer_failures": sum(&families, "lookout_sanitizer_failures_total", None),
        },
        "pools": pools,
        "plugins": state.plugins.list(),
        "swaps": history,
        "errors": state.recent_errors.list(),
        "nats": state.nats.as_ref().map(|n| n.status()),
    })
}

pub(crate) async fn get_overview(State(state): State<Arc<AppState>>) -> Response {
    Json(overview(&state)).into_response()
}

/// The overview at once, then every second.
pub(crate) async fn overview_stream(
    State(state): State<Arc<AppState>>,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let stream = futures_util::stream::unfold(
        (state, tokio::time::interval(Duration::from_secs(1))),
        |(state, mut tick)| async move {
            tick.tick().await;
            let data = overview(&state).to_string();
            Some((Ok(SseEvent::default().data(data)), (state, tick)))
        },
    );
    Sse::new(stream).keep_alive(KeepAlive::default())
}
