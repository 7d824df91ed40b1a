//! `[otlp]` in `lookout.toml`: where the exporter sends, what, and how hard it tries. Read
//! once at start (a change is refused naming its settings: restart to apply it).

use std::collections::BTreeMap;
use std::time::Duration;

use lookout_core::Invalid;
use serde::{Deserialize, Serialize};

/// Where a collector listens for OTLP over HTTP by default.
pub const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:4318";
/// How long one export request may take, in milliseconds.
pub const DEFAULT_TIMEOUT_MS: u64 = 10_000;
/// Items (spans, or log records) each signal's queue holds before new ones are dropped.
pub const DEFAULT_QUEUE_CAPACITY: usize = 8192;
/// The most items in one export request.
pub const DEFAULT_BATCH_MAX: usize = 512;
/// How long an item may wait for its batch to fill before it is sent anyway, in milliseconds.
pub const DEFAULT_FLUSH_INTERVAL_MS: u64 = 1000;
/// Retries of one batch after the first try, before it is dropped (`retries_exhausted`).
pub const DEFAULT_MAX_RETRIES: u32 = 10;
/// The first pause before a retry, in milliseconds; it doubles on each retry.
pub const DEFAULT_BACKOFF_INITIAL_MS: u64 = 100;
/// The longest pause between retries, in milliseconds.
pub const DEFAULT_BACKOFF_MAX_MS: u64 = 5000;
/// `service.name` of everything exported.
pub const DEFAULT_SERVICE_NAME: &str = "lookout";

/// Exporting sanitized spans and events to an OpenTelemetry collector (OTLP). Off by
/// default.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OtlpConfig {
    /// Off unless turned on.
    pub enabled: bool,
    /// The collector's base URL, `http://` or `https://`; the signal paths `/v1/traces` and
    /// `/v1/logs` are appended.
    pub endpoint: String,
    /// `http/protobuf` (gRPC is not supported yet).
    pub protocol: Protocol,
    /// Sent with every request (an API key, `authorization`, a tenant): the values are
    /// secrets, masked wherever the configuration is shown.
    pub headers: BTreeMap<String, String>,
    /// How long one export request may take, in milliseconds.
    pub timeout_ms: u64,
    /// Export `trace.span` events as spans.
    pub traces: bool,
    /// Export every other event as a log record.
    pub logs: bool,
    /// Items each signal's queue holds (waiting or being sent); past it, new ones are dropped
    /// and counted (`queue_full`).
    pub queue_capacity: usize,
    /// The most items in one export request.
    pub batch_max: usize,
    /// How long an item may wait for its batch to fill before it is sent anyway, in
    /// milliseconds.
    pub flush_interval_ms: u64,
    /// Retries of a batch (after connection errors, 429, 502, 503, 504) before it is dropped
    /// and counted (`retries_exhausted`).
    pub max_retries: u32,
    /// The first pause before a retry, in milliseconds; it doubles each time, up to
    /// `backoff_max_ms`. A `Retry-After` in seconds from the collector is honoured instead.
    pub backoff_initial_ms: u64,
    pub backoff_max_ms: u64,
    /// `service.name` of the resource everything is exported under.
    pub service_name: String,
}

/// How OTLP travels.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Protocol {
    /// Protobuf messages POSTed over HTTP (a collector's port 4318).
    #[default]
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
    /// gRPC (port 4317): refused by the config check for now.
    #[serde(rename = "grpc")]
    Grpc,
}

impl Default for OtlpConfig {
    fn default() -> Self {
        OtlpConfig {
            enabled: false,
            endpoint: DEFAULT_ENDPOINT.into(),
            protocol: Protocol::HttpProtobuf,
            headers: BTreeMap::new(),
            timeout_ms: DEFAULT_TIMEOUT_MS,
            traces: true,
            logs: true,
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            batch_max: DEFAULT_BATCH_MAX,
            flush_interval_ms: DEFAULT_FLUSH_INTERVAL_MS,
            max_retries: DEFAULT_MAX_RETRIES,
            backoff_initial_ms: DEFAULT_BACKOFF_INITIAL_MS,
            backoff_max_ms: DEFAULT_BACKOFF_MAX_MS,
            service_name: DEFAULT_SERVICE_NAME.into(),
        }
    }
}

/// Headers lookout sets itself: a configured one would break the request.
const OWN_HEADERS: [&str; 2] = ["content-type", "content-length"];

