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
use serde::Serialize;
use serde_json::{Value, json};

use crate::AppState;

/// Error groups kept; past it, the group seen least recently goes.
const ERROR_GROUPS: usize = 50;

/// The error kind of a worker crash outside a request (a failed request says its own).
const WORKER_CRASHED: &str = "worker_crashed";

/// Failed requests and worker crashes of one kind — the same host, pool, command and error
/// kind — counted, with the latest of them whole. What `errors` of the overview lists.
#[derive(Clone, Debug, Serialize)]
pub struct ErrorGroup {
    /// The host the errors came from over NATS; `None` for this host's own.
    pub origin: Option<String>,
    pub pool: String,
    /// `None` for a worker crash (no request was running).
    pub command: Option<String>,
    /// A failed request's `error_kind` (the exception class, `timeout`, `queue_full`, …);
    /// `worker_crashed` for a crash.
    pub error_kind: String,
    pub count: u64,
    pub first_seen_ns: u64,
    pub last_seen_ns: u64,
    /// The latest occurrence: its message, traceback, correlation id and arguments.
    pub latest: Event,
}

impl ErrorGroup {
    fn is_of(&self, key: &GroupKey<'_>) -> bool {
        self.origin.as_deref() == key.origin
            && self.pool == key.pool
            && self.command.as_deref() == key.command
            && self.error_kind == key.error_kind
    }
}

struct GroupKey<'a> {
    origin: Option<&'a str>,
    pool: &'a str,
    command: Option<&'a str>,
    error_kind: &'a str,
}

impl<'a> GroupKey<'a> {
    /// The group of a failed request or a worker crash; `None` for any other event.
    fn of(event: &'a Event) -> Option<GroupKey<'a>> {
        let text = |key: &str| match event.get(key) {
            Some(FieldValue::Str(s)) => Some(s.as_str()),
            _ => None,
        };
        let (command, error_kind) = match event.kind.as_str() {
            "request.completed" if event.get("success") == Some(&FieldValue::Bool(false)) => {
                (text("command"), text("error_kind").unwrap_or_default())
            }
            "worker.crashed" => (None, WORKER_CRASHED),
            _ => return None,
        };
        Some(GroupKey {
            origin: event.origin.as_deref(),
            pool: text("pool").unwrap_or_default(),
            command,
            error_kind,
        })
    }
}

/// A bus consumer keeping the latest failed requests and worker crashes, grouped — sanitized,
/// since it reads them off the bus like any consumer. Fifty failures of one command are one
/// row with a count, not fifty rows.
#[derive(Clone, Debug, Default)]
pub struct RecentErrors(Arc<Mutex<VecDeque<ErrorGroup>>>);

impl RecentErrors {
    /// The group seen most recently first.
    pub fn list(&self) -> Vec<ErrorGroup> {
        self.0.lock().iter().rev().cloned().collect()
    }

