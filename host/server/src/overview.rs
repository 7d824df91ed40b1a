//! The dashboard's picture of the host: `GET /api/v1/overview` (one snapshot) and
//! `GET /api/v1/overview/stream` (the same, pushed every second as Server-Sent Events).
//! Everything in it is either a number, a name, or an event that went through the sanitizer.
//! Its shape is `lookout-api`'s [`Overview`](lookout_api::Overview), which the dashboard
//! reads; this file builds it from the pools, the plugins, the health checks and the totals.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::Stream;
use lookout_api as api;
use lookout_core::{Batch, Consumer, ConsumerError, Event, FieldValue};
use parking_lot::Mutex;
use serde::Serialize;
use serde_json::Value;

use crate::AppState;
use crate::metrics::Totals;

/// Error groups kept; past it, the group seen least recently goes.
const ERROR_GROUPS: usize = 50;

/// The error kind of a worker crash outside a request (a failed request says its own).
const WORKER_CRASHED: &str = "worker_crashed";

/// Failed requests and worker crashes of one kind — the same host, pool, command and error
/// kind — counted, with the latest of them whole. What `errors` of the overview lists.
pub type ErrorGroup = api::ErrorGroup<Event>;

/// The overview as the host builds it: checks measure JSON values, events are the bus's.
pub(crate) type Overview = api::Overview<Value, Event>;

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

    fn is_key_of(&self, group: &ErrorGroup) -> bool {
        group.origin.as_deref() == self.origin
            && group.pool == self.pool
            && group.command.as_deref() == self.command
            && group.error_kind == self.error_kind
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
        let seen = groups.iter().position(|g| key.is_key_of(g));
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

/// The whole picture, now.
pub(crate) fn overview(state: &AppState) -> Overview {
    let report = state.evaluate_health();
    let totals = Totals::read(state);
    // One snapshot per pool (each reads every worker's memory from /proc).
    let pools: Vec<api::PoolEntry> = state.pools.all().iter().map(pool_entry).collect();
    let live_workers: u64 = pools
        .iter()
        .map(|p| p.pool.workers.iter().filter(|w| w.pid.is_some()).count() as u64)
        .sum();
    let history = state.plugins.history();
    Overview {
        host: api::Host {
            version: env!("CARGO_PKG_VERSION").to_string(),
            uptime_s: state.started.elapsed().as_secs_f64(),
            memory_bytes: totals.memory_bytes,
            processes: 1 + live_workers,
            workers: live_workers,
        },
        health: report,
        bus: totals.bus(),
        pools,
        plugins: state.plugins.list().iter().map(plugin).collect(),
        swaps: history.iter().rev().take(20).map(swap).collect(),
        errors: state.recent_errors.list(),
        nats: state.nats.as_ref().map(|n| nats_link(n.status())),
    }
}

/// The overview as it goes on the wire: through a `Value`, so every object's keys come out
/// sorted, byte for byte as they did before the overview had types.
fn to_wire(overview: &Overview) -> Value {
    serde_json::to_value(overview).unwrap_or_default()
}

/// The name serde gives a state (`snake_case`), so the overview says what the rest of the
/// API says about the same pool, worker or plugin.
fn wire_name(state: impl Serialize) -> String {
    match serde_json::to_value(state) {
        Ok(Value::String(name)) => name,
        _ => String::new(),
    }
}

/// A pool and its recent window; its configuration stays out of the overview.
fn pool_entry(pool: &lookout_pool::Pool) -> api::PoolEntry {
    let window_s = pool.config().health.window_s;
    let snapshot = pool.snapshot();
    let window = pool.window(Duration::from_secs(window_s));
    api::PoolEntry {
        pool: api::Pool {
            name: snapshot.name,
            status: wire_name(snapshot.status),
            size: snapshot.size as u64,
            uptime_s: snapshot.uptime_s,
            workers: snapshot
                .workers
                .into_iter()
                .map(|w| api::Worker {
                    slot: w.slot as u64,
                    id: w.id,
                    pid: w.pid.map(u64::from),
                    state: wire_name(w.state),
                    uptime_s: w.uptime_s,
                    requests_served: w.requests_served,
                    memory_bytes: w.memory_bytes,
                    last_error: w.last_error,
                })
                .collect(),
            queue_length: snapshot.queue_length as u64,
            queue_limit: snapshot.queue_limit as u64,
            sessions: snapshot.sessions as u64,
            saturated: snapshot.saturated,
            requests_total: snapshot.requests_total,
            failed_total: snapshot.failed_total,
        },
        window: api::Window {
            requests: window.requests,
            failed: window.failed,
            p50_ms: window.p50_ms,
            p95_ms: window.p95_ms,
        },
        window_s,
    }
}

fn plugin(p: &lookout_wasm::PluginInfo) -> api::Plugin {
    api::Plugin {
        name: p.name.clone(),
        world: wire_name(p.world),
        version: p.version,
        author_version: p.author_version.clone(),
        sha256: p.sha256.clone(),
        installed_at_ms: p.installed_at_ms,
        on_failure: wire_name(p.on_failure),
        limits: api::PluginLimits {
            max_memory_mib: p.limits.max_memory_mib,
            call_timeout_ms: p.limits.call_timeout_ms,
            max_series_per_metric: p.limits.max_series_per_metric,
        },
        previous: p.previous.as_ref().map(|v| api::PreviousPlugin {
            name: v.name.clone(),
            version: v.version,
            sha256: v.sha256.clone(),
        }),
        status: api::PluginStatus {
            state: wire_name(p.status.state),
            retry_in_ms: p.status.retry_in_ms,
            last_error: p.status.last_error.clone(),
            quarantines: p.status.quarantines,
        },
        counters: api::PluginCounters {
            calls: p.counters.calls,
            failures: p.counters.failures,
            events_in: p.counters.events_in,
            busy_seconds: p.counters.busy_seconds,
            ns_per_event: p.counters.ns_per_event,
        },
        redactions: p.redactions.clone(),
    }
}

fn swap(s: &lookout_wasm::SwapRecord) -> api::Swap {
    api::Swap {
        at_ms: s.at_ms,
        plugin: s.plugin.clone(),
        version: s.version,
        sha256: s.sha256.clone(),
        outcome: wire_name(s.outcome),
        source: s.source.clone(),
        error: s.error.clone(),
    }
}

fn nats_link(s: lookout_nats::NatsStatus) -> api::NatsLink {
    api::NatsLink {
        host: s.host,
        connected: s.connected,
        sink: s.sink,
        source: s.source,
        buffered: s.buffered as u64,
        buffer_capacity: s.buffer_capacity as u64,
    }
}

pub(crate) async fn get_overview(State(state): State<Arc<AppState>>) -> Response {
    Json(to_wire(&overview(&state))).into_response()
}

/// The overview at once, then every second.
pub(crate) async fn overview_stream(
    State(state): State<Arc<AppState>>,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let stream = futures_util::stream::unfold(
        (state, tokio::time::interval(Duration::from_secs(1))),
        |(state, mut tick)| async move {
            tick.tick().await;
            let data = to_wire(&overview(&state)).to_string();
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
