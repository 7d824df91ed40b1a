//! What the dashboard knows and how it says it: the overview the host pushes (the types are
//! `lookout-api`'s, the same the host serializes, read leniently: a field the host adds later
//! is ignored, one it drops becomes a default), the short history kept for sparklines and
//! rates, the event tap, and the formatting. No browser API here, so all of it is tested
//! natively (`cargo test` in `dashboard/`).

use std::collections::{BTreeMap, VecDeque};

use lookout_api as api;
use serde::Deserialize;
use serde_json::{Map, Value};

pub use lookout_api::{
    BusTotals, CheckStatus, HealthStatus, Host, NatsLink, Plugin, PluginCounters, PluginLimits,
    PluginStatus, Pool, PoolEntry, PreviousPlugin, Swap, Window, Worker,
};

/// Samples kept per pool: two minutes at one a second.
pub const HISTORY: usize = 120;
/// Events kept in the tap.
pub const TAP: usize = 200;

/// What the host pushes: `lookout-api`'s overview, its events read as [`EventView`]s and its
/// checks' values as whatever JSON they are.
pub type Overview = api::Overview<Value, EventView>;
/// The health checks and what they add up to.
pub type Health = api::HealthReport<Value>;
/// One health check; `value` and `threshold` are shown as the JSON they are.
pub type Check = api::Check<Value>;
/// Failed requests and worker crashes of one kind, as the host groups them: a count, first
/// and last seen, and the latest one whole.
pub type ErrorGroup = api::ErrorGroup<EventView>;

/// Rules named on a plugin's row; the rest are summed up as `+N more`.
pub const TOP_RULES: usize = 3;

/// How a plugin reads on its row.
pub trait PluginRow {
    /// `redactions: sensitive-key 40 · gitlab-pat 12 · +2 more`: the [`TOP_RULES`] rules
    /// with the most redactions (ties by name); `None` when it has redacted nothing.
    fn redactions_line(&self) -> Option<String>;
}

impl PluginRow for Plugin {
    fn redactions_line(&self) -> Option<String> {
        let redactions = self.redactions.as_ref()?;
        let mut rules: Vec<(&str, u64)> = redactions
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(rule, n)| (rule.as_str(), *n))
            .collect();
        if rules.is_empty() {
            return None;
        }
        // Most first; the map is by name, and the sort is stable, so ties stay by name.
        rules.sort_by_key(|&(_, n)| std::cmp::Reverse(n));
        let mut parts: Vec<String> = rules
            .iter()
            .take(TOP_RULES)
            .map(|(rule, n)| format!("{rule} {n}"))
            .collect();
        if rules.len() > TOP_RULES {
            parts.push(format!("+{} more", rules.len() - TOP_RULES));
        }
        Some(format!("redactions: {}", parts.join(" · ")))
    }
}

/// An event as the host sends it (sanitized).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct EventView {
    pub id: u64,
    pub kind: String,
    pub timestamp_ns: u64,
    pub correlation_id: Option<String>,
    pub severity: String,
    pub fields: Map<String, Value>,
    /// The host it came from over NATS; `None` for this host's own.
    pub origin: Option<String>,
}

impl EventView {
    /// The host to show: its origin, or `this host`.
    pub fn host(&self) -> &str {
        self.origin.as_deref().unwrap_or(THIS_HOST)
    }

    /// A field as text (`""` when absent).
    pub fn text(&self, key: &str) -> String {
        match self.fields.get(key) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Null) | None => String::new(),
            Some(other) => other.to_string(),
        }
    }

    /// `key=value  key=value`.
    pub fn fields_text(&self) -> String {
        self.fields
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => format!("{k}={s}"),
                other => format!("{k}={other}"),
            })
            .collect::<Vec<_>>()
            .join("  ")
    }

    /// The one-line message of an error event.
    pub fn error_message(&self) -> String {
        ["error_message", "reason"]
            .iter()
            .map(|k| self.text(k))
            .find(|m| !m.is_empty())
            .unwrap_or_else(|| self.kind.clone())
    }
}