    /// Counts `event` in its group when it is an error.
    fn record(&self, event: &Event) {
        let Some(key) = GroupKey::of(event) else {
            return;
        };
        let mut groups = self.0.lock();
        // Kept in the order last seen, so the group that goes is at the front.
        let seen = groups.iter().position(|g| g.is_of(&key));
        let group = match seen.and_then(|at| groups.remove(at)) {
            Some(mut group) => {
                group.count += 1;
                group.first_seen_ns = group.first_seen_ns.min(event.timestamp_ns);
                group.last_seen_ns = group.last_seen_ns.max(event.timestamp_ns);
                group.latest = event.clone();
                group
            }
            None => ErrorGroup {
                origin: key.origin.map(str::to_string),
                pool: key.pool.to_string(),
                command: key.command.map(str::to_string),
                error_kind: key.error_kind.to_string(),
                count: 1,
                first_seen_ns: event.timestamp_ns,
                last_seen_ns: event.timestamp_ns,
                latest: event.clone(),
            },
        };
        if groups.len() == ERROR_GROUPS {
            groups.pop_front();
        }
        groups.push_back(group);
    }
}

impl Consumer for RecentErrors {
    async fn handle(&mut self, batch: Batch) -> Result<(), ConsumerError> {
        for event in batch.iter() {
            self.record(event);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(command: &str, kind: &str, message: &str, at_ns: u64) -> Event {
        let mut event = Event::new("request.completed")
            .correlation_id(format!("c-{at_ns}"))
            .field("pool", "billing")
            .field("command", command)
            .field("success", false)
            .field("error_kind", kind)
            .field("error_message", message)
            .field("traceback", format!("Traceback …\n{kind}: {message}"));
        event.timestamp_ns = at_ns;
        event
    }

    /// Fifty failures of one command are one row with a count, first and last seen, and the
    /// latest traceback; another command, another kind or a crash is a row of its own.
    #[test]
    fn the_same_failure_is_one_group_with_a_count() {
        let errors = RecentErrors::default();
        for i in 1..=50 {
            errors.record(&failed(
                "render",
                "ValueError",
                &format!("bad invoice {i}"),
                i,
            ));
        }
        errors.record(&failed("render", "timeout", "past 30 s", 51));
        errors.record(&failed("charge", "ValueError", "no card", 52));
        let mut crash = Event::new("worker.crashed")
            .field("pool", "billing")
            .field("reason", "signal 9");
        crash.timestamp_ns = 53;
        errors.record(&crash);
        let mut ok = Event::new("request.completed")
            .field("pool", "billing")
            .field("success", true);
        ok.timestamp_ns = 54;
        errors.record(&ok);
        errors.record(&Event::new("worker.started").field("pool", "billing"));

        let groups = errors.list();
        let rows: Vec<_> = groups
            .iter()
            .map(|g| (g.command.as_deref(), g.error_kind.as_str(), g.count))
            .collect();
        assert_eq!(
            rows,
            [
                (None, "worker_crashed", 1),
                (Some("charge"), "ValueError", 1),
                (Some("render"), "timeout", 1),
                (Some("render"), "ValueError", 50),
            ]
        );
        let render = &groups[3];
        assert_eq!((render.first_seen_ns, render.last_seen_ns), (1, 50));
        assert_eq!(render.latest.correlation_id.as_deref(), Some("c-50"));
        assert_eq!(
            render.latest.get("traceback"),
            Some(&FieldValue::Str(
                "Traceback …\nValueError: bad invoice 50".into()
            ))
        );
    }

    /// The groups are bounded: the one seen least recently goes first, and a group seen
    /// again comes back to the top.
    #[test]
    fn groups_are_bounded_by_last_seen() {
        let errors = RecentErrors::default();
        for i in 0..ERROR_GROUPS as u64 {
            errors.record(&failed(&format!("c{i}"), "ValueError", "x", i));
        }
        errors.record(&failed("c0", "ValueError", "again", 100));
        errors.record(&failed("new", "ValueError", "x", 101));
        let groups = errors.list();
        assert_eq!(groups.len(), ERROR_GROUPS);
        let commands: Vec<_> = groups.iter().filter_map(|g| g.command.as_deref()).collect();
        assert_eq!(&commands[..2], ["new", "c0"]);
        assert!(!commands.contains(&"c1"), "the least recently seen went");
        assert_eq!(groups[1].count, 2);
    }

    /// Another host's errors (over NATS) are grouped apart from this host's.
    #[test]
    fn another_hosts_errors_are_their_own_group() {
        let errors = RecentErrors::default();
        errors.record(&failed("render", "ValueError", "here", 1));
        let mut remote = failed("render", "ValueError", "there", 2);
        remote.origin = Some("web-2".into());
        errors.record(&remote);
        let origins: Vec<_> = errors.list().into_iter().map(|g| g.origin).collect();
        assert_eq!(origins, [Some("web-2".to_string()), None]);
    }
}
