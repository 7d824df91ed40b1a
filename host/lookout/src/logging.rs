//! The host's logs: JSON on stderr, one object a line, with the same top-level keys on every
//! line — `timestamp` (RFC 3339, UTC), `level`, `target`, `message`, `fields` (the line's
//! context as a flat object) and `correlation_id` and `trace_id` when the line belongs to a
//! request (the trace id ties the line to the request's OTLP trace) — or a
//! human-readable format for local use. The level filter can be changed while the host runs.
//! The one line on stdout, where the host listens, has the same shape in the JSON format.

use std::fmt::Write as _;
use std::sync::Arc;

use anyhow::Context;
use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, reload};

/// How log lines look.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// One JSON object a line (the default; what the log schema in tests/ describes).
    Json,
    /// For people at a terminal.
    Pretty,
}

/// Changes the level filter of the running host.
#[derive(Clone)]
pub struct LogLevel {
    handle: reload::Handle<EnvFilter, tracing_subscriber::Registry>,
    current: Arc<std::sync::Mutex<String>>,
}

impl std::fmt::Debug for LogLevel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogLevel")
            .field("current", &self.level_now())
            .finish()
    }
}

impl LogLevel {
    fn level_now(&self) -> String {
        self.current.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Applies a new filter, or says why it is not one.
    pub fn set_level(&self, filter: &str) -> Result<(), String> {
        let parsed = EnvFilter::try_new(filter)
            .map_err(|e| format!("`{filter}` is not a level filter: {e}"))?;
        self.handle
            .reload(parsed)
            .map_err(|e| format!("cannot apply the filter: {e}"))?;
        if let Ok(mut current) = self.current.lock() {
            *current = filter.to_string();
        }
        Ok(())
    }
}

/// Installs the global subscriber. `RUST_LOG`, when set, wins over `level`.
pub fn init(level: &str, format: LogFormat) -> anyhow::Result<LogLevel> {
    let level = match std::env::var("RUST_LOG") {
        Ok(env) if !env.is_empty() => env,
        _ => level.to_string(),
    };
    let filter =
        EnvFilter::try_new(&level).with_context(|| format!("invalid log level `{level}`"))?;
    let (filter, handle) = reload::Layer::new(filter);
    let output = match format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .event_format(JsonLine)
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Pretty => tracing_subscriber::fmt::layer()
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_writer(std::io::stderr)
            .boxed(),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(output)
        .try_init()
        .context("cannot install the logger")?;
    Ok(LogLevel {
        handle,
        current: Arc::new(std::sync::Mutex::new(level)),
    })
}

/// The one line on stdout: where the host listens. A sentence for people in the pretty
/// format; in the JSON format a record shaped like every log line (`message = "listening"`,
/// `fields.url`, `fields.dashboard`), since container log pipelines read both streams.
pub fn listening_line(format: LogFormat, addr: std::net::SocketAddr) -> String {
    let url = format!("http://{addr}");
    match format {
        LogFormat::Pretty => format!("lookout: listening on {url} (dashboard at {url}/)"),
        LogFormat::Json => {
            let mut fields = Map::new();
            fields.insert("dashboard".into(), Value::String(format!("{url}/")));
            fields.insert("url".into(), Value::String(url));
            let line = Line {
                timestamp: rfc3339_now(),
                level: "INFO",
                target: "lookout",
                message: "listening".into(),
                correlation_id: None,
                trace_id: None,
                fields,
            };
            serde_json::to_string(&line).unwrap_or_default()
        }
    }
}

/// The JSON line format.
struct JsonLine;

impl<S, N> FormatEvent<S, N> for JsonLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let meta = event.metadata();
        let mut fields = Fields::default();
        event.record(&mut fields);
        let line = Line {
            timestamp: rfc3339_now(),
            level: meta.level().as_str(),
            target: meta.target(),
            message: fields.message.unwrap_or_default(),
            correlation_id: fields.correlation_id,
            trace_id: fields.trace_id,
            fields: fields.rest,
        };
        let text = serde_json::to_string(&line).map_err(|_| std::fmt::Error)?;
        writeln!(writer, "{text}")
    }
}

/// One log line, keys in this order.
#[derive(serde::Serialize)]
struct Line<'a> {
    timestamp: String,
    level: &'a str,
    target: &'a str,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    correlation_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    trace_id: Option<String>,
    fields: Map<String, Value>,
}

#[derive(Default)]
struct Fields {
    message: Option<String>,
    correlation_id: Option<String>,
    trace_id: Option<String>,
    rest: Map<String, Value>,
}

impl Fields {
    fn put(&mut self, field: &Field, value: Value) {
        match field.name() {
            "message" => {
                self.message = Some(match value {
                    Value::String(s) => s,
                    other => other.to_string(),
                })
            }
            "correlation_id" => {
                self.correlation_id = Some(match value {
                    Value::String(s) => s,
                    other => other.to_string(),
                })
            }
            "trace_id" => {
                self.trace_id = Some(match value {
                    Value::String(s) => s,
                    other => other.to_string(),
                })
            }
            name => {
                self.rest.insert(name.to_string(), value);
            }
        }
    }
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Value::String(value.to_string()));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, Value::from(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, Value::from(value));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, Value::from(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Value::Bool(value));
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, Value::String(value.to_string()));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        // `%x` fields and the message arrive here, already formatted.
        let mut text = String::new();
        let _ = write!(text, "{value:?}");
        self.put(field, Value::String(text));
    }
}

/// Now as RFC 3339 in UTC with microseconds: `2026-11-28T05:10:37.542421Z`.
fn rfc3339_now() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        now.subsec_micros()
    )
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian (Howard Hinnant's method).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::{LogFormat, civil_from_days, listening_line};

    /// Scripts find the address in either format; in JSON the line is a log record.
    #[test]
    fn the_listening_line_says_where_in_either_format() {
        let addr = "127.0.0.1:8787".parse().unwrap();
        assert_eq!(
            listening_line(LogFormat::Pretty, addr),
            "lookout: listening on http://127.0.0.1:8787 (dashboard at http://127.0.0.1:8787/)"
        );
        let json: serde_json::Value =
            serde_json::from_str(&listening_line(LogFormat::Json, addr)).unwrap();
        assert_eq!(
            (&json["level"], &json["target"], &json["message"]),
            (&"INFO".into(), &"lookout".into(), &"listening".into())
        );
        assert_eq!(json["fields"]["url"], "http://127.0.0.1:8787");
        assert_eq!(json["fields"]["dashboard"], "http://127.0.0.1:8787/");
        assert!(json["timestamp"].as_str().unwrap().ends_with('Z'));
    }

    #[test]
    fn dates_are_civil() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(civil_from_days(20_785), (2026, 11, 28));
    }
}