/// How an error group reads on its row.
pub trait ErrorRow {
    /// `demo`, or `demo @ web-2` for another host's pool.
    fn pool_text(&self) -> String;
    /// `once`, or `12× since 12:30:01`.
    fn seen_text(&self) -> String;
    /// What identifies the row as it shows now — its latest event, by host and id — so a new
    /// occurrence redraws it.
    fn row_key(&self) -> (Option<String>, u64);
}

impl ErrorRow for ErrorGroup {
    fn pool_text(&self) -> String {
        match &self.origin {
            Some(origin) => format!("{} @ {origin}", self.pool),
            None => self.pool.clone(),
        }
    }

    fn seen_text(&self) -> String {
        if self.count <= 1 {
            "once".to_string()
        } else {
            format!("{}× since {}", self.count, format_time(self.first_seen_ns))
        }
    }

    fn row_key(&self) -> (Option<String>, u64) {
        (self.origin.clone(), self.latest.id)
    }
}

/// One sample of a pool's totals.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Sample {
    at_s: f64,
    requests: u64,
    failed: u64,
}

/// The dashboard's state: the last overview, recent history, the tap.
#[derive(Clone, Debug, Default)]
pub struct Dashboard {
    pub overview: Option<Overview>,
    samples: BTreeMap<String, VecDeque<Sample>>,
    bus: VecDeque<(f64, f64)>,
    /// Times readiness changed, for an indicator that visibly moves on a transition.
    pub health_transitions: u64,
    pub tap: VecDeque<EventView>,
    /// Events that arrived while the tap was paused.
    pub tap_missed: u64,
    pub tap_paused: bool,
}

impl Dashboard {
    /// Takes a new overview (a push from the host).
    pub fn apply(&mut self, overview: Overview) {
        let at_s = overview.host.uptime_s;
        // A restarted host starts its uptime again: its history starts afresh too.
        if self
            .overview
            .as_ref()
            .is_some_and(|o| o.host.uptime_s > at_s)
        {
            self.samples.clear();
            self.bus.clear();
        }
        if let Some(previous) = &self.overview
            && previous.health.status != overview.health.status
        {
            self.health_transitions += 1;
        }
        for entry in &overview.pools {
            let samples = self.samples.entry(entry.pool.name.clone()).or_default();
            samples.push_back(Sample {
                at_s,
                requests: entry.pool.requests_total,
                failed: entry.pool.failed_total,
            });
            while samples.len() > HISTORY {
                samples.pop_front();
            }
        }
        self.samples
            .retain(|name, _| overview.pools.iter().any(|p| &p.pool.name == name));
        self.bus.push_back((at_s, overview.bus.published));
        while self.bus.len() > HISTORY {
            self.bus.pop_front();
        }
        self.overview = Some(overview);
    }

    /// Requests per second over the last `seconds`, and the share of them that failed.
    pub fn rates(&self, pool: &str, seconds: f64) -> (f64, f64) {
        let Some(samples) = self.samples.get(pool) else {
            return (0.0, 0.0);
        };
        let Some(last) = samples.back() else {
            return (0.0, 0.0);
        };
        let first = samples
            .iter()
            .find(|s| last.at_s - s.at_s <= seconds)
            .unwrap_or(last);
        let span = last.at_s - first.at_s;
        if span <= 0.0 {
            return (0.0, 0.0);
        }
        let requests = last.requests.saturating_sub(first.requests);
        let failed = last.failed.saturating_sub(first.failed);
        let error_rate = if requests == 0 {
            0.0
        } else {
            failed as f64 / requests as f64
        };
        (requests as f64 / span, error_rate)
    }

    /// Requests per second between consecutive samples, oldest first (for a sparkline).
    pub fn request_series(&self, pool: &str) -> Vec<f64> {
        self.series(pool, |a, b| b.requests.saturating_sub(a.requests))
    }