impl OtlpConfig {
    /// Every problem, each named by its field under `otlp.`. Checked whether or not export is
    /// on, so a typo shows before the day it is turned on.
    pub fn problems(&self) -> Vec<Invalid> {
        let mut problems = Vec::new();
        let mut bad =
            |field: &str, reason: String| problems.push(Invalid::new(field, reason).under("otlp"));
        match reqwest::Url::parse(&self.endpoint) {
            Err(e) => bad(
                "endpoint",
                format!(
                    "`{}` is not a URL like {DEFAULT_ENDPOINT}: {e}",
                    self.endpoint
                ),
            ),
            Ok(url) if !matches!(url.scheme(), "http" | "https") => bad(
                "endpoint",
                format!("`{}`: use http:// or https://", self.endpoint),
            ),
            Ok(url) if url.query().is_some() || url.fragment().is_some() => bad(
                "endpoint",
                format!(
                    "`{}`: a base URL without query or fragment (/v1/traces and /v1/logs are appended)",
                    self.endpoint
                ),
            ),
            Ok(url) if !url.username().is_empty() || url.password().is_some() => bad(
                "endpoint",
                "no credentials in the URL: put them in `otlp.headers` (masked)".into(),
            ),
            Ok(_) => {}
        }
        if self.protocol == Protocol::Grpc {
            bad(
                "protocol",
                "`grpc` is not supported yet: use `http/protobuf` (a collector's port 4318)".into(),
            );
        }
        for (name, value) in &self.headers {
            let field = format!("headers.{name}");
            match reqwest::header::HeaderName::from_bytes(name.as_bytes()) {
                Err(_) => bad(&field, "not a valid HTTP header name".into()),
                Ok(header) if OWN_HEADERS.contains(&header.as_str()) => {
                    bad(&field, "set by lookout itself".into());
                }
                Ok(_) => {}
            }
            // The value is a secret: the reason never quotes it.
            if reqwest::header::HeaderValue::from_str(value).is_err() {
                bad(
                    &field,
                    "the value is not a valid HTTP header value (visible ASCII)".into(),
                );
            }
        }
        if self.timeout_ms == 0 || self.timeout_ms > 300_000 {
            bad("timeout_ms", "between 1 and 300000".into());
        }
        if self.enabled && !self.traces && !self.logs {
            bad(
                "logs",
                "export at least one of `traces` and `logs` (or turn `otlp.enabled` off)".into(),
            );
        }
        if self.queue_capacity == 0 || self.queue_capacity > 10_000_000 {
            bad("queue_capacity", "between 1 and 10000000".into());
        }
        if self.batch_max == 0 || self.batch_max > 65_536 {
            bad("batch_max", "between 1 and 65536".into());
        }
        if self.flush_interval_ms > 60_000 {
            bad("flush_interval_ms", "at most 60000".into());
        }
        if self.max_retries > 1000 {
            bad("max_retries", "at most 1000".into());
        }
        if self.backoff_initial_ms == 0 || self.backoff_initial_ms > 60_000 {
            bad("backoff_initial_ms", "between 1 and 60000".into());
        }
        if self.backoff_max_ms < self.backoff_initial_ms || self.backoff_max_ms > 600_000 {
            bad(
                "backoff_max_ms",
                "at least `backoff_initial_ms` and at most 600000".into(),
            );
        }
        if self.service_name.trim().is_empty() || self.service_name.len() > 256 {
            bad("service_name", "1–256 characters".into());
        }
        problems
    }

    /// The URL one signal is POSTed to: the endpoint with `path` appended.
    pub(crate) fn signal_url(&self, path: &str) -> String {
        format!("{}{path}", self.endpoint.trim_end_matches('/'))
    }

    /// The pause before retry number `retry` (1 for the first): doubling from
    /// `backoff_initial_ms`, never longer than `backoff_max_ms`.
    pub(crate) fn backoff(&self, retry: u32) -> Duration {
        let doubled = self
            .backoff_initial_ms
            .saturating_mul(1u64 << retry.saturating_sub(1).min(32));
        Duration::from_millis(doubled.min(self.backoff_max_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_valid_and_off() {
        let config = OtlpConfig::default();
        assert!(!config.enabled);
        assert_eq!(config.problems(), []);
        assert_eq!(
            config.signal_url("/v1/traces"),
            "http://127.0.0.1:4318/v1/traces"
        );
    }

    #[test]
    fn every_bad_field_is_named_at_once() {
        let mut headers = BTreeMap::new();
        headers.insert("bad header".to_string(), "x".to_string());
        headers.insert("x-api-key".to_string(), "line\nbreak-secret".to_string());
        headers.insert("Content-Type".to_string(), "text/plain".to_string());
        let config = OtlpConfig {
            enabled: true,
            endpoint: "ftp://collector".into(),
            protocol: Protocol::Grpc,
            headers,
            timeout_ms: 0,
            traces: false,
            logs: false,
            queue_capacity: 0,
            batch_max: 0,
            flush_interval_ms: 60_001,
            max_retries: 1001,
            backoff_initial_ms: 0,
            backoff_max_ms: 700_000,
            service_name: " ".into(),
        };
        let problems = config.problems();
        let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "otlp.endpoint",
                "otlp.protocol",
                "otlp.headers.Content-Type",
                "otlp.headers.bad header",
                "otlp.headers.x-api-key",
                "otlp.timeout_ms",
                "otlp.logs",
                "otlp.queue_capacity",
                "otlp.batch_max",
                "otlp.flush_interval_ms",
                "otlp.max_retries",
                "otlp.backoff_initial_ms",
                "otlp.backoff_max_ms",
                "otlp.service_name",
            ]
        );
        let grpc = &problems[1];
        assert!(grpc.reason.contains("not supported yet"), "{grpc}");
        let shown = format!("{problems:?}");
        assert!(!shown.contains("break-secret"), "{shown}");
    }

    #[test]
    fn grpc_parses_but_is_refused_and_unknown_keys_are_errors() {
        let config: OtlpConfig = serde_json::from_value(serde_json::json!({
            "protocol": "grpc"
        }))
        .unwrap();
        assert_eq!(config.protocol, Protocol::Grpc);
        assert_eq!(config.problems()[0].field, "otlp.protocol");
        let typo = serde_json::from_value::<OtlpConfig>(serde_json::json!({"endpoints": "x"}));
        assert!(typo.is_err());
    }

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let config = OtlpConfig::default();
        let pauses: Vec<u64> = (1..=8)
            .map(|r| config.backoff(r).as_millis() as u64)
            .collect();
        assert_eq!(pauses, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        assert_eq!(config.backoff(u32::MAX), Duration::from_millis(5000));
    }

    #[test]
    fn a_trailing_slash_is_not_doubled() {
        let config = OtlpConfig {
            endpoint: "https://collector.example:4318/otlp/".into(),
            ..OtlpConfig::default()
        };
        assert_eq!(config.problems(), []);
        assert_eq!(
            config.signal_url("/v1/logs"),
            "https://collector.example:4318/otlp/v1/logs"
        );
    }
}