    /// Failed requests per second between consecutive samples.
    pub fn error_series(&self, pool: &str) -> Vec<f64> {
        self.series(pool, |a, b| b.failed.saturating_sub(a.failed))
    }

    fn series(&self, pool: &str, delta: impl Fn(&Sample, &Sample) -> u64) -> Vec<f64> {
        let Some(samples) = self.samples.get(pool) else {
            return Vec::new();
        };
        samples
            .iter()
            .zip(samples.iter().skip(1))
            .map(|(a, b)| {
                let span = (b.at_s - a.at_s).max(1e-3);
                delta(a, b) as f64 / span
            })
            .collect()
    }

    /// Events published per second over the last samples.
    pub fn bus_rate(&self) -> f64 {
        match (self.bus.front(), self.bus.back()) {
            (Some(a), Some(b)) if b.0 > a.0 => (b.1 - a.1).max(0.0) / (b.0 - a.0),
            _ => 0.0,
        }
    }

    /// An event from the live stream, for the tap.
    pub fn tap_push(&mut self, event: EventView) {
        if self.tap_paused {
            self.tap_missed += 1;
            return;
        }
        self.tap.push_front(event);
        self.tap.truncate(TAP);
    }

    /// The hosts the tap has seen, this host first: what its host selector offers.
    pub fn hosts(&self) -> Vec<String> {
        let mut others: Vec<String> = self
            .tap
            .iter()
            .filter_map(|e| e.origin.clone())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        others.insert(0, THIS_HOST.to_string());
        others
    }

    pub fn set_paused(&mut self, paused: bool) {
        self.tap_paused = paused;
        if !paused {
            self.tap_missed = 0;
        }
    }
}

/// How the tap names the host it runs on (events without an origin).
pub const THIS_HOST: &str = "this host";

/// What the tap shows: kinds starting with `kind`, correlation ids containing `correlation`,
/// from `host` (empty: every host; [`THIS_HOST`]: this host's own; else an origin).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TapFilter {
    pub kind: String,
    pub correlation: String,
    pub host: String,
}

impl TapFilter {
    pub fn matches(&self, event: &EventView) -> bool {
        let kind = self.kind.trim();
        let correlation = self.correlation.trim();
        (self.host.is_empty() || event.host() == self.host)
            && event.kind.starts_with(kind)
            && (correlation.is_empty()
                || event
                    .correlation_id
                    .as_deref()
                    .is_some_and(|c| c.contains(correlation)))
    }
}

/// `512 B`, `1.5 KiB`, `23.4 MiB`, `1.2 GiB`.
pub fn format_bytes(bytes: f64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = bytes.max(0.0);
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{value:.0} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// `42 s`, `3 m 05 s`, `2 h 14 m`, `3 d 4 h`.
pub fn format_uptime(seconds: f64) -> String {
    let s = seconds.max(0.0) as u64;
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} m {:02} s", s / 60, s % 60),
        3600..86_400 => format!("{} h {:02} m", s / 3600, s % 3600 / 60),
        _ => format!("{} d {} h", s / 86_400, s % 86_400 / 3600),
    }
}

/// `0.42 ms`, `12.3 ms`, `1.25 s`; `—` when there is nothing to say.
pub fn format_ms(ms: Option<f64>) -> String {
    match ms {
        None => "—".to_string(),
        Some(ms) if ms < 1.0 => format!("{ms:.2} ms"),
        Some(ms) if ms < 1000.0 => format!("{ms:.1} ms"),
        Some(ms) => format!("{:.2} s", ms / 1000.0),
    }
}

/// `0/s`, `0.4/s`, `12/s`, `1.2k/s`.
pub fn format_rate(per_second: f64) -> String {
    match per_second {
        r if r <= 0.0 => "0/s".to_string(),
        r if r < 10.0 => format!("{r:.1}/s"),
        r if r < 1000.0 => format!("{r:.0}/s"),
        r => format!("{:.1}k/s", r / 1000.0),
    }
}

/// `0 %`, `2.5 %`, `100 %`.
pub fn format_percent(share: f64) -> String {
    let p = share.clamp(0.0, 1.0) * 100.0;
    if p == 0.0 || p >= 10.0 {
        format!("{p:.0} %")
    } else {
        format!("{p:.1} %")
    }
}

/// `12:34:56` (UTC) of a timestamp in nanoseconds.
pub fn format_time(timestamp_ns: u64) -> String {
    let s = timestamp_ns / 1_000_000_000;
    format!("{:02}:{:02}:{:02}", s / 3600 % 24, s / 60 % 60, s % 60)
}

/// SVG polyline points drawing `values` in a `width` × `height` box (0 at the bottom;
/// the top is the largest value, or 1 when all are 0).
pub fn sparkline(values: &[f64], width: f64, height: f64) -> String {
    if values.is_empty() {
        return String::new();
    }
    let max = values.iter().cloned().fold(0.0_f64, f64::max).max(1.0);
    let step = if values.len() > 1 {
        width / (values.len() - 1) as f64
    } else {
        0.0
    };
    values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let x = i as f64 * step;
            let y = height - (v.max(0.0) / max) * height;
            format!("{x:.1},{y:.1}")
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn overview(uptime_s: f64, requests: u64, failed: u64, status: &str) -> Overview {
        Overview {
            host: Host {
                uptime_s,
                ..Host::default()
            },
            health: Health {
                status: api::HealthStatus::from_word(status),
                ready: status != "not_ready",
                ..Health::default()
            },
            pools: vec![PoolEntry {
                pool: Pool {
                    name: "demo".into(),
                    requests_total: requests,
                    failed_total: failed,
                    ..Pool::default()
                },
                ..PoolEntry::default()
            }],
            bus: BusTotals {
                published: requests as f64 * 2.0,
                ..BusTotals::default()
            },
            ..Overview::default()
        }
    }

    #[test]
    fn the_overview_parses_leniently() {
        let json = r#"{"host":{"version":"0.1.0","uptime_s":3.5,"memory_bytes":1e6,"new_field":1},
            "pools":[{"pool":{"name":"demo","workers":[{"slot":0,"id":"demo-1","pid":7,"state":"busy"}]},"window":{"requests":3,"p95_ms":null}}],
            "plugins":[{"name":"redact","world":"sanitizer","version":2,"status":{"state":"running"},"counters":{"calls":5,"ns_per_event":812.5}}]}"#;
        let o: Overview = serde_json::from_str(json).unwrap();
        assert_eq!(o.host.version, "0.1.0");
        assert_eq!(o.pools[0].pool.workers[0].state, "busy");
        assert_eq!(o.pools[0].window.p95_ms, None);
        assert_eq!(o.plugins[0].counters.ns_per_event, Some(812.5));
        assert!(o.errors.is_empty());
    }

    #[test]
    fn a_sanitizer_row_names_its_top_rules() {
        let json = r#"{"name":"redact","world":"sanitizer","redactions":
            {"gitlab-pat":12,"sensitive-key":40,"jwt":3,"aws-access-key":12,"never":0}}"#;
        let p: Plugin = serde_json::from_str(json).unwrap();
        assert_eq!(
            p.redactions_line().as_deref(),
            Some("redactions: sensitive-key 40 · aws-access-key 12 · gitlab-pat 12 · +1 more")
        );
        let one: Plugin =
            serde_json::from_str(r#"{"name":"redact","redactions":{"jwt":1}}"#).unwrap();
        assert_eq!(one.redactions_line().as_deref(), Some("redactions: jwt 1"));
        // A consumer has no `redactions`; a sanitizer that redacted nothing shows none.
        let consumer: Plugin = serde_json::from_str(r#"{"name":"digest"}"#).unwrap();
        assert_eq!(consumer.redactions_line(), None);
        let quiet: Plugin = serde_json::from_str(r#"{"redactions":{}}"#).unwrap();
        assert_eq!(quiet.redactions_line(), None);
    }

    #[test]
    fn rates_and_series_come_from_the_totals() {
        let mut d = Dashboard::default();
        d.apply(overview(10.0, 100, 0, "ok"));
        d.apply(overview(11.0, 110, 1, "ok"));
        d.apply(overview(12.0, 130, 5, "ok"));
        let (rate, errors) = d.rates("demo", 60.0);
        assert_eq!(rate, 15.0);
        assert_eq!(errors, 5.0 / 30.0);
        assert_eq!(d.request_series("demo"), [10.0, 20.0]);
        assert_eq!(d.error_series("demo"), [1.0, 4.0]);
        assert_eq!(d.bus_rate(), 30.0);
        assert_eq!(d.rates("nope", 60.0), (0.0, 0.0));
    }

    #[test]
    fn history_is_bounded_and_restarts_with_the_host() {
        let mut d = Dashboard::default();
        for i in 0..(HISTORY + 30) {
            d.apply(overview(i as f64, i as u64, 0, "ok"));
        }
        assert_eq!(d.request_series("demo").len(), HISTORY - 1);
        // The host restarted: its uptime went back.
        d.apply(overview(1.0, 0, 0, "ok"));
        assert!(d.request_series("demo").is_empty());
        assert_eq!(d.rates("demo", 60.0), (0.0, 0.0));
    }

    #[test]
    fn health_transitions_are_counted() {
        let mut d = Dashboard::default();
        d.apply(overview(1.0, 0, 0, "ok"));
        d.apply(overview(2.0, 0, 0, "ok"));
        assert_eq!(d.health_transitions, 0);
        d.apply(overview(3.0, 0, 0, "not_ready"));
        d.apply(overview(4.0, 0, 0, "ok"));
        assert_eq!(d.health_transitions, 2);
    }

    #[test]
    fn the_tap_pauses_and_filters() {
        let event = |kind: &str, cid: Option<&str>| EventView {
            kind: kind.into(),
            correlation_id: cid.map(str::to_string),
            ..EventView::default()
        };
        let mut d = Dashboard::default();
        d.tap_push(event("request.started", Some("abc-1")));
        d.set_paused(true);
        d.tap_push(event("request.completed", Some("abc-1")));
        assert_eq!((d.tap.len(), d.tap_missed), (1, 1));
        d.set_paused(false);
        assert_eq!(d.tap_missed, 0);
        for _ in 0..(TAP + 5) {
            d.tap_push(event("x", None));
        }
        assert_eq!(d.tap.len(), TAP);

        let filter = TapFilter {
            kind: "request.".into(),
            correlation: "abc".into(),
            host: String::new(),
        };
        assert!(filter.matches(&event("request.started", Some("abc-1"))));
        assert!(!filter.matches(&event("worker.started", Some("abc-1"))));
        assert!(!filter.matches(&event("request.started", None)));
        assert!(TapFilter::default().matches(&event("anything", None)));

        // One host or all: this host's events have no origin; others' name theirs.
        let remote = EventView {
            origin: Some("web-2".into()),
            ..event("request.started", None)
        };
        let local = event("request.started", None);
        let only = |host: &str| TapFilter {
            host: host.into(),
            ..TapFilter::default()
        };
        assert!(only("").matches(&remote) && only("").matches(&local));
        assert!(only("web-2").matches(&remote) && !only("web-2").matches(&local));
        assert!(only(THIS_HOST).matches(&local) && !only(THIS_HOST).matches(&remote));
        let mut d = Dashboard::default();
        d.tap_push(remote.clone());
        d.tap_push(local);
        d.tap_push(remote);
        assert_eq!(d.hosts(), [THIS_HOST, "web-2"]);
    }

    #[test]
    fn numbers_read_well() {
        assert_eq!(format_bytes(512.0), "512 B");
        assert_eq!(format_bytes(1536.0), "1.5 KiB");
        assert_eq!(format_bytes(40.0 * 1024.0 * 1024.0), "40.0 MiB");
        assert_eq!(format_uptime(42.0), "42 s");
        assert_eq!(format_uptime(185.0), "3 m 05 s");
        assert_eq!(format_uptime(8040.0), "2 h 14 m");
        assert_eq!(format_uptime(273_600.0), "3 d 4 h");
        assert_eq!(format_ms(None), "—");
        assert_eq!(format_ms(Some(0.42)), "0.42 ms");
        assert_eq!(format_ms(Some(12.34)), "12.3 ms");
        assert_eq!(format_ms(Some(1250.0)), "1.25 s");
        assert_eq!(format_rate(0.0), "0/s");
        assert_eq!(format_rate(0.42), "0.4/s");
        assert_eq!(format_rate(12.4), "12/s");
        assert_eq!(format_rate(1234.0), "1.2k/s");
        assert_eq!(format_percent(0.0), "0 %");
        assert_eq!(format_percent(0.025), "2.5 %");
        assert_eq!(format_percent(1.0), "100 %");
        assert_eq!(format_time(1_795_845_340_787_041_645), "05:55:40");
    }

    #[test]
    fn sparklines_fit_their_box() {
        assert_eq!(sparkline(&[], 100.0, 20.0), "");
        assert_eq!(sparkline(&[0.0, 0.0], 100.0, 20.0), "0.0,20.0 100.0,20.0");
        assert_eq!(
            sparkline(&[1.0, 4.0, 2.0], 100.0, 20.0),
            "0.0,15.0 50.0,0.0 100.0,10.0"
        );
    }

    #[test]
    fn error_groups_say_how_often_and_since_when() {
        let json = r#"{"errors":[
            {"origin":null,"pool":"demo","command":"fail","error_kind":"ValueError","count":50,
             "first_seen_ns":1795845340787041645,"last_seen_ns":1795845400000000000,
             "latest":{"id":91,"kind":"request.completed","correlation_id":"c-9",
                       "fields":{"error_message":"bad invoice","traceback":"Traceback …"}}},
            {"origin":"web-2","pool":"demo","command":null,"error_kind":"worker_crashed","count":1,
             "first_seen_ns":5,"last_seen_ns":5,
             "latest":{"id":7,"kind":"worker.crashed","fields":{"reason":"signal 9"}}}]}"#;
        let o: Overview = serde_json::from_str(json).unwrap();
        let [many, crash] = &o.errors[..] else {
            panic!("{:?}", o.errors)
        };
        assert_eq!(many.seen_text(), "50× since 05:55:40");
        assert_eq!(many.pool_text(), "demo");
        assert_eq!(many.latest.error_message(), "bad invoice");
        assert_eq!(many.latest.text("traceback"), "Traceback …");
        assert_eq!(crash.seen_text(), "once");
        assert_eq!(crash.pool_text(), "demo @ web-2");
        assert_eq!(crash.command, None);
        assert_eq!(crash.latest.error_message(), "signal 9");
        // A new occurrence changes the row's key, so the row shows it.
        let mut again = many.clone();
        again.count += 1;
        again.latest.id = 92;
        assert_ne!(again.row_key(), many.row_key());
    }

    #[test]
    fn error_events_say_what_happened() {
        let e: EventView = serde_json::from_str(
            r#"{"kind":"request.completed","fields":{"error_message":"boom","pool":"demo","success":false}}"#,
        )
        .unwrap();
        assert_eq!(e.error_message(), "boom");
        assert_eq!(e.text("pool"), "demo");
        assert_eq!(e.text("missing"), "");
        let crash: EventView =
            serde_json::from_str(r#"{"kind":"worker.crashed","fields":{"reason":"signal 9"}}"#)
                .unwrap();
        assert_eq!(crash.error_message(), "signal 9");
    }
}
